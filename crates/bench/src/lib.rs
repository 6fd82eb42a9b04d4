//! The load generator of `duplex bench`: cheap enough that the server under
//! test is the bottleneck. The options of each mode are clap arguments (one
//! definition of each flag and its default, used by the `duplex` binary and
//! by anyone who embeds the generator); [`measure`] runs a mode and returns
//! its [`Report`], which prints as a table, JSON or an HTML page.
//!
//! Modes: `echo` (throughput of a closed-loop echo), `latency` (one
//! connection, round-trip percentiles), `connections` (handshakes per second
//! and the server's memory per idle connection), `fanout` (hub deliveries per
//! second and their latency) and `http` (the same payloads as HTTP/1.1
//! request-response). Every echo is checked; any error fails the run.

#![warn(missing_docs)]

pub mod connections;
pub mod echo;
pub mod fanout;
pub mod html;
pub mod http;
mod progress;
pub mod report;
pub mod server_usage;
pub mod target;
pub mod transfer;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use self::echo::EchoPlan;
use self::progress::Progress;
use self::report::Report;
use self::target::Target;

/// What to measure: `duplex bench MODE URL [OPTIONS]`.
#[derive(Subcommand)]
pub enum Mode {
    /// Closed-loop echo throughput: messages/s and MB/s (ws://HOST:PORT/echo).
    Echo(EchoArgs),
    /// Round-trip latency of one connection with one message in flight:
    /// HDR histogram percentiles.
    Latency(LatencyArgs),
    /// Open N idle connections: handshakes/s, and the server's RSS and CPU
    /// per connection with --server-pid.
    Connections(connections::ConnectionsArgs),
    /// Hub fan-out: N subscribers on a channel of `duplex serve` (ws://HOST:PORT/ws),
    /// deliveries/s and delivery latency.
    Fanout(fanout::FanoutArgs),
    /// The same payloads as HTTP/1.1 POST request-response
    /// (http://HOST:PORT/echo-http), with keep-alive and with a new
    /// connection per request.
    Http(http::HttpArgs),
    /// A large transfer through the `/files` relay of `duplex serve`
    /// (ws://HOST:PORT/files), plain and end-to-end encrypted, beside a raw
    /// TCP copy of the same bytes.
    Transfer(transfer::TransferArgs),
}

/// Options every mode has.
#[derive(Args, Clone)]
pub struct Common {
    /// The target: ws://HOST:PORT/PATH (http:// for `http`). Loopback only
    /// unless --allow-remote.
    pub url: String,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML page with charts (self-contained SVG) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// For wss:// targets: trust only the PEM certificates in FILE instead
    /// of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The server's process id (on this machine): report its CPU time per
    /// message and how busy it was (echo, latency, fanout), per MiB relayed
    /// (transfer), or its memory and CPU per connection (connections).
    /// Repeatable: a server made of
    /// several processes (nodes and their Redis) counts as their sum.
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,
}

/// The options of `echo`.
#[derive(Args)]
pub struct EchoArgs {
    /// The target and the report's form.
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: usize,
    /// Messages in flight per connection (1: request-response; more: pipelined).
    #[arg(short = 'p', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Payload size in bytes (suffixes k/K = KiB, m/M = MiB: 16, 4k, 1m).
    #[arg(short = 's', long, default_value = "16", value_parser = parse_size)]
    pub size: usize,
    /// How long to send, e.g. 10s, 500ms.
    #[arg(short = 'd', long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many messages in all (0: only the duration bounds the run).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub messages: u64,
    /// Send text frames instead of binary.
    #[arg(long)]
    pub text: bool,
    /// Expect our own masked frames back byte for byte: for measuring a
    /// plain TCP echo (the ceiling) with the same client.
    #[arg(long)]
    pub mirror: bool,
    /// Negotiate permessage-deflate (no context takeover either way) and
    /// send JSON-like text compressed; echoes are inflated and checked.
    #[arg(long, conflicts_with = "mirror")]
    pub compress: bool,
    /// Open the connections as streams of HTTP/2 connections (RFC 8441):
    /// up to 128 sockets share one TCP (and TLS) connection.
    #[arg(long, conflicts_with = "mirror")]
    http2: bool,
}

/// The options of `latency`.
#[derive(Args)]
pub struct LatencyArgs {
    /// The target and the report's form.
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Payload size in bytes (k/K = KiB, m/M = MiB).
    #[arg(short = 's', long, default_value = "16", value_parser = parse_size)]
    pub size: usize,
    /// How long to measure.
    #[arg(short = 'd', long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many round trips (0: only the duration bounds the run).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub messages: u64,
    /// Round trips before measuring, to warm up both sides.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Expect our own masked frames back byte for byte (a plain TCP echo).
    #[arg(long)]
    pub mirror: bool,
}

/// Parses `16`, `4k`, `1m` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g' | 'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s}: {e}"))
}

/// Human form of a size: 16 B, 4 KiB, 1 MiB.
pub fn show_size(n: usize) -> String {
    if n >= 1 << 30 && n % (1 << 30) == 0 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Runs one mode: its report, and the options every mode has (where to
/// print it).
pub async fn measure(mode: Mode) -> Result<(Common, Report)> {
    // Each mode reads the server's CPU time (--server-pid) over the window
    // it measures, not over its setup.
    match mode {
        Mode::Echo(a) => measure_echo(a).await,
        Mode::Latency(a) => measure_latency(a).await,
        Mode::Connections(a) => {
            let report = connections::run(&a).await?;
            Ok((a.common, report))
        }
        Mode::Fanout(a) => {
            let report = fanout::run(&a).await?;
            Ok((a.common, report))
        }
        Mode::Http(a) => {
            let report = http::run(&a).await?;
            Ok((a.common, report))
        }
        Mode::Transfer(a) => {
            let report = transfer::run(&a).await?;
            Ok((a.common, report))
        }
    }
}

/// The target of `echo` and `latency`, with the TLS settings of wss://.
fn echo_target(common: &Common) -> Result<Target> {
    Target::parse(&common.url, common.allow_remote)?.with_tls(common.cacert.as_deref())
}

/// The `echo` mode: one closed-loop run as planned by the options.
async fn measure_echo(a: EchoArgs) -> Result<(Common, Report)> {
    let target = echo_target(&a.common)?;
    let plan = EchoPlan {
        connections: a.connections,
        pipeline: a.pipeline,
        size: a.size,
        duration: a.duration,
        max_messages: a.messages,
        text: a.text,
        mirror: a.mirror,
        compress: a.compress,
        http2: a.http2,
        server_pids: a.common.server_pid.clone(),
    };
    let progress = Progress::new(!a.common.json);
    let name = format!(
        "echo {}x{} {}{}{}",
        a.connections,
        a.pipeline,
        show_size(a.size),
        if a.compress { " deflate" } else { "" },
        if a.http2 { " h2" } else { "" }
    );
    let row = echo::run(&target, &plan, name, &progress).await?;
    let report = Report {
        mode: "echo",
        url: a.common.url.clone(),
        unit: "msgs",
        params: json!({
            "connections": a.connections, "pipeline": a.pipeline, "size": a.size,
            "duration_s": a.duration.as_secs_f64(), "text": a.text, "mirror": a.mirror,
            "compress": a.compress, "http2": a.http2,
        }),
        rows: vec![row],
    };
    Ok((a.common, report))
}

/// The `latency` mode: a warmup, then one connection with one binary
/// message in flight; the server's CPU is watched after the warmup only.
async fn measure_latency(a: LatencyArgs) -> Result<(Common, Report)> {
    let target = echo_target(&a.common)?;
    let progress = Progress::new(!a.common.json);
    if a.warmup > 0 {
        warm_up(&target, &a).await?;
    }
    let plan = EchoPlan {
        server_pids: a.common.server_pid.clone(),
        ..one_in_flight(a.size, a.duration, a.messages, a.mirror)
    };
    let name = format!("latency 1x1 {}", show_size(a.size));
    let row = echo::run(&target, &plan, name, &progress).await?;
    let report = Report {
        mode: "latency",
        url: a.common.url.clone(),
        unit: "msgs",
        params: json!({ "size": a.size, "duration_s": a.duration.as_secs_f64() }),
        rows: vec![row],
    };
    Ok((a.common, report))
}

/// `--warmup` round trips, unreported, to warm up both sides; any error
/// fails the run.
async fn warm_up(target: &Target, a: &LatencyArgs) -> Result<()> {
    let warm = one_in_flight(a.size, Duration::from_secs(10), a.warmup, a.mirror);
    let row = echo::run(target, &warm, "warmup".into(), &Progress::new(false)).await?;
    if row.errors > 0 {
        bail!("{} errors while warming up", row.errors);
    }
    Ok(())
}

/// The plan of `latency`: one connection, one binary message in flight.
fn one_in_flight(size: usize, duration: Duration, max_messages: u64, mirror: bool) -> EchoPlan {
    EchoPlan {
        connections: 1,
        pipeline: 1,
        size,
        duration,
        max_messages,
        text: false,
        mirror,
        compress: false,
        http2: false,
        server_pids: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16"), Ok(16));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(show_size(2 << 30), "2 GiB");
        assert!(parse_size("x").is_err());
        assert_eq!(show_size(4096), "4 KiB");
        assert_eq!(show_size(16), "16 B");
    }
}
