//! The hub fan-out section of `cargo xtask bench`: N subscribers on one
//! channel of `duplex serve` (CPU 0), publications through its HTTP API,
//! loaded and checked by `duplex bench fanout` (CPU 1): every subscriber
//! must get every publication, in order.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{Bins, SERVERS, bench_report, median, start};
use crate::Paths;

/// (subscribers, publications per second; 0 = flat out, one at a time).
const RUNS: [(u32, u32); 3] = [(100, 100), (1000, 100), (1000, 0)];

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    deliveries: f64,
    publications: f64,
    p50: f64,
    p99: f64,
}

/// Runs `reps` repetitions of `seconds` per configuration; returns the
/// markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    let serve = SERVERS
        .iter()
        .find(|s| s.name == "duplex-serve")
        .expect("duplex serve is a bench server");
    let log = paths.target.join("bench").join("fanout-serve.log");
    let mut samples = vec![Vec::<Sample>::new(); RUNS.len()];
    for rep in 0..reps {
        for (ri, &(n, rate)) in RUNS.iter().enumerate() {
            let running = start(paths, bins, serve, &log)?;
            let url = format!("ws://{}/ws", running.addr);
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "1"]).arg(&bins.duplex).args([
                "bench",
                "fanout",
                &url,
                "--json",
                "-n",
                &n.to_string(),
                "-r",
                &rate.to_string(),
                "-d",
                &format!("{seconds}s"),
            ]);
            let v = bench_report(&mut cmd, Duration::from_secs(600), "duplex bench fanout")?;
            drop(running);
            let row = &v["rows"][0];
            let s = Sample {
                deliveries: row["ops_per_sec"].as_f64().unwrap_or(0.0),
                publications: row["extra"]["pub_per_s"].as_f64().unwrap_or(0.0),
                p50: row["latency_us"]["p50"].as_f64().unwrap_or(0.0),
                p99: row["latency_us"]["p99"].as_f64().unwrap_or(0.0),
            };
            println!(
                "    rep {} fanout {n} subscribers, {}: {:.0} deliveries/s, p50 {:.0} µs, p99 {:.0} µs",
                rep + 1,
                rate_label(rate),
                s.deliveries,
                s.p50,
                s.p99
            );
            samples[ri].push(s);
        }
    }
    let mut t = format!(
        "## Hub fan-out\n\n\
         `duplex serve` (SQLite store, defaults) on CPU 0; `duplex bench fanout` on CPU 1 subscribes N connections \
         to one channel of `/ws`, publishes numbered messages through `POST /api/publish` (one keep-alive connection, \
         each publication answered after its commit) and checks that every subscriber gets every publication in order. \
         Latency is from the publish call to the arrival at a subscriber, measured over every delivery (the load \
         generator reads the N deliveries of a publication one after another on one core, so the tail includes its own \
         queueing). Medians of {reps} repetition(s) of {seconds} s:\n\n\
         ```sh\ntaskset -c 1 duplex bench fanout ws://127.0.0.1:PORT/ws --json -n N -r RATE -d {seconds}s\n```\n\n\
         | subscribers | publications | publications/s | deliveries/s | delivery p50 / p99 |\n|---|---|---|---|---|\n"
    );
    for (ri, &(n, rate)) in RUNS.iter().enumerate() {
        let med = |f: fn(&Sample) -> f64| median(samples[ri].iter().map(f).collect());
        let _ = writeln!(
            t,
            "| {n} | {} | {:.0} | {:.0} | {:.1} / {:.1} ms |",
            rate_label(rate),
            med(|s| s.publications),
            med(|s| s.deliveries),
            med(|s| s.p50) / 1000.0,
            med(|s| s.p99) / 1000.0
        );
    }
    Ok(t)
}

fn rate_label(rate: u32) -> String {
    if rate == 0 {
        "flat out, one at a time".into()
    } else {
        format!("{rate}/s")
    }
}
