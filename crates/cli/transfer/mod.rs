//! `duplex send` and `duplex receive`: files and folders through the
//! `/files` relay of `duplex serve`, end-to-end encrypted (SPAKE2 keyed by
//! the code, then AES-256-GCM: `duplex_transfer::seal`), verified per chunk
//! (the AEAD tag) and per file (SHA-256 of the chunk digests), resumable,
//! to one or several receivers. The protocol is in docs/transfer.md.

mod manifest;
mod progress;
mod receive;
mod send;
pub(crate) mod wire;
mod words;

use std::path::PathBuf;
use std::time::Duration;

/// Options of `duplex send`.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Files and folders to send (a folder keeps its name and tree)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The Duplex server relaying the transfer (http://, https://, ws://, wss://)
    #[arg(long, env = "DUPLEX_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Wait until this many receivers have everything, then exit
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub receivers: usize,
    /// Print the code as {"code": ...} and progress as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

/// Options of `duplex receive`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReceiveArgs {
    /// The code `duplex send` printed, e.g. 7-violet-anchor
    pub code: String,
    /// The Duplex server relaying the transfer (http://, https://, ws://, wss://)
    #[arg(long, env = "DUPLEX_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Folder to write into (created if missing)
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Replace files that already exist with different contents
    #[arg(long)]
    pub overwrite: bool,
    /// Print progress and events as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

/// Runs `duplex send`.
pub fn send(args: SendArgs) -> anyhow::Result<()> {
    runtime()?.block_on(send::run(args))
}

/// Runs `duplex receive`.
pub fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    runtime()?.block_on(receive::run(args))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The wait before reconnect attempt `n` (1-based): 0.5 s doubling to 8 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64 << n.saturating_sub(1).min(4))
}
