//! A memory budget shared by many connections: a crowd of peers each
//! holding a large unfinished message costs at most the budget, the
//! heaviest are closed with 1013, and a well-behaved client is served all
//! along (issue: 30 such peers grew `duplex serve` by 1.7 GiB).

mod rawpeer;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use duplex::{ClientBuilder, Config, MemoryBudget, ServerBuilder};
use rawpeer::*;

/// The heap as it is: bytes allocated now, and the most since the last
/// [`Heap::reset_peak`]. What the budget charges must match what is really
/// held, not only stay within its own count.
struct Heap;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = ALLOCATED.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                + (new_size - layout.size());
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            ALLOCATED.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static HEAP: Heap = Heap;

impl Heap {
    fn reset_peak() -> usize {
        let now = ALLOCATED.load(Ordering::Relaxed);
        PEAK.store(now, Ordering::Relaxed);
        now
    }

    fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }
}

/// Bytes per fragment the hostile peers send.
const FRAGMENT: usize = 256 << 10;

/// Serves a client that behaves until the budget has shed `to_shed`
/// connections (bounded), checking that the charge never passed the limit.
async fn serve_until_shed<S>(
    normal: &mut duplex::WebSocket<S>,
    budget: &MemoryBudget,
    to_shed: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut echoed = 0;
    while budget.shed() < to_shed as u64 {
        echo_once(normal, &format!("ping {echoed}")).await;
        echoed += 1;
        assert!(
            budget.used() <= budget.limit(),
            "{} bytes charged",
            budget.used()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the crowd was not shed in time ({} of {to_shed})",
            budget.shed()
        );
    }
}

/// A connection exchanging small messages with a peer that keeps up never
/// touches the budget: not while it works, not once idle (before, the
/// estimate of its next read charged every such connection 64 KiB, idle
/// ones included, and a few thousand of them filled a budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_are_never_charged() {
    // So small that any charge at all (a 64 KiB step) would shed it.
    let budget = MemoryBudget::new(32 << 10);
    let builder = ServerBuilder::new().config(
        Config::default()
            .with_compression()
            .with_memory_budget(budget.clone()),
    );
    let (addr, _events) = echo_server(builder).await;
    let mut client = ClientBuilder::new()
        .connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    // Sizes from a seeded generator (printed, so a failure can be rerun).
    let seed: u64 = std::env::var("DUPLEX_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id().into());
    eprintln!("seed {seed} (DUPLEX_TEST_SEED)");
    let mut state = seed | 1;
    for i in 0..500 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 1024) as usize;
        echo_once(&mut client, &"s".repeat(len)).await;
        assert_eq!(budget.used(), 0, "charged after message {i} of {len} bytes");
    }
    assert_eq!((budget.shed(), budget.paused()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_holding_unfinished_messages_stays_within_the_budget() {
    const PEERS: usize = 12;
    const EACH: usize = 8 << 20;
    const LIMIT_BYTES: usize = 16 << 20;
    let budget = MemoryBudget::new(LIMIT_BYTES);
    let builder = ServerBuilder::new().config(
        Config::default()
            .with_compression()
            .with_max_message_size(64 << 20)
            .with_memory_budget(budget.clone()),
    );
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
    serve_until_shed(&mut normal, &budget, to_shed).await;
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
    echo_once(&mut normal, "after").await;
    crowd.abort_all();
}

/// Peers that each send a large message to an echo, one after the other,
/// and never read it back: the echoes back up in the server, where each
/// message stays charged until its connection is shed (before, a message
/// was uncharged once whole, and a silent crowd held any number of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_that_never_reads_its_echoes_stays_within_the_budget() {
    const PEERS: usize = 12;
    // Each fits in the budget while it arrives (its buffer may grow to twice
    // its size), and is larger than the kernel's largest send buffer (4 MiB).
    const EACH: usize = 6 << 20;
    const LIMIT_BYTES: usize = 24 << 20;
    let budget = MemoryBudget::new(LIMIT_BYTES);
    let builder = ServerBuilder::new().config(
        Config::default()
            .with_compression()
            .with_max_message_size(64 << 20)
            .with_memory_budget(budget.clone()),
    );
    let (addr, mut events) = echo_server(builder).await;
    let mut normal = ClientBuilder::new()
        .connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    let before = Heap::reset_peak();
    let mut crowd = Vec::new();
    for _ in 0..PEERS {
        crowd.push(send_a_message_and_never_read(addr, "/echo", EACH, FRAGMENT).await);
    }
    let to_shed = PEERS - LIMIT_BYTES / EACH;
    serve_until_shed(&mut normal, &budget, to_shed).await;
    // What the heap really held (the crowd would hold PEERS * EACH = 72
    // MiB): the budget, and a message growing while another is shed.
    let grown = Heap::peak() - before;
    assert!(
        grown <= LIMIT_BYTES + 2 * EACH,
        "the heap grew by {} MiB",
        grown >> 20
    );
    // The shed connections ended with the budget's error.
    for _ in 0..to_shed {
        let outcome = tokio::time::timeout(LIMIT, events.recv())
            .await
            .expect("a shed connection ends")
            .unwrap();
        let error = outcome.expect_err("shed, not a clean end");
        assert!(error.contains("memory budget"), "{error}");
    }
    assert!(
        budget.used() <= LIMIT_BYTES,
        "{} bytes charged",
        budget.used()
    );
    echo_once(&mut normal, "after").await;
    for peer in crowd {
        peer.abort();
    }
}
