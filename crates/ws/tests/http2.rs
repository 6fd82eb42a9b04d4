//! WebSockets over HTTP/2 (RFC 8441): the library's server half inside
//! hyper ([`duplex::upgrade::upgrade`] on an extended CONNECT) and its
//! client ([`duplex::ClientBuilder::connect_http2`]), against each other,
//! against raw h2 requests, and against Node's own `http2` module.
//!
//! Proves that
//! - many WebSockets share one HTTP/2 connection (one TCP connection seen
//!   by the server), each echoing text, binary, 1 MiB and bursts, with and
//!   without permessage-deflate, each closed with 1000 on both sides;
//! - the same over TLS, where ALPN chooses `h2`;
//! - a server that did not enable the extended CONNECT is told apart
//!   before anything is sent, and so is a TLS server that does not choose
//!   `h2`; a `:protocol` other than `websocket` is refused with 400 and a
//!   reason;
//! - Node's `http2` client (with `ws` framing) echoes through the server.

mod common;

use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, Error, HandshakeError};

fn client(compress: bool) -> ClientBuilder {
    // Loopback only: a developer's proxy variables must not reroute this.
    ClientBuilder::new()
        .proxy(ProxyConfig::None)
        .compression(compress)
}

/// Three sockets on one connection, echoing at the same time.
async fn three_sockets_on_one_connection(
    url: &str,
    client: ClientBuilder,
    server: &mut EchoServer,
    compress: bool,
) {
    let h2 = within("the HTTP/2 connection", client.connect_http2(url))
        .await
        .unwrap_or_else(|e| panic!("connect_http2 {url}: {e}"));
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let ws = within("a WebSocket on a stream", h2.open("/echo"))
            .await
            .expect("open");
        assert_eq!(ws.is_compressed(), compress);
        sockets.push(ws);
    }
    let conversations = sockets.into_iter().map(|mut ws| async move {
        echo_conversation(&mut ws).await;
        close_cleanly(&mut ws).await;
    });
    futures_util::future::join_all(conversations).await;
    for _ in 0..3 {
        let report = server.next_report().await.expect("a WebSocket");
        assert_eq!(report.compressed, compress, "{report:?}");
        assert_eq!(report.close_code(), Some(1000), "{report:?}");
        assert_eq!(report.error, None, "{report:?}");
        assert!(report.messages >= echo_cases().len(), "{report:?}");
    }
    assert_eq!(server.connections(), 1, "one TCP connection for all three");
}

#[tokio::test]
async fn many_sockets_share_one_h2c_connection() {
    for compress in [false, true] {
        let mut server = EchoServer::start_http2(server_builder(compress), None, true).await;
        let url = format!("ws://{}/", server.addr);
        three_sockets_on_one_connection(&url, client(compress), &mut server, compress).await;
    }
}

#[tokio::test]
async fn over_tls_alpn_chooses_h2_and_sockets_share_it() {
    let pki = Pki::new();
    let tls = pki.server_config(&["localhost"]);
    let mut server = EchoServer::start_http2(server_builder(true), Some(tls), true).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let client = client(true).tls_config(pki.client_config());
    three_sockets_on_one_connection(&url, client, &mut server, true).await;
}

#[tokio::test]
async fn a_server_without_the_extended_connect_is_told_apart() {
    let mut server = EchoServer::start_http2(server_builder(false), None, false).await;
    let url = format!("ws://{}/", server.addr);
    let err = within("connect_http2", client(false).connect_http2(&url))
        .await
        .expect_err("no extended CONNECT");
    assert!(
        matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::NoExtendedConnect)),
        "{err:?}"
    );
    assert!(err.to_string().contains("RFC 8441"), "{err}");
    server.assert_no_report();
}

#[tokio::test]
async fn a_plain_tls_server_is_not_http2() {
    let pki = Pki::new();
    // An HTTP/1.1-only TLS server: ALPN chooses nothing.
    let server =
        EchoServer::start_tls(server_builder(false), pki.server_config(&["localhost"])).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let err = within(
        "connect_http2",
        client(false)
            .tls_config(pki.client_config())
            .connect_http2(&url),
    )
    .await
    .expect_err("not HTTP/2");
    assert!(
        matches!(&err, Error::Handshake(h) if matches!(**h, HandshakeError::NoHttp2)),
        "{err:?}"
    );
}

/// A raw h2 request on a fresh prior-knowledge connection.
async fn raw_connect(
    addr: std::net::SocketAddr,
    protocol: Option<&'static str>,
) -> http::Response<h2::RecvStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let mut request = http::Request::connect(format!("http://{addr}/echo"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    if let Some(p) = protocol {
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(p));
    }
    let (response, _stream) = send.send_request(request, false).unwrap();
    within("a response", response).await.unwrap()
}

#[tokio::test]
async fn a_connect_for_another_protocol_is_refused_with_a_reason() {
    let mut server = EchoServer::start_http2(server_builder(false), None, true).await;
    let mut response = raw_connect(server.addr, Some("chat")).await;
    assert_eq!(response.status(), 400);
    let body = within("the reason", response.body_mut().data())
        .await
        .expect("a body")
        .unwrap();
    let reason = String::from_utf8_lossy(&body);
    assert!(reason.contains(":protocol websocket"), "{reason}");
    // The one the server answers: an accepted extended CONNECT.
    let response = raw_connect(server.addr, Some("websocket")).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    drop(response);
    let report = server.next_report().await.expect("a WebSocket");
    assert_ne!(report.close_code(), Some(1000), "{report:?}");
}

#[tokio::test]
async fn node_http2_client_echoes_through_the_server() {
    for tls in [false, true] {
        let pki = Pki::new();
        let mut server = EchoServer::start_http2(
            server_builder(false),
            tls.then(|| pki.server_config(&["localhost"])),
            true,
        )
        .await;
        let url = if tls {
            format!("wss://localhost:{}/echo", server.addr.port())
        } else {
            format!("ws://{}/echo", server.addr)
        };
        let Some(mut peer) = Peer::Node.echo_client_with(&url, false, &["--http2"]) else {
            return;
        };
        for (i, msg) in echo_cases().iter().enumerate() {
            peer.write_line(&to_line(msg).to_string()).await;
            let echo = from_line(&peer.expect_line().await);
            assert_same_message(
                &echo,
                msg,
                &format!("Node over HTTP/2 (tls: {tls}), case {i}"),
            );
        }
        peer.close_stdin();
        let closed = peer.expect_line().await;
        assert!(
            closed.starts_with("CLOSED 1000"),
            "{closed}; stderr:\n{}",
            peer.stderr()
        );
        peer.wait_success().await;
        let report = server.next_report().await.expect("a WebSocket");
        assert_eq!(report.close_code(), Some(1000), "{report:?}");
        assert_eq!(report.messages, echo_cases().len(), "{report:?}");
    }
}
