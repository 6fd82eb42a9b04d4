//! `cargo xtask bench`: Duplex beside its peers, side by side in one run.
//!
//! Builds `duplex` and the echo servers of the bench-only crate `bench/`
//! (plain TCP, Duplex on a raw `TcpStream`, tokio-tungstenite,
//! fastwebsockets), then for each workload and repetition starts each server
//! in turn pinned to CPU 0 (`taskset -c 0`) and loads it with `duplex bench`
//! pinned to CPU 1. Servers are alternated within each repetition so that a
//! noisy moment hurts them all alike; the figures are medians over the
//! repetitions, shown as ratios to the plain TCP echo. Writes
//! `docs/performance.md` with the table, the machine, the commands and SVG
//! charts under `docs/performance/`.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Paths;
use crate::process::{capture, free_port, run};

mod allocator;
mod compressed;
mod fanout;
mod http2;
mod scp;
mod tls;
mod transfer;

const USAGE: &str = "\
cargo xtask bench [--quick] [--reps N] [--seconds S] [--connections N] [--only NAME,...]
                  [--workloads KIND,...]

Runs the side-by-side benchmark and writes docs/performance.md.
    --quick          1 repetition of 2 s per workload, 2,000 idle connections
    --reps N         repetitions per workload and server (default 3)
    --seconds S      seconds per measurement (default 5)
    --connections N  idle connections in the memory/handshake row (default 10000)
    --only A,B       only these servers (tcp, duplex, duplex-serve, tungstenite, fastwebsockets)
    --workloads A,B  only these rows: echo, latency, connections (e.g. `--workloads connections
                     --only duplex,duplex-serve` for the idle-memory row alone); implies --no-doc
                     and --sections none unless --sections is given
    --sections A,B   sections after the main table (default tls,http2,compressed,fanout,
                     transfer,allocator; none)
    --transfer-size B  bytes moved in the transfer section (default 1 GiB)
    --no-doc         print the table but leave docs/performance.md alone
    --smoke          only the `bench smoke` stage of `cargo xtask test` (a few seconds)
";

/// The heading from which docs/performance.md is written by hand: kept as
/// it is when the generated part above it is rewritten.
const NOTES: &str = "## Notes (kept across runs)";

/// One server under test.
struct Server {
    name: &'static str,
    /// How the table names it.
    label: &'static str,
}

const SERVERS: [Server; 5] = [
    Server {
        name: "tcp",
        label: "TCP echo",
    },
    Server {
        name: "duplex",
        label: "Duplex (accept)",
    },
    Server {
        name: "duplex-serve",
        label: "duplex serve /echo",
    },
    Server {
        name: "fastwebsockets",
        label: "fastwebsockets",
    },
    Server {
        name: "tungstenite",
        label: "tokio-tungstenite",
    },
];

/// One workload: a row of the table.
#[derive(Clone)]
struct Workload {
    label: String,
    /// `duplex bench` mode and its arguments (the URL is added).
    mode: &'static str,
    args: Vec<String>,
}

struct Options {
    reps: usize,
    seconds: u64,
    connections: usize,
    only: Option<Vec<String>>,
    /// Workload kinds (`duplex bench` modes) to run; all when `None`.
    workloads: Option<Vec<String>>,
    write_doc: bool,
    quick: bool,
    transfer_size: u64,
    sections: Vec<String>,
}

fn parse(argv: &[String]) -> Result<Options> {
    let mut o = Options {
        reps: 3,
        seconds: 5,
        connections: 10_000,
        only: None,
        workloads: None,
        write_doc: true,
        quick: false,
        transfer_size: transfer::SIZE,
        sections: SECTIONS.map(String::from).to_vec(),
    };
    let mut sections_given = false;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                o.reps = 1;
                o.seconds = 2;
                o.connections = 2_000;
                o.transfer_size = 256 << 20;
            }
            "--transfer-size" => o.transfer_size = value()?.parse()?,
            "--sections" => {
                sections_given = true;
                o.sections = value()?
                    .split(',')
                    .filter(|n| !n.is_empty() && *n != "none")
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = o.sections.iter().find(|n| !SECTIONS.contains(&n.as_str())) {
                    bail!(
                        "unknown section {bad}; known: {}, none",
                        SECTIONS.join(", ")
                    );
                }
            }
            "--reps" => o.reps = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--only" => o.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--workloads" => {
                o.workloads = Some(value()?.split(',').map(str::to_owned).collect());
            }
            "--no-doc" => o.write_doc = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if o.reps == 0 || o.seconds == 0 {
        bail!("--reps and --seconds must be at least 1");
    }
    if let Some(kinds) = &o.workloads {
        if let Some(k) = kinds.iter().find(|k| !WORKLOAD_KINDS.contains(&k.as_str())) {
            bail!("unknown workload {k} (expected one of {WORKLOAD_KINDS:?})");
        }
        // A partial table would replace the full one in docs/performance.md.
        o.write_doc = false;
        if !sections_given {
            o.sections.clear();
        }
    }
    let unknown = o
        .only
        .iter()
        .flatten()
        .find(|n| !SERVERS.iter().any(|s| s.name == n.as_str()));
    if let Some(n) = unknown {
        bail!("unknown server {n}\n{USAGE}");
    }
    Ok(o)
}

/// The sections after the main table, in the order they run.
const SECTIONS: [&str; 6] = [
    "tls",
    "http2",
    "compressed",
    "fanout",
    "transfer",
    "allocator",
];

/// The workload kinds `--workloads` selects from: `duplex bench` modes.
const WORKLOAD_KINDS: [&str; 3] = ["echo", "latency", "connections"];

fn workloads(o: &Options) -> Vec<Workload> {
    let mut all = all_workloads(o);
    if let Some(kinds) = &o.workloads {
        all.retain(|w| kinds.iter().any(|k| k == w.mode));
    }
    all
}

fn all_workloads(o: &Options) -> Vec<Workload> {
    let d = format!("{}s", o.seconds);
    let echo = |label: &str, c: u32, p: u32, s: &str| Workload {
        label: label.into(),
        mode: "echo",
        args: [
            "-c",
            &c.to_string(),
            "-p",
            &p.to_string(),
            "-s",
            s,
            "-d",
            &d,
        ]
        .map(String::from)
        .to_vec(),
    };
    vec![
        echo("100 connections, 1 in flight, 16 B", 100, 1, "16"),
        echo("100 connections, 1 in flight, 4 KiB", 100, 1, "4k"),
        echo("10 connections, 1 in flight, 1 MiB binary", 10, 1, "1m"),
        echo(
            "100 connections, 16 in flight, 16 B (pipelined)",
            100,
            16,
            "16",
        ),
        Workload {
            label: "latency, 1 connection, 16 B".into(),
            mode: "latency",
            args: ["-s", "16", "-d", &d].map(String::from).to_vec(),
        },
        Workload {
            label: format!("{} idle connections", o.connections),
            mode: "connections",
            args: vec![
                "-n".into(),
                o.connections.to_string(),
                "--hold".into(),
                "1s".into(),
            ],
        },
    ]
}

/// A started server, killed (by its own pid) when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    _data: Option<PathBuf>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self._data {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start(paths: &Paths, bins: &Bins, server: &Server, log: &Path) -> Result<Running> {
    start_with(paths, bins, server, log, None, &[])
}

/// [`start`], over TLS with this certificate and key (PEM files) if given.
fn start_with(
    paths: &Paths,
    bins: &Bins,
    server: &Server,
    log: &Path,
    tls: Option<&tls::Files>,
    serve_args: &[&str],
) -> Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    let mut data = None;
    if server.name == "duplex-serve" {
        let dir = paths
            .target
            .join("bench")
            .join(format!("serve-data-{port}"));
        // Every bench client comes from 127.0.0.1: lift the per-address
        // limit (the connections row opens 10,000).
        cmd.arg(&bins.duplex)
            .args(["serve", "--bind", &addr.to_string(), "--data"])
            .arg(&dir)
            .args(["--max-connections-per-address", "0"])
            .args(serve_args)
            .env("DUPLEX_LOG", "warn");
        if let Some(tls) = tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        data = Some(dir);
    } else {
        cmd.arg(&bins.echo)
            .args([server.name, "--port", &port.to_string()]);
        if let Some(tls) = tls {
            cmd.arg("--tls").arg(&tls.cert).arg(&tls.key);
        }
    }
    launch(cmd, addr, data, server.name, log)
}

/// `redis-server` on CPU 0 and a free port, without persistence beyond an
/// append-only file fsynced at every write (what docs/deploy.md advises).
fn start_redis(paths: &Paths, log: &Path) -> Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = paths.target.join("bench").join(format!("redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "redis-server", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(&dir);
    launch(cmd, addr, Some(dir), "redis-server", log)
}

/// Spawns `cmd` (output to `log`) and waits until it listens on `addr`.
fn launch(
    mut cmd: Command,
    addr: SocketAddr,
    data: Option<PathBuf>,
    name: &str,
    log: &Path,
) -> Result<Running> {
    let file = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("cannot start taskset (util-linux)")?;
    let mut running = Running {
        child,
        addr,
        _data: data,
    };
    let t = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = running.child.try_wait()? {
            bail!("{name} exited ({status}); see {}", log.display());
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("{name} does not listen on {addr}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(running)
}

struct Bins {
    duplex: PathBuf,
    echo: PathBuf,
}

/// `cargo build --release ARGS --target-dir TARGET`.
fn run_cargo_release(paths: &Paths, args: &[&str], target: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        paths
            .command(&cargo)
            .args(["build", "--release"])
            .args(args)
            .arg("--target-dir")
            .arg(target),
        Duration::from_secs(1800),
    )
}

fn build(paths: &Paths) -> Result<Bins> {
    run_cargo_release(paths, &["--bin", "duplex"], &paths.target)?;
    let bench_target = paths.target.join("bench-servers");
    run_cargo_release(
        paths,
        &["--manifest-path", "bench/Cargo.toml"],
        &bench_target,
    )?;
    Ok(Bins {
        duplex: paths.target.join("release").join("duplex"),
        echo: bench_target.join("release").join("bench-echo"),
    })
}

/// Raises this process's open-file limit (inherited by the servers and the
/// load generator) to the hard limit, for the idle-connections row.
fn raise_nofile() {
    #[cfg(target_os = "linux")]
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One measurement's figures.
#[derive(Clone, Default)]
struct Sample {
    rate: f64,
    p50: f64,
    p99: f64,
    rss_kib: f64,
    cpu_us: f64,
    /// The server's CPU time per echoed message, µs (echo and latency).
    cpu_us_per_msg: f64,
    /// How busy the server was, % of one core.
    busy_pct: f64,
}

fn measure(
    bins: &Bins,
    work: &Workload,
    server: &Server,
    running: &Running,
) -> Result<(Sample, String)> {
    let path = match (work.mode, server.name) {
        (_, "duplex-serve") => "/echo",
        _ => "/",
    };
    let url = format!("ws://{}{path}", running.addr);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(&bins.duplex)
        .args(["bench", work.mode, &url, "--json"])
        .args(&work.args);
    if server.name == "tcp" && work.mode != "connections" {
        cmd.arg("--mirror");
    }
    // Every mode reports the server's own cost: throughput saturates once
    // the load generator is the bottleneck, CPU time per message does not.
    cmd.args(["--server-pid", &running.child.id().to_string()]);
    let shown = format!("{} {}", bins.duplex.display(), cmd_args(&cmd));
    let v = bench_report(&mut cmd, Duration::from_secs(600), &format!("`{shown}`"))?;
    let row = &v["rows"][0];
    let extra = &row["extra"];
    Ok((
        Sample {
            rate: row["ops_per_sec"].as_f64().unwrap_or(0.0),
            p50: row["latency_us"]["p50"].as_f64().unwrap_or(0.0),
            p99: row["latency_us"]["p99"].as_f64().unwrap_or(0.0),
            rss_kib: extra["rss_kib_per_conn"].as_f64().unwrap_or(0.0),
            cpu_us: extra["cpu_us_per_handshake"].as_f64().unwrap_or(0.0),
            cpu_us_per_msg: extra["server_cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN),
            busy_pct: extra["server_cpu_pct"].as_f64().unwrap_or(f64::NAN),
        },
        shown,
    ))
}

/// Fails unless an echo smoke report is plausible; prints its figures.
fn check_echo_smoke(v: &Value) -> Result<()> {
    let row = &v["rows"][0];
    let ops = row["ops"].as_u64().unwrap_or(0);
    let rate = row["ops_per_sec"].as_f64().unwrap_or(0.0);
    let p50 = row["latency_us"]["p50"].as_f64().unwrap_or(0.0);
    let p99 = row["latency_us"]["p99"].as_f64().unwrap_or(0.0);
    let bytes = row["bytes"].as_u64().unwrap_or(0);
    if v["errors"] != 0 || row["errors"] != 0 {
        bail!("duplex bench reported errors: {v}");
    }
    // The server's CPU time: some, and not more than both cores all along.
    let cpu_us = row["extra"]["server_cpu_us_per_msg"]
        .as_f64()
        .unwrap_or(0.0);
    let busy = row["extra"]["server_cpu_pct"].as_f64().unwrap_or(0.0);
    if ops < 100
        || rate <= 0.0
        || !(0.0 < p50 && p50 <= p99)
        || bytes != ops * 1024
        || v["mode"] != "echo"
        || !(cpu_us > 0.0 && busy > 0.0 && busy <= 100.0 * available_cores() as f64 + 10.0)
    {
        bail!("implausible report: {v}");
    }
    println!(
        "    {}: {ops} echoes, {rate:.0}/s, p50 {p50:.1} µs, p99 {p99:.1} µs, 0 errors; the server's CPU {cpu_us:.2} µs per message, {busy:.0}% busy",
        row["name"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Runs a `duplex bench ... --json` command and returns its report; fails
/// with `what`, the exit status and standard error if the run failed.
fn bench_report(cmd: &mut Command, timeout: Duration, what: &str) -> Result<Value> {
    let out = capture(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{what} printed no JSON"))
}

fn cmd_args(cmd: &Command) -> String {
    cmd.get_args()
        .skip(3)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `0..n`, reversed on odd repetitions: each server (or variant) runs
/// first as often as last, so drift in the machine does not favour one.
fn alternating(n: usize, rep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if rep % 2 == 1 {
        order.reverse();
    }
    order
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `cargo xtask bench ARGS`.
pub fn run_bench(paths: &Paths, argv: &[String]) -> Result<()> {
    if argv.iter().any(|a| a == "--smoke") {
        return smoke(paths);
    }
    let o = parse(argv)?;
    raise_nofile();
    let pinned = capture(
        Command::new("taskset").args(["-c", "1", "true"]),
        Duration::from_secs(10),
    );
    if !pinned.is_ok_and(|o| o.status.success()) {
        bail!("taskset (util-linux) is needed to pin the processes");
    }
    let bins = build(paths)?;
    let servers: Vec<&Server> = SERVERS
        .iter()
        .filter(|s| {
            o.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == s.name))
        })
        .collect();
    let work = workloads(&o);
    let logs = paths.target.join("bench");
    std::fs::create_dir_all(&logs)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    // samples[workload][server] = one Sample per repetition.
    let mut samples = vec![vec![Vec::<Sample>::new(); servers.len()]; work.len()];
    let mut commands: Vec<String> = Vec::new();
    for rep in 0..o.reps {
        for (wi, w) in work.iter().enumerate() {
            let order = alternating(servers.len(), rep);
            for si in order {
                let s = servers[si];
                let log = logs.join(format!("{}.log", s.name));
                let running = start(paths, &bins, s, &log)?;
                let (sample, shown) = measure(&bins, w, s, &running)
                    .with_context(|| format!("{} on {}", w.label, s.name))?;
                drop(running);
                println!(
                    "    rep {} {:<48} {:<26} {:>10.0}/s p50 {:>7.1} µs p99 {:>7.1} µs{}",
                    rep + 1,
                    w.label,
                    s.label,
                    sample.rate,
                    sample.p50,
                    sample.p99,
                    if w.mode == "connections" {
                        format!(
                            " {:.2} KiB/conn {:.1} µs CPU/handshake",
                            sample.rss_kib, sample.cpu_us
                        )
                    } else {
                        String::new()
                    }
                );
                if rep == 0 {
                    commands.push(format!("taskset -c 1 {shown}"));
                }
                samples[wi][si].push(sample);
            }
        }
    }
    let mut sections = String::new();
    for name in &o.sections {
        let text = match name.as_str() {
            "compressed" => {
                // Node `ws` and Python `websockets` come from the test tools.
                crate::tools::prepare(paths)?;
                compressed::section(paths, &bins, o.reps, o.seconds)?
            }
            "fanout" => fanout::section(paths, &bins, o.reps, o.seconds)?,
            "tls" => tls::section(paths, &bins, o.reps, o.seconds)?,
            "http2" => http2::section(paths, &bins, o.reps, o.seconds)?,
            "allocator" => allocator::section(paths, &bins, o.reps, o.connections)?,
            _ => transfer::section(paths, &bins, o.reps, o.transfer_size)?,
        };
        sections.push_str(&text);
        sections.push('\n');
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = format!(
        "{}\nThe server's CPU time per message, as a share of the TCP echo's in the same run (lower is better; medians):\n\n{}",
        table(&work, &servers, &samples),
        cpu_table(&work, &servers, &samples)
    );
    println!("\n{table}\n{sections}");
    let svg = throughput_svg(&work, &servers, &samples);
    let out_dir = paths.target.join("bench");
    std::fs::write(out_dir.join("table.md"), &table)?;
    if o.write_doc {
        let docs = paths.root.join("docs");
        std::fs::create_dir_all(docs.join("performance"))?;
        std::fs::write(docs.join("performance").join("throughput.svg"), &svg)?;
        let path = docs.join("performance.md");
        let mut doc = document(
            &o,
            &table,
            &sections,
            &commands,
            &load_before,
            &load_after,
            started.elapsed(),
        );
        // Hand-written notes (profiles, micro-benchmarks) survive a new run.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(at) = old.find(NOTES) {
            doc.push('\n');
            doc.push_str(&old[at..]);
        }
        std::fs::write(&path, doc)?;
        println!("wrote docs/performance.md and docs/performance/throughput.svg");
    }
    Ok(())
}

/// A table's head: `first`, then a column per server.
fn table_head(first: &str, servers: &[&Server]) -> String {
    let mut t = format!("| {first} |");
    for s in servers {
        let _ = write!(t, " {} |", s.label);
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(servers.len()));
    t.push('\n');
    t
}

fn table(work: &[Workload], servers: &[&Server], samples: &[Vec<Vec<Sample>>]) -> String {
    let mut t = table_head("workload", servers);
    let tcp = servers.iter().position(|s| s.name == "tcp");
    for (wi, w) in work.iter().enumerate() {
        let _ = write!(t, "| {} |", w.label);
        let med =
            |si: usize, f: fn(&Sample) -> f64| median(samples[wi][si].iter().map(f).collect());
        for si in 0..servers.len() {
            let cell = match w.mode {
                "echo" => {
                    let rate = med(si, |s| s.rate);
                    match tcp {
                        Some(ti) => format!(
                            "{:.0}% ({})",
                            100.0 * rate / med(ti, |s| s.rate),
                            human(rate)
                        ),
                        None => human(rate),
                    }
                }
                "latency" => format!("{:.1} / {:.1} µs", med(si, |s| s.p50), med(si, |s| s.p99)),
                _ => format!(
                    "{:.2} KiB, {:.0} µs CPU",
                    med(si, |s| s.rss_kib),
                    med(si, |s| s.cpu_us)
                ),
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}

/// The server's CPU time per echoed message, as a share of the TCP echo's
/// in the same run (lower is better), with the figure and how busy the
/// server was: a server below 100% busy was not the bottleneck, so its
/// throughput share says little, while its CPU per message still does.
fn cpu_table(work: &[Workload], servers: &[&Server], samples: &[Vec<Vec<Sample>>]) -> String {
    let mut t = table_head("server CPU per message", servers);
    let tcp = servers.iter().position(|s| s.name == "tcp");
    for (wi, w) in work.iter().enumerate() {
        if !matches!(w.mode, "echo" | "latency") {
            continue;
        }
        let _ = write!(t, "| {} |", w.label);
        let med =
            |si: usize, f: fn(&Sample) -> f64| median(samples[wi][si].iter().map(f).collect());
        for si in 0..servers.len() {
            let us = med(si, |s| s.cpu_us_per_msg);
            let busy = med(si, |s| s.busy_pct);
            let share = tcp.map(|ti| 100.0 * us / med(ti, |s| s.cpu_us_per_msg));
            let cell = match share {
                Some(share) => format!("{share:.0}% ({us:.2} µs, {busy:.0}% busy)"),
                None => format!("{us:.2} µs, {busy:.0}% busy"),
            };
            let _ = write!(t, " {cell} |");
        }
        t.push('\n');
    }
    t
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// Grouped bars: each echo workload's throughput per server, as % of TCP.
fn throughput_svg(work: &[Workload], servers: &[&Server], samples: &[Vec<Vec<Sample>>]) -> String {
    const COLORS: [&str; 5] = ["#6b7280", "#2563eb", "#0891b2", "#16a34a", "#dc2626"];
    let Some(tcp) = servers.iter().position(|s| s.name == "tcp") else {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n");
    };
    let echo: Vec<usize> = (0..work.len())
        .filter(|&i| work[i].mode == "echo")
        .collect();
    let bar_h = 14.0;
    let group_h = bar_h * servers.len() as f64 + 24.0;
    let (left, width) = (300.0, 820.0);
    let height = 60.0 + group_h * echo.len() as f64 + 16.0 * servers.len() as f64;
    let scale = (width - left - 80.0) / 120.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"4\" y=\"16\" font-weight=\"bold\">Echo throughput as % of a plain TCP echo (medians)</text>\n\
         <line x1=\"{x}\" y1=\"24\" x2=\"{x}\" y2=\"{y2}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n\
         <text x=\"{x}\" y=\"{y3}\" text-anchor=\"middle\">100%</text>\n",
        x = left + 100.0 * scale,
        y2 = 30.0 + group_h * echo.len() as f64,
        y3 = 42.0 + group_h * echo.len() as f64,
    );
    for (g, &wi) in echo.iter().enumerate() {
        let y0 = 30.0 + group_h * g as f64;
        let _ = writeln!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y0 + 12.0,
            work[wi].label
        );
        let base = median(samples[wi][tcp].iter().map(|s| s.rate).collect());
        for si in 0..servers.len() {
            let rate = median(samples[wi][si].iter().map(|s| s.rate).collect());
            let pct = 100.0 * rate / base;
            let y = y0 + 18.0 + bar_h * si as f64;
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{pct:.0}%</text>",
                (pct.min(120.0) * scale).max(0.0),
                bar_h - 2.0,
                COLORS[si % COLORS.len()],
                left + pct.min(120.0) * scale + 4.0,
                y + bar_h - 4.0
            );
        }
    }
    let ly = 50.0 + group_h * echo.len() as f64;
    for (si, s) in servers.iter().enumerate() {
        let y = ly + 16.0 * si as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            COLORS[si % COLORS.len()],
            left + 18.0,
            y + 10.0,
            s.label
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn machine() -> String {
    let lscpu = Command::new("lscpu")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let keep = [
        "Architecture",
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "CPU max MHz",
        "L2 cache",
        "L3 cache",
        "Hypervisor vendor",
    ];
    let mut out: Vec<String> = lscpu
        .lines()
        .filter(|l| keep.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let kernel = Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.push(format!("Kernel: {kernel}"));
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.push(format!("Compiler: {rustc}"));
    out.iter().map(|l| format!("- {l}\n")).collect()
}

fn document(
    o: &Options,
    table: &str,
    sections: &str,
    commands: &[String],
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> String {
    let mut d = String::from("# Performance\n\n");
    let _ = write!(
        d,
        "Written by `cargo xtask bench{}` ({} repetition(s) of {} s per workload and server; the run took {:.0} s). \
         Every server runs on a single-threaded tokio runtime pinned to CPU 0 (`taskset -c 0`); the load generator, \
         `duplex bench`, is pinned to CPU 1 and validates every echo. Servers are started fresh for each measurement and \
         alternated within each repetition; each cell is the median over the repetitions. Echo rows are throughput as a \
         share of the plain TCP echo (the practical ceiling: same reads and writes, no framing), with messages/s in \
         parentheses; the latency row is p50 / p99 round trip; the last row is the server's RSS growth per idle connection \
         and its CPU time per handshake (from `/proc`). `duplex serve /echo` is the full server (its own accept loop takes WebSocket upgrades to /echo and /ws without hyper; multi-threaded \
         runtime confined to one CPU).\n\n",
        if o.quick { " --quick" } else { "" },
        o.reps,
        o.seconds,
        took.as_secs_f64()
    );
    d.push_str(
        "Runs on this shared machine vary by about ±15%: compare within one run, as ratios.\n\n",
    );
    d.push_str(table);
    d.push_str("\n![Echo throughput as a share of TCP](performance/throughput.svg)\n\n");
    d.push_str(sections);
    d.push_str("\n## Machine\n\n");
    d.push_str(&machine());
    let _ = write!(
        d,
        "- Load average (1, 5, 15 min) before: {}; after: {}\n\n",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    d.push_str("## Commands\n\nServers (`bench/`, built with `cargo build --release --manifest-path bench/Cargo.toml`):\n\n```sh\n");
    d.push_str("taskset -c 0 bench-echo tcp|duplex|tungstenite|fastwebsockets --port PORT\ntaskset -c 0 duplex serve --bind 127.0.0.1:PORT --data DIR\n```\n\nLoad, per server (`--mirror` for the TCP echo, which returns the masked frames as they are; `--server-pid` is the server's):\n\n```sh\n");
    let mut seen = std::collections::BTreeSet::new();
    for c in commands {
        let generic: String = c
            .split_whitespace()
            .map(|w| {
                if w.starts_with("ws://") {
                    "ws://127.0.0.1:PORT/"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        if seen.insert(generic.clone()) {
            d.push_str(&generic);
            d.push('\n');
        }
    }
    d.push_str("```\n\nEach `duplex bench` mode also takes `--html FILE` for a page with its latency distribution and throughput charts.\n");
    d
}

/// The `bench smoke` stage of `cargo xtask test`: `duplex bench echo` against
/// `duplex serve` for about two seconds at small scale; fails unless it
/// completes with zero errors and plausible JSON.
pub fn smoke(paths: &Paths) -> Result<()> {
    let duplex = paths.target.join("release").join("duplex");
    if !duplex.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(
            paths
                .command(&cargo)
                .args(["build", "--release", "--bin", "duplex"]),
            Duration::from_secs(1800),
        )?;
    }
    let dir = paths.target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = dir.join("smoke-data");
    let _ = std::fs::remove_dir_all(&data);
    let log = dir.join("smoke-serve.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(&duplex)
        .args(["serve", "--bind", &addr.to_string(), "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .context("cannot start duplex serve")?;
    let mut server = Running {
        child,
        addr,
        _data: Some(data),
    };
    let t = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if server.child.try_wait()?.is_some() || t.elapsed() > Duration::from_secs(20) {
            bail!("duplex serve did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("ws://{addr}/echo");
    let pid = server.child.id().to_string();
    // Over HTTP/1.1, then with the sockets as streams of one HTTP/2
    // connection (h2c here).
    for extra in [&[][..], &["--http2"][..]] {
        let mut cmd = Command::new(&duplex);
        cmd.args([
            "bench",
            "echo",
            &url,
            "-c",
            "4",
            "-p",
            "4",
            "-s",
            "1k",
            "-d",
            "2s",
            "--json",
            "--server-pid",
            &pid,
        ])
        .args(extra);
        println!("$ {} {}", duplex.display(), cmd_args_all(&cmd));
        let v = bench_report(&mut cmd, Duration::from_secs(60), "duplex bench echo")?;
        check_echo_smoke(&v)?;
    }

    // The transfer mode: every run moves every byte and checks it.
    let mut cmd = Command::new(&duplex);
    let url = format!("ws://{addr}/files");
    cmd.args(["bench", "transfer", &url, "--size", "16m", "--json"]);
    println!("$ {} {}", duplex.display(), cmd_args_all(&cmd));
    let v = bench_report(&mut cmd, Duration::from_secs(120), "duplex bench transfer")?;
    let rows = v["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    if v["errors"] != 0
        || rows.len() != 3
        || rows
            .iter()
            .any(|r| r["bytes"] != 16 << 20 || r["ops"] != 16 || r["errors"] != 0)
    {
        bail!("implausible transfer report: {v}");
    }
    for r in rows {
        println!(
            "    {}: {:.0} MB/s",
            r["name"].as_str().unwrap_or("?"),
            r["mb_per_sec"].as_f64().unwrap_or(0.0)
        );
    }
    drop(server);
    Ok(())
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn cmd_args_all(cmd: &Command) -> String {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn workloads_filter_keeps_only_the_chosen_rows_and_spares_the_doc() {
        let o = parse(&args(&["--workloads", "connections", "--quick"])).unwrap();
        let w = workloads(&o);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].mode, "connections");
        assert_eq!(w[0].label, "2000 idle connections");
        assert!(!o.write_doc, "a partial table must not replace the doc's");
        let all = parse(&[]).unwrap();
        assert_eq!(workloads(&all).len(), 6);
        assert!(all.write_doc);
        let two = parse(&args(&["--workloads", "latency,echo"])).unwrap();
        assert_eq!(workloads(&two).len(), 5);
    }

    #[test]
    fn unknown_workloads_and_servers_are_refused() {
        assert!(parse(&args(&["--workloads", "conections"])).is_err());
        assert!(parse(&args(&["--only", "dupelx"])).is_err());
        assert!(parse(&args(&["--only", "duplex,duplex-serve"])).is_ok());
    }

    #[test]
    fn sections_run_all_by_default_or_as_chosen() {
        assert_eq!(parse(&[]).unwrap().sections, SECTIONS.to_vec());
        let one = parse(&args(&["--sections", "allocator"])).unwrap();
        assert_eq!(one.sections, ["allocator"]);
        assert!(
            parse(&args(&["--sections", "none"]))
                .unwrap()
                .sections
                .is_empty()
        );
        let err = parse(&args(&["--sections", "allocater"])).err().unwrap();
        assert!(err.to_string().contains("allocator"), "{err}");
    }
}
