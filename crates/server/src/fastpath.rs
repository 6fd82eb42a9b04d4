//! The WebSocket fast path: the request head is read off the socket here
//! ([`duplex::ServerBuilder::read_request`]), and a valid upgrade to a
//! WebSocket endpoint is answered with Duplex's own server handshake,
//! without hyper or axum (whose connection state and upgrade plumbing cost
//! about 3 KiB per connection and an extra task). Everything else,
//! including every refused upgrade, goes to hyper with the bytes already
//! read replayed in front of the stream ([`Rewind`]), so the routes answer
//! it exactly as before: same status, same headers, same body.
//!
//! The checks are the routes' own ([`crate::endpoint::socket_server`]: Origin
//! allow-list, then the endpoint's limits and settings); what a connection
//! does once open ([`crate::endpoint::run_socket`]: the echo loop, a hub
//! session, the relay) is shared too. Plain TCP and TLS connections that
//! chose HTTP/1.1 both take it.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{Method, Request, header};
use duplex::{NoRequestKind, Rewind, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::Admitted;
use crate::endpoint::{Endpoint, Peer};
use crate::state::AppState;

/// What became of a connection whose first request head was looked at.
// Made once per connection and taken apart at once: boxing the socket
// would cost an allocation per connection for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Sniffed<S> {
    /// An accepted WebSocket (the 101 is sent), counted as open.
    Socket(Endpoint, WebSocket<S>, Admitted, Peer),
    /// Anything else: for hyper, with the bytes read so far in front.
    Http(Rewind<S>),
    /// The peer went away, or the server is shutting down.
    Closed,
}

/// How long a request head may take to arrive, here and on hyper's path:
/// a client slower than this is a slowloris holding a connection open,
/// answered 408 and closed. The endpoints' handshake timeout.
pub const HEAD_WAIT: Duration = Duration::from_secs(10);

/// Reads the first request head (bounded by the endpoints' head limits,
/// their memory budget and [`HEAD_WAIT`]) and takes the fast path if it is
/// an acceptable WebSocket upgrade to one of the WebSocket endpoints.
pub async fn sniff<S>(stream: S, peer: IpAddr, state: &AppState) -> Sniffed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Every endpoint reads heads alike: same limits, same budget.
    let reader = state.sockets.reader();
    let read = tokio::select! {
        biased;
        _ = state.shutdown.fired() => return Sniffed::Closed,
        read = reader.read_request(stream) => read,
    };
    let incoming = match read {
        Ok(incoming) => incoming,
        Err(no) => {
            return match no.kind() {
                // Malformed, too large, or HTTP/2: hyper says what it
                // makes of it.
                NoRequestKind::Unreadable(_) => Sniffed::Http(no.into_stream()),
                // Slow (408), no room (503 with Retry-After), or gone.
                kind => {
                    if matches!(kind, NoRequestKind::NoRoom) {
                        state.metrics.memory_budget_refused.inc();
                    }
                    no.answer(HEAD_WAIT).await;
                    Sniffed::Closed
                }
            };
        }
    };
    let Some((endpoint, server, admitted, client)) = fast_path_for(incoming.request(), state, peer)
    else {
        return Sniffed::Http(incoming.into_stream());
    };
    // An invalid upgrade is answered by the route, which says why.
    let Ok(accepted) = server.accept_request(incoming.request()) else {
        return Sniffed::Http(incoming.into_stream());
    };
    match incoming.open(server, &accepted).await {
        Ok(ws) => Sniffed::Socket(endpoint, ws, admitted, client),
        Err(_) => Sniffed::Closed,
    }
}

/// The endpoint and its settings, if this request may take the fast path:
/// a bodiless `GET` upgrade to a WebSocket endpoint that passes the
/// endpoint's checks. `None` sends it to hyper, which routes it as it
/// always did.
fn fast_path_for<'s>(
    req: &Request<()>,
    state: &'s AppState,
    address: IpAddr,
) -> Option<(Endpoint, &'s ServerBuilder, Admitted, Peer)> {
    if req.method() != Method::GET
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let endpoint = Endpoint::of(req.uri().path())?;
    // A refusal is answered by the route, which says why.
    let (server, admitted, peer) =
        crate::endpoint::socket_server(state, endpoint, req, Some(address)).ok()?;
    Some((endpoint, server, admitted, peer))
}
