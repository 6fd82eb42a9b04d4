//! `connections`: open N idle WebSocket connections, spread over several
//! loopback source addresses (127.0.0.2, .3, ...) so that no source runs out
//! of ports; report handshakes per second and, given the server's pid, its
//! resident memory and CPU time per connection from `/proc`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Common;
use crate::progress::Progress;
use crate::report::{Report, Row, latency_histogram};
use crate::server_usage;
use crate::target::Target;
use crate::wire::{BenchStream, ws_connect};

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

/// The options of `connections`.
#[derive(Args)]
pub struct ConnectionsArgs {
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub connections: usize,
    /// Handshakes in progress at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to hold the connections open before measuring memory.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
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

/// Opens the connections and measures.
pub async fn run(args: &ConnectionsArgs) -> Result<Report> {
    raise_nofile();
    let target = Target::parse(&args.common.url, args.common.allow_remote)?
        .with_tls(args.common.cacert.as_deref())?;
    let pids = &args.common.server_pid;
    let before = (!pids.is_empty())
        .then(|| server_usage::read(pids))
        .transpose()?;
    let progress = Progress::new(!args.common.json);
    let done = Arc::new(AtomicU64::new(0));
    progress.start(Duration::from_secs(10), done.clone());
    let next = Arc::new(AtomicU64::new(0));
    let first_source = first_source();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let opener = Opener {
            target: target.clone(),
            next: next.clone(),
            done: done.clone(),
            total: args.connections as u64,
            first_source,
        };
        tasks.push(tokio::spawn(opener.run()));
    }
    let mut row = Row::new(format!("connections {}", args.connections));
    let mut held = Vec::new();
    let mut hist = latency_histogram();
    for task in tasks {
        let opened = task.await?;
        held.extend(opened.held);
        row.errors += opened.errors;
        hist.add(&opened.latency)?;
    }
    row.elapsed = start.elapsed();
    progress.finish();
    row.ops = held.len() as u64;
    row.latency = Some(hist);
    tokio::time::sleep(args.hold).await;
    if let Some(before) = before {
        report_server_usage(&mut row, pids, &before)?;
    }
    drop(held);
    Ok(Report {
        mode: "connections",
        url: args.common.url.clone(),
        unit: "handshakes",
        params: json!({ "connections": args.connections, "concurrency": args.concurrency,
                        "server_pid": args.common.server_pid }),
        rows: vec![row],
    })
}

/// Where this run starts among the source addresses: from the pid and the
/// time, so that runs in a row use different ones.
fn first_source() -> u64 {
    u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
}

/// One of the `--concurrency` openers: takes connection numbers from the
/// shared `next` until `total`, one handshake at a time.
struct Opener {
    target: Target,
    next: Arc<AtomicU64>,
    /// Connections opened by all the openers, for the progress bar.
    done: Arc<AtomicU64>,
    total: u64,
    first_source: u64,
}

/// What one opener opened: the connections, still open, and its failures.
struct Opened {
    held: Vec<BenchStream>,
    errors: u64,
    latency: Histogram<u64>,
}

impl Opener {
    async fn run(self) -> Opened {
        let mut opened = Opened {
            held: Vec::new(),
            errors: 0,
            latency: latency_histogram(),
        };
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.total {
                break;
            }
            let source = self
                .target
                .is_v4_loopback()
                .then(|| source(i, self.first_source));
            let t = Instant::now();
            match ws_connect(&self.target, source).await {
                Ok((stream, _)) => {
                    opened
                        .latency
                        .saturating_record(t.elapsed().as_nanos() as u64);
                    opened.held.push(stream);
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if opened.errors == 0 {
                        eprintln!("duplex bench: connection {i} failed: {e:#}");
                    }
                    opened.errors += 1;
                }
            }
        }
        opened
    }
}

/// The server's memory and CPU time per connection, from its usage before
/// the connections and now.
fn report_server_usage(row: &mut Row, pids: &[u32], before: &server_usage::Usage) -> Result<()> {
    let after = server_usage::read(pids)?;
    let n = row.ops.max(1) as f64;
    row.extra.push((
        "rss_kib_per_conn".into(),
        (after.rss_kib - before.rss_kib) / n,
        "KiB".into(),
    ));
    row.extra.push((
        "server_rss_mib".into(),
        after.rss_kib / 1024.0,
        "MiB".into(),
    ));
    row.extra.push((
        "cpu_us_per_handshake".into(),
        (after.cpu_seconds - before.cpu_seconds) * 1e6 / n,
        "µs".into(),
    ));
    Ok(())
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
