//! `duplex`: a WebSocket server, client and toolkit in one binary.
//!
//! This file only parses the command line and hands over to one module per
//! subcommand.

mod echo;
mod serve;

use clap::{Parser, Subcommand};

/// Duplex: WebSocket server, client and tools.
#[derive(Parser)]
#[command(name = "duplex", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Duplex server (echo endpoint at /echo).
    Serve(serve::ServeArgs),
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
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duplex: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
