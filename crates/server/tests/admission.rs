//! Connection admission: WebSocket connections beyond `--max-connections`
//! in all or `--max-connections-per-address` from one address are refused at
//! the handshake with 503, `Retry-After` and why, on the fast path and on
//! the routes alike; a closed connection frees its place.

mod support;

use std::net::{IpAddr, SocketAddr};

use support::{LIMIT, TestServer, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How an upgrade is sent: bodiless (the fast path takes it) or with an
/// empty body (the fast path leaves it to the routes).
#[derive(Clone, Copy, Debug)]
enum Path {
    Fast,
    Route,
}

/// An upgrade to `/echo` from `source` (a loopback address); the open
/// stream on 101, or the status, headers and body of the refusal.
async fn upgrade(server: SocketAddr, source: &str, path: Path) -> Result<TcpStream, (u16, String)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let mut tcp = socket.connect(server).await.unwrap();
    let body = match path {
        Path::Fast => "",
        Path::Route => "Content-Length: 0\r\n",
    };
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{body}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a response");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    if head.starts_with("HTTP/1.1 101") {
        return Ok(tcp);
    }
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    tokio::time::timeout(LIMIT, tcp.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    Err((status, format!("{head}{}", String::from_utf8_lossy(&body))))
}

#[tokio::test]
async fn connections_past_the_limits_get_503_with_retry_after_and_why() {
    for path in [Path::Fast, Path::Route] {
        let server = TestServer::start(|s| {
            s.max_connections = 3;
            s.max_connections_per_address = 2;
        })
        .await;
        let addr = server.addr();
        let a1 = upgrade(addr, "127.0.0.1", path).await.unwrap();
        let _a2 = upgrade(addr, "127.0.0.1", path).await.unwrap();
        let (status, text) = upgrade(addr, "127.0.0.1", path).await.unwrap_err();
        assert_eq!(status, 503, "{path:?}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("retry-after: 5"), "{text}");
        assert!(text.contains("--max-connections-per-address"), "{text}");

        // Another address has room, until the total is reached.
        let _b1 = upgrade(addr, "127.0.0.2", path).await.unwrap();
        let (status, text) = upgrade(addr, "127.0.0.3", path).await.unwrap_err();
        assert_eq!(status, 503, "{path:?}: {text}");
        assert!(
            text.contains("maximum of 3") && text.contains("--max-connections"),
            "{text}"
        );

        // A connection that ends frees its place (once the server has seen
        // it end: asked again until then, within the limit of time).
        drop(a1);
        let deadline = tokio::time::Instant::now() + LIMIT;
        let _a3 = loop {
            match upgrade(addr, "127.0.0.1", path).await {
                Ok(tcp) => break tcp,
                Err((503, _)) if tokio::time::Instant::now() < deadline => {
                    tokio::task::yield_now().await
                }
                Err(other) => panic!("{path:?}: {other:?}"),
            }
        };
        let (status, metrics) = http(addr, "GET", "/metrics", &[], None).await;
        assert_eq!(status, 200);
        let refused: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("duplex_connections_refused_total "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(refused >= 2, "{metrics}");
    }
}
