//! HTTP/2 connections, served with h2 itself rather than through hyper:
//! the WebSocket streams (extended CONNECT, RFC 8441) need what hyper does
//! not give a service.
//!
//! - **Every DATA frame taken at once**: a socket's stream
//!   ([`duplex::H2Stream`]) takes its frames as they come and gives their
//!   window back only as the socket reads them, so a socket its server is
//!   not reading stops its peer at the stream's window, and its small
//!   frames never sit in h2, where they would spend the connection's
//!   budget for small frames and get the whole connection closed
//!   (`ENHANCE_YOUR_CALM`) with every other socket of the page.
//! - **`HTTP_1_1_REQUIRED`**: past `http2_max_sockets` WebSockets on one
//!   connection (by default, never), a new one is reset with it, and
//!   clients open that socket over HTTP/1.1 instead.
//! - **Shutdown in order**: the connection's WebSockets are closed with
//!   1001 first, then GOAWAY, then the requests in flight finish.
//!
//! Every other request goes to the router, as hyper would send it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use duplex::H2Stream;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::endpoint::{Endpoint, Refused, run_socket, socket_server};
use crate::fastpath;
use crate::state::AppState;

/// How often a connection is pinged, and how long an answer may take
/// before the connection is dropped.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// The largest header block a request may have.
const MAX_HEADER_LIST: u32 = 64 << 10;

/// What serving one connection needs.
pub struct Connection {
    /// The other end.
    pub peer: SocketAddr,
    /// Where requests that are not WebSockets go.
    pub router: Router,
    /// The server.
    pub state: Arc<AppState>,
}

/// Serves an HTTP/2 connection (its client preface already seen, and
/// replayed by `io`) until it ends, or the server shuts down.
pub async fn serve<S>(io: S, connection: Connection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        router,
        state,
    } = connection;
    let mut conn = match tokio::time::timeout(fastpath::HEAD_WAIT, builder().handshake(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::debug!(%peer, "HTTP/2 handshake: {e}"),
        Err(_) => return tracing::debug!(%peer, "HTTP/2 handshake timed out"),
    };
    let keepalive = keepalive(conn.ping_pong().expect("taken once, here"));
    tokio::pin!(keepalive);
    let mut streams = Streams {
        sockets: TaskTracker::new(),
        requests: TaskTracker::new(),
        open_sockets: Arc::new(AtomicUsize::new(0)),
        max_sockets: state.settings.http2_max_sockets,
        draining: false,
    };
    let shutdown = state.shutdown.clone();
    let sockets_closed = streams.sockets.clone();
    let sockets_closed = sockets_closed.wait();
    tokio::pin!(sockets_closed);
    let mut gone_away = false;
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((req, respond))) => {
                    let stream = Stream { peer, state: state.clone(), respond };
                    streams.start(req, stream, &router);
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, "HTTP/2 connection: {e}");
                    break;
                }
                None => break,
            },
            () = &mut keepalive => {
                tracing::debug!(%peer, "HTTP/2 connection: no answer to a PING in {KEEPALIVE:?}");
                break;
            }
            // The sockets see the same shutdown and close with 1001 ...
            () = shutdown.fired(), if !streams.draining => {
                streams.draining = true;
                streams.sockets.close();
            }
            // ... and once they are closed, GOAWAY: the requests in flight
            // finish, no new stream is taken.
            () = &mut sockets_closed, if streams.draining && !gone_away => {
                gone_away = true;
                conn.graceful_shutdown();
            }
        }
    }
    // The connection is over: its requests' handlers see their streams
    // reset and stop; its sockets see their streams end.
    streams.sockets.close();
    streams.requests.close();
}

/// The HTTP/2 settings of the server's connections.
fn builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(duplex::http2::STREAM_WINDOW)
        .initial_connection_window_size(duplex::http2::CONNECTION_WINDOW)
        .max_concurrent_streams(duplex::http2::MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .data_frame_budget(duplex::http2::SMALL_FRAME_BUDGET)
        .enable_connect_protocol();
    builder
}

/// One connection's streams: its WebSockets, and its requests.
struct Streams {
    sockets: TaskTracker,
    requests: TaskTracker,
    open_sockets: Arc<AtomicUsize>,
    max_sockets: usize,
    /// The server is shutting down: no new socket.
    draining: bool,
}

impl Streams {
    /// Runs a new stream: a WebSocket (extended CONNECT) or a request.
    fn start(&mut self, req: Request<RecvStream>, stream: Stream, router: &Router) {
        if !is_websocket(&req) {
            self.requests.spawn(stream.request(req, router.clone()));
            return;
        }
        // Shutting down: refused, so the client may retry it elsewhere
        // (nothing was done); too many: over HTTP/1.1 instead.
        let refusal = if self.draining {
            Some(Reason::REFUSED_STREAM)
        } else if self.open_sockets.load(Ordering::Relaxed) >= self.max_sockets {
            Some(Reason::HTTP_1_1_REQUIRED)
        } else {
            None
        };
        if let Some(reason) = refusal {
            let mut respond = stream.respond;
            respond.send_reset(reason);
            return;
        }
        let open = SocketCount::new(&self.open_sockets);
        self.sockets.spawn(async move {
            let _open = open;
            stream.websocket(req).await
        });
    }
}

/// A PING every [`KEEPALIVE`]; returns when one goes unanswered for as long.
async fn keepalive(mut ping_pong: h2::PingPong) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        match tokio::time::timeout(KEEPALIVE, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

/// An extended CONNECT opening a WebSocket.
fn is_websocket<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<h2::ext::Protocol>().is_some()
}

/// Counts a WebSocket as open on its connection until dropped.
struct SocketCount(Arc<AtomicUsize>);

impl SocketCount {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for SocketCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One stream of a connection, to answer.
struct Stream {
    peer: SocketAddr,
    state: Arc<AppState>,
    respond: SendResponse<Bytes>,
}

impl Stream {
    /// An extended CONNECT: the endpoint's checks (the same as on
    /// HTTP/1.1), the handshake, 200, then the socket on the stream.
    async fn websocket(mut self, req: Request<RecvStream>) {
        let protocol = req
            .extensions()
            .get::<h2::ext::Protocol>()
            .map(|p| p.as_str().to_owned());
        let Some(endpoint) = Endpoint::of(req.uri().path()) else {
            let why = "no WebSocket endpoint here (see /ws, /echo, /files)\n";
            return self
                .answer((StatusCode::NOT_FOUND, why).into_response())
                .await;
        };
        let state = self.state.clone();
        let (server, admitted, client) =
            match socket_server(&state, endpoint, &req, Some(self.peer.ip())) {
                Ok(checked) => checked,
                Err(refused) => {
                    if matches!(refused, Refused::Admission(_)) {
                        state.admission.count_refusal();
                    }
                    return self.answer(refused.into_response()).await;
                }
            };
        let accepted = match server.accept_connect_request(&req, protocol.as_deref()) {
            Ok(accepted) => accepted,
            Err(e) => return self.answer(e.response().map(Body::from)).await,
        };
        let Ok(send) = self.respond.send_response(accepted.response.clone(), false) else {
            return;
        };
        let stream = H2Stream::new(send, req.into_body(), Some(self.peer));
        let ws = server.open(stream, &accepted);
        state.metrics.http2_websockets.inc();
        run_socket(endpoint, ws, state, client, admitted).await
    }

    /// Any other request: the router's answer, streamed. A stream the
    /// client resets (or whose connection ends) stops its handler at once:
    /// h2 no longer counts a reset stream against the connection's limit,
    /// so a handler left running would let a client start any number
    /// (the "rapid reset" attack, CVE-2023-44487).
    async fn request(mut self, req: Request<RecvStream>, mut router: Router) {
        let (mut parts, recv) = req.into_parts();
        parts
            .extensions
            .insert(axum::extract::ConnectInfo(self.peer));
        let req = Request::from_parts(parts, request_body(recv));
        let response = tokio::select! {
            response = tower_service::Service::call(&mut router, req) => match response {
                Ok(response) => response,
                Err(never) => match never {},
            },
            _ = std::future::poll_fn(|cx| self.respond.poll_reset(cx)) => return,
        };
        self.answer(response).await
    }

    /// Sends `response`: its head, then its body as it comes, within the
    /// stream's send window; a stream the peer resets ends it (a closed
    /// page's event stream).
    async fn answer(mut self, response: Response<Body>) {
        let (mut parts, mut body) = response.into_parts();
        strip_connection_headers(&mut parts.headers);
        // An origin server with a clock sends the date (RFC 9110 §6.6.1).
        parts
            .headers
            .entry(header::DATE)
            .or_insert_with(|| http_date(std::time::SystemTime::now()));
        if let (None, Some(len)) = (
            parts.headers.get(header::CONTENT_LENGTH),
            body.size_hint().exact(),
        ) {
            parts.headers.insert(header::CONTENT_LENGTH, len.into());
        }
        let end = body.is_end_stream();
        let mut send = match self
            .respond
            .send_response(Response::from_parts(parts, ()), end)
        {
            Ok(send) => send,
            Err(e) => return tracing::debug!(peer = %self.peer, "response: {e}"),
        };
        if end {
            return;
        }
        loop {
            let frame = tokio::select! {
                frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)) => frame,
                _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return,
            };
            match frame {
                None => {
                    let _ = send.send_data(Bytes::new(), true);
                    return;
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = %self.peer, "response body: {e}");
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if send_all(&mut send, data).await.is_err() {
                            return;
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = send.send_trailers(trailers);
                            return;
                        }
                    }
                },
            }
        }
    }
}

/// Removes the headers that are about one connection, which HTTP/2 has no
/// use for (RFC 9113 §8.2.2) and h2 refuses to send: those named in
/// `Connection` too.
fn strip_connection_headers(headers: &mut axum::http::HeaderMap) {
    let named: Vec<axum::http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// `Sun, 06 Dec 2026 12:00:00 GMT`.
fn http_date(now: std::time::SystemTime) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(now))
        .expect("an HTTP date is a valid header value")
}

/// A request's body for the router: its DATA frames, their window given
/// back as they are taken.
fn request_body(recv: RecvStream) -> Body {
    Body::from_stream(futures_util::stream::unfold(
        Some(recv),
        |recv| async move {
            let mut recv = recv?;
            match recv.data().await? {
                Ok(data) => {
                    let _ = recv.flow_control().release_capacity(data.len());
                    Some((Ok(data), Some(recv)))
                }
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

/// Sends `data` as the stream's window allows.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let capacity = loop {
            match send.capacity() {
                0 => {}
                n => break n,
            }
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
            }
        };
        let chunk = data.split_to(capacity.min(data.len()));
        send.send_data(chunk, false)?;
    }
    Ok(())
}
