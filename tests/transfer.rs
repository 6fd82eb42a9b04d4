//! End-to-end tests of `duplex send` / `duplex receive` through an
//! in-process `duplex serve` relay on loopback: folder trees byte for byte,
//! a large generated file, cut connections (sender's, receiver's, and a
//! killed receiver run again), a corrupt chunk re-requested, two receivers,
//! a wrong code. Faults come from a small proxy built here that cuts,
//! stalls or corrupts after an exact number of bytes: nothing sleeps to
//! synchronise, and every wait is bounded.

mod common;
use common::{generate, same_bytes};
#[path = "../crates/server/tests/support/redis.rs"]
#[allow(dead_code)] // its proxy is for other tests
mod redis_server;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The longest one transfer may take (debug builds are slow).
const LIMIT: Duration = Duration::from_secs(180);

struct Relay {
    server: duplex_server::Server,
    settings: duplex_server::Settings,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A relay whose credit window is `window` bytes.
    async fn with_window(window: usize) -> Self {
        Self::with(|s| s.transfer_window = window).await
    }

    /// A node sharing transfers with the others on the Redis at `url`.
    async fn on_redis(url: String) -> Self {
        Self::with(|s| s.redis = vec![url]).await
    }

    async fn with(adjust: impl FnOnce(&mut duplex_server::Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = duplex_server::Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().to_owned(),
            ..Default::default()
        };
        adjust(&mut settings);
        let server = duplex_server::Server::start(settings.clone())
            .await
            .unwrap();
        Self {
            server,
            settings,
            _dir: dir,
        }
    }

    /// Stops the server (closing every connection) and starts a new one on
    /// the same address: a relay restart, which forgets every transfer.
    async fn restart(self) -> Self {
        let addr = self.server.local_addr();
        self.server.shutdown().await;
        let settings = duplex_server::Settings {
            bind: addr,
            ..self.settings
        };
        // The old listener closes as its task is dropped; retry (bounded)
        // until the address is free again.
        for _ in 0..100 {
            match duplex_server::Server::start(settings.clone()).await {
                Ok(server) => {
                    return Self {
                        server,
                        settings,
                        _dir: self._dir,
                    };
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await, // poll interval
            }
        }
        panic!("could not listen on {addr} again");
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }
}

/// What the proxy does to its first connection once `at` bytes have
/// passed in the given direction.
#[derive(Clone, Copy)]
enum Fault {
    /// Client → server bytes: then cut both ways.
    CutUp(u64),
    /// Server → client bytes: then cut both ways.
    CutDown(u64),
    /// Server → client: stop forwarding (the connection hangs).
    StallDown(u64),
    /// Server → client: flip one byte at this offset.
    CorruptDown(u64),
    /// Server → client: stop reading from the server (so that its socket
    /// fills and it must hold what it has) until `resume` is notified.
    PauseDown(u64),
    /// Server → client: only notify `fired` once this many bytes passed
    /// (the test then acts: kills a process, restarts the relay).
    MarkDown(u64),
}

/// A TCP proxy to `target` that applies `fault` to its first connection
/// only; `fired` is notified when the fault happens.
async fn proxy(target: SocketAddr, fault: Fault) -> (String, Arc<Notify>) {
    let (url, fired, _) = proxy_with_resume(target, fault).await;
    (url, fired)
}

/// [`proxy`], and a notify that ends a [`Fault::PauseDown`].
async fn proxy_with_resume(target: SocketAddr, fault: Fault) -> (String, Arc<Notify>, Arc<Notify>) {
    proxy_then(target, target, fault).await
}

/// [`proxy_with_resume`] whose first connection goes to `first` and the
/// others to `then`: a load balancer sending a client that reconnects to
/// another node.
async fn proxy_then(
    first: SocketAddr,
    then: SocketAddr,
    fault: Fault,
) -> (String, Arc<Notify>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fired = Arc::new(Notify::new());
    let notify = fired.clone();
    let resume = Arc::new(Notify::new());
    let resumed = resume.clone();
    let first_target = first;
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            // While the relay restarts, refuse like it would.
            let target = if first { first_target } else { then };
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let fault = first.then_some(fault);
            first = false;
            tokio::spawn(pipe(client, server, fault, notify.clone(), resumed.clone()));
        }
    });
    (format!("http://{addr}"), fired, resume)
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    fault: Option<Fault>,
    fired: Arc<Notify>,
    resume: Arc<Notify>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut = Arc::new(Notify::new());
    let up_limit = match fault {
        Some(Fault::CutUp(n)) => Some(n),
        _ => None,
    };
    let (cut1, fired1) = (cut.clone(), fired.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut passed = 0u64;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut n = n as u64;
            if let Some(limit) = up_limit
                && passed + n >= limit
            {
                n = limit - passed;
                let _ = sw.write_all(&buf[..n as usize]).await;
                fired1.notify_one();
                cut1.notify_waiters();
                return;
            }
            if sw.write_all(&buf[..n as usize]).await.is_err() {
                return;
            }
            passed += n;
        }
    };
    let (cut2, fired2) = (cut.clone(), fired);
    let down = async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut passed = 0u64;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let end = passed + n as u64;
            match fault {
                Some(Fault::CutDown(at)) if end >= at => {
                    let keep = (at - passed) as usize;
                    let _ = cw.write_all(&buf[..keep]).await;
                    fired2.notify_one();
                    cut2.notify_waiters();
                    return;
                }
                Some(Fault::StallDown(at)) if end >= at => {
                    let keep = (at - passed) as usize;
                    let _ = cw.write_all(&buf[..keep]).await;
                    fired2.notify_one();
                    // Hang the client, but notice when the server goes.
                    while matches!(sr.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                Some(Fault::CorruptDown(at)) if passed <= at && at < end => {
                    buf[(at - passed) as usize] ^= 0x55;
                    fired2.notify_one();
                }
                Some(Fault::PauseDown(at)) if passed <= at && at < end => {
                    fired2.notify_one();
                    resume.notified().await;
                }
                Some(Fault::MarkDown(at)) if passed <= at && at < end => fired2.notify_one(),
                _ => {}
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            passed = end;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.notified() => {}
    }
}

/// Asserts that `b` holds exactly the tree `a` holds: names, bytes, modes.
fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la, lb, "different file lists");
    for rel in la {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::metadata(&pa).unwrap(),
            std::fs::metadata(&pb).unwrap(),
        );
        assert_eq!(ma.is_dir(), mb.is_dir(), "{}", rel.display());
        if ma.is_file() {
            assert_eq!(ma.len(), mb.len(), "{}", rel.display());
            assert_eq!(
                ma.permissions().mode() & 0o777,
                mb.permissions().mode() & 0o777,
                "{}",
                rel.display()
            );
            assert!(same_bytes(&pa, &pb), "{} differs", rel.display());
        }
    }
}

/// A running `duplex send --json`, its code already read.
struct Sender {
    child: Child,
    code: String,
    lines: tokio::task::JoinHandle<Vec<Value>>,
}

async fn send(server: &str, paths: &[&Path], extra: &[&str]) -> Sender {
    let mut cmd = common::duplex();
    cmd.arg("send")
        .args(paths)
        .args(["--server", server, "--json"])
        .args(extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("no code in time")
        .unwrap()
        .expect("send printed nothing");
    let code: Value = serde_json::from_str(&first).unwrap();
    let code = code["code"].as_str().unwrap().to_owned();
    let lines = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            out.push(serde_json::from_str(&l).unwrap());
        }
        out
    });
    Sender { child, code, lines }
}

impl Sender {
    /// Waits for `duplex send` to stop by itself, with a failure.
    async fn fails(mut self) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("send did not stop by itself")
            .unwrap();
        assert!(!status.success(), "send succeeded");
    }

    async fn finish(mut self) -> Vec<Value> {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("send did not finish in time")
            .unwrap();
        assert!(status.success(), "send failed: {status}");
        self.lines.await.unwrap()
    }
}

fn receive_cmd(server: &str, code: &str, out: &Path) -> Command {
    let mut cmd = common::duplex();
    cmd.args(["receive", code, "--server", server, "--json", "--out"])
        .arg(out);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `duplex receive` to completion: (success, JSON lines, stderr).
async fn receive(server: &str, code: &str, out: &Path) -> (bool, Vec<Value>, String) {
    let child = receive_cmd(server, code, out).spawn().unwrap();
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("receive did not finish in time")
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `duplex receive --overwrite`, which must succeed; its JSON lines.
async fn receive_overwriting(server: &str, code: &str, out: &Path) -> Vec<Value> {
    let mut cmd = receive_cmd(server, code, out);
    cmd.arg("--overwrite");
    let done = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap()
        .unwrap();
    succeeded(done)
}

/// The JSON lines of a `duplex receive --json` that must have succeeded.
fn succeeded(done: std::process::Output) -> Vec<Value> {
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    String::from_utf8(done.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

fn tree(root: &Path) -> PathBuf {
    let src = root.join("tree");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a/hello.txt"), "hello\n").unwrap();
    std::fs::write(src.join("a/b/zero"), "").unwrap();
    generate(&src.join("a/b/c/data.bin"), 3 << 20 | 12345, 7);
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    src
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_tree_arrives_byte_for_byte() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let sender = send(&relay.url(), &[&src], &[]).await;
    assert!(sender.code.split('-').count() == 3, "{}", sender.code);
    let out = dir.path().join("out");
    let (ok, lines, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    assert_eq!(events(&lines, "done").len(), 1);
    let sent = sender.finish().await;
    assert_eq!(events(&sent, "done").len(), 1);
    assert_same_tree(&src, &out.join("tree"));
    // Nothing half-written is left behind.
    assert!(!out.join("tree/a/b/c/data.bin.part").exists());

    // Again into the same folder: refused without --overwrite, nothing touched.
    std::fs::write(out.join("tree/a/hello.txt"), "changed\n").unwrap();
    let sender = send(&relay.url(), &[&src], &[]).await;
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(!ok);
    assert!(
        stderr.contains("already exists; pass --overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("tree/a/hello.txt")).unwrap(),
        "changed\n"
    );
    receive_overwriting(&relay.url(), &sender.code, &out).await;
    sender.finish().await;
    assert_same_tree(&src, &out.join("tree"));

    // The same size, other contents: only the file's digest tells, once
    // the sender's seal arrives. Refused without --overwrite, kept as it
    // is; replaced with it.
    let mut other = std::fs::read(src.join("a/hello.txt")).unwrap();
    other[0] ^= 1;
    std::fs::write(out.join("tree/a/hello.txt"), &other).unwrap();
    let sender = send(&relay.url(), &[&src], &[]).await;
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(!ok);
    assert!(
        stderr.contains("already exists with other contents; pass --overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("tree/a/hello.txt")).unwrap(), other);
    receive_overwriting(&relay.url(), &sender.code, &out).await;
    sender.finish().await;
    assert_same_tree(&src, &out.join("tree"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_generated_file() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    generate(&file, 64 << 20, 42);
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    sender.finish().await;
    assert!(same_bytes(&file, &out.join("big.bin")));
}

/// Multi-GiB: run by the release stage (`cargo nextest run --release
/// --run-ignored only`), too slow for debug builds.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn a_multi_gib_sparse_file() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.bin");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&file).unwrap();
        f.set_len(3 << 30).unwrap();
        for i in 0..3u64 {
            f.seek(SeekFrom::Start(i << 30)).unwrap();
            f.write_all(format!("gigabyte {i}").as_bytes()).unwrap();
        }
    }
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    sender.finish().await;
    assert!(same_bytes(&file, &out.join("huge.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_senders_connection_is_cut_and_the_transfer_resumes() {
    let relay = Relay::start().await;
    let (via, fired) = proxy(relay.server.local_addr(), Fault::CutUp(12 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 32 << 20, 1);
    let sender = send(&via, &[&file], &[]).await;
    let out = dir.path().join("out");
    let (ok, lines, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let sent = sender.finish().await;
    assert!(
        !events(&sent, "reconnect").is_empty(),
        "the sender did not reconnect"
    );
    let resumed = events(&lines, "resume");
    assert!(
        resumed.iter().any(|r| r["offset"].as_u64().unwrap() > 0),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receivers_connection_is_cut_and_the_transfer_resumes() {
    let relay = Relay::start().await;
    let (via, _fired) = proxy(relay.server.local_addr(), Fault::CutDown(12 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 32 << 20, 2);
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let (ok, lines, stderr) = receive(&via, &sender.code, &out).await;
    assert!(ok, "{stderr}");
    sender.finish().await;
    assert!(!events(&lines, "reconnect").is_empty(), "{lines:?}");
    let resumed = events(&lines, "resume");
    assert!(
        resumed.iter().any(|r| r["offset"].as_u64().unwrap() > 0),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_receiver_run_again_resumes_from_its_part_file() {
    let relay = Relay::start().await;
    let (via, fired) = proxy(relay.server.local_addr(), Fault::StallDown(10 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 24 << 20, 3);
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let mut first = receive_cmd(&via, &sender.code, &out).spawn().unwrap();
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    // The receiver has verified what arrived before the stall: wait (bounded)
    // until its .part file stops growing at a chunk boundary, then kill it.
    let part = out.join("f.bin.part");
    tokio::time::timeout(LIMIT, async {
        loop {
            if std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 << 20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval, not a synchronisation
        }
    })
    .await
    .expect("no .part file grew");
    first.kill().await.unwrap();
    assert!(!out.join("f.bin").exists());
    let (ok, lines, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    sender.finish().await;
    let resumed = events(&lines, "resume");
    assert!(
        resumed
            .iter()
            .any(|r| r["offset"].as_u64().unwrap() >= 4 << 20),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_chunk_is_asked_for_again() {
    let relay = Relay::start().await;
    // 5.5 MiB into the stream lies inside a 1 MiB chunk's ciphertext.
    let (via, fired) = proxy(
        relay.server.local_addr(),
        Fault::CorruptDown((5 << 20) + (1 << 19)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 12 << 20, 4);
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let (ok, lines, stderr) = receive(&via, &sender.code, &out).await;
    assert!(ok, "{stderr}");
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let sent = sender.finish().await;
    assert_eq!(events(&lines, "retry").len(), 1, "{lines:?}");
    assert_eq!(events(&sent, "retry").len(), 1);
    assert!(same_bytes(&file, &out.join("f.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_receivers_each_get_everything() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let sender = send(&relay.url(), &[&src], &["--receivers", "2"]).await;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let url = relay.url();
    let ((ok_a, _, err_a), (ok_b, _, err_b)) = tokio::join!(
        receive(&url, &sender.code, &a),
        receive(&url, &sender.code, &b)
    );
    assert!(ok_a && ok_b, "{err_a}\n{err_b}");
    let sent = sender.finish().await;
    assert_eq!(events(&sent, "done").len(), 2);
    assert_same_tree(&src, &a.join("tree"));
    assert_same_tree(&src, &b.join("tree"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_fails_cleanly_and_writes_nothing() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let sender = send(&relay.url(), &[&src], &[]).await;
    let nameplate = sender.code.split('-').next().unwrap();
    let out = dir.path().join("out");
    let (ok, _, stderr) = receive(&relay.url(), &format!("{nameplate}-wrong-words"), &out).await;
    assert!(!ok);
    assert!(stderr.contains("wrong code"), "{stderr}");
    assert!(!out.exists(), "something was written");
    // An unknown nameplate is refused by the relay.
    let (ok, _, stderr) = receive(&relay.url(), "999999-a-b", &out).await;
    assert!(!ok);
    assert!(stderr.contains("no transfer with this code"), "{stderr}");
    // The sender is still there for the right code.
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    let sent = sender.finish().await;
    assert_eq!(events(&sent, "wrong_code").len(), 1);
    assert_same_tree(&src, &out.join("tree"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_restarts_mid_transfer_and_the_transfer_resumes() {
    let relay = Relay::start().await;
    let (via, fired) = proxy(relay.server.local_addr(), Fault::StallDown(10 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 24 << 20, 5);
    let sender = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let receiver = receive_cmd(&via, &sender.code, &out).spawn().unwrap();
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let part = out.join("f.bin.part");
    tokio::time::timeout(LIMIT, async {
        while !std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 << 20) {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await
    .expect("no .part file grew");
    let _relay = relay.restart().await;
    let done = tokio::time::timeout(LIMIT, receiver.wait_with_output())
        .await
        .expect("receive did not finish in time")
        .unwrap();
    let lines = succeeded(done);
    let sent = sender.finish().await;
    assert!(!events(&sent, "reconnect").is_empty());
    let resumed = events(&lines, "resume");
    assert!(
        resumed
            .iter()
            .any(|r| r["offset"].as_u64().unwrap() >= 4 << 20),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sender_run_again_lets_the_receiver_resume() {
    let relay = Relay::start().await;
    let (via, fired) = proxy(relay.server.local_addr(), Fault::StallDown(10 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 24 << 20, 6);
    let mut first = send(&relay.url(), &[&file], &[]).await;
    let out = dir.path().join("out");
    let mut receiver = receive_cmd(&via, &first.code, &out).spawn().unwrap();
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let part = out.join("f.bin.part");
    tokio::time::timeout(LIMIT, async {
        while !std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 << 20) {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await
    .expect("no .part file grew");
    // Both ends die; the sender is run again (a new code), and so is the
    // receiver, with the new code: it resumes from its .part file.
    first.child.kill().await.unwrap();
    receiver.kill().await.unwrap();
    let second = send(&relay.url(), &[&file], &[]).await;
    assert_ne!(second.code, first.code);
    let (ok, lines, stderr) = receive(&relay.url(), &second.code, &out).await;
    assert!(ok, "{stderr}");
    second.finish().await;
    let resumed = events(&lines, "resume");
    assert!(
        resumed
            .iter()
            .any(|r| r["offset"].as_u64().unwrap() >= 4 << 20),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}

/// Round 1's credit disagreement: the relay counted every frame to a
/// receiver, the sender only its chunks, so the sender believed it had the
/// key exchange's and the manifest's bytes of extra credit. Once a slow
/// receiver let the window fill, it overdrew by them and the relay closed
/// it with 4008. Here the receiver's side pauses (deterministically) until
/// the window is full, after a large file, with a manifest of many entries.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_window_after_a_large_file_is_never_overdrawn() {
    let relay = Relay::start().await;
    let (via, paused, resume) =
        proxy_with_resume(relay.server.local_addr(), Fault::PauseDown(1 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    generate(&big, 40 << 20, 11);
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..40 {
        std::fs::write(
            folder.join(format!("small-{i:02}.txt")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    let sender = send(&relay.url(), &[&big, &folder], &[]).await;
    let nameplate: u32 = sender.code.split('-').next().unwrap().parse().unwrap();
    let out = dir.path().join("out");
    let receiver = receive_cmd(&via, &sender.code, &out).spawn().unwrap();
    tokio::time::timeout(LIMIT, paused.notified())
        .await
        .unwrap();
    // Wait until the sender has used the receiver's whole window: no
    // further chunk fits.
    let window = relay.server.transfers().limits.window as u64;
    let largest_chunk_frame = relay.server.transfers().limits.max_frame as u64;
    tokio::time::timeout(LIMIT, async {
        loop {
            let in_flight = relay.server.transfers().with(nameplate, |room| {
                room.receivers.values().map(|r| r.credit.in_flight()).max()
            });
            match in_flight {
                Some(Some(n)) if n + largest_chunk_frame > window => break,
                // The sender was cut off (round 1): the transfer is gone
                // or its receiver was dropped.
                Some(None) | None => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await, // poll interval
            }
        }
    })
    .await
    .expect("the window never filled");
    resume.notify_one();
    let done = tokio::time::timeout(LIMIT, receiver.wait_with_output())
        .await
        .expect("receive did not finish in time")
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let sent = sender.finish().await;
    assert!(
        events(&sent, "reconnect").is_empty(),
        "the sender was cut off: {sent:?}"
    );
    assert!(same_bytes(&big, &out.join("big.bin")));
    assert_same_tree(&folder, &out.join("folder"));
}

/// The manifest travels in one relay message: a list too large for the
/// relay's window is refused by the sender at once, with what to do,
/// instead of failing every receiver that joins (the soak found this).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_list_too_large_for_the_relay_is_refused_at_once() {
    let relay = Relay::with_window(64 << 10).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("many");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..1500 {
        std::fs::write(
            folder.join(format!("file-with-a-long-name-{i:04}.txt")),
            "x",
        )
        .unwrap();
    }
    let out = tokio::time::timeout(
        LIMIT,
        common::duplex()
            .arg("send")
            .arg(&folder)
            .args(["--server", &relay.url()])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no code is printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1501 files and folders") && stderr.contains("send fewer files"),
        "{stderr}"
    );
    // The relay lets go of it: nothing is left open.
    tokio::time::timeout(LIMIT, async {
        while !relay.server.transfers().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await
    .expect("the relay kept the transfer");
}

/// What a killed receiver leaves behind is resumed correctly (the soak
/// found both): a `.part` file shorter than a chunk (killed while writing
/// the first chunk, or a small file killed before its rename) is started
/// over, not appended to; a whole `.part` file that was never renamed is
/// checked and put in place (it used to be left as `.part` while the
/// receiver reported success).
#[tokio::test(flavor = "multi_thread")]
async fn part_files_left_by_a_killed_receiver_are_resumed_correctly() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let small = src.join("small.txt");
    std::fs::write(&small, "the real contents\n").unwrap();
    let big = src.join("big.bin");
    generate(&big, (1 << 20) + 5, 3);
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("src")).unwrap();
    std::fs::write(out.join("src/small.txt.part"), "left by a killed run").unwrap();
    std::fs::write(out.join("src/big.bin.part"), vec![9u8; 1000]).unwrap();
    // Whole files whose rename a killed run never made: one right (put in
    // place as it is), one wrong (fetched again). Both are exactly one
    // chunk, so no byte of them is fetched again by the resume itself.
    let whole = src.join("whole.bin");
    generate(&whole, 1 << 20, 4);
    std::fs::copy(&whole, out.join("src/whole.bin.part")).unwrap();
    let wrong = src.join("wrong.bin");
    generate(&wrong, 1 << 20, 5);
    std::fs::write(out.join("src/wrong.bin.part"), vec![1u8; 1 << 20]).unwrap();
    // Two whole chunks of another version of a three-chunk file: resumed
    // from its third chunk, the file's digest tells, and it is received
    // again from its start.
    let changed = src.join("changed.bin");
    generate(&changed, (2 << 20) + 7, 6);
    generate(&out.join("src/changed.bin.part"), 2 << 20, 8);
    let sender = send(&relay.url(), &[&src], &[]).await;
    let (ok, lines, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(ok, "{stderr}");
    let restarted: Vec<_> = events(&lines, "restart")
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(restarted, ["src/changed.bin", "src/wrong.bin"]);
    sender.finish().await;
    assert_same_tree(&src, &out.join("src"));
}

/// A file that changes after `duplex send` announced it is not sent half
/// old, half new: the sender lets its receivers go with why, instead of
/// leaving them waiting for the rest (a review found that they waited for
/// ever), and stops, since every later receiver would fail the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_after_it_was_announced_ends_its_receivers_with_why() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("growing.log");
    generate(&file, 3 << 20, 9);
    let sender = send(&relay.url(), &[&file], &[]).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(b"one more line\n").unwrap();
    }
    let out = dir.path().join("out");
    let (ok, _, stderr) = receive(&relay.url(), &sender.code, &out).await;
    assert!(!ok, "the receiver succeeded");
    assert!(
        stderr.contains("the sender let this receiver go")
            && stderr.contains("growing.log changed while being sent"),
        "{stderr}"
    );
    sender.fails().await;
    assert!(
        !out.join("growing.log").exists(),
        "nothing under the final name"
    );
}

/// Unfinished files are kept as NAME.part, so a transfer holding both
/// NAME and NAME.part is refused before anything is written (a review
/// found the second written into the first).
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_holding_a_name_and_its_part_name_is_refused() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("x");
    let b = dir.path().join("x.part");
    std::fs::write(&a, "the file").unwrap();
    std::fs::write(&b, "a file named like an unfinished one").unwrap();
    let sender = send(&relay.url(), &[&b, &a], &[]).await;
    let out = dir.path().join("out");
    let stderr = receive_fails(&relay.url(), sender, &out).await;
    assert!(
        stderr.contains("holds both \"x\" and \"x.part\"")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

/// Runs `duplex receive` from `sender`, which must fail; stops the sender
/// (still waiting for a receiver) and returns the receiver's stderr.
async fn receive_fails(server: &str, sender: Sender, out: &Path) -> String {
    let (ok, _, stderr) = receive(server, &sender.code, out).await;
    assert!(!ok, "the receiver succeeded");
    let mut child = sender.child;
    let _ = child.kill().await;
    stderr
}

/// `--overwrite` of a file of the same size but other contents, cut off
/// half way: run again, it resumes its `.part` instead of checking the old
/// file again and starting over (a review found it never finished on a
/// link that drops often).
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_overwrite_resumes_its_part_file() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.bin");
    generate(&src, (3 << 20) + 11, 21);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The old file, and two chunks of the new one an earlier run wrote.
    generate(&out.join("data.bin"), (3 << 20) + 11, 22);
    let new = std::fs::read(&src).unwrap();
    std::fs::write(out.join("data.bin.part"), &new[..2 << 20]).unwrap();
    let sender = send(&relay.url(), &[&src], &[]).await;
    let lines = receive_overwriting(&relay.url(), &sender.code, &out).await;
    assert_eq!(events(&lines, "resume").len(), 1, "{lines:?}");
    assert_eq!(events(&lines, "resume")[0]["offset"], 2 << 20);
    assert!(events(&lines, "restart").is_empty(), "{lines:?}");
    sender.finish().await;
    assert!(same_bytes(&src, &out.join("data.bin")));
    assert!(!out.join("data.bin.part").exists());
}

// ------------------------------------------------------------------ soak

/// What one soak run does to a transfer, at a random point.
#[derive(Debug, Clone, Copy)]
enum Mishap {
    /// Nothing: the file set alone.
    None,
    /// The sender's connection is cut after this many bytes up.
    CutSender(u64),
    /// The first receiver's connection is cut after this many bytes down.
    CutReceiver(u64),
    /// One byte the first receiver gets is flipped.
    CorruptReceiver(u64),
    /// The relay restarts once the first receiver got this many bytes.
    RestartRelay(u64),
    /// The first receiver is killed, then run again, at this point.
    KillReceiver(u64),
    /// The sender and every receiver are killed at this point, then run
    /// again: the sender with a new code, the receivers with it.
    KillSender(u64),
}

/// Names that are not plain ASCII, and ones with spaces.
const NAMES: &[&str] = &[
    "a",
    "b.txt",
    "café",
    "日本語.dat",
    "space name",
    "emoji 🎉",
    "ünïcödé",
    "x.bin",
    "z",
];

/// A random set of files and folders under `root`, returned as the paths to
/// give `duplex send` (top-level entries, in a random order). Sizes favour
/// the edges of chunks and windows: 0, 1, chunk − 1, chunk, chunk + 1,
/// several MiB, and folders of many small files.
fn random_file_set(rng: &mut StdRng, root: &Path, chunk: u64, window: u64) -> Vec<PathBuf> {
    // The manifest must fit one relay message: a 64 KiB window carries a
    // few hundred entries (a_file_list_too_large_for_the_relay_is_refused_at_once
    // covers the rest).
    let many = if window >= 1 << 20 { 100..300 } else { 20..60 };
    use rand::seq::IndexedRandom;
    let edges = [
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        2 * chunk,
        window - 1,
        window,
        window + 1,
    ];
    let size = |rng: &mut StdRng| -> u64 {
        match rng.random_range(0..10) {
            0..=5 => *edges.choose(rng).unwrap(),
            6..=7 => rng.random_range(0..4096),
            _ => rng.random_range(0..(24u64 << 20)),
        }
    };
    std::fs::create_dir_all(root).unwrap();
    let mut top = Vec::new();
    for i in 0..rng.random_range(1..=4) {
        let name = format!("{i}-{}", NAMES.choose(rng).unwrap());
        let path = root.join(&name);
        if rng.random_bool(0.5) {
            let n = size(rng);
            generate(&path, n, rng.random());
        } else {
            // A folder: nested, sometimes with hundreds of small files,
            // sometimes with an empty folder.
            let files = if rng.random_bool(0.3) {
                rng.random_range(many.clone())
            } else {
                rng.random_range(0..6)
            };
            for f in 0..files {
                let depth = rng.random_range(0..3);
                let mut dir = path.clone();
                for d in 0..depth {
                    dir.push(format!("d{d}-{}", NAMES.choose(rng).unwrap()));
                }
                std::fs::create_dir_all(&dir).unwrap();
                let n = if files > 50 {
                    rng.random_range(0..2048)
                } else {
                    size(rng)
                };
                generate(
                    &dir.join(format!("f{f}-{}", NAMES.choose(rng).unwrap())),
                    n,
                    rng.random(),
                );
            }
            std::fs::create_dir_all(path.join("empty")).unwrap();
        }
        top.push(path);
    }
    // Big-then-small and small-then-big both happen.
    use rand::seq::SliceRandom;
    top.shuffle(rng);
    top
}

/// Bytes of a tree: files' sizes.
fn tree_size(paths: &[PathBuf]) -> u64 {
    let mut total = 0;
    let mut stack = paths.to_vec();
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            total += meta.len();
        }
    }
    total
}

/// Every `.part` file below `root`: none may be left after a transfer.
fn part_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "part") {
                found.push(path);
            }
        }
    }
    found
}

/// Prints how to reproduce a failed run, if the test is failing.
struct ReproduceWith(u64);

impl Drop for ReproduceWith {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "soak: this run failed; reproduce it with DUPLEX_SOAK_SEED={} DUPLEX_SOAK_RUNS=1 cargo nextest run --release --test transfer --run-ignored only soak",
                self.0
            );
        }
    }
}

/// A running `duplex receive` whose output is read as it comes: one whose
/// output nobody reads stalls once the pipe is full (the soak found this
/// with a file set of 600 files, one JSON line each).
struct Receiving {
    child: Child,
    /// Its stderr, once it ends.
    stderr: tokio::task::JoinHandle<String>,
}

fn start_receive(server: &str, code: &str, out: &Path) -> Receiving {
    use tokio::io::AsyncReadExt;
    let mut child = receive_cmd(server, code, out).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let (mut sink, mut text) = (Vec::new(), String::new());
        let _ = tokio::join!(
            stdout.read_to_end(&mut sink),
            stderr.read_to_string(&mut text)
        );
        text
    });
    Receiving { child, stderr }
}

/// Waits for a `duplex receive` run, asserting it succeeded.
async fn receive_done(mut r: Receiving, what: &str) {
    let status = tokio::time::timeout(LIMIT, r.child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in time"))
        .unwrap();
    let stderr = r.stderr.await.unwrap();
    assert!(status.success(), "{what} failed: {stderr}");
}

/// One soak run: a random file set to 1–3 receivers through a relay with a
/// random window, with one random mishap; every receiver must end with
/// exactly the files sent and no `.part` file.
async fn soak_run(seed: u64) {
    use rand::SeedableRng;
    let _reproduce = ReproduceWith(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let window: usize = *[64 << 10, 1 << 20, 8 << 20]
        .get(rng.random_range(0..3))
        .unwrap();
    let max_frame = duplex_transfer::limits::max_frame(window) as u64;
    // As `duplex send` sizes its chunks.
    let chunk = duplex_transfer::limits::chunk_size(max_frame as usize) as u64;
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("DUPLEX_SOAK_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("soak: keeping {}", dir.path().display());
    }
    let paths = random_file_set(&mut rng, &dir.path().join("src"), chunk, window as u64);
    let total = tree_size(&paths);
    let receivers = rng.random_range(1..=3usize);
    let at = rng.random_range(0..total.max(1) + (64 << 10));
    let mishap = match rng.random_range(0..7) {
        0 => Mishap::None,
        1 => Mishap::CutSender(at),
        2 => Mishap::CutReceiver(at),
        3 => Mishap::CorruptReceiver(at),
        4 => Mishap::RestartRelay(at),
        5 => Mishap::KillReceiver(at),
        _ => Mishap::KillSender(at),
    };
    eprintln!(
        "soak seed {seed}: window {window}, chunk {chunk}, {} top-level paths, {total} bytes, {receivers} receiver(s), {mishap:?}",
        paths.len()
    );
    let mut relay = Relay::with_window(window).await;
    let addr = relay.server.local_addr();
    let fault = match mishap {
        Mishap::None => None,
        Mishap::CutSender(n) => Some(Fault::CutUp(n)),
        Mishap::CutReceiver(n) => Some(Fault::CutDown(n)),
        // Past the key exchange: a byte flipped in it is a wrong code to
        // both ends (indistinguishable), which ends the transfer by design.
        Mishap::CorruptReceiver(n) => Some(Fault::CorruptDown(n.max(4096))),
        Mishap::RestartRelay(n) | Mishap::KillReceiver(n) | Mishap::KillSender(n) => {
            Some(Fault::MarkDown(n))
        }
    };
    let (via, fired) = match fault {
        Some(fault) => proxy(addr, fault).await,
        None => (relay.url(), Arc::new(Notify::new())),
    };
    let direct = relay.url();
    let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let n = receivers.to_string();
    let sender_url = if matches!(mishap, Mishap::CutSender(_)) {
        &via
    } else {
        &direct
    };
    let mut sender = send(sender_url, &path_refs, &["--receivers", &n]).await;
    let outs: Vec<PathBuf> = (0..receivers)
        .map(|i| dir.path().join(format!("out{i}")))
        .collect();
    let first_url = |m: Mishap| {
        if matches!(m, Mishap::CutSender(_) | Mishap::None) {
            direct.clone()
        } else {
            via.clone()
        }
    };
    let mut running: Vec<Receiving> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let url = if i == 0 {
                first_url(mishap)
            } else {
                direct.clone()
            };
            start_receive(&url, &sender.code, out)
        })
        .collect();

    // Act when the mark passes, unless everything finished first.
    let mut happened = false;
    if matches!(
        mishap,
        Mishap::RestartRelay(_) | Mishap::KillReceiver(_) | Mishap::KillSender(_)
    ) {
        let finished = async {
            for r in running.iter_mut() {
                let _ = r.child.wait().await;
            }
        };
        let marked = tokio::select! {
            _ = fired.notified() => true,
            _ = tokio::time::timeout(LIMIT, finished) => false,
        };
        happened = marked;
        if marked {
            match mishap {
                Mishap::RestartRelay(_) => relay = relay.restart().await,
                Mishap::KillReceiver(_) => {
                    running[0].child.kill().await.unwrap();
                    running[0] = start_receive(&direct, &sender.code, &outs[0]);
                }
                Mishap::KillSender(_) => {
                    sender.child.kill().await.unwrap();
                    for r in running.iter_mut() {
                        let _ = r.child.kill().await;
                    }
                    sender = send(&direct, &path_refs, &["--receivers", &n]).await;
                    running = outs
                        .iter()
                        .map(|out| start_receive(&direct, &sender.code, out))
                        .collect();
                }
                _ => unreachable!(),
            }
        }
    }
    for (i, child) in running.into_iter().enumerate() {
        receive_done(child, &format!("receiver {i}")).await;
    }
    sender.finish().await;
    // Whether the cut or corruption happened (the proxy notified), for the
    // log: a mishap placed past the end of the transfer never does.
    if !happened {
        happened = tokio::select! {
            biased;
            _ = fired.notified() => true,
            _ = std::future::ready(()) => false,
        };
    }
    for out in &outs {
        for p in &paths {
            let name = p.file_name().unwrap();
            if p.is_dir() {
                assert_same_tree(p, &out.join(name));
            } else {
                assert!(same_bytes(p, &out.join(name)), "{} differs", p.display());
            }
        }
        assert_eq!(
            part_files(out),
            Vec::<PathBuf>::new(),
            "half-written files left"
        );
    }
    eprintln!("soak seed {seed}: ok (the mishap happened: {happened})");
    drop(relay);
}

/// The randomized transfer soak: `DUPLEX_SOAK_RUNS` runs (default 24) from
/// `DUPLEX_SOAK_SEED` (default: from the clock; each run prints its own
/// seed, and a failing run says how to reproduce it). Release build only:
/// `cargo xtask test` runs the default slice, `cargo xtask soak` a long one.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn soak_random_file_sets_receivers_and_mishaps() {
    let runs: u64 = std::env::var("DUPLEX_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let seed: u64 = std::env::var("DUPLEX_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    for i in 0..runs {
        soak_run(seed.wrapping_add(i)).await;
    }
}

// Nodes sharing transfers through Redis (`duplex serve --redis`): the
// sender on one node, receivers and a returning sender on others.

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_crosses_nodes_and_its_sender_comes_back_through_another() {
    let redis = redis_server::RedisServer::start().await;
    let a = Relay::on_redis(redis.url()).await;
    let b = Relay::on_redis(redis.url()).await;
    // The sender reaches a first; cut after 12 MiB, it comes back through b.
    let (via, fired, _) = proxy_then(
        a.server.local_addr(),
        b.server.local_addr(),
        Fault::CutUp(12 << 20),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let file = dir.path().join("big.bin");
    generate(&file, 32 << 20, 11);
    let sender = send(&via, &[&file, &src], &["--receivers", "2"]).await;
    let (on_a, on_b) = (dir.path().join("on-a"), dir.path().join("on-b"));
    let (url_a, url_b) = (a.url(), b.url());
    let ((ok_a, _, err_a), (ok_b, lines_b, err_b)) = tokio::join!(
        receive(&url_a, &sender.code, &on_a),
        receive(&url_b, &sender.code, &on_b)
    );
    assert!(ok_a && ok_b, "{err_a}\n{err_b}");
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let sent = sender.finish().await;
    assert!(!events(&sent, "reconnect").is_empty(), "{sent:?}");
    assert_eq!(events(&sent, "done").len(), 2);
    assert!(!events(&lines_b, "resume").is_empty(), "{lines_b:?}");
    for out in [&on_a, &on_b] {
        assert!(same_bytes(&file, &out.join("big.bin")));
        assert_same_tree(&src, &out.join("tree"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_holding_a_transfer_restarts_and_the_transfer_resumes_on_another() {
    let redis = redis_server::RedisServer::start().await;
    let a = Relay::on_redis(redis.url()).await;
    let b = Relay::on_redis(redis.url()).await;
    // The sender opens the transfer on a and comes back through b; the
    // receiver reaches it through b all along.
    let (sender_via, _, _) = proxy_then(
        a.server.local_addr(),
        b.server.local_addr(),
        Fault::MarkDown(u64::MAX),
    )
    .await;
    let (receiver_via, fired) = proxy(b.server.local_addr(), Fault::MarkDown(8 << 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    generate(&file, 32 << 20, 12);
    let sender = send(&sender_via, &[&file], &[]).await;
    let out = dir.path().join("out");
    let receiver = receive_cmd(&receiver_via, &sender.code, &out)
        .spawn()
        .unwrap();
    tokio::time::timeout(LIMIT, fired.notified()).await.unwrap();
    let _a = a.restart().await;
    let done = tokio::time::timeout(LIMIT, receiver.wait_with_output())
        .await
        .expect("receive did not finish in time")
        .unwrap();
    let lines = succeeded(done);
    let sent = sender.finish().await;
    assert!(!events(&sent, "reconnect").is_empty(), "{sent:?}");
    assert!(
        events(&lines, "resume")
            .iter()
            .any(|r| r["offset"].as_u64().unwrap() > 0),
        "{lines:?}"
    );
    assert!(same_bytes(&file, &out.join("f.bin")));
}
