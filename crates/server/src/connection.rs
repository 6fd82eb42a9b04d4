//! Serving one accepted connection: TLS (with ALPN), then HTTP/1.1 — whose
//! WebSocket upgrades take the fast path ([`crate::fastpath`]), everything
//! else being hyper serving the router — or HTTP/2 ([`crate::http2`]),
//! whose WebSockets are extended CONNECT streams (RFC 8441).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::either::Either;

use crate::echo;
use crate::endpoint::{Endpoint, run_socket};
use crate::fastpath::{self, Sniffed};
use crate::state::AppState;

/// The protocols a TLS listener offers in ALPN, preferred first.
pub fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

/// Listens on `addr` (a backlog of 1024, as `TcpListener::bind` gives),
/// with Nagle's algorithm off: every frame is written when it is ready.
///
/// Linux copies `TCP_NODELAY` from the listening socket to each socket it
/// accepts, so there it is set once here, not with one more syscall per
/// connection (five per handshake otherwise: accept, epoll, read, write,
/// and that one); elsewhere [`accept`] sets it on each connection.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does on Unix: a restarted server can bind
    // while the last one's connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until the task is aborted.
pub async fn accept(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Inherited from the listener on Linux (see `listen`).
        #[cfg(not(target_os = "linux"))]
        let _ = tcp.set_nodelay(true);
        let connection = ConnectionParts {
            peer,
            router: router.clone(),
            state: state.clone(),
        };
        match &tls {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                state.tasks.spawn(async move {
                    let handshake = tokio::time::timeout(fastpath::HEAD_WAIT, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            connection.state.metrics.http2_connections.inc();
                            // Boxed: the echo sockets of the HTTP/1.1 path
                            // should not carry a hyper connection's size.
                            Box::pin(serve_http2(stream, connection)).await
                        }
                        Ok(Ok(stream)) => serve_http1(stream, connection).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            None => {
                state.tasks.spawn(serve_http1(tcp, connection));
            }
        }
    }
}

/// What serving a connection needs besides its stream.
struct ConnectionParts {
    peer: SocketAddr,
    router: Router,
    state: Arc<AppState>,
}

/// An HTTP/1.1 connection, plain or TLS: WebSocket upgrades to the
/// endpoints are answered without hyper ([`fastpath`]); everything else is
/// served by hyper, the bytes already read replayed in front.
///
/// This future lives as long as the connection, so it is kept small: the
/// head reading and the hyper connection are boxed (freed when done), and
/// the arguments travel inside the box rather than in this future.
fn serve_http1<S>(stream: S, parts: ConnectionParts) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sniffing = Box::pin(async move {
        let sniffed = fastpath::sniff(stream, parts.peer.ip(), &parts.state).await;
        (sniffed, parts)
    });
    // Only the next stage is held while the connection lives: `then` is an
    // enum of the two steps, where an `async` block would keep a slot for
    // the first beside the second.
    sniffing.then(|(sniffed, parts)| next_stage(sniffed, parts))
}

type BoxedStage = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a connection does after its first head: an echo socket runs
/// inline (it is what most idle connections are); a hub session, the relay
/// and a hyper connection run boxed.
fn next_stage<S>(
    sniffed: Sniffed<S>,
    ConnectionParts {
        peer,
        router,
        state,
    }: ConnectionParts,
) -> Either<impl std::future::Future<Output = ()> + Send, BoxedStage>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match sniffed {
        // Not wrapped in an `async` block, which would hold the socket twice.
        Sniffed::Socket(Endpoint::Echo, ws, admitted, _) => {
            Either::Left(echo::run(ws, state, admitted))
        }
        Sniffed::Socket(endpoint, ws, admitted, client) => Either::Right(Box::pin(async move {
            run_socket(endpoint, ws, state, client, admitted).await
        })),
        Sniffed::Http(stream) => Either::Right(Box::pin(async move {
            let parts = ConnectionParts {
                peer,
                router,
                state,
            };
            // An HTTP/2 preface (h2c) is bounded like a TLS one.
            match with_preface(stream, false).await {
                Some(Preface::Http2(stream)) if parts.state.settings.http2 => {
                    crate::http2::serve(stream, parts.into()).await
                }
                Some(Preface::Http2(stream) | Preface::Other(stream)) => {
                    serve_http1_hyper(stream, parts).await
                }
                None => {}
            }
        })),
        Sniffed::Closed => Either::Right(Box::pin(std::future::ready(()))),
    }
}

/// hyper serving the router on `stream` (HTTP/1.1).
async fn serve_http1_hyper<S>(stream: S, parts: ConnectionParts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionParts {
        peer,
        router,
        state,
    } = parts;
    let builder = http_builder();
    let service = with_peer(router, peer);
    let shutdown = state.shutdown.clone();
    drop(state);
    if let Err(e) = serve_connection(&builder, TokioIo::new(stream), service, shutdown).await {
        tracing::debug!(%peer, "connection: {e}");
    }
}

/// A connection whose TLS chose HTTP/2, served once its client preface is
/// in ([`with_preface`]).
async fn serve_http2<S>(stream: S, parts: ConnectionParts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = duplex::Rewind::new(bytes::Bytes::new(), stream);
    match with_preface(stream, true).await {
        Some(Preface::Http2(stream)) => crate::http2::serve(stream, parts.into()).await,
        _ => tracing::debug!(peer = %parts.peer, "no HTTP/2 preface in time"),
    }
}

impl From<ConnectionParts> for crate::http2::Connection {
    fn from(parts: ConnectionParts) -> Self {
        Self {
            peer: parts.peer,
            router: parts.router,
            state: parts.state,
        }
    }
}

/// What a connection starts with.
enum Preface<S> {
    /// HTTP/2's client preface (replayed by the stream).
    Http2(S),
    /// Anything else (replayed too): HTTP/1.1.
    Other(S),
}

/// The client connection preface every HTTP/2 connection starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `stream` once its HTTP/2 preface has arrived whole, within
/// [`fastpath::HEAD_WAIT`] (after it, hyper's keepalive PINGs bound the
/// connection; before it, nothing would). `None` if it did not come in
/// time or is not a preface. A stream whose first bytes are not a preface
/// is given back at once when `h2_only` is false (HTTP/1.1, whose heads
/// hyper bounds itself).
async fn with_preface<S>(
    stream: duplex::Rewind<S>,
    h2_only: bool,
) -> Option<Preface<duplex::Rewind<S>>>
where
    S: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let (prefix, mut inner) = stream.into_parts();
    let mut have = bytes::BytesMut::from(&prefix[..]);
    // Some(true): a whole preface; Some(false): not one.
    let read = async {
        loop {
            let n = have.len().min(H2_PREFACE.len());
            if have[..n] != H2_PREFACE[..n] {
                return (!h2_only).then_some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            match inner.read_buf(&mut have).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    let is_http2 = tokio::time::timeout(fastpath::HEAD_WAIT, read)
        .await
        .ok()
        .flatten()?;
    let stream = duplex::Rewind::new(have.freeze(), inner);
    Some(if is_http2 {
        Preface::Http2(stream)
    } else {
        Preface::Other(stream)
    })
}

/// The router, with the peer's address attached to every request as
/// `ConnectInfo` (the file relay limits code guessing per address).
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: SocketAddr,
}

fn with_peer(router: Router, peer: SocketAddr) -> PeerService {
    PeerService { router, peer }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for PeerService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move {
            tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await
        })
    }
}

/// hyper's connection settings: a request head must arrive within
/// [`fastpath::HEAD_WAIT`], as on the fast path (hyper has no such limit
/// without a timer, and a slowloris trickling a head was held for ever).
fn http_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(fastpath::HEAD_WAIT);
    builder
}

/// Serves `io` until it ends; on shutdown, finishes what is in flight.
async fn serve_connection<I>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: PeerService,
    shutdown: crate::signal::Signal,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.fired() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection the listener hands over has Nagle's algorithm off,
    /// as `accept` expects (on Linux without setting it itself).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = match listen(addr.parse().unwrap()) {
                Ok(listener) => listener,
                // A machine without IPv6 loopback.
                Err(_) if addr.starts_with('[') => continue,
                Err(e) => panic!("{addr}: {e}"),
            };
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            #[cfg(not(target_os = "linux"))]
            tcp.set_nodelay(true).unwrap();
            assert!(
                tcp.nodelay().unwrap(),
                "{addr}: accepted without TCP_NODELAY"
            );
            assert!(
                !client.nodelay().unwrap(),
                "the check can fail: a plain client has Nagle on"
            );
        }
    }

    /// An idle echo connection is this one task (see `echo::run`): the
    /// accept loop's future around the echo loop must not hold the socket
    /// a second time, as an `async` wrapper did (0.12 KiB per connection).
    #[tokio::test]
    async fn an_echo_connection_holds_its_socket_once() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().into(),
            ..crate::Settings::default()
        };
        let server = crate::Server::start(settings).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let parts = ConnectionParts {
            peer,
            router: Router::new(),
            state: server.state(),
        };
        let connection = serve_http1(tcp, parts);
        let socket = size_of::<duplex::WebSocket<tokio::net::TcpStream>>();
        let size = size_of_val(&connection);
        // The socket, once, and the echo's packed state (`echo::Held`: 40
        // bytes), the receive in progress (two pointers) and the tags: 304
        // bytes for a 232-byte socket in a debug build (296 for 224 in a
        // release build). It was 504 with a 72-byte shutdown wait, the
        // admission's own `Arc` and a closure of five references; 784 with
        // the socket held twice.
        assert!(
            size <= socket + 80,
            "the connection's future is {size} bytes, for a socket of {socket}"
        );
    }
}
