//! A raw WebSocket peer for tests: it speaks bytes directly, so it can break
//! every rule a real library would not let it break.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use duplex::proto::frame::{FrameHeader, OpCode};
use duplex::proto::mask::apply_mask;
use duplex::{Message, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

/// What the echo server saw: each connection's final error, if any.
pub type ServerEvents = mpsc::UnboundedReceiver<Result<(), String>>;

/// Starts an echo server with `builder`'s settings on a free loopback port.
pub async fn echo_server(builder: ServerBuilder) -> (SocketAddr, ServerEvents) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let builder = builder.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = async {
                    let mut ws = builder.accept(tcp).await.map_err(|e| e.to_string())?;
                    let mut last = Ok(());
                    while let Some(msg) = ws.recv().await {
                        match msg {
                            Ok(m) if m.is_data() => ws.feed(m).await.map_err(|e| e.to_string())?,
                            Ok(_) => {}
                            Err(e) => last = Err(e.to_string()),
                        }
                    }
                    last
                }
                .await;
                let _ = tx.send(outcome);
            });
        }
    });
    (addr, rx)
}

/// A free loopback port, and a future that accepts one WebSocket on it
/// with `builder`'s settings (to spawn as the server).
pub async fn one_connection(
    builder: ServerBuilder,
) -> (
    SocketAddr,
    impl Future<Output = duplex::WebSocket<TcpStream>> + Send + 'static,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = async move {
        let (tcp, _) = listener.accept().await.unwrap();
        builder.accept(tcp).await.unwrap()
    };
    (addr, accept)
}

/// The upgrade request a browser would send, with extra header lines.
pub fn upgrade_request(extra: &str) -> String {
    upgrade_request_to("/echo", extra)
}

/// The same, to `path`.
pub fn upgrade_request_to(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Connects and completes a handshake by hand; returns the stream and the
/// response head.
pub async fn raw_client(addr: SocketAddr, extra_headers: &str) -> (TcpStream, String) {
    raw_client_to(addr, "/echo", extra_headers).await
}

/// The same, to `path`.
pub async fn raw_client_to(
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request_to(path, extra_headers).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tcp, head)
}

/// Reads an HTTP head byte by byte (so nothing after it is consumed).
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut byte))
            .await
            .expect("head in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Encodes one frame, masked with `mask` if given.
pub fn frame(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    header.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A frame as a client must send it (masked).
pub fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, false, payload, Some([0x12, 0x34, 0x56, 0x78]))
}

/// Reads frames until a close frame; returns its code (None: no code, or
/// the connection ended without one) and the data frames seen before it.
pub async fn read_until_close(
    tcp: &mut (impl tokio::io::AsyncRead + Unpin),
) -> (Option<u16>, Vec<Message>) {
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        while let Ok(Some((h, used))) = FrameHeader::parse(&buf) {
            let len = h.payload_len as usize;
            if buf.len() < used + len {
                break;
            }
            let mut payload = buf[used..used + len].to_vec();
            if let Some(key) = h.mask {
                apply_mask(&mut payload, key, 0);
            }
            buf.drain(..used + len);
            match h.opcode {
                OpCode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (code, seen);
                }
                OpCode::Ping => seen.push(Message::Ping(payload.into())),
                OpCode::Pong => seen.push(Message::Pong(payload.into())),
                OpCode::Text => seen.push(Message::text(String::from_utf8(payload).unwrap())),
                _ => seen.push(Message::binary(payload)),
            }
        }
        match tokio::time::timeout(LIMIT, tcp.read(&mut chunk))
            .await
            .expect("a close frame in time")
        {
            Ok(0) | Err(_) => return (None, seen),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the peer closes the TCP connection (EOF or reset).
pub async fn wait_for_eof(tcp: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(LIMIT, tcp.read(&mut chunk))
            .await
            .expect("EOF in time")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Sends `path` one binary message of `total` bytes in fragments of `fragment`,
/// never its last one, and holds the connection open; returns the close
/// code the server ends it with. A crowd of these tests memory budgets.
pub async fn hold_an_unfinished_message(
    addr: SocketAddr,
    path: &str,
    total: usize,
    fragment: usize,
) -> Option<u16> {
    let (tcp, _) = raw_client_to(addr, path, "").await;
    let (mut reader, mut writer) = tcp.into_split();
    let writing = tokio::spawn(async move {
        let payload = vec![0x5a; fragment];
        for i in 0..total / fragment {
            let op = if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            // Fails once the server closes the connection.
            if writer
                .write_all(&client_frame(op, false, &payload))
                .await
                .is_err()
            {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let (code, _) = read_until_close(&mut reader).await;
    writing.abort();
    code
}

/// Sends `path` one whole binary message of `total` bytes in fragments of
/// `fragment`, then never reads (see [`send_then_never_read`]).
pub async fn send_a_message_and_never_read(
    addr: SocketAddr,
    path: &str,
    total: usize,
    fragment: usize,
) -> tokio::task::JoinHandle<()> {
    let payload = vec![0x5a; fragment];
    let fragments = total / fragment;
    let frames = (0..fragments).map(|i| {
        let op = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        client_frame(op, i + 1 == fragments, &payload)
    });
    send_then_never_read(addr, path, frames).await
}

/// Upgrades on `path`, sends `frames`, then never reads: its receive
/// buffer is small, so what the server sends back backs up in the server
/// rather than in the kernel. Returns once the frames are written (or the
/// server gave up on them); the connection stays open, unread, until the
/// returned task is aborted.
pub async fn send_then_never_read(
    addr: SocketAddr,
    path: &str,
    frames: impl IntoIterator<Item = Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(upgrade_request_to(path, "").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for frame in frames {
        let written = tokio::time::timeout(LIMIT, tcp.write_all(&frame))
            .await
            .expect("the server reads the message or gives up on it in time");
        if written.is_err() {
            break;
        }
    }
    tokio::spawn(async move {
        std::future::pending::<()>().await;
        drop(tcp);
    })
}

/// Sends `text` and waits (bounded) for its echo: a client that behaves,
/// checked during a storm.
pub async fn echo_once<S>(ws: &mut duplex::WebSocket<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(text.to_owned()).await.unwrap();
    let echo = tokio::time::timeout(LIMIT, ws.recv())
        .await
        .expect("a client that behaves is served during the storm")
        .expect("open")
        .expect("an echo");
    assert_eq!(echo.as_text(), Some(text));
}
