//! `duplex serve --memory-budget`: a crowd of peers each holding a large
//! unfinished message on `/echo` grows the server by about its budget, not
//! by the sum of their messages (before the budget, 30 such peers grew it
//! by 1.7 GiB); the heaviest are closed with 1013 and a well-behaved client
//! is served all along. Release build (`cargo xtask test` runs it), since
//! it measures the process's memory.

mod common;
#[path = "../crates/ws/tests/rawpeer/mod.rs"]
mod rawpeer;

use std::time::Duration;

use common::{Serve, proc_status_bytes};
use duplex::ClientBuilder;
use rawpeer::hold_an_unfinished_message;

const PEERS: usize = 30;
/// What each peer sends of its message, never finishing it (under the
/// echo endpoint's 64 MiB limit).
const EACH: usize = 16 << 20;
const BUDGET: usize = 32 << 20;
const FRAGMENT: usize = 256 << 10;
/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// `duplex_memory_budget_shed_total` from `/metrics`.
async fn shed(serve: &Serve) -> usize {
    let metrics = serve.get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("duplex_memory_budget_shed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shed counter in {metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_holding_unfinished_messages_grows_the_server_by_its_budget_at_most() {
    let serve = Serve::start_with(&["--memory-budget", &BUDGET.to_string()]).await;
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
    for _ in 0..PEERS {
        crowd.spawn(hold_an_unfinished_message(serve.addr, EACH, FRAGMENT));
    }
    let to_shed = PEERS - BUDGET / EACH;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut echoed = 0;
    while shed(&serve).await < to_shed {
        normal.send(format!("ping {echoed}")).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), normal.recv())
            .await
            .expect("the normal client is served during the storm")
            .unwrap()
            .unwrap();
        assert_eq!(echo.as_text(), Some(format!("ping {echoed}").as_str()));
        echoed += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crowd was not shed in time"
        );
    }
    for _ in 0..to_shed {
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
        "{PEERS} peers x {} MiB against a {} MiB budget: RSS {} -> peak {} MiB (+{} MiB), {echoed} echoes meanwhile",
        EACH >> 20,
        BUDGET >> 20,
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    // The budget, plus what is not charged (each connection's first 64 KiB,
    // socket buffers, the allocator's slack): far below the 480 MiB the
    // crowd would hold without it.
    assert!(
        growth <= 2 * BUDGET + (32 << 20),
        "RSS grew by {} MiB",
        growth >> 20
    );
    normal.send("after").await.unwrap();
    let echo = normal.recv().await.unwrap().unwrap();
    assert_eq!(echo.as_text(), Some("after"));
    crowd.abort_all();
}
