//! The two layers on the wire (docs/transfer.md): JSON messages to and
//! from the relay ([`duplex_transfer::RelayMessage`]), and peer messages
//! inside binary frames ([`duplex_transfer::peer_frame`]) — the PAKE
//! message, sealed control messages and sealed chunks — each behind the
//! relay's 4-byte peer number. This module adds what the relay never reads:
//! the sealed contents.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use duplex::{CloseCode, CloseFrame, Config, MaybeTlsStream, Message, WebSocketReader};
use duplex_transfer::peer_frame;
use duplex_transfer::seal::{Direction, Sealer, Space, TAG};
use duplex_transfer::{Kind, chunk};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::manifest::Entry;

/// End-to-end control messages between sender and receiver (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Proves the key: the first sealed message each way.
    Confirm,
    /// What the sender offers.
    Manifest {
        /// Files and folders.
        entries: Vec<Entry>,
        /// Bytes per chunk.
        chunk_size: u64,
        /// Whether the sender answers `Done` with `Bye` (older ones do
        /// not): a receiver that hears no `Bye` then says `Done` again.
        #[serde(default)]
        bye: bool,
    },
    /// What the receiver already has: bytes per entry.
    Have {
        /// One offset per manifest entry, a multiple of the chunk size (or
        /// the size when complete). Bytes that were here before this
        /// connection are checked against the file's seal.
        offsets: Vec<u64>,
        /// Entries this receiver run already verified through an earlier
        /// connection: the sender sends nothing for them, not even a seal.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verified: Vec<u32>,
    },
    /// A chunk failed to verify: send again from it.
    Retry {
        /// Entry index.
        file: u32,
        /// Chunk index.
        chunk: u64,
    },
    /// The receiver has every file, verified and in place. It waits for
    /// [`Control::Bye`] (bounded), and says it again after a reconnect, so
    /// that a `Done` lost with a connection (a relay restart) still counts.
    Done {
        /// Which `duplex receive` run this is (random per run), so that a
        /// `Done` said again is counted once. Absent from older peers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receiver: Option<String>,
    },
    /// The sender counted the receiver's [`Control::Done`]: it may go.
    Bye,
    /// The receiver gives up, and why.
    Fail {
        /// For the sender's user.
        message: String,
    },
    /// A message of a later version, which this one ignores (never sent).
    #[serde(other)]
    Unknown,
}

/// The relay URL for a server given as `http(s)://`, `ws(s)://` or
/// `host:port`: its `/files` endpoint unless a path is given.
pub fn relay_url(server: &str) -> anyhow::Result<String> {
    let (scheme, rest) = match server.split_once("://") {
        Some(("http" | "ws", rest)) => ("ws", rest),
        Some(("https" | "wss", rest)) => ("wss", rest),
        Some((other, _)) => bail!(
            "--server {server:?}: unsupported scheme {other:?}; use http://, https://, ws:// or wss://"
        ),
        None => ("ws", server),
    };
    if rest.is_empty() {
        bail!("--server {server:?} has no host; e.g. --server http://127.0.0.1:8080");
    }
    Ok(match rest.split_once('/') {
        Some((host, path)) if !path.is_empty() => format!("{scheme}://{host}/{path}"),
        Some((host, _)) => format!("{scheme}://{host}/files"),
        None => format!("{scheme}://{rest}/files"),
    })
}

/// A connection to the relay: a reader, and a queue to a writer task.
pub struct Link {
    /// Incoming messages.
    pub reader: WebSocketReader<MaybeTlsStream>,
    /// Outgoing messages; a `Close` closes the connection.
    pub tx: mpsc::Sender<Message>,
}

impl Link {
    /// Ends the connection normally (1000, which ends a sender's transfer
    /// at the relay) and waits, bounded, for the relay's answer, so that
    /// the relay knows before this process goes.
    pub async fn finish(&mut self, reason: &str) {
        let close = CloseFrame::new(duplex_transfer::RelayClose::Finished.close_code(), reason);
        let _ = self.tx.send(Message::Close(Some(close))).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.reader.recv().await {}
        })
        .await;
    }
}

/// Connects to the relay.
pub async fn connect(url: &str) -> anyhow::Result<Link> {
    let config = Config::default()
        .with_max_message_size(16 << 20)
        .with_ping_interval(Duration::from_secs(10));
    let ws = duplex::ClientBuilder::new()
        .config(config)
        .connect_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| {
            format!(
                "cannot reach the relay at {url} (is `duplex serve` running there? see --server)"
            )
        })?;
    let (reader, mut writer) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let result = match msg {
                Message::Close(frame) => {
                    let frame = frame.unwrap_or_else(|| CloseFrame::new(CloseCode::NORMAL, ""));
                    let _ = writer.close(frame.code, &frame.reason).await;
                    return;
                }
                msg => writer.send(msg).await,
            };
            if result.is_err() {
                return;
            }
        }
    });
    Ok(Link { reader, tx })
}

/// Seals control messages one way and opens them the other, refusing
/// replays: [`Space::Control`] of the end-to-end layer.
pub struct Channel {
    sealer: Arc<Sealer>,
    out: Direction,
    next_out: u64,
    next_in: u64,
}

impl Channel {
    /// A channel for the side that sends in direction `out`.
    pub fn new(sealer: Arc<Sealer>, out: Direction) -> Self {
        Self {
            sealer,
            out,
            next_out: 0,
            next_in: 0,
        }
    }

    /// The numbering of data frames this side sends (a task of their own).
    pub fn data_out(&self) -> chunk::Outbound {
        chunk::Outbound::new(self.sealer.clone(), self.out)
    }

    /// The numbering of data frames this side receives.
    pub fn data_in(&self) -> chunk::Inbound {
        chunk::Inbound::new(self.sealer.clone(), self.out.reverse())
    }

    /// The length of the frame [`Channel::seal`] makes of `msg`: header,
    /// sequence number, ciphertext and tag.
    pub fn sealed_len(msg: &Control) -> usize {
        let plain = serde_json::to_vec(msg).expect("serializable");
        peer_frame::PEER_HEADER + 1 + 8 + plain.len() + TAG
    }

    /// A sealed control frame for `peer`.
    pub fn seal(&mut self, peer: u32, msg: &Control) -> Message {
        let seq = self.next_out;
        self.next_out += 1;
        let mut sealed = serde_json::to_vec(msg).expect("serializable");
        let tag = self
            .sealer
            .seal_in_place(self.out, Space::Control, seq, b"", &mut sealed);
        Message::Binary(peer_frame::encode(
            peer,
            Kind::Sealed,
            &[&seq.to_be_bytes(), &sealed, &tag],
        ))
    }

    /// Opens a sealed control body (after the kind byte); `None` if it does
    /// not open (wrong key, altered, replayed) or is not a valid message.
    /// A message of a later version is [`Control::Unknown`].
    pub fn open(&mut self, body: &[u8]) -> Option<Control> {
        let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
        if seq < self.next_in {
            return None;
        }
        let mut sealed = body[8..].to_vec();
        let plain =
            self.sealer
                .open_in_place(self.out.reverse(), Space::Control, seq, b"", &mut sealed)?;
        self.next_in = seq + 1;
        serde_json::from_slice(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_versions_control_message_is_unknown_not_invalid() {
        let parsed: Control = serde_json::from_str(r#"{"type":"resume_hint","at":5}"#).unwrap();
        assert!(matches!(parsed, Control::Unknown));
        let done: Control = serde_json::from_str(r#"{"type":"done"}"#).unwrap();
        assert!(matches!(done, Control::Done { receiver: None }));
        assert!(serde_json::from_str::<Control>(r#"{"type":"retry","file":1}"#).is_err());
    }

    #[test]
    fn relay_urls() {
        assert_eq!(
            relay_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/files"
        );
        assert_eq!(
            relay_url("https://x.example/").unwrap(),
            "wss://x.example/files"
        );
        assert_eq!(relay_url("ws://h:1/relay").unwrap(), "ws://h:1/relay");
        assert_eq!(relay_url("h:1").unwrap(), "ws://h:1/files");
        assert!(relay_url("ftp://h").is_err());
    }
}
