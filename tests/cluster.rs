//! Several `duplex serve` nodes as a user deploys them: the real binary,
//! a real `redis-server`, and nginx in front with the sample configuration
//! of `docs/deploy/nginx.conf`. Subscribers (`duplex subscribe`) connect
//! through nginx; every node is SIGKILLed in turn while publishing goes
//! on, and each subscriber must print every publication once, in order;
//! `duplex send` and `duplex receive` through nginx land on different
//! nodes, and the node holding the transfer is SIGKILLed mid-way.

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

/// The node (by port) holding transfer `nameplate`, from its claim in
/// Redis.
async fn holder(redis: &RedisServer, nameplate: &str) -> u16 {
    let mut conn = redis.connection().await.unwrap();
    let url: String = ::redis::cmd("HGET")
        .arg(format!("duplex:transfer:{nameplate}"))
        .arg("url")
        .query_async(&mut conn)
        .await
        .unwrap();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A running `duplex send --json`: its code, then its exit.
async fn send(server: &str, paths: &[&Path]) -> (Child, String) {
    let mut child = duplex()
        .arg("send")
        .args(paths)
        .args(["--server", server, "--json", "--receivers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("duplex send");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("no code in time")
        .unwrap()
        .expect("send printed nothing");
    let code: serde_json::Value = serde_json::from_str(&first).unwrap();
    // The rest is progress: read it so that the sender never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, code["code"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_and_a_folder_go_through_nginx_to_any_node_while_the_holding_node_is_killed() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let data = dir.path().join(format!("node{i}"));
        nodes.push(Node::start(free_port(), data, redis.url()).await);
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let nginx = Nginx::start(&ports).await;
    let server = format!("http://{}", nginx.addr);

    let file = dir.path().join("big.bin");
    common::generate(&file, 96 << 20, 21);
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(folder.join("deep/er")).unwrap();
    for (i, name) in ["a.txt", "deep/b.bin", "deep/er/c.bin"].iter().enumerate() {
        common::generate(&folder.join(name), (i as u64 + 1) * 300_000 + 7, i as u64);
    }
    let (mut sender, code) = send(&server, &[&file, &folder]).await;
    // Two receivers through nginx: round robin puts them on other nodes
    // than the sender's, at least one of them.
    let outs = [dir.path().join("out1"), dir.path().join("out2")];
    let mut receivers = Vec::new();
    for out in &outs {
        let child = duplex()
            .args(["receive", &code, "--server", &server, "--json", "--out"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("duplex receive");
        receivers.push(child);
    }
    // Mid-transfer, the node holding it dies.
    let part = outs[0].join("big.bin.part");
    tokio::time::timeout(LIMIT, async {
        while !std::fs::metadata(&part).is_ok_and(|m| m.len() >= 8 << 20) {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await
    .expect("no .part file grew");
    let nameplate = code.split('-').next().unwrap();
    let port = holder(&redis, nameplate).await;
    let victim = nodes.iter_mut().find(|n| n.port == port).unwrap();
    victim.kill().await;

    // Everyone comes back through nginx, and the transfer resumes on
    // another node under the same code.
    for (receiver, out) in receivers.into_iter().zip(&outs) {
        let done = tokio::time::timeout(LIMIT * 3, receiver.wait_with_output())
            .await
            .expect("receive did not finish in time")
            .unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(common::same_bytes(&file, &out.join("big.bin")));
        for name in ["a.txt", "deep/b.bin", "deep/er/c.bin"] {
            assert!(
                common::same_bytes(&folder.join(name), &out.join("folder").join(name)),
                "{name}"
            );
        }
    }
    let status = tokio::time::timeout(LIMIT, sender.wait())
        .await
        .expect("send did not finish in time")
        .unwrap();
    assert!(status.success(), "send failed: {status}");
}
