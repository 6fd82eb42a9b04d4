//! Proxy settings from the environment (`ProxyConfig::FromEnv`, the
//! default), the way curl reads them.
//!
//! Proves that `http_proxy` / `HTTP_PROXY` route `ws://` (credentials in
//! the URL included) but not `wss://`, that `https_proxy` routes `wss://`
//! but not `ws://`, that `no_proxy` / `NO_PROXY` (a listed host, `*`)
//! bypass the proxy while non-matching entries do not, and that
//! `ProxyConfig::None` ignores the environment. "Routed" is checked both
//! ways: the proxy logged the `CONNECT`, and the socket's peer is the proxy.
//!
//! Environment variables are process-global, so this file is its own test
//! binary with a single test that runs the scenarios one after another.

mod common;

use std::future::Future;
use std::net::SocketAddr;

use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, MaybeTlsStream, ServerBuilder, WebSocket};

const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Replaces every proxy variable with `vars`.
fn set_proxy_env(vars: &[(&str, String)]) {
    // SAFETY: `set_var`/`remove_var` are unsound only while another thread
    // may read the environment. This binary has a single test, so libtest
    // runs nothing else in parallel (its main thread just waits for us), and
    // this is called only between scenarios, when no tokio runtime exists:
    // each scenario's runtime is dropped first, which joins its
    // blocking-pool threads (the only other threads we start, e.g. for
    // resolving `localhost`).
    unsafe {
        for name in PROXY_VARS {
            std::env::remove_var(name);
        }
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
    }
}

/// Runs one scenario: a proxy (with `credentials`, if any) is bound, the
/// environment set to `vars` (`{proxy}` in a value stands for the proxy's
/// `host:port`), then `body` runs on a fresh runtime that is gone again
/// before the next scenario touches the environment.
fn scenario<F, Fut>(name: &str, credentials: Option<(&str, &str)>, vars: &[(&str, &str)], body: F)
where
    F: FnOnce(ConnectProxy) -> Fut,
    Fut: Future<Output = ()>,
{
    // Printed so a failure's captured output says which scenario it was.
    eprintln!("scenario: {name}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address").to_string();
    let vars: Vec<(&str, String)> = vars
        .iter()
        .map(|(k, v)| (*k, v.replace("{proxy}", &addr)))
        .collect();
    set_proxy_env(&vars);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let proxy = ConnectProxy::from_std(listener, credentials);
        body(proxy).await;
    });
    drop(runtime);
}

/// Connects, checks whom the TCP connection went to, and echoes.
async fn connect_via(
    client: &ClientBuilder,
    url: &str,
    expected_peer: SocketAddr,
) -> WebSocket<MaybeTlsStream> {
    let mut ws = within("connect", client.connect(url))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(
        ws.get_ref().peer_addr().unwrap(),
        expected_peer,
        "{url}: the TCP peer (the proxy when tunnelled, else the server)"
    );
    within("send", ws.send("through?")).await.expect("send");
    let echo = next_data(&mut ws, "echo").await;
    assert_eq!(echo.as_text(), Some("through?"));
    close_cleanly(&mut ws).await;
    ws
}

fn tunnel_to(target: impl ToString) -> ProxyEvent {
    ProxyEvent {
        target: target.to_string(),
        status: 200,
    }
}

#[test]
fn proxy_settings_from_the_environment() {
    let pki = Pki::new();
    let tls_client = || ClientBuilder::new().tls_config(pki.client_config());
    let tls_server = || pki.server_config(&["localhost"]);

    for var in ["http_proxy", "HTTP_PROXY"] {
        scenario(
            &format!("{var} routes ws://"),
            None,
            &[(var, "http://{proxy}")],
            |proxy| async move {
                let server = EchoServer::start(ServerBuilder::new()).await;
                let url = format!("ws://{}/", server.addr);
                connect_via(&ClientBuilder::new(), &url, proxy.addr).await;
                assert_eq!(proxy.events(), [tunnel_to(server.addr)]);
            },
        );
    }

    scenario(
        "credentials in http_proxy are sent",
        Some(("alice", "s3cret")),
        &[("http_proxy", "http://alice:s3cret@{proxy}")],
        |proxy| async move {
            let server = EchoServer::start(ServerBuilder::new()).await;
            let url = format!("ws://{}/", server.addr);
            connect_via(&ClientBuilder::new(), &url, proxy.addr).await;
            assert_eq!(proxy.events(), [tunnel_to(server.addr)]);
        },
    );

    scenario(
        "no_proxy listing the host bypasses the proxy",
        None,
        &[
            ("http_proxy", "http://{proxy}"),
            ("no_proxy", "example.com, 127.0.0.1"),
        ],
        |proxy| async move {
            let server = EchoServer::start(ServerBuilder::new()).await;
            let url = format!("ws://{}/", server.addr);
            connect_via(&ClientBuilder::new(), &url, server.addr).await;
            assert_eq!(proxy.events(), []);
        },
    );

    scenario(
        "NO_PROXY=* bypasses the proxy for every host",
        None,
        &[("HTTP_PROXY", "http://{proxy}"), ("NO_PROXY", "*")],
        |proxy| async move {
            let server = EchoServer::start(ServerBuilder::new()).await;
            let url = format!("ws://{}/", server.addr);
            connect_via(&ClientBuilder::new(), &url, server.addr).await;
            assert_eq!(proxy.events(), []);
        },
    );

    scenario(
        "no_proxy entries that do not match keep the proxy",
        None,
        &[
            ("http_proxy", "http://{proxy}"),
            ("no_proxy", ".internal, example.com, 127.0.0.10"),
        ],
        |proxy| async move {
            let server = EchoServer::start(ServerBuilder::new()).await;
            let url = format!("ws://{}/", server.addr);
            connect_via(&ClientBuilder::new(), &url, proxy.addr).await;
            assert_eq!(proxy.events(), [tunnel_to(server.addr)]);
        },
    );

    scenario(
        "https_proxy routes wss:// but not ws://",
        None,
        &[("https_proxy", "http://{proxy}")],
        |proxy| async move {
            let plain = EchoServer::start(ServerBuilder::new()).await;
            connect_via(
                &ClientBuilder::new(),
                &format!("ws://{}/", plain.addr),
                plain.addr,
            )
            .await;
            assert_eq!(proxy.events(), [], "ws:// ignores https_proxy");

            let secure = EchoServer::start_tls(ServerBuilder::new(), tls_server()).await;
            let port = secure.addr.port();
            let url = format!("wss://localhost:{port}/");
            connect_via(&tls_client(), &url, proxy.addr).await;
            assert_eq!(proxy.events(), [tunnel_to(format!("localhost:{port}"))]);
        },
    );

    scenario(
        "http_proxy is not used for wss://",
        None,
        &[("http_proxy", "http://{proxy}")],
        |proxy| async move {
            let secure = EchoServer::start_tls(ServerBuilder::new(), tls_server()).await;
            let url = format!("wss://localhost:{}/", secure.addr.port());
            let ws = connect_via(&tls_client(), &url, secure.addr).await;
            assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
            assert_eq!(proxy.events(), []);
        },
    );

    scenario(
        "no_proxy also bypasses https_proxy",
        None,
        &[("https_proxy", "http://{proxy}"), ("no_proxy", "localhost")],
        |proxy| async move {
            let secure = EchoServer::start_tls(ServerBuilder::new(), tls_server()).await;
            let url = format!("wss://localhost:{}/", secure.addr.port());
            connect_via(&tls_client(), &url, secure.addr).await;
            assert_eq!(proxy.events(), []);
        },
    );

    scenario(
        "ProxyConfig::None ignores the environment",
        None,
        &[
            ("http_proxy", "http://{proxy}"),
            ("https_proxy", "http://{proxy}"),
        ],
        |proxy| async move {
            let server = EchoServer::start(ServerBuilder::new()).await;
            let client = ClientBuilder::new().proxy(ProxyConfig::None);
            connect_via(&client, &format!("ws://{}/", server.addr), server.addr).await;
            assert_eq!(proxy.events(), []);
        },
    );

    set_proxy_env(&[]);
}
