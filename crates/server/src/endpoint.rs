//! The WebSocket endpoints, declared once: where each is served, its
//! settings and limits, the checks every upgrade to it passes (Origin,
//! admission), and what runs once it is open. The routes (HTTP/1.1 `GET`
//! and HTTP/2 `CONNECT`) and the fast path are both derived from it, so no
//! endpoint can skip a check.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use duplex::{Config, MemoryBudget, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{Admitted, Refusal};
use crate::fastpath;
use crate::settings::Settings;
use crate::state::AppState;
use crate::{echo, session};

fn origin_allowed<B>(state: &AppState, req: &http::Request<B>) -> bool {
    let allowed = &state.settings.allowed_origins;
    match req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        Some(origin) if !allowed.is_empty() => allowed.iter().any(|a| a == origin),
        _ => true,
    }
}

fn forbidden_origin() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this Origin may not open WebSockets here (see allowed_origins)\n",
    )
        .into_response()
}

/// The WebSocket endpoints. Every upgrade to one of them, by the fast
/// path or by a route, passes [`socket_server`]'s checks and runs in
/// [`run_socket`]: there is no other way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: the hub protocol.
    Hub,
    /// `/echo`.
    Echo,
    /// `/files`: the file-transfer relay.
    Files,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Hub, Endpoint::Echo, Endpoint::Files];

    /// Where it is served.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Hub => "/ws",
            Self::Echo => "/echo",
            Self::Files => "/files",
        }
    }

    /// The endpoint at this path.
    pub fn of(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }
}

/// Each WebSocket endpoint's settings (limits, compression, keepalive),
/// built once: the sockets share them.
pub struct SocketServers {
    /// The memory held for peers (their unfinished and large messages,
    /// queued deliveries, replies, relay buffers, request heads), bounded
    /// together (`--memory-budget`).
    pub budget: MemoryBudget,
    hub: ServerBuilder,
    echo: ServerBuilder,
    /// No compression: the relay carries ciphertext, which cannot shrink.
    files: ServerBuilder,
}

impl SocketServers {
    /// The endpoints' settings from the server's, sharing `budget`.
    pub fn new(settings: &Settings, budget: MemoryBudget) -> Self {
        // What every endpoint shares: the head timeout (the same on the
        // fast path and hyper's, so [`Self::reader`] may be any of them)
        // and the memory budget.
        let base = Config::default()
            .with_handshake_timeout(fastpath::HEAD_WAIT)
            .with_memory_budget(budget.clone());
        let mut hub = base
            .clone()
            .with_compression()
            .with_max_message_size(settings.max_message_size);
        hub.limits.max_frame_size = settings.max_message_size;
        if settings.ping_interval > 0 {
            hub.ping_interval = Some(Duration::from_secs(settings.ping_interval));
        }
        Self {
            hub: ServerBuilder::new().config(hub),
            echo: ServerBuilder::new().config(
                base.clone()
                    .with_compression()
                    .with_max_message_size(settings.echo_max_message_size),
            ),
            // A frame of the relay's largest size, plus room for the
            // WebSocket header.
            files: ServerBuilder::new().config(base.with_max_message_size(
                crate::transfer::Limits::from_settings(settings).max_frame + 64,
            )),
            budget,
        }
    }

    /// The relay's socket settings (its limits and the budget), for the
    /// connections it forwards to other nodes too.
    pub fn files_config(&self) -> Config {
        self.files.get_config().clone()
    }

    /// The settings a request head is read with before its endpoint is
    /// known: every endpoint's head limits, budget and timeout are alike.
    pub fn reader(&self) -> &ServerBuilder {
        &self.echo
    }
}

/// Who is at the other end of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address: connection limits and failed joins on
    /// `/files` count per address.
    pub address: Option<IpAddr>,
    /// Whether another node forwards this client (it proved it with the
    /// nodes' shared secret, [`crate::transfer::directory::NODE_HEADER`]):
    /// `address` is then the one that node named.
    pub forwarded: bool,
    /// Forwarded, but meant for another node (see
    /// [`crate::transfer::directory::HOLDER_HEADER`]).
    pub misrouted: bool,
}

impl Peer {
    /// The peer of a request from `address`: the client a node forwards,
    /// if the request proves it comes from a node.
    fn of<B>(state: &AppState, req: &http::Request<B>, address: Option<IpAddr>) -> Self {
        use crate::transfer::directory::{CLIENT_HEADER, HOLDER_HEADER, NODE_HEADER};
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let directory = match (&state.directory, header(NODE_HEADER)) {
            (Some(directory), Some(secret)) if directory.is_node(secret) => directory,
            _ => {
                return Self {
                    address,
                    forwarded: false,
                    misrouted: false,
                };
            }
        };
        Self {
            // A client without an address is not counted under the
            // forwarding node's.
            address: header(CLIENT_HEADER).and_then(|a| a.parse().ok()),
            forwarded: true,
            misrouted: header(HOLDER_HEADER).is_some_and(|node| node != directory.node()),
        }
    }
}

/// The checks every upgrade to `endpoint` passes, on the axum route and on
/// the fast path alike: the Origin allow-list, admission (the connection
/// limits, counting this one from its client's address until the
/// [`Admitted`] is dropped), then the endpoint's settings (whose limits the
/// handshake and the socket apply). Also says who the [`Peer`] is: the
/// connection's `address`, or the client another node forwards.
pub fn socket_server<'s, B>(
    state: &'s AppState,
    endpoint: Endpoint,
    req: &http::Request<B>,
    address: Option<IpAddr>,
) -> Result<(&'s ServerBuilder, Admitted, Peer), Refused> {
    if !origin_allowed(state, req) {
        return Err(Refused::Origin);
    }
    let peer = Peer::of(state, req, address);
    let admitted = state
        .admission
        .admit(peer.address)
        .map_err(Refused::Admission)?;
    let server = match endpoint {
        Endpoint::Hub => &state.sockets.hub,
        Endpoint::Echo => &state.sockets.echo,
        Endpoint::Files => &state.sockets.files,
    };
    Ok((server, admitted, peer))
}

/// Why [`socket_server`] refused an upgrade.
#[derive(Debug)]
pub enum Refused {
    /// The Origin is not allowed (403).
    Origin,
    /// A connection limit is reached (503 with `Retry-After`).
    Admission(Refusal),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Origin => forbidden_origin(),
            Self::Admission(refusal) => refusal.into_response(),
        }
    }
}

/// Runs an open WebSocket on its endpoint until it closes: the hub session
/// (authentication, rate limits, metrics), the echo loop or the relay
/// (which limits code guessing per client address, and forwards to the
/// node holding a transfer).
pub async fn run_socket<S>(
    endpoint: Endpoint,
    ws: WebSocket<S>,
    state: Arc<AppState>,
    peer: Peer,
    admitted: Admitted,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Each arm holds `admitted` (counted as open) until its socket ends.
    match endpoint {
        Endpoint::Echo => echo::run(ws, state, admitted).await,
        // Boxed: a session's state is large, and the echo task should not
        // carry its size.
        Endpoint::Hub => {
            Box::pin(session::run(ws, state)).await;
            drop(admitted);
        }
        Endpoint::Files => {
            let rooms = state.transfers.clone();
            let (directory, shutdown) = (state.directory.clone(), state.shutdown.clone());
            drop(state);
            Box::pin(crate::transfer::relay::run(
                ws, rooms, directory, peer, shutdown,
            ))
            .await;
            drop(admitted);
        }
    }
}

/// The route of `endpoint`: its checks, then the upgrade through hyper
/// (HTTP/1.1 or HTTP/2).
pub async fn upgrade_route(state: Arc<AppState>, endpoint: Endpoint, req: Request) -> Response {
    // The accept loop adds the peer's address; without it every client
    // shares one budget of failed joins on /files, and of connections.
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (server, admitted, peer) = match socket_server(&state, endpoint, &req, ip) {
        Ok((server, admitted, peer)) => (server.clone(), admitted, peer),
        Err(refused) => {
            if matches!(refused, Refused::Admission(_)) {
                state.admission.count_refusal();
            }
            return refused.into_response();
        }
    };
    let over_http2 = req.version() == http::Version::HTTP_2;
    match duplex::upgrade::upgrade(req, &server) {
        Ok((response, pending)) => {
            if over_http2 {
                state.metrics.http2_websockets.inc();
            }
            let tracker = state.tasks.clone();
            tracker.spawn(async move {
                match pending.await {
                    Ok(ws) => run_socket(endpoint, ws, state, peer, admitted).await,
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            response.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}
