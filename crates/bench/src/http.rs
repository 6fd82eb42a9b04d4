//! `http`: the same payloads as HTTP/1.1 POST request-response against an
//! echo endpoint (`duplex serve` has `POST /echo-http`), once with keep-alive
//! and once with a new connection per request — what WebSocket saves, in
//! numbers. Every response body is checked against the request's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
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

async fn measure(
    target: &Target,
    args: &HttpArgs,
    keep_alive: bool,
    progress: &Progress,
) -> Result<Row> {
    let body = Arc::new(payload(args.size));
    let request = Arc::new(
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
        .concat(),
    );
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    progress.start(args.duration, done.clone());
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (target, body, request, done) =
            (target.clone(), body.clone(), request.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let mut errors = 0u64;
            let mut ok = 0u64;
            let mut conn: Option<TcpStream> = None;
            let mut buf = vec![0u8; 64 * 1024];
            while Instant::now() < deadline {
                let t = Instant::now();
                let stream = match conn.take() {
                    Some(s) => s,
                    None => match tcp_connect(target.addr, None).await {
                        Ok(s) => s,
                        Err(e) => {
                            errors += 1;
                            eprintln!("duplex bench: connect failed: {e:#}");
                            break;
                        }
                    },
                };
                match exchange(stream, &request, &body, &mut buf).await {
                    Ok(stream) => {
                        hist.saturating_record(t.elapsed().as_nanos() as u64);
                        ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                        if keep_alive {
                            conn = Some(stream);
                        }
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("duplex bench: request failed: {e:#}");
                        }
                        errors += 1;
                        if errors > 100 {
                            break;
                        }
                    }
                }
            }
            (ok, errors, hist)
        }));
    }
    let name = format!(
        "http {} {}x1 {}",
        if keep_alive { "keep-alive" } else { "new-conn" },
        args.connections,
        show_size(args.size)
    );
    let mut row = Row::new(name);
    let mut hist = latency_histogram();
    for task in tasks {
        let (ok, errors, h) = task.await?;
        row.ops += ok;
        row.errors += errors;
        hist.add(&h)?;
    }
    row.elapsed = start.elapsed();
    progress.finish();
    row.bytes = row.ops * args.size as u64;
    row.latency = Some(hist);
    Ok(row)
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
