//! Reading an HTTP head off a stream for the opening handshake, bounded in
//! size (by the head limits), in memory (a head longer than its first
//! buffer is charged to the memory budget, if any) and in time (by the
//! caller's timeout).

use bytes::BytesMut;
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::head::{HeadError, head_may_be_complete};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::MemoryBudget;
use crate::error::{Error, HandshakeError};

/// The buffer a head is first read into (most heads fit) and the step it
/// grows by. Only what a head takes beyond it is charged to the budget.
pub(crate) const HEAD_BUFFER: usize = 1024;

/// Reads until `parse` finds a complete head; returns what it parsed and
/// the buffer, whose first bytes are the head (`used` of them) followed by
/// whatever the peer sent after it (the first frames, possibly). A head
/// the budget has no room for is [`Error::MemoryBudget`].
pub(crate) async fn read_head<S, T>(
    io: &mut S,
    limits: &HeadLimits,
    budget: Option<&MemoryBudget>,
    parse: impl Fn(&[u8], &HeadLimits) -> Result<Option<(T, usize)>, HeadError>,
) -> Result<(T, usize, BytesMut), Error>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::new();
    let (head, used) = read_head_into(io, &mut buf, limits, budget, parse).await?;
    Ok((head, used, buf))
}

/// [`read_head`] into the caller's `buf`, which keeps what was read
/// whatever the outcome (to hand the stream on with it, say).
pub(crate) async fn read_head_into<S, T>(
    io: &mut S,
    buf: &mut BytesMut,
    limits: &HeadLimits,
    budget: Option<&MemoryBudget>,
    parse: impl Fn(&[u8], &HeadLimits) -> Result<Option<(T, usize)>, HeadError>,
) -> Result<(T, usize), Error>
where
    S: AsyncRead + Unpin,
{
    buf.reserve(HEAD_BUFFER);
    let mut charged = None;
    // Bytes already scanned for the end of the head. The first read is
    // parsed whatever it holds, so that garbage fails at once.
    let mut seen = None;
    loop {
        let parse_now = match seen {
            None => !buf.is_empty(),
            Some(seen) => head_may_be_complete(buf, seen, limits),
        };
        if parse_now {
            if let Some((head, used)) = parse(buf, limits).map_err(HandshakeError::Head)? {
                return Ok((head, used));
            }
            seen = Some(buf.len());
        } else if seen.is_some() {
            seen = Some(buf.len());
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(HEAD_BUFFER);
            if let Some(budget) = budget {
                drop(charged.take());
                charged = Some(
                    budget
                        .try_charge(buf.capacity() - HEAD_BUFFER)
                        .ok_or(Error::MemoryBudget)?,
                );
            }
        }
        if io.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Eof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use duplex_proto::handshake::head::read_request;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A head arriving a byte at a time is parsed twice (after the first
    /// byte, and once its blank line is in), not once per byte.
    #[tokio::test]
    async fn a_trickling_head_is_parsed_once_it_can_be_complete() {
        let head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\nNEXT";
        let (mut client, mut server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in head {
                // The reader stops after the head: the rest may not fit.
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
            }
        });
        let parses = AtomicUsize::new(0);
        let counting = |buf: &[u8], limits: &HeadLimits| {
            parses.fetch_add(1, Ordering::Relaxed);
            read_request(buf, limits)
        };
        let (req, used, buf) = read_head(&mut server, &HeadLimits::default(), None, counting)
            .await
            .unwrap();
        drop(server);
        writer.await.unwrap();
        assert_eq!(req.uri().path(), "/chat");
        assert_eq!(&buf[..used], &head[..used]);
        assert!(buf[used..].len() <= 4);
        assert_eq!(parses.load(Ordering::Relaxed), 2);
    }

    /// Garbage still fails on the first read, before any blank line.
    #[tokio::test]
    async fn garbage_fails_at_once() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\x16\x03\x01 not http").await.unwrap();
        let err = read_head(&mut server, &HeadLimits::default(), None, read_request)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::Head(_))),
            "{err:?}"
        );
    }
}
