//! `duplex serve`: one port for the web UI, the echo endpoint and the API.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use duplex::ServerBuilder;

/// Options of `duplex serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DUPLEX_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "DUPLEX_MAX_MESSAGE_SIZE", default_value_t = 64 << 20)]
    pub max_message_size: usize,
}

#[derive(Clone)]
struct AppState {
    ws: ServerBuilder,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ws = ServerBuilder::new().max_message_size(args.max_message_size);
    let app = Router::new()
        .route("/echo", get(echo))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState { ws });
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server using it? try --bind 127.0.0.1:0)",
                args.bind
            )
        })?;
    let addr = listener.local_addr()?;
    println!("duplex: listening on http://{addr}");
    println!("duplex: echo WebSocket at ws://{addr}/echo");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    Ok(())
}

async fn echo(State(state): State<AppState>, req: Request) -> Response {
    match duplex::upgrade::upgrade(req, &state.ws) {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                match pending.await {
                    Ok(ws) => crate::echo::run(ws).await,
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            response.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    println!("duplex: shutting down");
}
