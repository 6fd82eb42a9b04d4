//! A bridge between WebSockets over HTTP/1.1 and over HTTP/2 (RFC 8441),
//! carrying the same bytes: the Autobahn suite (which speaks HTTP/1.1 only)
//! runs through it against a server or client that speaks HTTP/2 (run by
//! `cargo xtask test`).
//!
//! ```text
//! # kosoku's fuzzingclient -> ws://127.0.0.1:9002 -> HTTP/2 -> duplex serve on 9001
//! cargo run --release -p duplex --example h2-bridge -- to-h2 127.0.0.1:9002 127.0.0.1:9001
//! # a client over HTTP/2 -> 127.0.0.1:9002 -> HTTP/1.1 -> kosoku's fuzzingserver on 9001
//! cargo run --release -p duplex --example h2-bridge -- to-h1 127.0.0.1:9002 127.0.0.1:9001
//! ```
//!
//! Each side's handshake is answered from the other's: the subprotocol and
//! extension offers go through unchanged and the answers come back, so the
//! two ends negotiate with each other; the bridge computes only what its
//! form needs (the accept value, the 200 or 101). Then bytes are copied
//! both ways, ends of stream included (END_STREAM for a TCP FIN and back),
//! so closing behaviour reaches the suite as the far end produced it.
//! Loopback addresses only.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use duplex::proto::handshake::head::{read_response, write_request, write_response};
use duplex::proto::handshake::{HeadLimits, accept_key};
use http::header::{self, HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The headers a WebSocket handshake negotiates with, carried across.
const NEGOTIATED: [header::HeaderName; 3] = [
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, listen, target] = &args[..] else {
        bail!("usage: h2-bridge to-h2|to-h1 LISTEN_ADDR TARGET_ADDR");
    };
    let listen: SocketAddr = listen.parse().context("LISTEN_ADDR")?;
    let target: SocketAddr = target.parse().context("TARGET_ADDR")?;
    if !listen.ip().is_loopback() || !target.ip().is_loopback() {
        bail!("loopback addresses only");
    }
    let listener = TcpListener::bind(listen).await?;
    eprintln!("h2-bridge {mode}: {listen} -> {target}");
    match mode.as_str() {
        "to-h2" => to_h2(listener, target).await,
        "to-h1" => to_h1(listener, target).await,
        other => bail!("unknown mode {other:?}: to-h2 or to-h1"),
    }
}

/// The negotiation headers of `from`, for the other form's message.
fn negotiated(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in NEGOTIATED {
        for value in from.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP/1.1 in, HTTP/2 out: for a server under test.

/// One HTTP/2 connection to `target` for every bridged socket.
async fn to_h2(listener: TcpListener, target: SocketAddr) -> Result<()> {
    let tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(duplex::http2::STREAM_WINDOW)
        .initial_connection_window_size(duplex::http2::CONNECTION_WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("h2-bridge: the HTTP/2 connection ended: {e}");
            std::process::exit(1);
        }
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let send = send.clone();
        tokio::spawn(async move {
            if let Err(e) = bridge_to_h2(tcp, send, target).await {
                eprintln!("h2-bridge: {e:#}");
            }
        });
    }
}

async fn bridge_to_h2(
    tcp: TcpStream,
    send: h2::client::SendRequest<Bytes>,
    target: SocketAddr,
) -> Result<()> {
    let incoming = duplex::ServerBuilder::new()
        .read_request(tcp)
        .await
        .map_err(duplex::Error::from)?;
    let (request, mut tcp) = incoming.into_parts();
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .context("no Sec-WebSocket-Key")?
        .clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let mut connect = http::Request::connect(format!("http://{target}{path}")).body(())?;
    *connect.headers_mut() = negotiated(request.headers());
    connect
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let mut send = send.ready().await?;
    let (response, mut up) = send.send_request(connect, false)?;
    let response = response.await?;
    let (parts, down) = response.into_parts();
    if !parts.status.is_success() {
        let answer = format!(
            "HTTP/1.1 {} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            parts.status.as_u16()
        );
        tcp.write_all(answer.as_bytes()).await?;
        return Ok(());
    }
    let mut switching = http::Response::builder()
        .status(101)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()))
        .body(())?;
    switching.headers_mut().extend(negotiated(&parts.headers));
    switching
        .headers_mut()
        .remove(header::SEC_WEBSOCKET_VERSION);
    let mut head = Vec::new();
    write_response(&switching, &mut head);
    tcp.write_all(&head).await?;
    let (read, write) = tokio::io::split(tcp);
    let upward = async {
        let r = tcp_to_stream(read, &mut up).await;
        // The client's FIN is the stream's end.
        let _ = up.send_data(Bytes::new(), true);
        r
    };
    let downward = stream_to_tcp(down, write);
    // A reset (an error either way) drops both halves: the TCP connection
    // closes at once, as the stream did.
    tokio::try_join!(upward, downward).map(|_| ())
}

/// Copies what `read` gives to an HTTP/2 stream, within its send window.
async fn tcp_to_stream<R: AsyncRead + Unpin>(
    mut read: R,
    up: &mut h2::SendStream<Bytes>,
) -> Result<()> {
    let mut buf = BytesMut::with_capacity(16 << 10);
    loop {
        buf.clear();
        buf.reserve(16 << 10);
        if read.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut data = buf.split().freeze();
        while !data.is_empty() {
            up.reserve_capacity(data.len());
            let granted = std::future::poll_fn(|cx| up.poll_capacity(cx))
                .await
                .context("the stream closed")??;
            let chunk = data.split_to(granted.min(data.len()));
            up.send_data(chunk, false)?;
        }
    }
}

/// Copies an HTTP/2 stream's DATA to `write`, giving the window back as it
/// goes; its end is a FIN.
async fn stream_to_tcp<W: AsyncWrite + Unpin>(
    mut down: h2::RecvStream,
    mut write: W,
) -> Result<()> {
    while let Some(data) = down.data().await {
        let data = match data {
            Ok(data) => data,
            // A reset stream: end the TCP connection abruptly too.
            Err(e) => bail!("the stream was reset: {e}"),
        };
        write.write_all(&data).await?;
        let _ = down.flow_control().release_capacity(data.len());
    }
    write.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// HTTP/2 in, HTTP/1.1 out: for a client under test.

async fn to_h1(listener: TcpListener, target: SocketAddr) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = serve_h2(tcp, target).await {
                eprintln!("h2-bridge: {e:#}");
            }
        });
    }
}

/// An HTTP/2 connection from the client under test: each extended CONNECT
/// becomes an HTTP/1.1 upgrade to `target`.
async fn serve_h2(tcp: TcpStream, target: SocketAddr) -> Result<()> {
    let mut connection = h2::server::Builder::new()
        .enable_connect_protocol()
        .initial_window_size(duplex::http2::STREAM_WINDOW)
        .initial_connection_window_size(duplex::http2::CONNECTION_WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await?;
    while let Some(request) = connection.accept().await {
        let (request, respond) = request?;
        tokio::spawn(async move {
            if let Err(e) = bridge_to_h1(request, respond, target).await {
                eprintln!("h2-bridge: {e:#}");
            }
        });
    }
    Ok(())
}

async fn bridge_to_h1(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    target: SocketAddr,
) -> Result<()> {
    let (parts, down) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut upgrade = http::Request::get(path)
        .header(header::HOST, target.to_string())
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_KEY, key)
        .body(())?;
    upgrade.headers_mut().extend(negotiated(&parts.headers));
    let mut tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let mut head = Vec::new();
    write_request(&upgrade, &mut head);
    tcp.write_all(&head).await?;
    // Read the 101 (and keep what came after it: the first frames).
    let mut buf = BytesMut::with_capacity(4096);
    let (response, used) = loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            bail!("the server closed before answering the upgrade");
        }
        if let Some(done) = read_response(&buf, &HeadLimits::default())? {
            break done;
        }
    };
    let rest = buf.split_off(used).freeze();
    if response.status() != 101
        || response.headers().get(header::SEC_WEBSOCKET_ACCEPT)
            != Some(&HeaderValue::from_str(&accept_key(key.as_bytes()))?)
    {
        let refused = http::Response::builder().status(502).body(())?;
        respond.send_response(refused, true)?;
        return Ok(());
    }
    let mut ok = http::Response::builder().status(200).body(())?;
    *ok.headers_mut() = negotiated(response.headers());
    ok.headers_mut().remove(header::SEC_WEBSOCKET_VERSION);
    let mut up = respond.send_response(ok, false)?;
    let (read, mut write) = tcp.into_split();
    let upward = async {
        // What the server sent right behind its 101 goes first.
        let r = async {
            let mut first = rest;
            while !first.is_empty() {
                up.reserve_capacity(first.len());
                let granted = std::future::poll_fn(|cx| up.poll_capacity(cx))
                    .await
                    .context("the stream closed")??;
                up.send_data(first.split_to(granted.min(first.len())), false)?;
            }
            tcp_to_stream(read, &mut up).await
        }
        .await;
        let _ = up.send_data(Bytes::new(), true);
        r
    };
    let downward = async { stream_to_tcp(down, &mut write).await };
    let (a, b) = tokio::join!(upward, downward);
    a.and(b)
}
