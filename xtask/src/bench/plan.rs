//! What a run measures: the servers, the workloads, the sections, and
//! the command line that picks among them.

use anyhow::{Context, Result, bail};

use super::*;

pub(super) const USAGE: &str = "\
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

/// One server under test.
pub(super) struct Server {
    pub(super) name: &'static str,
    /// How the table names it.
    pub(super) label: &'static str,
}

pub(super) const SERVERS: [Server; 5] = [
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
pub(super) struct Workload {
    pub(super) label: String,
    /// `duplex bench` mode and its arguments (the URL is added).
    pub(super) mode: &'static str,
    pub(super) args: Vec<String>,
}

pub(super) struct Options {
    pub(super) reps: usize,
    pub(super) seconds: u64,
    pub(super) connections: usize,
    pub(super) only: Option<Vec<String>>,
    /// Workload kinds (`duplex bench` modes) to run; all when `None`.
    pub(super) workloads: Option<Vec<String>>,
    pub(super) write_doc: bool,
    pub(super) quick: bool,
    pub(super) transfer_size: u64,
    pub(super) sections: Vec<String>,
}

pub(super) fn parse(argv: &[String]) -> Result<Options> {
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
pub(super) const SECTIONS: [&str; 6] = [
    "tls",
    "http2",
    "compressed",
    "fanout",
    "transfer",
    "allocator",
];

/// The workload kinds `--workloads` selects from: `duplex bench` modes.
pub(super) const WORKLOAD_KINDS: [&str; 3] = ["echo", "latency", "connections"];

pub(super) fn workloads(o: &Options) -> Vec<Workload> {
    let mut all = all_workloads(o);
    if let Some(kinds) = &o.workloads {
        all.retain(|w| kinds.iter().any(|k| k == w.mode));
    }
    all
}

pub(super) fn all_workloads(o: &Options) -> Vec<Workload> {
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
        // Each connection's 16 messages (64 KiB) are more than a small
        // read buffer holds: how a server reads a peer that streams.
        echo(
            "100 connections, 16 in flight, 4 KiB (pipelined)",
            100,
            16,
            "4k",
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
