//! End-to-end tests of `duplex connect` in pipe mode, driving the real
//! binary against `duplex serve` and servers and proxies built here.
//!
//! Proves: text and binary round trips, `--count`, `--wait`, `--init`,
//! headers and subprotocols, compression negotiated (`-v` and `--json`),
//! `--json` events, HTTP CONNECT and SOCKS5 proxies (explicit and from the
//! environment; tunnels counted), TLS with a test CA and `--insecure`,
//! `--reconnect` re-sending `--init`, and one exit status per failure kind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use duplex::{CloseCode, Message, ServerBuilder};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn text_lines_round_trip_and_count_exits_zero() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args(["connect", &serve.echo_url(), "--count", "2"]);
    let out = run(cmd, b"a\nb\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "a\nb\n");
}

#[tokio::test]
async fn stdin_ending_closes_normally_after_the_replies() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args(["connect", &serve.echo_url()]);
    let out = run(cmd, b"one\r\ntwo\nlast without newline").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "one\ntwo\nlast without newline\n");
}

#[tokio::test]
async fn binary_mode_is_a_byte_exact_pipe() {
    let serve = Serve::start().await;
    // Not UTF-8, with newlines and NULs, larger than one read.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut cmd = duplex();
    cmd.args(["connect", "--binary", &serve.echo_url()]);
    let out = run(cmd, &data).await;
    out.expect_code(0);
    assert!(out.raw_stdout == data, "the bytes came back changed");

    let mut cmd = duplex();
    cmd.args(["connect", "--binary", "--hex", &serve.echo_url()]);
    let out = run(cmd, &data).await;
    out.expect_code(0);
    let echoed: Vec<u8> = out.stdout.lines().flat_map(hex_decode).collect();
    assert!(echoed == data, "hex lines decode to the bytes sent");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn binary_messages_print_as_hex_or_base64() {
    let addr = server(ServerBuilder::new(), |_, mut ws| async move {
        let _ = ws.send(Message::binary(vec![0u8, 1, 255])).await;
        drain(ws).await;
    })
    .await;
    let url = format!("ws://{addr}/");
    for (flag, expected) in [("--hex", "0001ff\n"), ("--base64", "AAH/\n")] {
        let mut cmd = duplex();
        cmd.args(["connect", &url, flag, "--count", "1"]);
        let out = run(cmd, b"").await;
        out.expect_code(0);
        assert_eq!(out.stdout, expected, "{flag}");
    }
}

#[tokio::test]
async fn init_messages_are_sent_first_in_order() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        &serve.echo_url(),
        "--init",
        "one",
        "--init",
        "two",
        "--count",
        "3",
    ]);
    let out = run(cmd, b"three\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "one\ntwo\nthree\n");
}

#[tokio::test]
async fn invalid_utf8_lines_go_as_binary_with_a_warning() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args(["connect", &serve.echo_url(), "--hex", "--count", "1"]);
    let out = run(cmd, b"\xff\xfe\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "fffe\n");
    assert!(out.stderr.contains("not UTF-8"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// --wait

#[tokio::test]
async fn wait_keeps_the_connection_until_traffic_stops() {
    // The server speaks only after the client's input has ended: three
    // messages 100 ms apart.
    let addr = server(ServerBuilder::new(), |_, mut ws| async move {
        for i in 1..=3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if ws.send(format!("push {i}")).await.is_err() {
                return;
            }
        }
        drain(ws).await;
    })
    .await;
    let mut cmd = duplex();
    cmd.args(["connect", &format!("ws://{addr}/"), "--wait", "1"]);
    let started = Instant::now();
    let out = run(cmd, b"").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "push 1\npush 2\npush 3\n");
    // The last push came ~300 ms in; the close waited a quiet second.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "closed too early"
    );
}

// ---------------------------------------------------------------------------
// Handshake options

#[tokio::test]
#[allow(clippy::result_large_err)] // the filter's error type is duplex's
async fn headers_credentials_origin_and_subprotocol_reach_the_server() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let builder = ServerBuilder::new()
        .protocols(["chat.v2"])
        .filter(move |req| {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            *record.lock().unwrap() = Some((h("x-token"), h("authorization"), h("origin")));
            Ok(())
        });
    let addr = server(builder, |_, ws| echo(ws)).await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        &format!("ws://{addr}/"),
        "-H",
        "X-Token: abc 123",
        "--user",
        "alice:s3cret",
        "--origin",
        "http://example.test",
        "--subprotocol",
        "chat.v1,chat.v2",
        "--json",
        "--count",
        "1",
    ]);
    let out = run(cmd, b"hi\n").await;
    out.expect_code(0);
    let (token, auth, origin) = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the server saw a request");
    assert_eq!(token, "abc 123");
    assert_eq!(auth, "Basic YWxpY2U6czNjcmV0"); // alice:s3cret
    assert_eq!(origin, "http://example.test");
    let events = out.json_lines();
    assert_eq!(events[0]["event"], "open");
    assert_eq!(events[0]["protocol"], "chat.v2");
}

#[tokio::test]
async fn compression_is_negotiated_and_shown_by_verbose_and_json() {
    let serve = Serve::start().await;

    let mut cmd = duplex();
    cmd.args([
        "connect",
        "-v",
        "--compress",
        &serve.echo_url(),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"squeeze me\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "squeeze me\n");
    for expected in [
        "> GET /echo HTTP/1.1",
        "> sec-websocket-extensions: permessage-deflate",
        "< HTTP/1.1 101 Switching Protocols",
        "< sec-websocket-extensions: permessage-deflate",
        "* WebSocket open: permessage-deflate on",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }

    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--json",
        "--compress",
        &serve.echo_url(),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"x\n").await;
    out.expect_code(0);
    let open = &out.json_lines()[0];
    assert_eq!(
        (open["event"].as_str(), open["compressed"].as_bool()),
        (Some("open"), Some(true))
    );

    // Not offered, not used.
    let mut cmd = duplex();
    cmd.args(["connect", "-v", &serve.echo_url(), "--count", "1"]);
    let out = run(cmd, b"x\n").await;
    out.expect_code(0);
    assert!(
        out.stderr.contains("* WebSocket open: no compression"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// --json

#[tokio::test]
async fn json_reports_open_messages_and_the_servers_close() {
    let addr = server(ServerBuilder::new(), |_, mut ws| async move {
        if let Some(Ok(msg)) = ws.recv().await {
            let _ = ws.send(format!("hello back to {}", text(&msg))).await;
            let _ = ws.close(CloseCode(4001), "bye bye").await;
        }
    })
    .await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--json",
        &format!("ws://{addr}/chat"),
        "--wait",
        "inf",
    ]);
    let out = run(cmd, b"hi\n").await;
    // 4001 is not a normal close: exit status 9.
    out.expect_code(9);
    let events = out.json_lines();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["open", "message", "message", "close"],
        "{events:#?}"
    );
    assert_eq!(events[0]["url"], format!("ws://{addr}/chat"));
    assert_eq!(events[0]["compressed"], false);
    assert_eq!(
        (
            &events[1]["direction"],
            &events[1]["type"],
            &events[1]["data"]
        ),
        (&"out".into(), &"text".into(), &"hi".into())
    );
    assert_eq!(
        (&events[2]["direction"], &events[2]["data"]),
        (&"in".into(), &"hello back to hi".into())
    );
    let close = &events[3];
    assert_eq!(close["code"], 4001);
    assert_eq!(close["reason"], "bye bye");
    assert_eq!(close["initiator"], "server");
    assert_eq!(close["clean"], true);
    for e in &events {
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    assert!(out.stderr.contains("4001"), "{}", out.stderr);
}

#[tokio::test]
async fn json_reports_our_close_binary_data_and_keepalive_pongs() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--json",
        "--binary",
        "--ping-interval",
        "0.1",
        "--wait",
        "0.6",
        &serve.echo_url(),
    ]);
    let out = run(cmd, &[1, 2, 3]).await;
    out.expect_code(0);
    let events = out.json_lines();
    let incoming = events
        .iter()
        .find(|e| e["event"] == "message" && e["direction"] == "in")
        .expect("the echo");
    assert_eq!(incoming["type"], "binary");
    assert_eq!(incoming["data"], "AQID");
    assert_eq!(incoming["encoding"], "base64");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "pong" && e["direction"] == "in"),
        "no pong in {events:#?}"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["code"].as_u64()),
        (Some("close"), Some(1000))
    );
    assert_eq!(last["initiator"], "client");
}

// ---------------------------------------------------------------------------
// Proxies

#[tokio::test]
async fn through_an_http_connect_proxy() {
    let serve = Serve::start().await;
    let (proxy, tunnels) = http_proxy(None).await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--proxy",
        &format!("http://{proxy}"),
        &serve.echo_url(),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"via http proxy\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "via http proxy\n");
    assert_eq!(tunnels.targets(), [serve.addr.to_string()]);
}

#[tokio::test]
async fn through_a_socks5_proxy_with_credentials() {
    let serve = Serve::start().await;
    let (proxy, tunnels) = socks5_proxy(Some(("alice", "s3cret"))).await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--proxy",
        &format!("socks5://alice:s3cret@{proxy}"),
        &serve.echo_url(),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"via socks\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "via socks\n");
    assert_eq!(tunnels.targets(), [serve.addr.to_string()]);

    // Wrong password: a proxy failure (exit 4) that says what to check.
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--proxy",
        &format!("socks5://alice:wrong@{proxy}"),
        &serve.echo_url(),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(4);
    assert!(out.stderr.contains("password"), "{}", out.stderr);
    assert_eq!(
        tunnels.targets().len(),
        1,
        "no tunnel without the right password"
    );
}

#[tokio::test]
async fn socks5h_lets_the_proxy_resolve_and_all_proxy_is_honoured() {
    let serve = Serve::start().await;
    let (proxy, tunnels) = socks5_proxy(None).await;
    let url = format!("ws://localhost:{}/echo", serve.addr.port());
    let mut cmd = duplex();
    cmd.env("all_proxy", format!("socks5h://{proxy}"));
    cmd.args(["connect", &url, "--count", "1"]);
    let out = run(cmd, b"by name\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "by name\n");
    assert_eq!(
        tunnels.targets(),
        [format!("localhost:{}", serve.addr.port())]
    );

    // --no-proxy ignores the environment.
    let mut cmd = duplex();
    cmd.env("all_proxy", format!("socks5h://{proxy}"));
    cmd.args(["connect", "--no-proxy", &serve.echo_url(), "--count", "1"]);
    run(cmd, b"direct\n").await.expect_code(0);
    assert_eq!(tunnels.targets().len(), 1);
}

#[tokio::test]
async fn http_proxy_from_the_environment_and_a_refusal() {
    let serve = Serve::start().await;
    let (proxy, tunnels) = http_proxy(None).await;
    let mut cmd = duplex();
    cmd.env("http_proxy", format!("http://{proxy}"));
    cmd.args(["connect", &serve.echo_url(), "--count", "1"]);
    run(cmd, b"env\n").await.expect_code(0);
    assert_eq!(tunnels.targets(), [serve.addr.to_string()]);

    let (refusing, _) = http_proxy(Some(403)).await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--proxy",
        &format!("http://{refusing}"),
        &serve.echo_url(),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(4);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_with_a_test_ca_and_the_failures_that_matter() {
    let pki = Pki::new("tls");
    let leaf = pki.leaf(&["localhost"]);
    let addr = tls_echo_server(leaf.server_config.clone()).await;
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();

    // Trusted through --cacert, name matches.
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--cacert",
        ca,
        &format!("wss://localhost:{}/", addr.port()),
        "--count",
        "1",
        "-v",
    ]);
    let out = run(cmd, b"secret\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "secret\n");
    assert!(
        out.stderr.contains("certificate verified"),
        "{}",
        out.stderr
    );

    // The certificate does not name 127.0.0.1: exit 5, with the way out.
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--cacert",
        ca,
        &format!("wss://127.0.0.1:{}/", addr.port()),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(5);
    assert!(
        out.stderr.contains("does not name this host"),
        "{}",
        out.stderr
    );

    // Not trusted without the CA.
    let mut cmd = duplex();
    cmd.args(["connect", &format!("wss://localhost:{}/", addr.port())]);
    let out = run(cmd, b"").await;
    out.expect_code(5);
    assert!(out.stderr.contains("--cacert"), "{}", out.stderr);

    // A plain ws:// server spoken to with wss://.
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--cacert",
        ca,
        &format!("wss://{}/echo", serve.addr),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(5);
}

#[tokio::test]
async fn insecure_works_and_warns_loudly() {
    let pki = Pki::new("insecure");
    let leaf = pki.leaf(&["localhost"]);
    let addr = tls_echo_server(leaf.server_config.clone()).await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "-k",
        &format!("wss://127.0.0.1:{}/", addr.port()),
        "--count",
        "1",
    ]);
    let out = run(cmd, b"anyway\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "anyway\n");
    assert!(
        out.stderr.contains("WARNING") && out.stderr.contains("NOT verified"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// --reconnect

#[tokio::test]
async fn reconnect_with_backoff_resends_init() {
    let inits = Arc::new(Mutex::new(Vec::new()));
    let record = inits.clone();
    let addr = server(ServerBuilder::new(), move |n, mut ws| {
        let record = record.clone();
        async move {
            let Some(Ok(first)) = ws.recv().await else {
                return;
            };
            record.lock().unwrap().push(text(&first));
            if n == 1 {
                return; // dropped: no close frame
            }
            let _ = ws.send("welcome back").await;
            drain(ws).await;
        }
    })
    .await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        &format!("ws://{addr}/"),
        "--reconnect",
        "--reconnect-delay",
        "0.05",
        "--init",
        "LOGIN alice",
        "--count",
        "1",
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "welcome back\n");
    assert_eq!(*inits.lock().unwrap(), ["LOGIN alice", "LOGIN alice"]);
    assert!(out.stderr.contains("reconnecting"), "{}", out.stderr);
}

#[tokio::test]
async fn reconnect_gives_up_after_max_reconnects() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--json",
        &format!("ws://{addr}/"),
        "--reconnect",
        "--reconnect-delay",
        "0.01",
        "--max-reconnects",
        "2",
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(3);
    let events = out.json_lines();
    let errors = events.iter().filter(|e| e["event"] == "error").count();
    let retries: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "reconnect")
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(errors, 3, "{events:#?}");
    assert_eq!(retries, [10, 20], "the delay doubles");
}

// ---------------------------------------------------------------------------
// Exit statuses

#[tokio::test]
async fn refused_connection_exits_3() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let mut cmd = duplex();
    cmd.args(["connect", &format!("ws://{addr}/")]);
    let out = run(cmd, b"").await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("is the server running"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn not_found_on_upgrade_exits_6_with_the_reason() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args(["connect", &format!("ws://{}/no-such-path", serve.addr)]);
    let out = run(cmd, b"").await;
    out.expect_code(6);
    assert!(
        out.stderr.contains("404 Not Found") && out.stderr.contains("check the URL's path"),
        "{}",
        out.stderr
    );

    // With --json the error is also an event.
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--json",
        &format!("ws://{}/no-such-path", serve.addr),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(6);
    let events = out.json_lines();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "error");
    assert_eq!(events[0]["kind"], "handshake");
    assert_eq!(events[0]["exit_code"], 6);
}

#[tokio::test]
async fn protocol_error_exits_7() {
    // After the handshake the server writes a text frame that is not UTF-8.
    let addr = server(ServerBuilder::new(), |_, ws| async move {
        let tcp = ws.get_ref();
        tcp.writable().await.unwrap();
        tcp.try_write(b"\x81\x02\xff\xfe").unwrap();
        drain(ws).await;
    })
    .await;
    let mut cmd = duplex();
    cmd.args(["connect", &format!("ws://{addr}/"), "--wait", "inf"]);
    let out = run(cmd, b"").await;
    out.expect_code(7);
    assert!(out.stderr.contains("1007"), "{}", out.stderr);
}

#[tokio::test]
async fn message_over_the_limit_exits_7_with_a_hint() {
    let serve = Serve::start().await;
    let mut cmd = duplex();
    cmd.args([
        "connect",
        &serve.echo_url(),
        "--max-message-size",
        "1K",
        "--count",
        "1",
    ]);
    let out = run(cmd, &[b'x'; 2000]).await;
    out.expect_code(7);
    assert!(out.stderr.contains("--max-message-size"), "{}", out.stderr);
}

#[tokio::test]
async fn silent_server_times_out_with_8() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp); // accepted, never answered
        }
    });
    let mut cmd = duplex();
    cmd.args([
        "connect",
        "--connect-timeout",
        "0.3",
        &format!("ws://{addr}/"),
    ]);
    let out = run(cmd, b"").await;
    out.expect_code(8);
    assert!(out.stderr.contains("handshake"), "{}", out.stderr);
    held.abort();
}

#[tokio::test]
async fn dropped_connection_exits_9() {
    let addr = server(ServerBuilder::new(), |_, ws| async move {
        drop(ws); // no close frame
    })
    .await;
    let mut cmd = duplex();
    cmd.args(["connect", &format!("ws://{addr}/"), "--wait", "inf"]);
    let out = run(cmd, b"").await;
    out.expect_code(9);
    assert!(out.stderr.contains("1006"), "{}", out.stderr);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        vec!["connect", "ftp://example.test/"],
        vec!["connect", "-H", "no colon here", "ws://127.0.0.1:9/"],
        vec!["connect", "--proxy", "gopher://p:1", "ws://127.0.0.1:9/"],
        vec![
            "connect",
            "--cacert",
            "/no/such/file.pem",
            "wss://127.0.0.1:9/",
        ],
        vec!["connect", "--wait", "soon", "ws://127.0.0.1:9/"],
    ] {
        let mut cmd = duplex();
        cmd.args(&args);
        let out = run(cmd, b"").await;
        assert_eq!(out.code(), 2, "{args:?}: {out:#?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn help_documents_every_option_and_the_exit_statuses() {
    let mut cmd = duplex();
    cmd.args(["connect", "--help"]);
    let out = run(cmd, b"").await;
    out.expect_code(0);
    for option in [
        "--header",
        "--subprotocol",
        "--compress",
        "--binary",
        "--base64",
        "--hex",
        "--init",
        "--count",
        "--wait",
        "--ping-interval",
        "--max-message-size",
        "--proxy",
        "--cacert",
        "--insecure",
        "--connect-timeout",
        "--reconnect",
        "--json",
        "--verbose",
        "Exit status",
    ] {
        assert!(out.stdout.contains(option), "--help lacks {option}");
    }
}

/// `--http2 always|auto|never` against `duplex serve` over TLS (and h2c):
/// the echo comes back each way, `-v` shows which handshake it was; a
/// server with HTTP/2 off gets HTTP/1.1 from `auto` and a clear refusal
/// from `always`.
#[tokio::test]
async fn http2_modes_and_what_they_fall_back_to() {
    let pki = Pki::new("http2");
    let leaf = pki.leaf(&["localhost"]);
    let (cert, key) = (leaf.cert.to_str().unwrap(), leaf.key.to_str().unwrap());
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let connect = |mode: &str, url: &str| {
        let mut cmd = duplex();
        cmd.args([
            "connect", "--http2", mode, "--cacert", ca, url, "--count", "1", "-v",
        ]);
        cmd
    };
    let serve = Serve::start_with(&["--tls-cert", cert, "--tls-key", key]).await;
    let url = format!("wss://localhost:{}/echo", serve.addr.port());
    for (mode, answer) in [
        ("always", "< :status: 200"),
        ("auto", "< :status: 200"),
        ("never", "< HTTP/1.1 101"),
    ] {
        let out = run(connect(mode, &url), b"over the wire\n").await;
        out.expect_code(0);
        assert_eq!(out.stdout, "over the wire\n", "--http2 {mode}");
        assert!(
            out.stderr.contains(answer),
            "--http2 {mode}: {}",
            out.stderr
        );
    }
    // Prior knowledge on plain TCP.
    let h2c = Serve::start().await;
    let out = run(
        connect("always", &format!("ws://{}/echo", h2c.addr)),
        b"h2c\n",
    )
    .await;
    out.expect_code(0);
    assert!(out.stderr.contains("< :status: 200"), "{}", out.stderr);

    let off = Serve::start_with(&["--tls-cert", cert, "--tls-key", key, "--http2", "false"]).await;
    let url = format!("wss://localhost:{}/echo", off.addr.port());
    let out = run(connect("auto", &url), b"fell back\n").await;
    out.expect_code(0);
    assert_eq!(out.stdout, "fell back\n");
    assert!(out.stderr.contains("< HTTP/1.1 101"), "{}", out.stderr);
    let out = run(connect("always", &url), b"refused\n").await;
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("HTTP/2"), "{}", out.stderr);
}
