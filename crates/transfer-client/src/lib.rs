//! # duplex-transfer-client: the two ends of a Duplex file transfer
//!
//! What `duplex send` and `duplex receive` run, as a library: files and
//! folders through the `/files` relay of `duplex serve`, end-to-end
//! encrypted (SPAKE2 keyed by the code, then AES-256-GCM), verified per
//! chunk (the AEAD tag) and per file (its seal), resumable from the last
//! verified chunk, to one or several receivers. The wire protocol is
//! [`duplex_transfer`]'s; the whole of it is in `docs/transfer.md`.
//!
//! [`send`] and [`receive`] run until the transfer is done (or fails for
//! good), reconnecting with backoff on the way; what happens meanwhile
//! goes to an [`Events`] handler as [`SendEvent`]s and [`ReceiveEvent`]s.
//!
//! ```
//! use duplex_transfer_client::{Events, ReceiveOptions, SendEvent, SendOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let settings = duplex_server::Settings {
//! #     bind: "127.0.0.1:0".parse()?,
//! #     data: dir.path().join("data"),
//! #     ..Default::default()
//! # };
//! # let relay = duplex_server::Server::start(settings).await?;
//! # let server = format!("http://{}", relay.local_addr());
//! # let report = dir.path().join("report.pdf");
//! # std::fs::write(&report, b"%PDF-1.7 ...")?;
//! // `server` is a `duplex serve`, e.g. "http://127.0.0.1:8080".
//! let (code_tx, code_rx) = tokio::sync::oneshot::channel();
//! let code_tx = std::sync::Mutex::new(Some(code_tx));
//! let events = Events::new(move |event| {
//!     if let SendEvent::Code { code, .. } = event {
//!         code_tx.lock().unwrap().take().map(|tx| tx.send(code));
//!     }
//! });
//! let sending = tokio::spawn(duplex_transfer_client::send(
//!     SendOptions::new(vec![report], server.clone()),
//!     events,
//! ));
//! // The code (e.g. 7-violet-anchor) goes to the receiver by other means.
//! let code = code_rx.await?;
//! let inbox = dir.path().join("inbox");
//! let options = ReceiveOptions::new(code, server, inbox.clone());
//! duplex_transfer_client::receive(options, Events::ignore()).await?;
//! sending.await??;
//! assert_eq!(std::fs::read(inbox.join("report.pdf"))?, b"%PDF-1.7 ...");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod events;
pub mod link;
pub mod manifest;
mod receive;
mod send;
mod words;

use std::path::PathBuf;
use std::time::Duration;

pub use events::{Events, ReceiveEvent, SendEvent};

/// What to send, where, to how many receivers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendOptions {
    /// Files and folders (a folder keeps its name and tree).
    pub paths: Vec<PathBuf>,
    /// The Duplex server relaying the transfer (`http://`, `https://`,
    /// `ws://`, `wss://`, or `host:port`).
    pub server: String,
    /// How many receivers must have everything before [`send`] returns.
    pub receivers: usize,
}

impl SendOptions {
    /// `paths` through `server`, to one receiver.
    pub fn new(paths: Vec<PathBuf>, server: String) -> Self {
        Self {
            paths,
            server,
            receivers: 1,
        }
    }

    /// Waits for `n` receivers (at least one).
    pub fn receivers(mut self, n: usize) -> Self {
        self.receivers = n.max(1);
        self
    }
}

/// Which transfer to receive, through which server, into which folder.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// The code the sender got, e.g. `7-violet-anchor`.
    pub code: String,
    /// The Duplex server relaying the transfer.
    pub server: String,
    /// The folder to write into (created if missing).
    pub out: PathBuf,
    /// Whether files that exist with other contents are replaced (else
    /// the transfer stops before writing anything).
    pub overwrite: bool,
}

impl ReceiveOptions {
    /// `code` through `server` into `out`, replacing nothing.
    pub fn new(code: String, server: String, out: PathBuf) -> Self {
        Self {
            code,
            server,
            out,
            overwrite: false,
        }
    }

    /// Replaces files that exist with other contents.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

/// Sends until enough receivers have everything, verified.
pub async fn send(options: SendOptions, events: Events<SendEvent>) -> anyhow::Result<()> {
    send::run(options, events).await
}

/// Receives until every file is verified and in place.
pub async fn receive(options: ReceiveOptions, events: Events<ReceiveEvent>) -> anyhow::Result<()> {
    receive::run(options, events).await
}

/// The wait before reconnect attempt `n` (1-based): 0.5 s doubling to 8 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64 << n.saturating_sub(1).min(4))
}
