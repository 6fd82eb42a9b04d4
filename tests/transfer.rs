//! End-to-end tests of `duplex send` / `duplex receive` through an
//! in-process `duplex serve` relay on loopback: folder trees byte for byte,
//! a large generated file, cut connections (sender's, receiver's, and a
//! killed receiver run again), a corrupt chunk re-requested, two receivers,
//! a wrong code. Faults come from a small proxy built here that cuts,
//! stalls or corrupts after an exact number of bytes: nothing sleeps to
//! synchronise, and every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The longest one transfer may take (debug builds are slow).
const LIMIT: Duration = Duration::from_secs(180);

struct Relay {
    server: duplex_server::Server,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = duplex_server::Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            data: dir.path().to_owned(),
            ..Default::default()
        };
        let server = duplex_server::Server::start(settings).await.unwrap();
        Self { server, _dir: dir }
    }

    /// Stops the server (closing every connection) and starts a new one on
    /// the same address: a relay restart, which forgets every transfer.
    async fn restart(self) -> Self {
        let addr = self.server.local_addr();
        self.server.shutdown().await;
        let settings = duplex_server::Settings {
            bind: addr,
            data: self._dir.path().to_owned(),
            ..Default::default()
        };
        // The old listener closes as its task is dropped; retry (bounded)
        // until the address is free again.
        for _ in 0..100 {
            match duplex_server::Server::start(settings.clone()).await {
                Ok(server) => {
                    return Self {
                        server,
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
}

/// A TCP proxy to `target` that applies `fault` to its first connection
/// only; `fired` is notified when the fault happens.
async fn proxy(target: SocketAddr, fault: Fault) -> (String, Arc<Notify>) {
    let (url, fired, _) = proxy_with_resume(target, fault).await;
    (url, fired)
}

/// [`proxy`], and a notify that ends a [`Fault::PauseDown`].
async fn proxy_with_resume(target: SocketAddr, fault: Fault) -> (String, Arc<Notify>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fired = Arc::new(Notify::new());
    let notify = fired.clone();
    let resume = Arc::new(Notify::new());
    let resumed = resume.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            // While the relay restarts, refuse like it would.
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

/// Writes `len` bytes of a deterministic pseudo-random pattern.
fn generate(path: &Path, len: u64, seed: u64) {
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

fn same_bytes(a: &Path, b: &Path) -> bool {
    let hash = |p: &Path| {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p).unwrap()).unwrap();
        h.finalize()
    };
    hash(a) == hash(b)
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
    let mut cmd = receive_cmd(&relay.url(), &sender.code, &out);
    cmd.arg("--overwrite");
    let done = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
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
    let stdout = String::from_utf8(done.stdout).unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
