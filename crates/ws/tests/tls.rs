//! `wss://` end to end, with a CA and server certificates made for the run.
//!
//! Proves that the duplex client
//! - trusting only the test CA (`tls::client_config_with_ca_only`) completes
//!   TLS and the WebSocket handshake to a duplex server behind
//!   `tls::server_config`, by DNS name (`localhost`) and by IP address
//!   (`127.0.0.1`, matched against the certificate's IP SAN), and echoes;
//! - with the default roots (webpki and system, no test CA) refuses the
//!   server: `Error::Tls` naming the certificate problem, and no WebSocket
//!   is ever opened on the server;
//! - refuses a certificate issued by the trusted CA for another name;
//! - with `tls::insecure_client_config` connects to that same server anyway.

mod common;

use std::sync::OnceLock;

use common::*;
use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, Error, MaybeTlsStream, ServerBuilder, TlsErrorKind};

/// One CA per test binary: key generation is cheap, but sharing it also
/// proves that several servers' certificates chain to the same root.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

/// The names the normal server certificate covers.
const NAMES: &[&str] = &["localhost", "127.0.0.1"];

fn client() -> ClientBuilder {
    // Loopback only: a developer's https_proxy must not reroute this.
    ClientBuilder::new().proxy(ProxyConfig::None)
}

#[tokio::test]
async fn custom_ca_by_name_and_by_ip() {
    let mut server = EchoServer::start_tls(ServerBuilder::new(), pki().server_config(NAMES)).await;
    let port = server.addr.port();
    let client = client().tls_config(pki().client_config());
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{port}/echo");
        let mut ws = within("connect", client.connect(&url))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let MaybeTlsStream::Tls(tls) = ws.get_ref() else {
            panic!("{url}: the transport is not TLS");
        };
        // The client offers http/1.1 over ALPN; the server config agrees.
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "{url}: ALPN"
        );
        echo_conversation(&mut ws).await;
        close_cleanly(&mut ws).await;
        let report = server
            .next_report()
            .await
            .unwrap_or_else(|e| panic!("{url}: the server failed: {e}"));
        assert_eq!(report.close_code(), Some(1000), "{url}: {report:?}");
        assert_eq!(report.error, None, "{url}");
    }
}

#[tokio::test]
async fn default_roots_reject_an_unknown_ca() {
    let mut server = EchoServer::start_tls(ServerBuilder::new(), pki().server_config(NAMES)).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let err = within("connect", client().connect(&url))
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    assert_certificate_error(&err, TlsErrorKind::UnknownIssuer, "issuer");
    // The server's TLS handshake failed too: no WebSocket was opened.
    let outcome = server.next_report().await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.starts_with("TLS")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_name_not_in_the_certificate_is_rejected() {
    // Issued by the trusted CA, but for another name than the one dialled.
    let mut server = EchoServer::start_tls(
        ServerBuilder::new(),
        pki().server_config(&["elsewhere.test"]),
    )
    .await;
    let port = server.addr.port();
    let client = client().tls_config(pki().client_config());
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{port}/");
        let err = within("connect", client.connect(&url))
            .await
            .expect_err("a certificate for another name must be refused");
        assert_certificate_error(&err, TlsErrorKind::NameMismatch, "name");
        let outcome = server.next_report().await;
        assert!(outcome.is_err(), "{url}: {outcome:?}");
    }
}

#[tokio::test]
async fn insecure_config_accepts_any_certificate() {
    let mut server = EchoServer::start_tls(
        ServerBuilder::new(),
        pki().server_config(&["elsewhere.test"]),
    )
    .await;
    let url = format!("wss://127.0.0.1:{}/", server.addr.port());
    let mut ws = within(
        "connect",
        client()
            .tls_config(duplex::tls::insecure_client_config())
            .connect(&url),
    )
    .await
    .expect("the insecure configuration skips verification");
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    echo_conversation(&mut ws).await;
    close_cleanly(&mut ws).await;
    let report = server.next_report().await.expect("server side");
    assert_eq!((report.close_code(), report.error), (Some(1000), None));
}

#[tokio::test]
async fn wss_to_a_plain_server_is_not_tls() {
    let server = EchoServer::start(ServerBuilder::new()).await;
    let url = format!("wss://127.0.0.1:{}/", server.addr.port());
    let err = within("connect", client().connect(&url))
        .await
        .expect_err("a plain server does not speak TLS");
    let Error::Tls(e) = &err else {
        panic!("expected Error::Tls, got {err:?}");
    };
    assert_eq!(e.kind(), TlsErrorKind::NotTls, "{e}");
}

/// The error is a TLS error of `kind` whose message says the certificate
/// was refused and mentions `detail` (how rustls words the reason:
/// "UnknownIssuer", "NotValidForName").
#[track_caller]
fn assert_certificate_error(err: &Error, kind: TlsErrorKind, detail: &str) {
    let Error::Tls(e) = err else {
        panic!("expected Error::Tls, got {err:?}");
    };
    assert_eq!(e.kind(), kind, "{e}");
    let msg = e.to_string();
    let lower = msg.to_lowercase();
    assert!(lower.contains("certificate"), "{msg}");
    assert!(lower.contains(detail), "expected {detail:?} in {msg:?}");
}
