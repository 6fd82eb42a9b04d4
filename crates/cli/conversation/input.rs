//! What we are asked to send: messages read from stdin (one per line, or
//! raw chunks with `--binary`), from a command's stdout (`listen --exec`),
//! or typed at the interactive prompt. Each source is a channel of
//! [`Outgoing`] items; the channel closing means the input has ended.

use std::io::{BufRead, Read};

use bytes::Bytes;
use duplex::{CloseFrame, Message};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

/// Largest chunk read at once in `--binary` mode (one binary message each).
pub const CHUNK: usize = 64 * 1024;

/// How many items may wait between a reader and the connection.
const QUEUE: usize = 64;

/// Something to send.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A text, binary, ping or pong message.
    Message(Message),
    /// Close the connection with this frame (`/close`, or a command that
    /// exited).
    Close(Option<CloseFrame>),
}

/// The receiving end of an input source.
pub type Input = mpsc::Receiver<Outgoing>;

/// Turns one line (without its `\n`) into a message: text if it is UTF-8,
/// otherwise binary (with a warning through `warn`).
fn line_message(mut line: Vec<u8>, number: u64, warn: &dyn Fn(String)) -> Message {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(text) => Message::text(text),
        Err(e) => {
            warn(format!(
                "line {number} of the input is not UTF-8: sent as a binary message"
            ));
            Message::binary(e.into_bytes())
        }
    }
}

/// Reads stdin on a thread of its own (so the process can exit while a
/// read is blocked): lines, or raw chunks when `binary`.
pub fn stdin(binary: bool) -> Input {
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let warn = |m: String| eprintln!("duplex: {m}");
            if binary {
                let mut buf = vec![0; CHUNK];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let msg = Message::binary(Bytes::copy_from_slice(&buf[..n]));
                            if tx.blocking_send(Outgoing::Message(msg)).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn(format!("cannot read stdin: {e}"));
                            break;
                        }
                    }
                }
            } else {
                let mut number = 0;
                loop {
                    let mut line = Vec::new();
                    match stdin.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            number += 1;
                            if line.last() == Some(&b'\n') {
                                line.pop();
                            }
                            let msg = line_message(line, number, &warn);
                            if tx.blocking_send(Outgoing::Message(msg)).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn(format!("cannot read stdin: {e}"));
                            break;
                        }
                    }
                }
            }
        })
        .expect("spawn the stdin reader");
    rx
}

/// Reads an async stream (a command's stdout) into `tx` until it ends:
/// lines, or raw chunks when `binary`. Returns when the stream ends or
/// nobody listens any more.
pub async fn pump<R>(reader: R, binary: bool, tx: mpsc::Sender<Outgoing>, name: &str)
where
    R: AsyncRead + Unpin,
{
    let warn = |m: String| eprintln!("duplex: {name}: {m}");
    if binary {
        let mut reader = reader;
        let mut buf = vec![0; CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let msg = Message::binary(Bytes::copy_from_slice(&buf[..n]));
                    if tx.send(Outgoing::Message(msg)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let mut reader = BufReader::new(reader);
    let mut number = 0;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                number += 1;
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                let msg = line_message(line, number, &warn);
                if tx.send(Outgoing::Message(msg)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A channel of items, for sources built elsewhere.
pub fn channel() -> (mpsc::Sender<Outgoing>, Input) {
    mpsc::channel(QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_become_text_messages_and_crlf_is_trimmed() {
        let (tx, mut rx) = channel();
        pump(&b"a\r\nb\n\nlast"[..], false, tx, "test").await;
        let mut got = Vec::new();
        while let Some(Outgoing::Message(m)) = rx.recv().await {
            got.push(m.as_text().unwrap().to_owned());
        }
        assert_eq!(got, ["a", "b", "", "last"]);
    }

    #[tokio::test]
    async fn invalid_utf8_lines_are_sent_as_binary() {
        let (tx, mut rx) = channel();
        pump(&b"\xff\xfe\n"[..], false, tx, "test").await;
        match rx.recv().await {
            Some(Outgoing::Message(Message::Binary(b))) => assert_eq!(&b[..], b"\xff\xfe"),
            other => panic!("{other:?}"),
        }
    }
}
