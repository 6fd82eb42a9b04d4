//! The HTTP/2 section of `cargo xtask bench`: `duplex serve`'s echo over
//! TLS, its sockets opened over HTTP/1.1 (a connection each) and over
//! HTTP/2 (streams of shared connections: `duplex bench echo --http2`),
//! with the server's CPU time per message, which says what HTTP/2 costs
//! when throughput cannot (the generator may saturate first).

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{Bins, SERVERS, alternating, bench_report, human, median, start_with, tls};
use crate::Paths;

/// (label, sockets, in flight, size) of each row.
const WORKLOADS: [(&str, u32, u32, &str); 3] = [
    ("100 sockets, 1 in flight, 16 B", 100, 1, "16"),
    ("100 sockets, 16 in flight, 16 B (pipelined)", 100, 16, "16"),
    ("100 sockets, 1 in flight, 4 KiB", 100, 1, "4k"),
];

/// The two ways of opening the sockets: the label, and `duplex bench`'s
/// extra arguments.
const VERSIONS: [(&str, &[&str]); 2] = [("HTTP/1.1 + TLS", &[]), ("HTTP/2 + TLS", &["--http2"])];

/// One measurement: messages/s, the server's µs of CPU per message, and
/// how busy it was (% of a core).
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_us: f64,
    busy: f64,
}

/// Runs `reps` repetitions of `seconds` per workload and version; returns
/// the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    let dir = paths.target.join("bench").join("http2");
    let files = tls::certificate(&dir)?;
    let serve = SERVERS
        .iter()
        .find(|s| s.name == "duplex-serve")
        .expect("duplex serve is a server");
    let mut samples = vec![vec![Vec::<Sample>::new(); VERSIONS.len()]; WORKLOADS.len()];
    for rep in 0..reps {
        for (wi, &(label, c, p, size)) in WORKLOADS.iter().enumerate() {
            for vi in alternating(VERSIONS.len(), rep) {
                let (version, extra) = VERSIONS[vi];
                let log = dir.join("serve.log");
                let running = start_with(paths, bins, serve, &log, Some(&files), &[])?;
                let url = format!("wss://localhost:{}/echo", running.addr.port());
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", "1"])
                    .arg(&bins.duplex)
                    .args(["bench", "echo", &url, "--json", "--cacert"])
                    .arg(&files.cert)
                    .args(["-c", &c.to_string(), "-p", &p.to_string(), "-s", size])
                    .args(["-d", &format!("{seconds}s")])
                    .args(["--server-pid", &running.child.id().to_string()])
                    .args(extra);
                let v = bench_report(
                    &mut cmd,
                    Duration::from_secs(600),
                    &format!("echo over {version}"),
                )?;
                drop(running);
                let row = &v["rows"][0];
                let sample = Sample {
                    rate: row["ops_per_sec"].as_f64().unwrap_or(0.0),
                    cpu_us: row["extra"]["server_cpu_us_per_msg"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    busy: row["extra"]["server_cpu_pct"].as_f64().unwrap_or(f64::NAN),
                };
                println!(
                    "    rep {} {label:<44} {version:<15} {:>10.0}/s, server {:.2} µs/msg, {:.0}% busy",
                    rep + 1,
                    sample.rate,
                    sample.cpu_us,
                    sample.busy
                );
                samples[wi][vi].push(sample);
            }
        }
    }
    let mut t = format!(
        "## WebSockets over HTTP/2 (RFC 8441)\n\n\
         `duplex serve` /echo behind rustls on CPU 0; `duplex bench echo wss://localhost:PORT/echo --cacert CERT` on CPU 1, \
         its sockets each on a connection of their own (HTTP/1.1) or as streams of shared connections, up to 128 each \
         (HTTP/2, `--http2`). Medians of {reps} repetition(s) of {seconds} s: messages/s, the server's CPU time per \
         echoed message and how busy it was (100% = one core: the server saturated).\n\n\
         | workload | {} | {} | HTTP/2's CPU per message |\n|---|---|---|---|\n",
        VERSIONS[0].0, VERSIONS[1].0
    );
    for (wi, (label, ..)) in WORKLOADS.iter().enumerate() {
        let _ = write!(t, "| {label} |");
        let mut cpu = [f64::NAN; 2];
        for (vi, cell) in samples[wi].iter().enumerate() {
            let pick = |f: fn(&Sample) -> f64| median(cell.iter().map(f).collect());
            cpu[vi] = pick(|s| s.cpu_us);
            let _ = write!(
                t,
                " {}, {:.2} µs ({:.0}% busy) |",
                human(pick(|s| s.rate)),
                cpu[vi],
                pick(|s| s.busy)
            );
        }
        let _ = writeln!(t, " {:+.0}% |", 100.0 * (cpu[1] / cpu[0] - 1.0));
    }
    Ok(t)
}
