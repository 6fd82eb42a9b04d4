//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` for a bounded
//! time each, and fails if one finds a crash.
//!
//! ```text
//! cargo xtask fuzz [--seconds N] [TARGET...]
//! ```
//!
//! [`run`] takes the arguments that follow `fuzz`:
//! - `--seconds N` (or `--seconds=N`): how long each target fuzzes; default 60.
//! - `TARGET...`: the targets to run, e.g. `frame_decoder handshake inflate`;
//!   default: all of them, as `cargo fuzz list` reports them.
//! - `--help` / `-h`: print the usage.
//!
//! What it does:
//! 1. Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if `cargo
//!    fuzz` is missing.
//! 2. Builds every target once with `cargo fuzz build -a` (release, address
//!    sanitizer, debug assertions and overflow checks). cargo-fuzz passes `-Z`
//!    flags to rustc, which only nightly accepts; `RUSTC_BOOTSTRAP=1` makes the
//!    stable toolchain accept them, so no nightly is needed.
//! 3. Runs each fuzzer binary directly (not through `cargo fuzz run`), so its
//!    time budget goes to fuzzing rather than to cargo, and so that xtask owns
//!    the process it may have to stop. The corpus grows in
//!    `fuzz/corpus/TARGET` (gitignored) from the committed seeds in
//!    `fuzz/seeds/TARGET`, with the dictionary `fuzz/dicts/TARGET.dict`.
//! 4. Prints one summary line per target (executions, time, rate, coverage,
//!    corpus size). The whole libFuzzer log is kept in
//!    `fuzz/target/logs/TARGET.log`.
//! 5. If a target crashed (a panic, a sanitizer report, a hang longer than
//!    10 s on one input, or running out of memory), libFuzzer saved the input
//!    in `fuzz/artifacts/TARGET/`; after all targets have run, the command
//!    fails with the artifact's path and how to reproduce it.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask fuzz [--seconds N] [TARGET...]

Runs each cargo-fuzz target in fuzz/ for N seconds (default 60); all targets
unless some are named. Fails, naming the saved input, if one crashes.";

/// Seconds each target fuzzes unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;
/// One input running longer than this is a hang, reported like a crash.
const UNIT_TIMEOUT_SECS: u64 = 10;
/// Time beyond `-max_total_time` for loading the corpus and exiting, after
/// which a fuzzer that has not stopped by itself is stopped.
const GRACE: Duration = Duration::from_secs(120);
/// How often the output is polled while a fuzzer runs.
const POLL: Duration = Duration::from_millis(200);

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    seconds: u64,
    targets: Vec<String>,
    help: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        targets: Vec::new(),
        help: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let seconds = match arg.as_str() {
            "-h" | "--help" => {
                options.help = true;
                continue;
            }
            "--seconds" => args.next().context("--seconds needs a value")?,
            other => match other.strip_prefix("--seconds=") {
                Some(value) => value,
                None if other.starts_with('-') => bail!("unknown option `{other}`\n{USAGE}"),
                None => {
                    options.targets.push(other.to_owned());
                    continue;
                }
            },
        };
        options.seconds =
            seconds.parse().ok().filter(|&s| s > 0).with_context(|| {
                format!("--seconds wants a positive whole number, not `{seconds}`")
            })?;
    }
    Ok(options)
}

/// Runs `cargo xtask fuzz` with the arguments after `fuzz` (see the module
/// documentation).
pub fn run(args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
    if options.help {
        println!("{USAGE}");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        bail!("no fuzz/Cargo.toml under {}", root.display());
    }

    ensure_cargo_fuzz(root)?;
    let available = list_targets(root, &fuzz_dir)?;
    let targets = if options.targets.is_empty() {
        available
    } else {
        for target in &options.targets {
            if !available.contains(target) {
                bail!(
                    "unknown fuzz target `{target}`; the targets are: {}",
                    available.join(", ")
                );
            }
        }
        options.targets
    };
    build(root, &fuzz_dir)?;

    let binaries = fuzz_dir.join("target").join(host_triple()?).join("release");
    let mut crashes = Vec::new();
    for target in &targets {
        let outcome = fuzz_target(&fuzz_dir, &binaries, target, options.seconds)?;
        println!("{}", outcome.summary(target));
        if let Some(failure) = outcome.failure(root, target) {
            crashes.push(failure);
        }
    }
    if !crashes.is_empty() {
        bail!("{}", crashes.join("\n\n"));
    }
    println!("fuzz: {} target(s), no crash", targets.len());
    Ok(())
}

/// The cargo that runs xtask, so that the same toolchain builds the fuzzers.
fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(root);
    cmd
}

fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let installed = |root: &Path| {
        cargo(root)
            .args(["fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if installed(root) {
        return Ok(());
    }
    println!("fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)");
    let status = cargo(root)
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install")?;
    if !status.success() || !installed(root) {
        bail!("could not install cargo-fuzz ({status})");
    }
    Ok(())
}

fn list_targets(root: &Path, fuzz_dir: &Path) -> Result<Vec<String>> {
    let out = cargo(root)
        .args(["fuzz", "list", "--fuzz-dir"])
        .arg(fuzz_dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({})", out.status);
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("cargo fuzz list found no targets in fuzz/");
    }
    Ok(targets)
}

fn build(root: &Path, fuzz_dir: &Path) -> Result<()> {
    println!("fuzz: building the fuzz targets (cargo fuzz build -a)");
    let status = cargo(root)
        // An explicit fuzz dir: cargo-fuzz would otherwise locate it through
        // the main workspace, and fail whenever that manifest does.
        .args(["fuzz", "build", "-a", "--fuzz-dir"])
        .arg(fuzz_dir)
        // cargo-fuzz passes -Z flags (sanitizers); stable rustc takes them
        // only with this.
        .env("RUSTC_BOOTSTRAP", "1")
        // The binaries must land in fuzz/target, where they are run from.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

/// The host target triple, the one cargo-fuzz builds for by default.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("rustc -vV did not print the host triple")
}

/// What one fuzzing run reported.
#[derive(Debug, Default)]
struct Outcome {
    execs: Option<u64>,
    rate: Option<u64>,
    seconds: Option<u64>,
    coverage: Option<u64>,
    corpus: Option<u64>,
    /// Inputs libFuzzer saved because they crashed, hung or ran out of memory.
    artifacts: Vec<PathBuf>,
    /// The libFuzzer error line (`==123== ERROR: libFuzzer: deadly signal`).
    error: Option<String>,
    /// The Rust panic location and message, if a panic caused the crash.
    panic: Vec<String>,
    status: Option<ExitStatus>,
    stopped: bool,
    elapsed: Duration,
    log: PathBuf,
}

impl Outcome {
    /// Takes what matters from one line of libFuzzer's output.
    fn observe(&mut self, line: &str) {
        let number = |s: &str| s.split_whitespace().next().and_then(|n| n.parse().ok());
        if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            self.execs = number(rest);
        } else if let Some(rest) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.rate = number(rest);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 389600 runs in 61 second(s)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", secs, ..] = words[..] {
                self.execs = self.execs.or(runs.parse().ok());
                self.seconds = secs.parse().ok();
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifacts.push(PathBuf::from(path.trim()));
        } else if line.contains("ERROR: libFuzzer:") || line.contains("ERROR: AddressSanitizer:") {
            self.error.get_or_insert_with(|| line.trim().to_owned());
        } else if line.contains("panicked at") {
            self.panic.push(line.trim().to_owned());
        } else if self.panic.len() == 1 {
            // Since Rust 1.73 the message follows the location on its own line.
            self.panic.push(line.trim().to_owned());
        }
        if line.starts_with('#') {
            // "#389600	DONE   cov: 1441 ft: 5138 corp: 665/102Kb ..."
            let fields: Vec<&str> = line.split_whitespace().collect();
            for pair in fields.windows(2) {
                match pair[0] {
                    "cov:" => self.coverage = pair[1].parse().ok(),
                    "corp:" => self.corpus = pair[1].split('/').next().and_then(|n| n.parse().ok()),
                    _ => {}
                }
            }
        }
    }

    fn crashed(&self) -> bool {
        !self.artifacts.is_empty() || self.stopped || self.status.is_some_and(|s| !s.success())
    }

    fn summary(&self, target: &str) -> String {
        let show = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let seconds = self.seconds.unwrap_or(self.elapsed.as_secs());
        let verdict = if self.crashed() { "CRASH" } else { "ok" };
        format!(
            "fuzz: {target}: {} execs in {seconds} s ({} exec/s), coverage {}, corpus {} inputs: {verdict}",
            show(self.execs),
            show(self.rate),
            show(self.coverage),
            show(self.corpus),
        )
    }

    /// The error to report for a crashed run, naming the saved input.
    fn failure(&self, root: &Path, target: &str) -> Option<String> {
        if !self.crashed() {
            return None;
        }
        let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        let log = shown(&self.log);
        let cause = match (self.panic.as_slice(), &self.error) {
            ([location, message, ..], _) => format!("{location} {message}"),
            ([location], _) => location.clone(),
            ([], Some(error)) => error.clone(),
            ([], None) if self.stopped => {
                format!(
                    "still running {} s past its time limit; stopped",
                    GRACE.as_secs()
                )
            }
            ([], None) => format!("the fuzzer exited with {:?}", self.status),
        };
        let mut report = format!("fuzz target `{target}` failed: {cause}");
        match self.artifacts.first() {
            Some(artifact) => {
                let artifact = shown(artifact);
                report.push_str(&format!(
                    "\n  crashing input: {artifact}\n  reproduce:      RUSTC_BOOTSTRAP=1 cargo fuzz run -a {target} {artifact}"
                ));
            }
            None => report.push_str("\n  libFuzzer saved no input"),
        }
        report.push_str(&format!("\n  full log:       {log}"));
        Some(report)
    }
}

/// Forwards each line of `pipe` to `lines` until the pipe closes.
fn forward_lines(pipe: impl Read + Send + 'static, lines: Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
}

/// Lines worth showing while a fuzzer runs: start, periodic pulses, end, errors.
fn is_progress(line: &str) -> bool {
    [
        "INITED",
        "pulse",
        "DONE",
        "ERROR:",
        "panicked at",
        "Test unit written",
    ]
    .iter()
    .any(|k| line.contains(k))
}

/// Fuzzes `target` for `seconds`; what it reported, its exit and its log.
fn fuzz_target(fuzz_dir: &Path, binaries: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let files = TargetFiles::prepare(fuzz_dir, binaries, target)?;
    let log =
        File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
    let mut cmd = files.command(fuzz_dir, seconds);

    println!("fuzz: {target}: fuzzing for {seconds} s");
    let start = Instant::now();
    let (mut child, lines) = spawn_with_lines(&mut cmd, &files.binary)?;
    let mut watch = Watch {
        target,
        log,
        outcome: Outcome {
            log: files.log,
            ..Outcome::default()
        },
    };
    let deadline = start + Duration::from_secs(seconds) + GRACE;
    let status = watch.until_exit(&mut child, &lines, deadline)?;
    drain(&lines, |line| watch.take(line))?;
    let mut outcome = watch.outcome;
    outcome.status = Some(status);
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// The files of one target's run.
struct TargetFiles {
    binary: PathBuf,
    /// Where new inputs go (`fuzz/corpus/TARGET`).
    corpus: PathBuf,
    /// Where libFuzzer saves crashing inputs.
    artifacts: PathBuf,
    /// libFuzzer's whole output.
    log: PathBuf,
    /// The committed seeds, if any.
    seeds: Option<PathBuf>,
    dict: Option<PathBuf>,
}

impl TargetFiles {
    /// Checks that the target was built and creates its directories.
    fn prepare(fuzz_dir: &Path, binaries: &Path, target: &str) -> Result<Self> {
        let binary = binaries.join(target);
        if !binary.is_file() {
            bail!("{} is missing after cargo fuzz build", binary.display());
        }
        let corpus = fuzz_dir.join("corpus").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        let logs = fuzz_dir.join("target").join("logs");
        for dir in [&corpus, &artifacts, &logs] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
        let seeds = fuzz_dir.join("seeds").join(target);
        Ok(Self {
            binary,
            corpus,
            artifacts,
            log: logs.join(format!("{target}.log")),
            seeds: seeds.is_dir().then_some(seeds),
            dict: dict.is_file().then_some(dict),
        })
    }

    /// The fuzzer's command line, its output piped.
    fn command(&self, fuzz_dir: &Path, seconds: u64) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(fuzz_dir)
            .arg(format!("-artifact_prefix={}/", self.artifacts.display()))
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
            .arg("-print_final_stats=1");
        if let Some(dict) = &self.dict {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        // New inputs go to the first directory; the seeds are only read.
        cmd.arg(&self.corpus);
        if let Some(seeds) = &self.seeds {
            cmd.arg(seeds);
        }
        cmd.env("ASAN_OPTIONS", asan_options())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// What `cargo fuzz run` sets for the address sanitizer, merged with the
/// caller's options: Rust's symbols trip its ODR check spuriously.
fn asan_options() -> String {
    match std::env::var("ASAN_OPTIONS") {
        Ok(own) if !own.is_empty() => format!("{own}:detect_odr_violation=0"),
        _ => "detect_odr_violation=0".to_owned(),
    }
}

/// Starts `cmd`; the child and its standard output and error, line by line.
fn spawn_with_lines(cmd: &mut Command, binary: &Path) -> Result<(Child, Receiver<String>)> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let (send, lines) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, send.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, send);
    }
    Ok((child, lines))
}

/// A running fuzzer's output: logged, read, and shown when it is progress.
struct Watch<'a> {
    target: &'a str,
    log: File,
    outcome: Outcome,
}

impl Watch<'_> {
    fn take(&mut self, line: String) -> Result<()> {
        writeln!(self.log, "{line}")?;
        self.outcome.observe(&line);
        if is_progress(&line) {
            println!("fuzz: {}: {line}", self.target);
        }
        Ok(())
    }

    /// Takes the output until the fuzzer exits, stopping it past `deadline`.
    fn until_exit(
        &mut self,
        child: &mut Child,
        lines: &Receiver<String>,
        deadline: Instant,
    ) -> Result<ExitStatus> {
        loop {
            match lines.recv_timeout(POLL) {
                Ok(line) => self.take(line)?,
                Err(RecvTimeoutError::Timeout) => {}
                // Both pipes closed before the process exited: keep polling it.
                Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL),
            }
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                // The process is ours: stop it by its handle.
                child.kill().ok();
                self.outcome.stopped = true;
                return Ok(child.wait()?);
            }
        }
    }
}

/// Takes the lines still buffered once the fuzzer has exited.
fn drain(lines: &Receiver<String>, mut take: impl FnMut(String) -> Result<()>) -> Result<()> {
    // The readers stop at end of file, soon after the process exits; the
    // timeout covers a grandchild that kept a pipe open.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        take(line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_seconds_and_targets() {
        let o = parse_args(&args(&["--seconds", "5", "inflate", "handshake"])).unwrap();
        assert_eq!(o.seconds, 5);
        assert_eq!(o.targets, ["inflate", "handshake"]);
        let o = parse_args(&args(&["--seconds=30"])).unwrap();
        assert_eq!((o.seconds, o.targets.len()), (30, 0));
        assert_eq!(parse_args(&[]).unwrap().seconds, DEFAULT_SECONDS);
        assert!(parse_args(&args(&["--help"])).unwrap().help);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &["--seconds"][..],
            &["--seconds", "0"],
            &["--seconds", "ten"],
            &["--jobs", "2"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_libfuzzer_output() {
        let mut o = Outcome::default();
        for line in [
            "#2\tINITED cov: 944 ft: 1467 corp: 10/4954b exec/s: 0 rss: 38Mb",
            "#389600\tDONE   cov: 1441 ft: 5138 corp: 665/102Kb lim: 2385 exec/s: 6386 rss: 241Mb",
            "Done 389600 runs in 61 second(s)",
            "stat::number_of_executed_units: 389600",
            "stat::average_exec_per_sec:     6386",
        ] {
            o.observe(line);
        }
        assert_eq!(
            (o.execs, o.rate, o.seconds, o.coverage, o.corpus),
            (Some(389600), Some(6386), Some(61), Some(1441), Some(665))
        );
        assert!(!o.crashed());

        let mut o = Outcome::default();
        for line in [
            "thread '<unnamed>' panicked at fuzz_targets/inflate.rs:50:13:",
            "1002 bytes past a limit of 1000",
            "==77== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='/w/fuzz/artifacts/inflate/'; Test unit written to /w/fuzz/artifacts/inflate/crash-ab12",
        ] {
            o.observe(line);
        }
        assert!(o.crashed());
        let report = o.failure(Path::new("/w"), "inflate").unwrap();
        assert!(
            report.contains("crashing input: fuzz/artifacts/inflate/crash-ab12"),
            "{report}"
        );
        assert!(
            report.contains("1002 bytes past a limit of 1000"),
            "{report}"
        );
    }
}
