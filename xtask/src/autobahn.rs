//! The Autobahn conformance stages, run with kosoku (a reimplementation of the
//! Autobahn TestSuite's runner, from PyPI).
//!
//! Server side: `duplex serve` listens on a free loopback port and kosoku's
//! fuzzingclient drives every case against `ws://127.0.0.1:PORT/echo`.
//! Client side: kosoku's fuzzingserver listens and the `autobahn-client`
//! example connects to it (`/getCaseCount`, `/runCase?case=N&agent=duplex`,
//! then `/updateReports`, on which the fuzzingserver writes its report and
//! exits). Either way kosoku writes an Autobahn-format report under
//! `target/autobahn/{server,client}/`, which [`report::check`] judges.
//!
//! Over HTTP/2 (RFC 8441), the same suite runs through the `h2-bridge`
//! example, since kosoku speaks HTTP/1.1 only: for the server, kosoku's
//! fuzzingclient talks to the bridge, which opens each socket as an
//! extended CONNECT on one HTTP/2 connection to `duplex serve` (whose
//! metrics must then count them); for the client, `autobahn-client
//! --http2` opens its sockets over HTTP/2 to the bridge, which upgrades each
//! over HTTP/1.1 to the fuzzingserver. Reports go to
//! `target/autobahn/{server,client}-h2/`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cargo::Binary;
use crate::process::{ChildGuard, display, free_port, tail, wait_for_port, wait_or_kill};
use crate::{Paths, env_secs, report, wsclient};

/// Time allowed for a server to accept connections after it starts.
const PORT_WAIT: Duration = Duration::from_secs(20);
/// Time the fuzzingserver gets to exit by itself once the client under test
/// has finished (it writes its report first).
const REPORT_GRACE: Duration = Duration::from_secs(30);
/// Time the fuzzingserver gets to write its report after the harness itself
/// called `/updateReports`.
const REPORT_WAIT: Duration = Duration::from_secs(120);
/// Default time allowed for one side's whole run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Default number of cases the fuzzingclient runs at once.
const PARALLELISM: u32 = 2;

/// Which implementation is under test, and over which HTTP version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// `duplex serve`, driven by kosoku's fuzzingclient.
    Server,
    /// The `autobahn-client` example, driving kosoku's fuzzingserver.
    Client,
    /// `duplex serve` over HTTP/2, through the bridge.
    ServerOverHttp2,
    /// The `autobahn-client` example over HTTP/2, through the bridge.
    ClientOverHttp2,
}

impl Side {
    /// Every side, in the order `cargo xtask test` runs them.
    pub const ALL: [Side; 4] = [
        Side::Server,
        Side::Client,
        Side::ServerOverHttp2,
        Side::ClientOverHttp2,
    ];

    /// The pipeline stage that runs this side.
    pub fn stage_name(self) -> &'static str {
        match self {
            Self::Server => "autobahn server",
            Self::Client => "autobahn client",
            Self::ServerOverHttp2 => "autobahn server h2",
            Self::ClientOverHttp2 => "autobahn client h2",
        }
    }

    /// Its name on the command line and for its report directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::ServerOverHttp2 => "server-h2",
            Self::ClientOverHttp2 => "client-h2",
        }
    }

    fn over_http2(self) -> bool {
        matches!(self, Self::ServerOverHttp2 | Self::ClientOverHttp2)
    }
}

/// Knobs read from the environment (see the help text in main.rs).
pub struct Settings {
    include: Vec<String>,
    exclude: Vec<String>,
    parallelism: u32,
    timeout: Duration,
    server_cmd: Option<String>,
    client_cmd: Option<String>,
}

impl Settings {
    /// Reads the `DUPLEX_AUTOBAHN_*` variables.
    pub fn from_env() -> Self {
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let command = |name: &str| std::env::var(name).ok().filter(|s| !s.trim().is_empty());
        Self {
            include: list("DUPLEX_AUTOBAHN_CASES"),
            exclude: list("DUPLEX_AUTOBAHN_EXCLUDE"),
            parallelism: std::env::var("DUPLEX_AUTOBAHN_PARALLELISM")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(PARALLELISM),
            timeout: env_secs("DUPLEX_AUTOBAHN_TIMEOUT", RUN_TIMEOUT),
            server_cmd: command("DUPLEX_AUTOBAHN_SERVER_CMD"),
            client_cmd: command("DUPLEX_AUTOBAHN_CLIENT_CMD"),
        }
    }

    /// The sides that can run: the HTTP/2 ones need the built-in testees
    /// (a stand-in may speak HTTP/1.1 only), so they are left out, saying
    /// so, when a stand-in is set.
    pub fn runnable(&self, sides: &[Side]) -> Vec<Side> {
        sides
            .iter()
            .copied()
            .filter(|side| {
                let stand_in = match side {
                    Side::ServerOverHttp2 => self.server_cmd.is_some(),
                    Side::ClientOverHttp2 => self.client_cmd.is_some(),
                    _ => false,
                };
                if stand_in {
                    println!(
                        "    {}: left out (a stand-in testee is set; it may not speak HTTP/2)",
                        side.stage_name()
                    );
                }
                !stand_in
            })
            .collect()
    }

    /// The release binaries that running `sides` needs (none for a side whose
    /// implementation is replaced by a stand-in command).
    pub fn binaries_needed(&self, sides: &[Side]) -> Vec<Binary> {
        let mut binaries = Vec::new();
        let any = |these: [Side; 2]| these.iter().any(|s| sides.contains(s));
        if any([Side::Server, Side::ServerOverHttp2]) && self.server_cmd.is_none() {
            binaries.push(Binary::Cli);
        }
        if any([Side::Client, Side::ClientOverHttp2]) && self.client_cmd.is_none() {
            binaries.push(Binary::AutobahnClient);
        }
        if any([Side::ServerOverHttp2, Side::ClientOverHttp2]) {
            binaries.push(Binary::H2Bridge);
        }
        binaries
    }
}

/// Runs one side of the suite and judges its report.
pub fn run(paths: &Paths, settings: &Settings, side: Side) -> Result<()> {
    std::fs::create_dir_all(&paths.autobahn)
        .with_context(|| format!("cannot create {}", paths.autobahn.display()))?;
    let outdir = paths.autobahn.join(side.name());
    if outdir.exists() {
        std::fs::remove_dir_all(&outdir)
            .with_context(|| format!("cannot remove the old report {}", outdir.display()))?;
    }
    if !settings.include.is_empty() || !settings.exclude.is_empty() {
        println!(
            "    cases: include {:?}, exclude {:?} (DUPLEX_AUTOBAHN_CASES / _EXCLUDE)",
            settings.include, settings.exclude
        );
    }
    match side {
        Side::Server | Side::ServerOverHttp2 => server_side(paths, settings, &outdir, side),
        Side::Client | Side::ClientOverHttp2 => client_side(paths, settings, &outdir, side),
    }
}

/// What the suite talks to for `side`: over HTTP/2, the bridge (`to-h2` or
/// `to-h1`), started on a free port in front of `target`; else `target`.
fn front_of(
    paths: &Paths,
    side: Side,
    target: SocketAddr,
) -> Result<(Option<ChildGuard>, SocketAddr)> {
    if !side.over_http2() {
        return Ok((None, target));
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mode = if side == Side::ServerOverHttp2 {
        "to-h2"
    } else {
        "to-h1"
    };
    let mut cmd = paths.command(built(paths, Binary::H2Bridge)?);
    cmd.args([mode, &addr.to_string(), &target.to_string()]);
    let log = paths.autobahn.join(format!("{}.bridge.log", side.name()));
    let mut child = ChildGuard::spawn("the HTTP/2 bridge", &mut cmd, &log)?;
    wait_for_port(addr, PORT_WAIT, &mut child)?;
    Ok((Some(child), addr))
}

/// A counter from the server's `/metrics` (plain HTTP/1.1, loopback).
fn metric(addr: SocketAddr, name: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {name} in the server's /metrics"))
}

fn server_side(paths: &Paths, settings: &Settings, outdir: &Path, side: Side) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut server_cmd = match &settings.server_cmd {
        Some(template) => stand_in(
            paths,
            "DUPLEX_AUTOBAHN_SERVER_CMD",
            template,
            &[("{port}", addr.port().to_string())],
        )?,
        None => {
            let mut cmd = paths.command(built(paths, Binary::Cli)?);
            cmd.args(["serve", "--bind", &addr.to_string()]);
            cmd
        }
    };
    let testee_log = side_log(paths, side, "testee");
    let mut server = ChildGuard::spawn("the server under test", &mut server_cmd, &testee_log)?;
    wait_for_port(addr, PORT_WAIT, &mut server)?;
    let (bridged, front) = front_of(paths, side, addr)?;

    let url = format!("ws://{front}/echo");
    let mut fuzzer = kosoku(paths, settings, "fuzzingclient", &url, outdir);
    fuzzer.args(["-p", &settings.parallelism.to_string()]);
    let kosoku_log = side_log(paths, side, "kosoku");
    let status = run_logged(&mut fuzzer, &kosoku_log, settings.timeout)?;
    if side.over_http2() {
        // Proof that every case in the report went over HTTP/2, not around
        // the bridge.
        let streams = metric(addr, "duplex_http2_websockets_total")? as usize;
        let cases = report::case_count(outdir).unwrap_or(0);
        println!("    the server opened {streams} WebSockets on HTTP/2 streams for {cases} cases");
        if streams == 0 || streams < cases {
            bail!(
                "the server saw {streams} WebSockets over HTTP/2 for {cases} cases: not all went through the bridge"
            );
        }
    }
    drop(bridged);

    let server_exit = server.exited()?;
    server.stop();
    let verdict = judge(side, outdir, status, &kosoku_log, None);
    if let Some(exit) = server_exit {
        bail!(
            "the server under test exited during the run ({exit}); last lines of {}:\n{}{}",
            testee_log.display(),
            tail(&testee_log, 30),
            verdict
                .err()
                .map(|e| format!("\nand: {e:#}"))
                .unwrap_or_default()
        );
    }
    verdict
}

fn client_side(paths: &Paths, settings: &Settings, outdir: &Path, side: Side) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let kosoku_log = side_log(paths, side, "kosoku");
    let mut fuzzer = ChildGuard::spawn(
        "kosoku's fuzzingserver",
        &mut kosoku(paths, settings, "fuzzingserver", &addr.to_string(), outdir),
        &kosoku_log,
    )?;
    wait_for_port(addr, PORT_WAIT, &mut fuzzer)?;
    let expected =
        wsclient::get_case_count(addr).context("asking the fuzzingserver for its case count")?;
    println!("    the fuzzingserver at ws://{addr} serves {expected} cases");

    let (bridged, front) = front_of(paths, side, addr)?;
    let mut client_cmd = client_command(paths, settings, side, format!("ws://{front}"))?;
    let testee_log = side_log(paths, side, "testee");
    let client_error = run_client(&mut client_cmd, &testee_log, settings.timeout);
    let status = await_report(&mut fuzzer, addr, &kosoku_log, client_error.as_deref())?;
    fuzzer.stop();

    drop(bridged);
    let verdict = judge(side, outdir, status, &kosoku_log, Some(expected));
    match (client_error, verdict) {
        (None, verdict) => verdict,
        (Some(client), Ok(())) => bail!("{client}"),
        (Some(client), Err(err)) => bail!("{client}\nand: {err:#}"),
    }
}

/// The log of `what` (`kosoku`, `testee`) for `side`.
fn side_log(paths: &Paths, side: Side, what: &str) -> PathBuf {
    paths
        .autobahn
        .join(format!("{}-side.{what}.log", side.name()))
}

/// The client under test, connecting to `url`: the stand-in command if set,
/// else the `autobahn-client` example.
fn client_command(paths: &Paths, settings: &Settings, side: Side, url: String) -> Result<Command> {
    Ok(match &settings.client_cmd {
        Some(template) => stand_in(
            paths,
            "DUPLEX_AUTOBAHN_CLIENT_CMD",
            template,
            &[("{url}", url)],
        )?,
        None => {
            let mut cmd = paths.command(built(paths, Binary::AutobahnClient)?);
            cmd.arg(&url);
            if side.over_http2() {
                cmd.arg("--http2");
            }
            cmd
        }
    })
}

/// Runs the client under test; why it failed, if it did.
fn run_client(cmd: &mut Command, log: &Path, timeout: Duration) -> Option<String> {
    match run_logged(cmd, log, timeout) {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!(
            "the client under test failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail(log, 30)
        )),
        Err(err) => Some(format!("{err:#}")),
    }
}

/// Waits for the fuzzingserver at `addr` to write its report and exit.
fn await_report(
    fuzzer: &mut ChildGuard,
    addr: SocketAddr,
    kosoku_log: &Path,
    client_error: Option<&str>,
) -> Result<ExitStatus> {
    // The fuzzingserver writes its report and exits on /updateReports. If the
    // client did not get that far, ask for the (partial) report ourselves.
    let grace = if client_error.is_some() {
        Duration::ZERO
    } else {
        REPORT_GRACE
    };
    if let Some(status) = fuzzer.wait(grace)? {
        return Ok(status);
    }
    if client_error.is_none() {
        println!("    warning: the client under test exited 0 without calling /updateReports");
    }
    println!("    calling /updateReports so that the fuzzingserver writes its report");
    if let Err(err) = wsclient::update_reports(addr, "xtask") {
        println!("    /updateReports failed: {err:#}");
    }
    match fuzzer.wait(REPORT_WAIT)? {
        Some(status) => Ok(status),
        None => bail!(
            "the fuzzingserver did not exit within {} s of /updateReports; last lines of {}:\n{}{}",
            REPORT_WAIT.as_secs(),
            kosoku_log.display(),
            tail(kosoku_log, 30),
            client_error
                .map(|e| format!("\nand: {e}"))
                .unwrap_or_default()
        ),
    }
}

/// Fails unless kosoku wrote a report, then judges the report.
fn judge(
    side: Side,
    outdir: &Path,
    status: ExitStatus,
    log: &Path,
    expected: Option<usize>,
) -> Result<()> {
    if !outdir.join("index.json").is_file() {
        bail!(
            "kosoku exited ({status}) without writing {}; last lines of {}:\n{}",
            outdir.join("index.json").display(),
            log.display(),
            tail(log, 30)
        );
    }
    // kosoku exits 1 when a case fails by its own (laxer) standard; the
    // report is the verdict either way.
    report::check(side.name(), outdir, expected)
}

/// The kosoku command for `mode`, with the case selection from the settings.
fn kosoku(paths: &Paths, settings: &Settings, mode: &str, address: &str, outdir: &Path) -> Command {
    let mut cmd = paths.command(paths.venv_bin("kosoku"));
    cmd.args(["-m", mode, address, "-o"]).arg(outdir);
    for case in &settings.include {
        cmd.args(["-i", case]);
    }
    for case in &settings.exclude {
        cmd.args(["-x", case]);
    }
    cmd.env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs `cmd` to completion with its output in `log`, within `timeout`.
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<ExitStatus> {
    let file =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    println!("$ {}   (log: {})", display(cmd), log.display());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    wait_or_kill(&mut child, timeout, &display(cmd)).map_err(|err| {
        anyhow::anyhow!(
            "{err:#}; last lines of {}:\n{}",
            log.display(),
            tail(log, 30)
        )
    })
}

/// A release binary, which must have been built.
fn built(paths: &Paths, binary: Binary) -> Result<PathBuf> {
    let path = binary.path(paths);
    if !path.is_file() {
        bail!(
            "{} does not exist: the release build stage builds it",
            path.display()
        );
    }
    Ok(path)
}

/// A stand-in command from a `DUPLEX_AUTOBAHN_*_CMD` template: split on
/// whitespace, with `{python}` (the venv's interpreter) and `vars` substituted.
fn stand_in(
    paths: &Paths,
    variable: &str,
    template: &str,
    vars: &[(&str, String)],
) -> Result<Command> {
    let python = paths.venv_python().to_string_lossy().into_owned();
    let words: Vec<String> = template
        .split_whitespace()
        .map(|word| {
            vars.iter()
                .fold(word.replace("{python}", &python), |w, (k, v)| {
                    w.replace(k, v)
                })
        })
        .collect();
    let (program, args) = words
        .split_first()
        .with_context(|| format!("{variable} is empty"))?;
    println!("    command from {variable}: {template}");
    let mut cmd = paths.command(program);
    cmd.args(args);
    Ok(cmd)
}
