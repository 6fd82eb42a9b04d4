//! What a subscriber speaks: `duplex serve`'s hub protocol
//! (docs/protocol.md), or Socket.IO 4 over its WebSocket transport, for the
//! peer row of the benchmark (`tests/peers/socketio_hub.js`). Either way
//! the publications carry the same numbered data, published through the
//! same `POST /api/publish`, and are checked the same way.

use std::borrow::Cow;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use duplex::{MaybeTlsStream, Message, WebSocket};
use duplex_hub::{Command, Push, Request, ServerMessage};

/// The subscribers' protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The hub protocol of `duplex serve` (`/ws`).
    Duplex,
    /// Socket.IO 4 (Engine.IO 4, WebSocket transport only, at
    /// `/socket.io/`): subscribers emit `subscribe` with the channel and an
    /// acknowledgement; publications arrive as `publication` events.
    #[value(name = "socket.io")]
    SocketIo,
}

/// What a subscriber received.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A publication's data (JSON text).
    Publication(Cow<'a, str>),
    /// The server checks the connection is alive: answer [`Protocol::pong`].
    Ping,
    /// Anything else the protocol may send.
    Other,
    /// Not a message of the protocol.
    Malformed,
}

impl Protocol {
    /// The WebSocket URL a subscriber connects to, on `host` (`ip:port`)
    /// at `path` (the hub's, from the URL given).
    pub fn subscriber_url(self, host: &str, path: &str) -> String {
        match self {
            Self::Duplex => format!("ws://{host}{path}"),
            Self::SocketIo => format!("ws://{host}/socket.io/?EIO=4&transport=websocket"),
        }
    }

    /// Subscribes `ws` to `channel`; returns once the server confirmed.
    pub async fn subscribe(self, ws: &mut WebSocket<MaybeTlsStream>, channel: &str) -> Result<()> {
        match self {
            Self::Duplex => {
                let subscribe = Command::Subscribe {
                    channel: channel.to_owned(),
                    since: None,
                    presence: Some(false),
                };
                ws.send(Request::new(1, subscribe).encode()).await?;
                loop {
                    match ServerMessage::parse(&next_text(ws).await?)? {
                        ServerMessage::Error { id: Some(1), error } => {
                            bail!("subscribe failed: {error}")
                        }
                        ServerMessage::Reply { id: Some(1), .. } => return Ok(()),
                        _ => {}
                    }
                }
            }
            Self::SocketIo => {
                // Engine.IO's open packet, then Socket.IO's connect to the
                // main namespace and its answer.
                let open = next_text(ws).await?;
                if !open.starts_with('0') {
                    bail!("expected an Engine.IO open packet, got {open:?}");
                }
                ws.send("40").await?;
                let connected = next_text(ws).await?;
                if !connected.starts_with("40") {
                    bail!("expected a Socket.IO connect packet, got {connected:?}");
                }
                let channel = serde_json::to_string(channel)?;
                ws.send(format!("420[\"subscribe\",{channel}]")).await?;
                loop {
                    let text = next_text(ws).await?;
                    match text.as_str() {
                        "430[true]" => return Ok(()),
                        "2" => ws.send("3").await?,
                        _ if text.starts_with("430") => bail!("subscribe refused: {text}"),
                        _ => {}
                    }
                }
            }
        }
    }

    /// What `msg` is, for this protocol.
    pub fn classify(self, msg: &Message) -> Incoming<'_> {
        let Some(text) = msg.as_text() else {
            return Incoming::Malformed;
        };
        match self {
            Self::Duplex => match ServerMessage::parse(text) {
                Ok(ServerMessage::Push(Push::Publication(p))) => match p.data {
                    Cow::Borrowed(data) => Incoming::Publication(Cow::Borrowed(data.get())),
                    Cow::Owned(data) => Incoming::Publication(Cow::Owned(data.get().to_owned())),
                },
                Ok(_) => Incoming::Other,
                Err(_) => Incoming::Malformed,
            },
            Self::SocketIo => socket_io_event(text),
        }
    }

    /// The answer to [`Incoming::Ping`].
    pub fn pong(self) -> &'static str {
        match self {
            Self::Duplex => "",
            Self::SocketIo => "3",
        }
    }
}

/// A Socket.IO text frame: an Engine.IO ping, a `publication` event, or
/// something else.
fn socket_io_event(text: &str) -> Incoming<'_> {
    if text == "2" {
        return Incoming::Ping;
    }
    match text
        .strip_prefix("42[\"publication\",")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(data) => Incoming::Publication(Cow::Borrowed(data)),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => Incoming::Other,
        None => Incoming::Malformed,
    }
}

/// The next text message; binary ones are skipped.
async fn next_text(ws: &mut WebSocket<MaybeTlsStream>) -> Result<String> {
    loop {
        let msg = ws.recv().await.context("closed while subscribing")??;
        if let Some(text) = msg.as_text() {
            return Ok(text.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_io_frames_are_told_apart() {
        assert_eq!(
            socket_io_event(r#"42["publication",{"p":0,"seq":1,"t":5}]"#),
            Incoming::Publication(r#"{"p":0,"seq":1,"t":5}"#.into())
        );
        assert_eq!(socket_io_event("2"), Incoming::Ping);
        assert_eq!(socket_io_event(r#"42["other",1]"#), Incoming::Other);
        assert_eq!(socket_io_event("40{\"sid\":\"x\"}"), Incoming::Other);
        assert_eq!(socket_io_event("hello"), Incoming::Malformed);
    }

    #[test]
    fn hub_publications_are_their_data() {
        let text = r#"{"push":"publication","channel":"c","offset":1,"epoch":"e","ts":"2026-01-01T00:00:00.000Z","from":{"client":"api","user":"api","name":"api"},"data":{"p":0,"seq":1,"t":5}}"#;
        let msg = Message::text(text);
        assert_eq!(
            Protocol::Duplex.classify(&msg),
            Incoming::Publication(r#"{"p":0,"seq":1,"t":5}"#.into())
        );
        let other = Message::text(r#"{"id":1,"result":null}"#);
        assert_eq!(Protocol::Duplex.classify(&other), Incoming::Other);
        assert_eq!(
            Protocol::Duplex.classify(&Message::text("{")),
            Incoming::Malformed
        );
    }
}
