//! The hub fan-out section of `cargo xtask bench`: N subscribers on one
//! channel, publications through the HTTP API, loaded and checked by
//! `duplex bench fanout` (CPU 1): every subscriber must get every
//! publication, in order. Two setups on the same core (CPU 0): one
//! `duplex serve` with its SQLite store, and two `duplex serve --redis`
//! nodes with their `redis-server`, the subscribers spread over both.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{Bins, Running, SERVERS, bench_report, median, start_redis, start_with};
use crate::Paths;

/// What serves the channel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// One node, history in SQLite.
    OneNode,
    /// Two nodes sharing the channel through one Redis.
    TwoNodesOnRedis,
}

impl Setup {
    const ALL: [Setup; 2] = [Setup::OneNode, Setup::TwoNodesOnRedis];

    fn label(self) -> &'static str {
        match self {
            Self::OneNode => "1 node, SQLite",
            Self::TwoNodesOnRedis => "2 nodes + Redis",
        }
    }

    /// Starts it; the processes (kept alive while held) and the nodes' URLs.
    fn start(self, paths: &Paths, bins: &Bins) -> Result<(Vec<Running>, Vec<String>)> {
        let serve = SERVERS
            .iter()
            .find(|s| s.name == "duplex-serve")
            .expect("duplex serve is a bench server");
        let dir = paths.target.join("bench");
        let mut running = Vec::new();
        let mut extra = Vec::new();
        let nodes = match self {
            Self::OneNode => 1,
            Self::TwoNodesOnRedis => {
                let redis = start_redis(paths, &dir.join("fanout-redis.log"))?;
                extra = vec!["--redis".to_owned(), format!("redis://{}", redis.addr)];
                running.push(redis);
                2
            }
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut urls = Vec::new();
        for i in 0..nodes {
            let log = dir.join(format!("fanout-serve-{i}.log"));
            let node = start_with(paths, bins, serve, &log, None, &extra)?;
            urls.push(format!("ws://{}/ws", node.addr));
            running.push(node);
        }
        Ok((running, urls))
    }
}

/// One configuration: subscribers, publications per second (0 = flat out,
/// each publisher one at a time), publishers.
#[derive(Clone, Copy)]
struct Load {
    subscribers: u32,
    rate: u32,
    publishers: u32,
}

const LOADS: [Load; 3] = [
    Load {
        subscribers: 1000,
        rate: 100,
        publishers: 1,
    },
    Load {
        subscribers: 1000,
        rate: 0,
        publishers: 1,
    },
    Load {
        subscribers: 100,
        rate: 0,
        publishers: 64,
    },
];

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    deliveries: f64,
    publications: f64,
    p50: f64,
    p99: f64,
    publish_p50: f64,
    publish_p99: f64,
}

/// Runs `reps` repetitions of `seconds` per setup and load; returns the
/// markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    let runs: Vec<(Setup, Load)> = Setup::ALL
        .iter()
        .flat_map(|&setup| LOADS.iter().map(move |&load| (setup, load)))
        .collect();
    let mut samples = vec![Vec::<Sample>::new(); runs.len()];
    for rep in 0..reps {
        for (ri, &(setup, load)) in runs.iter().enumerate() {
            let (running, urls) = setup.start(paths, bins)?;
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "1"]).arg(&bins.duplex).args([
                "bench",
                "fanout",
                &urls[0],
                "--json",
                "-n",
                &load.subscribers.to_string(),
                "-r",
                &load.rate.to_string(),
                "--publishers",
                &load.publishers.to_string(),
                "-d",
                &format!("{seconds}s"),
            ]);
            for url in &urls[1..] {
                cmd.args(["--node", url]);
            }
            let v = bench_report(&mut cmd, Duration::from_secs(600), "duplex bench fanout")?;
            drop(running);
            let row = &v["rows"][0];
            let extra = |name: &str| row["extra"][name].as_f64().unwrap_or(0.0);
            let s = Sample {
                deliveries: row["ops_per_sec"].as_f64().unwrap_or(0.0),
                publications: extra("pub_per_s"),
                p50: row["latency_us"]["p50"].as_f64().unwrap_or(0.0),
                p99: row["latency_us"]["p99"].as_f64().unwrap_or(0.0),
                publish_p50: extra("publish_p50_us"),
                publish_p99: extra("publish_p99_us"),
            };
            println!(
                "    rep {} fanout {}, {} subscribers, {}: {:.0} deliveries/s, {:.0} publications/s, delivery p50 {:.0} µs p99 {:.0} µs, publish p50 {:.0} µs p99 {:.0} µs",
                rep + 1,
                setup.label(),
                load.subscribers,
                load_label(load),
                s.deliveries,
                s.publications,
                s.p50,
                s.p99,
                s.publish_p50,
                s.publish_p99,
            );
            samples[ri].push(s);
        }
    }
    let mut t = format!(
        "## Hub fan-out, on one node and on two sharing Redis\n\n\
         Everything that serves runs on CPU 0: one `duplex serve` (SQLite store, defaults), or two `duplex serve \
         --redis` nodes and their `redis-server` (append-only file, `appendfsync always`, as docs/deploy.md advises). \
         `duplex bench fanout` on CPU 1 subscribes N connections to one channel of `/ws` (spread evenly over the \
         nodes), publishes numbered messages through `POST /api/publish` on the first node (each publisher one keep-alive \
         connection, each publication answered once stored) and checks that every subscriber gets every publication \
         of every publisher, in order. Delivery latency is from the publish call to the arrival at a subscriber, over \
         every delivery (the load generator reads the N deliveries of a publication one after another on one core, so \
         the tail includes its own queueing); publish is the call's round trip. On two cores this compares the cost of \
         going through Redis, not the gain of more machines. Medians of {reps} repetition(s) of {seconds} s:\n\n\
         ```sh\ntaskset -c 1 duplex bench fanout ws://127.0.0.1:PORT/ws [--node ws://127.0.0.1:PORT2/ws] --json -n N -r RATE --publishers P -d {seconds}s\n```\n\n\
         | setup | subscribers | publications | publications/s | deliveries/s | delivery p50 / p99 | publish p50 / p99 |\n|---|---|---|---|---|---|---|\n"
    );
    for (ri, &(setup, load)) in runs.iter().enumerate() {
        let med = |f: fn(&Sample) -> f64| median(samples[ri].iter().map(f).collect());
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} / {:.1} ms | {:.2} / {:.2} ms |",
            setup.label(),
            load.subscribers,
            load_label(load),
            med(|s| s.publications),
            med(|s| s.deliveries),
            med(|s| s.p50) / 1000.0,
            med(|s| s.p99) / 1000.0,
            med(|s| s.publish_p50) / 1000.0,
            med(|s| s.publish_p99) / 1000.0,
        );
    }
    Ok(t)
}

fn load_label(load: Load) -> String {
    let publishers = match load.publishers {
        1 => String::new(),
        n => format!(", {n} publishers"),
    };
    if load.rate == 0 {
        format!("flat out{publishers}")
    } else {
        format!("{}/s{publishers}", load.rate)
    }
}
