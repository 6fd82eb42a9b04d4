//! A memory budget shared by many connections: a crowd of peers each
//! holding a large unfinished message costs at most the budget, the
//! heaviest are closed with 1013, and a well-behaved client is served all
//! along (issue: 30 such peers grew `duplex serve` by 1.7 GiB).

mod rawpeer;

use duplex::{ClientBuilder, MemoryBudget, ServerBuilder};
use rawpeer::*;

/// Bytes per fragment the hostile peers send.
const FRAGMENT: usize = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_holding_unfinished_messages_stays_within_the_budget() {
    const PEERS: usize = 12;
    const EACH: usize = 8 << 20;
    const LIMIT_BYTES: usize = 16 << 20;
    let budget = MemoryBudget::new(LIMIT_BYTES);
    let builder = ServerBuilder::new()
        .max_message_size(64 << 20)
        .memory_budget(budget.clone());
    let (addr, _events) = echo_server(builder).await;

    // A well-behaved client, served throughout.
    let mut normal = ClientBuilder::new()
        .connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..PEERS {
        crowd.spawn(hold_an_unfinished_message(addr, "/echo", EACH, FRAGMENT));
    }
    // PEERS × EACH is six times the budget: all but what fits in it go.
    let to_shed = PEERS - LIMIT_BYTES / EACH;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut echoed = 0;
    let mut peak = 0;
    while budget.shed() < to_shed as u64 {
        normal.send(format!("ping {echoed}")).await.unwrap();
        let echo = tokio::time::timeout(LIMIT, normal.recv())
            .await
            .expect("the normal client is served during the storm")
            .unwrap()
            .unwrap();
        assert_eq!(echo.as_text(), Some(format!("ping {echoed}").as_str()));
        echoed += 1;
        peak = peak.max(budget.used());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crowd was not shed in time ({} of {to_shed})",
            budget.shed()
        );
    }
    assert!(peak <= LIMIT_BYTES, "{peak} bytes charged");
    // Each shed peer was told why; the survivors hold their messages (within
    // the budget) until the end.
    for _ in 0..to_shed {
        let code = tokio::time::timeout(LIMIT, crowd.join_next())
            .await
            .expect("a shed peer sees its close")
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(1013));
    }
    assert!(budget.used() <= LIMIT_BYTES);
    // Still served after the storm.
    normal.send("after").await.unwrap();
    let echo = tokio::time::timeout(LIMIT, normal.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.as_text(), Some("after"));
    crowd.abort_all();
}
