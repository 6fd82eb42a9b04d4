//! The socket's own behaviour over real TCP: the closing handshake,
//! keepalive, idle timeouts, backpressure, split halves and cancel safety.

mod rawpeer;

use std::time::Duration;

use duplex::proto::frame::OpCode;
use duplex::{ClientBuilder, CloseCode, Config, Error, Message, ServerBuilder, State};
use futures_util::{SinkExt, StreamExt};
use rawpeer::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn client(addr: std::net::SocketAddr) -> duplex::WebSocket<duplex::MaybeTlsStream> {
    ClientBuilder::new()
        .connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap()
}

#[tokio::test]
async fn closing_handshake_completes_on_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        let mut seen = Vec::new();
        while let Some(msg) = ws.recv().await {
            seen.push(msg.unwrap());
        }
        (seen, ws.state())
    });
    let mut ws = client(addr).await;
    ws.send("last words").await.unwrap();
    ws.close(CloseCode(4001), "done here").await.unwrap();
    assert_eq!(ws.state(), State::Closed);
    assert_eq!(ws.close_frame().map(|f| f.code), Some(CloseCode(4001)));
    let (seen, state) = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(state, State::Closed);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].as_text(), Some("last words"));
    match &seen[1] {
        Message::Close(Some(f)) => {
            assert_eq!((f.code, f.reason.as_str()), (CloseCode(4001), "done here"))
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
    assert!(matches!(
        ws.send("too late").await,
        Err(Error::Closed | Error::Send(_))
    ));
}

#[tokio::test]
async fn keepalive_fails_a_peer_that_never_answers_pings() {
    let config = Config::default()
        .with_ping_interval(Duration::from_millis(100))
        .with_pong_timeout(Duration::from_millis(300));
    let (addr, mut events) = echo_server(ServerBuilder::new().config(config)).await;
    // A raw client that reads but never answers.
    let (mut tcp, _) = raw_client(addr, "").await;
    let (code, seen) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1011));
    assert!(matches!(seen.first(), Some(Message::Ping(_))), "{seen:?}");
    let outcome = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap_err().contains("keepalive"));
}

#[tokio::test]
async fn keepalive_keeps_a_live_peer_connected() {
    let config = Config::default()
        .with_ping_interval(Duration::from_millis(50))
        .with_pong_timeout(Duration::from_millis(200));
    let (addr, _events) = echo_server(ServerBuilder::new().config(config)).await;
    let mut ws = client(addr).await;
    // Our client answers pings on its own while it reads; several rounds
    // of ping and pong must pass without the server giving up.
    let mut pings = 0;
    while pings < 5 {
        match tokio::time::timeout(LIMIT, ws.recv()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    ws.send("alive").await.unwrap();
    loop {
        match tokio::time::timeout(LIMIT, ws.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) => continue,
            msg => break assert_eq!(msg.as_text(), Some("alive")),
        }
    }
}

#[tokio::test]
async fn an_idle_peer_is_closed_with_1001() {
    let config = Config::default().with_idle_timeout(Duration::from_millis(200));
    let (addr, mut events) = echo_server(ServerBuilder::new().config(config)).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    assert_eq!(read_until_close(&mut tcp).await.0, Some(1001));
    let outcome = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap_err().contains("idle"));
}

#[tokio::test]
async fn traffic_postpones_the_idle_timeout() {
    // The idle timer is moved only when it goes off (not on every read):
    // a peer sending well within the timeout must stay, across several
    // timeouts' worth of time, and be closed once it falls silent.
    let idle = Duration::from_millis(300);
    let config = Config::default().with_idle_timeout(idle);
    let (addr, mut events) = echo_server(ServerBuilder::new().config(config)).await;
    let mut ws = client(addr).await;
    let started = tokio::time::Instant::now();
    let mut round = 0;
    while started.elapsed() < idle * 3 {
        round += 1;
        // Pacing the traffic is what is under test, not a synchronisation.
        tokio::time::sleep(idle / 5).await;
        ws.send(format!("round {round}")).await.unwrap();
        let echo = tokio::time::timeout(LIMIT, ws.recv()).await.unwrap();
        let text = format!("round {round}");
        assert_eq!(
            echo.unwrap().unwrap().as_text(),
            Some(text.as_str()),
            "closed after {:?} of traffic",
            started.elapsed()
        );
    }
    // Silent now: closed with 1001 (the closing handshake runs to its end).
    tokio::time::timeout(LIMIT, async { while ws.recv().await.is_some() {} })
        .await
        .unwrap();
    assert_eq!(
        ws.close_frame().map(|f| f.code),
        Some(CloseCode::GOING_AWAY)
    );
    let outcome = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap_err().contains("idle"));
}

/// Runs `body` on a server socket (write-buffer limit `limit`) whose peer
/// connects and then never reads; returns what `body` returns.
async fn facing_a_peer_that_never_reads<T, F, Fut>(limit: usize, body: F) -> T
where
    F: FnOnce(duplex::WebSocket<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let config = Config::default().with_write_buffer_limit(limit);
        let ws = ServerBuilder::new()
            .config(config)
            .accept(tcp)
            .await
            .unwrap();
        body(ws).await
    });
    let (_peer, _) = raw_client(addr, "").await;
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn send_waits_for_a_peer_that_never_reads() {
    let limit = 256 << 10;
    let (sent, blocked, buffered) =
        facing_a_peer_that_never_reads(limit, move |mut ws| async move {
            let chunk = bytes::Bytes::from(vec![7u8; 64 << 10]);
            let mut sent = 0usize;
            // Bounded: at most 4,096 sends (256 MiB) — far more than any socket buffers.
            for _ in 0..4096 {
                match tokio::time::timeout(Duration::from_millis(500), ws.send(chunk.clone())).await
                {
                    Ok(r) => {
                        r.unwrap();
                        sent += chunk.len();
                        assert!(ws.buffered_amount() <= limit + chunk.len());
                    }
                    Err(_) => return (sent, true, ws.buffered_amount()),
                }
            }
            (sent, false, ws.buffered_amount())
        })
        .await;
    assert!(blocked, "send never waited; {sent} bytes went out");
    assert!(buffered <= limit + (64 << 10), "buffered {buffered}");
    // Kernel socket buffers on loopback hold a few MiB at most.
    assert!(
        sent < 64 << 20,
        "sent {sent} bytes to a peer that reads nothing"
    );
}

/// `feed` queues at once when there is room: the future only reports it.
#[tokio::test]
async fn feed_queues_when_called_if_the_buffer_has_room() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        drop(ws.feed("queued when called"));
        let queued = ws.buffered_amount();
        ws.flush().await.unwrap();
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        queued
    });
    let mut ws = client(addr).await;
    let msg = tokio::time::timeout(LIMIT, ws.recv()).await.unwrap();
    assert_eq!(msg.unwrap().unwrap(), Message::text("queued when called"));
    let queued = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(queued, 2 + "queued when called".len());
}

/// A sender that gives up on a peer that never reads (its `send` future
/// dropped while it waits) does not send, and cannot grow the buffer: the
/// waiting message is dropped with the future.
#[tokio::test]
async fn sends_given_up_on_a_slow_peer_leave_the_buffer_bounded() {
    let limit = 64 << 10;
    let (given_up, most) = facing_a_peer_that_never_reads(limit, move |mut ws| async move {
        let chunk = bytes::Bytes::from(vec![7u8; 16 << 10]);
        let mut given_up = 0;
        let mut most = 0;
        // Bounded: 2,000 sends of 16 KiB (31 MiB), enough to fill the
        // kernel's buffers and then give up 100 times.
        for _ in 0..2000 {
            let send = tokio::time::timeout(Duration::from_millis(20), ws.send(chunk.clone()));
            if send.await.is_err() {
                given_up += 1;
                if given_up == 100 {
                    break;
                }
            }
            most = most.max(ws.buffered_amount());
        }
        (given_up, most)
    })
    .await;
    assert_eq!(given_up, 100, "the peer never pushed back");
    assert!(most <= limit + (16 << 10) + 4, "buffered {most}");
}

#[tokio::test]
async fn split_halves_work_from_two_tasks() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let (mut rx, mut tx) = client(addr).await.split();
    const N: usize = 2000;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            match rx.recv().await {
                Some(Ok(Message::Text(t))) => got.push(t.to_string()),
                other => panic!("unexpected {other:?}"),
            }
        }
        (got, rx)
    });
    for i in 0..N {
        tx.feed(format!("message {i}")).await.unwrap();
    }
    tx.flush().await.unwrap();
    let (got, rx) = tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, m)| *m == format!("message {i}"))
    );
    let mut ws = rx
        .reunite(tx)
        .unwrap_or_else(|_| panic!("halves of one socket"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn recv_is_cancel_safe_in_select() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let mut ws = client(addr).await;
    const N: usize = 500;
    for i in 0..N {
        ws.feed(format!("{i}")).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(50));
    let mut cancelled = 0;
    // Bounded: every turn either receives or cancels a receive.
    for _ in 0..1_000_000 {
        if got.len() == N {
            break;
        }
        tokio::select! {
            msg = ws.recv() => got.push(msg.unwrap().unwrap().as_text().unwrap().to_owned()),
            _ = tick.tick() => cancelled += 1,
        }
    }
    assert_eq!(
        got,
        (0..N).map(|i| i.to_string()).collect::<Vec<_>>(),
        "after {cancelled} cancelled receives"
    );
}

#[tokio::test]
async fn stream_and_sink_interfaces() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let mut ws = client(addr).await;
    ws.send_all(&mut futures_util::stream::iter(
        ["a", "b", "c"].map(|s| Ok(Message::text(s))),
    ))
    .await
    .unwrap();
    let got: Vec<_> = ws
        .by_ref()
        .take(3)
        .map(|m| m.unwrap().as_text().unwrap().to_owned())
        .collect()
        .await;
    assert_eq!(got, ["a", "b", "c"]);
    SinkExt::<Message>::close(&mut ws).await.unwrap();
    // The reply to our close arrives through the stream, then it ends.
    assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
    assert!(ws.next().await.is_none());
}

#[tokio::test]
async fn ping_floods_do_not_grow_memory_when_the_peer_does_not_read() {
    let config = Config::default().with_write_buffer_limit(64 << 10);
    let (addr, _events) = echo_server(ServerBuilder::new().config(config)).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    // 200,000 pings with 125-byte payloads ask for ~27 MB of pongs; we read
    // none of them. The server must stop reading instead of queueing them.
    let ping = client_frame(OpCode::Ping, true, &[b'p'; 125]);
    let batch: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let mut written = 0usize;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(500), tcp.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            _ => break,
        }
    }
    // Writing stalled: the server stopped reading long before 200,000 pings.
    assert!(
        written < 200 * batch.len(),
        "the server read every ping ({written} bytes) while nobody read its pongs"
    );
}

/// RFC 6455 §7.1.1: the server closes TCP first. A raw client closes
/// cleanly and never closes its side; the server's FIN comes anyway.
#[tokio::test]
async fn the_server_closes_tcp_first_after_a_clean_close() {
    let (addr, mut events) = echo_server(ServerBuilder::new()).await;
    let (mut tcp, head) = raw_client(addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let close = client_frame(OpCode::Close, true, &1000u16.to_be_bytes());
    tcp.write_all(&close).await.unwrap();
    let (code, _) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1000));
    // Our side is still open: this EOF is the server closing first.
    wait_for_eof(&mut tcp).await;
    drop(tcp);
    let outcome = tokio::time::timeout(LIMIT, events.recv()).await.unwrap();
    assert_eq!(outcome, Some(Ok(())));
}

/// The other half of §7.1.1: a client that closed cleanly waits for the
/// server's FIN before it closes its own side (so the server, not the
/// client, is left holding TIME_WAIT), and then closes at once.
#[tokio::test]
async fn a_client_closes_tcp_only_after_the_server_did() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let config = Config::default().with_close_timeout(Duration::from_secs(30));
        let mut ws = ClientBuilder::new()
            .config(config)
            .connect(&format!("ws://{addr}/"))
            .await
            .unwrap();
        ws.close(CloseCode::NORMAL, "bye").await
    });
    let (mut tcp, _) = listener.accept().await.unwrap();
    let head = read_head(&mut tcp).await;
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a key");
    let accept = duplex::proto::handshake::accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
    let (code, _) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1000));
    tcp.write_all(&frame(
        OpCode::Close,
        true,
        false,
        &1000u16.to_be_bytes(),
        None,
    ))
    .await
    .unwrap();
    // The client has its answer but must not close TCP yet: its side stays
    // open for as long as ours does (a window of 300 ms of its 30 s).
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte)).await;
    assert!(early.is_err(), "the client closed TCP first: {early:?}");
    // We close; the client follows, and its close succeeds.
    tcp.shutdown().await.unwrap();
    wait_for_eof(&mut tcp).await;
    let closed = tokio::time::timeout(LIMIT, client).await.unwrap().unwrap();
    assert!(closed.is_ok(), "{closed:?}");
}
