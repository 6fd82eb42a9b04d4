//! `fanout`: N subscribers on one hub channel of `duplex serve` (the `/ws`
//! protocol of docs/protocol.md) while publishers publish numbered
//! messages through the HTTP API or the hub, at a rate or flat out.
//! Reports deliveries per second, the delivery latency (publish call to
//! arrival at a subscriber) and the publish round trip. Every subscriber
//! must get every publication of every publisher, in order: a gap, a
//! duplicate or a missing one is an error. With `--node`, the subscribers
//! are spread over several nodes sharing the channel (`--redis`), and the
//! publications are made on the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use duplex_hub::{Command, ErrorCode, Push, Request, ServerMessage};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::Common;
use crate::progress::Progress;
use crate::report::{Report, Row, latency_histogram};
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
    /// Publishers at once, each on its own connection to URL, each one
    /// publication at a time; --rate is shared among them.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
}

/// Subscribes, publishes, and checks every delivery.
pub async fn run(args: &FanoutArgs) -> Result<Report> {
    let target = Target::parse(&args.common.url, args.common.allow_remote)?;
    if target.tls.is_some() {
        bail!(
            "the fanout mode measures plain ws:// or http:// only; wss:// is measured by echo and latency"
        );
    }
    let mut urls = vec![format!("ws://{}{}", target.host, target.path)];
    for node in &args.nodes {
        let node = Target::parse(node, args.common.allow_remote)?;
        if node.tls.is_some() {
            bail!("--node: plain ws:// only, like URL");
        }
        urls.push(format!("ws://{}{}", node.host, node.path));
    }
    let publishers = args.publishers.max(1);
    let channel = args.channel.clone().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("bench-{}-{t}", std::process::id())
    });
    let base = Instant::now();
    // Per publisher: the highest sequence number published.
    let published: Arc<Vec<AtomicU64>> =
        Arc::new((0..publishers).map(|_| AtomicU64::new(0)).collect());
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let url = &urls[i % urls.len()];
        let mut ws = duplex::connect(url)
            .await
            .with_context(|| format!("subscriber connect to {url}"))?;
        let subscribe = Command::Subscribe {
            channel: channel.clone(),
            since: None,
            presence: Some(false),
        };
        ws.send(Request::new(1, subscribe).encode()).await?;
        loop {
            let msg = ws.recv().await.context("closed while subscribing")??;
            let Some(text) = msg.as_text() else { continue };
            match ServerMessage::parse(text)? {
                ServerMessage::Error { id: Some(1), error } => bail!("subscribe failed: {error}"),
                ServerMessage::Reply { id: Some(1), .. } => break,
                _ => {}
            }
        }
        subscribers.push(ws);
    }
    let progress = Progress::new(!args.common.json);
    progress.start(args.duration, delivered.clone());
    let mut tasks = Vec::new();
    for mut ws in subscribers {
        let (published, delivered) = (published.clone(), delivered.clone());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let mut last = vec![0u64; published.len()];
            let mut errors = 0u64;
            let mut finished = false;
            loop {
                let msg = tokio::select! {
                    m = ws.recv() => m,
                    _ = stop.changed(), if !finished => { finished = true; continue; }
                    () = tokio::time::sleep(Duration::from_secs(5)), if finished => break,
                };
                let Some(Ok(msg)) = msg else {
                    errors += 1;
                    break;
                };
                let Some(text) = msg.as_text() else { continue };
                let publication = match ServerMessage::parse(text) {
                    Ok(ServerMessage::Push(Push::Publication(p))) => p,
                    Ok(_) => continue,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let Some((seq, t, p)) = serde_json::from_str::<Numbered>(publication.data.get())
                    .ok()
                    .and_then(|n| Some((n.seq, n.t, last.get_mut(n.p as usize)?)))
                else {
                    errors += 1;
                    continue;
                };
                if seq != *p + 1 {
                    errors += 1;
                }
                *p = seq;
                let now = base.elapsed().as_nanos() as u64;
                hist.saturating_record(now.saturating_sub(t));
                delivered.fetch_add(1, Ordering::Relaxed);
                let behind = |(l, p): (&u64, &AtomicU64)| *l < p.load(Ordering::Relaxed);
                if finished && !last.iter().zip(published.iter()).any(behind) {
                    break;
                }
            }
            let missing: u64 = last
                .iter()
                .zip(published.iter())
                .map(|(l, p)| p.load(Ordering::Relaxed).saturating_sub(*l))
                .sum();
            let _ = ws.close(duplex::CloseCode::NORMAL, "").await;
            (errors + missing, hist)
        }));
    }
    let start = Instant::now();
    let mut publishing = Vec::new();
    for k in 0..publishers {
        let (target, args, channel, published) = (
            target.clone(),
            args.clone(),
            channel.clone(),
            published.clone(),
        );
        publishing.push(tokio::spawn(async move {
            publish(&target, &args, &channel, base, (k, &published[k])).await
        }));
    }
    let mut publish_errors = 0;
    let mut round_trips = latency_histogram();
    let mut failed = None;
    for task in publishing {
        match task.await? {
            Ok((errors, h)) => {
                publish_errors += errors;
                round_trips.add(&h)?;
            }
            Err(e) => failed = Some(e),
        }
    }
    let publish_elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    let mut row = Row::new(format!(
        "fanout {} subs on {} node(s), {} publisher(s), {}",
        args.subscribers,
        urls.len(),
        publishers,
        if args.rate > 0.0 {
            format!("{} pub/s", args.rate)
        } else {
            "flat out".into()
        }
    ));
    let mut hist = latency_histogram();
    for task in tasks {
        let (errors, h) = task.await?;
        row.errors += errors;
        hist.add(&h)?;
    }
    progress.finish();
    if let Some(e) = failed {
        return Err(e);
    }
    row.errors += publish_errors;
    row.ops = delivered.load(Ordering::Relaxed);
    row.elapsed = publish_elapsed;
    row.latency = Some(hist);
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
    Ok(Report {
        mode: "fanout",
        url: args.common.url.clone(),
        unit: "deliveries",
        params: json!({ "subscribers": args.subscribers, "rate": args.rate,
                        "duration_s": args.duration.as_secs_f64(), "channel": channel,
                        "nodes": urls, "publishers": publishers }),
        rows: vec![row],
    })
}

/// Publishes `seq` 1, 2, ... as publisher `k` until the duration ends;
/// returns the errors and the publish round trips (ns).
async fn publish(
    target: &Target,
    args: &FanoutArgs,
    channel: &str,
    base: Instant,
    (k, published): (usize, &AtomicU64),
) -> Result<(u64, hdrhistogram::Histogram<u64>)> {
    let deadline = Instant::now() + args.duration;
    let share = args.rate / args.publishers.max(1) as f64;
    let interval = (share > 0.0).then(|| Duration::from_secs_f64(1.0 / share));
    let mut round_trips = latency_histogram();
    let mut next_at = Instant::now();
    let mut errors = 0;
    let mut http = None;
    let mut hub = None;
    match args.via {
        Via::Http => http = Some(tcp_connect(target.addr, None).await?),
        Via::Hub => {
            let url = format!("ws://{}{}", target.host, target.path);
            hub = Some(duplex::connect(&url).await?);
        }
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        if let Some(step) = interval {
            tokio::time::sleep_until(next_at.into()).await;
            next_at += step;
        }
        seq += 1;
        let t = base.elapsed().as_nanos() as u64;
        let data = serde_json::to_value(Numbered {
            p: k as u64,
            seq,
            t,
        })?;
        // Why the publication was refused, if it was.
        let refused = match (&mut http, &mut hub) {
            (Some(stream), _) => {
                let body = json!({"channel": channel, "data": data}).to_string();
                let auth = args
                    .api_key
                    .as_ref()
                    .map(|k| format!("Authorization: Bearer {k}\r\n"))
                    .unwrap_or_default();
                let req = format!(
                    "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
                    target.host,
                    body.len()
                );
                // Publications are published before the reply: count first.
                published.store(seq, Ordering::Relaxed);
                stream.write_all(req.as_bytes()).await?;
                http_reply(stream, &mut buf).await?
            }
            (None, Some(ws)) => {
                let publish = Command::Publish {
                    channel: channel.to_owned(),
                    data: data.clone(),
                };
                published.store(seq, Ordering::Relaxed);
                ws.send(Request::new(seq, publish).encode()).await?;
                loop {
                    let msg = ws.recv().await.context("hub closed")??;
                    let Some(text) = msg.as_text() else { continue };
                    let answer = ServerMessage::parse(text)?;
                    if answer.id() == Some(seq) {
                        break match answer {
                            ServerMessage::Error { error, .. } => {
                                Some(format!("{}: {}", error.code.name(), error.message))
                            }
                            _ => None,
                        };
                    }
                }
            }
            _ => unreachable!("one publisher is set"),
        };
        let now = base.elapsed().as_nanos() as u64;
        round_trips.saturating_record(now.saturating_sub(t));
        if let Some(why) = refused {
            errors += 1;
            // A refused publication is never delivered: don't wait for it.
            published.store(seq - 1, Ordering::Relaxed);
            seq -= 1;
            if errors > 10 {
                let hint = if why.starts_with(ErrorCode::RateLimited.name()) {
                    " (the server's --rate-limit bounds commands per hub connection: \
                     publish --via http, add --publishers, or raise the server's limit)"
                } else {
                    ""
                };
                bail!("publishing keeps failing: {why}{hint}");
            }
        }
    }
    Ok((errors, round_trips))
}

/// Reads one HTTP response: why the publication was refused, if it was.
async fn http_reply(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Result<Option<String>> {
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
