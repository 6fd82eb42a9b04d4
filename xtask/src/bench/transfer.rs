//! The file-transfer section of `cargo xtask bench`: one large transfer
//! through the `/files` relay of `duplex serve` (pinned to CPU 0), as a share
//! of a raw TCP copy of the same bytes on the same machine.
//!
//! Four figures per repetition: `duplex bench transfer` (pinned to CPU 1)
//! gives the raw TCP copy, the relay with plain chunks and the relay with
//! chunks hashed and sealed end to end (all memory to memory); then the real
//! `duplex send` → `duplex receive` of a generated file, disk to disk, its
//! output compared byte for byte with the input.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Bins, SERVERS, bench_report, median, start};
use crate::Paths;
use crate::process::wait_or_kill;

/// Bytes moved by each run.
pub const SIZE: u64 = 1 << 30;

/// What one repetition measured, in MB/s.
#[derive(Default, Clone)]
struct Sample {
    tcp: f64,
    plain: f64,
    sealed: f64,
    cli: f64,
}

/// Runs `reps` repetitions of `size` bytes; returns the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, size: u64) -> Result<String> {
    let dir = paths.target.join("bench").join("transfer");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("source.bin");
    generate(&source, size)?;
    let serve = SERVERS
        .iter()
        .find(|s| s.name == "duplex-serve")
        .expect("duplex serve is a bench server");
    let mut samples = Vec::new();
    let mut command = String::new();
    for rep in 0..reps {
        let running = start(paths, bins, serve, &dir.join("serve.log"))?;
        let url = format!("ws://{}/files", running.addr);
        let mut bench = Command::new("taskset");
        bench
            .args(["-c", "1"])
            .arg(&bins.duplex)
            .args(["bench", "transfer", &url, "--json", "--size"])
            .arg(size.to_string());
        command = format!(
            "taskset -c 1 duplex bench transfer ws://127.0.0.1:PORT/files --json --size {size}"
        );
        let v = bench_report(
            &mut bench,
            Duration::from_secs(600),
            "duplex bench transfer",
        )?;
        let rate = |i: usize| v["rows"][i]["mb_per_sec"].as_f64().unwrap_or(0.0);
        let cli = cli_transfer(bins, &url, &source, &dir.join(format!("out-{rep}")))?;
        let sample = Sample {
            tcp: rate(0),
            plain: rate(1),
            sealed: rate(2),
            cli: size as f64 / 1e6 / cli.as_secs_f64(),
        };
        println!(
            "    rep {} transfer of {} MiB: TCP {:.0} MB/s, relay plain {:.0}, relay sealed {:.0}, duplex send/receive {:.0}",
            rep + 1,
            size >> 20,
            sample.tcp,
            sample.plain,
            sample.sealed,
            sample.cli
        );
        samples.push(sample);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let med = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let tcp = med(|s| s.tcp);
    let mut t = format!(
        "## File transfer: {} MiB through the `/files` relay\n\n\
         The relay (`duplex serve`) on CPU 0; senders and receivers on CPU 1. Medians of {reps} repetition(s), \
         as MB/s and as a share of a raw TCP copy of the same bytes over loopback. The first three rows move memory \
         to memory (`{command}`); the last is the real `duplex send FILE` → `duplex receive CODE`, \
         from a file to a file (`.part`, BLAKE3 per chunk and per file, rename), checked byte for byte.\n\n\
         | path | MB/s | share of the TCP copy |\n|---|---|---|\n",
        size >> 20
    );
    for (label, value) in [
        ("raw TCP copy, one loopback connection", tcp),
        (
            "relay, plain chunks (WebSocket framing, credit flow control)",
            med(|s| s.plain),
        ),
        (
            "relay, end to end encrypted (SPAKE2; BLAKE3 + ChaCha20-Poly1305 per 1 MiB chunk)",
            med(|s| s.sealed),
        ),
        (
            "`duplex send` → `duplex receive`, file to file, encrypted",
            med(|s| s.cli),
        ),
    ] {
        let _ = writeln!(t, "| {label} | {value:.0} | {:.0}% |", 100.0 * value / tcp);
    }
    Ok(t)
}

/// Writes `size` pseudo-random (incompressible) bytes to `path`.
fn generate(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// `duplex send` then `duplex receive` of `source` into `out`; returns the
/// time from starting the receiver to the receiver's exit, after checking
/// the received file byte for byte.
fn cli_transfer(bins: &Bins, url: &str, source: &Path, out: &Path) -> Result<Duration> {
    let mut sender = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&bins.duplex)
        .args(["send", "--json", "--server", url])
        .arg(source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start duplex send")?;
    let stdout = sender.stdout.take().expect("piped");
    // The code is the first line; read it on a thread so a silent sender
    // cannot hang the run.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        _ => {
            let _ = sender.kill();
            bail!("duplex send printed no code within 30 s");
        }
    };
    let code: Value = serde_json::from_str(&line).context("duplex send --json: not JSON")?;
    let code = code["code"].as_str().context("no code")?.to_owned();
    let started = Instant::now();
    let mut receiver = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&bins.duplex)
        .args(["receive", &code, "--json", "--server", url, "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start duplex receive")?;
    let status = wait_or_kill(&mut receiver, Duration::from_secs(600), "duplex receive")?;
    let took = started.elapsed();
    let sent = wait_or_kill(&mut sender, Duration::from_secs(60), "duplex send")?;
    if !status.success() || !sent.success() {
        let mut err = String::new();
        if let Some(mut e) = receiver.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("duplex send/receive failed (receive: {status}, send: {sent}): {err}");
    }
    let name = source.file_name().expect("a file name");
    if !same_bytes(source, &out.join(name))? {
        bail!("the received file differs from the one sent");
    }
    std::fs::remove_dir_all(out)?;
    Ok(took)
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}
