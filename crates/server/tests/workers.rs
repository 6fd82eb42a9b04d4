//! One runtime per core (`duplex_server::workers`): every runtime accepts
//! and serves on its own, and a shutdown closes the port in all of them.

mod support;

use std::net::SocketAddr;

use duplex::Message;
use serde_json::json;
use support::{HubClient, LIMIT, TestServer};

/// Echoes one message on each of `count` connections, from a thread and
/// runtime of its own, all connections open at once.
fn echo_from_another_thread(addr: SocketAddr, count: usize) -> Vec<String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let url = format!("ws://{addr}/echo");
            let mut sockets = Vec::new();
            for _ in 0..count {
                let ws = tokio::time::timeout(LIMIT, duplex::connect(&url))
                    .await
                    .expect("the handshake in time")
                    .unwrap();
                sockets.push(ws);
            }
            let mut echoed = Vec::new();
            for (i, ws) in sockets.iter_mut().enumerate() {
                ws.send(format!("hello {i}")).await.unwrap();
                match tokio::time::timeout(LIMIT, ws.recv())
                    .await
                    .expect("an echo in time")
                {
                    Some(Ok(Message::Text(t))) => echoed.push(t.to_string()),
                    other => panic!("connection {i}: expected an echo, got {other:?}"),
                }
            }
            echoed
        })
    })
    .join()
    .unwrap()
}

/// The test's runtime is the server's first; blocking it leaves the port
/// to the workers, which must accept and serve every connection alone.
#[tokio::test(flavor = "current_thread")]
async fn the_workers_serve_while_the_first_runtime_is_blocked() {
    let server = TestServer::start(|s| s.threads = 3).await;
    // A synchronous wait: this runtime polls nothing until it returns.
    let echoed = echo_from_another_thread(server.addr(), 20);
    let expected: Vec<String> = (0..20).map(|i| format!("hello {i}")).collect();
    assert_eq!(echoed, expected);
    server.server.shutdown().await;
}

/// After a shutdown no runtime holds the listening socket: a connection is
/// refused rather than queued for a worker that no longer accepts.
#[tokio::test]
async fn a_shutdown_closes_the_port_in_every_runtime() {
    let server = TestServer::start(|s| s.threads = 3).await;
    let addr = server.addr();
    assert_eq!(echo_from_another_thread(addr, 4).len(), 4);
    server.server.shutdown().await;
    let err = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("the port should be closed after shutdown");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The broker runs on the first runtime; subscribers accepted by the
/// workers get every publication, in order, from across the threads.
#[tokio::test(flavor = "current_thread")]
async fn publications_reach_subscribers_accepted_by_the_workers() {
    const SUBSCRIBERS: usize = 12;
    const PUBLICATIONS: u64 = 20;
    let server = TestServer::start(|s| s.threads = 3).await;
    let addr = server.addr();
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let subscribers = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut clients = Vec::new();
            for _ in 0..SUBSCRIBERS {
                let client = tokio::time::timeout(LIMIT, HubClient::connect(addr))
                    .await
                    .expect("a worker accepts in time");
                clients.push(client);
            }
            connected_tx.send(()).unwrap();
            for client in &mut clients {
                client
                    .ok(json!({"cmd": "subscribe", "channel": "feed"}))
                    .await;
            }
            subscribed_tx.send(()).unwrap();
            let mut received = Vec::new();
            for client in &mut clients {
                let mut offsets = Vec::new();
                for _ in 0..PUBLICATIONS {
                    let push = client.push_of("publication").await;
                    assert_eq!(push["data"]["n"], push["offset"], "{push}");
                    offsets.push(push["offset"].as_u64().unwrap());
                }
                received.push(offsets);
            }
            received
        })
    });
    // A synchronous wait: until every subscriber is connected, this runtime
    // polls nothing, so the workers accept them all.
    connected_rx.recv().unwrap();
    subscribed_rx.await.unwrap();
    let mut publisher = server.client().await;
    for n in 1..=PUBLICATIONS {
        publisher
            .ok(json!({"cmd": "publish", "channel": "feed", "data": {"n": n}}))
            .await;
    }
    let received = tokio::task::spawn_blocking(move || subscribers.join().unwrap())
        .await
        .unwrap();
    let expected: Vec<u64> = (1..=PUBLICATIONS).collect();
    assert_eq!(received, vec![expected; SUBSCRIBERS]);
    drop(publisher);
    server.server.shutdown().await;
}
