//! `duplex serve`, `publish`, `subscribe` and `chat` as a user runs them:
//! the real binary, a real server on loopback, a real data directory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");
const LIMIT: Duration = Duration::from_secs(30);

/// A `duplex serve` child, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(data: &std::path::Path, bind: &str, extra: &[&str]) -> Self {
        Self::start_with_env(data, bind, extra, &[])
    }

    fn start_with_env(
        data: &std::path::Path,
        bind: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", bind, "--data"])
            .arg(data)
            .args(extra)
            .env_remove("DUPLEX_API_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .rsplit("://")
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("banner: {first:?}"));
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, and wait for the graceful exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait(&mut self.child);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < LIMIT, "child did not exit in time");
        std::thread::sleep(Duration::from_millis(20)); // polling a child's exit, bounded
    }
}

fn duplex(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("DUPLEX_API_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn publish_then_subscribe_from_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), "127.0.0.1:0", &[]);
    let url = s.url();
    for data in ["first", "{\"n\":2}", "42"] {
        let (ok, out, err) = duplex(&["publish", &url, "news", data]);
        assert!(ok, "{err}");
        assert!(out.starts_with("published to news at offset"), "{out}");
    }
    let (ok, out, err) = duplex(&["subscribe", &url, "news", "--since", ":0", "--count", "3"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["first", "{\"n\":2}", "42"]
    );
    let (ok, out, _) = duplex(&[
        "subscribe",
        &url,
        "news",
        "--since",
        ":1",
        "--count",
        "2",
        "--json",
    ]);
    assert!(ok);
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        objs.iter()
            .map(|o| o["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    for o in &objs {
        for field in ["channel", "offset", "epoch", "ts", "from", "data"] {
            assert!(o.get(field).is_some(), "{field} missing in {o}");
        }
    }
}

#[test]
fn subscribe_recovers_what_it_missed_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), "127.0.0.1:0", &[]);
    let (url, bind) = (s.url(), s.addr.to_string());
    let mut sub = Command::new(BIN)
        .args(["subscribe", &url, "feed", "--since", ":0", "--count", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // From the beginning (`--since :0`), so it does not matter whether the
    // subscriber is subscribed before this publish lands.
    let mut out = BufReader::new(sub.stdout.take().unwrap());
    assert!(duplex(&["publish", &url, "feed", "one"]).0);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "one");
    // Restart the server on the same address and data; publish while the
    // subscriber is reconnecting.
    s.stop();
    let s = Serve::start(dir.path(), &bind, &[]);
    for data in ["two", "three", "four"] {
        assert!(duplex(&["publish", &s.url(), "feed", data]).0);
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(wait(&mut sub).success());
    assert_eq!(
        rest.lines().collect::<Vec<_>>(),
        ["two", "three", "four"],
        "each missed publication exactly once"
    );
}

#[test]
fn publishing_needs_the_key_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), "127.0.0.1:0", &["--api-key", "sekret"]);
    let (ok, _, err) = duplex(&["publish", &s.url(), "news", "x"]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("--api-key"), "{err}");
    let (ok, _, err) = duplex(&["publish", &s.url(), "news", "x", "--api-key", "sekret"]);
    assert!(ok, "{err}");
}

#[test]
fn two_terminal_chats_see_each_other_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), "127.0.0.1:0", &[]);
    let chat = |name: &str, input: &str| {
        let mut child = Command::new(BIN)
            .args(["chat", &s.url(), "--room", "r", "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(wait(&mut child).success());
        out
    };
    let ann = chat("ann", "hello from ann\n/who\n");
    assert!(ann.contains("#1 ann: hello from ann"), "{ann}");
    assert!(ann.contains("* here: ann"), "{ann}");
    let bob = chat("bob", "/nope\nhi ann\n");
    assert!(
        bob.contains("#1 ann: hello from ann"),
        "history on join: {bob}"
    );
    assert!(bob.contains("unknown command /nope"), "{bob}");
    assert!(bob.contains("#2 bob: hi ann"), "{bob}");
    let (ok, out, _) = duplex(&[
        "subscribe",
        &s.url(),
        "chat:r",
        "--since",
        ":0",
        "--count",
        "2",
    ]);
    assert!(ok);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["{\"text\":\"hello from ann\"}", "{\"text\":\"hi ann\"}"]
    );
}

#[test]
fn serve_explains_a_busy_port() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start(dir.path(), "127.0.0.1:0", &[]);
    let (ok, _, err) = duplex(&[
        "serve",
        "--bind",
        &s.addr.to_string(),
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot listen") && err.contains("--bind"),
        "{err}"
    );
}

#[test]
fn serve_over_tls_and_talk_to_it_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new("serve-tls");
    let leaf = pki.leaf(&["localhost", "127.0.0.1"]);
    let (cert, key, ca) = (
        leaf.cert.to_str().unwrap(),
        leaf.key.to_str().unwrap(),
        pki.ca_file(),
    );
    let s = Serve::start(
        dir.path(),
        "127.0.0.1:0",
        &["--tls-cert", cert, "--tls-key", key],
    );
    let url = format!("https://localhost:{}", s.addr.port());
    let ca = ca.to_str().unwrap();
    let (ok, _, err) = duplex(&["publish", &url, "news", "over tls", "--cacert", ca]);
    assert!(ok, "{err}");
    let (ok, out, err) = duplex(&[
        "subscribe",
        &url,
        "news",
        "--since",
        ":0",
        "--count",
        "1",
        "--cacert",
        ca,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "over tls");
    // Without the CA the certificate is not trusted, and the error says TLS.
    let (ok, _, err) = duplex(&["publish", &url, "news", "x"]);
    assert!(!ok);
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn settings_come_from_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("duplex.toml");
    std::fs::write(&config, "history_size = 3\n").unwrap();
    let config = config.to_str().unwrap();
    let kept = |extra: &[&str], env: &[(&str, &str)]| {
        let data = tempfile::tempdir().unwrap();
        let mut args = vec!["--config", config];
        args.extend_from_slice(extra);
        let s = Serve::start_with_env(data.path(), "127.0.0.1:0", &args, env);
        for i in 0..10 {
            assert!(duplex(&["publish", &s.url(), "c", &i.to_string()]).0);
        }
        let (ok, out, err) = duplex(&["publish", &s.url(), "c", "probe", "--json"]);
        assert!(ok, "{err}");
        let offset = serde_json::from_str::<serde_json::Value>(&out).unwrap()["offset"]
            .as_u64()
            .unwrap();
        assert_eq!(offset, 11);
        let (ok, out, _) = duplex(&["subscribe", &s.url(), "c", "--since", ":9", "--count", "2"]);
        assert!(ok);
        assert_eq!(out.lines().collect::<Vec<_>>(), ["9", "probe"]);
        history_len(s.addr)
    };
    assert_eq!(kept(&[], &[]), 3, "from the file");
    assert_eq!(
        kept(&[], &[("DUPLEX_HISTORY_SIZE", "5")]),
        5,
        "the environment beats the file"
    );
    assert_eq!(
        kept(&["--history-size", "2"], &[("DUPLEX_HISTORY_SIZE", "5")]),
        2,
        "a flag beats both"
    );
    std::fs::write(dir.path().join("bad.toml"), "histroy_size = 3\n").unwrap();
    let (ok, _, err) = duplex(&[
        "serve",
        "--config",
        dir.path().join("bad.toml").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("histroy_size"),
        "the unknown key is named: {err}"
    );
}

/// How many publications of channel `c` the server still holds.
fn history_len(addr: SocketAddr) -> usize {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET /api/channels/c/history?limit=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["publications"].as_array().unwrap().len()
}
