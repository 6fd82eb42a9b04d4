//! Reading an HTTP head off a stream for the opening handshake, bounded in
//! size (by the head limits) and in time (by the caller's timeout).

use bytes::BytesMut;
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::head::HeadError;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, HandshakeError};

/// Reads until `parse` finds a complete head; returns what it parsed and
/// the buffer, whose first bytes are the head (`used` of them) followed by
/// whatever the peer sent after it (the first frames, possibly).
pub(crate) async fn read_head<S, T>(
    io: &mut S,
    limits: &HeadLimits,
    parse: impl Fn(&[u8], &HeadLimits) -> Result<Option<(T, usize)>, HeadError>,
) -> Result<(T, usize, BytesMut), Error>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((head, used)) = parse(&buf, limits).map_err(HandshakeError::Head)? {
            return Ok((head, used, buf));
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(1024);
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Eof.into());
        }
    }
}
