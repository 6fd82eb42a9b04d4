//! `duplex connect -v`: the connection and handshake shown the way
//! `curl -v` shows them, on stderr: `*` for what happens, `>` for the
//! request sent, `<` for the response received.

use duplex::proxy::ProxyConfig;
use duplex::url::WsUrl;
use duplex::{HandshakeInfo, MaybeTlsStream, WebSocket};

use crate::conversation::output::Console;

/// Before dialling: where to, and through which proxy.
pub fn connecting(console: &Console, url: &str, proxy: &ProxyConfig) {
    let Ok(target) = WsUrl::parse(url) else {
        return;
    };
    match proxy.resolve(&target.host, target.tls) {
        Ok(Some(p)) => {
            let (host, port) = p.address();
            console.diag(&format!(
                "* Connecting to {} port {} through the {} proxy {host}:{port}",
                target.host,
                target.port,
                p.scheme()
            ));
        }
        _ => console.diag(&format!(
            "* Connecting to {} port {}",
            target.host, target.port
        )),
    }
}

/// After the handshake: the peer, TLS, the request and the response.
pub fn opened(
    console: &Console,
    ws: &WebSocket<MaybeTlsStream>,
    info: &HandshakeInfo,
    insecure: bool,
) {
    let stream = ws.get_ref();
    if let Some(peer) = stream.peer_addr() {
        console.diag(&format!("* Connected to {peer}"));
    }
    if let MaybeTlsStream::Tls(tls) = stream {
        console.diag(&tls_line(tls.get_ref().1, insecure));
    }
    let http2 = info.request.version() == http::Version::HTTP_2;
    request(console, &info.request, http2);
    response(console, &info.response, http2);
    let mut summary = vec![if ws.is_compressed() {
        "permessage-deflate on".to_owned()
    } else {
        "no compression".to_owned()
    }];
    if let Some(p) = ws.protocol() {
        summary.push(format!("subprotocol {p}"));
    }
    console.diag(&format!("* WebSocket open: {}", summary.join(", ")));
}

/// `* TLS TLSv1_3 TLS13_AES_256_GCM_SHA384, ALPN h2, certificate verified`
fn tls_line(conn: &tokio_rustls::rustls::ClientConnection, insecure: bool) -> String {
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|a| format!(", ALPN {}", String::from_utf8_lossy(a)))
        .unwrap_or_default();
    let trust = if insecure {
        "certificate NOT verified (--insecure)"
    } else {
        "certificate verified"
    };
    format!("* TLS {version} {suite}{alpn}, {trust}")
}

/// The request as curl shows it (`> ` lines).
fn request(console: &Console, req: &http::Request<()>, http2: bool) {
    if http2 {
        // HTTP/2 has no request line: its pseudo-headers, as curl shows them.
        console.diag("* WebSocket over HTTP/2 (RFC 8441): an extended CONNECT on a new stream");
        let uri = req.uri();
        console.diag(&format!("> :method: {}", req.method()));
        console.diag("> :protocol: websocket");
        console.diag(&format!(
            "> :scheme: {}",
            uri.scheme_str().unwrap_or("https")
        ));
        console.diag(&format!(
            "> :authority: {}",
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        ));
        console.diag(&format!(
            "> :path: {}",
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        ));
    } else {
        console.diag(&format!("> {} {} HTTP/1.1", req.method(), req.uri()));
    }
    headers(console, '>', req.headers());
}

/// The response as curl shows it (`< ` lines).
fn response(console: &Console, resp: &http::Response<()>, http2: bool) {
    if http2 {
        console.diag(&format!("< :status: {}", resp.status().as_u16()));
    } else {
        console.diag(&format!("< HTTP/1.1 {}", resp.status()));
    }
    headers(console, '<', resp.headers());
}

/// Headers, one per line, then the empty line that ends them.
fn headers(console: &Console, side: char, headers: &http::HeaderMap) {
    for (name, value) in headers {
        console.diag(&format!(
            "{side} {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    console.diag(&side.to_string());
}
