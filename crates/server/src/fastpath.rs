//! The WebSocket fast path of plain-TCP connections: the request head is
//! read off the socket here, and a valid upgrade to `/echo` or `/ws` is
//! answered with Duplex's own server handshake, without hyper or axum (whose
//! connection state and upgrade plumbing cost about 3 KiB per connection and
//! an extra task). Everything else, including every refused upgrade, goes to
//! hyper with the bytes already read replayed in front of the stream
//! ([`Rewind`]), so the routes answer it exactly as before: same status,
//! same headers, same body.
//!
//! The checks are the routes' own ([`crate::app::socket_server`]: Origin
//! allow-list, then the endpoint's limits and settings); what a connection
//! does once open ([`crate::app::run_socket`]: the echo loop, or a hub
//! session with its authentication, rate limits and metrics) is shared too.
//! TLS connections always take the hyper path.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Method, Request, header};
use bytes::{Buf, Bytes, BytesMut};
use duplex::proto::handshake::HeadLimits;
use duplex::proto::handshake::head::{head_may_be_complete, read_request, write_response};
use duplex::{ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::admission::Admitted;
use crate::app::Endpoint;
use crate::state::AppState;

/// What became of a connection whose first request head was looked at.
pub enum Sniffed {
    /// An accepted WebSocket (the 101 is sent), counted as open.
    Socket(Endpoint, WebSocket<TcpStream>, Admitted),
    /// Anything else: for hyper, with the bytes read so far in front.
    Http(Rewind<TcpStream>),
    /// The peer went away, or the server is shutting down.
    Closed,
}

/// How long a request head may take to arrive, here and on hyper's path:
/// a client slower than this is a slowloris holding a connection open,
/// answered 408 and closed.
pub const HEAD_WAIT: Duration = Duration::from_secs(10);

/// The answer to a head that took longer than [`HEAD_WAIT`].
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// The buffer a request head is first read into (most heads fit), and
/// the step it grows by.
const HEAD_BUFFER: usize = 1024;

/// What reading a request head came to.
#[allow(clippy::large_enum_variant)] // one per connection, on the stack, briefly
enum Head {
    /// A complete head, and its length.
    Request(Request<()>, usize),
    /// Not a head this path parses (malformed, too large, cut short):
    /// hyper answers it.
    ForHyper,
    /// The peer left before sending anything.
    Gone,
    /// The memory budget has no room for it.
    NoRoom,
}

/// The answer to a head the memory budget has no room for.
fn no_room_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{NO_ROOM}",
        crate::admission::RETRY_AFTER_SECS,
        NO_ROOM.len(),
    )
    .into_bytes()
}

const NO_ROOM: &str = "the server is short of memory (--memory-budget); try again later\n";

/// Reads the first request head (bounded by the default head limits and by
/// [`HEAD_WAIT`]) and takes the fast path if it is an acceptable WebSocket
/// upgrade to one of the WebSocket endpoints.
pub async fn sniff(mut tcp: TcpStream, peer: SocketAddr, state: &AppState) -> Sniffed {
    let limits = HeadLimits::default();
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    // A head longer than the first buffer is charged to the memory budget
    // while it is read; one that does not fit is answered 503 rather than
    // shed someone else.
    let budget = &state.sockets.budget;
    let mut charge = None;
    let read = async {
        // Bytes already scanned for the end of the head (the first read is
        // parsed whatever it holds, so that garbage goes to hyper at once).
        let mut seen: Option<usize> = None;
        loop {
            let parse_now = match seen {
                None => !buf.is_empty(),
                Some(seen) => head_may_be_complete(&buf, seen, &limits),
            };
            if parse_now {
                match read_request(&buf, &limits) {
                    Ok(Some((req, used))) => return Head::Request(req, used),
                    // Malformed or too large: hyper says what is wrong with it.
                    Err(_) => return Head::ForHyper,
                    Ok(None) => {}
                }
            }
            if parse_now || seen.is_some() {
                seen = Some(buf.len());
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(HEAD_BUFFER);
                drop(charge.take());
                charge = budget.try_charge(buf.capacity() - HEAD_BUFFER);
                if charge.is_none() {
                    return Head::NoRoom;
                }
            }
            match tcp.read_buf(&mut buf).await {
                Ok(0) | Err(_) if buf.is_empty() => return Head::Gone,
                // The head is incomplete: let hyper see what it makes of it.
                Ok(0) | Err(_) => return Head::ForHyper,
                Ok(_) => {}
            }
        }
    };
    let head = tokio::select! {
        biased;
        _ = state.shutdown.cancelled() => return Sniffed::Closed,
        head = tokio::time::timeout(HEAD_WAIT, read) => head,
    };
    let (req, used) = match head {
        Err(_) => {
            let _ = tcp.write_all(REQUEST_TIMEOUT).await;
            return Sniffed::Closed;
        }
        Ok(Head::Gone) => return Sniffed::Closed,
        Ok(Head::NoRoom) => {
            state.metrics.memory_budget_refused.inc();
            let _ = tcp.write_all(&no_room_response()).await;
            return Sniffed::Closed;
        }
        Ok(Head::ForHyper) => return Sniffed::Http(Rewind::new(buf.freeze(), tcp)),
        Ok(Head::Request(req, used)) => (req, used),
    };
    drop(charge);
    let Some((endpoint, server, admitted)) = fast_path_for(&req, state, peer.ip()) else {
        return Sniffed::Http(Rewind::new(buf.freeze(), tcp));
    };
    let Ok(accepted) = server.accept_request(&req) else {
        return Sniffed::Http(Rewind::new(buf.freeze(), tcp));
    };
    drop(req);
    let mut out = Vec::with_capacity(256);
    write_response(&accepted.response, &mut out);
    if tcp.write_all(&out).await.is_err() {
        return Sniffed::Closed;
    }
    buf.advance(used);
    let mut ws = server.open(tcp, &accepted);
    // Frames the client sent right behind its request.
    ws.preload(&buf);
    Sniffed::Socket(endpoint, ws, admitted)
}

/// The endpoint and its settings, if this request may take the fast path:
/// a bodiless `GET` upgrade to `/echo` or `/ws` that passes the endpoint's
/// checks. `None` sends it to hyper, which routes it as it always did.
fn fast_path_for<'s>(
    req: &Request<()>,
    state: &'s AppState,
    address: IpAddr,
) -> Option<(Endpoint, &'s ServerBuilder, Admitted)> {
    if req.method() != Method::GET
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let endpoint = Endpoint::of(req.uri().path())?;
    // A refusal is answered by the route, which says why.
    let (server, admitted) = crate::app::socket_server(state, endpoint, req, Some(address)).ok()?;
    Some((endpoint, server, admitted))
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix` is read first, then `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Free the head buffer once replayed.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), b);
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");
    }
}
