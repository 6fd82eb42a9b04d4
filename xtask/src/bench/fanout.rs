//! The hub fan-out section of `cargo xtask bench`: N subscribers on one
//! channel, publications through the HTTP API, loaded and checked by
//! `duplex bench fanout` (CPU 1): every subscriber must get every
//! publication, in order. Two setups on the same core (CPU 0): one
//! `duplex serve` with its SQLite store, and two `duplex serve --redis`
//! nodes with their `redis-server`, the subscribers spread over both; and
//! the peer row: Socket.IO 4.8 (`tests/peers/socketio_hub.js`, the same
//! publish endpoint, rooms as channels, no history), its subscribers
//! speaking Socket.IO (`--protocol socket.io`).

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::{
    Bins, Running, SERVERS, Script, bench_report, median, start_redis, start_script, start_with,
};
use crate::Paths;
use crate::process::free_port;

/// What serves the channel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// One node, history in SQLite.
    OneNode,
    /// Two nodes sharing the channel through one Redis.
    TwoNodesOnRedis,
    /// Socket.IO on Node: the peer.
    SocketIo,
}

/// A started setup: its processes (stopped when dropped), their ids and
/// the nodes' URLs.
struct Started {
    _running: Vec<Running>,
    _script: Option<Script>,
    pids: Vec<u32>,
    urls: Vec<String>,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::OneNode, Setup::TwoNodesOnRedis, Setup::SocketIo];

    fn label(self) -> &'static str {
        match self {
            Self::OneNode => "1 node, SQLite",
            Self::TwoNodesOnRedis => "2 nodes + Redis",
            Self::SocketIo => "Socket.IO 4.8 (no history)",
        }
    }

    /// Starts it, on CPU 0.
    fn start(self, paths: &Paths, bins: &Bins) -> Result<Started> {
        if self == Self::SocketIo {
            let port = free_port()?;
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0", "node"])
                .arg(paths.peers.join("socketio_hub.js"))
                .args(["--port", &port.to_string()])
                .env("NODE_PATH", paths.node_modules());
            let script = start_script(cmd, port, "the Socket.IO server")?;
            return Ok(Started {
                pids: vec![script.child.id()],
                urls: vec![format!("ws://{}/", script.addr)],
                _running: Vec::new(),
                _script: Some(script),
            });
        }
        let (running, urls) = self.start_duplex(paths, bins)?;
        Ok(Started {
            pids: running.iter().map(|r| r.child.id()).collect(),
            urls,
            _running: running,
            _script: None,
        })
    }

    /// Starts the `duplex serve` setups: the processes and the nodes' URLs.
    fn start_duplex(self, paths: &Paths, bins: &Bins) -> Result<(Vec<Running>, Vec<String>)> {
        let serve = SERVERS
            .iter()
            .find(|s| s.name == "duplex-serve")
            .expect("duplex serve is a bench server");
        let dir = paths.target.join("bench");
        let mut running = Vec::new();
        let mut extra = Vec::new();
        let nodes = match self {
            Self::OneNode | Self::SocketIo => 1,
            Self::TwoNodesOnRedis => {
                let redis = start_redis(paths, &dir.join("fanout-redis.log"))?;
                extra = vec!["--redis".to_owned(), format!("redis://{}", redis.addr)];
                running.push(redis);
                2
            }
        };
        // A publisher over the hub sends far more than a person's
        // commands: lift the per-connection command rate.
        extra.extend(["--rate-limit", "1000000", "--rate-burst", "1000000"].map(String::from));
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

/// One configuration: subscribers, publications per second (0 = flat out),
/// publishers, and how each publishes.
#[derive(Clone, Copy)]
struct Load {
    subscribers: u32,
    rate: u32,
    publishers: u32,
    /// 1: through `POST /api/publish`, one at a time; more: with the hub's
    /// `publish` over `/ws`, this many unanswered at once.
    in_flight: u32,
}

const LOADS: [Load; 4] = [
    Load {
        subscribers: 1000,
        rate: 100,
        publishers: 1,
        in_flight: 1,
    },
    Load {
        subscribers: 1000,
        rate: 0,
        publishers: 1,
        in_flight: 1,
    },
    Load {
        subscribers: 1000,
        rate: 0,
        publishers: 1,
        in_flight: 64,
    },
    Load {
        subscribers: 100,
        rate: 0,
        publishers: 64,
        in_flight: 1,
    },
];

impl Load {
    /// Whether `setup` can serve it: Socket.IO's publications come only
    /// through `POST /api/publish`.
    fn fits(self, setup: Setup) -> bool {
        self.in_flight == 1 || setup != Setup::SocketIo
    }
}

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    deliveries: f64,
    publications: f64,
    p50: f64,
    p99: f64,
    publish_p50: f64,
    publish_p99: f64,
    /// The serving processes' CPU time per delivery, µs.
    cpu_us: f64,
    /// How busy they were, % of one core.
    busy_pct: f64,
}

/// Runs `reps` repetitions of `seconds` per setup and load; returns the
/// markdown section.
pub fn section(paths: &Paths, bins: &Bins, reps: usize, seconds: u64) -> Result<String> {
    let runs: Vec<(Setup, Load)> = Setup::ALL
        .iter()
        .flat_map(|&setup| LOADS.iter().map(move |&load| (setup, load)))
        .filter(|(setup, load)| load.fits(*setup))
        .collect();
    let mut samples = vec![Vec::<Sample>::new(); runs.len()];
    for rep in 0..reps {
        for (ri, &(setup, load)) in runs.iter().enumerate() {
            let s = measure(paths, bins, setup, load, seconds)?;
            print_sample(rep, setup, load, &s);
            samples[ri].push(s);
        }
    }
    let medians: Vec<(Setup, Load, Sample)> = runs
        .iter()
        .zip(&samples)
        .map(|(&(setup, load), samples)| (setup, load, Sample::medians(samples)))
        .collect();
    Ok(markdown(reps, seconds, &medians))
}

/// One run of `duplex bench fanout` against a fresh `setup` under `load`.
fn measure(paths: &Paths, bins: &Bins, setup: Setup, load: Load, seconds: u64) -> Result<Sample> {
    let started = setup.start(paths, bins)?;
    let mut cmd = fanout_command(bins, &started.urls, load, seconds);
    for pid in &started.pids {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    if setup == Setup::SocketIo {
        cmd.args(["--protocol", "socket.io"]);
    }
    let v = bench_report(&mut cmd, Duration::from_secs(600), "duplex bench fanout")?;
    drop(started);
    Ok(Sample::from_row(&v["rows"][0]))
}

/// `duplex bench fanout` on CPU 1, subscribing through every node of `urls`
/// and publishing through the first.
fn fanout_command(bins: &Bins, urls: &[String], load: Load, seconds: u64) -> Command {
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
    if load.in_flight > 1 {
        cmd.args(["--via", "hub", "--in-flight", &load.in_flight.to_string()]);
    }
    for url in &urls[1..] {
        cmd.args(["--node", url]);
    }
    cmd
}

impl Sample {
    /// The figures of a row of `duplex bench fanout --json`.
    fn from_row(row: &Value) -> Sample {
        let extra = |name: &str| row["extra"][name].as_f64().unwrap_or(0.0);
        Sample {
            deliveries: row["ops_per_sec"].as_f64().unwrap_or(0.0),
            publications: extra("pub_per_s"),
            p50: row["latency_us"]["p50"].as_f64().unwrap_or(0.0),
            p99: row["latency_us"]["p99"].as_f64().unwrap_or(0.0),
            publish_p50: extra("publish_p50_us"),
            publish_p99: extra("publish_p99_us"),
            cpu_us: extra("server_cpu_us_per_delivery"),
            busy_pct: extra("server_cpu_pct"),
        }
    }

    /// Each figure's median over the repetitions.
    fn medians(samples: &[Sample]) -> Sample {
        let med = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Sample {
            deliveries: med(|s| s.deliveries),
            publications: med(|s| s.publications),
            p50: med(|s| s.p50),
            p99: med(|s| s.p99),
            publish_p50: med(|s| s.publish_p50),
            publish_p99: med(|s| s.publish_p99),
            cpu_us: med(|s| s.cpu_us),
            busy_pct: med(|s| s.busy_pct),
        }
    }
}

fn print_sample(rep: usize, setup: Setup, load: Load, s: &Sample) {
    println!(
        "    rep {} fanout {}, {} subscribers, {}: {:.0} deliveries/s, {:.0} publications/s, delivery p50 {:.0} µs p99 {:.0} µs, publish p50 {:.0} µs p99 {:.0} µs, server {:.2} µs CPU per delivery, {:.0}% busy",
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
        s.cpu_us,
        s.busy_pct,
    );
}

/// The section, from each setup and load's medians.
fn markdown(reps: usize, seconds: u64, medians: &[(Setup, Load, Sample)]) -> String {
    let mut t = intro(reps, seconds);
    for (setup, load, med) in medians {
        t.push_str(&table_row(*setup, *load, med));
    }
    t
}

/// The heading, the method and the table's head.
fn intro(reps: usize, seconds: u64) -> String {
    format!(
        "## Hub fan-out: one node, two sharing Redis, and Socket.IO\n\n\
         Everything that serves runs on CPU 0: one `duplex serve` (SQLite store, defaults but for the command rate, below), or two `duplex serve \
         --redis` nodes and their `redis-server` (append-only file, `appendfsync always`, as docs/deploy.md advises). \
         `duplex bench fanout` on CPU 1 subscribes N connections to one channel of `/ws` (spread evenly over the \
         nodes), publishes numbered messages through `POST /api/publish` on the first node (each publisher one keep-alive \
         connection, each publication answered once stored; one at a time) or, where it says so, with the hub's \
         `publish` over one WebSocket with 64 unanswered at once (`--via hub --in-flight 64`; the nodes' per-connection \
         command rate lifted) and checks that every subscriber gets every publication \
         of every publisher, in order. Delivery latency is from the publish call to the arrival at a subscriber, over \
         every delivery (the load generator reads the N deliveries of a publication one after another on one core, so \
         the tail includes its own queueing); publish is the call's round trip. On two cores this compares the cost of \
         going through Redis, not the gain of more machines. The peer, Socket.IO 4.8 on Node (`tests/peers/socketio_hub.js`, \
         CPU 0), serves the same `POST /api/publish` with a room per channel and keeps no history; its subscribers speak \
         Socket.IO over WebSocket (`--protocol socket.io`) and are checked the same way. The server's CPU per delivery \
         counts every serving process (both nodes and Redis) from the first publication to the last delivery; \
         below 100% busy, the load generator was the limit. Medians of {reps} repetition(s) of {seconds} s:\n\n\
         ```sh\ntaskset -c 1 duplex bench fanout ws://127.0.0.1:PORT/ws [--node ws://127.0.0.1:PORT2/ws] --json -n N -r RATE --publishers P -d {seconds}s --server-pid PID...\n\
         taskset -c 1 duplex bench fanout ws://127.0.0.1:PORT/ --protocol socket.io --json -n N -r RATE --publishers P -d {seconds}s --server-pid PID\n```\n\n\
         | setup | subscribers | publications | publications/s | deliveries/s | server CPU per delivery | delivery p50 / p99 | publish p50 / p99 |\n|---|---|---|---|---|---|---|---|\n"
    )
}

/// The table's row for `setup` under `load`, from the medians `med`
/// (latencies in µs, shown in ms).
fn table_row(setup: Setup, load: Load, med: &Sample) -> String {
    format!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.2} µs, {:.0}% busy | {:.1} / {:.1} ms | {:.2} / {:.2} ms |\n",
        setup.label(),
        load.subscribers,
        load_label(load),
        med.publications,
        med.deliveries,
        med.cpu_us,
        med.busy_pct,
        med.p50 / 1000.0,
        med.p99 / 1000.0,
        med.publish_p50 / 1000.0,
        med.publish_p99 / 1000.0,
    )
}

fn load_label(load: Load) -> String {
    let publishers = match load.publishers {
        1 => String::new(),
        n => format!(", {n} publishers"),
    };
    let how = match load.in_flight {
        1 => String::new(),
        n => format!(", over the hub, {n} in flight"),
    };
    if load.rate == 0 {
        format!("flat out{publishers}{how}")
    } else {
        format!("{}/s{publishers}{how}", load.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v: [f64; 8]) -> Sample {
        let [
            deliveries,
            publications,
            p50,
            p99,
            publish_p50,
            publish_p99,
            cpu_us,
            busy_pct,
        ] = v;
        Sample {
            deliveries,
            publications,
            p50,
            p99,
            publish_p50,
            publish_p99,
            cpu_us,
            busy_pct,
        }
    }

    #[test]
    fn rows_show_medians_with_latencies_in_ms() {
        let quiet = Sample::medians(&[
            sample([100000.0, 100.0, 1234.0, 56789.0, 345.6, 1789.4, 2.0, 20.0]),
            sample([98000.0, 99.5, 1300.0, 50000.0, 300.0, 2000.0, 2.5, 25.0]),
            sample([99000.0, 101.0, 1250.0, 52000.5, 333.3, 1900.0, 3.0, 30.0]),
        ]);
        let busy = Sample::medians(&[
            sample([105555.5, 105.0, 1284.0, 56794.0, 350.6, 1794.4, 1.234, 99.0]),
            sample([102999.5, 104.5, 1335.0, 50005.0, 305.0, 2005.0, 1.0, 98.0]),
            sample([101777.5, 106.0, 1250.0, 52000.5, 333.3, 1900.0, 1.5, 97.0]),
        ]);
        let t = markdown(
            3,
            5,
            &[
                (Setup::OneNode, LOADS[0], quiet),
                (Setup::TwoNodesOnRedis, LOADS[3], busy),
                (Setup::OneNode, LOADS[2], busy),
            ],
        );
        assert!(
            t.contains("--protocol socket.io --json -n N -r RATE --publishers P -d 5s --server-pid PID\n```\n\n"),
            "{t}"
        );
        let table = &t[t.find("| setup |").expect("a table")..];
        assert_eq!(
            table,
            concat!(
                "| setup | subscribers | publications | publications/s | deliveries/s | server CPU per delivery | delivery p50 / p99 | publish p50 / p99 |\n",
                "|---|---|---|---|---|---|---|---|\n",
                "| 1 node, SQLite | 1000 | 100/s | 100 | 99000 | 2.50 µs, 25% busy | 1.2 / 52.0 ms | 0.33 / 1.90 ms |\n",
                "| 2 nodes + Redis | 100 | flat out, 64 publishers | 105 | 103000 | 1.23 µs, 98% busy | 1.3 / 52.0 ms | 0.33 / 1.90 ms |\n",
                "| 1 node, SQLite | 1000 | flat out, over the hub, 64 in flight | 105 | 103000 | 1.23 µs, 98% busy | 1.3 / 52.0 ms | 0.33 / 1.90 ms |\n",
            )
        );
    }

    #[test]
    fn socket_io_is_measured_only_where_it_can_publish() {
        for load in LOADS {
            assert!(load.fits(Setup::OneNode) && load.fits(Setup::TwoNodesOnRedis));
            assert_eq!(load.fits(Setup::SocketIo), load.in_flight == 1);
        }
    }
}
