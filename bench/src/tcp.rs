//! The ceiling: a plain TCP echo that makes the same reads and writes as a
//! WebSocket echo (one read, one write of what it read), without framing:
//! it returns the client's masked frames byte for byte, which
//! `duplex bench echo --mirror` expects.

use duplex::proto::handshake::accept_key;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Sec-WebSocket-Accept` value for the request head's key (the client
/// checks it, as it must), or for no key.
fn accept_key_of(head: &[u8]) -> String {
    let key = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"sec-websocket-key")
                .then(|| value[1..].trim_ascii())
        })
        .unwrap_or_default();
    accept_key(key)
}

pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    // A WebSocket server must first answer the upgrade: so does this one, so
    // that the same client can load it.
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key_of(&head[..end])
            );
            if stream.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            let rest = head.split_off(end + 4);
            if !rest.is_empty() && stream.write_all(&rest).await.is_err() {
                return;
            }
            break;
        }
    }
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
