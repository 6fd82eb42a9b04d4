//! `cargo xtask`: project automation for Duplex.
//!
//! `cargo xtask test` installs everything the tests need (cached under
//! `target/xtask/`), runs the Rust tests, builds the release binaries and runs
//! the Autobahn conformance suite against the server and the client. See
//! [`HELP`] for the subcommands and the environment variables they read.

mod api;
mod autobahn;
mod bench;
mod browser;
mod cargo;
mod fuzz;
mod pipeline;
mod process;
mod report;
mod tools;
mod wsclient;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::autobahn::Side;
use crate::pipeline::Pipeline;

const HELP: &str = "\
cargo xtask: Duplex project automation

USAGE:
    cargo xtask test [--skip-autobahn] [--keep-going]
    cargo xtask autobahn [server|client|server-h2|client-h2] [--keep-going]
    cargo xtask tools
    cargo xtask api [--bless]
    cargo xtask fuzz [--seconds N] [TARGET...]
    cargo xtask bench [--quick] [--reps N] [--seconds S] (--help for more)
    cargo xtask soak [--runs N] [--seed S]
    cargo xtask soak --hub [--seconds N] [--clients N] [--seed S]
    cargo xtask help

SUBCOMMANDS:
    test       Everything CI runs, in order: prepare tools, lint (fmt, clippy), self-test the peer
               scripts, Rust tests (cargo nextest, or cargo test without it),
               the hub's tests again on Redis (DUPLEX_TEST_ENGINE=redis), doctests, library (the public
               API against api.txt, cargo package), browser (the chat and transfer pages in chromium), release build,
               bench smoke (`duplex bench` echo, transfer and fanout against `duplex serve`, fanout
               against Socket.IO; a few seconds),
               release tests (the #[ignore]d 3 GiB transfer, transfer soak slice, echo-task size,
               memory-budget crowds, and 20 s slices of the hub soak on one node and on
               three nodes sharing Redis through failures, release build),
               Autobahn server side, Autobahn client side. Ends with the line
               `xtask: N passed, M failed`.
    autobahn   Prepare tools, build the release binaries and run the Autobahn
               suite against the server, the client, or both (the default).
    fuzz       Run each cargo-fuzz target (frame_decoder, handshake, inflate)
               for N seconds (default 60) on stable Rust; fails on a crash.
    bench      Benchmark Duplex beside tokio-tungstenite, fastwebsockets and a
               plain TCP echo (CPU-pinned) and write docs/performance.md.
    soak       The randomized file-transfer soak, release build: N runs (default 500)
               of random file sets (chunk and window edges, hundreds of small
               files, nested non-ASCII names), 1-3 receivers, random relay
               windows and one mishap each (cut connections, a corrupt byte, a
               relay restart, a killed receiver or sender run again), every
               byte checked. `cargo xtask test` runs a 24-run slice. A failing
               run prints the DUPLEX_SOAK_SEED that reproduces it.
               With --hub: the hub soak instead, for N seconds (default 300)
               with N subscribers (default 200) that disconnect at random
               (close, reset, silence) and recover, steady publishers, a
               SIGKILL and restart of `duplex serve`, a flood to readers
               that never read; prints its figures and fails on any lost or
               duplicated publication. `cargo xtask test` runs 20 s of it.
    tools      Only prepare tools, then print the environment the tests read.
    api        Compare the public API of duplex-proto and duplex (from rustdoc's JSON)
               with crates/proto/api.txt and crates/ws/api.txt; --bless rewrites them
               after a deliberate change. Then checks that every public module, type,
               trait, function and method has a runnable example in its rustdoc.
               `cargo xtask test` runs it (stage library,
               with `duplex` checked without default features and both crates built
               from their `cargo package`).
    help       Print this text.

OPTIONS:
    --skip-autobahn   (test) stop after the Rust, doc and browser tests.
    --keep-going      run the remaining stages after a failed one (tool and
                      build failures still stop the run).

WHERE THINGS GO:
    target/xtask/venv            Python venv with kosoku and websockets
    target/xtask/node            node_modules with ws and playwright-core
    target/browser/              screenshots of the browser tests (chat, transfer)
    target/autobahn/server/      Autobahn report, server side (index.html, index.json)
    target/autobahn/client/      Autobahn report, client side
    target/autobahn/*-h2/        the same over HTTP/2 (RFC 8441), through the h2-bridge example
    target/autobahn/*.log        output of the processes of each side

ENVIRONMENT:
    DUPLEX_AUTOBAHN_CASES        comma-separated case ids or globs to run,
                                 e.g. `1.*,9.7.1` (kosoku -i); default: all
    DUPLEX_AUTOBAHN_EXCLUDE      comma-separated case ids or globs to skip (kosoku -x)
    DUPLEX_AUTOBAHN_PARALLELISM  cases run at once on the server side (default 2)
    DUPLEX_AUTOBAHN_TIMEOUT      seconds allowed for each side's run (default 1200)
    DUPLEX_AUTOBAHN_SERVER_CMD   server under test instead of `duplex serve`;
                                 {port} and {python} are substituted, e.g.
                                 '{python} tests/peers/py_echo_server.py --port {port} --compress on'
    DUPLEX_AUTOBAHN_CLIENT_CMD   client under test instead of the autobahn-client
                                 example; {url} and {python} are substituted, e.g.
                                 '{python} tests/peers/py_autobahn_client.py {url}'

    The Rust tests get DUPLEX_TEST_PYTHON, DUPLEX_TEST_NODE_PATH,
    DUPLEX_TEST_PEERS and DUPLEX_REQUIRE_PEERS=1 (`cargo xtask tools` prints them).
";

/// Where things are: the workspace, its target directory and the tool caches.
pub struct Paths {
    /// The workspace root (the parent of `xtask/`).
    pub root: PathBuf,
    /// Cargo's target directory (`target/` unless configured otherwise).
    pub target: PathBuf,
    /// The Python venv, `target/xtask/venv`.
    pub venv: PathBuf,
    /// The npm prefix, `target/xtask/node`.
    pub node_dir: PathBuf,
    /// Where Autobahn reports and logs go, `target/autobahn`.
    pub autobahn: PathBuf,
    /// The interop peer scripts, `tests/peers`.
    pub peers: PathBuf,
}

impl Paths {
    fn discover() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let target = cargo::target_dir(&root)?;
        Ok(Self {
            venv: target.join("xtask").join("venv"),
            node_dir: target.join("xtask").join("node"),
            autobahn: target.join("autobahn"),
            peers: root.join("tests").join("peers"),
            root,
            target,
        })
    }

    /// The venv's Python interpreter.
    pub fn venv_python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    /// A console script installed in the venv, e.g. `kosoku`.
    pub fn venv_bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The `node_modules` directory that NODE_PATH should point at.
    pub fn node_modules(&self) -> PathBuf {
        self.node_dir.join("node_modules")
    }

    /// The environment the Rust tests read to find their interop peers.
    pub fn test_env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("DUPLEX_TEST_PYTHON", self.venv_python().into()),
            ("DUPLEX_TEST_NODE_PATH", self.node_modules().into()),
            ("DUPLEX_TEST_PEERS", self.peers.clone().into()),
            ("DUPLEX_REQUIRE_PEERS", "1".into()),
        ]
    }

    /// A command run from the workspace root.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        cmd
    }
}

/// What the command line asked for.
enum Task {
    Test { autobahn: bool },
    Autobahn { sides: Vec<Side> },
    Api { bless: bool },
    Tools,
    Help,
}

struct Args {
    task: Task,
    keep_going: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args> {
    let mut args = args.into_iter();
    let subcommand = args.next();
    let mut rest: Vec<String> = args.collect();
    let keep_going = take_flag(&mut rest, "--keep-going");
    let task = match subcommand.as_deref() {
        Some("test") => Task::Test {
            autobahn: !take_flag(&mut rest, "--skip-autobahn"),
        },
        Some("autobahn") => {
            let side = (!rest.is_empty()).then(|| rest.remove(0));
            let sides = match side.as_deref() {
                None => Side::ALL.to_vec(),
                Some(name) if Side::ALL.iter().any(|s| s.name() == name) => {
                    Side::ALL.into_iter().filter(|s| s.name() == name).collect()
                }
                Some("--help" | "-h") => {
                    return Ok(Args {
                        task: Task::Help,
                        keep_going,
                    });
                }
                Some(other) => bail!(
                    "unknown autobahn side `{other}` (expected server, client, server-h2 or client-h2)"
                ),
            };
            Task::Autobahn { sides }
        }
        Some("tools") => Task::Tools,
        Some("api") => Task::Api {
            bless: take_flag(&mut rest, "--bless"),
        },
        None | Some("help" | "--help" | "-h") => Task::Help,
        Some(other) => bail!("unknown subcommand `{other}`; see `cargo xtask help`"),
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Args {
            task: Task::Help,
            keep_going,
        });
    }
    if let Some(extra) = rest.first() {
        bail!("unexpected argument `{extra}`; see `cargo xtask help`");
    }
    Ok(Args { task, keep_going })
}

/// Which soak, and how long.
enum Soak {
    /// The file-transfer soak: runs, seed.
    Transfer(u64, Option<u64>),
    /// The hub soak: seconds, clients, seed.
    Hub(u64, u64, Option<u64>),
}

/// `soak [--runs N] [--seed S]` or `soak --hub [--seconds N] [--clients N] [--seed S]`.
fn parse_soak(args: &[String]) -> Result<Soak> {
    let hub = args.iter().any(|a| a == "--hub");
    let (mut runs, mut seconds, mut clients, mut seed) = (500, 300, 200, None);
    let mut args = args.iter().filter(|a| *a != "--hub");
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64> {
            args.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a whole number"))
        };
        match arg.as_str() {
            "--runs" if !hub => runs = value("--runs")?,
            "--seconds" if hub => seconds = value("--seconds")?,
            "--clients" if hub => clients = value("--clients")?,
            "--seed" => seed = Some(value("--seed")?),
            other => bail!("unexpected argument `{other}`; see `cargo xtask help`"),
        }
    }
    Ok(if hub {
        Soak::Hub(seconds, clients, seed)
    } else {
        Soak::Transfer(runs, seed)
    })
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The commands that are not a pipeline of stages.
    let (command, result) = match argv.first().map(String::as_str) {
        Some("bench") => (
            "bench",
            Paths::discover().and_then(|paths| bench::run_bench(&paths, &argv[1..])),
        ),
        Some("soak") => ("soak", soak(&argv[1..])),
        Some("fuzz") => ("fuzz", fuzz::run(&argv[1..])),
        _ => return stages(argv),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {command}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask soak ...`
fn soak(args: &[String]) -> anyhow::Result<()> {
    let soak = parse_soak(args)?;
    let paths = Paths::discover()?;
    match soak {
        Soak::Transfer(runs, seed) => cargo::soak(&paths, runs, seed),
        Soak::Hub(seconds, clients, seed) => cargo::hub_soak(&paths, seconds, clients, seed),
    }
}

/// `cargo xtask test`, `autobahn`, `api`, `tools`: a pipeline of stages.
fn stages(argv: Vec<String>) -> ExitCode {
    let args = match parse_args(argv) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            return ExitCode::from(2);
        }
    };
    if matches!(args.task, Task::Help) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let paths = match Paths::discover() {
        Ok(paths) => paths,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let autobahn = autobahn::Settings::from_env();
    let mut pipeline = Pipeline::new(args.keep_going);
    let smoke = matches!(args.task, Task::Test { .. });
    let sides = first_stages(&mut pipeline, &paths, args.task);
    let sides = autobahn.runnable(&sides);
    if !sides.is_empty() {
        pipeline.required("release build", || {
            cargo::build_release(&paths, &autobahn.binaries_needed(&sides))
        });
        if smoke {
            pipeline.stage("bench smoke", || bench::smoke(&paths));
            pipeline.stage("release tests", || cargo::release_tests(&paths));
        }
        for side in sides {
            pipeline.stage(side.stage_name(), || autobahn::run(&paths, &autobahn, side));
        }
    }
    pipeline.finish()
}

/// Runs the stages a task needs before the release build; returns the
/// Autobahn sides it asks for.
fn first_stages(pipeline: &mut Pipeline, paths: &Paths, task: Task) -> Vec<Side> {
    match task {
        Task::Help => Vec::new(),
        Task::Tools => {
            pipeline.required("tools", || tools::prepare(paths));
            if pipeline.all_passed() {
                for (name, value) in paths.test_env() {
                    println!("export {name}='{}'", value.to_string_lossy());
                }
            }
            Vec::new()
        }
        Task::Test { autobahn } => {
            pipeline.required("tools", || tools::prepare(paths));
            pipeline.stage("lint", || cargo::lint(paths));
            pipeline.stage("peers", || cargo::peer_selftest(paths));
            pipeline.stage("rust tests", || cargo::tests(paths));
            pipeline.stage("rust tests on redis", || cargo::tests_on_redis(paths));
            pipeline.stage("doctests", || cargo::doctests(paths));
            pipeline.stage("library", || api::check_libraries(paths));
            pipeline.stage("browser", || browser::run_tests(paths));
            if autobahn {
                Side::ALL.to_vec()
            } else {
                Vec::new()
            }
        }
        Task::Autobahn { sides } => {
            pipeline.required("tools", || tools::prepare(paths));
            sides
        }
        Task::Api { bless } => {
            pipeline.stage("api", || api::surfaces(paths, bless));
            Vec::new()
        }
    }
}

/// Reads a duration in whole seconds from the environment.
fn env_secs(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(default, Duration::from_secs)
}
