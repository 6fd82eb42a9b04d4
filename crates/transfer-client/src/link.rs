//! The connection to the relay (`/files` of `duplex serve`): where it is,
//! and a reader with a queue to a writer task, so that several tasks can
//! send (the control loop, one pump per receiver).

use std::time::Duration;

use anyhow::{Context, bail};
use duplex::{CloseCode, CloseFrame, Config, MaybeTlsStream, Message, WebSocketReader};
use tokio::sync::mpsc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
