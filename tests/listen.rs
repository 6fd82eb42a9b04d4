//! End-to-end tests of `duplex listen`: bridging clients to stdin/stdout
//! (one with `--once`, many by broadcast), `--exec` (a process per
//! connection, its exit closing the connection), `--exec --shared` (one
//! process for all), `--path`, wss:// with `--cert`/`--key`, a clean
//! shutdown on SIGTERM, and a bind failure.
//!
//! Clients are built with the duplex library, or are `duplex connect`.

mod common;

use std::process::Stdio;

use common::*;
use duplex::{CloseCode, Message};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// A running `duplex listen` with its pipes.
struct Listen {
    child: Child,
    addr: std::net::SocketAddr,
    stdout: BufReader<ChildStdout>,
    stderr: BufReader<ChildStderr>,
}

impl Listen {
    async fn start(args: &[&str]) -> Self {
        let mut cmd = duplex();
        cmd.args(["listen", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn duplex listen");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let line = wait_for_line(&mut stderr, "listening on ").await;
        Self {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            stderr,
            addr: address_in(&line),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits (bounded) for the process to exit; returns its code.
    async fn exit_code(mut self) -> i32 {
        match tokio::time::timeout(LIMIT, self.child.wait()).await {
            Ok(status) => status.unwrap().code().expect("an exit code"),
            Err(_) => {
                let _ = self.child.start_kill();
                let mut rest = String::new();
                let _ = tokio::time::timeout(
                    LIMIT,
                    tokio::io::AsyncReadExt::read_to_string(&mut self.stderr, &mut rest),
                )
                .await;
                panic!("listen did not exit in time; its stderr ended with:\n{rest}");
            }
        }
    }

    fn terminate(&self) {
        // The shell's builtin kill: no dependency on a kill binary.
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

type Client = duplex::WebSocket<duplex::MaybeTlsStream>;

async fn client(url: &str) -> Client {
    tokio::time::timeout(LIMIT, duplex::connect(url))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// The next data message's text (bounded).
async fn next_text(ws: &mut Client) -> String {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.recv())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("no error");
        if msg.is_data() {
            return text(&msg);
        }
    }
}

/// Receives until the close frame, then finishes the closing handshake
/// (bounded); returns the frame.
async fn close_frame(ws: &mut Client) -> Option<duplex::CloseFrame> {
    let closing = async {
        let mut frame = None;
        while let Some(msg) = ws.recv().await {
            if let Ok(Message::Close(f)) = msg {
                frame = Some(f);
            }
        }
        frame.expect("a close frame before the end")
    };
    tokio::time::timeout(LIMIT, closing)
        .await
        .expect("the close in time")
}

#[tokio::test]
async fn once_bridges_a_client_to_stdin_and_stdout() {
    let mut listen = Listen::start(&["--once"]).await;
    let mut ws = client(&listen.url("/anything")).await;
    ws.send("from the client").await.unwrap();
    let line = wait_for_line(&mut listen.stdout, "from the client").await;
    assert_eq!(line, "from the client\n");
    listen.write_stdin(b"from stdin\n").await;
    assert_eq!(next_text(&mut ws).await, "from stdin");
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(listen.exit_code().await, 0);
}

#[tokio::test]
async fn stdin_is_broadcast_to_every_client_until_sigterm() {
    let mut listen = Listen::start(&[]).await;
    let mut a = client(&listen.url("/")).await;
    wait_for_line(&mut listen.stderr, "connection from").await;
    let mut b = client(&listen.url("/")).await;
    wait_for_line(&mut listen.stderr, "connection from").await;
    listen.write_stdin(b"to everyone\n").await;
    assert_eq!(next_text(&mut a).await, "to everyone");
    assert_eq!(next_text(&mut b).await, "to everyone");
    b.send("b speaks").await.unwrap();
    wait_for_line(&mut listen.stdout, "b speaks").await;

    listen.terminate();
    for ws in [&mut a, &mut b] {
        let frame = close_frame(ws).await.expect("a close code");
        assert_eq!(frame.code, CloseCode::GOING_AWAY);
    }
    assert_eq!(listen.exit_code().await, 130);
}

#[tokio::test]
async fn exec_runs_a_command_per_connection() {
    let script = r#"echo "client $DUPLEX_CLIENT_ID at $REQUEST_URI from $REMOTE_ADDR"; while IFS= read -r line; do printf '%s\n' "$line" | tr a-z A-Z; done"#;
    let listen = Listen::start(&["--exec", script]).await;
    let mut first = client(&listen.url("/one?x=1")).await;
    let mut second = client(&listen.url("/two")).await;
    assert_eq!(
        next_text(&mut first).await,
        "client 1 at /one?x=1 from 127.0.0.1"
    );
    assert_eq!(
        next_text(&mut second).await,
        "client 2 at /two from 127.0.0.1"
    );
    first.send("shout this").await.unwrap();
    second.send("and this").await.unwrap();
    assert_eq!(next_text(&mut first).await, "SHOUT THIS");
    assert_eq!(next_text(&mut second).await, "AND THIS");
    first.close(CloseCode::NORMAL, "").await.unwrap();
    second.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn exec_with_cat_echoes_through_duplex_connect() {
    let listen = Listen::start(&["--exec", "cat"]).await;
    let mut cmd = duplex();
    cmd.args(["connect", &listen.url("/"), "--count", "2"]);
    let out = run(cmd, b"a\nb\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "a\nb\n");
}

#[tokio::test]
async fn the_commands_exit_closes_the_connection_with_its_status() {
    let listen = Listen::start(&["--exec", "echo bye; exit 3"]).await;
    let mut ws = client(&listen.url("/")).await;
    assert_eq!(next_text(&mut ws).await, "bye");
    let frame = close_frame(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::INTERNAL_ERROR);
    assert!(frame.reason.contains("status 3"), "{frame:?}");

    let listen = Listen::start(&["--exec", "echo fine"]).await;
    let mut ws = client(&listen.url("/")).await;
    assert_eq!(next_text(&mut ws).await, "fine");
    assert_eq!(
        close_frame(&mut ws).await.map(|f| f.code),
        Some(CloseCode::NORMAL)
    );
}

#[tokio::test]
async fn shared_runs_one_process_for_all_clients() {
    let mut listen = Listen::start(&["--exec", "cat", "--shared"]).await;
    let mut a = client(&listen.url("/")).await;
    wait_for_line(&mut listen.stderr, "connection from").await;
    let mut b = client(&listen.url("/")).await;
    wait_for_line(&mut listen.stderr, "connection from").await;
    a.send("from a").await.unwrap();
    assert_eq!(next_text(&mut a).await, "from a");
    assert_eq!(next_text(&mut b).await, "from a");
    b.send("from b").await.unwrap();
    assert_eq!(next_text(&mut a).await, "from b");
    assert_eq!(next_text(&mut b).await, "from b");
    listen.terminate();
    for ws in [&mut a, &mut b] {
        let frame = close_frame(ws).await.expect("a close code");
        assert_eq!(frame.code, CloseCode::GOING_AWAY);
    }
    assert_eq!(listen.exit_code().await, 130);
}

#[tokio::test]
async fn path_restricts_upgrades_to_one_path() {
    let listen = Listen::start(&["--path", "/ws", "--exec", "cat"]).await;
    let mut cmd = duplex();
    cmd.args(["connect", &listen.url("/other")]);
    let out = run(cmd, b"").await;
    out.expect_code(6);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    let mut cmd = duplex();
    cmd.args(["connect", &listen.url("/ws"), "--count", "1"]);
    let out = run(cmd, b"ok\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "ok\n");
}

#[tokio::test]
async fn serves_wss_with_a_certificate() {
    let pki = Pki::new("listen-tls");
    let leaf = pki.leaf(&["localhost"]);
    let listen = Listen::start(&[
        "--cert",
        leaf.cert.to_str().unwrap(),
        "--key",
        leaf.key.to_str().unwrap(),
        "--exec",
        "cat",
    ])
    .await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--cacert",
        pki.ca_file().to_str().unwrap(),
        &format!("wss://localhost:{}/", listen.addr.port()),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"over tls\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "over tls\n");
}

#[tokio::test]
async fn json_events_name_the_client() {
    let mut listen = Listen::start(&["--once", "--json"]).await;
    let mut ws = client(&listen.url("/j")).await;
    ws.send("hello").await.unwrap();
    let open = wait_for_line(&mut listen.stdout, "\"open\"").await;
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    assert_eq!(
        (open["client"].as_u64(), open["url"].as_str()),
        (Some(1), Some("/j"))
    );
    let msg = wait_for_line(&mut listen.stdout, "\"message\"").await;
    let msg: serde_json::Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(
        (msg["direction"].as_str(), msg["data"].as_str()),
        (Some("in"), Some("hello"))
    );
    ws.close(CloseCode(4000), "bye").await.unwrap();
    let close = wait_for_line(&mut listen.stdout, "\"close\"").await;
    let close: serde_json::Value = serde_json::from_str(&close).unwrap();
    assert_eq!(
        (close["code"].as_u64(), close["initiator"].as_str()),
        (Some(4000), Some("client"))
    );
    // The client closed with an application code: like connect, exit 9.
    assert_eq!(listen.exit_code().await, 9);
}

#[tokio::test]
async fn a_busy_port_is_reported_with_exit_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = duplex();
    cmd.args(["listen", "--bind", &addr]);
    let out = run(cmd, b"").await;
    out.expect_code(3);
    assert!(out.stderr.contains("cannot listen"), "{}", out.stderr);
}
