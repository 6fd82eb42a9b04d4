//! `http`: the same payloads as HTTP/1.1 POST request-response against an
//! echo endpoint (`duplex serve` has `POST /echo-http`), once with keep-alive
//! and once with a new connection per request — what WebSocket saves, in
//! numbers. Every response body is checked against the request's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::progress::Progress;
use crate::report::{Report, Row, latency_histogram};
use crate::target::Target;
use crate::wire::{payload, read_some, tcp_connect};
use crate::{Common, parse_size, show_size};

/// The options of `http`.
#[derive(Args)]
pub struct HttpArgs {
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Connections (each with one request in flight).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,
    /// Body size in bytes (k/K = KiB, m/M = MiB).
    #[arg(short = 's', long, default_value = "16", value_parser = parse_size)]
    pub size: usize,
    /// How long each of the two runs lasts.
    #[arg(short = 'd', long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Only the keep-alive run.
    #[arg(long, conflicts_with = "only_new_connection")]
    pub only_keep_alive: bool,
    /// Only the run with a new connection per request.
    #[arg(long)]
    pub only_new_connection: bool,
}

/// Runs the keep-alive and the new-connection runs.
pub async fn run(args: &HttpArgs) -> Result<Report> {
    let target = Target::parse(&args.common.url, args.common.allow_remote)?;
    if target.tls.is_some() {
        bail!(
            "the http mode measures plain ws:// or http:// only; wss:// is measured by echo and latency"
        );
    }
    let mut rows = Vec::new();
    for keep_alive in [true, false] {
        if (keep_alive && args.only_new_connection) || (!keep_alive && args.only_keep_alive) {
            continue;
        }
        let progress = Progress::new(!args.common.json);
        rows.push(measure(&target, args, keep_alive, &progress).await?);
    }
    Ok(Report {
        mode: "http",
        url: args.common.url.clone(),
        unit: "requests",
        params: json!({ "connections": args.connections, "size": args.size,
                        "duration_s": args.duration.as_secs_f64() }),
        rows,
    })
}

/// One run: `--connections` clients, each with one request in flight until
/// the duration ends; one [`Row`] of results.
async fn measure(
    target: &Target,
    args: &HttpArgs,
    keep_alive: bool,
    progress: &Progress,
) -> Result<Row> {
    let body = Arc::new(payload(args.size));
    let request = Arc::new(post_request(target, &body, keep_alive));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    progress.start(args.duration, done.clone());
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let client = Client {
            target: target.clone(),
            body: body.clone(),
            request: request.clone(),
            done: done.clone(),
            deadline,
            keep_alive,
        };
        tasks.push(tokio::spawn(client.run()));
    }
    let mut row = Row::new(row_name(args, keep_alive));
    let mut hist = latency_histogram();
    for task in tasks {
        let tally = task.await?;
        row.ops += tally.ok;
        row.errors += tally.errors;
        hist.add(&tally.latency)?;
    }
    row.elapsed = start.elapsed();
    progress.finish();
    row.bytes = row.ops * args.size as u64;
    row.latency = Some(hist);
    Ok(row)
}

/// The whole POST request, head and `body`; asking the server to close
/// after it unless `keep_alive`.
fn post_request(target: &Target, body: &[u8], keep_alive: bool) -> Vec<u8> {
    [
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n{}\r\n",
            target.path,
            target.host,
            body.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        )
        .into_bytes(),
        body.to_vec(),
    ]
    .concat()
}

/// The report's name of one run.
fn row_name(args: &HttpArgs, keep_alive: bool) -> String {
    format!(
        "http {} {}x1 {}",
        if keep_alive { "keep-alive" } else { "new-conn" },
        args.connections,
        show_size(args.size)
    )
}

/// One client of a run: requests one at a time until the deadline, on one
/// kept-alive connection or a new connection each.
struct Client {
    target: Target,
    body: Arc<Vec<u8>>,
    request: Arc<Vec<u8>>,
    /// Requests answered by all the clients, for the progress bar.
    done: Arc<AtomicU64>,
    deadline: Instant,
    keep_alive: bool,
}

/// What one client counted.
struct Tally {
    ok: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Client {
    async fn run(self) -> Tally {
        let mut tally = Tally {
            ok: 0,
            errors: 0,
            latency: latency_histogram(),
        };
        let mut conn: Option<TcpStream> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < self.deadline {
            let t = Instant::now();
            let stream = match conn.take() {
                Some(s) => s,
                None => match tcp_connect(self.target.addr, None).await {
                    Ok(s) => s,
                    Err(e) => {
                        tally.errors += 1;
                        eprintln!("duplex bench: connect failed: {e:#}");
                        break;
                    }
                },
            };
            match exchange(stream, &self.request, &self.body, &mut buf).await {
                Ok(stream) => {
                    tally
                        .latency
                        .saturating_record(t.elapsed().as_nanos() as u64);
                    tally.ok += 1;
                    self.done.fetch_add(1, Ordering::Relaxed);
                    if self.keep_alive {
                        conn = Some(stream);
                    }
                }
                Err(e) => {
                    if tally.errors == 0 {
                        eprintln!("duplex bench: request failed: {e:#}");
                    }
                    tally.errors += 1;
                    if tally.errors > 100 {
                        break;
                    }
                }
            }
        }
        tally
    }
}

/// Sends one request and checks the response: status 200 and the same body.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
    body: &[u8],
    buf: &mut [u8],
) -> Result<TcpStream> {
    stream.write_all(request).await?;
    let mut head = Vec::new();
    let (header_end, content_length) = loop {
        let n = read_some(&mut stream, buf).await?;
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = std::str::from_utf8(&head[..end])?;
            if !text.starts_with("HTTP/1.1 200") {
                bail!("response: {}", text.lines().next().unwrap_or_default());
            }
            let len = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            let Some(len) = len else {
                bail!("response without Content-Length")
            };
            break (end + 4, len);
        }
        if head.len() > 64 * 1024 {
            bail!("response header too long");
        }
    };
    if content_length != body.len() {
        bail!(
            "response body of {content_length} bytes, sent {}",
            body.len()
        );
    }
    let mut got = head.len() - header_end;
    if got > content_length {
        bail!("more bytes than the response's body");
    }
    if head[header_end..] != body[..got] {
        bail!("response body differs from the request's");
    }
    while got < content_length {
        let n = read_some(&mut stream, buf).await?;
        if got + n > content_length || buf[..n] != body[got..got + n] {
            bail!("response body differs from the request's");
        }
        got += n;
    }
    Ok(stream)
}
