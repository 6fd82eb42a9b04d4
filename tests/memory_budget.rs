//! `duplex serve --memory-budget`: a crowd of peers each holding a large
//! unfinished message grows the server by about its budget, not by the sum
//! of their messages (before the budget, 30 such peers on `/echo` grew it
//! by 1.7 GiB); the heaviest are closed with 1013 and a well-behaved client
//! is served all along: on `/echo`, on the file relay `/files`, and on
//! `/ws` at its 64 KiB message limit. Crowds that never read: echoes of
//! large and of small messages, and hub subscribers of flooded channels;
//! what waits for them stays charged, and a shed connection drops it. And
//! every hostile crowd at once.
//! Release build (`cargo xtask test` runs it), since it measures the
//! process's memory.

mod common;
#[path = "../crates/ws/tests/rawpeer/mod.rs"]
mod rawpeer;

use std::time::Duration;

use common::{PeakWatch, Serve};
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
    let watch = PeakWatch::start(pid);

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
    let echoed = echo_until_shed(&serve, &mut normal, to_shed).await;
    for _ in 0..to_shed * usize::from(what == Crowd::Unfinished) {
        let code = tokio::time::timeout(LIMIT, crowd.join_next())
            .await
            .expect("a shed peer sees its close")
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(1013));
    }
    eprintln!(
        "{path}: {peers} peers x {} KiB against a {} MiB budget: {}, {echoed} echoes meanwhile",
        each >> 10,
        budget >> 20,
        watch.report(),
    );
    // The budget, plus what is not charged (each busy connection's first 16 KiB,
    // socket buffers, the allocator's slack): far below what the crowd
    // would hold without it.
    watch.assert_growth_at_most(2 * budget + (32 << 20));
    normal.send("after").await.unwrap();
    let echo = normal.recv().await.unwrap().unwrap();
    assert_eq!(echo.as_text(), Some("after"));
    crowd.abort_all();
}

/// `duplex serve --memory-budget BUDGET ARGS`, with no rate limit on hub
/// commands (a flood is what is tested).
async fn serve_for_floods(budget: usize, args: &[&str]) -> Serve {
    let budget = budget.to_string();
    let mut all = vec![
        "--memory-budget",
        &budget,
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
    ];
    all.extend_from_slice(args);
    Serve::start_with(&all).await
}

/// Echoes with `normal` (a client that behaves, served throughout) until
/// `to_shed` connections were shed; returns how many echoes it took.
async fn echo_until_shed(
    serve: &Serve,
    normal: &mut duplex::WebSocket<duplex::MaybeTlsStream>,
    to_shed: usize,
) -> usize {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut echoed = 0;
    while shed(serve).await < to_shed {
        echo_once(normal, &format!("ping {echoed}")).await;
        echoed += 1;
        if tokio::time::Instant::now() > deadline {
            let metrics = serve.get("/metrics").await;
            let budget: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("duplex_memory_budget"))
                .collect();
            panic!("fewer than {to_shed} shed in time: {}", budget.join(", "));
        }
    }
    echoed
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

/// 128 peers each send the echo three thousand 1 KiB messages and never
/// read: past what the kernel's socket buffers take, each echo is copied
/// into the connection's write buffer (1 MiB at most each, 128 MiB in all)
/// and charged there, so the heaviest are shed and the others wait.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_that_never_reads_its_small_echoes_grows_the_server_by_its_budget_at_most() {
    const BUDGET: usize = 16 << 20;
    const PEERS: usize = 128;
    let serve = Serve::start_with(&["--memory-budget", &BUDGET.to_string()]).await;
    let (addr, pid) = (serve.addr, serve.child.id().unwrap());
    let mut normal = ClientBuilder::new()
        .connect(&serve.echo_url())
        .await
        .unwrap();
    echo_once(&mut normal, "warm up").await;
    let watch = PeakWatch::start(pid);
    // Enough to fill the kernel's buffers and a write buffer; what is left
    // the kernel holds once the server stops reading.
    let frames = || {
        (0..3072).map(|_| {
            rawpeer::client_frame(duplex::proto::frame::OpCode::Binary, true, &[0x5a; 1024])
        })
    };
    let mut silent = Vec::new();
    for _ in 0..PEERS {
        silent.push(rawpeer::send_then_never_read(addr, "/echo", frames()).await);
    }
    // Each would hold 1 MiB: the budget holds 16 of them; of the rest,
    // those asking while lighter than the heaviest stop reading (TCP holds
    // them back) and the heaviest are shed.
    let echoed = echo_until_shed(&serve, &mut normal, PEERS / 8).await;
    eprintln!(
        "/echo: {PEERS} peers never reading 1 KiB echoes against a {} MiB budget: {}, {} shed, {echoed} echoes meanwhile",
        BUDGET >> 20,
        watch.report(),
        shed(&serve).await,
    );
    watch.assert_growth_at_most(2 * BUDGET + (32 << 20));
    echo_once(&mut normal, "after").await;
    silent.iter().for_each(tokio::task::JoinHandle::abort);
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

/// `/ws` takes messages of at most 64 KiB: 1,000 hub peers each holding
/// 56 KiB of an unfinished one (55 MiB, more with their buffers) against
/// 4 MiB. Every byte a connection buffers past its first 16 KiB is
/// charged, so a crowd at the per-connection limit is bounded too.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_of_hub_peers_at_their_message_limit_is_held_to_the_budget() {
    const BUDGET: usize = 4 << 20;
    const PEERS: usize = 1000;
    const EACH: usize = 56 << 10;
    let serve = Serve::start_with(&["--memory-budget", &BUDGET.to_string()]).await;
    let mut normal = ClientBuilder::new()
        .connect(&serve.echo_url())
        .await
        .unwrap();
    echo_once(&mut normal, "warm up").await;
    let watch = PeakWatch::start(serve.child.id().unwrap());
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..PEERS {
        crowd.spawn(hold_an_unfinished_message(serve.addr, "/ws", EACH, EACH));
    }
    let echoed = echo_until_shed(&serve, &mut normal, PEERS / 2).await;
    eprintln!(
        "/ws: {PEERS} peers x {} KiB against a {} MiB budget: {}, {} shed, {echoed} echoes meanwhile",
        EACH >> 10,
        BUDGET >> 20,
        watch.report(),
        shed(&serve).await,
    );
    watch.assert_growth_at_most(2 * BUDGET + (32 << 20));
    echo_once(&mut normal, "after").await;
    crowd.abort_all();
}

/// 24 peers × 6 MiB echoes nobody reads (144 MiB) against 24 MiB: each
/// echo stays charged while it waits, and a shed connection drops it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_that_never_reads_its_echoes_grows_the_server_by_its_budget_at_most() {
    a_crowd_on("/echo", 24, 6 << 20, 24 << 20, Crowd::NeverReading).await;
}

// ------------------------------------------------------------ every endpoint

/// A slowloris: half an upgrade request to `path`, then one byte every
/// 200 ms, until the server closes the connection; returns how long that
/// took.
async fn slowloris(addr: std::net::SocketAddr, path: &'static str) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return started.elapsed();
    }
    let mut byte = [0u8; 1];
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "a slowloris on {path} was never cut off"
        );
        tokio::select! {
            read = tcp.read(&mut byte) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return started.elapsed();
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if tcp.write_all(b"x").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
}

/// A text message that inflates to 128 MiB of spaces, over every
/// endpoint's limit (about 128 KiB on the wire, compressed once).
fn bomb_payload() -> std::sync::Arc<Vec<u8>> {
    use duplex::proto::deflate::Deflater;
    use duplex::proto::{DeflateParams, Role};
    let mut deflater = Deflater::new(&DeflateParams::default(), Role::Client, 9, 0);
    let mut compressed = bytes::BytesMut::new();
    deflater.compress(&vec![b' '; 128 << 20], &mut compressed);
    std::sync::Arc::new(compressed.to_vec())
}

/// Sends `payload` (see [`bomb_payload`]) to `path` with permessage-deflate;
/// returns the close code it gets.
async fn bomb(
    addr: std::net::SocketAddr,
    path: &'static str,
    payload: std::sync::Arc<Vec<u8>>,
) -> Option<u16> {
    use duplex::proto::frame::OpCode;
    use tokio::io::AsyncWriteExt;
    let (mut tcp, head) = rawpeer::raw_client_to(
        addr,
        path,
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    )
    .await;
    assert!(
        head.to_ascii_lowercase().contains("permessage-deflate"),
        "{head}"
    );
    let frame = rawpeer::frame(OpCode::Text, true, true, &payload, Some([9, 8, 7, 6]));
    let _ = tcp.write_all(&frame).await;
    rawpeer::read_until_close(&mut tcp).await.0
}

/// Sends a hub command and returns the next message (its reply: these
/// connections subscribe to nothing), bounded.
async fn hub_call(
    ws: &mut duplex::WebSocket<duplex::MaybeTlsStream>,
    command: serde_json::Value,
) -> String {
    ws.send(command.to_string()).await.unwrap();
    let reply = tokio::time::timeout(LIMIT, ws.recv())
        .await
        .expect("a reply in time")
        .expect("open")
        .expect("a reply");
    reply.as_text().expect("JSON text").to_owned()
}

/// A hub command as a client frame.
fn command(json: serde_json::Value) -> Vec<u8> {
    rawpeer::client_frame(
        duplex::proto::frame::OpCode::Text,
        true,
        json.to_string().as_bytes(),
    )
}

/// Every hostile crowd at once, on every endpoint: slowloris heads on
/// `/echo`, `/ws` and `/files`, inflate bombs on `/echo` and `/ws`,
/// unfinished messages on `/echo` and `/files`, echoes nobody reads on
/// `/echo`, and hub subscribers that never read a channel being flooded.
/// Clients that behave on `/echo` and `/ws` are served throughout; the
/// peak RSS grows by at most twice the budget plus 48 MiB.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn every_hostile_crowd_at_once_on_every_endpoint() {
    const BUDGET: usize = 32 << 20;
    const EACH: usize = 8;
    let serve = serve_for_floods(BUDGET, &[]).await;
    let (addr, pid) = (serve.addr, serve.child.id().unwrap());
    let mut echo = ClientBuilder::new()
        .connect(&serve.echo_url())
        .await
        .unwrap();
    echo_once(&mut echo, "warm up").await;
    let mut hub = ClientBuilder::new()
        .connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let watch = PeakWatch::start(pid);

    let payload = bomb_payload();
    let mut slow = tokio::task::JoinSet::new();
    let mut bombs = tokio::task::JoinSet::new();
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..EACH {
        for path in ["/echo", "/ws", "/files"] {
            slow.spawn(slowloris(addr, path));
        }
        for path in ["/echo", "/ws"] {
            bombs.spawn(bomb(addr, path, payload.clone()));
        }
        holders.spawn(hold_an_unfinished_message(
            addr,
            "/echo",
            16 << 20,
            FRAGMENT,
        ));
        holders.spawn(hold_an_unfinished_message(
            addr,
            "/files",
            2 << 20,
            FRAGMENT,
        ));
    }
    let silent = tokio::spawn(async move {
        let mut silent = Vec::new();
        for _ in 0..EACH {
            silent.push(send_a_message_and_never_read(addr, "/echo", 6 << 20, FRAGMENT).await);
            let subscribe = command(serde_json::json!({"cmd": "subscribe", "channel": "storm"}));
            silent.push(rawpeer::send_then_never_read(addr, "/ws", [subscribe]).await);
        }
        std::future::pending::<()>().await;
        drop(silent);
    });
    // The flood: 16 KiB publications to the channel nobody reads, from a
    // client of its own, paced by its replies.
    let flooder = tokio::spawn(async move {
        let mut ws = ClientBuilder::new()
            .connect(&format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let pad = "s".repeat(16 << 10);
        for n in 0..3000 {
            let publish =
                serde_json::json!({"cmd": "publish", "id": n, "channel": "storm", "data": pad});
            let reply = hub_call(&mut ws, publish).await;
            // Refused while the budget is spent (its readers are shed).
            assert!(
                !reply.contains("error") || reply.contains("\"unavailable\""),
                "{reply}"
            );
        }
    });

    // Serve the clients that behave until every crowd has had its say.
    let mut worst = Duration::ZERO;
    let mut round = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(slow.is_empty() && bombs.is_empty() && flooder.is_finished()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the storm did not end in time"
        );
        let started = tokio::time::Instant::now();
        echo_once(&mut echo, &format!("ping {round}")).await;
        let pong = hub_call(&mut hub, serde_json::json!({"cmd": "ping", "id": round})).await;
        assert!(pong.contains(&format!("\"id\":{round}")), "{pong}");
        worst = worst.max(started.elapsed());
        round += 1;
        while let Some(cut) = slow.try_join_next() {
            cut.unwrap();
        }
        while let Some(code) = bombs.try_join_next() {
            // Past its limit (1009), or shed before it got there (1013).
            let code = code.unwrap();
            assert!(
                matches!(code, Some(1009 | 1013)),
                "an inflate bomb ended with {code:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // pacing the checks
    }
    flooder.await.unwrap();
    eprintln!(
        "every crowd at once against a {} MiB budget: {}; {round} rounds, the slowest {worst:?}; {} shed",
        BUDGET >> 20,
        watch.report(),
        shed(&serve).await
    );
    watch.assert_growth_at_most(2 * BUDGET + (48 << 20));
    echo_once(&mut echo, "after").await;
    holders.abort_all();
    silent.abort();
}

/// Hub subscribers that never read, each on a channel of its own flooded
/// with 16 KiB publications (queues long enough never to cut them off as
/// slow consumers): without the budget each queue keeps every publication
/// alive (8 × 1,000 × 32 KiB, 250 MiB); with it, the pushes are charged
/// once, the subscribers keeping most are shed, every publication is
/// stored (a publish refused with `unavailable` is retried), and a
/// subscriber that reads gets every publication of its channel, in order.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "release build: cargo xtask test runs it"]
async fn a_crowd_of_subscribers_that_never_read_grows_the_server_by_its_budget_at_most() {
    const BUDGET: usize = 32 << 20;
    const CHANNELS: usize = 8;
    const EACH: u64 = 1000;
    // Queues long enough never to cut anyone off as a slow consumer.
    let serve = serve_for_floods(BUDGET, &["--queue-size", "100000"]).await;
    let (addr, pid) = (serve.addr, serve.child.id().unwrap());
    let connect = move || async move {
        ClientBuilder::new()
            .connect(&format!("ws://{addr}/ws"))
            .await
            .unwrap()
    };
    let mut reader = connect().await;
    let reply = hub_call(
        &mut reader,
        serde_json::json!({"cmd": "subscribe", "id": 1, "channel": "hold0"}),
    )
    .await;
    assert!(reply.contains("\"offset\":0"), "{reply}");
    let watch = PeakWatch::start(pid);
    let mut silent = Vec::new();
    for c in 0..CHANNELS {
        let subscribe =
            command(serde_json::json!({"cmd": "subscribe", "channel": format!("hold{c}")}));
        silent.push(rawpeer::send_then_never_read(addr, "/ws", [subscribe]).await);
    }
    let flooder = tokio::spawn(async move {
        let mut ws = connect().await;
        let pad = "h".repeat(16 << 10);
        let mut refused = 0;
        for n in 0..EACH * CHANNELS as u64 {
            let channel = format!("hold{}", n % CHANNELS as u64);
            let publish = serde_json::json!({"cmd": "publish", "id": n, "channel": channel, "data": [n, pad]});
            loop {
                let reply = hub_call(&mut ws, publish.clone()).await;
                if !reply.contains("\"unavailable\"") {
                    assert!(!reply.contains("error"), "{reply}");
                    break;
                }
                refused += 1;
                assert!(refused < 1000, "publishes refused for ever: {reply}");
                tokio::time::sleep(Duration::from_millis(10)).await; // a publisher's back-off
            }
        }
        refused
    });
    // The subscriber that reads: every publication of hold0, in order.
    let mut next = 1;
    while next <= EACH {
        let push = tokio::time::timeout(LIMIT, reader.recv())
            .await
            .expect("publications in time")
            .expect("open")
            .expect("a push");
        let push: serde_json::Value = serde_json::from_str(push.as_text().unwrap()).unwrap();
        if push["push"] == "publication" {
            assert_eq!(push["offset"], next, "{}", &push.to_string()[..80]);
            next += 1;
        }
    }
    let refused = flooder.await.unwrap();
    let shed = shed(&serve).await;
    eprintln!(
        "{CHANNELS} subscribers that never read x {EACH} publications of 16 KiB against a {} MiB budget: {}; {shed} shed, {refused} publishes refused and retried",
        BUDGET >> 20,
        watch.report(),
    );
    assert!(shed >= 1, "nobody was shed");
    watch.assert_growth_at_most(2 * BUDGET + (48 << 20));
    silent.iter().for_each(tokio::task::JoinHandle::abort);
}
