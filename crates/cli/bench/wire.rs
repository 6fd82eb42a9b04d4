//! The client's side of the wire, kept cheap so that the server is the
//! bottleneck: a minimal upgrade over raw TCP, frames masked once up front,
//! and an echo checker that parses only headers and compares payloads.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use duplex_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use duplex_proto::mask::apply_mask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::target::Target;

/// The masking key of every frame we send (any key is valid).
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opens a TCP connection, from `source` if given (a loopback address).
pub async fn tcp_connect(addr: SocketAddr, source: Option<SocketAddr>) -> Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(source)?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects and performs the opening handshake; returns the stream and any
/// bytes that followed the 101 response.
pub async fn ws_connect(
    target: &Target,
    source: Option<SocketAddr>,
) -> Result<(TcpStream, Vec<u8>)> {
    let mut stream = tcp_connect(target.addr, source).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, target.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("handshake response too long");
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if !head.starts_with("HTTP/1.1 101") {
        bail!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    // The accept key for the fixed nonce above, from RFC 6455 section 1.3.
    if !head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
        bail!("wrong Sec-WebSocket-Accept in the handshake response");
    }
    Ok((stream, buf.split_off(end)))
}

/// The payload of `size` bytes every message carries: printable ASCII, so it
/// is valid as text too.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `payload` as masked on the wire by [`masked_frame`].
pub fn masked_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    apply_mask(&mut out, KEY, 0);
    out
}

/// One masked client frame carrying `payload`.
pub fn masked_frame(payload: &[u8], text: bool) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode: if text { OpCode::Text } else { OpCode::Binary },
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.write(&mut head);
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[n..], KEY, 0);
    frame
}

/// Checks a stream of server frames against the expected echo payload,
/// without copying payloads: it counts complete, correct echoes.
pub struct EchoChecker<'a> {
    expected: &'a [u8],
    opcode: OpCode,
    /// The mask the frames must carry: ours for a byte-for-byte TCP mirror.
    mask: Option<[u8; 4]>,
    header: Vec<u8>,
    /// Bytes of the current payload still to come; `None` between frames.
    remaining: Option<usize>,
    /// Frames that were not an exact echo.
    pub errors: u64,
}

impl<'a> EchoChecker<'a> {
    /// Expects every frame to be a final, unmasked `expected` payload; or,
    /// with `mirror`, our own masked frame back (`expected` is then the
    /// masked payload).
    pub fn new(expected: &'a [u8], text: bool, mirror: bool) -> Self {
        Self {
            expected,
            opcode: if text { OpCode::Text } else { OpCode::Binary },
            mask: mirror.then_some(KEY),
            header: Vec::with_capacity(MAX_HEADER_LEN),
            remaining: None,
            errors: 0,
        }
    }

    /// Consumes `data`; returns how many echoes it completed. A server that
    /// sends anything but the exact echo (a close, another opcode, other
    /// bytes) is an error: counted, and fatal when it breaks the framing.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<u64> {
        let mut done = 0;
        while !data.is_empty() {
            match self.remaining {
                Some(left) => {
                    let n = left.min(data.len());
                    let at = self.expected.len() - left;
                    if data[..n] != self.expected[at..at + n] {
                        self.errors += 1;
                    }
                    data = &data[n..];
                    if n == left {
                        self.remaining = None;
                        done += 1;
                        if self.expected.is_empty() {
                            continue;
                        }
                    } else {
                        self.remaining = Some(left - n);
                    }
                }
                None => {
                    // Fast path: a whole header at the front of `data`.
                    let parsed = if self.header.is_empty() {
                        FrameHeader::parse(data)?
                    } else {
                        None
                    };
                    let (header, used) = match parsed {
                        Some(found) => found,
                        None => {
                            let take = (MAX_HEADER_LEN - self.header.len()).min(data.len());
                            let before = self.header.len();
                            self.header.extend_from_slice(&data[..take]);
                            match FrameHeader::parse(&self.header)? {
                                None => {
                                    data = &data[take..];
                                    continue;
                                }
                                Some((h, used)) => {
                                    self.header.clear();
                                    (h, used - before)
                                }
                            }
                        }
                    };
                    data = &data[used..];
                    if header.opcode == OpCode::Close {
                        bail!("the server closed the connection");
                    }
                    if header.opcode != self.opcode
                        || !header.fin
                        || header.mask != self.mask
                        || header.rsv1
                        || header.payload_len != self.expected.len() as u64
                    {
                        bail!("unexpected frame from the server: {header:?}");
                    }
                    self.remaining = Some(self.expected.len());
                    if self.expected.is_empty() {
                        self.remaining = None;
                        done += 1;
                    }
                }
            }
        }
        Ok(done)
    }
}

/// Reads into `buf`, failing on end of stream.
pub async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize> {
    let n = stream.read(buf).await.context("read")?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_echoes_split_anywhere() {
        let p = payload(300);
        let mut wire = server_frame(&p);
        wire.extend(server_frame(&p));
        for split in 0..wire.len() {
            let mut checker = EchoChecker::new(&p, false, false);
            let n = checker.feed(&wire[..split]).unwrap() + checker.feed(&wire[split..]).unwrap();
            assert_eq!((n, checker.errors), (2, 0), "split at {split}");
        }
    }

    #[test]
    fn counts_wrong_payloads() {
        let p = payload(16);
        let mut bad = p.clone();
        bad[3] ^= 1;
        let mut checker = EchoChecker::new(&p, false, false);
        assert_eq!(checker.feed(&server_frame(&bad)).unwrap(), 1);
        assert_eq!(checker.errors, 1);
    }

    #[test]
    fn masked_frame_unmasks_to_payload() {
        let p = payload(200);
        let frame = masked_frame(&p, false);
        let (h, used) = FrameHeader::parse(&frame).unwrap().unwrap();
        let mut body = frame[used..].to_vec();
        apply_mask(&mut body, h.mask.unwrap(), 0);
        assert_eq!(body, p);
    }
}
