//! Test support: an in-process server on a free loopback port with its own
//! data directory, a hub client that tells replies from pushes, and a tiny
//! HTTP client.
#![allow(dead_code)] // each test binary uses a different subset

pub mod disk;
pub mod files;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_server::{Server, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A server and the directory it keeps its data in.
///
/// With `DUPLEX_TEST_ENGINE=redis` in the environment, every server the
/// tests start keeps its channels in a `redis-server` of its own (unless
/// the test gives it one), so the same tests prove both engines.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    /// The Redis server started for it, if any.
    pub redis: Option<redis::RedisServer>,
    settings: Settings,
}

/// Whether tests run on Redis rather than the embedded store.
pub fn on_redis() -> bool {
    std::env::var("DUPLEX_TEST_ENGINE").is_ok_and(|e| e == "redis")
}

impl TestServer {
    pub async fn start(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, adjust).await
    }

    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().to_owned(),
            ..Settings::default()
        };
        adjust(&mut settings);
        let mut redis = None;
        if on_redis() && settings.redis.is_empty() {
            let server = redis::RedisServer::start().await;
            settings.redis = vec![server.url()];
            redis = Some(server);
        }
        let server = Server::start(settings.clone()).await.unwrap();
        Self {
            server,
            dir,
            redis,
            settings,
        }
    }

    /// Shuts down gracefully and starts again on the same data (directory
    /// or Redis), on a new port.
    pub async fn restart(self) -> Self {
        let Self {
            server,
            dir,
            redis,
            settings,
        } = self;
        server.shutdown().await;
        let server = Server::start(settings.clone()).await.unwrap();
        Self {
            server,
            dir,
            redis,
            settings,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A TLS server whose certificate is made for `localhost` on the fly.
    pub async fn start_tls(adjust: impl FnOnce(&mut Settings)) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        Self::start_in(dir, |s| {
            s.tls_cert = Some(cert_path);
            s.tls_key = Some(key_path);
            adjust(s);
        })
        .await
    }

    pub async fn client(&self) -> HubClient {
        HubClient::connect(self.addr()).await
    }
}

/// A hub connection that numbers its commands and keeps pushes aside.
pub struct HubClient<S = MaybeTlsStream> {
    pub ws: WebSocket<S>,
    next_id: u64,
    pub pushes: std::collections::VecDeque<Value>,
    pub closed: Option<(u16, String)>,
}

impl HubClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let ws = ClientBuilder::new()
            .connect(&format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Self::on(ws)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> HubClient<S> {
    /// A hub client on a socket already open on `/ws` (over HTTP/2, say).
    pub fn on(ws: WebSocket<S>) -> Self {
        Self {
            ws,
            next_id: 1,
            pushes: Default::default(),
            closed: None,
        }
    }

    /// Sends a command and waits for its reply (result or error object).
    pub async fn call(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws.send(command.to_string()).await.unwrap();
        self.reply_to(id).await
    }

    /// Like `call`, but returns `result`, failing the test on an error reply.
    pub async fn ok(&mut self, command: Value) -> Value {
        let reply = self.call(command.clone()).await;
        assert!(reply.get("error").is_none(), "{command} failed: {reply}");
        reply["result"].clone()
    }

    /// Sends raw text and returns the next reply with `id` (or a null id).
    pub async fn raw(&mut self, text: &str) -> Value {
        self.ws.send(text.to_owned()).await.unwrap();
        loop {
            let v = self.next_value().await.expect("a reply");
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else {
                return v;
            }
        }
    }

    async fn reply_to(&mut self, id: u64) -> Value {
        loop {
            let v = self.next_value().await.unwrap_or_else(|| {
                panic!(
                    "connection closed waiting for reply {id}: {:?}",
                    self.closed
                )
            });
            if v.get("push").is_some() {
                self.pushes.push_back(v);
            } else if v["id"] == json!(id) {
                return v;
            } else {
                panic!("unexpected reply {v} while waiting for {id}");
            }
        }
    }

    /// The next push (queued or new).
    pub async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        loop {
            let v = self.next_value().await.unwrap_or_else(|| {
                panic!("connection closed waiting for a push: {:?}", self.closed)
            });
            if v.get("push").is_some() {
                return v;
            }
        }
    }

    /// The next push of one kind (`publication`, `join`...), skipping others.
    pub async fn push_of(&mut self, kind: &str) -> Value {
        loop {
            let p = self.push().await;
            if p["push"] == kind {
                return p;
            }
        }
    }

    /// The next JSON value from the server; `None` once closed.
    pub async fn next_value(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(LIMIT, self.ws.recv())
                .await
                .expect("the server answered in time")
            {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(
                        frame
                            .map(|f| (f.code.0, f.reason))
                            .unwrap_or((1005, String::new())),
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {}
                None => return None,
            }
        }
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn closed_with(&mut self) -> u16 {
        while self.next_value().await.is_some() {}
        self.closed.as_ref().map(|c| c.0).unwrap_or(1006)
    }
}

/// A one-shot HTTP/1.1 request; returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_response(addr, method, path, headers, body).await;
    (status, body)
}

/// A one-shot HTTP/1.1 request; returns the status, the head (status line
/// and headers) and the body.
pub async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    let raw = exchange(tcp, &req).await;
    parse_response(&raw)
}

/// A one-shot HTTP/1.1 `GET` over TLS (certificates not checked); returns
/// the status and the body.
pub async fn https_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let connector = tokio_rustls::TlsConnector::from(duplex::tls::insecure_client_config());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = parse_response(&exchange(tls, &req).await);
    (status, body)
}

/// Writes `req`, reads the response to the end of the connection.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    req: &str,
) -> Vec<u8> {
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify: what came is the answer.
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw))
        .await
        .unwrap();
    raw
}

/// The status, the head and the (de-chunked) body of a raw response.
fn parse_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(text.len());
    let mut body = text[body_start..].to_owned();
    if text[..body_start]
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, text[..body_start].to_owned(), body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The offsets of a reply's `publications`.
pub fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("a list of publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("an offset"))
        .collect()
}

/// A seeded generator for a randomized test, and the words that name its
/// seed in every failure: `DUPLEX_TEST_SEED=<n>` replays a run.
pub fn seeded() -> (rand::rngs::StdRng, String) {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("DUPLEX_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    (
        rand::rngs::StdRng::seed_from_u64(seed),
        format!("seed {seed} (DUPLEX_TEST_SEED={seed} replays it)"),
    )
}

/// Publishes through the HTTP API.
pub async fn api_publish(addr: SocketAddr, channel: &str, data: Value) -> Value {
    let body = json!({"channel": channel, "data": data}).to_string();
    let (status, text) = http(addr, "POST", "/api/publish", &[], Some(&body)).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}
