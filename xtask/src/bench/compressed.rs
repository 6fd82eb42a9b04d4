//! The permessage-deflate section of `cargo xtask bench`: compressed echo
//! through Duplex (`bench-echo duplex` and `duplex serve`'s `/echo`), Node
//! `ws` and Python `websockets`, each with compression on, pinned to CPU 0
//! and loaded by `duplex bench echo --compress` on CPU 1.
//!
//! The client negotiates no context takeover either way, so every message is
//! compressed on its own and every echo is inflated and checked. Node and
//! Python run the peer scripts of `tests/peers/` with the tools `cargo xtask
//! tools` installs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{
    Bins, Running, SERVERS, Sample, Script, alternating, bench_report, median, start, start_script,
};
use crate::Paths;
use crate::process::free_port;

/// The servers of this section: (name, how the table names it).
const PEERS: [(&str, &str); 4] = [
    ("duplex", "Duplex (accept)"),
    ("duplex-serve", "duplex serve /echo"),
    ("node-ws", "Node ws 8"),
    ("python-websockets", "Python websockets"),
];

/// (label, connections, in flight, size) of a row.
type Row = (&'static str, u32, u32, &'static str);

/// The rows of the table.
const WORKLOADS: [Row; 2] = [
    (
        "100 connections, 1 in flight, 4 KiB JSON text",
        100,
        1,
        "4k",
    ),
    (
        "100 connections, 16 in flight, 256 B JSON text (pipelined)",
        100,
        16,
        "256",
    ),
];

fn start_echo_script(paths: &Paths, name: &str) -> Result<Script> {
    let port = free_port()?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    match name {
        "node-ws" => cmd
            .arg("node")
            .arg(paths.peers.join("node_echo_server.js"))
            .env("NODE_PATH", paths.node_modules()),
        _ => cmd
            .arg(paths.venv_python())
            .arg(paths.peers.join("py_echo_server.py")),
    };
    cmd.args(["--port", &port.to_string(), "--compress", "on"]);
    start_script(cmd, port, &format!("the {name} echo server"))
}

/// Either kind of started server.
enum Started {
    Bench(Running),
    Script(Script),
}

impl Started {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Bench(r) => r.addr,
            Self::Script(s) => s.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Bench(r) => r.child.id(),
            Self::Script(s) => s.child.id(),
        }
    }
}

/// Runs `reps` repetitions of `seconds` per workload and server; returns
/// the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    // samples[workload][server] = one per repetition.
    let mut samples = vec![vec![Vec::<Sample>::new(); PEERS.len()]; WORKLOADS.len()];
    let mut shown = String::new();
    for rep in 0..reps {
        for (wi, row) in WORKLOADS.iter().enumerate() {
            for si in alternating(PEERS.len(), rep) {
                let (name, peer_label) = PEERS[si];
                if rep == 0 && si == 0 {
                    let _ = writeln!(shown, "{}", shown_command(row, seconds));
                }
                let sample = compressed_echo(paths, bins, name, row, seconds)?;
                println!(
                    "    rep {} {:<58} {peer_label:<20} {:>10.0}/s, server {:.2} µs/msg (deflate)",
                    rep + 1,
                    row.0,
                    sample.rate,
                    sample.cpu_us_per_msg
                );
                samples[wi][si].push(sample);
            }
        }
    }
    let medians: Vec<Vec<Cell>> = samples
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| {
                    let med = |f: fn(&Sample) -> f64| median(cell.iter().map(f).collect());
                    Cell {
                        rate: med(|s| s.rate),
                        cpu_us: med(|s| s.cpu_us_per_msg),
                        busy: med(|s| s.busy_pct),
                    }
                })
                .collect()
        })
        .collect();
    Ok(markdown(reps, seconds, &shown, &medians))
}

/// A server's medians in one row: messages/s, its CPU per message (µs) and
/// how busy it was (% of a core).
#[derive(Clone, Copy)]
struct Cell {
    rate: f64,
    cpu_us: f64,
    busy: f64,
}

/// Starts the server `name` (a bench server or a peer script) on CPU 0.
fn start_peer(paths: &Paths, bins: &Bins, name: &str) -> Result<Started> {
    let log = paths
        .target
        .join("bench")
        .join(format!("{name}-deflate.log"));
    Ok(match SERVERS.iter().find(|s| s.name == name) {
        Some(s) => Started::Bench(start(paths, bins, s, &log)?),
        None => Started::Script(start_echo_script(paths, name)?),
    })
}

/// One compressed echo run of `row` against a fresh `name`.
fn compressed_echo(
    paths: &Paths,
    bins: &Bins,
    name: &str,
    row: &Row,
    seconds: u64,
) -> Result<Sample> {
    let &(_, c, p, size) = row;
    let server = start_peer(paths, bins, name)?;
    let path = if name == "duplex-serve" { "/echo" } else { "/" };
    let url = format!("ws://{}{path}", server.addr());
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"]).arg(&bins.duplex).args([
        "bench",
        "echo",
        &url,
        "--compress",
        "--text",
        "--json",
        "-c",
        &c.to_string(),
        "-p",
        &p.to_string(),
        "-s",
        size,
        "-d",
        &format!("{seconds}s"),
        "--server-pid",
        &server.pid().to_string(),
    ]);
    let v = bench_report(
        &mut cmd,
        Duration::from_secs(600),
        &format!("compressed echo on {name}"),
    )?;
    drop(server);
    Ok(Sample::from_report(&v))
}

/// The load generator's command for `row`, as the section shows it.
fn shown_command(&(_, c, p, size): &Row, seconds: u64) -> String {
    format!(
        "taskset -c 1 duplex bench echo ws://127.0.0.1:PORT/ --compress --text --json -c {c} -p {p} -s {size} -d {seconds}s"
    )
}

/// The section, from the commands `shown` and the medians
/// (`medians[workload][server]`, servers in the order of [`PEERS`]).
fn markdown(reps: usize, seconds: u64, shown: &str, medians: &[Vec<Cell>]) -> String {
    let mut t = format!(
        "## Compressed echo (permessage-deflate)\n\n\
         Every server with compression on, pinned to CPU 0; `duplex bench echo --compress` on CPU 1 offers \
         permessage-deflate without context takeover either way, sends JSON-like text compressed and inflates \
         and checks every echo. Node `ws` and Python `websockets` run `tests/peers/node_echo_server.js` and \
         `tests/peers/py_echo_server.py --compress on`. Messages/s, medians of {reps} repetition(s) of {seconds} s, \
         and the share of Duplex (accept); then the server's CPU time per message (compression included) and \
         how busy it was (100% = one core: the server saturated).\n\n```sh\n{shown}```\n\n| workload |"
    );
    for (_, label) in PEERS {
        let _ = write!(t, " {label} |");
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(PEERS.len()));
    t.push('\n');
    for ((label, ..), cells) in WORKLOADS.iter().zip(medians) {
        t.push_str(&table_row(label, cells));
    }
    t
}

/// A workload's row: each server's rate and its share of the first's, its
/// CPU per message and how busy it was.
fn table_row(label: &str, cells: &[Cell]) -> String {
    let mut t = format!("| {label} |");
    let base = cells[0].rate;
    for c in cells {
        let _ = write!(
            t,
            " {:.0}/s ({:.0}%); {:.1} µs, {:.0}% busy |",
            c.rate,
            100.0 * c.rate / base,
            c.cpu_us,
            c.busy
        );
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_rates_and_shares_of_the_first_server() {
        let shown: String = WORKLOADS
            .iter()
            .map(|row| shown_command(row, 5) + "\n")
            .collect();
        let cells = |rates: [f64; 4]| -> Vec<Cell> {
            rates
                .iter()
                .map(|&rate| Cell {
                    rate,
                    cpu_us: 1e6 / rate,
                    busy: 99.0,
                })
                .collect()
        };
        let medians = [
            cells([51000.0, 40000.0, 20000.0, 10000.0]),
            cells([151000.0, 120000.0, 60000.0, 20000.0]),
        ];
        let t = markdown(3, 5, &shown, &medians);
        assert!(
            t.starts_with("## Compressed echo (permessage-deflate)\n\n"),
            "{t}"
        );
        assert!(
            t.contains(concat!(
                "medians of 3 repetition(s) of 5 s, and the share of Duplex (accept); then the server's CPU time \
                 per message (compression included) and how busy it was (100% = one core: the server \
                 saturated).\n\n```sh\n",
                "taskset -c 1 duplex bench echo ws://127.0.0.1:PORT/ --compress --text --json -c 100 -p 1 -s 4k -d 5s\n",
                "taskset -c 1 duplex bench echo ws://127.0.0.1:PORT/ --compress --text --json -c 100 -p 16 -s 256 -d 5s\n",
                "```\n\n",
            )),
            "{t}"
        );
        let table = &t[t.find("| workload |").expect("a table")..];
        assert_eq!(
            table,
            concat!(
                "| workload | Duplex (accept) | duplex serve /echo | Node ws 8 | Python websockets |\n",
                "|---|---|---|---|---|\n",
                "| 100 connections, 1 in flight, 4 KiB JSON text | 51000/s (100%); 19.6 µs, 99% busy | 40000/s (78%); 25.0 µs, 99% busy | 20000/s (39%); 50.0 µs, 99% busy | 10000/s (20%); 100.0 µs, 99% busy |\n",
                "| 100 connections, 16 in flight, 256 B JSON text (pipelined) | 151000/s (100%); 6.6 µs, 99% busy | 120000/s (79%); 8.3 µs, 99% busy | 60000/s (40%); 16.7 µs, 99% busy | 20000/s (13%); 50.0 µs, 99% busy |\n",
            )
        );
    }
}
