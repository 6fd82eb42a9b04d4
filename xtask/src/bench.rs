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

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::Paths;
use crate::process::{capture, free_port, run};

mod allocator;
mod compressed;
mod document;
mod fanout;
mod http2;
mod measure;
mod plan;
mod scp;
mod servers;
mod tls;
mod transfer;

use document::*;
use measure::*;
use plan::*;
use servers::*;

/// Runs `cargo xtask bench ARGS`.
pub fn run_bench(paths: &Paths, argv: &[String]) -> Result<()> {
    if argv.iter().any(|a| a == "--smoke") {
        return smoke(paths);
    }
    let o = parse(argv)?;
    raise_nofile();
    require_taskset()?;
    let bins = build(paths)?;
    let servers = chosen_servers(&o);
    let work = workloads(&o);
    let logs = paths.target.join("bench");
    std::fs::create_dir_all(&logs)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let Measurements { samples, commands } = measure_all(paths, &bins, o.reps, &work, &servers)?;
    let sections = run_sections(paths, &bins, &o)?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let table = main_table(&work, &servers, &samples);
    println!("\n{table}\n{sections}");
    let svg = throughput_svg(&work, &servers, &samples);
    std::fs::write(logs.join("table.md"), &table)?;
    if o.write_doc {
        let run = Run {
            table,
            sections,
            commands,
            load_before,
            load_after,
            took: started.elapsed(),
        };
        write_doc(paths, &o, &run, &svg)?;
    }
    Ok(())
}

/// Fails unless `taskset` can pin a process to CPU 1.
fn require_taskset() -> Result<()> {
    let pinned = capture(
        Command::new("taskset").args(["-c", "1", "true"]),
        Duration::from_secs(10),
    );
    if !pinned.is_ok_and(|o| o.status.success()) {
        bail!("taskset (util-linux) is needed to pin the processes");
    }
    Ok(())
}

/// The servers `--only` keeps, in the order of [`SERVERS`].
fn chosen_servers(o: &Options) -> Vec<&'static Server> {
    SERVERS
        .iter()
        .filter(|s| {
            o.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == s.name))
        })
        .collect()
}

/// What the main table is made of.
struct Measurements {
    /// `samples[workload][server]` = one Sample per repetition.
    samples: Vec<Vec<Vec<Sample>>>,
    /// The load generator's commands in the first repetition, as the doc
    /// shows them.
    commands: Vec<String>,
}

/// Every repetition of every workload on every server.
fn measure_all(
    paths: &Paths,
    bins: &Bins,
    reps: usize,
    work: &[Workload],
    servers: &[&Server],
) -> Result<Measurements> {
    let logs = paths.target.join("bench");
    // samples[workload][server] = one Sample per repetition.
    let mut samples = vec![vec![Vec::<Sample>::new(); servers.len()]; work.len()];
    let mut commands: Vec<String> = Vec::new();
    for rep in 0..reps {
        for (wi, w) in work.iter().enumerate() {
            let order = alternating(servers.len(), rep);
            for si in order {
                let s = servers[si];
                let log = logs.join(format!("{}.log", s.name));
                let running = start(paths, bins, s, &log)?;
                let (sample, shown) = measure(bins, w, s, &running)
                    .with_context(|| format!("{} on {}", w.label, s.name))?;
                drop(running);
                println!("{}", sample_line(rep, w, s, &sample));
                if rep == 0 {
                    commands.push(format!("taskset -c 1 {shown}"));
                }
                samples[wi][si].push(sample);
            }
        }
    }
    Ok(Measurements { samples, commands })
}

/// The progress line for one measurement.
fn sample_line(rep: usize, w: &Workload, s: &Server, sample: &Sample) -> String {
    format!(
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
    )
}

/// The sections `--sections` chose, in order, each followed by a blank line.
fn run_sections(paths: &Paths, bins: &Bins, o: &Options) -> Result<String> {
    let mut sections = String::new();
    for name in &o.sections {
        sections.push_str(&run_section(paths, bins, o, name)?);
        sections.push('\n');
    }
    Ok(sections)
}

fn run_section(paths: &Paths, bins: &Bins, o: &Options, name: &str) -> Result<String> {
    match name {
        "compressed" => {
            // Node `ws` and Python `websockets` come from the test tools.
            crate::tools::prepare(paths)?;
            compressed::section(paths, bins, o.reps, o.seconds)
        }
        "fanout" => fanout::section(paths, bins, o.reps, o.seconds),
        "tls" => tls::section(paths, bins, o.reps, o.seconds),
        "http2" => http2::section(paths, bins, o.reps, o.seconds),
        "allocator" => allocator::section(paths, bins, o.reps, o.connections),
        _ => transfer::section(paths, bins, o.reps, o.transfer_size),
    }
}

/// The main table and, under it, the servers' CPU time per message.
fn main_table(work: &[Workload], servers: &[&Server], samples: &[Vec<Vec<Sample>>]) -> String {
    format!(
        "{}\nThe server's CPU time per message, as a share of the TCP echo's in the same run (lower is better; medians):\n\n{}",
        table(work, servers, samples),
        cpu_table(work, servers, samples)
    )
}

/// What a run produced for docs/performance.md besides the chart.
struct Run {
    table: String,
    sections: String,
    commands: Vec<String>,
    load_before: String,
    load_after: String,
    took: Duration,
}

/// Writes docs/performance.md (keeping its hand-written notes) and the
/// throughput chart.
fn write_doc(paths: &Paths, o: &Options, run: &Run, svg: &str) -> Result<()> {
    let docs = paths.root.join("docs");
    std::fs::create_dir_all(docs.join("performance"))?;
    std::fs::write(docs.join("performance").join("throughput.svg"), svg)?;
    let path = docs.join("performance.md");
    let mut doc = document(
        o,
        &run.table,
        &run.sections,
        &run.commands,
        &run.load_before,
        &run.load_after,
        run.took,
    );
    // Hand-written notes (profiles, micro-benchmarks) survive a new run.
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(at) = old.find(NOTES) {
        doc.push('\n');
        doc.push_str(&old[at..]);
    }
    std::fs::write(&path, doc)?;
    println!("wrote docs/performance.md and docs/performance/throughput.svg");
    Ok(())
}

/// The `bench smoke` stage of `cargo xtask test`: `duplex bench echo` against
/// `duplex serve` for about two seconds at small scale; fails unless it
/// completes with zero errors and plausible JSON.
pub fn smoke(paths: &Paths) -> Result<()> {
    let duplex = release_duplex(paths)?;
    let dir = paths.target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let server = start_smoke_serve(&duplex, &dir)?;
    smoke_echo(&duplex, &server)?;
    smoke_transfer(&duplex, server.addr, server.child.id())?;
    let hub = format!("ws://{}/ws", server.addr);
    smoke_fanout(&duplex, &hub, server.child.id(), &[])?;
    // One publisher over the hub with publishes in flight, answered in
    // order and delivered in order.
    smoke_fanout(
        &duplex,
        &hub,
        server.child.id(),
        &["--via", "hub", "--in-flight", "64"],
    )?;
    drop(server);
    // The peer row of the fan-out section: Socket.IO, spoken by the same
    // generator.
    let port = free_port()?;
    let mut node = Command::new("node");
    node.arg(paths.peers.join("socketio_hub.js"))
        .args(["--port", &port.to_string()])
        .env("NODE_PATH", paths.node_modules());
    let socket_io = start_script(node, port, "the Socket.IO server")?;
    let url = format!("ws://{}/", socket_io.addr);
    smoke_fanout(
        &duplex,
        &url,
        socket_io.child.id(),
        &["--protocol", "socket.io"],
    )?;
    Ok(())
}

/// `duplex bench fanout`, 50 subscribers, flat out for a second: every
/// subscriber must get every publication, in order, and the server's CPU
/// is reported.
fn smoke_fanout(duplex: &Path, url: &str, pid: u32, extra: &[&str]) -> Result<()> {
    let mut cmd = Command::new(duplex);
    cmd.args([
        "bench", "fanout", url, "-n", "50", "-r", "0", "-d", "1s", "--json",
    ])
    .args(["--server-pid", &pid.to_string()])
    .args(extra);
    println!("$ {} {}", duplex.display(), cmd_args_all(&cmd));
    let v = bench_report(&mut cmd, Duration::from_secs(60), "duplex bench fanout")?;
    let row = &v["rows"][0];
    let publications = row["extra"]["publications"].as_f64().unwrap_or(0.0);
    let deliveries = row["ops"].as_f64().unwrap_or(0.0);
    let cpu_us = row["extra"]["server_cpu_us_per_delivery"]
        .as_f64()
        .unwrap_or(0.0);
    if v["errors"] != 0 || row["errors"] != 0 || publications < 1.0 {
        bail!("implausible fanout report: {v}");
    }
    if deliveries != 50.0 * publications || cpu_us <= 0.0 {
        bail!("every subscriber must get every publication, with the server's CPU: {v}");
    }
    println!(
        "    {}: {publications} publications, {deliveries} deliveries, 0 errors; the server's CPU {cpu_us:.2} µs per delivery",
        row["name"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// The release `duplex`, built if it is missing.
fn release_duplex(paths: &Paths) -> Result<PathBuf> {
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
    Ok(duplex)
}

/// `duplex serve` on a free loopback port with a fresh data directory in
/// `dir`, once it accepts connections.
fn start_smoke_serve(duplex: &Path, dir: &Path) -> Result<Running> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = dir.join("smoke-data");
    let _ = std::fs::remove_dir_all(&data);
    let log = dir.join("smoke-serve.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(duplex)
        .args(["serve", "--bind", &addr.to_string(), "--data"])
        .arg(&data)
        // A publisher over the hub sends more commands than a person.
        .args(["--rate-limit", "1000000", "--rate-burst", "1000000"])
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
    Ok(server)
}

/// `duplex bench echo` against `/echo`, with the server's CPU time.
fn smoke_echo(duplex: &Path, server: &Running) -> Result<()> {
    let url = format!("ws://{}/echo", server.addr);
    let pid = server.child.id().to_string();
    // Over HTTP/1.1, then with the sockets as streams of one HTTP/2
    // connection (h2c here).
    for extra in [&[][..], &["--http2"][..]] {
        let mut cmd = Command::new(duplex);
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
    Ok(())
}

/// The transfer mode: every run moves every byte and checks it.
fn smoke_transfer(duplex: &Path, addr: SocketAddr, pid: u32) -> Result<()> {
    let mut cmd = Command::new(duplex);
    let url = format!("ws://{addr}/files");
    cmd.args(["bench", "transfer", &url, "--size", "16m", "--json"])
        .args(["--server-pid", &pid.to_string()]);
    println!("$ {} {}", duplex.display(), cmd_args_all(&cmd));
    let v = bench_report(&mut cmd, Duration::from_secs(120), "duplex bench transfer")?;
    let rows = v["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    let relay_cpu = |r: &serde_json::Value| r["extra"]["server_cpu_us_per_mib"].as_f64();
    if v["errors"] != 0
        || rows.len() != 3
        || rows
            .iter()
            .any(|r| r["bytes"] != 16 << 20 || r["ops"] != 16 || r["errors"] != 0)
    {
        bail!("implausible transfer report: {v}");
    }
    // The relay's CPU per MiB in the two relayed runs, not in the TCP copy
    // (the generator's own).
    if relay_cpu(&rows[0]).is_some() || !rows[1..].iter().all(|r| relay_cpu(r) > Some(0.0)) {
        bail!("the relay's CPU per MiB belongs to the relayed runs alone: {v}");
    }
    for r in rows {
        let cpu = relay_cpu(r).map_or(String::new(), |us| {
            format!(", the relay's CPU {us:.0} µs per MiB")
        });
        println!(
            "    {}: {:.0} MB/s{cpu}",
            r["name"].as_str().unwrap_or("?"),
            r["mb_per_sec"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
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
        assert_eq!(workloads(&all).len(), 7);
        assert!(all.write_doc);
        let two = parse(&args(&["--workloads", "latency,echo"])).unwrap();
        assert_eq!(workloads(&two).len(), 6);
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
