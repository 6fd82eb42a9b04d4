//! Several `duplex serve` nodes as a user deploys them: the real binary,
//! a real `redis-server`, and nginx in front with the sample configuration
//! of `docs/deploy/nginx.conf`. Subscribers (`duplex subscribe`) connect
//! through nginx; every node is SIGKILLed in turn while publishing goes
//! on, and each subscriber must print every publication once, in order.

mod common;
#[path = "../crates/server/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{LIMIT, duplex, spawn_serve};
use support::redis::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::time::Instant;

/// A free loopback port (free when asked; the node binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `duplex serve --redis` node on a fixed port, started again after a
/// kill on the same port and data.
struct Node {
    port: u16,
    data: PathBuf,
    redis: String,
    child: Option<Child>,
}

impl Node {
    async fn start(port: u16, data: PathBuf, redis: String) -> Self {
        let mut node = Self {
            port,
            data,
            redis,
            child: None,
        };
        node.launch().await;
        node
    }

    async fn launch(&mut self) {
        let bind = format!("127.0.0.1:{}", self.port);
        let data = self.data.to_str().expect("a UTF-8 path").to_owned();
        let (child, _) = spawn_serve(&[
            "--bind",
            &bind,
            "--data",
            &data,
            "--redis",
            &self.redis,
            "--max-connections-per-address",
            "0",
        ])
        .await;
        self.child = Some(child);
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().expect("SIGKILL");
        tokio::time::timeout(LIMIT, child.wait())
            .await
            .expect("the node died in time")
            .expect("wait");
    }
}

/// nginx running `docs/deploy/nginx.conf` with the nodes' ports.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(nodes: &[u16]) -> Self {
        let binary = Path::new("/usr/sbin/nginx");
        assert!(
            binary.exists(),
            "nginx is not installed: `cargo xtask test` installs it (Debian's nginx)"
        );
        let sample = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/deploy/nginx.conf"),
        )
        .unwrap();
        let port = free_port();
        let mut site = sample.replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
        for (example, node) in [8081, 8082, 8083].iter().zip(nodes) {
            let example = format!("127.0.0.1:{example}");
            assert!(site.contains(&example), "the sample lists {example}");
            site = site.replace(&example, &format!("127.0.0.1:{node}"));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("duplex.conf"), site).unwrap();
        let temp = [
            "client_body_temp_path",
            "proxy_temp_path",
            "fastcgi_temp_path",
            "uwsgi_temp_path",
            "scgi_temp_path",
        ]
        .map(|d| format!("  {d} {};\n", path(d)))
        .concat();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {};\nerror_log {} warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n{temp}  include {};\n}}\n",
            path("nginx.pid"),
            path("error.log"),
            path("duplex.conf"),
        );
        std::fs::write(path("nginx.conf"), main).unwrap();
        let child = std::process::Command::new(binary)
            .args(["-p", &path(""), "-c", &path("nginx.conf")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + LIMIT;
        while tokio::net::TcpStream::connect(addr).await.is_err()
            || support::http(addr, "GET", "/healthz", &[], None).await.0 != 200
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not come up: {}",
                path("error.log")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `n` through nginx, retrying (bounded) with the same
/// idempotency key until a node takes it: stored once whatever happens.
async fn publish(nginx: SocketAddr, n: u32) {
    let body = serde_json::json!({"channel": "feed", "data": n.to_string()}).to_string();
    let key = format!("publish-{n}");
    let deadline = Instant::now() + LIMIT;
    loop {
        let headers = [("Idempotency-Key", key.as_str())];
        let (status, _) = support::http(nginx, "POST", "/api/publish", &headers, Some(&body)).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "publish {n} never went through");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_behind_nginx_get_everything_once_while_each_node_is_killed() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            Node::start(
                free_port(),
                dir.path().join(format!("node{i}")),
                redis.url(),
            )
            .await,
        );
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let nginx = Nginx::start(&ports).await;
    const TOTAL: u32 = 50;
    let url = format!("ws://{}/ws", nginx.addr);
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut child = duplex()
            .args(["subscribe", &url, "feed", "--since", ":0", "--count"])
            .arg(TOTAL.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("duplex subscribe");
        let out = BufReader::new(child.stdout.take().unwrap());
        readers.push((child, out));
    }
    let mut next = 1;
    for node in &mut nodes {
        for _ in 0..10 {
            publish(nginx.addr, next).await;
            next += 1;
        }
        node.kill().await;
        for _ in 0..3 {
            publish(nginx.addr, next).await;
            next += 1;
        }
        node.launch().await;
    }
    while next <= TOTAL {
        publish(nginx.addr, next).await;
        next += 1;
    }
    let expected: Vec<String> = (1..=TOTAL).map(|n| n.to_string()).collect();
    for (k, (mut child, mut out)) in readers.into_iter().enumerate() {
        let mut lines = Vec::new();
        let read = async {
            let mut line = String::new();
            while out.read_line(&mut line).await.expect("read") > 0 {
                lines.push(line.trim().to_owned());
                line.clear();
            }
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .unwrap_or_else(|_| panic!("subscriber {k} stopped short: {lines:?}"));
        assert_eq!(
            lines, expected,
            "subscriber {k}: every publication once, in order"
        );
        let status = tokio::time::timeout(LIMIT, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "subscriber {k} exited with {status}");
    }
}
