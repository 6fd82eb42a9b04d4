//! One connection to `/files`: a sender that opens (or takes back) a
//! transfer, or a receiver that joins one. Data goes sender → receiver
//! within the receiver's credit window; small replies go back the other way.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use duplex::{CloseCode, CloseFrame, Message, WebSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rooms::{Refusal, Rooms, release};

/// Largest message a receiver may send (acknowledgements, requests).
const MAX_RECEIVER_MESSAGE: usize = 64 << 10;
/// How long a new connection has to say what it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection until it closes or the server shuts down.
pub async fn run<S>(
    mut ws: WebSocket<S>,
    rooms: Arc<Rooms>,
    ip: Option<IpAddr>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(t.as_str()).ok(),
        Ok(Some(Ok(_))) => None,
        _ => return,
    };
    let Some(hello) = hello else {
        let refusal = Refusal::new(4400, "expected a JSON create, reattach or join message");
        return refuse(&mut ws, &refusal).await;
    };
    let nameplate = hello["nameplate"].as_u64().map(|n| n as u32);
    match (hello["type"].as_str(), nameplate) {
        (Some("create"), _) => {
            let (tx, rx) = mpsc::channel(256);
            let size = hello["size"].as_u64().unwrap_or(0);
            let again = match (nameplate, hello["token"].as_str()) {
                (Some(n), Some(token)) => Some((n, token.to_owned())),
                _ => None,
            };
            match rooms.create(size, tx, again) {
                Ok(created) => {
                    let reply = json!({"type": "created", "nameplate": created.nameplate,
                        "token": created.token, "window": rooms.limits.window,
                        "max_frame": rooms.limits.max_frame});
                    sender(ws, reply, created.nameplate, rx, rooms, shutdown).await;
                }
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        (Some("reattach"), Some(nameplate)) => {
            let (tx, rx) = mpsc::channel(256);
            let token = hello["token"].as_str().unwrap_or("");
            match rooms.reattach(nameplate, token, tx) {
                Ok(()) => {
                    let reply = json!({"type": "created", "nameplate": nameplate,
                        "token": token, "window": rooms.limits.window,
                        "max_frame": rooms.limits.max_frame});
                    sender(ws, reply, nameplate, rx, rooms, shutdown).await;
                }
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        (Some("join"), Some(nameplate)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let in_flight = Arc::new(AtomicU64::new(0));
            match rooms.join(nameplate, ip, tx, in_flight.clone()) {
                Ok((peer, to_sender)) => {
                    let joined = json!({"type": "peer_joined", "peer": peer}).to_string();
                    if to_sender.send(Message::text(joined)).await.is_err() {
                        rooms.leave(nameplate, peer);
                        let refusal = Refusal::new(4409, "the sender just left; try again");
                        return refuse(&mut ws, &refusal).await;
                    }
                    let reply = json!({"type": "joined", "peer": peer,
                        "max_frame": rooms.limits.max_frame});
                    let link = Link {
                        peer,
                        in_flight,
                        to_sender,
                    };
                    receiver(ws, reply, link, rx, shutdown).await;
                    rooms.leave(nameplate, peer);
                }
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        _ => {
            let refusal = Refusal::new(
                4400,
                "the first message must be create, reattach (with nameplate and token) or join (with nameplate)",
            );
            refuse(&mut ws, &refusal).await;
        }
    }
}

async fn refuse<S>(ws: &mut WebSocket<S>, refusal: &Refusal)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let error = json!({"type": "error", "code": refusal.code, "message": refusal.reason});
    let _ = ws.send(Message::text(error.to_string())).await;
    let _ = ws.close(CloseCode(refusal.code), &refusal.reason).await;
    // Wait (bounded) for the peer's close frame so the reason is delivered.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

async fn sender<S>(
    mut ws: WebSocket<S>,
    reply: Value,
    nameplate: u32,
    mut rx: mpsc::Receiver<Message>,
    rooms: Arc<Rooms>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut finished = false;
    if ws.send(Message::text(reply.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down").await;
                    break;
                }
                Some(out) = rx.recv() => {
                    if let Message::Close(Some(frame)) = out {
                        let refusal = Refusal::new(frame.code.0, frame.reason);
                        refuse(&mut ws, &refusal).await;
                        break;
                    }
                    if ws.send(out).await.is_err() {
                        break;
                    }
                }
                msg = ws.recv() => match msg {
                    Some(Ok(Message::Binary(data))) => {
                        if let Err(refusal) = forward(&rooms, nameplate, data) {
                            refuse(&mut ws, &refusal).await;
                            break;
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        let Ok(cmd) = serde_json::from_str::<Value>(text.as_str()) else {
                            continue;
                        };
                        let peer = cmd["peer"].as_u64().unwrap_or(0) as u32;
                        match cmd["type"].as_str() {
                            Some("accept") => {
                                rooms.with(nameplate, |room| {
                                    if let Some(slot) = room.receivers.get_mut(&peer) {
                                        slot.accepted = true;
                                    }
                                });
                            }
                            Some("drop") => {
                                let reason = cmd["reason"].as_str().unwrap_or("dropped by the sender");
                                let frame = CloseFrame::new(CloseCode(4403), reason.chars().take(100).collect::<String>());
                                rooms.with(nameplate, |room| {
                                    if let Some(slot) = room.receivers.get(&peer) {
                                        let _ = slot.tx.send(Message::Close(Some(frame)));
                                    }
                                });
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        finished = frame.is_some_and(|f| f.code == CloseCode::NORMAL);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("transfer sender: {e}");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
    let (code, reason) = if finished {
        (CloseCode::NORMAL, "the sender finished")
    } else {
        (
            CloseCode(4001),
            "the sender disconnected; reconnect to resume",
        )
    };
    for slot in rooms.sender_left(nameplate, finished) {
        let _ = slot
            .tx
            .send(Message::Close(Some(CloseFrame::new(code, reason))));
    }
}

/// Queues a sender's binary message for the receiver its header names,
/// within that receiver's credit.
fn forward(rooms: &Rooms, nameplate: u32, data: Bytes) -> Result<(), Refusal> {
    if data.len() < 4 {
        return Err(Refusal::new(
            4400,
            "a binary message starts with a 4-byte peer number",
        ));
    }
    let peer = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
    let window = rooms.limits.window as u64;
    let len = data.len() as u64;
    rooms
        .with(nameplate, |room| {
            // A receiver that has just left: its data is dropped.
            let Some(slot) = room.receivers.get(&peer) else {
                return Ok(());
            };
            let before = slot.in_flight.fetch_add(len, Ordering::AcqRel);
            if before + len > window {
                return Err(Refusal::new(
                    4008,
                    "flow control: data sent beyond the receiver's credit",
                ));
            }
            let _ = slot.tx.send(Message::Binary(data));
            Ok(())
        })
        .unwrap_or(Ok(()))
}

struct Link {
    peer: u32,
    in_flight: Arc<AtomicU64>,
    to_sender: mpsc::Sender<Message>,
}

async fn receiver<S>(
    mut ws: WebSocket<S>,
    reply: Value,
    link: Link,
    mut rx: mpsc::UnboundedReceiver<Message>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.send(Message::text(reply.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down").await;
                break;
            }
            Some(out) = rx.recv() => match out {
                Message::Close(frame) => {
                    let frame = frame.unwrap_or_else(|| CloseFrame::new(CloseCode::NORMAL, ""));
                    let _ = ws.close(frame.code, &frame.reason).await;
                    // Bounded wait for the peer's close frame.
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(Ok(_)) = ws.recv().await {}
                    })
                    .await;
                    break;
                }
                out => {
                    let len = out.len() as u64;
                    if ws.send(out).await.is_err() {
                        break;
                    }
                    release(&link.in_flight, len);
                    let credit = json!({"type": "credit", "peer": link.peer, "bytes": len});
                    let _ = link.to_sender.send(Message::text(credit.to_string())).await;
                }
            },
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.len() < 4 || data.len() > MAX_RECEIVER_MESSAGE {
                        let refusal = Refusal::new(4400, "receiver messages are 4..65536 bytes");
                        refuse(&mut ws, &refusal).await;
                        break;
                    }
                    let mut out = BytesMut::with_capacity(data.len());
                    out.put_u32(link.peer);
                    out.put_slice(&data[4..]);
                    if link.to_sender.send(Message::Binary(out.freeze())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("transfer receiver: {e}");
                    break;
                }
            },
        }
    }
    let left = json!({"type": "peer_left", "peer": link.peer}).to_string();
    let _ = tokio::time::timeout(HELLO_TIMEOUT, link.to_sender.send(Message::text(left))).await;
}
