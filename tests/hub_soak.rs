//! The hub soak: hundreds of clients against the real `duplex serve`,
//! through a SIGKILL of the server, every delivery checked.
//!
//! Subscribers hold one to three channels each and, at random, close
//! cleanly, reset their TCP connection or go silent for a while, then
//! reconnect and subscribe with `since`. Publishers publish at a steady
//! pace throughout; the server is SIGKILLed and restarted on the same port
//! part-way through. After the restart a flooder publishes 4 KiB messages
//! as fast as they are acknowledged to a channel whose subscribers never
//! read. At the end every subscriber must hold every publication of its
//! channels from where it started, exactly once and in order, and every
//! acknowledged publication must be in the history: lost and duplicated
//! are counted, reported, and must be 0. The readers that never read must
//! have been cut off (1013), and the server's peak RSS stays within its
//! memory budget plus a fixed allowance.
//!
//! The cluster soak runs the same clients and checks against three nodes
//! sharing channels through a real `redis-server`, clients connecting to
//! any node, through a node SIGKILLed, Redis SIGKILLed (restarted on its
//! append-only file) and a node cut off from Redis for longer than its
//! lease; at the end every node must be healthy and presence empty.
//!
//! `cargo xtask test` runs a 20-second slice of each with 200 clients;
//! `cargo xtask soak --hub --seconds N --clients N` a longer one. Each run
//! prints its seed; `DUPLEX_SOAK_SEED` replays a run's choices (the
//! timing of a run on a real network stack never repeats exactly).

mod common;
#[path = "../crates/server/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{proc_status_bytes, spawn_serve};
use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::Instant;

/// Every single wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);
/// The server's memory budget in this soak.
const BUDGET: usize = 64 << 20;
/// What the server may hold beyond its budget: its code, SQLite's cache,
/// the connections themselves.
const ALLOWANCE: usize = 160 << 20;
/// Channels the regular clients use.
const CHANNELS: usize = 8;
/// Publishing clients.
const PUBLISHERS: usize = 4;
/// Subscribers of the flooded channel that never read.
const NEVER_READERS: usize = 4;
/// The most the flooder publishes.
const FLOOD_MAX: u64 = 20_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number"))
    })
}

fn channel(i: usize) -> String {
    format!("soak-{i}")
}

// ------------------------------------------------------------ the server

/// A `duplex serve` child on a fixed data directory.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    async fn start(config: &Path, data: &Path, bind: &str) -> Self {
        let utf8 = |p: &Path| p.to_str().expect("a UTF-8 temporary path").to_owned();
        let (child, addr) = spawn_serve(&[
            "--config",
            &utf8(config),
            "--bind",
            bind,
            "--data",
            &utf8(data),
        ])
        .await;
        Self { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL, and wait for it to be gone; returns its peak RSS.
    async fn kill(mut self) -> usize {
        let peak = proc_status_bytes(self.pid(), "VmHWM");
        self.child.start_kill().expect("SIGKILL");
        tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the server died in time")
            .expect("wait");
        peak
    }
}

// ------------------------------------------------------------ what is shared

/// What the clients share: the nodes' addresses, the phase, the counters.
struct Run {
    /// The nodes (one, or several sharing channels through Redis).
    nodes: Vec<SocketAddr>,
    seed: u64,
    /// Set when publishing ends.
    stop: AtomicBool,
    /// Each channel's last offset once publishing ended: subscribers read
    /// until they reach it.
    finals: tokio::sync::watch::Sender<Option<HashMap<String, u64>>>,
    next_id: AtomicU64,
    /// Acknowledged publications: (channel, offset, id).
    acknowledged: Mutex<Vec<(String, u64, u64)>>,
    connected: AtomicU64,
    most_connected: AtomicU64,
    reconnects: AtomicU64,
    recovered_exactly: AtomicU64,
    refetched: AtomicU64,
    /// The running server's pid (for the RSS sampler).
    pid: AtomicU32,
}

impl Run {
    fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn finals(&self) -> Option<HashMap<String, u64>> {
        self.finals.borrow().clone()
    }

    /// A node, by a pick a client made.
    fn node(&self, pick: usize) -> SocketAddr {
        self.nodes[pick % self.nodes.len()]
    }
}

/// A hub connection; counts itself as connected while it lives.
struct Conn {
    ws: WebSocket<MaybeTlsStream>,
    run: Arc<Run>,
    next_id: u64,
}

/// The connection broke (the server died, cut us off, or we reset it).
#[derive(Debug)]
struct Broken;

impl Conn {
    /// Connects to the node `pick` names, or the next that answers,
    /// retrying while they are down (bounded).
    async fn open(run: &Arc<Run>, mut pick: usize) -> Self {
        let deadline = Instant::now() + LIMIT;
        loop {
            let addr = run.node(pick);
            pick = pick.wrapping_add(1);
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                ClientBuilder::new().connect(&format!("ws://{addr}/ws")),
            )
            .await;
            if let Ok(Ok(ws)) = attempt {
                let now = run.connected.fetch_add(1, Ordering::Relaxed) + 1;
                run.most_connected.fetch_max(now, Ordering::Relaxed);
                return Self {
                    ws,
                    run: run.clone(),
                    next_id: 1,
                };
            }
            assert!(
                Instant::now() < deadline,
                "could not reconnect to {addr} in time"
            );
            // Retry pacing while the server restarts.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&mut self, mut command: Value) -> Result<u64, Broken> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        tokio::time::timeout(LIMIT, self.ws.send(command.to_string()))
            .await
            .map_err(|_| Broken)?
            .map_err(|_| Broken)?;
        Ok(id)
    }

    /// The next JSON value; `Ok(None)` when `until` passes first.
    async fn next(&mut self, until: Instant) -> Result<Option<Value>, Broken> {
        loop {
            match tokio::time::timeout_at(until, self.ws.recv()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(Some(
                        serde_json::from_str(&t).expect("the server sends JSON"),
                    ));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return Err(Broken),
            }
        }
    }

    /// Resets the TCP connection (RST), as a crashed client would.
    fn reset(self) {
        // Deprecated for lingering that blocks a thread on drop; a linger of
        // zero never blocks: it makes the close send a reset at once.
        #[allow(deprecated)]
        if let Some(tcp) = self.ws.get_ref().tcp() {
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.ws.close(duplex::CloseCode::NORMAL, ""),
        )
        .await;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.run.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------ subscribers

/// What one subscriber saw of one channel.
#[derive(Debug, Default)]
struct Track {
    epoch: String,
    /// The offset it started after (its first subscribe).
    start: Option<u64>,
    /// The highest offset it has.
    last: u64,
    /// Every publication it was given: (offset, id), in arrival order.
    got: Vec<(u64, u64)>,
}

impl Track {
    fn take(&mut self, publication: &Value) {
        let epoch = publication["epoch"].as_str().expect("epoch");
        assert!(
            self.epoch.is_empty() || self.epoch == epoch,
            "the epoch changed from {} to {epoch}: the server lost its history",
            self.epoch
        );
        if self.epoch.is_empty() {
            // A channel without publications has no epoch until its first.
            self.epoch = epoch.to_owned();
        }
        let offset = publication["offset"].as_u64().expect("offset");
        let id = publication["data"]["id"].as_u64().expect("data.id");
        self.got.push((offset, id));
        self.last = self.last.max(offset);
    }
}

struct Subscriber {
    run: Arc<Run>,
    rng: StdRng,
    tracks: BTreeMap<String, Track>,
    /// Whether it shows in presence.
    presence: bool,
}

impl Subscriber {
    /// Applies a push; anything but a publication is ignored.
    fn push(&mut self, value: &Value) {
        if value["push"] == "publication" {
            let channel = value["channel"].as_str().expect("channel");
            if let Some(track) = self.tracks.get_mut(channel) {
                track.take(value);
            }
        }
    }

    /// Sends a command and waits for its reply, applying pushes meanwhile.
    async fn call(&mut self, conn: &mut Conn, command: Value) -> Result<Value, Broken> {
        let id = conn.send(command.clone()).await?;
        // One deadline: pushes arriving meanwhile must not extend it.
        let deadline = Instant::now() + LIMIT;
        loop {
            let value = conn
                .next(deadline)
                .await?
                .unwrap_or_else(|| panic!("no reply to {command} in time"));
            if value.get("push").is_some() {
                self.push(&value);
            } else {
                assert_eq!(value["id"], json!(id), "an unexpected reply: {value}");
                if value["error"]["code"] == "unavailable" {
                    // Redis is out of reach: come back later.
                    return Err(Broken);
                }
                assert!(value.get("error").is_none(), "{command} failed: {value}");
                return Ok(value["result"].clone());
            }
        }
    }

    /// Subscribes to every channel, recovering from where each left off.
    async fn subscribe_all(&mut self, conn: &mut Conn) -> Result<(), Broken> {
        let channels: Vec<String> = self.tracks.keys().cloned().collect();
        for channel in channels {
            let track = &self.tracks[&channel];
            let mut command =
                json!({"cmd": "subscribe", "channel": channel, "presence": self.presence});
            if track.start.is_some() {
                command["since"] = json!({"epoch": track.epoch, "offset": track.last});
            }
            let reply = self.call(conn, command).await?;
            let offset = reply["offset"].as_u64().expect("offset");
            let track = self.tracks.get_mut(&channel).expect("a track");
            if track.start.is_none() {
                track.start = Some(offset);
                track.last = offset;
                track.epoch = reply["epoch"].as_str().unwrap_or("").to_owned();
            } else if reply["recovered"] == true {
                for p in reply["publications"].as_array().expect("publications") {
                    track.take(p);
                }
                self.run.recovered_exactly.fetch_add(1, Ordering::Relaxed);
            } else {
                // Not exact: fill the gap from the history, page by page.
                self.run.refetched.fetch_add(1, Ordering::Relaxed);
                while self.tracks[&channel].last < offset {
                    let after = self.tracks[&channel].last;
                    let page = self
                        .call(
                            conn,
                            json!({"cmd": "history", "channel": channel, "after": after, "limit": 1000}),
                        )
                        .await?;
                    let publications = page["publications"].as_array().expect("publications");
                    assert!(
                        !publications.is_empty(),
                        "{channel}: the history lost offsets after {after}"
                    );
                    let track = self.tracks.get_mut(&channel).expect("a track");
                    for p in publications
                        .iter()
                        .filter(|p| p["offset"].as_u64() <= Some(offset))
                    {
                        track.take(p);
                    }
                }
            }
            if self.tracks[&channel].epoch.is_empty() {
                let epoch = reply["epoch"].as_str().unwrap_or("").to_owned();
                self.tracks.get_mut(&channel).expect("a track").epoch = epoch;
            }
        }
        Ok(())
    }

    fn caught_up(&self) -> bool {
        self.run.finals().is_some_and(|finals| {
            self.tracks
                .iter()
                .all(|(channel, track)| track.last >= finals.get(channel).copied().unwrap_or(0))
        })
    }

    /// Connects, reads for a while, disconnects one way or another, and
    /// again, until publishing has ended and it holds everything.
    async fn run(mut self) -> BTreeMap<String, Track> {
        // Once the final offsets are known, it has a bounded time to reach
        // them, however many times its connection breaks meanwhile.
        let mut finish_by = None;
        'connections: loop {
            if self.run.finals().is_some() {
                let by = *finish_by.get_or_insert_with(|| Instant::now() + 3 * LIMIT);
                assert!(
                    Instant::now() < by,
                    "a subscriber did not catch up within {:?} after publishing ended",
                    3 * LIMIT
                );
            }
            let mut conn = Conn::open(&self.run, self.rng.random::<u32>() as usize).await;
            if self.subscribe_all(&mut conn).await.is_err() {
                self.run.reconnects.fetch_add(1, Ordering::Relaxed);
                // Pacing while a node or Redis is down.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            loop {
                let ending = self.run.finals().is_some();
                let length = Duration::from_millis(self.rng.random_range(200..3000));
                let until = Instant::now() + if ending { LIMIT } else { length };
                while Instant::now() < until {
                    if self.caught_up() {
                        conn.close().await;
                        return self.tracks;
                    }
                    let tick = until.min(Instant::now() + Duration::from_millis(100));
                    match conn.next(tick).await {
                        Ok(Some(value)) => self.push(&value),
                        Ok(None) => {}
                        Err(Broken) => {
                            self.run.reconnects.fetch_add(1, Ordering::Relaxed);
                            continue 'connections;
                        }
                    }
                }
                assert!(
                    !ending,
                    "a subscriber did not catch up within {LIMIT:?} after publishing ended"
                );
                // The session is over: leave in one of three ways.
                match self.rng.random_range(0..3) {
                    0 => conn.close().await,
                    1 => conn.reset(),
                    _ => {
                        // Silence: stop reading for a while, then go on.
                        let pause = self.rng.random_range(300..1500);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        continue;
                    }
                }
                self.run.reconnects.fetch_add(1, Ordering::Relaxed);
                continue 'connections;
            }
        }
    }
}

// ------------------------------------------------------------ publishers

/// Publishes small messages at a steady pace until told to stop.
async fn publish_steadily(run: Arc<Run>, index: u64) -> Vec<u64> {
    let mut rng = run.rng(1_000_000 + index);
    let mut unknown = Vec::new();
    while !run.stop.load(Ordering::Relaxed) {
        let mut conn = Conn::open(&run, rng.random::<u32>() as usize).await;
        while !run.stop.load(Ordering::Relaxed) {
            let channel = channel(rng.random_range(0..CHANNELS));
            let id = run.next_id.fetch_add(1, Ordering::Relaxed);
            match publish(&mut conn, &channel, id, "").await {
                Ok(offset) => run.acknowledged.lock().unwrap().push((channel, offset, id)),
                Err(Broken) => {
                    // It may or may not have been stored before the break.
                    unknown.push(id);
                    // Pacing while a node or Redis is down.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
            // Pacing: a steady load, not a flood.
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..8))).await;
        }
    }
    unknown
}

/// Publishes 4 KiB messages to `flood` as fast as they are acknowledged.
async fn flood(run: Arc<Run>) -> u64 {
    let pad = "f".repeat(4096);
    let mut conn = Conn::open(&run, 0).await;
    let mut sent = 0;
    // Until publishing ends and, however slow the machine, until the server
    // has cut off every reader that never reads (bounded by count and time).
    let mut cut_off_by = None;
    while sent < FLOOD_MAX {
        if run.stop.load(Ordering::Relaxed) && sent % 100 == 0 {
            let deadline = *cut_off_by.get_or_insert_with(|| Instant::now() + LIMIT);
            if cut_off_with_1013(run.node(0)).await >= NEVER_READERS as u64
                || Instant::now() > deadline
            {
                break;
            }
        }
        let id = run.next_id.fetch_add(1, Ordering::Relaxed);
        let offset = publish(&mut conn, "flood", id, &pad)
            .await
            .expect("the flooder's connection holds (the server is not killed while it floods)");
        run.acknowledged
            .lock()
            .unwrap()
            .push(("flood".into(), offset, id));
        sent += 1;
    }
    sent
}

/// How many connections the server has closed with 1013 (slow consumers and
/// connections shed for the memory budget); 0 while it cannot say (its
/// metrics answer 503 when the budget has no room, as during the flood).
async fn cut_off_with_1013(addr: SocketAddr) -> u64 {
    let (status, body) = support::http(addr, "GET", "/metrics", &[], None).await;
    if status != 200 {
        return 0;
    }
    [
        "duplex_slow_consumers_dropped_total ",
        "duplex_memory_budget_shed_total ",
    ]
    .iter()
    .filter_map(|name| {
        body.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse::<u64>().ok())
    })
    .sum()
}

/// One publish; its offset once acknowledged.
async fn publish(conn: &mut Conn, channel: &str, id: u64, pad: &str) -> Result<u64, Broken> {
    let sent = conn
        .send(json!({"cmd": "publish", "channel": channel, "data": {"id": id, "pad": pad}}))
        .await?;
    let deadline = Instant::now() + LIMIT;
    loop {
        let Some(value) = conn.next(deadline).await? else {
            panic!("no publish reply in time");
        };
        if value["id"] == json!(sent) {
            if value["error"]["code"] == "unavailable" {
                return Err(Broken); // Redis out of reach: maybe stored, maybe not
            }
            assert!(value.get("error").is_none(), "publish failed: {value}");
            return Ok(value["result"]["offset"].as_u64().expect("offset"));
        }
    }
}

/// Subscribes to `flood` and never reads again; returns how it was closed.
async fn never_read(run: Arc<Run>, mut released: tokio::sync::watch::Receiver<bool>) -> u16 {
    let mut conn = Conn::open(&run, 0).await;
    conn.send(json!({"cmd": "subscribe", "channel": "flood", "presence": false}))
        .await
        .expect("subscribe");
    let _ = released.wait_for(|r| *r).await;
    // Now read what is left: the server must have cut it off. One deadline
    // for it all: the server's keepalive pings must not extend it.
    let deadline = Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, conn.ws.recv())
            .await
            .expect("a reader that never read was cut off by the server")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.0).unwrap_or(1005),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return 1006,
        }
    }
}

// ------------------------------------------------------------ checking

/// A channel's whole history: offset → id.
async fn history(addr: SocketAddr, channel: &str) -> BTreeMap<u64, u64> {
    let mut all = BTreeMap::new();
    let mut after = 0;
    loop {
        let path = format!("/api/channels/{channel}/history?after={after}&limit=1000");
        let (status, body) = support::http(addr, "GET", &path, &[], None).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let publications = page["publications"].as_array().unwrap();
        if publications.is_empty() {
            return all;
        }
        for p in publications {
            let offset = p["offset"].as_u64().unwrap();
            all.insert(offset, p["data"]["id"].as_u64().unwrap());
            after = offset;
        }
    }
}

/// Prints how to replay the run, if the test is failing.
struct ReplayWith(u64);

impl Drop for ReplayWith {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "hub soak: this run failed; replay its choices with DUPLEX_SOAK_SEED={} cargo xtask soak --hub",
                self.0
            );
        }
    }
}

/// The settings every soak node runs with (one line each, TOML).
fn soak_config(extra: &str) -> String {
    format!(
        "memory_budget = {BUDGET}\nmax_connections_per_address = 0\nhistory_size = 1000000\n\
         rate_limit = 100000.0\nrate_burst = 100000\n{extra}"
    )
}

fn new_run(nodes: Vec<SocketAddr>, seed: u64, pid: u32) -> Arc<Run> {
    Arc::new(Run {
        nodes,
        seed,
        stop: AtomicBool::new(false),
        finals: tokio::sync::watch::channel(None).0,
        next_id: AtomicU64::new(1),
        acknowledged: Mutex::new(Vec::new()),
        connected: AtomicU64::new(0),
        most_connected: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        recovered_exactly: AtomicU64::new(0),
        refetched: AtomicU64::new(0),
        pid: AtomicU32::new(pid),
    })
}

type Tracks = BTreeMap<String, Track>;

/// Starts `clients` subscribers (one to three channels each) and the
/// steady publishers.
fn start_clients(
    run: &Arc<Run>,
    clients: usize,
) -> (tokio::task::JoinSet<Tracks>, tokio::task::JoinSet<Vec<u64>>) {
    let mut subscribers = tokio::task::JoinSet::new();
    for index in 0..clients {
        let mut rng = run.rng(index as u64);
        let count = rng.random_range(1..=3);
        let mut tracks = BTreeMap::new();
        while tracks.len() < count {
            tracks.insert(channel(rng.random_range(0..CHANNELS)), Track::default());
        }
        let presence = rng.random_bool(0.5);
        let subscriber = Subscriber {
            run: run.clone(),
            rng,
            tracks,
            presence,
        };
        subscribers.spawn(subscriber.run());
    }
    let mut publishers = tokio::task::JoinSet::new();
    for index in 0..PUBLISHERS {
        publishers.spawn(publish_steadily(run.clone(), index as u64));
    }
    (subscribers, publishers)
}

/// What a soak ended with.
struct Ending {
    histories: HashMap<String, BTreeMap<u64, u64>>,
    tracks: Vec<Tracks>,
    /// Publications whose connection broke before their answer.
    unknown: HashSet<u64>,
}

/// With publishing stopped: reads every channel's history, tells the
/// subscribers where it ends and waits until each has read it all.
async fn read_to_the_end(
    run: &Arc<Run>,
    mut subscribers: tokio::task::JoinSet<Tracks>,
    mut publishers: tokio::task::JoinSet<Vec<u64>>,
    channels: impl Iterator<Item = String>,
) -> Ending {
    run.stop.store(true, Ordering::Relaxed);
    let mut unknown = HashSet::new();
    while let Some(ids) = publishers.join_next().await {
        unknown.extend(ids.unwrap());
    }
    let mut finals = HashMap::new();
    let mut histories = HashMap::new();
    for name in channels {
        let h = history(run.node(0), &name).await;
        finals.insert(name.clone(), h.keys().next_back().copied().unwrap_or(0));
        histories.insert(name, h);
    }
    run.finals.send_replace(Some(finals));
    let mut tracks = Vec::new();
    while let Some(t) = subscribers.join_next().await {
        tracks.push(t.unwrap());
    }
    Ending {
        histories,
        tracks,
        unknown,
    }
}

/// What the checks counted; everything but `delivered`, `publications` and
/// `unknown_stored` must be 0.
struct Verdict {
    lost: usize,
    duplicated: usize,
    delivered: usize,
    lost_acknowledged: usize,
    stored_twice: usize,
    publications: usize,
    unknown_stored: usize,
    acknowledged: usize,
}

impl Verdict {
    /// Every acknowledged publication is in the history where it was
    /// acknowledged, no publication is stored twice, and every subscriber
    /// has every publication from where it started, exactly once, in order.
    fn of(run: &Run, ending: &Ending) -> Self {
        let histories = &ending.histories;
        let finals: HashMap<&String, u64> = histories
            .iter()
            .map(|(name, h)| (name, h.keys().next_back().copied().unwrap_or(0)))
            .collect();
        let acknowledged = run.acknowledged.lock().unwrap().clone();
        let lost_acknowledged = acknowledged
            .iter()
            .filter(|(channel, offset, id)| histories[channel].get(offset) != Some(id))
            .count();
        let mut stored = HashSet::new();
        let stored_twice = histories
            .values()
            .flat_map(|h| h.values())
            .filter(|id| !stored.insert(**id))
            .count();
        for (name, h) in histories {
            let offsets: Vec<u64> = h.keys().copied().collect();
            let expected: Vec<u64> = (1..=finals[name]).collect();
            assert_eq!(offsets, expected, "{name}: the history has holes");
        }
        let (mut lost, mut duplicated, mut delivered) = (0, 0, 0);
        for subscriber in &ending.tracks {
            for (name, track) in subscriber {
                let start = track.start.expect("subscribed at least once");
                let mut seen = HashSet::new();
                let mut previous = start;
                for &(offset, id) in &track.got {
                    delivered += 1;
                    if !seen.insert(offset) {
                        duplicated += 1;
                        continue;
                    }
                    assert!(
                        offset > previous,
                        "{name}: offset {offset} after {previous}: out of order"
                    );
                    previous = offset;
                    assert_eq!(
                        histories[name].get(&offset),
                        Some(&id),
                        "{name}: offset {offset} is not what the history holds"
                    );
                }
                lost += (start + 1..=finals[name])
                    .filter(|o| !seen.contains(o))
                    .count();
            }
        }
        Self {
            lost,
            duplicated,
            delivered,
            lost_acknowledged,
            stored_twice,
            publications: histories.values().map(BTreeMap::len).sum(),
            unknown_stored: histories
                .values()
                .flat_map(|h| h.values())
                .filter(|id| ending.unknown.contains(id))
                .count(),
            acknowledged: acknowledged.len(),
        }
    }

    fn summary(&self, run: &Run, ending: &Ending, seconds: u64) -> String {
        format!(
            "connections held at most {}; {} publications stored ({:.0}/s; {} acknowledged; {} in flight when a connection broke, {} of those stored); \
             {} deliveries; {} reconnects; {} exact recoveries, {} refetched from history; \
             lost {}, duplicated {}, acknowledged but not stored {}, stored twice {}",
            run.most_connected.load(Ordering::Relaxed),
            self.publications,
            self.publications as f64 / seconds as f64,
            self.acknowledged,
            ending.unknown.len(),
            self.unknown_stored,
            self.delivered,
            run.reconnects.load(Ordering::Relaxed),
            run.recovered_exactly.load(Ordering::Relaxed),
            run.refetched.load(Ordering::Relaxed),
            self.lost,
            self.duplicated,
            self.lost_acknowledged,
            self.stored_twice,
        )
    }

    fn assert_nothing_lost(&self) {
        assert_eq!(self.lost, 0, "subscribers missed publications");
        assert_eq!(self.duplicated, 0, "subscribers got publications twice");
        assert_eq!(
            self.lost_acknowledged, 0,
            "acknowledged publications were lost"
        );
        assert_eq!(self.stored_twice, 0, "publications were stored twice");
    }
}

/// The soak's length, clients and seed, from the environment.
fn soak_parameters(what: &str) -> (u64, u64, usize, ReplayWith) {
    let seed = env_u64("DUPLEX_SOAK_SEED").unwrap_or_else(rand::random);
    let seconds = env_u64("DUPLEX_HUB_SOAK_SECONDS").unwrap_or(20);
    let clients = env_u64("DUPLEX_HUB_SOAK_CLIENTS").unwrap_or(200) as usize;
    eprintln!("{what}: seed {seed}, {seconds} s, {clients} subscribers");
    (seed, seconds, clients, ReplayWith(seed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "release build: cargo xtask test runs a slice, cargo xtask soak --hub a longer run"]
async fn soak_hub_clients_reconnecting_through_a_server_kill() {
    let (seed, seconds, clients, _replay) = soak_parameters("hub soak");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("duplex.toml");
    std::fs::write(&config, soak_config("")).unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&config, &data, "127.0.0.1:0").await;
    let baseline = proc_status_bytes(node.pid(), "VmRSS");
    let run = new_run(vec![node.addr], seed, node.pid());
    // The RSS sampler: the kernel's own peak (VmHWM) is read at each kill
    // and at the end; sampling adds the moments in between.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (run, peak) = (run.clone(), peak_rss.clone());
        tokio::spawn(async move {
            loop {
                let pid = run.pid.load(Ordering::Relaxed);
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    {
                        peak.fetch_max(kib * 1024, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (subscribers, publishers) = start_clients(&run, clients);

    // Part-way through, SIGKILL the server and start it again on its port.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds * 2 / 5)).await;
    let peak_before_kill = node.kill().await;
    let node = Node::start(&config, &data, &run.node(0).to_string()).await;
    run.pid.store(node.pid(), Ordering::Relaxed);

    // Then a flood nobody on its channel reads.
    let (release, released) = tokio::sync::watch::channel(false);
    let mut never_readers = tokio::task::JoinSet::new();
    for _ in 0..NEVER_READERS {
        never_readers.spawn(never_read(run.clone(), released.clone()));
    }
    let flooder = tokio::spawn(flood(run.clone()));
    tokio::time::sleep_until(started + Duration::from_secs(seconds)).await;

    // Publishing ends; every subscriber reads until it has everything.
    run.stop.store(true, Ordering::Relaxed);
    let flooded = flooder.await.unwrap();
    let channels = (0..CHANNELS).map(channel).chain(["flood".to_owned()]);
    let ending = read_to_the_end(&run, subscribers, publishers, channels).await;
    release.send_replace(true);
    let mut cut_with = Vec::new();
    while let Some(code) = never_readers.join_next().await {
        cut_with.push(code.unwrap());
    }
    sampler.abort();
    let peak = peak_rss
        .load(Ordering::Relaxed)
        .max(peak_before_kill as u64)
        .max(proc_status_bytes(node.pid(), "VmHWM") as u64);
    let verdict = Verdict::of(&run, &ending);
    println!(
        "hub soak: seed {seed}, {seconds} s, {clients} subscribers + {PUBLISHERS} publishers + 1 flooder ({flooded} flooded) + {NEVER_READERS} readers that never read; {}; \
         readers that never read closed with {cut_with:?}; peak RSS {:.1} MiB, {:.1} MiB at start (budget {} MiB)",
        verdict.summary(&run, &ending, seconds),
        peak as f64 / (1 << 20) as f64,
        baseline as f64 / (1 << 20) as f64,
        BUDGET >> 20,
    );
    verdict.assert_nothing_lost();
    assert!(
        cut_with.iter().all(|&code| code == 1013),
        "readers that never read must be cut off as slow consumers (1013): {cut_with:?}"
    );
    assert!(
        peak <= (BUDGET + ALLOWANCE) as u64,
        "the server's peak RSS {peak} passed its budget {BUDGET} + {ALLOWANCE}"
    );
    drop(node);
}

/// Waits (bounded) until every node answers `/healthz` with 200.
async fn all_healthy(run: &Run) {
    let deadline = Instant::now() + LIMIT;
    for &addr in &run.nodes {
        loop {
            if support::http(addr, "GET", "/healthz", &[], None).await.0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} not healthy again in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Three nodes sharing channels through Redis, with clients on all of
/// them, through three failures in turn: a node SIGKILLed (its clients
/// reconnect to the others) and started again; Redis SIGKILLed and started
/// again on its append-only file; one node cut off from Redis through a
/// TCP proxy for longer than its lease, then let back. Nothing
/// acknowledged may be lost, nothing delivered twice, and at the end every
/// node is healthy and presence has no ghosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "release build: cargo xtask test runs a slice, cargo xtask soak --hub a longer run"]
async fn soak_cluster_clients_through_node_and_redis_failures() {
    let (seed, seconds, clients, _replay) = soak_parameters("cluster soak");
    let mut redis = support::redis::RedisServer::start().await;
    let proxy = support::redis::Proxy::start(redis.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut configs = Vec::new();
    for i in 0..3 {
        // The third node reaches Redis through the proxy.
        let url = if i == 2 { proxy.url() } else { redis.url() };
        let config = dir.path().join(format!("node{i}.toml"));
        std::fs::write(&config, soak_config(&format!("redis = [\"{url}\"]\n"))).unwrap();
        let data = dir.path().join(format!("data{i}"));
        nodes.push(Node::start(&config, &data, "127.0.0.1:0").await);
        configs.push((config, data));
    }
    let run = new_run(nodes.iter().map(|n| n.addr).collect(), seed, nodes[0].pid());
    let (subscribers, publishers) = start_clients(&run, clients);
    let started = Instant::now();
    let at = |fraction: u64| started + Duration::from_secs(seconds) * fraction as u32 / 20;

    tokio::time::sleep_until(at(4)).await;
    let killed = nodes.remove(0);
    let addr = killed.addr;
    killed.kill().await;
    let (config, data) = &configs[0];
    nodes.insert(0, Node::start(config, data, &addr.to_string()).await);
    all_healthy(&run).await;

    tokio::time::sleep_until(at(9)).await;
    redis.restart().await;
    all_healthy(&run).await;

    tokio::time::sleep_until(at(13)).await;
    proxy.cut();
    tokio::time::sleep(duplex_server::redis::members::LEASE * 2).await;
    proxy.heal();
    all_healthy(&run).await;

    tokio::time::sleep_until(at(20)).await;
    let ending = read_to_the_end(&run, subscribers, publishers, (0..CHANNELS).map(channel)).await;
    let verdict = Verdict::of(&run, &ending);
    // Everyone has gone: once the leases of what was killed are over,
    // no node shows anyone present.
    let ghosts_until = Instant::now()
        + duplex_server::redis::members::LEASE
        + 3 * duplex_server::redis::members::LEASE_RENEW;
    let mut ghosts = Vec::new();
    for name in (0..CHANNELS).map(channel) {
        for &addr in &run.nodes {
            loop {
                let path = format!("/api/channels/{name}/presence");
                let (status, body) = support::http(addr, "GET", &path, &[], None).await;
                assert_eq!(status, 200, "{body}");
                let members: Value = serde_json::from_str(&body).unwrap();
                if members["members"].as_array().is_some_and(Vec::is_empty) {
                    break;
                }
                if Instant::now() > ghosts_until {
                    ghosts.push(body);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    all_healthy(&run).await;
    println!(
        "cluster soak: seed {seed}, {seconds} s, 3 nodes, {clients} subscribers + {PUBLISHERS} publishers, a node killed, Redis killed, a node cut off from Redis; {}; presence ghosts {}",
        verdict.summary(&run, &ending, seconds),
        ghosts.len(),
    );
    verdict.assert_nothing_lost();
    assert!(ghosts.is_empty(), "presence ghosts: {ghosts:?}");
    drop(nodes);
}
