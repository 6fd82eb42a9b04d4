//! Helpers shared by the end-to-end test binaries (`interop`, `tls`, `proxy`,
//! `proxy_env`, `upgrade`): bounded waits, an in-process duplex echo server
//! that reports what each connection saw, a throwaway PKI, a small HTTP
//! `CONNECT` proxy, and the external peer programs of `tests/peers/`.
//!
//! Nothing here sleeps to synchronise: every wait is on a real event (a
//! line of output, a message, a report on a channel) and bounded by
//! [`LIMIT`].

// Each test binary compiles its own copy of this module and uses a
// different subset of it.
#![allow(dead_code)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use duplex::{CloseCode, Config, DeflateConfig, Message, ServerBuilder, WebSocket};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_rustls::rustls;

/// The bound on every single wait. Generous, because the tests run in debug
/// builds on shared, small machines (deflating 1 MiB unoptimised is slow),
/// but finite, so a hang fails the test instead of the CI job.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`LIMIT`].
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------
// Payloads

/// Text that exercises multi-byte UTF-8 (2, 3 and 4 bytes), an escaped
/// newline and U+2028, which JSON encoders leave raw and line splitters
/// other than `\n` would break on.
pub const NON_ASCII: &str = "héllo wörld — 你好, мир 🦀🎉 \u{2028} end\nsecond line";

/// Deterministic bytes from a 16-symbol alphabet: compressible (so deflate
/// really works with back-references) but not trivially so.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 16) as u8 * 17
        })
        .collect()
}

/// The data messages every echo test round-trips, one at a time. (Empty
/// messages have their own test in `interop.rs`.)
pub fn echo_cases() -> Vec<Message> {
    vec![
        Message::text("hello"),
        Message::text(NON_ASCII),
        Message::binary(vec![0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff]),
        Message::binary(pseudo_random(1 << 20, 7)),
    ]
}

/// The 100 small messages sent back to back, alternating text and binary.
pub fn burst_cases() -> Vec<Message> {
    (0..100)
        .map(|i| {
            if i % 2 == 0 {
                Message::text(format!("message #{i} ✓"))
            } else {
                Message::binary(format!("bin-{i}").into_bytes())
            }
        })
        .collect()
}

/// Compares two messages without dumping megabytes into the failure output.
#[track_caller]
pub fn assert_same_message(got: &Message, want: &Message, context: &str) {
    let kind = |m: &Message| match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
    };
    assert_eq!(kind(got), kind(want), "{context}: message type");
    assert_same_bytes(got.as_bytes(), want.as_bytes(), context);
}

/// Compares payloads, reporting the length and the first difference.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], context: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{context}: payload differs: got {} bytes, want {} bytes, first difference at {:?}; \
         got starts {:?}",
        got.len(),
        want.len(),
        first,
        String::from_utf8_lossy(&got[..got.len().min(80)]),
    );
}

/// The next text or binary message, skipping pings and pongs. Fails the
/// test on a close, an error or the end of the stream.
pub async fn next_data<S>(ws: &mut WebSocket<S>, what: &str) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match within(what, ws.recv()).await {
            Some(Ok(m)) if m.is_data() => return m,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("{what}: expected a data message, got {other:?}"),
        }
    }
}

/// Runs the standard echo conversation on an open client: each of
/// [`echo_cases`] sent and echoed in turn, then [`burst_cases`] all sent
/// before any echo is read (pipelined), echoed in order.
pub async fn echo_conversation<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for (i, msg) in echo_cases().into_iter().enumerate() {
        within("send", ws.send(msg.clone()))
            .await
            .unwrap_or_else(|e| panic!("sending case {i} ({} bytes): {e}", msg.len()));
        let echo = next_data(ws, &format!("echo of case {i}")).await;
        assert_same_message(&echo, &msg, &format!("echo of case {i}"));
    }
    let burst = burst_cases();
    for msg in &burst {
        within("feed", ws.feed(msg.clone())).await.expect("feed");
    }
    within("flush", ws.flush()).await.expect("flush");
    for (i, msg) in burst.iter().enumerate() {
        let echo = next_data(ws, &format!("echo of burst message {i}")).await;
        assert_same_message(&echo, msg, &format!("echo of burst message {i}"));
    }
}

/// Closes with 1000 and checks the closing handshake completed cleanly: the
/// peer answered with 1000 and the stream then ends without an error.
pub async fn close_cleanly<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within("close", ws.close(CloseCode::NORMAL, "done"))
        .await
        .expect("closing handshake");
    assert_eq!(
        ws.close_frame().map(|f| f.code),
        Some(CloseCode::NORMAL),
        "the peer's close frame"
    );
    assert_eq!(ws.state(), duplex::State::Closed);
    let after = within("recv after close", ws.recv()).await;
    assert!(after.is_none(), "nothing after a clean close: {after:?}");
}

// ---------------------------------------------------------------------------
// In-process duplex echo server

/// What one server-side connection saw, reported when it ended.
#[derive(Debug)]
pub struct EchoReport {
    /// Whether permessage-deflate was negotiated.
    pub compressed: bool,
    /// Data messages echoed.
    pub messages: usize,
    /// The close frame the client sent, if any.
    pub close: Option<duplex::CloseFrame>,
    /// The error the connection ended with, if any.
    pub error: Option<String>,
}

impl EchoReport {
    /// The client's close code, if it sent one.
    pub fn close_code(&self) -> Option<u16> {
        self.close.as_ref().map(|f| f.code.0)
    }
}

/// Echoes every data message back (batched with `feed`, flushed by the next
/// `recv`, as the server docs recommend) until the connection ends.
pub async fn echo<S>(mut ws: WebSocket<S>) -> EchoReport
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let compressed = ws.is_compressed();
    let mut messages = 0;
    let mut error = None;
    while let Some(msg) = ws.recv().await {
        match msg {
            Ok(m) if m.is_data() => {
                messages += 1;
                if let Err(e) = ws.feed(m).await {
                    error = Some(e.to_string());
                    break;
                }
            }
            Ok(_) => {}
            // Reported once, then `recv` ends the stream: keep polling so
            // the transport is shut down properly.
            Err(e) => error = Some(e.to_string()),
        }
    }
    EchoReport {
        compressed,
        messages,
        close: ws.close_frame().cloned(),
        error,
    }
}

/// Where an echo server's connections report.
type Reports = mpsc::UnboundedSender<Result<EchoReport, String>>;

/// A duplex echo server on `127.0.0.1:0`, running until the test's runtime
/// stops. Each connection's outcome (or handshake error) arrives on
/// `reports` (each WebSocket's, on HTTP/2).
pub struct EchoServer {
    pub addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<Result<EchoReport, String>>,
    /// TCP connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl EchoServer {
    /// Plain TCP: `ws://`.
    pub async fn start(server: ServerBuilder) -> Self {
        Self::start_with(move |tcp| {
            let server = server.clone();
            async move {
                let ws = server
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                Ok(echo(ws).await)
            }
        })
        .await
    }

    /// TLS with `tls`, then the WebSocket handshake: `wss://`.
    pub async fn start_tls(server: ServerBuilder, tls: Arc<rustls::ServerConfig>) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        Self::start_with(move |tcp| {
            let server = server.clone();
            let acceptor = acceptor.clone();
            async move {
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let ws = server
                    .accept(tls)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                Ok(echo(ws).await)
            }
        })
        .await
    }

    /// hyper serving HTTP/1.1 and HTTP/2 (prior knowledge on plain TCP, or
    /// ALPN `h2` with `tls`), each request upgraded by
    /// [`duplex::upgrade::upgrade`]: HTTP/1.1 upgrades and, when
    /// `extended_connect` is on, RFC 8441 extended CONNECTs. Each
    /// WebSocket's outcome is a report.
    pub async fn start_http2(
        server: ServerBuilder,
        tls: Option<Arc<rustls::ServerConfig>>,
        extended_connect: bool,
    ) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let tls = tls.map(|config| {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        Self::start_serving(move |tcp, tx| {
            let (server, tls) = (server.clone(), tls.clone());
            let service = hyper::service::service_fn(move |req| {
                let (server, tx) = (server.clone(), tx.clone());
                async move {
                    let response = match duplex::upgrade::upgrade(req, &server) {
                        Ok((response, pending)) => {
                            tokio::spawn(async move {
                                let report = match pending.await {
                                    Ok(ws) => Ok(echo(ws).await),
                                    Err(e) => Err(format!("upgrade: {e}")),
                                };
                                let _ = tx.send(report);
                            });
                            response
                        }
                        Err(rejection) => rejection,
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if extended_connect {
                    builder.http2().enable_connect_protocol();
                }
                let _ = match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    None => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await
                    }
                };
            }
        })
        .await
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One report per connection: what `serve` made of it.
    async fn start_with<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = Result<EchoReport, String>> + Send + 'static,
    {
        Self::start_serving(move |tcp, tx| {
            let conn = serve(tcp);
            async move {
                let _ = tx.send(conn.await);
            }
        })
        .await
    }

    /// Each connection served by `serve`, which sends its reports.
    async fn start_serving<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream, Reports) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, reports) = mpsc::unbounded_channel();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(serve(tcp, tx.clone()));
            }
        });
        Self {
            addr,
            reports,
            connections,
        }
    }

    /// The next connection's outcome, in the order connections ended.
    pub async fn next_report(&mut self) -> Result<EchoReport, String> {
        within("the server's connection report", self.reports.recv())
            .await
            .expect("the server task is running")
    }

    /// Asserts that no connection has ended (or failed its handshake) so
    /// far: nothing reached the server.
    pub fn assert_no_report(&mut self) {
        if let Ok(report) = self.reports.try_recv() {
            panic!("the server saw a connection: {report:?}");
        }
    }
}

/// Server settings with compression on or off.
pub fn server_builder(compress: bool) -> ServerBuilder {
    ServerBuilder::new()
        .config(Config::default().with_deflate(compress.then(DeflateConfig::default)))
}

// ---------------------------------------------------------------------------
// A throwaway PKI

/// A certificate authority made for one test run.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, both PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Duplex test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        Self { ca }
    }

    /// The CA certificate, PEM: what clients should trust.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed
    /// by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A duplex server TLS configuration for `names`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let leaf = self.leaf(names);
        duplex::tls::server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
            .expect("server TLS config")
    }

    /// A client TLS configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        duplex::tls::client_config_with_ca_only(self.ca_pem().as_bytes())
            .expect("client TLS config")
    }
}

// ---------------------------------------------------------------------------
// An HTTP CONNECT proxy

/// One `CONNECT` request the proxy answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEvent {
    /// The request target (`host:port`).
    pub target: String,
    /// The status answered: 200 (tunnel opened), 407, 403, 405 or 502.
    pub status: u16,
}

/// A minimal HTTP `CONNECT` proxy on `127.0.0.1:0` that tunnels only to
/// loopback addresses and records every request.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    events: Arc<Mutex<Vec<ProxyEvent>>>,
}

impl ConnectProxy {
    /// Starts the proxy; with `credentials`, requests must carry them as
    /// Basic `Proxy-Authorization` or get 407.
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, credentials)
    }

    /// Starts the proxy on a listener bound before the runtime existed
    /// (so its address can be put in the environment first).
    pub fn from_std(listener: std::net::TcpListener, credentials: Option<(&str, &str)>) -> Self {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = TcpListener::from_std(listener).expect("register the listener");
        Self::serve(listener, credentials)
    }

    fn serve(listener: TcpListener, credentials: Option<(&str, &str)>) -> Self {
        let expected = credentials.map(|(user, pass)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            format!("Basic {token}")
        });
        let addr = listener.local_addr().expect("local addr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (expected, log) = (expected.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = proxy_one(tcp, expected.as_deref(), &log).await;
                });
            }
        });
        Self { addr, events }
    }

    /// `http://127.0.0.1:PORT`, optionally with `user:pass@`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, pass)) => format!("http://{user}:{pass}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// Every request answered so far, in order. Events are recorded before
    /// the answer is sent, so once a client has its answer its event is here.
    pub fn events(&self) -> Vec<ProxyEvent> {
        self.events.lock().unwrap().clone()
    }
}

async fn proxy_one(
    mut client: TcpStream,
    expected_auth: Option<&str>,
    log: &Mutex<Vec<ProxyEvent>>,
) -> std::io::Result<()> {
    // Read the request head; whatever follows it belongs to the tunnel.
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Ok(());
        }
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default();
    let target = request_line.next().unwrap_or_default().to_owned();
    let auth = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });

    let mut upstream = None;
    let status = if method != "CONNECT" {
        405
    } else if expected_auth.is_some() && auth.as_deref() != expected_auth {
        407
    } else {
        // Tunnel only to loopback: these tests must never leave the machine.
        let loopback = tokio::net::lookup_host(target.as_str())
            .await
            .map(|addrs| addrs.filter(|a| a.ip().is_loopback()).collect::<Vec<_>>())
            .unwrap_or_default();
        if loopback.is_empty() {
            403
        } else {
            match TcpStream::connect(&loopback[..]).await {
                Ok(tcp) => {
                    upstream = Some(tcp);
                    200
                }
                Err(_) => 502,
            }
        }
    };
    log.lock().unwrap().push(ProxyEvent { target, status });
    let answer = match status {
        200 => "HTTP/1.1 200 Connection established\r\n\r\n",
        407 => {
            "HTTP/1.1 407 Proxy Authentication Required\r\n\
             Proxy-Authenticate: Basic realm=\"duplex-tests\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        }
        403 => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        405 => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        _ => "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    };
    client.write_all(answer.as_bytes()).await?;
    let Some(mut upstream) = upstream else {
        return client.shutdown().await;
    };
    upstream.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// External peers (tests/peers)

/// An independent WebSocket implementation run as a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Python `websockets`.
    Python,
    /// Node `ws`.
    Node,
}

/// Whether a missing peer fails the test (`DUPLEX_REQUIRE_PEERS=1`, as
/// `cargo xtask test` sets) instead of skipping it.
fn peers_required() -> bool {
    std::env::var("DUPLEX_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Reports a missing peer: a failure when peers are required, else a
/// visible skip.
fn unavailable<T>(why: String) -> Option<T> {
    if peers_required() {
        panic!("DUPLEX_REQUIRE_PEERS=1 but {why}");
    }
    eprintln!("skipped: {why} (run through `cargo xtask test`, or see tests/peers/README.md)");
    None
}

fn peers_dir() -> PathBuf {
    match std::env::var_os("DUPLEX_TEST_PEERS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers"),
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "Python websockets",
            Self::Node => "Node ws",
        }
    }

    /// A command running this peer's `role` script (`echo_server` or
    /// `echo_client`), or `None` after printing why it is skipped.
    fn command(self, role: &str) -> Option<Command> {
        let (script, mut cmd) = match self {
            Self::Python => {
                let script = peers_dir().join(format!("py_{role}.py"));
                let Some(python) = std::env::var_os("DUPLEX_TEST_PYTHON") else {
                    return unavailable(format!(
                        "DUPLEX_TEST_PYTHON is not set, so the {} peer cannot run",
                        self.name()
                    ));
                };
                if !Path::new(&python).is_file() {
                    return unavailable(format!("DUPLEX_TEST_PYTHON={python:?} does not exist"));
                }
                let mut cmd = Command::new(python);
                cmd.arg(&script);
                (script, cmd)
            }
            Self::Node => {
                let script = peers_dir().join(format!("node_{role}.js"));
                let Some(modules) = std::env::var_os("DUPLEX_TEST_NODE_PATH") else {
                    return unavailable(format!(
                        "DUPLEX_TEST_NODE_PATH is not set, so the {} peer cannot run",
                        self.name()
                    ));
                };
                if !Path::new(&modules).join("ws").is_dir() {
                    return unavailable(format!(
                        "DUPLEX_TEST_NODE_PATH={modules:?} has no `ws` package"
                    ));
                }
                let Some(node) = find_in_path("node") else {
                    return unavailable("`node` is not on PATH".to_owned());
                };
                let mut cmd = Command::new(node);
                cmd.env("NODE_PATH", modules).arg(&script);
                (script, cmd)
            }
        };
        if !script.is_file() {
            return unavailable(format!(
                "the peer script {} does not exist",
                script.display()
            ));
        }
        // The peers reach 127.0.0.1 only; keep a developer's proxy settings
        // from interfering.
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        Some(cmd)
    }

    /// Starts this peer's echo server and waits for its `LISTENING` line.
    pub async fn echo_server(self, compress: bool) -> Option<(PeerProcess, u16)> {
        let mut cmd = self.command("echo_server")?;
        cmd.args(["--port", "0", "--compress", on_off(compress)]);
        let mut process = PeerProcess::spawn(cmd, &format!("{} echo server", self.name()));
        let line = process.expect_line().await;
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{}: expected `LISTENING <port>`, got {line:?}",
                    process.what
                )
            });
        Some((process, port))
    }

    /// Starts this peer's echo client against `url`.
    pub fn echo_client(self, url: &str, compress: bool) -> Option<PeerProcess> {
        self.echo_client_with(url, compress, &[])
    }

    /// Starts this peer's echo client against `url`, with `extra`
    /// arguments (`--http2`).
    pub fn echo_client_with(
        self,
        url: &str,
        compress: bool,
        extra: &[&str],
    ) -> Option<PeerProcess> {
        let mut cmd = self.command("echo_client")?;
        cmd.args([url, "--compress", on_off(compress)]);
        cmd.args(extra);
        Some(PeerProcess::spawn(
            cmd,
            &format!("{} echo client", self.name()),
        ))
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// A running peer: lines in on stdin, lines out on stdout, stderr kept for
/// failure messages. Killed if dropped before it exits.
pub struct PeerProcess {
    pub what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl PeerProcess {
    fn spawn(mut cmd: Command, what: &str) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Self {
            what: what.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends one line on its stdin.
    pub async fn write_line(&mut self, line: &str) {
        let what = self.what.clone();
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if let Err(e) = within(&format!("writing to the {what}"), write).await {
            panic!("writing to the {what}: {e}; stderr:\n{}", self.stderr());
        }
    }

    /// Closes its stdin (end of input: the peers' signal to finish).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line of its stdout; fails the test at end of output.
    pub async fn expect_line(&mut self) -> String {
        let what = format!("a line from the {}", self.what);
        match tokio::time::timeout(LIMIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!(
                "the {} ended its output early; stderr:\n{}",
                self.what,
                self.stderr()
            ),
            Ok(Err(e)) => panic!("reading {what}: {e}"),
            Err(_) => panic!(
                "timed out after {LIMIT:?} waiting for {what}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits for the process to exit (stdin is closed first) and asserts it
    /// succeeded and printed nothing more.
    pub async fn wait_success(mut self) {
        self.close_stdin();
        let status: ExitStatus = within(&format!("the {} to exit", self.what), self.child.wait())
            .await
            .expect("wait for the child");
        let rest = within("the rest of its output", async {
            let mut rest = Vec::new();
            while let Ok(Some(line)) = self.stdout.next_line().await {
                rest.push(line);
            }
            rest
        })
        .await;
        assert!(
            status.success(),
            "the {} failed with {status}; stderr:\n{}",
            self.what,
            self.stderr()
        );
        assert!(rest.is_empty(), "the {} printed more: {rest:?}", self.what);
    }
}

/// A message in the peers' line format.
pub fn to_line(msg: &Message) -> Value {
    match msg {
        Message::Text(t) => json!({ "text": t.as_str() }),
        Message::Binary(b) => json!({ "binary_b64": BASE64.encode(b) }),
        other => unreachable!("only data messages are sent: {other:?}"),
    }
}

/// Parses a line of the peer's output back into a message.
pub fn from_line(line: &str) -> Message {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the peer printed invalid JSON ({e}): {line:.200}"));
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        return Message::text(text.to_owned());
    }
    if let Some(b64) = value.get("binary_b64").and_then(Value::as_str) {
        return Message::binary(BASE64.decode(b64).expect("valid base64 from the peer"));
    }
    panic!("unexpected line from the peer: {line:.200}");
}
