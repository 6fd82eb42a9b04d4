//! The file-transfer relay at `/files`: pairs one sender with receivers by
//! a short code and forwards their (end-to-end encrypted) messages, holding
//! at most a bounded window of bytes per receiver. The wire protocol is in
//! `docs/transfer.md`.
//!
//! [`rooms`] keeps the transfers and the limits; [`relay`] runs one
//! connection.

pub mod relay;
pub mod rooms;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;
pub use rooms::{Limits, Rooms};

/// The `/files` route, with its own table of transfers.
pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    let rooms = Arc::new(Rooms::new(Limits::from_settings(&state.settings)));
    Router::new().route(
        "/files",
        get(move |State(state): State<Arc<AppState>>, req: Request| {
            socket(state, rooms.clone(), req)
        }),
    )
}

async fn socket(state: Arc<AppState>, rooms: Arc<Rooms>, req: Request) -> Response {
    // The accept loop may add the peer's address; without it every client
    // shares one budget of failed joins.
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let max = rooms.limits.max_frame + 64;
    let server = duplex::ServerBuilder::new().max_message_size(max);
    match duplex::upgrade::upgrade(req, &server) {
        Ok((response, pending)) => {
            let shutdown = state.shutdown.clone();
            state.tasks.spawn(async move {
                match pending.await {
                    Ok(ws) => relay::run(ws, rooms, ip, shutdown).await,
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            response.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}
