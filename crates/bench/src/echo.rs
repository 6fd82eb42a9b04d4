//! Closed-loop echo: C connections, each keeping P messages of S bytes in
//! flight; every echo is checked, every round trip timed.
//!
//! Each connection writes its initial window in one write, then, per read,
//! as many new messages as that read completed — again in one write — so the
//! client spends one syscall per batch, like the servers it measures.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;

use crate::progress::Progress;
use crate::report::{Row, latency_histogram};
use crate::server_usage::CpuWatch;
use crate::target::Target;
use crate::wire::{
    EchoChecker, compressed_frame, json_payload, masked_frame, masked_payload, payload, read_some,
    ws_connect_with,
};

/// What one echo run does.
#[derive(Debug, Clone)]
pub struct EchoPlan {
    /// Connections.
    pub connections: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// How long to send new messages.
    pub duration: Duration,
    /// Stop after this many messages in all (0: no limit).
    pub max_messages: u64,
    /// Text frames instead of binary.
    pub text: bool,
    /// The server is a plain TCP echo returning our frames byte for byte.
    pub mirror: bool,
    /// Negotiate permessage-deflate and send compressed JSON-like text.
    pub compress: bool,
    /// Open the connections as streams of HTTP/2 connections (RFC 8441).
    pub http2: bool,
    /// The server's processes, whose CPU time over the measured window is
    /// reported per message (none: not reported).
    pub server_pids: Vec<u32>,
}

/// Runs the plan on the current runtime; one [`Row`] of results.
pub async fn run(
    target: &Target,
    plan: &EchoPlan,
    name: String,
    progress: &Progress,
) -> Result<Row> {
    if plan.connections == 0 || plan.pipeline == 0 {
        bail!("--connections and --pipeline must be at least 1");
    }
    if plan.size.saturating_mul(plan.pipeline) > 64 << 20 {
        bail!("size × pipeline above 64 MiB per connection");
    }
    if plan.compress && plan.mirror {
        bail!("--compress needs a WebSocket server, not a mirror");
    }
    let frame = Arc::new(if plan.compress {
        compressed_frame(&json_payload(plan.size), plan.text)
    } else {
        masked_frame(&payload(plan.size), plan.text)
    });
    if plan.http2 && plan.mirror {
        bail!("--http2 needs a WebSocket server, not a mirror");
    }
    let streams = if plan.http2 {
        crate::wire::h2_streams(target, plan.connections, plan.compress).await?
    } else {
        let mut streams = Vec::with_capacity(plan.connections);
        for _ in 0..plan.connections {
            streams.push(ws_connect_with(target, None, plan.compress).await?);
        }
        streams
    };
    let done = Arc::new(AtomicU64::new(0));
    // Each connection takes messages from one shared budget when capped.
    let budget = Arc::new(AtomicU64::new(if plan.max_messages == 0 {
        u64::MAX
    } else {
        plan.max_messages
    }));
    let watch = CpuWatch::start_if(&plan.server_pids)?;
    let start = Instant::now();
    let deadline = start + plan.duration;
    progress.start(plan.duration, done.clone());
    let mut tasks = Vec::new();
    for (stream, leftover) in streams {
        let frame = frame.clone();
        let done = done.clone();
        let budget = budget.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            connection(stream, leftover, &frame, &plan, deadline, &done, &budget).await
        }));
    }
    let mut row = Row::new(name);
    let mut hist = latency_histogram();
    for task in tasks {
        match task.await? {
            Ok(r) => {
                row.ops += r.echoed;
                row.errors += r.errors;
                hist.add(&r.latency)?;
            }
            Err(e) => {
                row.errors += 1;
                eprintln!("duplex bench: connection failed: {e:#}");
            }
        }
    }
    row.elapsed = start.elapsed();
    if let Some(watch) = watch {
        watch.report(&mut row, "msg")?;
    }
    progress.finish();
    row.bytes = row.ops * plan.size as u64;
    row.latency = Some(hist);
    Ok(row)
}

struct ConnResult {
    echoed: u64,
    errors: u64,
    latency: Histogram<u64>,
}

/// One connection's closed loop: the initial window, then as many new
/// messages as each read completed, until the deadline or the budget ends
/// and every message sent has come back.
async fn connection(
    mut stream: crate::wire::BenchStream,
    leftover: Vec<u8>,
    frame: &[u8],
    plan: &EchoPlan,
    deadline: Instant,
    done: &AtomicU64,
    budget: &AtomicU64,
) -> Result<ConnResult> {
    let expected = expected_echo(plan);
    let mut checker = EchoChecker::new(&expected, plan.text, plan.mirror);
    if plan.compress {
        checker = checker.compressed();
    }
    let batch = frame.repeat(plan.pipeline);
    let mut in_flight = InFlight::new(plan.pipeline);
    let mut echoed = 0u64;
    let mut buf = vec![0u8; 256 * 1024];

    let first = take(budget, plan.pipeline as u64) as usize;
    in_flight.sent(first, Instant::now());
    stream.write_all(&batch[..first * frame.len()]).await?;
    let mut completed = checker.feed(&leftover)?;
    while !in_flight.is_empty() {
        if completed == 0 {
            let n = read_some(&mut stream, &mut buf).await?;
            completed = checker.feed(&buf[..n])?;
            if completed == 0 {
                continue;
            }
        }
        let now = Instant::now();
        in_flight.echoed(completed, now)?;
        echoed += completed;
        done.fetch_add(completed, Ordering::Relaxed);
        let again = if now < deadline {
            take(budget, completed) as usize
        } else {
            0
        };
        if again > 0 {
            in_flight.sent(again, Instant::now());
            stream.write_all(&batch[..again * frame.len()]).await?;
        }
        completed = 0;
    }
    let _ = stream.shutdown().await;
    Ok(ConnResult {
        echoed,
        errors: checker.errors,
        latency: in_flight.latency,
    })
}

/// The payload every echo must carry: our masked payload from a mirror,
/// the JSON-like text once inflated, or the plain payload.
fn expected_echo(plan: &EchoPlan) -> Vec<u8> {
    if plan.mirror {
        masked_payload(&payload(plan.size))
    } else if plan.compress {
        json_payload(plan.size)
    } else {
        payload(plan.size)
    }
}

/// Takes up to `want` messages from the shared budget; 0 once it is spent.
#[inline]
fn take(budget: &AtomicU64, want: u64) -> u64 {
    let mut have = budget.load(Ordering::Relaxed);
    loop {
        let got = have.min(want);
        if got == 0 {
            return 0;
        }
        match budget.compare_exchange_weak(have, have - got, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return got,
            Err(now) => have = now,
        }
    }
}

/// The messages of one connection awaiting their echo, oldest first, and
/// the round trips of those that came back.
struct InFlight {
    sent_at: VecDeque<Instant>,
    latency: Histogram<u64>,
}

impl InFlight {
    fn new(pipeline: usize) -> Self {
        Self {
            sent_at: VecDeque::with_capacity(pipeline),
            latency: latency_histogram(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.sent_at.is_empty()
    }

    /// `count` messages sent at `at`.
    #[inline]
    fn sent(&mut self, count: usize, at: Instant) {
        self.sent_at.extend(std::iter::repeat_n(at, count));
    }

    /// The `count` oldest messages came back at `now`: their round trips.
    #[inline]
    fn echoed(&mut self, count: u64, now: Instant) -> Result<()> {
        for _ in 0..count {
            let Some(t) = self.sent_at.pop_front() else {
                bail!("more echoes than messages sent");
            };
            self.latency.saturating_record((now - t).as_nanos() as u64);
        }
        Ok(())
    }
}
