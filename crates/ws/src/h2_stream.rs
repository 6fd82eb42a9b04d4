//! An HTTP/2 stream as a byte stream: what a WebSocket opened by an
//! extended CONNECT (RFC 8441) runs on, on the client side.
//!
//! Reading hands out the DATA frames' bytes and gives their flow-control
//! capacity back only as they are read, so a socket its application does
//! not read stops its peer at the stream's window, not the connection's.
//! Writing waits for send capacity (h2's backpressure) and copies each
//! write once into the frame h2 sends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a dropped stream is kept, half-closed, for what it queued to
/// go out and for the peer to end its side (as TCP lingers after a close).
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// One HTTP/2 stream carrying a WebSocket.
///
/// Dropped, it half-closes (END_STREAM) and is kept a few seconds by a task
/// of its own until the peer ends its side: h2 would otherwise reset it,
/// and a reset discards what was queued but not yet written, as TCP's
/// close does not.
#[derive(Debug)]
pub struct H2Stream {
    /// Both halves; taken only by `drop`, to linger.
    halves: Option<(SendStream<Bytes>, RecvStream)>,
    /// What is left of the last DATA frame read.
    unread: Bytes,
    /// END_STREAM was sent: writes are over.
    ended: bool,
    /// The connection's other end.
    peer: Option<std::net::SocketAddr>,
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            halves: Some((send, recv)),
            unread: Bytes::new(),
            ended: false,
            peer,
        }
    }

    /// The address of the other end of the connection this stream is on.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    fn send(&mut self) -> &mut SendStream<Bytes> {
        &mut self.halves.as_mut().expect("taken only by drop").0
    }

    fn recv(&mut self) -> &mut RecvStream {
        &mut self.halves.as_mut().expect("taken only by drop").1
    }
}

/// A stream reset by the peer (RST_STREAM), or a connection error, as an
/// I/O error: a WebSocket on a cancelled stream ends abnormally (1006),
/// not cleanly.
pub(crate) fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into());
    }
    let kind = match e.reason() {
        Some(h2::Reason::CANCEL) | Some(h2::Reason::STREAM_CLOSED) => {
            io::ErrorKind::ConnectionReset
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.unread.is_empty() {
            match ready!(self.recv().poll_data(cx)) {
                // END_STREAM: the peer is done writing.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => self.unread = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        // The window opens by what the application has taken.
        let _ = self.recv().flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send().reserve_capacity(buf.len());
        let capacity = loop {
            match self.send().capacity() {
                0 => {}
                n => break n,
            }
            // A reset stream never gets capacity: notice it.
            if let Poll::Ready(reset) = self.send().poll_reset(cx) {
                let e = match reset {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                };
                return Poll::Ready(Err(io_error(e)));
            }
            match ready!(self.send().poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        };
        let n = capacity.min(buf.len());
        self.send()
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 is written by the connection's task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            // END_STREAM: HTTP/2's half-close, as TCP's FIN on HTTP/1.1.
            self.send()
                .send_data(Bytes::new(), true)
                .map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let Some((mut send, mut recv)) = self.halves.take() else {
            return;
        };
        if recv.is_end_stream() && self.ended {
            return;
        }
        // Without a runtime there is nothing to linger with: h2 resets.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ended = self.ended;
        runtime.spawn(async move {
            if !ended {
                let _ = send.send_data(Bytes::new(), true);
            }
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(data)) = recv.data().await {
                    let _ = recv.flow_control().release_capacity(data.len());
                }
            })
            .await;
            drop(send);
        });
    }
}
