//! `connections`: open N idle WebSocket connections, spread over several
//! loopback source addresses (127.0.0.2, .3, ...) so that no source runs out
//! of ports; report handshakes per second and, given the server's pid, its
//! resident memory and CPU time per connection from `/proc`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::Common;
use super::progress::Progress;
use super::report::{Report, Row, latency_histogram};
use super::target::Target;
use super::wire::ws_connect;

/// Connections each loopback source address opens at most: few enough that
/// `bind` finds a free port at once even with earlier runs' connections
/// still in TIME_WAIT.
const PER_SOURCE: usize = 1_000;

/// The source address of connection `i`: 127.0.0.2 to 127.0.0.254, starting
/// at a place that changes from run to run (sources of the last run may still
/// hold ports in TIME_WAIT).
fn source(i: u64, start: u64) -> SocketAddr {
    let host = 2 + ((start + i / PER_SOURCE as u64) % 253) as u8;
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))
}

#[derive(Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in progress at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// The server's process id: report its RSS and CPU time per connection.
    #[arg(long)]
    server_pid: Option<u32>,
    /// How long to hold the connections open before measuring memory.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

/// The server's resident set (KiB) and CPU time (ticks), from /proc.
fn server_usage(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((rss, utime + stime))
}

/// Clock ticks per second for /proc/PID/stat times.
fn ticks_per_second() -> f64 {
    // Linux reports these in USER_HZ, which its ABI fixes at 100.
    100.0
}

/// Raises the soft open-file limit to the hard limit.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

pub async fn run(args: &ConnectionsArgs) -> Result<Report> {
    raise_nofile();
    let target = Target::parse(&args.common.url, args.common.allow_remote)?
        .with_tls(args.common.cacert.as_deref())?;
    let before = args.server_pid.map(server_usage).transpose()?;
    let progress = Progress::new(!args.common.json);
    let done = Arc::new(AtomicU64::new(0));
    progress.start(Duration::from_secs(10), done.clone());
    let next = Arc::new(AtomicU64::new(0));
    let first = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (target, next, done) = (target.clone(), next.clone(), done.clone());
        let total = args.connections as u64;
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut errors = 0u64;
            let first = first;
            let mut hist = latency_histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let source = target.is_v4_loopback().then(|| source(i, first));
                let t = Instant::now();
                match ws_connect(&target, source).await {
                    Ok((stream, _)) => {
                        hist.saturating_record(t.elapsed().as_nanos() as u64);
                        held.push(stream);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("duplex bench: connection {i} failed: {e:#}");
                        }
                        errors += 1;
                    }
                }
            }
            (held, errors, hist)
        }));
    }
    let mut row = Row::new(format!("connections {}", args.connections));
    let mut held = Vec::new();
    let mut hist = latency_histogram();
    for task in tasks {
        let (streams, errors, h) = task.await?;
        held.extend(streams);
        row.errors += errors;
        hist.add(&h)?;
    }
    row.elapsed = start.elapsed();
    progress.finish();
    row.ops = held.len() as u64;
    row.latency = Some(hist);
    tokio::time::sleep(args.hold).await;
    if let (Some(pid), Some((rss0, cpu0))) = (args.server_pid, before) {
        let (rss1, cpu1) = server_usage(pid)?;
        let n = row.ops.max(1) as f64;
        row.extra
            .push(("rss_kib_per_conn".into(), (rss1 - rss0) / n, "KiB".into()));
        row.extra
            .push(("server_rss_mib".into(), rss1 / 1024.0, "MiB".into()));
        row.extra.push((
            "cpu_us_per_handshake".into(),
            (cpu1 - cpu0) / ticks_per_second() * 1e6 / n,
            "µs".into(),
        ));
    }
    drop(held);
    Ok(Report {
        mode: "connections",
        url: args.common.url.clone(),
        unit: "handshakes",
        params: json!({ "connections": args.connections, "concurrency": args.concurrency,
                        "server_pid": args.server_pid }),
        rows: vec![row],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_on_loopback_and_spread() {
        for start in [0, 252, u64::MAX / 2] {
            for i in [0, 999, 1_000, 300_000] {
                let a = source(i, start);
                assert!(a.ip().is_loopback() && a.port() == 0);
                assert_ne!(a.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
            }
        }
        assert_ne!(source(0, 7).ip(), source(1_000, 7).ip());
    }
}
