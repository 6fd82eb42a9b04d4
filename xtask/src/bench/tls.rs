//! The TLS section of `cargo xtask bench`: the echo workloads over `wss://`
//! (rustls on every server), with a TLS TCP echo as the ceiling. The
//! certificate is generated for the run (rcgen, self-signed for `localhost`)
//! and trusted by the load generator through `--cacert`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{
    Bins, SERVERS, Sample, alternating, bench_report, cpu_cell, human, median, start_with,
};
use crate::Paths;

/// A certificate and its key, PEM files.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// (label, connections, in flight, size) of each row.
const WORKLOADS: [(&str, u32, u32, &str); 3] = [
    ("100 connections, 1 in flight, 16 B", 100, 1, "16"),
    (
        "100 connections, 16 in flight, 16 B (pipelined)",
        100,
        16,
        "16",
    ),
    ("10 connections, 1 in flight, 1 MiB binary", 10, 1, "1m"),
];

/// A certificate for `localhost`, generated for the run, in `dir`.
pub fn certificate(dir: &std::path::Path) -> Result<Files> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .context("cannot generate a certificate")?;
    std::fs::create_dir_all(dir)?;
    let files = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem())?;
    std::fs::write(&files.key, cert.signing_key.serialize_pem())?;
    Ok(files)
}

/// Runs `reps` repetitions of `seconds` per workload and server; returns
/// the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    let dir = paths.target.join("bench").join("tls");
    let files = certificate(&dir)?;
    // samples[workload][server] = one per repetition.
    let mut samples = vec![vec![Vec::<Sample>::new(); SERVERS.len()]; WORKLOADS.len()];
    for rep in 0..reps {
        for (wi, &(label, c, p, size)) in WORKLOADS.iter().enumerate() {
            for si in alternating(SERVERS.len(), rep) {
                let server = &SERVERS[si];
                let log = dir.join(format!("{}.log", server.name));
                let running = start_with(paths, bins, server, &log, Some(&files), &[])?;
                let path = if server.name == "duplex-serve" {
                    "/echo"
                } else {
                    "/"
                };
                let url = format!("wss://localhost:{}{path}", running.addr.port());
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", "1"])
                    .arg(&bins.duplex)
                    .args(["bench", "echo", &url, "--json", "--cacert"])
                    .arg(&files.cert)
                    .args(["-c", &c.to_string(), "-p", &p.to_string(), "-s", size])
                    .args(["-d", &format!("{seconds}s")])
                    .args(["--server-pid", &running.child.id().to_string()]);
                if server.name == "tcp" {
                    cmd.arg("--mirror");
                }
                let v = bench_report(
                    &mut cmd,
                    Duration::from_secs(600),
                    &format!("TLS echo on {}", server.name),
                )?;
                drop(running);
                let sample = Sample::from_report(&v);
                println!(
                    "    rep {} {label:<48} {:<26} {:>10.0}/s, server {:.2} µs/msg (TLS)",
                    rep + 1,
                    server.label,
                    sample.rate,
                    sample.cpu_us_per_msg
                );
                samples[wi][si].push(sample);
            }
        }
    }
    Ok(markdown(reps, seconds, &samples))
}

/// The section: throughput, then the server's CPU per message, each as a
/// share of the TLS TCP echo's (`samples[workload][server]`, servers in the
/// order of [`SERVERS`]).
fn markdown(reps: usize, seconds: u64, samples: &[Vec<Vec<Sample>>]) -> String {
    let head = |what: &str| {
        let mut t = format!("| {what} |");
        for s in &SERVERS {
            let _ = write!(t, " {} |", s.label.replace("TCP echo", "TLS TCP echo"));
        }
        t.push_str("\n|---|");
        t.push_str(&"---|".repeat(SERVERS.len()));
        t.push('\n');
        t
    };
    let tcp = SERVERS
        .iter()
        .position(|s| s.name == "tcp")
        .expect("a TCP echo");
    let med = |cell: &[Sample], f: fn(&Sample) -> f64| median(cell.iter().map(f).collect());
    let mut rates = head("workload");
    let mut cpu = head("server CPU per message");
    for (wi, (label, ..)) in WORKLOADS.iter().enumerate() {
        let _ = write!(rates, "| {label} |");
        let _ = write!(cpu, "| {label} |");
        let base = med(&samples[wi][tcp], |s| s.rate);
        let base_cpu = med(&samples[wi][tcp], |s| s.cpu_us_per_msg);
        for cell in &samples[wi] {
            let rate = med(cell, |s| s.rate);
            let _ = write!(rates, " {:.0}% ({}) |", 100.0 * rate / base, human(rate));
            let us = med(cell, |s| s.cpu_us_per_msg);
            let share = Some(100.0 * us / base_cpu);
            let (user, busy) = (med(cell, |s| s.user_us_per_msg), med(cell, |s| s.busy_pct));
            let _ = write!(cpu, " {} |", cpu_cell(us, user, busy, share));
        }
        rates.push('\n');
        cpu.push('\n');
    }
    format!(
        "## TLS echo (wss://)\n\n\
         The same echo servers behind rustls (TLS 1.3, a certificate generated for the run), the plain TCP echo \
         behind the same rustls as the ceiling; `duplex bench echo wss://localhost:PORT/ --cacert CERT` on CPU 1. \
         Share of the TLS TCP echo and messages/s, medians of {reps} repetition(s) of {seconds} s.\n\n{rates}\n\
         The server's CPU time per message (TLS included), as a share of the TLS TCP echo's (lower is better; \
         medians):\n\n{cpu}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64, cpu: f64) -> Sample {
        Sample {
            rate,
            cpu_us_per_msg: cpu,
            user_us_per_msg: cpu / 4.0,
            busy_pct: 99.0,
            ..Sample::default()
        }
    }

    /// Both tables are shares of the TLS TCP echo, in the order of the
    /// servers, from the medians of the repetitions.
    #[test]
    fn both_tables_are_shares_of_the_tls_tcp_echo() {
        let samples: Vec<Vec<Vec<Sample>>> = (0..WORKLOADS.len())
            .map(|_| {
                (0..SERVERS.len())
                    .map(|si| {
                        let k = 1.0 + si as f64;
                        vec![
                            sample(1000.0 / k, 4.0 * k),
                            sample(900.0 / k, 2.0 * k),
                            sample(1100.0 / k, 6.0 * k),
                        ]
                    })
                    .collect()
            })
            .collect();
        let t = markdown(3, 5, &samples);
        let tcp = SERVERS.iter().position(|s| s.name == "tcp").unwrap();
        assert_eq!(tcp, 0, "the TCP echo is the first column");
        let first = format!("| {} | 100% (1.0k/s) | 50% (500/s) |", WORKLOADS[0].0);
        assert!(t.contains(&first), "{t}");
        let cpu = format!(
            "| {} | 100% (4.00 µs, user 1.000; 99% busy) | 200% (8.00 µs, user 2.000; 99% busy) |",
            WORKLOADS[0].0
        );
        assert!(t.contains(&cpu), "{t}");
        assert!(
            t.contains("| server CPU per message | TLS TCP echo |"),
            "{t}"
        );
    }
}
