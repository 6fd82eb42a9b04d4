//! The TLS section of `cargo xtask bench`: the echo workloads over `wss://`
//! (rustls on every server), with a TLS TCP echo as the ceiling. The
//! certificate is generated for the run (rcgen, self-signed for `localhost`)
//! and trusted by the load generator through `--cacert`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Bins, SERVERS, alternating, bench_report, human, median, start_with};
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
    // rates[workload][server] = messages/s per repetition.
    let mut rates = vec![vec![Vec::<f64>::new(); SERVERS.len()]; WORKLOADS.len()];
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
                    .args(["-d", &format!("{seconds}s")]);
                if server.name == "tcp" {
                    cmd.arg("--mirror");
                }
                let v = bench_report(
                    &mut cmd,
                    Duration::from_secs(600),
                    &format!("TLS echo on {}", server.name),
                )?;
                drop(running);
                let rate = v["rows"][0]["ops_per_sec"].as_f64().unwrap_or(0.0);
                println!(
                    "    rep {} {label:<48} {:<26} {rate:>10.0}/s (TLS)",
                    rep + 1,
                    server.label
                );
                rates[wi][si].push(rate);
            }
        }
    }
    let mut t = format!(
        "## TLS echo (wss://)\n\n\
         The same echo servers behind rustls (TLS 1.3, a certificate generated for the run), the plain TCP echo \
         behind the same rustls as the ceiling; `duplex bench echo wss://localhost:PORT/ --cacert CERT` on CPU 1. \
         Share of the TLS TCP echo and messages/s, medians of {reps} repetition(s) of {seconds} s.\n\n| workload |"
    );
    for s in &SERVERS {
        let _ = write!(t, " {} |", s.label.replace("TCP echo", "TLS TCP echo"));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(SERVERS.len()));
    t.push('\n');
    let tcp = SERVERS
        .iter()
        .position(|s| s.name == "tcp")
        .expect("a TCP echo");
    for (wi, (label, ..)) in WORKLOADS.iter().enumerate() {
        let _ = write!(t, "| {label} |");
        let base = median(rates[wi][tcp].clone());
        for cell in &rates[wi] {
            let rate = median(cell.clone());
            let _ = write!(t, " {:.0}% ({}) |", 100.0 * rate / base, human(rate));
        }
        t.push('\n');
    }
    Ok(t)
}
