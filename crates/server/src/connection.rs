//! Serving one accepted connection: TLS (with ALPN), then HTTP/1.1 — whose
//! WebSocket upgrades take the fast path ([`crate::fastpath`]) — or
//! HTTP/2, whose WebSockets are extended CONNECT streams (RFC 8441)
//! answered by the endpoints' routes; everything else is hyper serving the
//! router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
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
    // Only the next stage is held while the connection lives, not the
    // sniffing's output it was made from.
    async move {
        let stage = {
            let (sniffed, parts) = sniffing.await;
            next_stage(sniffed, parts)
        };
        stage.await
    }
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
        Sniffed::Socket(Endpoint::Echo, ws, admitted, _) => Either::Left(async move {
            // Counted as open until the socket ends.
            let _admitted = admitted;
            echo::run(ws, state).await
        }),
        Sniffed::Socket(endpoint, ws, admitted, client) => Either::Right(Box::pin(async move {
            run_socket(endpoint, ws, state, client, admitted).await
        })),
        Sniffed::Http(stream) => Either::Right(Box::pin(async move {
            // An HTTP/2 preface (h2c) is bounded like a TLS one.
            if let Some(stream) = with_preface(stream, false).await {
                let parts = ConnectionParts {
                    peer,
                    router,
                    state,
                };
                serve_hyper(stream, parts).await;
            }
        })),
        Sniffed::Closed => Either::Right(Box::pin(std::future::ready(()))),
    }
}

/// hyper serving the router on `stream`: HTTP/1.1, or HTTP/2 (after ALPN
/// chose it, or a plain connection's prior-knowledge preface) when
/// enabled.
async fn serve_hyper<S>(stream: S, parts: ConnectionParts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionParts {
        peer,
        router,
        state,
    } = parts;
    let builder = http_builder(state.settings.http2);
    let service = with_peer(router, peer);
    let shutdown = state.shutdown.clone();
    drop(state);
    if let Err(e) = serve_connection(&builder, TokioIo::new(stream), service, shutdown).await {
        tracing::debug!(%peer, "connection: {e}");
    }
}

/// A connection whose TLS chose HTTP/2: hyper serves it once its client
/// preface is in ([`with_preface`]).
async fn serve_http2<S>(stream: S, parts: ConnectionParts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = duplex::Rewind::new(bytes::Bytes::new(), stream);
    match with_preface(stream, true).await {
        Some(stream) => serve_hyper(stream, parts).await,
        None => tracing::debug!(peer = %parts.peer, "no HTTP/2 preface in time"),
    }
}

/// The client connection preface every HTTP/2 connection starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `stream` once its HTTP/2 preface has arrived whole, within
/// [`fastpath::HEAD_WAIT`] (after it, hyper's keepalive PINGs bound the
/// connection; before it, nothing would). `None` if it did not come in
/// time or is not a preface. A stream whose first bytes are not a preface
/// is given back at once when `h2_only` is false (HTTP/1.1, whose heads
/// hyper bounds itself).
async fn with_preface<S>(stream: duplex::Rewind<S>, h2_only: bool) -> Option<duplex::Rewind<S>>
where
    S: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let (prefix, mut inner) = stream.into_parts();
    let mut have = bytes::BytesMut::from(&prefix[..]);
    let read = async {
        loop {
            let n = have.len().min(H2_PREFACE.len());
            if have[..n] != H2_PREFACE[..n] {
                return !h2_only;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            match inner.read_buf(&mut have).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(fastpath::HEAD_WAIT, read).await {
        Ok(true) => Some(duplex::Rewind::new(have.freeze(), inner)),
        _ => None,
    }
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
/// without a timer, and a slowloris trickling a head was held for ever);
/// HTTP/2 with the extended CONNECT enabled and the windows of
/// [`duplex::http2`], or HTTP/1.1 only.
enum HttpBuilder {
    /// HTTP/1.1, or HTTP/2 when the connection starts with its preface.
    Auto(auto::Builder<TokioExecutor>),
    /// HTTP/1.1 only (`http2 = false`: hyper-util's `http1_only` does not
    /// hold for connections served with upgrades).
    Http1(hyper::server::conn::http1::Builder),
}

fn http_builder(http2: bool) -> HttpBuilder {
    if !http2 {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(fastpath::HEAD_WAIT);
        return HttpBuilder::Http1(builder);
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(fastpath::HEAD_WAIT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .initial_stream_window_size(duplex::http2::STREAM_WINDOW)
        .initial_connection_window_size(duplex::http2::CONNECTION_WINDOW)
        .max_concurrent_streams(duplex::http2::MAX_STREAMS)
        // A peer that stops answering PINGs is gone: its streams end.
        .keep_alive_interval(Some(HTTP2_KEEPALIVE))
        .keep_alive_timeout(HTTP2_KEEPALIVE);
    HttpBuilder::Auto(builder)
}

/// How often an HTTP/2 connection is pinged, and how long an answer may
/// take before the connection is dropped.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);

/// Serves `io` until it ends; on shutdown, finishes what is in flight
/// (hyper's graceful shutdown: GOAWAY on HTTP/2).
async fn serve_connection<I>(
    builder: &HttpBuilder,
    io: I,
    service: PeerService,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match builder {
        HttpBuilder::Auto(builder) => {
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        HttpBuilder::Http1(builder) => {
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            Ok(done?)
        }
    }
}
