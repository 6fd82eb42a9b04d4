//! Connecting through an HTTP `CONNECT` proxy given explicitly
//! (`ProxyConfig::Url`), against a small proxy run inside the test.
//!
//! Proves that
//! - `ws://` through a proxy with credentials works end to end, and the
//!   proxy saw exactly one `CONNECT` to the server's `host:port` carrying
//!   the right Basic `Proxy-Authorization`;
//! - `wss://` through the proxy works: TLS runs inside the tunnel, verified
//!   against the URL's host name (which the proxy receives unresolved);
//! - wrong or missing credentials end in `Error::Proxy` mentioning 407,
//!   and nothing reaches the server;
//! - an unreachable proxy is reported as `Error::Proxy`, not as the server
//!   being unreachable.
//!
//! The environment variables (`http_proxy`, `no_proxy`, ...) are tested in
//! `proxy_env.rs`, alone in their own process.

mod common;

use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, Error, MaybeTlsStream, ServerBuilder};

const CREDENTIALS: (&str, &str) = ("alice", "s3cret");

#[tokio::test]
async fn ws_through_a_proxy_with_credentials() {
    let mut server = EchoServer::start(ServerBuilder::new()).await;
    let proxy = ConnectProxy::start(Some(CREDENTIALS)).await;
    let client = ClientBuilder::new().proxy(ProxyConfig::Url(proxy.url(Some(CREDENTIALS))));

    let mut ws = within(
        "connect",
        client.connect(&format!("ws://{}/echo", server.addr)),
    )
    .await
    .expect("connect through the proxy");
    // The socket's peer is the proxy, not the server: we really tunnelled.
    assert_eq!(ws.get_ref().peer_addr().unwrap(), proxy.addr);
    echo_conversation(&mut ws).await;
    close_cleanly(&mut ws).await;

    assert_eq!(
        proxy.events(),
        [ProxyEvent {
            target: server.addr.to_string(),
            status: 200
        }]
    );
    let report = server.next_report().await.expect("server side");
    assert_eq!((report.close_code(), report.error), (Some(1000), None));
}

#[tokio::test]
async fn wss_through_a_proxy() {
    let pki = Pki::new();
    let mut server =
        EchoServer::start_tls(ServerBuilder::new(), pki.server_config(&["localhost"])).await;
    let proxy = ConnectProxy::start(Some(CREDENTIALS)).await;
    let client = ClientBuilder::new()
        .proxy(ProxyConfig::Url(proxy.url(Some(CREDENTIALS))))
        .tls_config(pki.client_config());

    let port = server.addr.port();
    let mut ws = within(
        "connect",
        client.connect(&format!("wss://localhost:{port}/")),
    )
    .await
    .expect("wss through the proxy");
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    assert_eq!(ws.get_ref().peer_addr().unwrap(), proxy.addr);
    echo_conversation(&mut ws).await;
    close_cleanly(&mut ws).await;

    // The proxy is asked for the name, so it can resolve it (and TLS can
    // check the certificate against it).
    assert_eq!(
        proxy.events(),
        [ProxyEvent {
            target: format!("localhost:{port}"),
            status: 200
        }]
    );
    let report = server.next_report().await.expect("server side");
    assert_eq!((report.close_code(), report.error), (Some(1000), None));
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_407() {
    let mut server = EchoServer::start(ServerBuilder::new()).await;
    let proxy = ConnectProxy::start(Some(CREDENTIALS)).await;
    let url = format!("ws://{}/", server.addr);
    let attempts = [
        ("wrong password", proxy.url(Some(("alice", "wrong")))),
        ("no credentials", proxy.url(None)),
    ];
    for (what, proxy_url) in &attempts {
        let err = within(
            "connect",
            ClientBuilder::new()
                .proxy(ProxyConfig::Url(proxy_url.clone()))
                .connect(&url),
        )
        .await
        .expect_err(what);
        let Error::Proxy(e) = &err else {
            panic!("{what}: expected Error::Proxy, got {err:?}");
        };
        assert_eq!(e.kind(), duplex::ProxyErrorKind::Credentials, "{what}: {e}");
        assert!(!e.is_transient(), "{what}: retrying will not help");
        assert!(e.to_string().contains("407"), "{what}: {e}");
    }
    let refused = ProxyEvent {
        target: server.addr.to_string(),
        status: 407,
    };
    assert_eq!(proxy.events(), [refused.clone(), refused]);
    // No tunnel was opened, so nothing can have reached the server.
    server.assert_no_report();
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_proxy_error() {
    let server = EchoServer::start(ServerBuilder::new()).await;
    // A port that was just free and is now closed: connecting is refused.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = within(
        "connect",
        ClientBuilder::new()
            .proxy(ProxyConfig::Url(format!("http://{closed}")))
            .connect(&format!("ws://{}/", server.addr)),
    )
    .await
    .expect_err("the proxy is not there");
    let Error::Proxy(e) = &err else {
        panic!("expected Error::Proxy, got {err:?}");
    };
    assert_eq!(e.kind(), duplex::ProxyErrorKind::Unreachable, "{e}");
    assert!(e.is_transient());
    assert!(
        e.to_string().contains(&closed.to_string()),
        "names the proxy: {e}"
    );
}
