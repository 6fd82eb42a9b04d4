//! `duplex`: a WebSocket server, client and toolkit in one binary.
//!
//! This file only parses the command line and hands over to one module per
//! subcommand.

mod bench;
mod connect;
mod conversation;
mod exit;
mod hub;
mod listen;
mod serve;
mod transfer;

use clap::{Parser, Subcommand};

// jemalloc, not glibc's malloc: an idle `duplex serve` connection is two
// 128-byte-aligned allocations (its task and tokio's ScheduledIo), around
// which glibc leaves about a third of the memory as padding and headers.
// Measured on 5,000 idle /echo connections: 0.85 KiB each against 1.19 KiB,
// and the echo and the hub's fan-out no slower (docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Duplex: WebSocket server, client and tools.
#[derive(Parser)]
#[command(name = "duplex", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Duplex server: chat UI, hub, echo, file-transfer relay and pages, HTTP API, metrics.
    Serve(Box<serve::ServeArgs>),
    /// Publish to a hub channel through the server's HTTP API.
    Publish(hub::publish::PublishArgs),
    /// Print a hub channel's publications as they arrive (recovering after drops).
    Subscribe(hub::subscribe::SubscribeArgs),
    /// Chat in a room of the hub from the terminal.
    Chat(hub::chat::ChatArgs),
    /// Connect to a WebSocket server: interactive on a terminal, one
    /// message per line with pipes.
    Connect(connect::ConnectArgs),
    /// Accept WebSocket clients and bridge them to stdin/stdout or to a
    /// command (--exec).
    Listen(listen::ListenArgs),
    /// Load-test a WebSocket or HTTP server: echo, latency, connections,
    /// fanout, http.
    Bench(bench::BenchArgs),
    /// Send files and folders: prints a code for `duplex receive`
    /// (end-to-end encrypted, verified, resumable).
    Send(transfer::SendArgs),
    /// Receive files sent with `duplex send`, by their code.
    Receive(transfer::ReceiveArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DUPLEX_LOG")
                .unwrap_or_else(|_| "duplex=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Publish(args) => hub::publish::run(args),
        Command::Subscribe(args) => hub::subscribe::run(args),
        Command::Chat(args) => hub::chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Send(args) => transfer::send(args),
        Command::Receive(args) => transfer::receive(args),
        // These two report their own errors; their exit statuses are
        // documented (see exit.rs).
        Command::Connect(args) => return connect::run(args).into(),
        Command::Listen(args) => return listen::run(args).into(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duplex: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
