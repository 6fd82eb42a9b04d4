//! `duplex send` and `duplex receive`: the flags, and the terminal view of
//! what `duplex_transfer_client` (which does the work) reports. The
//! protocol is in docs/transfer.md.

mod progress;

use std::path::PathBuf;

use duplex_transfer_client::{Events, ReceiveOptions, SendOptions};

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
    let view = progress::SendView::new(args.json);
    let events = Events::new(move |event| view.show(event));
    let options = SendOptions::new(args.paths, args.server).receivers(args.receivers);
    runtime()?.block_on(duplex_transfer_client::send(options, events))
}

/// Runs `duplex receive`.
pub fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let view = progress::ReceiveView::new(args.json);
    let events = Events::new(move |event| view.show(event));
    let options = ReceiveOptions::new(args.code, args.server, args.out).overwrite(args.overwrite);
    runtime()?.block_on(duplex_transfer_client::receive(options, events))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
