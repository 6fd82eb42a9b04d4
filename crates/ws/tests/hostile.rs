//! Hostile and broken peers: every rule RFC 6455 sets, broken on purpose by
//! a raw peer, must end in the right close code or HTTP status — and the
//! server must go on serving everyone else. These are the cases Autobahn
//! does not cover.

mod rawpeer;

use std::time::Duration;

use bytes::BytesMut;
use duplex::proto::deflate::Deflater;
use duplex::proto::frame::OpCode;
use duplex::proto::{DeflateParams, Limits, Role};
use duplex::{ClientBuilder, Config, Error, Message, ServerBuilder};
use rawpeer::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// After a hostile peer was dealt with, a well-behaved client still gets
/// its echo.
async fn still_serves(addr: std::net::SocketAddr) {
    let mut ws = ClientBuilder::new()
        .connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    ws.send("still here").await.unwrap();
    let echo = tokio::time::timeout(LIMIT, ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.as_text(), Some("still here"));
}

#[tokio::test]
async fn server_rejects_unmasked_frames_with_1002() {
    let (addr, mut events) = echo_server(ServerBuilder::new()).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    tcp.write_all(&frame(OpCode::Text, true, false, b"no mask", None))
        .await
        .unwrap();
    let (code, seen) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1002));
    assert!(seen.is_empty(), "nothing may be echoed: {seen:?}");
    let outcome = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap_err().contains("not masked"));
    still_serves(addr).await;
}

#[tokio::test]
async fn client_rejects_masked_frames_with_1002() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let key = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("sec-websocket-key: ")
                    .or_else(|| l.strip_prefix("Sec-WebSocket-Key: "))
            })
            .unwrap()
            .trim()
            .to_owned();
        let accept = duplex::proto::handshake::accept_key(key.as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        tcp.write_all(resp.as_bytes()).await.unwrap();
        tcp.write_all(&frame(
            OpCode::Text,
            true,
            false,
            b"masked!",
            Some([1, 2, 3, 4]),
        ))
        .await
        .unwrap();
        read_until_close(&mut tcp).await.0
    });
    let mut ws = ClientBuilder::new()
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    let err = tokio::time::timeout(LIMIT, ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(duplex::proto::ProtocolError::MaskedFrame)
        ),
        "{err}"
    );
    assert_eq!(server.await.unwrap(), Some(1002));
}

#[tokio::test]
async fn valid_close_codes_are_echoed_and_invalid_ones_get_1002() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    for code in [
        1000u16, 1001, 1003, 1007, 1008, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
    ] {
        let (mut tcp, _) = raw_client(addr, "").await;
        tcp.write_all(&client_frame(OpCode::Close, true, &code.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            read_until_close(&mut tcp).await.0,
            Some(code),
            "code {code}"
        );
        wait_for_eof(&mut tcp).await;
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let (mut tcp, _) = raw_client(addr, "").await;
        tcp.write_all(&client_frame(OpCode::Close, true, &code.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            read_until_close(&mut tcp).await.0,
            Some(1002),
            "code {code}"
        );
    }
    still_serves(addr).await;
}

#[tokio::test]
async fn a_flood_of_one_byte_fragments_ends_in_1009() {
    let config = Config::default().with_limits(Limits {
        max_fragments: 1000,
        ..Limits::default()
    });
    let (addr, _events) = echo_server(ServerBuilder::new().config(config)).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    let mut flood = client_frame(OpCode::Text, false, b"a");
    for _ in 0..5000 {
        flood.extend_from_slice(&client_frame(OpCode::Continuation, false, b"a"));
    }
    // The server may close before we finish writing: that is the point.
    let _ = tcp.write_all(&flood).await;
    let (code, seen) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1009));
    assert!(seen.is_empty());
    still_serves(addr).await;
}

#[tokio::test]
async fn a_decompression_bomb_ends_in_1009_without_inflating_it() {
    let config = Config::default()
        .with_compression()
        .with_max_message_size(1 << 20);
    let (addr, _events) = echo_server(ServerBuilder::new().config(config)).await;
    let (mut tcp, head) =
        raw_client(addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    assert!(
        head.to_ascii_lowercase().contains("permessage-deflate"),
        "{head}"
    );
    // 64 MiB of zeros compress to about 64 KiB.
    let mut deflater = Deflater::new(&DeflateParams::default(), Role::Client, 9, 0);
    let mut bomb = BytesMut::new();
    deflater.compress(&vec![0u8; 64 << 20], &mut bomb);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let _ = tcp
        .write_all(&frame(
            OpCode::Binary,
            true,
            true,
            &bomb,
            Some([9, 8, 7, 6]),
        ))
        .await;
    assert_eq!(read_until_close(&mut tcp).await.0, Some(1009));
    still_serves(addr).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_fails_from_its_header_alone() {
    let config = Config::default().with_max_frame_size(1024);
    let (addr, _events) = echo_server(ServerBuilder::new().config(config)).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    // Announce 1 GiB, send only the header: the answer must not wait for the payload.
    let header = duplex::proto::frame::FrameHeader {
        fin: true,
        rsv1: false,
        opcode: OpCode::Binary,
        mask: Some([1, 1, 1, 1]),
        payload_len: 1 << 30,
    };
    let mut wire = Vec::new();
    header.encode(&mut wire);
    tcp.write_all(&wire).await.unwrap();
    assert_eq!(read_until_close(&mut tcp).await.0, Some(1009));
}

#[tokio::test]
async fn invalid_utf8_fails_at_the_first_bad_byte() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    // Announce 1,000 bytes but send only a valid prefix and one invalid byte:
    // the server must not wait for the other 990.
    let mut payload = b"valid \xce\xba".to_vec();
    payload.push(0xff);
    payload.resize(1000, b'x');
    let whole = client_frame(OpCode::Text, true, &payload);
    let header_len = whole.len() - payload.len();
    tcp.write_all(&whole[..header_len + 10]).await.unwrap();
    assert_eq!(read_until_close(&mut tcp).await.0, Some(1007));
}

#[tokio::test]
async fn header_floods_and_huge_heads_get_431() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let many: String = (0..500).map(|i| format!("X-Flood-{i}: y\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "a".repeat(64 << 10));
    for extra in [many, huge] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(upgrade_request(&extra).as_bytes()).await;
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    }
    still_serves(addr).await;
}

#[tokio::test]
async fn bad_upgrade_requests_get_a_status_and_a_reason() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let cases = [
        (
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 12",
            "426",
            "Sec-WebSocket-Version",
        ),
        ("GET", "POST", "405", "GET"),
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: short",
            "400",
            "16 bytes",
        ),
    ];
    for (from, to, status, reason) in cases {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(upgrade_request("").replace(from, to).as_bytes())
            .await
            .unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(
            LIMIT,
            tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut all),
        )
        .await
        .unwrap()
        .unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(text.contains(reason), "{text}");
    }
    still_serves(addr).await;
}

#[tokio::test]
async fn a_slow_handshake_is_cut_off() {
    let config = Config::default().with_handshake_timeout(Duration::from_millis(300));
    let (addr, mut events) = echo_server(ServerBuilder::new().config(config)).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Slowloris: half a request head, then nothing.
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    wait_for_eof(&mut tcp).await;
    let outcome = tokio::time::timeout(LIMIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.unwrap_err().contains("did not complete"));
    still_serves(addr).await;
}

#[tokio::test]
async fn a_peer_that_vanishes_is_an_abnormal_closure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        let first = ws.recv().await;
        let after = ws.recv().await;
        (first.map(|r| r.map_err(|e| e.to_string())), after.is_none())
    });
    let (tcp, _) = raw_client(addr, "").await;
    drop(tcp);
    let (first, ended) = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert!(
        matches!(first, Some(Err(ref e)) if e.contains("1006")),
        "{first:?}"
    );
    assert!(ended);
}

#[tokio::test]
async fn control_frames_inside_a_fragmented_message_are_answered() {
    let (addr, _events) = echo_server(ServerBuilder::new()).await;
    let (mut tcp, _) = raw_client(addr, "").await;
    let mut wire = client_frame(OpCode::Text, false, b"frag");
    wire.extend_from_slice(&client_frame(OpCode::Ping, true, b"in the middle"));
    wire.extend_from_slice(&client_frame(OpCode::Continuation, true, b"mented"));
    wire.extend_from_slice(&client_frame(OpCode::Close, true, &1000u16.to_be_bytes()));
    tcp.write_all(&wire).await.unwrap();
    let (code, seen) = read_until_close(&mut tcp).await;
    assert_eq!(code, Some(1000));
    assert_eq!(
        seen,
        vec![
            Message::Pong("in the middle".into()),
            Message::text("fragmented")
        ]
    );
}
