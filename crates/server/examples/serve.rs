//! A minimal `duplex serve` for tests: the same server code, without the CLI.
//!
//! ```text
//! cargo run -p duplex-server --example serve -- [--bind ADDR] [--data DIR] [--tls-cert PEM --tls-key PEM]
//! ```
//!
//! Prints `duplex: listening on http://ADDR` as its first line (the browser
//! tests parse it) and runs until SIGINT or SIGTERM, then shuts down
//! gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use duplex_server::{Server, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut settings = Settings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Settings::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // Accepted so the command line can mirror `duplex serve ...`.
            "serve" => {}
            "--bind" => {
                let value = args.next().context("--bind needs an address")?;
                settings.bind = value.parse().context("--bind: invalid address")?;
            }
            "--data" => {
                settings.data = PathBuf::from(args.next().context("--data needs a directory")?)
            }
            "--tls-cert" => {
                settings.tls_cert = Some(args.next().context("--tls-cert needs a file")?.into())
            }
            "--tls-key" => {
                settings.tls_key = Some(args.next().context("--tls-key needs a file")?.into())
            }
            other => bail!(
                "unknown argument `{other}` (expected --bind ADDR, --data DIR, --tls-cert PEM, --tls-key PEM)"
            ),
        }
    }
    let server = Server::start(settings).await?;
    for notice in server.notices() {
        eprintln!("duplex: {notice}");
    }
    let (http, _) = server.scheme();
    println!("duplex: listening on {http}://{}", server.local_addr());

    wait_for_signal().await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = sigterm.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    Ok(tokio::signal::ctrl_c().await?)
}
