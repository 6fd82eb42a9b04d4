//! Interoperability with independent implementations: Python `websockets`
//! and Node `ws`, run from `tests/peers/` as child processes.
//!
//! Proves, with permessage-deflate off and on, that
//! - the duplex client talks to their servers: text (including multi-byte
//!   UTF-8), binary, a 1 MiB message and 100 pipelined messages come back
//!   identical, compression is negotiated exactly when offered, the closing
//!   handshake completes with 1000, and a server going away (1001) is seen;
//! - their clients talk to a duplex server: every line they send is echoed
//!   back unchanged, they report `CLOSED 1000`, and the server saw the same
//!   compression, every message and the client's 1000.
//!
//! Peers come from `DUPLEX_TEST_PYTHON` / `DUPLEX_TEST_NODE_PATH`; without
//! them the tests print `skipped: ...` unless `DUPLEX_REQUIRE_PEERS=1`.

mod common;

use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, CloseCode, Message};

// ---------------------------------------------------------------------------
// The duplex client against their servers

#[tokio::test]
async fn client_to_python_server_uncompressed() {
    client_against_peer_server(Peer::Python, false).await;
}

#[tokio::test]
async fn client_to_python_server_compressed() {
    client_against_peer_server(Peer::Python, true).await;
}

#[tokio::test]
async fn client_to_node_server_uncompressed() {
    client_against_peer_server(Peer::Node, false).await;
}

#[tokio::test]
async fn client_to_node_server_compressed() {
    client_against_peer_server(Peer::Node, true).await;
}

async fn client_against_peer_server(peer: Peer, compress: bool) {
    let Some((mut server, port)) = peer.echo_server(compress).await else {
        return;
    };
    let url = format!("ws://127.0.0.1:{port}/echo");
    // Loopback only: a developer's proxy variables must not reroute this.
    let client = ClientBuilder::new().proxy(ProxyConfig::None).config(
        duplex::Config::default().with_deflate(compress.then(duplex::DeflateConfig::default)),
    );

    let mut ws = within("connect", client.connect(&url))
        .await
        .unwrap_or_else(|e| panic!("connecting to the {}: {e}", peer.name()));
    assert_eq!(
        ws.is_compressed(),
        compress,
        "permessage-deflate with the {} (offered: {compress})",
        peer.name()
    );
    echo_conversation(&mut ws).await;
    close_cleanly(&mut ws).await;

    // A second connection, then the server shuts down: it must reach us as
    // a close frame with 1001 (going away), and the stream then ends cleanly.
    let mut ws = within("connect again", client.connect(&url))
        .await
        .expect("second connection");
    within("send", ws.send("still there?")).await.expect("send");
    let echo = next_data(&mut ws, "echo on the second connection").await;
    assert_eq!(echo.as_text(), Some("still there?"));
    server.close_stdin();
    match within("the server's close frame", ws.recv()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::GOING_AWAY),
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    let end = within("the end of the stream", ws.recv()).await;
    assert!(end.is_none(), "the stream ends after the close: {end:?}");
    server.wait_success().await;
}

// ---------------------------------------------------------------------------
// Their clients against a duplex server

#[tokio::test]
async fn python_client_to_duplex_server_uncompressed() {
    peer_client_against_duplex(Peer::Python, false).await;
}

#[tokio::test]
async fn python_client_to_duplex_server_compressed() {
    peer_client_against_duplex(Peer::Python, true).await;
}

#[tokio::test]
async fn node_client_to_duplex_server_uncompressed() {
    peer_client_against_duplex(Peer::Node, false).await;
}

#[tokio::test]
async fn node_client_to_duplex_server_compressed() {
    peer_client_against_duplex(Peer::Node, true).await;
}

async fn peer_client_against_duplex(peer: Peer, compress: bool) {
    let mut server = EchoServer::start(server_builder(compress)).await;
    let url = format!("ws://{}/echo", server.addr);
    let Some(mut client) = peer.echo_client(&url, compress) else {
        return;
    };

    // One at a time: each line is echoed before the next is written (the
    // peer waits for each echo, and a 1 MiB echo must be read as it comes).
    let cases = echo_cases();
    for (i, msg) in cases.iter().enumerate() {
        client.write_line(&to_line(msg).to_string()).await;
        let echo = from_line(&client.expect_line().await);
        assert_same_message(&echo, msg, &format!("{} echo of case {i}", peer.name()));
    }
    // The burst: all 100 lines at once, then the 100 echoes in order.
    let burst = burst_cases();
    let lines: Vec<String> = burst.iter().map(|m| to_line(m).to_string()).collect();
    client.write_line(&lines.join("\n")).await;
    for (i, msg) in burst.iter().enumerate() {
        let echo = from_line(&client.expect_line().await);
        assert_same_message(&echo, msg, &format!("{} echo of burst {i}", peer.name()));
    }

    // End of input: the peer closes with 1000 and reports how it ended.
    client.close_stdin();
    let closed = client.expect_line().await;
    let parts: Vec<&str> = closed.splitn(3, ' ').collect();
    assert_eq!(
        parts[..2],
        ["CLOSED", "1000"],
        "the {} reported {closed:?}; stderr:\n{}",
        peer.name(),
        client.stderr()
    );
    client.wait_success().await;

    let report = server
        .next_report()
        .await
        .unwrap_or_else(|e| panic!("the {} could not connect: {e}", peer.name()));
    assert_eq!(
        report.compressed,
        compress,
        "server side: permessage-deflate with the {} (offered: {compress})",
        peer.name()
    );
    assert_eq!(report.messages, cases.len() + burst.len(), "{report:?}");
    assert_eq!(report.close_code(), Some(1000), "{report:?}");
    assert_eq!(report.error, None, "{report:?}");
}

// ---------------------------------------------------------------------------
// Empty messages

/// Empty text and binary messages between non-empty ones: each must come
/// back empty, and must not disturb the messages after them (with
/// compression, an empty message still moves the shared deflate stream).
fn empty_sequence() -> Vec<Message> {
    vec![
        Message::text("before"),
        Message::text(""),
        Message::text("between"),
        Message::binary(Vec::new()),
        Message::text("after"),
    ]
}

#[tokio::test]
async fn empty_messages_uncompressed() {
    empty_messages(false).await;
}

#[tokio::test]
async fn empty_messages_compressed() {
    empty_messages(true).await;
}

async fn empty_messages(compress: bool) {
    let client = ClientBuilder::new().proxy(ProxyConfig::None).config(
        duplex::Config::default().with_deflate(compress.then(duplex::DeflateConfig::default)),
    );

    // duplex to duplex first: needs no peer, and isolates duplex itself.
    let mut server = EchoServer::start(server_builder(compress)).await;
    let mut ws = within("connect", client.connect(&format!("ws://{}/", server.addr)))
        .await
        .expect("connect to the duplex server");
    assert_eq!(ws.is_compressed(), compress);
    echo_each(&mut ws, "duplex server").await;
    close_cleanly(&mut ws).await;
    let report = server.next_report().await.expect("handshake");
    assert_eq!((report.close_code(), report.error), (Some(1000), None));

    for peer in [Peer::Python, Peer::Node] {
        // The duplex client against their server.
        if let Some((server, port)) = peer.echo_server(compress).await {
            let url = format!("ws://127.0.0.1:{port}/");
            let mut ws = within("connect", client.connect(&url))
                .await
                .expect("connect to the peer server");
            assert_eq!(ws.is_compressed(), compress);
            echo_each(&mut ws, peer.name()).await;
            close_cleanly(&mut ws).await;
            server.wait_success().await;
        }

        // Their client against a duplex server.
        let mut server = EchoServer::start(server_builder(compress)).await;
        let Some(mut peer_client) = peer.echo_client(&format!("ws://{}/", server.addr), compress)
        else {
            continue;
        };
        for (i, msg) in empty_sequence().iter().enumerate() {
            peer_client.write_line(&to_line(msg).to_string()).await;
            let echo = from_line(&peer_client.expect_line().await);
            assert_same_message(&echo, msg, &format!("{} client, message {i}", peer.name()));
        }
        peer_client.close_stdin();
        let closed = peer_client.expect_line().await;
        assert!(closed.starts_with("CLOSED 1000 "), "{closed:?}");
        peer_client.wait_success().await;
        let report = server.next_report().await.expect("handshake");
        assert_eq!((report.close_code(), report.error), (Some(1000), None));
    }
}

async fn echo_each(ws: &mut duplex::WebSocket<duplex::MaybeTlsStream>, with: &str) {
    for (i, msg) in empty_sequence().into_iter().enumerate() {
        within("send", ws.send(msg.clone())).await.expect("send");
        let echo = next_data(ws, &format!("echo of message {i} from the {with}")).await;
        assert_same_message(&echo, &msg, &format!("{with}, message {i}"));
    }
}
