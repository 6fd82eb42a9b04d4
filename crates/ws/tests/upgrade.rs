//! WebSockets inside an axum application: `duplex::upgrade::upgrade` on one
//! route, ordinary pages on another, one port.
//!
//! Proves that
//! - the duplex client echoes through the axum route (hyper's upgraded
//!   connection), with and without permessage-deflate, and the server side
//!   saw the same compression and the client's 1000;
//! - a plain `GET` to the WebSocket route (no upgrade headers) is refused
//!   with 426 and a one-line plain-text reason, and an upgrade request
//!   missing its key with 400 and a reason;
//! - the HTML page is served on the same port, even while a WebSocket is
//!   open there.

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const PAGE: &str = "<!doctype html><title>duplex</title><h1>Hello from /page</h1>";

type Reports = mpsc::UnboundedSender<EchoReport>;

async fn echo_route(State(reports): State<Reports>, req: Request) -> Response {
    match duplex::upgrade::upgrade(req, &ServerBuilder::new()) {
        Ok((response, upgrading)) => {
            tokio::spawn(async move {
                // An upgrade that hyper cannot complete leaves no report; the
                // test then times out waiting for it, with a clear message.
                if let Ok(ws) = upgrading.await {
                    let _ = reports.send(echo(ws).await);
                }
            });
            response.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// Serves the app on `127.0.0.1:0`; connection reports come out of the
/// returned receiver.
async fn start_app() -> (SocketAddr, mpsc::UnboundedReceiver<EchoReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/echo", get(echo_route))
        .route("/page", get(|| async { Html(PAGE) }))
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// A raw HTTP/1.1 exchange: the status code, the head, and the body.
async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        // Every request here says `Connection: close`: the response ends
        // with the connection.
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let raw = within("an HTTP response", exchange)
        .await
        .expect("HTTP exchange");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {raw:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn duplex_client_echoes_through_an_axum_route() {
    let (addr, mut reports) = start_app().await;
    for compress in [false, true] {
        let client = ClientBuilder::new().proxy(ProxyConfig::None).config(
            duplex::Config::default().with_deflate(compress.then(duplex::DeflateConfig::default)),
        );
        let mut ws = within("connect", client.connect(&format!("ws://{addr}/echo")))
            .await
            .expect("upgrade through axum");
        assert_eq!(ws.is_compressed(), compress);
        echo_conversation(&mut ws).await;
        close_cleanly(&mut ws).await;

        let report = within("the route's report", reports.recv())
            .await
            .expect("the app is running");
        assert_eq!(report.compressed, compress, "{report:?}");
        assert_eq!(report.messages, echo_cases().len() + burst_cases().len());
        assert_eq!((report.close_code(), report.error), (Some(1000), None));
    }
}

#[tokio::test]
async fn a_plain_get_to_the_websocket_route_is_refused_with_a_reason() {
    let (addr, _reports) = start_app().await;
    let (status, head, body) = raw_http(
        addr,
        &format!("GET /echo HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 426, "{head}");
    assert_eq!(header(&head, "upgrade"), Some("websocket"), "{head}");
    assert_one_line_reason(&head, &body);

    // Upgrade headers, but no Sec-WebSocket-Key: a bad request, also said
    // in one line.
    let (status, head, body) = raw_http(
        addr,
        &format!(
            "GET /echo HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade, close\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400, "{head}");
    assert_one_line_reason(&head, &body);
}

#[track_caller]
fn assert_one_line_reason(head: &str, body: &str) {
    assert!(
        header(head, "content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{head}"
    );
    let reason = body.strip_suffix('\n').unwrap_or(body);
    assert!(
        !reason.trim().is_empty() && !reason.contains('\n'),
        "expected a one-line reason, got {body:?}"
    );
}

#[tokio::test]
async fn pages_and_websockets_share_the_port() {
    let (addr, mut reports) = start_app().await;
    let mut ws = within(
        "connect",
        ClientBuilder::new()
            .proxy(ProxyConfig::None)
            .connect(&format!("ws://{addr}/echo")),
    )
    .await
    .expect("upgrade through axum");

    // While the WebSocket is open, the page still comes from the same port.
    let (status, head, body) = raw_http(
        addr,
        &format!("GET /page HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "content-type").is_some_and(|t| t.starts_with("text/html")),
        "{head}"
    );
    assert_eq!(body, PAGE);

    within("send", ws.send("after the page"))
        .await
        .expect("send");
    let echo = next_data(&mut ws, "echo after the page request").await;
    assert_eq!(echo.as_text(), Some("after the page"));
    close_cleanly(&mut ws).await;
    let report = within("the route's report", reports.recv())
        .await
        .expect("the app is running");
    assert_eq!((report.close_code(), report.error), (Some(1000), None));
}
