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
    Bins, Running, SERVERS, Script, alternating, bench_report, median, start, start_script,
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
}

/// Runs `reps` repetitions of `seconds` per workload and server; returns
/// the markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    // rates[workload][server] = messages/s per repetition.
    let mut rates = vec![vec![Vec::<f64>::new(); PEERS.len()]; WORKLOADS.len()];
    let mut shown = String::new();
    for rep in 0..reps {
        for (wi, row) in WORKLOADS.iter().enumerate() {
            for si in alternating(PEERS.len(), rep) {
                let (name, peer_label) = PEERS[si];
                if rep == 0 && si == 0 {
                    let _ = writeln!(shown, "{}", shown_command(row, seconds));
                }
                let rate = echo_rate(paths, bins, name, row, seconds)?;
                println!(
                    "    rep {} {:<58} {peer_label:<20} {rate:>10.0}/s (deflate)",
                    rep + 1,
                    row.0
                );
                rates[wi][si].push(rate);
            }
        }
    }
    let medians: Vec<Vec<f64>> = rates
        .iter()
        .map(|row| row.iter().map(|cell| median(cell.clone())).collect())
        .collect();
    Ok(markdown(reps, seconds, &shown, &medians))
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

/// Messages/s of one compressed echo run of `row` against a fresh `name`.
fn echo_rate(paths: &Paths, bins: &Bins, name: &str, row: &Row, seconds: u64) -> Result<f64> {
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
    ]);
    let v = bench_report(
        &mut cmd,
        Duration::from_secs(600),
        &format!("compressed echo on {name}"),
    )?;
    drop(server);
    Ok(v["rows"][0]["ops_per_sec"].as_f64().unwrap_or(0.0))
}

/// The load generator's command for `row`, as the section shows it.
fn shown_command(&(_, c, p, size): &Row, seconds: u64) -> String {
    format!(
        "taskset -c 1 duplex bench echo ws://127.0.0.1:PORT/ --compress --text --json -c {c} -p {p} -s {size} -d {seconds}s"
    )
}

/// The section, from the commands `shown` and the median rates
/// (`medians[workload][server]`, servers in the order of [`PEERS`]).
fn markdown(reps: usize, seconds: u64, shown: &str, medians: &[Vec<f64>]) -> String {
    let mut t = format!(
        "## Compressed echo (permessage-deflate)\n\n\
         Every server with compression on, pinned to CPU 0; `duplex bench echo --compress` on CPU 1 offers \
         permessage-deflate without context takeover either way, sends JSON-like text compressed and inflates \
         and checks every echo. Node `ws` and Python `websockets` run `tests/peers/node_echo_server.js` and \
         `tests/peers/py_echo_server.py --compress on`. Messages/s, medians of {reps} repetition(s) of {seconds} s, \
         and the share of Duplex (accept).\n\n```sh\n{shown}```\n\n| workload |"
    );
    for (_, label) in PEERS {
        let _ = write!(t, " {label} |");
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(PEERS.len()));
    t.push('\n');
    for ((label, ..), rates) in WORKLOADS.iter().zip(medians) {
        t.push_str(&table_row(label, rates));
    }
    t
}

/// A workload's row: each server's rate and its share of the first's.
fn table_row(label: &str, rates: &[f64]) -> String {
    let mut t = format!("| {label} |");
    let base = rates[0];
    for rate in rates {
        let _ = write!(t, " {rate:.0}/s ({:.0}%) |", 100.0 * rate / base);
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
        let medians = [
            vec![51000.0, 40000.0, 20000.0, 9100.0],
            vec![151000.0, 120000.0, 60000.0, 19100.0],
        ];
        let t = markdown(3, 5, &shown, &medians);
        assert!(
            t.starts_with("## Compressed echo (permessage-deflate)\n\n"),
            "{t}"
        );
        assert!(
            t.contains(concat!(
                "medians of 3 repetition(s) of 5 s, and the share of Duplex (accept).\n\n```sh\n",
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
                "| 100 connections, 1 in flight, 4 KiB JSON text | 51000/s (100%) | 40000/s (78%) | 20000/s (39%) | 9100/s (18%) |\n",
                "| 100 connections, 16 in flight, 256 B JSON text (pipelined) | 151000/s (100%) | 120000/s (79%) | 60000/s (40%) | 19100/s (13%) |\n",
            )
        );
    }
}
