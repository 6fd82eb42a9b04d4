//! `fanout`: N subscribers on one hub channel of `duplex serve` (the `/ws`
//! protocol of docs/protocol.md) while publishers publish numbered
//! messages through the HTTP API or the hub, at a rate or flat out.
//! Reports deliveries per second, the delivery latency (publish call to
//! arrival at a subscriber) and the publish round trip. Every subscriber
//! must get every publication of every publisher, in order: a gap, a
//! duplicate or a missing one is an error. With `--node`, the subscribers
//! are spread over several nodes sharing the channel (`--redis`), and the
//! publications are made on the first. With `--protocol socket.io`, the
//! subscribers speak Socket.IO instead, to a server with the same publish
//! endpoint (`tests/peers/socketio_hub.js`): the peer row.

mod protocol;

use protocol::Incoming;
pub use protocol::Protocol;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use duplex::{MaybeTlsStream, WebSocket};
use duplex_hub::{Command, ErrorCode, Request, ServerMessage};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::Common;
use crate::progress::Progress;
use crate::report::{Report, Row, latency_histogram};
use crate::server_usage::CpuWatch;
use crate::target::Target;
use crate::wire::{read_some, tcp_connect};

/// What each publisher publishes: its number, a sequence number, and when
/// (ns since the run began), so subscribers check order and latency.
#[derive(serde::Serialize, serde::Deserialize)]
struct Numbered {
    p: u64,
    seq: u64,
    t: u64,
}

/// How publications are made.
#[derive(Clone, Copy, ValueEnum)]
pub enum Via {
    /// `POST /api/publish` over one keep-alive HTTP connection.
    Http,
    /// The hub's `publish` command over one WebSocket (the server's per-connection
    /// rate limit applies: raise --rate-limit on `duplex serve`).
    Hub,
}

/// The options of `fanout`.
#[derive(Args, Clone)]
pub struct FanoutArgs {
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publications per second (0: flat out, one at a time).
    #[arg(short = 'r', long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long to publish.
    #[arg(short = 'd', long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Publish through the HTTP API or the hub.
    #[arg(long, value_enum, default_value = "http")]
    pub via: Via,
    /// The channel (default: a fresh `bench-<pid>-<time>`).
    #[arg(long)]
    pub channel: Option<String>,
    /// API key for the HTTP API, if the server needs one.
    #[arg(long, env = "DUPLEX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Another node sharing the channel (`duplex serve --redis`): the
    /// subscribers are spread evenly over URL and these. Repeatable.
    #[arg(long = "node", value_name = "URL")]
    pub nodes: Vec<String>,
    /// Publishers at once, each on its own connection to URL; --rate is
    /// shared among them.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publications each publisher has unanswered at once with --via hub
    /// (the server stores and answers them in order); HTTP publishers make
    /// one at a time.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub in_flight: usize,
    /// What the subscribers speak: the hub protocol of `duplex serve`, or
    /// Socket.IO 4 (at `/socket.io/`; publications still through
    /// `POST /api/publish`, as `tests/peers/socketio_hub.js` serves it).
    #[arg(long, value_enum, default_value = "duplex")]
    pub protocol: Protocol,
}

/// Subscribes, publishes, and checks every delivery.
pub async fn run(args: &FanoutArgs) -> Result<Report> {
    let target = Target::parse(&args.common.url, args.common.allow_remote)?;
    if target.tls.is_some() {
        bail!(
            "the fanout mode measures plain ws:// or http:// only; wss:// is measured by echo and latency"
        );
    }
    if args.protocol == Protocol::SocketIo && matches!(args.via, Via::Hub) {
        bail!("--protocol socket.io publishes through POST /api/publish: drop --via hub");
    }
    if args.in_flight > 1 && matches!(args.via, Via::Http) {
        bail!("--in-flight: HTTP publishers make one publication at a time; add --via hub");
    }
    let urls = node_urls(&target, args)?;
    let publishers = args.publishers.max(1);
    let channel = args.channel.clone().unwrap_or_else(fresh_channel);
    let base = Instant::now();
    // Per publisher: the highest sequence number published.
    let published: Arc<Vec<AtomicU64>> =
        Arc::new((0..publishers).map(|_| AtomicU64::new(0)).collect());
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let subscribers = subscribe_all(args.protocol, &urls, &channel, args.subscribers).await?;
    let progress = Progress::new(!args.common.json);
    progress.start(args.duration, delivered.clone());
    let mut tasks = Vec::new();
    for ws in subscribers {
        let check = DeliveryCheck::new(base, published.clone(), delivered.clone());
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(check_deliveries(
            ws,
            args.protocol,
            check,
            stop,
        )));
    }
    // The server's CPU from the first publication to the last delivery (and
    // the subscribers' closes, a few ms): not the handshakes and subscribes.
    let watch = CpuWatch::start_if(&args.common.server_pid)?;
    let start = Instant::now();
    let publishing = publish_all(&target, args, &channel, base, &published).await?;
    let publish_elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    let mut row = Row::new(row_name(args, urls.len(), publishers));
    let (errors, hist) = await_checks(tasks).await?;
    row.errors += errors;
    progress.finish();
    if let Some(e) = publishing.failed {
        return Err(e);
    }
    row.errors += publishing.errors;
    row.ops = delivered.load(Ordering::Relaxed);
    row.elapsed = publish_elapsed;
    row.latency = Some(hist);
    if let Some(watch) = watch {
        watch.report(&mut row, "delivery")?;
    }
    report_publications(
        &mut row,
        &published,
        &publishing.round_trips,
        publish_elapsed,
    );
    Ok(Report {
        mode: "fanout",
        url: args.common.url.clone(),
        unit: "deliveries",
        params: json!({ "subscribers": args.subscribers, "rate": args.rate,
                        "duration_s": args.duration.as_secs_f64(), "channel": channel,
                        "nodes": urls, "publishers": publishers,
                        "protocol": args.protocol.to_possible_value().map(|v| v.get_name().to_owned()) }),
        rows: vec![row],
    })
}

/// The WebSocket URLs the subscribers are spread over: URL's, then each
/// `--node`'s.
fn node_urls(target: &Target, args: &FanoutArgs) -> Result<Vec<String>> {
    let mut urls = vec![args.protocol.subscriber_url(&target.host, &target.path)];
    for node in &args.nodes {
        let node = Target::parse(node, args.common.allow_remote)?;
        if node.tls.is_some() {
            bail!("--node: plain ws:// only, like URL");
        }
        urls.push(args.protocol.subscriber_url(&node.host, &node.path));
    }
    Ok(urls)
}

/// A channel no earlier run used: `bench-<pid>-<time>`.
fn fresh_channel() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("bench-{}-{t}", std::process::id())
}

/// The report's name of the run.
fn row_name(args: &FanoutArgs, nodes: usize, publishers: usize) -> String {
    format!(
        "fanout {} subs on {} node(s), {} publisher(s), {}",
        args.subscribers,
        nodes,
        publishers,
        if args.rate > 0.0 {
            format!("{} pub/s", args.rate)
        } else {
            "flat out".into()
        },
    ) + &match args.via {
        Via::Hub if args.in_flight > 1 => format!(", hub, {} in flight", args.in_flight),
        Via::Hub => ", hub".into(),
        Via::Http => String::new(),
    }
}

/// The publish round trips' percentiles and the publications made, in
/// all and per second.
fn report_publications(
    row: &mut Row,
    published: &[AtomicU64],
    round_trips: &Histogram<u64>,
    publish_elapsed: Duration,
) {
    let pubs: u64 = published.iter().map(|p| p.load(Ordering::Relaxed)).sum();
    let pubs = pubs as f64;
    for (name, q) in [("publish_p50_us", 0.5), ("publish_p99_us", 0.99)] {
        let us = round_trips.value_at_quantile(q) as f64 / 1000.0;
        row.extra.push((name.into(), us, String::new()));
    }
    row.extra.push(("publications".into(), pubs, String::new()));
    row.extra.push((
        "pub_per_s".into(),
        pubs / publish_elapsed.as_secs_f64(),
        String::new(),
    ));
}

/// `count` subscribers, spread over `urls`, all subscribed before anything
/// is published.
async fn subscribe_all(
    protocol: Protocol,
    urls: &[String],
    channel: &str,
    count: usize,
) -> Result<Vec<WebSocket<MaybeTlsStream>>> {
    let mut subscribers = Vec::new();
    for i in 0..count {
        let url = &urls[i % urls.len()];
        let mut ws = duplex::connect(url)
            .await
            .with_context(|| format!("subscriber connect to {url}"))?;
        protocol.subscribe(&mut ws, channel).await?;
        subscribers.push(ws);
    }
    Ok(subscribers)
}

/// One subscriber's deliveries until it is told to stop and has every
/// publication published (or 5 s went by without a message); returns its
/// errors, missing publications included, and its delivery latencies.
async fn check_deliveries(
    mut ws: WebSocket<MaybeTlsStream>,
    protocol: Protocol,
    mut check: DeliveryCheck,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, Histogram<u64>) {
    let mut finished = false;
    loop {
        let msg = tokio::select! {
            m = ws.recv() => m,
            _ = stop.changed(), if !finished => {
                // Done already if the last publication arrived before the
                // stop: do not wait for more.
                finished = true;
                if check.caught_up() {
                    break;
                }
                continue;
            }
            () = tokio::time::sleep(Duration::from_secs(5)), if finished => break,
        };
        let Some(Ok(msg)) = msg else {
            check.on_connection_lost();
            break;
        };
        let delivered = match protocol.classify(&msg) {
            Incoming::Publication(data) => check.on_publication(&data),
            Incoming::Ping => {
                if ws.send(protocol.pong()).await.is_err() {
                    check.on_connection_lost();
                    break;
                }
                false
            }
            Incoming::Other => false,
            Incoming::Malformed => {
                check.errors += 1;
                false
            }
        };
        if delivered && finished && check.caught_up() {
            break;
        }
    }
    let missing = check.missing();
    let _ = ws.close(duplex::CloseCode::NORMAL, "").await;
    (check.errors + missing, check.latency)
}

/// Waits for every subscriber's check: their errors and delivery
/// latencies, together.
async fn await_checks(
    tasks: Vec<JoinHandle<(u64, Histogram<u64>)>>,
) -> Result<(u64, Histogram<u64>)> {
    let mut errors = 0;
    let mut hist = latency_histogram();
    for task in tasks {
        let (e, h) = task.await?;
        errors += e;
        hist.add(&h)?;
    }
    Ok((errors, hist))
}

/// What one subscriber checks of its deliveries: every publisher's
/// publications in order, without a gap or a duplicate, and their latency.
struct DeliveryCheck {
    /// When the run began: the publications' times count from it.
    base: Instant,
    /// Per publisher: the highest sequence number published.
    published: Arc<Vec<AtomicU64>>,
    /// Deliveries to all the subscribers.
    delivered: Arc<AtomicU64>,
    /// Per publisher: the last sequence number delivered here.
    last: Vec<u64>,
    latency: Histogram<u64>,
    errors: u64,
}

impl DeliveryCheck {
    fn new(base: Instant, published: Arc<Vec<AtomicU64>>, delivered: Arc<AtomicU64>) -> Self {
        Self {
            base,
            last: vec![0; published.len()],
            published,
            delivered,
            latency: latency_histogram(),
            errors: 0,
        }
    }

    /// A publication's data: it must be the next of its publisher's.
    /// Returns whether it was one of ours.
    fn on_publication(&mut self, data: &str) -> bool {
        let Some((seq, t, p)) = serde_json::from_str::<Numbered>(data)
            .ok()
            .and_then(|n| Some((n.seq, n.t, self.last.get_mut(n.p as usize)?)))
        else {
            self.errors += 1;
            return false;
        };
        if seq != *p + 1 {
            self.errors += 1;
        }
        *p = seq;
        let now = self.base.elapsed().as_nanos() as u64;
        self.latency.saturating_record(now.saturating_sub(t));
        self.delivered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The connection ended or failed before the subscriber was done.
    fn on_connection_lost(&mut self) {
        self.errors += 1;
    }

    /// Whether every publication published so far was delivered here.
    fn caught_up(&self) -> bool {
        let behind = |(l, p): (&u64, &AtomicU64)| *l < p.load(Ordering::Relaxed);
        !self.last.iter().zip(self.published.iter()).any(behind)
    }

    /// Publications published that never arrived here.
    fn missing(&self) -> u64 {
        self.last
            .iter()
            .zip(self.published.iter())
            .map(|(l, p)| p.load(Ordering::Relaxed).saturating_sub(*l))
            .sum()
    }
}

/// What the publishers counted, and the failure of one, if one failed.
struct PublishTally {
    errors: u64,
    round_trips: Histogram<u64>,
    failed: Option<anyhow::Error>,
}

/// Runs the `--publishers` publishers at once until the duration ends. A
/// publisher's failure is returned in the tally, to be reported once the
/// subscribers are stopped.
async fn publish_all(
    target: &Target,
    args: &FanoutArgs,
    channel: &str,
    base: Instant,
    published: &Arc<Vec<AtomicU64>>,
) -> Result<PublishTally> {
    let mut publishing = Vec::new();
    for k in 0..published.len() {
        let publisher = Publisher {
            target: target.clone(),
            args: args.clone(),
            channel: channel.to_owned(),
            base,
            k,
            published: published.clone(),
        };
        publishing.push(tokio::spawn(publisher.run()));
    }
    let mut tally = PublishTally {
        errors: 0,
        round_trips: latency_histogram(),
        failed: None,
    };
    for task in publishing {
        match task.await? {
            Ok((errors, h)) => {
                tally.errors += errors;
                tally.round_trips.add(&h)?;
            }
            Err(e) => tally.failed = Some(e),
        }
    }
    Ok(tally)
}

/// Publisher `k`: its own connection to URL.
struct Publisher {
    target: Target,
    args: FanoutArgs,
    channel: String,
    /// When the run began: the publications' times count from it.
    base: Instant,
    k: usize,
    /// Per publisher: the highest sequence number published.
    published: Arc<Vec<AtomicU64>>,
}

impl Publisher {
    /// Publishes `seq` 1, 2, ... until the duration ends; returns the
    /// errors and the publish round trips (ns).
    async fn run(self) -> Result<(u64, Histogram<u64>)> {
        match self.args.via {
            Via::Http => {
                let stream = tcp_connect(self.target.addr, None).await?;
                self.run_http(stream).await
            }
            Via::Hub => {
                let url = format!("ws://{}{}", self.target.host, self.target.path);
                let ws = duplex::connect(&url).await?;
                self.run_hub(ws).await
            }
        }
    }

    /// The time between two publications of this publisher, if paced.
    fn interval(&self) -> Option<Duration> {
        let share = self.args.rate / self.args.publishers.max(1) as f64;
        (share > 0.0).then(|| Duration::from_secs_f64(1.0 / share))
    }

    /// Publication `seq`'s data, made now.
    fn numbered(&self, seq: u64) -> Result<(serde_json::Value, u64)> {
        let t = self.base.elapsed().as_nanos() as u64;
        let data = serde_json::to_value(Numbered {
            p: self.k as u64,
            seq,
            t,
        })?;
        Ok((data, t))
    }

    /// Publishes through `POST /api/publish`, one publication at a time.
    async fn run_http(self, mut stream: TcpStream) -> Result<(u64, Histogram<u64>)> {
        let deadline = Instant::now() + self.args.duration;
        let interval = self.interval();
        let mut round_trips = latency_histogram();
        let mut next_at = Instant::now();
        let mut errors = 0;
        let mut buf = vec![0u8; 16 * 1024];
        let mut seq = 0u64;
        while Instant::now() < deadline {
            if let Some(step) = interval {
                tokio::time::sleep_until(next_at.into()).await;
                next_at += step;
            }
            seq += 1;
            let (data, t) = self.numbered(seq)?;
            let refused = self.publish_http(&mut stream, &mut buf, data, seq).await?;
            let now = self.base.elapsed().as_nanos() as u64;
            round_trips.saturating_record(now.saturating_sub(t));
            if let Some(why) = refused {
                errors += 1;
                // A refused publication is never delivered: don't wait for it.
                self.published[self.k].store(seq - 1, Ordering::Relaxed);
                seq -= 1;
                if errors > 10 {
                    bail!("publishing keeps failing: {why}{}", refusal_hint(&why));
                }
            }
        }
        Ok((errors, round_trips))
    }

    /// Publishes with the hub's `publish` command, up to `--in-flight`
    /// unanswered at once. A refused publication is retried under the same
    /// number if it was the newest; otherwise later ones are on their way
    /// already, and the run ends with the refusal.
    async fn run_hub(self, mut ws: WebSocket<MaybeTlsStream>) -> Result<(u64, Histogram<u64>)> {
        let deadline = Instant::now() + self.args.duration;
        let interval = self.interval();
        let window = self.args.in_flight.max(1);
        let mut round_trips = latency_histogram();
        let mut next_at = Instant::now();
        let mut errors = 0;
        let mut seq = 0u64;
        // Sequence number and time sent, of each publication unanswered.
        let mut unanswered: VecDeque<(u64, u64)> = VecDeque::with_capacity(window);
        loop {
            let now = Instant::now();
            let paced = |next_at: Instant| interval.is_none() || next_at <= now;
            while unanswered.len() < window && now < deadline && paced(next_at) {
                if let Some(step) = interval {
                    next_at += step;
                }
                seq += 1;
                let (data, t) = self.numbered(seq)?;
                let publish = Command::Publish {
                    channel: self.channel.clone(),
                    data,
                };
                // Publications are published before the reply: count first.
                self.published[self.k].store(seq, Ordering::Relaxed);
                ws.feed(Request::new(seq, publish).encode()).await?;
                unanswered.push_back((seq, t));
            }
            ws.flush().await?;
            let more = unanswered.len() < window && now < deadline;
            if unanswered.is_empty() && !more {
                break;
            }
            let msg = if more && interval.is_some() {
                // Only the pace holds the next one back.
                tokio::select! {
                    msg = ws.recv() => msg,
                    () = tokio::time::sleep_until(next_at.into()) => continue,
                }
            } else {
                ws.recv().await
            };
            let msg = msg.context("hub closed")??;
            let Some(text) = msg.as_text() else { continue };
            let answer = ServerMessage::parse(text)?;
            let Some(at) = unanswered.iter().position(|(s, _)| Some(*s) == answer.id()) else {
                continue;
            };
            let (answered, t) = unanswered.remove(at).expect("just found");
            let now = self.base.elapsed().as_nanos() as u64;
            round_trips.saturating_record(now.saturating_sub(t));
            if let ServerMessage::Error { error, .. } = answer {
                let why = format!("{}: {}", error.code.name(), error.message);
                errors += 1;
                if answered != seq || errors > 10 {
                    bail!("publishing keeps failing: {why}{}", refusal_hint(&why));
                }
                // Never delivered: don't wait for it, and use its number again.
                seq -= 1;
                self.published[self.k].store(seq, Ordering::Relaxed);
            }
        }
        Ok((errors, round_trips))
    }

    /// Publishes `data` as `seq` with `POST /api/publish`; returns why it
    /// was refused, if it was.
    async fn publish_http(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        data: serde_json::Value,
        seq: u64,
    ) -> Result<Option<String>> {
        let body = json!({"channel": self.channel, "data": data}).to_string();
        let auth = self
            .args
            .api_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            self.target.host,
            body.len()
        );
        // Publications are published before the reply: count first.
        self.published[self.k].store(seq, Ordering::Relaxed);
        stream.write_all(req.as_bytes()).await?;
        http_reply(stream, buf).await
    }
}

/// What to do about publications that keep being refused for `why`.
fn refusal_hint(why: &str) -> &'static str {
    if why.starts_with(ErrorCode::RateLimited.name()) {
        " (the server's --rate-limit bounds commands per hub connection: \
         publish --via http, add --publishers, or raise the server's limit)"
    } else {
        ""
    }
}

/// Reads one HTTP response: why the publication was refused, if it was.
async fn http_reply(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<String>> {
    let mut head = Vec::new();
    loop {
        let n = read_some(stream, buf).await?;
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = std::str::from_utf8(&head[..end])?.to_owned();
            let len: usize = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while head.len() < end + 4 + len {
                let n = read_some(stream, buf).await?;
                head.extend_from_slice(&buf[..n]);
            }
            if !text.starts_with("HTTP/1.1 2") {
                let status = text.lines().next().unwrap_or_default();
                let body = String::from_utf8_lossy(&head[end + 4..]);
                return Ok(Some(format!("{status} {body}")));
            }
            return Ok(None);
        }
    }
}
