//! The cargo-driven stages: the peer-script self-test that the Rust interop
//! tests rely on, the Rust tests (nextest when installed), the doctests and
//! the release build of the binaries the Autobahn stages run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Paths;
use crate::process::{capture, run};

/// Time allowed for a whole test run (nextest, cargo test, doctests).
const TEST_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Time allowed for one release build.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Time allowed for the peer self-test.
const PEERS_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Time allowed for a quick cargo query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// A release binary the Autobahn stages run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Binary {
    /// `duplex`, the CLI (root package `duplex-cli`).
    Cli,
    /// The `autobahn-client` example of package `duplex`.
    AutobahnClient,
    /// The `h2-bridge` example of package `duplex`: HTTP/1.1 to HTTP/2 and
    /// back, for the Autobahn suite over HTTP/2.
    H2Bridge,
}

impl Binary {
    /// Where `cargo build --release` puts it.
    pub fn path(self, paths: &Paths) -> PathBuf {
        let release = paths.target.join("release");
        match self {
            Self::Cli => release.join("duplex"),
            Self::AutobahnClient => release.join("examples").join("autobahn-client"),
            Self::H2Bridge => release.join("examples").join("h2-bridge"),
        }
    }

    fn build_args(self) -> &'static [&'static str] {
        match self {
            Self::Cli => &["build", "--release", "--bin", "duplex"],
            Self::AutobahnClient => &[
                "build",
                "--release",
                "-p",
                "duplex",
                "--example",
                "autobahn-client",
            ],
            Self::H2Bridge => &[
                "build",
                "--release",
                "-p",
                "duplex",
                "--example",
                "h2-bridge",
            ],
        }
    }
}

/// The cargo that runs this xtask (`$CARGO`), so the same toolchain is used.
fn cargo(paths: &Paths) -> Command {
    paths.command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Cargo's target directory for the workspace at `root`.
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = capture(&mut cmd, QUERY_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")?;
    let dir = json["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Runs the peer scripts against each other (tests/peers/selftest.py).
pub fn peer_selftest(paths: &Paths) -> Result<()> {
    let mut cmd = paths.command(paths.venv_python());
    cmd.arg(paths.peers.join("selftest.py"))
        .env("NODE_PATH", paths.node_modules());
    run(&mut cmd, PEERS_TIMEOUT)
}

/// Runs every test target of the workspace with cargo-nextest if it is
/// installed, else with `cargo test`.
pub fn tests(paths: &Paths) -> Result<()> {
    let nextest = capture(cargo(paths).args(["nextest", "--version"]), QUERY_TIMEOUT)
        .is_ok_and(|out| out.status.success());
    let mut cmd = cargo(paths);
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--all-targets"])
            .args(["--no-fail-fast", "--no-tests=warn"]);
    } else {
        println!("    cargo-nextest is not installed: using cargo test");
        cmd.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    }
    cmd.envs(paths.test_env());
    run(&mut cmd, TEST_TIMEOUT)
}

/// The hub's end-to-end tests that hold for either engine: they run a
/// second time with history and delivery in Redis
/// (`DUPLEX_TEST_ENGINE=redis`: each test server gets a `redis-server` of
/// its own). `storage_faults` is about SQLite's disk and stays embedded.
const ON_BOTH_ENGINES: &[&str] = &["hub", "http2", "fastpath", "admission", "transfer"];

/// The engine-independent hub tests again, on Redis.
pub fn tests_on_redis(paths: &Paths) -> Result<()> {
    let nextest = capture(cargo(paths).args(["nextest", "--version"]), QUERY_TIMEOUT)
        .is_ok_and(|out| out.status.success());
    let mut cmd = cargo(paths);
    if nextest {
        cmd.args(["nextest", "run"]);
    } else {
        cmd.arg("test");
    }
    cmd.args(["-p", "duplex-server", "--no-fail-fast"]);
    for test in ON_BOTH_ENGINES {
        cmd.args(["--test", test]);
    }
    cmd.envs(paths.test_env())
        .env("DUPLEX_TEST_ENGINE", "redis");
    run(&mut cmd, TEST_TIMEOUT)
}

/// Checks formatting and lints: `cargo fmt --check` and clippy with
/// warnings denied, over every crate and target. Skipped (with a warning)
/// only where the toolchain lacks rustfmt or clippy.
pub fn lint(paths: &Paths) -> Result<()> {
    for (component, args) in [
        ("fmt", &["fmt", "--all", "--", "--check"][..]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ][..],
        ),
    ] {
        let present = capture(cargo(paths).args([component, "--version"]), QUERY_TIMEOUT)
            .is_ok_and(|out| out.status.success());
        if !present {
            println!("    warning: cargo {component} is not installed; skipping it");
            continue;
        }
        run(cargo(paths).args(args), TEST_TIMEOUT)?;
    }
    Ok(())
}

/// Runs the doctests, which nextest does not run.
pub fn doctests(paths: &Paths) -> Result<()> {
    let mut cmd = cargo(paths);
    cmd.args(["test", "--workspace", "--doc", "--no-fail-fast"])
        .envs(paths.test_env());
    run(&mut cmd, TEST_TIMEOUT)
}

/// Runs the `#[ignore]`d tests that need a release build — a 3 GiB
/// transfer and a slice of the transfer soak (`tests/transfer.rs`), the
/// size of an echo task (`crates/ws/tests/footprint.rs`), crowds against
/// the memory budget (`tests/memory_budget.rs`) and a 20-second slice of
/// the hub soak (`tests/hub_soak.rs`). Only those test targets are built,
/// to keep CI's release compile short.
pub fn release_tests(paths: &Paths) -> Result<()> {
    const RELEASE_TEST_TARGETS: [&str; 4] = ["transfer", "footprint", "memory_budget", "hub_soak"];
    let nextest = capture(cargo(paths).args(["nextest", "--version"]), QUERY_TIMEOUT)
        .is_ok_and(|out| out.status.success());
    let mut cmd = cargo(paths);
    if nextest {
        cmd.args(["nextest", "run", "--release", "--workspace"])
            .args(RELEASE_TEST_TARGETS.iter().flat_map(|t| ["--test", t]))
            .args(["--run-ignored", "only", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--release", "--workspace"])
            .args(RELEASE_TEST_TARGETS.iter().flat_map(|t| ["--test", t]))
            .args(["--no-fail-fast", "--", "--ignored"]);
    }
    cmd.envs(paths.test_env());
    run(&mut cmd, TEST_TIMEOUT)
}

/// The long file-transfer soak (`cargo xtask soak`): the soak test of
/// `tests/transfer.rs`, release build, with `runs` runs from `seed` (every
/// run prints its seed; a failing one says how to reproduce it).
pub fn soak(paths: &Paths, runs: u64, seed: Option<u64>) -> Result<()> {
    let mut cmd = cargo(paths);
    cmd.args(["test", "--release", "--test", "transfer"])
        .args(["soak_random_file_sets_receivers_and_mishaps"])
        .args(["--", "--ignored", "--exact", "--nocapture"])
        .env("DUPLEX_SOAK_RUNS", runs.to_string());
    if let Some(seed) = seed {
        cmd.env("DUPLEX_SOAK_SEED", seed.to_string());
    }
    cmd.envs(paths.test_env());
    // About 1 s a run on this kind of machine; allow ten times that.
    run(&mut cmd, Duration::from_secs(600 + runs * 10))
}

/// The hub soak (`cargo xtask soak --hub`): `tests/hub_soak.rs`, release
/// build, for `seconds` with `clients` subscribers.
pub fn hub_soak(paths: &Paths, seconds: u64, clients: u64, seed: Option<u64>) -> Result<()> {
    let mut cmd = cargo(paths);
    cmd.args(["test", "--release", "--test", "hub_soak"])
        .args(["--", "--ignored", "--nocapture"])
        .env("DUPLEX_HUB_SOAK_SECONDS", seconds.to_string())
        .env("DUPLEX_HUB_SOAK_CLIENTS", clients.to_string());
    if let Some(seed) = seed {
        cmd.env("DUPLEX_SOAK_SEED", seed.to_string());
    }
    cmd.envs(paths.test_env());
    // The build, the run, and a minute to catch up and check.
    run(&mut cmd, Duration::from_secs(900 + seconds))
}

/// Builds the release `binaries`, then checks that they exist.
pub fn build_release(paths: &Paths, binaries: &[Binary]) -> Result<()> {
    if binaries.is_empty() {
        println!("    nothing to build: stand-ins replace both binaries");
    }
    for &binary in binaries {
        run(cargo(paths).args(binary.build_args()), BUILD_TIMEOUT)?;
        let path = binary.path(paths);
        if !path.is_file() {
            bail!("the build succeeded but {} does not exist", path.display());
        }
    }
    Ok(())
}
