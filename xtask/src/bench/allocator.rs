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
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{Bins, SERVERS, bench_report, median, run_cargo_release, start};
use crate::Paths;

/// Runs `reps` repetitions of `connections` idle connections per server
/// and allocator; returns the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, connections: usize) -> Result<String> {
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
    let jemalloc = Bins {
        duplex: bins.duplex.clone(),
        echo: target.join("release").join("bench-echo"),
    };
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
        let mut order: Vec<(usize, usize)> = (0..allocators.len())
            .flat_map(|a| (0..servers.len()).map(move |s| (a, s)))
            .collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for (ai, si) in order {
            let (allocator, bins) = allocators[ai];
            let server = servers[si];
            let log = dir.join(format!("{}.log", server.name));
            let running = start(paths, bins, server, &log)?;
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
            let k = v["rows"][0]["extra"]["rss_kib_per_conn"]
                .as_f64()
                .unwrap_or(f64::NAN);
            println!(
                "    rep {} {connections} idle connections, {allocator:<13} {:<26} {k:.3} KiB/conn",
                rep + 1,
                server.label
            );
            kib[ai][si].push(k);
        }
    }
    let mut t = format!(
        "## Idle memory by allocator\n\n\
         Server RSS growth per connection with {connections} idle connections (`duplex bench connections`), \
         the same `bench-echo` servers built with glibc's malloc and with jemalloc \
         (`--features jemalloc`), alternated in one run; medians of {reps} repetition(s), in KiB.\n\n\
         | allocator |"
    );
    for s in &servers {
        let _ = write!(t, " {} |", s.label);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(servers.len()));
    t.push('\n');
    for (ai, (allocator, _)) in allocators.iter().enumerate() {
        let _ = write!(t, "| {allocator} |");
        for cell in &kib[ai] {
            let _ = write!(t, " {:.3} |", median(cell.clone()));
        }
        t.push('\n');
    }
    Ok(t)
}
