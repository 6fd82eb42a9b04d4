//! A raw `/files` client (docs/transfer.md): the relay's JSON messages and
//! binary frames, one by one, every wait bounded.

use std::net::SocketAddr;

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use serde_json::{Value, json};

use super::LIMIT;

pub type Ws = WebSocket<MaybeTlsStream>;

/// Connects to `/files` at `addr` and says `hello`.
pub async fn open(addr: SocketAddr, hello: Value) -> Ws {
    open_with(ClientBuilder::new(), addr, hello).await
}

/// [`open`] with these client settings (headers, ...).
pub async fn open_with(client: ClientBuilder, addr: SocketAddr, hello: Value) -> Ws {
    let mut ws = client.connect(&format!("ws://{addr}/files")).await.unwrap();
    ws.send(Message::text(hello.to_string())).await.unwrap();
    ws
}

/// The next message, bounded; `None` once closed.
pub async fn next(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(LIMIT, ws.recv())
        .await
        .expect("timed out")
        .map(|m| m.unwrap())
}

/// The next JSON message (skipping control frames).
pub async fn json_msg(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Message::Binary(_)) => panic!("expected JSON, got binary"),
            Some(_) => continue,
            None => panic!("closed while waiting for JSON"),
        }
    }
}

/// The close code the relay ends with (after its `error` message).
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match next(ws).await {
            Some(Message::Close(frame)) => return frame.unwrap().code.0,
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    }
}

/// Opens a transfer of `size` bytes at `addr`: the sender's connection and
/// the relay's `created` answer.
pub async fn create(addr: SocketAddr, size: u64) -> (Ws, Value) {
    let mut ws = open(addr, json!({"type": "create", "size": size})).await;
    let created = json_msg(&mut ws).await;
    assert_eq!(created["type"], "created", "{created}");
    (ws, created)
}

/// A binary frame: the 4-byte peer number, then `body`.
pub fn binary(peer: u32, body: &[u8]) -> Message {
    let mut v = peer.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    Message::binary(v)
}
