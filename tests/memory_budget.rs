//! `duplex serve --memory-budget`: a crowd of peers each holding a large
//! unfinished message grows the server by about its budget, not by the sum
//! of their messages (before the budget, 30 such peers on `/echo` grew it
//! by 1.7 GiB); the heaviest are closed with 1013 and a well-behaved client
//! is served all along. On `/echo` and on the file relay `/files`; `/ws`
//! takes messages of at most 64 KiB, which the budget does not charge.
//! And a crowd that sends whole messages to `/echo` and never reads the
//! echoes: each echo stays charged while it waits to be written, and a
//! shed connection drops it.
//! Release build (`cargo xtask test` runs it), since it measures the
//! process's memory.

mod common;
#[path = "../crates/ws/tests/rawpeer/mod.rs"]
mod rawpeer;

use std::time::Duration;

use common::{Serve, proc_status_bytes};
use duplex::ClientBuilder;
use rawpeer::{echo_once, hold_an_unfinished_message, send_a_message_and_never_read};

const FRAGMENT: usize = 256 << 10;
/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// What each peer of a crowd does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crowd {
    /// Holds `each` bytes of an unfinished message (all at once).
    Unfinished,
    /// Sends a whole message of `each` bytes to the echo and never reads
    /// (one after the other).
    NeverReading,
}

/// `peers` peers each do `what` with `each` bytes on `path` against
/// `--memory-budget budget`: the shed ones are told 1013 (those that read),
/// a client that behaves is served throughout, and the peak RSS grows by
/// at most twice the budget plus 32 MiB.
async fn a_crowd_on(path: &'static str, peers: usize, each: usize, budget: usize, what: Crowd) {
    let serve = Serve::start_with(&["--memory-budget", &budget.to_string()]).await;
    let pid = serve.child.id().unwrap();
    let mut normal = ClientBuilder::new()
        .connect(&serve.echo_url())
        .await
        .unwrap();
    normal.send("warm up").await.unwrap();
    normal.recv().await.unwrap().unwrap();
    // The peak from here on (writing 5 resets VmHWM to the current RSS).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = proc_status_bytes(pid, "VmRSS");

    let mut crowd = tokio::task::JoinSet::new();
    match what {
        Crowd::Unfinished => {
            for _ in 0..peers {
                crowd.spawn(hold_an_unfinished_message(serve.addr, path, each, FRAGMENT));
            }
        }
        Crowd::NeverReading => {
            let addr = serve.addr;
            crowd.spawn(async move {
                let mut silent = Vec::new();
                for _ in 0..peers {
                    silent.push(send_a_message_and_never_read(addr, path, each, FRAGMENT).await);
                }
                std::future::pending::<()>().await;
                drop(silent);
                None
            });
        }
    }
    let to_shed = peers - budget / each;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut echoed = 0;
    while shed(&serve).await < to_shed {
        echo_once(&mut normal, &format!("ping {echoed}")).await;
        echoed += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crowd was not shed in time"
        );
    }
    for _ in 0..to_shed * usize::from(what == Crowd::Unfinished) {
        let code = tokio::time::timeout(LIMIT, crowd.join_next())
            .await
            .expect("a shed peer sees its close")
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(1013));
    }
    let peak = proc_status_bytes(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{path}: {peers} peers x {} KiB against a {} MiB budget: RSS {} -> peak {} MiB (+{} MiB), {echoed} echoes meanwhile",
        each >> 10,
        budget >> 20,
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    // The budget, plus what is not charged (each connection's first 64 KiB,
    // socket buffers, the allocator's slack): far below what the crowd
    // would hold without it.
    assert!(
        growth <= 2 * budget + (32 << 20),
        "RSS grew by {} MiB",
        growth >> 20
    );
    normal.send("after").await.unwrap();
    let echo = normal.recv().await.unwrap().unwrap();
    assert_eq!(echo.as_text(), Some("after"));
    crowd.abort_all();
}

/// `duplex_memory_budget_shed_total` from `/metrics`.
async fn shed(serve: &Serve) -> usize {
    let metrics = serve.get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("duplex_memory_budget_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shed counter in {metrics}"))
}

/// 30 peers × 16 MiB (480 MiB) against 32 MiB.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_holding_unfinished_messages_grows_the_server_by_its_budget_at_most() {
    a_crowd_on("/echo", 30, 16 << 20, 32 << 20, Crowd::Unfinished).await;
}

/// The relay's frames are at most 2 MiB: 32 peers × 2 MiB (64 MiB)
/// against 16 MiB.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_on_the_file_relay_is_held_to_the_budget_too() {
    a_crowd_on("/files", 32, 2 << 20, 16 << 20, Crowd::Unfinished).await;
}

/// 24 peers × 6 MiB echoes nobody reads (144 MiB) against 24 MiB: each
/// echo stays charged while it waits, and a shed connection drops it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_that_never_reads_its_echoes_grows_the_server_by_its_budget_at_most() {
    a_crowd_on("/echo", 24, 6 << 20, 24 << 20, Crowd::NeverReading).await;
}
