//! The file-transfer section of `cargo xtask bench`: one large transfer
//! through the `/files` relay of `duplex serve`, beside a raw TCP copy and
//! `scp` of the same bytes on the same machine, in one run.
//!
//! Per repetition: `duplex bench transfer` (relay pinned to CPU 0, client to
//! CPU 1) gives the raw TCP copy, the relay with plain chunks and the relay
//! with chunks sealed end to end (all memory to memory); then, file to file
//! (in `/dev/shm` when it has room) and unpinned, as a user runs them:
//! `scp` with AES-128-GCM and with its default cipher through a loopback
//! `sshd`, and the real `duplex send` → `duplex receive`, each output
//! compared byte for byte with the input. Once per run, the browser pages
//! both ways (`tests/browser/transfer.spec.mjs`'s large-file test, 256 MiB,
//! against the release binary in headless Chromium).

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

/// What one repetition measured, in MB/s, and the relay's CPU time per
/// MiB it relayed in the memory-to-memory runs, µs.
#[derive(Default, Clone)]
struct Sample {
    tcp: f64,
    plain: f64,
    sealed: f64,
    scp_aes: f64,
    scp_default: f64,
    cli: f64,
    plain_cpu: f64,
    sealed_cpu: f64,
}

/// Bytes each way in the browser rows.
const BROWSER_MIB: u64 = 256;

/// Runs `reps` repetitions of `size` bytes; returns the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, size: u64) -> Result<String> {
    let dir = paths.target.join("bench").join("transfer");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    crate::tools::ensure_apt(super::scp::PACKAGES)?;
    let sshd = super::scp::Sshd::start(&dir.join("sshd"))?;
    // Files where a disk cannot slow them down, as in the method.
    let files = file_dir(&dir, size);
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files)?;
    let source = files.join("source.bin");
    generate(&source, size)?;
    let run = Repetitions {
        paths,
        bins,
        sshd: &sshd,
        dir: &dir,
        files: &files,
        source: &source,
        size,
    };
    let mut samples = Vec::new();
    for rep in 0..reps {
        let sample = run.repetition(rep)?;
        print_sample(rep, size, &sample);
        samples.push(sample);
    }
    let _ = std::fs::remove_dir_all(&files);
    drop(sshd);
    let browser = browser_rates(paths, bins, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    let setting = Setting {
        size,
        reps,
        command: bench_command(size),
        files_place: files_place(&files),
    };
    Ok(markdown(&setting, &Sample::medians(&samples), browser))
}

/// What every repetition shares: the binaries, the `sshd`, the files.
struct Repetitions<'a> {
    paths: &'a Paths,
    bins: &'a Bins,
    sshd: &'a super::scp::Sshd,
    /// The section's working directory (the relay's log).
    dir: &'a Path,
    /// Where the file-to-file rows read and write.
    files: &'a Path,
    source: &'a Path,
    size: u64,
}

impl Repetitions<'_> {
    /// One repetition against a fresh relay: memory to memory, then the CLI,
    /// then `scp` both ways of ciphering.
    fn repetition(&self, rep: usize) -> Result<Sample> {
        let serve = SERVERS
            .iter()
            .find(|s| s.name == "duplex-serve")
            .expect("duplex serve is a bench server");
        let running = start(self.paths, self.bins, serve, &self.dir.join("serve.log"))?;
        let url = format!("ws://{}/files", running.addr);
        let relay = self.relay_rates(&url, running.child.id())?;
        let out = self.files.join(format!("out-{rep}"));
        let cli = cli_transfer(self.bins, &url, self.source, &out)?;
        Ok(Sample {
            scp_aes: self.scp(Some("aes128-gcm@openssh.com"))?,
            scp_default: self.scp(None)?,
            cli: mb_per_sec(self.size, cli),
            ..relay
        })
    }

    /// `duplex bench transfer`'s rows (raw TCP, relay plain, relay
    /// sealed), and the CPU time the relay `pid` spent on the last two.
    fn relay_rates(&self, url: &str, pid: u32) -> Result<Sample> {
        let mut bench = Command::new("taskset");
        bench
            .args(["-c", "1"])
            .arg(&self.bins.duplex)
            .args(["bench", "transfer", url, "--json", "--size"])
            .arg(self.size.to_string())
            .args(["--server-pid", &pid.to_string()]);
        let v = bench_report(
            &mut bench,
            Duration::from_secs(600),
            "duplex bench transfer",
        )?;
        let rate = |i: usize| v["rows"][i]["mb_per_sec"].as_f64().unwrap_or(0.0);
        let cpu = |i: usize| {
            v["rows"][i]["extra"]["server_cpu_us_per_mib"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        Ok(Sample {
            tcp: rate(0),
            plain: rate(1),
            sealed: rate(2),
            plain_cpu: cpu(1),
            sealed_cpu: cpu(2),
            ..Sample::default()
        })
    }

    /// `scp` of the source through the loopback `sshd`, checked byte for
    /// byte; MB/s.
    fn scp(&self, cipher: Option<&str>) -> Result<f64> {
        let dest = self.files.join("scp.bin");
        let took = self.sshd.copy(cipher, self.source, &dest)?;
        if !same_bytes(self.source, &dest)? {
            bail!("scp's copy differs from the source");
        }
        std::fs::remove_file(&dest)?;
        Ok(mb_per_sec(self.size, took))
    }
}

fn mb_per_sec(size: u64, took: Duration) -> f64 {
    size as f64 / 1e6 / took.as_secs_f64()
}

fn print_sample(rep: usize, size: u64, sample: &Sample) {
    println!(
        "    rep {} transfer of {} MiB: TCP {:.0} MB/s, relay plain {:.0} ({:.0} µs CPU/MiB), relay sealed {:.0} ({:.0} µs CPU/MiB), scp aes128-gcm {:.0}, scp default {:.0}, duplex send/receive {:.0}",
        rep + 1,
        size >> 20,
        sample.tcp,
        sample.plain,
        sample.plain_cpu,
        sample.sealed,
        sample.sealed_cpu,
        sample.scp_aes,
        sample.scp_default,
        sample.cli
    );
}

impl Sample {
    /// Each figure's median over the repetitions.
    fn medians(samples: &[Sample]) -> Sample {
        let med = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Sample {
            tcp: med(|s| s.tcp),
            plain: med(|s| s.plain),
            sealed: med(|s| s.sealed),
            scp_aes: med(|s| s.scp_aes),
            scp_default: med(|s| s.scp_default),
            cli: med(|s| s.cli),
            plain_cpu: med(|s| s.plain_cpu),
            sealed_cpu: med(|s| s.sealed_cpu),
        }
    }
}

/// The memory-to-memory command as the section shows it.
fn bench_command(size: u64) -> String {
    format!("taskset -c 1 duplex bench transfer ws://127.0.0.1:PORT/files --json --size {size}")
}

/// How the section names where the file-to-file rows' files were.
fn files_place(files: &Path) -> &'static str {
    if files.starts_with("/dev/shm") {
        "tmpfs (`/dev/shm`)"
    } else {
        "the target directory"
    }
}

/// How a run was made, as the section's text describes it.
struct Setting {
    size: u64,
    reps: usize,
    command: String,
    files_place: &'static str,
}

/// The section: its text, the table of medians (`med`, and the browser
/// rows' rates) and the comparison with `scp`.
fn markdown(setting: &Setting, med: &Sample, browser: (f64, f64)) -> String {
    let mut t = intro(setting);
    for (label, value, cpu) in rows(med, browser) {
        let cpu = match cpu {
            Some(us) if us.is_finite() => format!("{us:.0} µs"),
            Some(_) => "n/a".to_owned(),
            None => String::new(),
        };
        let _ = writeln!(
            t,
            "| {label} | {value:.0} | {:.0}% | {cpu} |",
            100.0 * value / med.tcp
        );
    }
    let _ = writeln!(
        t,
        "\n`duplex send` → `duplex receive` is {:.2} × `scp` with AES-128-GCM in this run.",
        med.cli / med.scp_aes
    );
    t
}

/// The heading, the method and the table's head.
fn intro(setting: &Setting) -> String {
    let Setting {
        size,
        reps,
        command,
        files_place,
    } = setting;
    format!(
        "## File transfer: {} MiB through the `/files` relay\n\n\
         Medians of {reps} repetition(s), as MB/s and as a share of a raw TCP copy of the same bytes over loopback, \
         all in one run. The first three rows move memory to memory (`{command}`; the relay on CPU 0, the client \
         on CPU 1). The file-to-file rows run the clients unpinned, as a user runs them (the relay stays on CPU 0), from and to {files_place}: `scp` through a \
         loopback `sshd` (Debian's OpenSSH, throwaway keys) and the real `duplex send FILE` → `duplex receive CODE` \
         (`.part`, AES-256-GCM per 1 MiB chunk, the file's seal, rename), each checked byte for byte. The browser \
         rows are {BROWSER_MIB} MiB each way between headless Chromium (the `/send` and `/receive` pages, driven over \
         the DevTools protocol without network tracking: `tests/browser/transfer-speed.mjs`) and the CLI, through \
         the same release binary, once per run, checked byte for byte. The relay's CPU time per MiB it relayed \
         (all of `duplex serve`'s threads, from `/proc`) is measured in the memory-to-memory rows.\n\n\
         | path | MB/s | share of the TCP copy | relay CPU per MiB |\n|---|---|---|---|\n",
        size >> 20,
    )
}

/// The table's rows: (label, MB/s, the relay's µs of CPU per MiB).
fn rows(med: &Sample, browser: (f64, f64)) -> [(&'static str, f64, Option<f64>); 8] {
    [
        ("raw TCP copy, one loopback connection", med.tcp, None),
        (
            "relay, plain chunks (WebSocket framing, credit flow control)",
            med.plain,
            Some(med.plain_cpu),
        ),
        (
            "relay, end to end encrypted (SPAKE2; AES-256-GCM per 1 MiB chunk)",
            med.sealed,
            Some(med.sealed_cpu),
        ),
        (
            "`scp -c aes128-gcm@openssh.com`, file to file",
            med.scp_aes,
            None,
        ),
        (
            "`scp`, its default cipher, file to file",
            med.scp_default,
            None,
        ),
        (
            "`duplex send` → `duplex receive`, file to file, encrypted",
            med.cli,
            None,
        ),
        (
            "`duplex send` → the `/receive` page (Chromium)",
            browser.0,
            None,
        ),
        (
            "the `/send` page (Chromium) → `duplex receive`",
            browser.1,
            None,
        ),
    ]
}

/// `/dev/shm/duplex-bench-transfer` when tmpfs has room for the source
/// and two copies, else a folder under `dir`.
fn file_dir(dir: &Path, size: u64) -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    let room = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(shm)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    if room > size * 4 {
        shm.join("duplex-bench-transfer")
    } else {
        dir.join("files")
    }
}

/// The browser pages' rates (CLI → page, page → CLI) from
/// `tests/browser/transfer-speed.mjs` against the release binary: headless
/// Chromium without DevTools' network tracking, which Playwright turns on
/// and which copies every WebSocket message to the driver.
fn browser_rates(paths: &Paths, bins: &Bins, dir: &Path) -> Result<(f64, f64)> {
    crate::tools::prepare(paths)?;
    let out = dir.join("browser-speed.json");
    let mut node = paths.command("node");
    node.arg(
        paths
            .root
            .join("tests")
            .join("browser")
            .join("transfer-speed.mjs"),
    )
    .env("NODE_PATH", paths.node_modules())
    .env("DUPLEX_SERVER_BIN", &bins.duplex)
    .env("DUPLEX_CHROMIUM", crate::browser::CHROMIUM)
    .env("DUPLEX_BROWSER_BIG_MIB", BROWSER_MIB.to_string())
    .env("DUPLEX_BROWSER_SPEED_OUT", &out);
    crate::process::run(&mut node, Duration::from_secs(900))?;
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).with_context(|| {
            format!("the browser speed run wrote no rates to {}", out.display())
        })?)?;
    let rate = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok((rate("cli_to_browser"), rate("browser_to_cli")))
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
    let mut sender = Command::new(&bins.duplex)
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
    let mut receiver = Command::new(&bins.duplex)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample([tcp, plain, sealed, scp_aes, scp_default, cli]: [f64; 6]) -> Sample {
        Sample {
            tcp,
            plain,
            sealed,
            scp_aes,
            scp_default,
            cli,
            plain_cpu: plain / 2.0,
            sealed_cpu: sealed / 2.0,
        }
    }

    fn three_reps() -> Vec<Sample> {
        vec![
            sample([3000.0, 1500.5, 1200.25, 800.0, 700.0, 1000.0]),
            sample([3200.0, 1400.0, 1100.0, 820.0, 650.0, 1050.0]),
            sample([3100.0, 1450.0, 1150.0, 790.0, 690.0, 990.0]),
        ]
    }

    #[test]
    fn the_table_shows_medians_as_mb_per_sec_and_shares_of_the_tcp_copy() {
        let size = 1 << 30;
        let setting = Setting {
            size,
            reps: 3,
            command: bench_command(size),
            files_place: files_place(Path::new("/dev/shm/duplex-bench-transfer")),
        };
        let t = markdown(&setting, &Sample::medians(&three_reps()), (400.4, 350.6));
        assert!(
            t.starts_with(
                "## File transfer: 1024 MiB through the `/files` relay\n\nMedians of 3 repetition(s), "
            ),
            "{t}"
        );
        assert!(
            t.contains("(`taskset -c 1 duplex bench transfer ws://127.0.0.1:PORT/files --json --size 1073741824`; "),
            "{t}"
        );
        assert!(t.contains(" from and to tmpfs (`/dev/shm`): "), "{t}");
        let table = &t[t.find("| path |").expect("a table")..];
        assert_eq!(
            table,
            concat!(
                "| path | MB/s | share of the TCP copy | relay CPU per MiB |\n",
                "|---|---|---|---|\n",
                "| raw TCP copy, one loopback connection | 3100 | 100% |  |\n",
                "| relay, plain chunks (WebSocket framing, credit flow control) | 1450 | 47% | 725 µs |\n",
                "| relay, end to end encrypted (SPAKE2; AES-256-GCM per 1 MiB chunk) | 1150 | 37% | 575 µs |\n",
                "| `scp -c aes128-gcm@openssh.com`, file to file | 800 | 26% |  |\n",
                "| `scp`, its default cipher, file to file | 690 | 22% |  |\n",
                "| `duplex send` → `duplex receive`, file to file, encrypted | 1000 | 32% |  |\n",
                "| `duplex send` → the `/receive` page (Chromium) | 400 | 13% |  |\n",
                "| the `/send` page (Chromium) → `duplex receive` | 351 | 11% |  |\n",
                "\n",
                "`duplex send` → `duplex receive` is 1.25 × `scp` with AES-128-GCM in this run.\n",
            )
        );
    }

    #[test]
    fn files_outside_tmpfs_are_in_the_target_directory() {
        let place = files_place(Path::new("/work/target/bench/transfer/files"));
        assert_eq!(place, "the target directory");
    }
}
