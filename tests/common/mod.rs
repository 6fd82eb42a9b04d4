//! Helpers for the end-to-end tests of `duplex connect` and `duplex listen`:
//! running the real binary with bounded waits, `duplex serve` as a peer,
//! small servers and proxies built in the test (HTTP CONNECT and SOCKS5,
//! counting their tunnels), and a throwaway PKI.
//!
//! Every wait is bounded by [`LIMIT`]; nothing sleeps to synchronise.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex::{Message, ServerBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The longest any single step may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Proxy variables removed from every child's environment, so the
/// machine's settings cannot leak into a test.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// `duplex` with a clean environment: no proxy variables, no history file.
pub fn duplex() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("duplex"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("DUPLEX_HISTORY", "").env("NO_COLOR", "1");
    cmd.kill_on_drop(true);
    cmd
}

/// What a finished `duplex` run produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub raw_stdout: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code (panics if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:#?}"))
    }

    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "unexpected exit code; {self:#?}");
        self
    }

    /// Every stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect()
    }
}

/// Runs `cmd` with `stdin` as its input, to completion (bounded).
pub async fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn duplex");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // Written from a task: the child may start answering before it has read
    // all of its input.
    tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    finish(child).await
}

/// Waits (bounded) for a spawned child with piped stdout and stderr.
pub async fn finish(child: Child) -> Output {
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("duplex did not finish in time")
        .expect("wait for duplex");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        raw_stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads lines from `reader` until one contains `needle` (bounded);
/// returns that line.
pub async fn wait_for_line<R>(reader: &mut BufReader<R>, needle: &str) -> String
where
    R: tokio::io::AsyncRead + Unpin,
{
    let seen = async {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.expect("read a line");
            if n == 0 {
                panic!("the stream ended before {needle:?}; it said: {all}");
            }
            if line.contains(needle) {
                return line;
            }
            all.push_str(&line);
        }
    };
    tokio::time::timeout(LIMIT, seen)
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
}

/// The `host:port` in a line like `duplex: listening on ws://127.0.0.1:4242/`.
pub fn address_in(line: &str) -> SocketAddr {
    let start = line.find("://").expect("a URL in the line") + 3;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// `duplex serve --bind 127.0.0.1:0`, with its echo endpoint.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its data directory, removed at the end.
    _data: tempfile::TempDir,
}

impl Serve {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With more flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("a data directory");
        let mut args = vec!["--bind", "127.0.0.1:0", "--data"];
        args.push(data.path().to_str().expect("a UTF-8 temporary path"));
        args.extend(flags);
        let (child, addr) = spawn_serve(&args).await;
        Self {
            child,
            addr,
            _data: data,
        }
    }

    /// Lowers the server's limit on open files to `n` (`prlimit`).
    pub fn limit_open_files(&self, n: usize) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
            .status()
            .expect("prlimit (util-linux)");
        assert!(status.success(), "prlimit failed");
    }

    /// `GET PATH`'s body (HTTP/1.1, the connection closed after it).
    pub async fn get(&self, path: &str) -> String {
        let mut tcp = TcpStream::connect(self.addr).await.expect("connect");
        tcp.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.addr
            )
            .as_bytes(),
        )
        .await
        .expect("request");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
            .await
            .expect("a response in time")
            .expect("a response");
        response
    }
}

/// `duplex serve ARGS`, once it listens: the child (killed on drop) and
/// its address. Its stdout is drained so it never blocks on a full pipe.
pub async fn spawn_serve(args: &[&str]) -> (Child, SocketAddr) {
    let mut cmd = duplex();
    cmd.arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn duplex serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let line = wait_for_line(&mut out, "listening on ").await;
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink).await;
    });
    (child, address_in(&line))
}

/// A line of `/proc/PID/status` (e.g. `VmHWM`), in bytes.
pub fn proc_status_bytes(pid: u32, key: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A process's peak memory from a point on: the kernel's own high-water
/// mark (`VmHWM`), reset when the watch starts.
pub struct PeakWatch {
    pid: u32,
    /// The RSS when the watch started, in bytes.
    pub before: usize,
}

impl PeakWatch {
    /// Starts watching `pid` (writing 5 to `clear_refs` resets `VmHWM` to
    /// the current RSS).
    pub fn start(pid: u32) -> Self {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
        Self {
            pid,
            before: proc_status_bytes(pid, "VmRSS"),
        }
    }

    /// The peak since the start, in bytes.
    pub fn peak(&self) -> usize {
        proc_status_bytes(self.pid, "VmHWM")
    }

    /// How far the peak rose above the start, in bytes.
    pub fn growth(&self) -> usize {
        self.peak().saturating_sub(self.before)
    }

    /// Fails unless the peak rose by at most `bytes`.
    #[track_caller]
    pub fn assert_growth_at_most(&self, bytes: usize) {
        let growth = self.growth();
        assert!(
            growth <= bytes,
            "RSS grew by {} MiB, more than {} MiB",
            growth >> 20,
            bytes >> 20
        );
    }

    /// `RSS 11 -> peak 54 MiB (+43 MiB)`, for a test's report.
    pub fn report(&self) -> String {
        format!(
            "RSS {} -> peak {} MiB (+{} MiB)",
            self.before >> 20,
            self.peak() >> 20,
            self.growth() >> 20
        )
    }
}

impl Serve {
    /// `ws://ADDR/echo`
    pub fn echo_url(&self) -> String {
        format!("ws://{}/echo", self.addr)
    }
}

/// An in-test WebSocket server: runs `handler` for every connection, each
/// numbered from 1.
pub async fn server<F, Fut>(builder: ServerBuilder, handler: F) -> SocketAddr
where
    F: Fn(u64, duplex::WebSocket<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            let builder = builder.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Ok(ws) = builder.accept(tcp).await {
                    handler(n, ws).await;
                }
            });
        }
    });
    addr
}

/// Echoes data messages until the peer closes.
pub async fn echo(mut ws: duplex::WebSocket<TcpStream>) {
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// Receives until the peer closes, ignoring everything.
pub async fn drain(mut ws: duplex::WebSocket<TcpStream>) {
    while let Some(Ok(_)) = ws.recv().await {}
}

/// A text message's text (panics on anything else).
pub fn text(msg: &Message) -> String {
    msg.as_text().expect("a text message").to_owned()
}

// ---------------------------------------------------------------------------
// Proxies

/// Which tunnels a proxy opened: the targets it was asked for.
#[derive(Clone, Default)]
pub struct Tunnels(Arc<Mutex<Vec<String>>>);

impl Tunnels {
    pub fn targets(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn record(&self, target: String) {
        self.0.lock().unwrap().push(target);
    }
}

/// An HTTP proxy that answers `CONNECT host:port` with 200 (or with
/// `refuse`, when given) and relays bytes.
pub async fn http_proxy(refuse: Option<u16>) -> (SocketAddr, Tunnels) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let tunnels = Tunnels::default();
    let log = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut request = String::new();
                if client.read_line(&mut request).await.is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    match client.read_line(&mut header).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let mut parts = request.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                    let _ = client
                        .get_mut()
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                let target = target.to_owned();
                log.record(target.clone());
                if let Some(status) = refuse {
                    let answer = format!("HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\n\r\n");
                    let _ = client.get_mut().write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    let _ = client
                        .get_mut()
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                        .await;
                    return;
                };
                let _ = client
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let mut client = client.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}

/// A SOCKS5 proxy (RFC 1928, CONNECT only) that requires `credentials`
/// (RFC 1929) when given. Records each target as `host:port` (a name when
/// the client sent one, else the address).
pub async fn socks5_proxy(
    credentials: Option<(&'static str, &'static str)>,
) -> (SocketAddr, Tunnels) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let tunnels = Tunnels::default();
    let log = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let _ = socks5_session(client, credentials, log).await;
            });
        }
    });
    (addr, tunnels)
}

async fn socks5_session(
    mut client: TcpStream,
    credentials: Option<(&str, &str)>,
    log: Tunnels,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; head[1] as usize];
    client.read_exact(&mut methods).await?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if head[0] != 5 || !methods.contains(&wanted) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, wanted]).await?;
    if let Some((user, pass)) = credentials {
        let mut v = [0u8; 2];
        client.read_exact(&mut v).await?;
        let mut u = vec![0u8; v[1] as usize];
        client.read_exact(&mut u).await?;
        let mut plen = [0u8; 1];
        client.read_exact(&mut plen).await?;
        let mut p = vec![0u8; plen[0] as usize];
        client.read_exact(&mut p).await?;
        let ok = u == user.as_bytes() && p == pass.as_bytes();
        client.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Ok(());
        }
    }
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    let host = match req[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            format!("[{}]", std::net::Ipv6Addr::from(ip))
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    log.record(target.clone());
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(_) => {
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// TLS

/// A CA made for one test, and files for its certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A server certificate and key, as files.
pub struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Duplex CLI test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let dir = scratch_dir(name);
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        Self { ca, dir }
    }

    /// The CA certificate file (for `--cacert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `names`, signed by the CA.
    pub fn leaf(&self, names: &[&str]) -> LeafFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign the leaf");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let cert_path = self.dir.join(format!("{}.pem", names[0]));
        let key_path = self.dir.join(format!("{}.key", names[0]));
        std::fs::write(&cert_path, &cert_pem).expect("write cert");
        std::fs::write(&key_path, &key_pem).expect("write key");
        LeafFiles {
            cert: cert_path,
            key: key_path,
            server_config: duplex::tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())
                .expect("server TLS config"),
        }
    }
}

/// A fresh directory under the target directory for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{name}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A wss:// echo server with `config`.
pub async fn tls_echo_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut ws) = duplex::accept(tls).await {
                    while let Some(Ok(msg)) = ws.recv().await {
                        if msg.is_data() && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Writes `len` bytes of a deterministic pseudo-random pattern.
pub fn generate(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut left = len;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for word in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
}

/// Whether two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let hash = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p).unwrap()).unwrap();
        h.finalize()
    };
    hash(a) == hash(b)
}
