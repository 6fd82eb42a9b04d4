//! # duplex-server: the Duplex real-time hub
//!
//! What `duplex serve` runs: one port for the browser UI, the echo
//! WebSocket, the hub WebSocket (channels with history and exact recovery,
//! presence, chat) and an HTTP API for server push, with history in an
//! embedded SQLite database. The protocol is in `docs/protocol.md`.
//!
//! Each concept has its own short module:
//! [`protocol`] (the wire format), [`publication`], [`store`] (history),
//! [`hub`] (subscriptions and delivery), [`broker`] (the publish pipeline),
//! [`session`] (one connection), [`api`] (HTTP), [`auth`], [`ratelimit`],
//! [`metrics`], [`settings`], [`redis`] (several nodes sharing channels),
//! [`app`] (assembly and shutdown),
//! [`endpoint`] (the WebSocket endpoints and their checks), [`connection`]
//! (TLS, HTTP/1.1 and HTTP/2), [`fastpath`] (WebSocket upgrades without
//! hyper),
//! [`transfer`] (the file-transfer relay, `docs/transfer.md`), and
//! [`workers`] (one runtime per core).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let server = duplex_server::Server::start(duplex_server::Settings::default()).await?;
//! println!("listening on {}", server.local_addr());
//! tokio::signal::ctrl_c().await?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod admission;
pub mod answers;
pub mod api;
pub mod app;
pub mod auth;
pub mod broker;
pub mod connection;
pub mod echo;
pub mod endpoint;
pub mod fastpath;
pub mod http2;
pub mod hub;
pub mod metrics;
pub mod notice;
pub mod publication;
pub mod queue;
pub mod random;
pub mod ratelimit;
pub mod redis;
pub mod session;
pub mod settings;
pub mod signal;
pub mod state;
pub mod store;
pub mod transfer;
pub mod ui;
pub mod workers;

pub use app::Server;
pub use notice::Notice;
pub use settings::Settings;
