//! The WebSocket fast path of `duplex serve` (plain TCP: upgrades to /echo
//! and /ws are answered without hyper) keeps the routes' checks, and every
//! other request still reaches hyper intact, on the same connection.
//!
//! hyper puts a `date` header on every response and the fast path does not,
//! which tells the tests which path answered.

mod support;

use std::net::SocketAddr;

use support::{LIMIT, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads one response head; returns it (lower-cased) and the bytes after it.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(tcp: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
            return (head, buf[end + 4..].to_vec());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Sends `request` on a fresh connection; returns the response head.
async fn one(addr: SocketAddr, request: &str) -> (String, TcpStream, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut tcp).await;
    (head, tcp, rest)
}

/// A masked client text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Reads one unmasked server frame, starting with the bytes in `have`;
/// returns its first byte and payload, and leaves what follows in `have`.
async fn read_frame(tcp: &mut TcpStream, have: &mut Vec<u8>) -> (u8, Vec<u8>) {
    while have.len() < 2 || have.len() < 2 + (have[1] & 0x7f) as usize {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut chunk))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(n > 0, "closed before a frame");
        have.extend_from_slice(&chunk[..n]);
    }
    let len = (have[1] & 0x7f) as usize;
    let frame: Vec<u8> = have.drain(..2 + len).collect();
    (frame[0], frame[2..].to_vec())
}

#[tokio::test]
async fn upgrades_take_the_fast_path_and_echo() {
    let t = TestServer::start(|_| {}).await;
    let (head, mut tcp, mut rest) = one(t.addr(), &upgrade("/echo", "")).await;
    assert_eq!(status(&head), 101, "{head}");
    assert!(head.contains(&format!(
        "sec-websocket-accept: {}",
        ACCEPT.to_ascii_lowercase()
    )));
    assert!(!head.contains("date:"), "answered by hyper: {head}");
    tcp.write_all(&text_frame(b"hello")).await.unwrap();
    assert_eq!(
        read_frame(&mut tcp, &mut rest).await,
        (0x81, b"hello".to_vec())
    );
}

/// Echo counts reach /metrics: the echo adds them to the shared counters
/// once per batch, when the socket waits, so the scrape is retried until
/// they show (they must within `LIMIT`).
#[tokio::test]
async fn echoed_messages_are_counted_in_metrics() {
    let t = TestServer::start(|_| {}).await;
    let mut bytes = upgrade("/echo", "").into_bytes();
    for i in 0..20 {
        bytes.extend_from_slice(&text_frame(format!("message {i:02}").as_bytes()));
    }
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    let (head, mut rest) = read_head(&mut tcp).await;
    assert_eq!(status(&head), 101, "{head}");
    for i in 0..20 {
        let expected = format!("message {i:02}").into_bytes();
        assert_eq!(read_frame(&mut tcp, &mut rest).await.1, expected);
    }
    let wanted = [
        "duplex_messages_received_total 20",
        "duplex_messages_sent_total 20",
        "duplex_received_bytes_total 200",
    ];
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (_, metrics) = support::http(t.addr(), "GET", "/metrics", &[], None).await;
        if wanted
            .iter()
            .all(|line| metrics.lines().any(|l| l == *line))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn frames_pipelined_behind_the_request_are_not_lost() {
    let t = TestServer::start(|_| {}).await;
    let mut bytes = upgrade("/echo", "").into_bytes();
    bytes.extend_from_slice(&text_frame(b"first"));
    bytes.extend_from_slice(&text_frame(b"second"));
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    let (head, mut rest) = read_head(&mut tcp).await;
    assert_eq!(status(&head), 101, "{head}");
    assert_eq!(read_frame(&mut tcp, &mut rest).await.1, b"first");
    let (_, second) = read_frame(&mut tcp, &mut rest).await;
    assert_eq!(second, b"second");
}

#[tokio::test]
async fn a_head_that_arrives_in_pieces_is_put_together() {
    let t = TestServer::start(|_| {}).await;
    let request = upgrade("/echo", "");
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    for piece in request.as_bytes().chunks(7) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let (head, _) = read_head(&mut tcp).await;
    assert_eq!(status(&head), 101, "{head}");
}

#[tokio::test]
async fn a_disallowed_origin_is_refused_on_every_endpoint() {
    let t = TestServer::start(|s| s.allowed_origins = vec!["https://chat.example".into()]).await;
    // Every endpoint, so that one added later cannot skip the check (round
    // 1's /files had its own upgrade and did).
    for path in duplex_server::app::Endpoint::ALL.map(|e| e.path()) {
        let (head, ..) = one(t.addr(), &upgrade(path, "Origin: https://evil.example\r\n")).await;
        assert_eq!(status(&head), 403, "{path}: {head}");
        let (head, ..) = one(t.addr(), &upgrade(path, "Origin: https://chat.example\r\n")).await;
        assert_eq!(status(&head), 101, "{path}: {head}");
        assert!(!head.contains("date:"), "{path}: answered by hyper: {head}");
    }
}

#[tokio::test]
async fn bad_handshakes_get_the_routes_statuses() {
    let t = TestServer::start(|_| {}).await;
    for path in ["/ws", "/echo"] {
        // No key.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let (head, ..) = one(t.addr(), &request).await;
        assert_eq!(status(&head), 400, "{path}: {head}");
        // A version other than 13.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
        );
        let (head, ..) = one(t.addr(), &request).await;
        assert_eq!(status(&head), 426, "{path}: {head}");
        assert!(head.contains("sec-websocket-version: 13"), "{head}");
        // Not an upgrade at all.
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (head, ..) = one(t.addr(), &request).await;
        assert_eq!(status(&head), 426, "{path}: {head}");
        // Not GET.
        let (head, ..) = one(
            t.addr(),
            &upgrade(path, "")
                .replacen("GET", "POST", 1)
                .replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&head), 405, "{path}: {head}");
    }
    // A malformed head: hyper's answer.
    let (head, ..) = one(t.addr(), "GET /echo HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert_eq!(status(&head), 400, "{head}");
}

#[tokio::test]
async fn other_requests_reach_hyper_and_the_connection_stays_usable() {
    let t = TestServer::start(|_| {}).await;
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    // Two requests pipelined in one write: the page, then the health check.
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, mut rest) = read_head(&mut tcp).await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(head.contains("date:"), "not hyper: {head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    while rest.len() < len {
        let mut chunk = [0u8; 8192];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&rest[..len]).contains("<html"));
    let after = rest[len..].to_vec();
    let mut tcp2 = tcp;
    let (head, body) = if let Some(end) = after.windows(4).position(|w| w == b"\r\n\r\n") {
        (
            String::from_utf8_lossy(&after[..end + 4]).to_ascii_lowercase(),
            after[end + 4..].to_vec(),
        )
    } else {
        let (h, b) = read_head(&mut tcp2).await;
        assert!(after.is_empty(), "a partial head was left: {after:?}");
        (h, b)
    };
    assert_eq!(status(&head), 200, "{head}");
    let mut body = body;
    while body.len() < 3 {
        let mut chunk = [0u8; 64];
        let n = tcp2.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&body[..3], b"ok\n");
    // And the hub still works end to end on the fast path.
    let mut client = t.client().await;
    client
        .ok(serde_json::json!({"cmd": "connect", "name": "fast"}))
        .await;
}

/// `duplex_memory_budget_used_bytes` from `/metrics`.
async fn budget_used(addr: SocketAddr) -> usize {
    let (_, metrics) = support::http(addr, "GET", "/metrics", &[], None).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("duplex_memory_budget_used_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no budget gauge in {metrics}"))
}

/// A head longer than its first buffer is charged to the memory budget
/// while it trickles in; one that does not fit is answered 503 with
/// `Retry-After`, while short requests (most heads) are served as ever.
#[tokio::test]
async fn long_heads_are_charged_and_refused_with_503_when_memory_is_short() {
    let server = TestServer::start(|s| s.memory_budget = 24 << 10).await;
    let addr = server.addr();
    // An unfinished head of 14 KiB (under the 16 KiB head limit).
    let long_head = |n: usize| {
        let mut head = format!("GET /echo?{n} HTTP/1.1\r\nHost: localhost\r\n");
        while head.len() < 14 << 10 {
            head.push_str("X-Filler: ");
            head.push_str(&"f".repeat(100));
            head.push_str("\r\n");
        }
        head
    };
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(long_head(1).as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while budget_used(addr).await < 12 << 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the head was never charged"
        );
        tokio::task::yield_now().await;
    }
    let mut second = TcpStream::connect(addr).await.unwrap();
    // The server answers and closes once the head outgrows what is left:
    // the rest of it may be refused by the closed socket.
    let _ = second.write_all(long_head(2).as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(LIMIT, second.read_to_end(&mut response))
        .await
        .expect("an answer in time");
    let response = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 503"), "{response}");
    assert!(response.contains("retry-after: 5"), "{response}");
    assert!(response.contains("memory budget"), "{response}");
    // A short request is served meanwhile.
    let (status, _) = support::http(addr, "GET", "/healthz", &[], None).await;
    assert_eq!(status, 200);
    // The first head, once finished, is served: it was charged, not refused.
    first.write_all(b"\r\n").await.unwrap();
    let mut head = vec![0u8; 12];
    tokio::time::timeout(LIMIT, first.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = String::from_utf8_lossy(&head);
    assert!(
        status.starts_with("HTTP/1.1 4"),
        "not an upgrade, so refused by the route, not for memory: {status}"
    );
}

/// Sends `request` over a fresh TLS connection; returns the response head
/// and the bytes after it.
async fn one_tls(
    addr: SocketAddr,
    request: &str,
) -> (String, tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let connector = tokio_rustls::TlsConnector::from(duplex::tls::insecure_client_config());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut tls).await;
    (head, tls, rest)
}

/// TLS connections take the same accept path as plain ones: upgrades are
/// answered by the fast path with the same checks on every endpoint, an
/// echo works, and other requests still reach hyper.
#[tokio::test]
async fn over_tls_upgrades_take_the_fast_path_with_the_same_checks() {
    let t =
        TestServer::start_tls(|s| s.allowed_origins = vec!["https://chat.example".into()]).await;
    for path in duplex_server::app::Endpoint::ALL.map(|e| e.path()) {
        let (head, ..) =
            one_tls(t.addr(), &upgrade(path, "Origin: https://evil.example\r\n")).await;
        assert_eq!(status(&head), 403, "{path}: {head}");
        let (head, ..) =
            one_tls(t.addr(), &upgrade(path, "Origin: https://chat.example\r\n")).await;
        assert_eq!(status(&head), 101, "{path}: {head}");
        assert!(!head.contains("date:"), "{path}: answered by hyper: {head}");
    }
    let (head, mut tls, mut rest) = one_tls(t.addr(), &upgrade("/echo", "")).await;
    assert_eq!(status(&head), 101, "{head}");
    tls.write_all(&text_frame(b"over tls")).await.unwrap();
    while rest.len() < 10 {
        let mut chunk = [0u8; 64];
        let n = tokio::time::timeout(LIMIT, tls.read(&mut chunk))
            .await
            .expect("an echo in time")
            .unwrap();
        assert!(n > 0, "closed before the echo");
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&rest[..10], b"\x81\x08over tls");
    let (head, ..) = one_tls(
        t.addr(),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(head.contains("date:"), "answered by hyper: {head}");
}
