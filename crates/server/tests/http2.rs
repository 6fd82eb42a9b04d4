//! `duplex serve` over HTTP/2 (RFC 8441): every WebSocket endpoint is an
//! extended CONNECT away on h2c and on TLS (ALPN `h2`), with the same
//! checks as over HTTP/1.1; many sockets share one connection; one that
//! stops reading does not stall the others; a shutdown closes them with
//! 1001; `--http2 false` turns it all off.

mod support;

use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, CloseCode, Error, HandshakeError, Message, ResponseError};
use serde_json::json;
use support::{HubClient, LIMIT, TestServer};

fn client() -> ClientBuilder {
    ClientBuilder::new()
        .proxy(ProxyConfig::None)
        .tls_config(duplex::tls::insecure_client_config())
}

fn url(t: &TestServer) -> String {
    let (_, ws) = t.server.scheme();
    format!("{ws}://localhost:{}/", t.addr().port())
}

/// A counter or gauge from `/metrics`, over HTTP/1.1.
async fn metric(t: &TestServer, name: &str) -> u64 {
    let (_, metrics) = if t.server.scheme().0 == "https" {
        support::https_get(t.addr(), "/metrics").await
    } else {
        support::http(t.addr(), "GET", "/metrics", &[], None).await
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}")) as u64
}

async fn within<F: std::future::IntoFuture>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

/// Echo and hub sockets on one HTTP/2 connection, plain and TLS: the
/// hub's publish reaches a subscriber on another stream of the same
/// connection; the metrics count each socket (and, on TLS, one
/// connection).
#[tokio::test]
async fn echo_and_hub_sockets_share_one_connection() {
    for tls in [false, true] {
        let t = if tls {
            TestServer::start_tls(|_| {}).await
        } else {
            TestServer::start(|_| {}).await
        };
        let h2 = within(
            "connect_http2",
            client()
                .config(duplex::Config::default().with_compression())
                .connect_http2(&url(&t)),
        )
        .await
        .unwrap_or_else(|e| panic!("tls {tls}: {e}"));
        let mut echo = h2.open("/echo").await.expect("/echo over h2");
        assert!(echo.is_compressed(), "permessage-deflate over HTTP/2");
        let mut subscriber = HubClient::on(h2.open("/ws").await.expect("/ws over h2"));
        let mut publisher = HubClient::on(h2.open("/ws").await.expect("/ws over h2"));
        subscriber
            .ok(json!({"cmd": "subscribe", "channel": "news"}))
            .await;
        publisher
            .ok(json!({"cmd": "publish", "channel": "news", "data": "over h2"}))
            .await;
        let push = subscriber.push_of("publication").await;
        assert_eq!(push["data"], "over h2", "{push}");
        for i in 0..50 {
            let text = format!("echo {i} over one connection");
            echo.send(text.clone()).await.unwrap();
            let Some(Ok(Message::Text(back))) = within("an echo", echo.recv()).await else {
                panic!("no echo");
            };
            assert_eq!(back.as_str(), text);
        }
        echo.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(metric(&t, "duplex_http2_websockets_total").await, 3);
        if tls {
            assert_eq!(metric(&t, "duplex_http2_connections_total").await, 1);
        }
    }
}

/// The Origin allow-list, on every endpoint, over HTTP/2 as over HTTP/1.1.
#[tokio::test]
async fn a_disallowed_origin_is_refused_on_every_endpoint() {
    let t = TestServer::start(|s| s.allowed_origins = vec!["https://chat.example".into()]).await;
    let evil = within(
        "connect_http2",
        client()
            .header("Origin", "https://evil.example")
            .connect_http2(&url(&t)),
    )
    .await
    .unwrap();
    let good = within(
        "connect_http2",
        client()
            .header("Origin", "https://chat.example")
            .connect_http2(&url(&t)),
    )
    .await
    .unwrap();
    for path in duplex_server::app::Endpoint::ALL.map(|e| e.path()) {
        let err = within("a refusal", evil.open(path))
            .await
            .expect_err("a disallowed Origin");
        let Error::Handshake(h) = &err else {
            panic!("{path}: {err:?}")
        };
        let HandshakeError::Response { error, body } = &**h else {
            panic!("{path}: {err:?}")
        };
        assert_eq!(
            *error,
            ResponseError::Status(axum::http::StatusCode::FORBIDDEN),
            "{path}"
        );
        assert!(body.contains("Origin"), "{path}: {body}");
        within("an accepted socket", good.open(path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// A socket whose peer stops reading fills its own stream's window, not
/// the connection's: the other sockets on the connection keep flowing.
#[tokio::test]
async fn a_socket_that_stops_reading_does_not_stall_the_others() {
    let t = TestServer::start(|_| {}).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut stalled = h2.open("/echo").await.unwrap();
    // 4 MiB of echoes nobody reads: far past every window.
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..64 {
            if stalled.send(chunk.clone()).await.is_err() {
                break;
            }
        }
        stalled
    });
    let mut flowing = h2.open("/echo").await.unwrap();
    for i in 0..200 {
        let text = format!("still flowing {i}");
        within("a send", flowing.send(text.clone())).await.unwrap();
        let Some(Ok(Message::Text(back))) = within("an echo", flowing.recv()).await else {
            panic!("no echo");
        };
        assert_eq!(back.as_str(), text);
    }
    assert!(!flood.is_finished(), "the flood was never held back");
    flood.abort();
}

/// A graceful shutdown closes WebSockets on HTTP/2 streams with 1001.
#[tokio::test]
async fn a_shutdown_closes_sockets_on_streams_with_1001() {
    let t = TestServer::start(|s| s.shutdown_timeout = 5).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut ws = h2.open("/echo").await.unwrap();
    ws.send("before").await.unwrap();
    let _ = within("the echo", ws.recv()).await;
    let TestServer { server, dir, .. } = t;
    let stopping = tokio::spawn(server.shutdown());
    let mut close = None;
    // Read to the end: the close frame, then the stream's end.
    while let Some(msg) = within("the close frame", ws.recv()).await {
        if let Message::Close(frame) = msg.expect("a clean close") {
            close = frame.map(|f| f.code);
        }
    }
    assert_eq!(close, Some(CloseCode::GOING_AWAY));
    within("the shutdown", stopping).await.unwrap();
    drop(dir);
}

/// `http2 = false`: TLS offers only HTTP/1.1, plain TCP refuses the
/// HTTP/2 preface; WebSockets over HTTP/1.1 are unchanged.
#[tokio::test]
async fn http2_can_be_turned_off() {
    for tls in [false, true] {
        let t = if tls {
            TestServer::start_tls(|s| s.http2 = false).await
        } else {
            TestServer::start(|s| s.http2 = false).await
        };
        let err = within("connect_http2", client().connect_http2(&url(&t)))
            .await
            .expect_err("no HTTP/2");
        assert!(
            matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::NoHttp2)),
            "tls {tls}: {err:?}"
        );
        let mut ws = within("HTTP/1.1", client().connect(&format!("{}echo", url(&t))))
            .await
            .unwrap();
        ws.send("over HTTP/1.1").await.unwrap();
        let Some(Ok(Message::Text(back))) = within("an echo", ws.recv()).await else {
            panic!("no echo");
        };
        assert_eq!(back.as_str(), "over HTTP/1.1");
    }
}

/// The connection limits hold over HTTP/2 as over HTTP/1.1: a socket past
/// `max_connections` is refused with 503 and `Retry-After`, and the
/// others on the connection go on.
#[tokio::test]
async fn connection_limits_hold_on_streams() {
    let t = TestServer::start(|s| s.max_connections = 2).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut first = h2.open("/echo").await.expect("the first socket");
    let _second = h2.open("/ws").await.expect("the second socket");
    let err = within("a refusal", h2.open("/echo"))
        .await
        .expect_err("past the limit");
    let Error::Handshake(h) = &err else {
        panic!("{err:?}")
    };
    let HandshakeError::Response { error, .. } = &**h else {
        panic!("{err:?}")
    };
    assert_eq!(
        *error,
        ResponseError::Status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
    );
    first.send("still here").await.unwrap();
    let Some(Ok(Message::Text(back))) = within("an echo", first.recv()).await else {
        panic!("no echo");
    };
    assert_eq!(back.as_str(), "still here");
}

/// A client that starts an HTTP/2 preface and stops (on TLS after ALPN
/// chose `h2`, or in plain text) is not held: the server closes it once a
/// head's time (10 s) has passed.
#[tokio::test]
async fn a_preface_that_stops_halfway_is_not_held() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let plain = TestServer::start(|_| {}).await;
    let tls = TestServer::start_tls(|_| {}).await;
    let over_plain = async {
        let mut tcp = tokio::net::TcpStream::connect(plain.addr()).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut rest = Vec::new();
        within("the server to close", tcp.read_to_end(&mut rest))
            .await
            .expect("a clean close");
        rest
    };
    let over_tls = async {
        let mut config = (*duplex::tls::insecure_client_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(tls.addr()).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        stream.write_all(b"P").await.unwrap();
        let mut rest = Vec::new();
        // A TLS peer may close without close_notify: either way it ends.
        let _ = within("the server to close", stream.read_to_end(&mut rest)).await;
        rest
    };
    let (plain_rest, tls_rest) = tokio::join!(over_plain, over_tls);
    // Nothing was answered: the connection was just closed.
    assert!(plain_rest.is_empty(), "{plain_rest:?}");
    assert!(tls_rest.is_empty(), "{tls_rest:?}");
}

/// Many small messages into sockets their server is not reading (their
/// echoes are not read either) leave the connection's other sockets
/// alone. h2 closes a whole connection (`ENHANCE_YOUR_CALM`) once it holds
/// more small frames than its budget allows: 40,000 empty messages, one
/// DATA frame each, are more than it allows (about 34,000), so they must
/// not wait in h2 for their sockets to read them.
#[tokio::test]
async fn small_messages_into_sockets_not_being_read_do_not_end_the_connection() {
    let t = TestServer::start(|_| {}).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    const LARGE: usize = 60 << 10;
    const SMALL: usize = 20_000;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut ws = h2.open("/echo").await.unwrap();
        // Echoes past the client's window for this stream: the server's
        // echo waits to write, and stops reading.
        for _ in 0..3 {
            within("a large send", ws.send(vec![1u8; LARGE]))
                .await
                .unwrap();
        }
        // Then 20,000 empty messages: 6 bytes, one DATA frame each,
        // within the stream's window.
        for _ in 0..SMALL {
            within("a small send", ws.send(Vec::<u8>::new()))
                .await
                .unwrap();
        }
        stalled.push(ws);
    }
    // Another socket on the connection still echoes.
    let mut flowing = h2.open("/echo").await.unwrap();
    for i in 0..50 {
        let text = format!("still here {i}");
        within("a send", flowing.send(text.clone())).await.unwrap();
        let Some(Ok(Message::Text(back))) = within("an echo", flowing.recv()).await else {
            panic!("no echo: the connection ended");
        };
        assert_eq!(back.as_str(), text);
    }
    // And the stalled sockets get every echo, once read.
    for ws in &mut stalled {
        for _ in 0..3 {
            let Some(Ok(Message::Binary(big))) = within("a large echo", ws.recv()).await else {
                panic!("no large echo");
            };
            assert_eq!(big.len(), LARGE);
        }
        for i in 0..SMALL {
            let Some(Ok(Message::Binary(small))) = within("a small echo", ws.recv()).await else {
                panic!("no small echo {i}");
            };
            assert!(small.is_empty());
        }
    }
}

/// Past `http2_max_sockets` on one connection, a WebSocket is reset with
/// `HTTP_1_1_REQUIRED`; a client in `auto` mode then opens it over
/// HTTP/1.1, one in `always` mode says why it cannot.
#[tokio::test]
async fn past_its_sockets_a_connection_sends_websockets_to_http_1_1() {
    use duplex::http2::Http2Mode;
    let t = TestServer::start_tls(|s| s.http2_max_sockets = 3).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(h2.open("/echo").await.unwrap());
    }
    let err = h2.open("/echo").await.unwrap_err();
    assert!(
        matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::Http1Required)),
        "{err}"
    );
    // One closes: there is room again.
    let mut first = open.remove(0);
    first.close(CloseCode::NORMAL, "").await.unwrap();
    drop(first);
    // Its stream ends once the server has seen the close (polled, bounded).
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut again = loop {
        match h2.open("/echo").await {
            Ok(ws) => break ws,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no room again: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll interval
    };
    again.send("here").await.unwrap();
    assert!(matches!(
        within("an echo", again.recv()).await,
        Some(Ok(Message::Text(_)))
    ));

    // No socket at all over HTTP/2: `auto` falls back, `always` explains.
    let t = TestServer::start_tls(|s| s.http2_max_sockets = 0).await;
    let url = format!("wss://localhost:{}/echo", t.addr().port());
    let (mut ws, info) = within(
        "connect (auto)",
        client().http2(Http2Mode::Auto).connect_with_info(&url),
    )
    .await
    .unwrap();
    assert_eq!(info.response.status(), 101, "over HTTP/1.1");
    ws.send("over HTTP/1.1").await.unwrap();
    assert!(matches!(
        within("an echo", ws.recv()).await,
        Some(Ok(Message::Text(_)))
    ));
    let err = within(
        "connect (always)",
        client().http2(Http2Mode::Always).connect(&url),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::Http1Required)),
        "{err}"
    );
}

/// A shutdown closes the connection's sockets with 1001 before its GOAWAY:
/// both sockets get their close, and only then does the connection take
/// no new stream.
#[tokio::test]
async fn a_shutdown_closes_the_sockets_then_goes_away() {
    let t = TestServer::start(|s| s.shutdown_timeout = 5).await;
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut ws = h2.open("/echo").await.unwrap();
        ws.send("hello").await.unwrap();
        let _ = within("the echo", ws.recv()).await;
        sockets.push(ws);
    }
    let TestServer { server, dir, .. } = t;
    let stopping = tokio::spawn(server.shutdown());
    for mut ws in sockets {
        let mut close = None;
        while let Some(msg) = within("the close frame", ws.recv()).await {
            if let Message::Close(frame) = msg.expect("a clean close") {
                close = frame.map(|f| f.code);
            }
        }
        assert_eq!(close, Some(CloseCode::GOING_AWAY));
    }
    within("the shutdown", stopping).await.unwrap();
    assert!(h2.open("/echo").await.is_err(), "a stream after GOAWAY");
    drop(dir);
}

/// A raw h2 client connection to `t` (h2c), once the server's SETTINGS
/// are in: its request handle and the task driving it.
async fn raw_h2(
    t: &TestServer,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = conn.ping_pong().unwrap();
    let driver = tokio::spawn(conn);
    // The server's SETTINGS come before its PONG.
    within("a PING", ping.ping(h2::Ping::opaque()))
        .await
        .unwrap();
    (send, driver)
}

/// An extended CONNECT to `/echo` with this `:protocol`: the response, and
/// the stream.
async fn raw_connect(
    t: &TestServer,
    send: &h2::client::SendRequest<bytes::Bytes>,
    protocol: &'static str,
) -> (
    axum::http::Response<h2::RecvStream>,
    h2::SendStream<bytes::Bytes>,
) {
    let hs = duplex::proto::handshake::client::ClientHandshake::new(Vec::new(), None);
    let uri = format!("http://{}/echo", t.addr());
    let mut request = hs.connect_request(&uri, &Default::default()).unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static(protocol));
    let mut sender = send.clone().ready().await.unwrap();
    let (response, stream) = sender.send_request(request, false).unwrap();
    (within("the answer", response).await.unwrap(), stream)
}

/// An extended CONNECT for another protocol than `websocket` is answered
/// with an error status, and the connection goes on.
#[tokio::test]
async fn an_extended_connect_for_another_protocol_is_refused() {
    let t = TestServer::start(|_| {}).await;
    let (send, _driver) = raw_h2(&t).await;
    assert!(send.is_extended_connect_protocol_enabled());
    let (response, _) = raw_connect(&t, &send, "webtransport").await;
    assert!(response.status().is_client_error(), "{}", response.status());
    let (response, _) = raw_connect(&t, &send, "websocket").await;
    assert_eq!(response.status(), 200);
}

/// A client whose connection vanishes (no GOAWAY, no close frames) with
/// sockets open on it: they end on the server, and everyone else is served
/// meanwhile (h2 as a raw peer, so nothing is closed politely).
#[tokio::test]
async fn a_client_vanishing_with_sockets_open_ends_them_and_nothing_else() {
    use duplex::proto::{Connection, Role};
    let t = TestServer::start(|_| {}).await;
    let (send, driver) = raw_h2(&t).await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (response, stream) = raw_connect(&t, &send, "websocket").await;
        assert_eq!(response.status(), 200);
        let io = duplex::H2Stream::new(stream, response.into_body(), None);
        let conn = Connection::new(Role::Client, Default::default(), None);
        let mut ws = duplex::WebSocket::from_parts(io, conn, duplex::Config::default(), None);
        ws.send("hello").await.unwrap();
        assert!(matches!(
            within("an echo", ws.recv()).await,
            Some(Ok(Message::Text(_)))
        ));
        sockets.push(ws);
    }
    assert_eq!(metric(&t, "duplex_connections").await, 2);
    // The connection is gone at once: its task and its streams dropped.
    driver.abort();
    drop((sockets, send));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while metric(&t, "duplex_connections").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sockets never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll interval
    }
    // Everyone else is served as ever.
    let h2 = within("connect_http2", client().connect_http2(&url(&t)))
        .await
        .unwrap();
    let mut other = h2.open("/echo").await.unwrap();
    other.send("still here").await.unwrap();
    assert!(matches!(
        within("an echo", other.recv()).await,
        Some(Ok(Message::Text(_)))
    ));
}

/// A client that sends GOAWAY with sockets open (Node's own `http2`, a
/// peer other than ours): the sockets opened before it go on echoing and
/// close cleanly (`tests/peers/node_h2_goaway.js` checks each step).
#[tokio::test]
async fn a_client_going_away_with_sockets_open_lets_them_finish() {
    let t = TestServer::start(|_| {}).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/node_h2_goaway.js"
    );
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("http://{}/echo", t.addr()))
        .kill_on_drop(true)
        .output();
    let out = within("node_h2_goaway.js", run)
        .await
        .expect("node runs (Node 20 is on every test machine; `cargo xtask test` checks)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "OK",
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metric(&t, "duplex_http2_websockets_total").await, 2);
}

/// Ordinary requests over HTTP/2 reach the same router: a page larger
/// than the client's window (1 KiB here) arrives whole, a POST's body is
/// read, HEAD has no body, and answers are dated.
#[tokio::test]
async fn pages_and_the_api_are_served_over_http2_as_over_http1() {
    let t = TestServer::start(|_| {}).await;
    let tcp = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = |method: &str, path: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", t.addr()))
            .body(())
            .unwrap()
    };
    let read_all = |mut body: h2::RecvStream| async move {
        let mut all = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        all
    };
    // A page, in many windows.
    let mut sender = send.clone().ready().await.unwrap();
    let (response, _) = sender
        .send_request(request("GET", "/app.js"), true)
        .unwrap();
    let response = within("GET /app.js", response).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("date"));
    let (parts, body) = response.into_parts();
    let page = within("the page", read_all(body)).await;
    let (status, over_http1) = support::http(t.addr(), "GET", "/app.js", &[], None).await;
    assert_eq!(status, 200);
    assert!(page.len() > 16 << 10, "{}", page.len());
    assert_eq!(String::from_utf8(page).unwrap(), over_http1);
    assert_eq!(
        parts.headers["content-length"].to_str().unwrap(),
        over_http1.len().to_string()
    );
    // HEAD: the length, no body.
    let mut sender = send.clone().ready().await.unwrap();
    let (response, _) = sender
        .send_request(request("HEAD", "/app.js"), true)
        .unwrap();
    let response = within("HEAD /app.js", response).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.body().is_end_stream());
    // A POST with a body.
    let mut sender = send.clone().ready().await.unwrap();
    let mut post = request("POST", "/api/publish");
    post.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    let (response, mut body) = sender.send_request(post, false).unwrap();
    let json = serde_json::json!({"channel": "h2", "data": "over HTTP/2"}).to_string();
    body.send_data(json.into(), true).unwrap();
    let response = within("POST /api/publish", response).await.unwrap();
    assert_eq!(response.status(), 200);
    let (status, history) =
        support::http(t.addr(), "GET", "/api/channels/h2/history", &[], None).await;
    assert_eq!(status, 200);
    assert!(history.contains("over HTTP/2"), "{history}");
}
