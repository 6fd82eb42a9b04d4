//! The allocator section of `cargo xtask bench`: memory per idle connection
//! with glibc's malloc and with jemalloc, for every `bench-echo` server.
//!
//! Why: an idle tokio connection is a few small allocations (for Duplex,
//! the task and tokio's I/O registration, both 128-byte aligned), and what
//! they cost in RSS depends on the allocator as much as on the library:
//! glibc pads aligned allocations. The same binary built twice, alternated
//! in one run, shows how much. (`duplex serve` is left out: its allocator
//! is the product's, measured in the main table.)

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{Bins, SERVERS, Server, bench_report, median, run_cargo_release, start};
use crate::Paths;

/// Runs `reps` repetitions of `connections` idle connections per server
/// and allocator; returns the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, connections: usize) -> Result<String> {
    let jemalloc = build_jemalloc(paths, bins)?;
    let allocators = [("glibc malloc", bins), ("jemalloc", &jemalloc)];
    let servers: Vec<_> = SERVERS
        .iter()
        .filter(|s| s.name != "duplex-serve")
        .collect();
    let dir = paths.target.join("bench").join("allocator");
    std::fs::create_dir_all(&dir)?;
    // kib[allocator][server] = KiB per connection, one per repetition.
    let mut kib = vec![vec![Vec::<f64>::new(); servers.len()]; allocators.len()];
    for rep in 0..reps {
        for (ai, si) in run_order(allocators.len(), servers.len(), rep) {
            let (allocator, _) = allocators[ai];
            let server = servers[si];
            let log = dir.join(format!("{}.log", server.name));
            let k = idle_kib(paths, allocators[ai], server, &log, connections)?;
            println!(
                "    rep {} {connections} idle connections, {allocator:<13} {:<26} {k:.3} KiB/conn",
                rep + 1,
                server.label
            );
            kib[ai][si].push(k);
        }
    }
    let medians: Vec<(&str, Vec<f64>)> = allocators
        .iter()
        .zip(&kib)
        .map(|(&(allocator, _), row)| {
            let row = row.iter().map(|cell| median(cell.clone())).collect();
            (allocator, row)
        })
        .collect();
    Ok(markdown(reps, connections, &servers, &medians))
}

/// Builds the `bench-echo` servers with jemalloc; the binaries to run them.
fn build_jemalloc(paths: &Paths, bins: &Bins) -> Result<Bins> {
    let target = paths.target.join("bench-servers-jemalloc");
    run_cargo_release(
        paths,
        &[
            "--manifest-path",
            "bench/Cargo.toml",
            "--features",
            "jemalloc",
        ],
        &target,
    )?;
    Ok(Bins {
        duplex: bins.duplex.clone(),
        echo: target.join("release").join("bench-echo"),
    })
}

/// Every (allocator, server) pair, reversed on odd repetitions so that
/// drift in the machine does not favour one.
fn run_order(allocators: usize, servers: usize, rep: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> = (0..allocators)
        .flat_map(|a| (0..servers).map(move |s| (a, s)))
        .collect();
    if rep % 2 == 1 {
        order.reverse();
    }
    order
}

/// The server's RSS growth per idle connection, KiB, with `connections`
/// held open against a fresh `server` built with `allocator` (its name and
/// binaries).
fn idle_kib(
    paths: &Paths,
    (allocator, bins): (&str, &Bins),
    server: &Server,
    log: &Path,
    connections: usize,
) -> Result<f64> {
    let running = start(paths, bins, server, log)?;
    let url = format!("ws://{}/", running.addr);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(&bins.duplex)
        .args(["bench", "connections", &url, "--json"])
        .args(["-n", &connections.to_string(), "--hold", "1s"])
        .args(["--server-pid", &running.child.id().to_string()]);
    let v = bench_report(
        &mut cmd,
        Duration::from_secs(600),
        &format!("idle connections on {} ({allocator})", server.name),
    )?;
    drop(running);
    Ok(v["rows"][0]["extra"]["rss_kib_per_conn"]
        .as_f64()
        .unwrap_or(f64::NAN))
}

/// The section, from the medians: per allocator, KiB per connection for
/// each of `servers`.
fn markdown(
    reps: usize,
    connections: usize,
    servers: &[&Server],
    medians: &[(&str, Vec<f64>)],
) -> String {
    let mut t = format!(
        "## Idle memory by allocator\n\n\
         Server RSS growth per connection with {connections} idle connections (`duplex bench connections`), \
         the same `bench-echo` servers built with glibc's malloc and with jemalloc \
         (`--features jemalloc`), alternated in one run; medians of {reps} repetition(s), in KiB.\n\n\
         | allocator |"
    );
    for s in servers {
        let _ = write!(t, " {} |", s.label);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(servers.len()));
    t.push('\n');
    for (allocator, kib) in medians {
        t.push_str(&table_row(allocator, kib));
    }
    t
}

/// An allocator's row: KiB per connection for each server.
fn table_row(allocator: &str, kib: &[f64]) -> String {
    let mut t = format!("| {allocator} |");
    for k in kib {
        let _ = write!(t, " {k:.3} |");
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_kib_per_connection_for_each_server() {
        let servers: Vec<&Server> = SERVERS
            .iter()
            .filter(|s| s.name != "duplex-serve")
            .collect();
        let medians = [
            ("glibc malloc", vec![3.15, 4.5, 6.1, 8.5]),
            ("jemalloc", vec![2.15, 2.5, 5.1, 7.5]),
        ];
        let t = markdown(3, 10_000, &servers, &medians);
        assert!(
            t.starts_with(
                "## Idle memory by allocator\n\nServer RSS growth per connection with 10000 idle connections "
            ),
            "{t}"
        );
        let table = &t[t.find("| allocator |").expect("a table")..];
        assert_eq!(
            table,
            concat!(
                "| allocator | TCP echo | Duplex (accept) | fastwebsockets | tokio-tungstenite |\n",
                "|---|---|---|---|---|\n",
                "| glibc malloc | 3.150 | 4.500 | 6.100 | 8.500 |\n",
                "| jemalloc | 2.150 | 2.500 | 5.100 | 7.500 |\n",
            )
        );
    }

    #[test]
    fn odd_repetitions_run_the_pairs_backwards() {
        assert_eq!(run_order(2, 2, 0), [(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_eq!(run_order(2, 2, 1), [(1, 1), (1, 0), (0, 1), (0, 0)]);
    }
}
