//! The connection state machine: bytes in, messages out; messages in, bytes out.
//!
//! [`Connection`] owns no socket. An I/O layer appends what it reads to
//! [`Connection::read_buf`], takes messages from [`Connection::next_message`],
//! hands messages to [`Connection::send`], and writes [`Connection::outgoing`]
//! to the socket. Replies the protocol requires (pongs, the close reply, the
//! close frame that fails a connection) are queued on `outgoing` without the
//! user's help.
//!
//! Received frames are parsed in place in the read buffer: the payload is
//! unmasked where it lies and an unfragmented message is handed out as a
//! slice of that buffer, without a copy, or lent in place (see
//! [`Connection::next_incoming`]). Text is validated as it arrives,
//! even before its frame is complete, so invalid UTF-8 fails the connection
//! at the first bad byte.

use bytes::{Buf, Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, Inflated, Inflater};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::limits::Limits;
use crate::mask::{apply_mask, extend_masked};
use crate::message::{Message, MessageRef, Text};
use crate::outgoing::{OutBuf, ZERO_COPY_MIN};
use crate::teardown::Teardown;
use crate::utf8::Utf8Validator;
use crate::{Role, State};

/// The most read-buffer space reserved in one step for a frame still arriving.
const MAX_RESERVE: usize = 4 << 20;

/// Options for a connection after the handshake.
///
/// ```
/// use duplex_proto::{Config, Limits};
/// let config = Config { limits: Limits { max_message_size: 1 << 20, ..Limits::default() }, ..Config::default() };
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// Limits on incoming frames and messages.
    pub limits: Limits,
    /// Compression level and threshold, used when the handshake negotiated
    /// permessage-deflate (its negotiation fields are ignored here).
    pub deflate: DeflateConfig,
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was sent or the connection failed: nothing more may be sent.
    #[error("the connection is closing or closed")]
    Closed,
    /// A control frame payload over 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, reserved).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
}

#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload bytes already unmasked (and, for text, validated).
    checked: usize,
}

#[derive(Debug, Clone, Copy)]
struct MessageInProgress {
    text: bool,
    compressed: bool,
    /// Saturates: a limit past `u32::MAX` fragments is as good as none.
    fragments: u32,
    /// Payload bytes received so far (before inflation).
    size: usize,
}

/// Where the reader is: between frames, inside one, or lending a message.
///
/// One field for the three, because a message is lent only between frames
/// (and the connection's size is an idle connection's memory).
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Expecting a frame header.
    Header,
    /// Inside a frame's payload.
    Payload(FrameInProgress),
    /// A whole message lent in place at the front of `read`, until the
    /// connection next reads.
    Lent(Lent),
}

/// A whole message left in the read buffer (see [`Incoming::Lent`]): its
/// payload is the buffer's first `len` bytes.
#[derive(Debug, Clone, Copy)]
struct Lent {
    /// At most 64 KiB: only whole frames with a 16-bit length are lent.
    len: u16,
    text: bool,
}

/// What [`Connection::next_incoming`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text or binary message, left where it lies in the read
    /// buffer (unmasked and validated): borrow it with
    /// [`Connection::lent`], echo it with [`Connection::send_lent`], or take
    /// it with [`Connection::take_lent`]. It stays lent until the connection
    /// next reads: the next `next_*` or [`read_buf`](Connection::read_buf)
    /// call releases it.
    Lent,
    /// Any other message, taken out of the buffer.
    Message(Message),
}

/// One side of an open WebSocket connection, without I/O.
///
/// ```
/// use duplex_proto::{Connection, Config, Message, Role};
/// use bytes::Buf;
///
/// let mut client = Connection::new(Role::Client, Config::default(), None);
/// let mut server = Connection::new(Role::Server, Config::default(), None);
///
/// client.send(Message::text("hello")).unwrap();
/// // The I/O layer moves bytes from one to the other.
/// let pending = client.outgoing().remaining();
/// let wire = client.outgoing().copy_to_bytes(pending);
/// server.read_buf().extend_from_slice(&wire);
/// assert_eq!(server.next_message().unwrap(), Some(Message::text("hello")));
/// assert_eq!(server.next_message().unwrap(), None); // needs more bytes
/// ```
///
/// An idle connection's memory is mostly this struct (its buffers go back to
/// the I/O layer's pool), so it is kept small: what only compressed
/// connections need lives behind one pointer.
pub struct Connection {
    role: Role,
    state: State,
    limits: Limits,
    read: BytesMut,
    reading: Reading,
    message: Option<MessageInProgress>,
    /// Where fragmented and compressed messages are put together; allocated
    /// on first use.
    assembly: Option<Box<BytesMut>>,
    utf8: Utf8Validator,
    /// permessage-deflate, when negotiated.
    compression: Option<Box<Compression>>,
    out: OutBuf,
    close_sent: bool,
    /// How the connection ended, once it has (boxed: open connections need
    /// only the pointer).
    ending: Option<Box<Ending>>,
}

/// A compressed frame not fully inflated yet, waiting for memory.
struct PendingInflate {
    payload: BytesMut,
    /// Payload bytes already inflated.
    consumed: usize,
    fin: bool,
}

/// How much more inflated data to ask a budget for at a time: the data so
/// far again, and at least this.
const INFLATE_STEP: usize = 1 << 20;

/// The close frame received and the error that failed the connection, if any.
#[derive(Default)]
struct Ending {
    close_received: Option<Option<CloseFrame>>,
    error: Option<ProtocolError>,
}

/// The compressor and decompressor of a permessage-deflate connection
/// (about 350 bytes with their buffer, plus zlib's state while in use).
struct Compression {
    inflater: Inflater,
    /// A compressed frame whose inflation stopped at `memory_allowance`.
    pending: Option<PendingInflate>,
    /// What the read buffer and the message being put together may hold
    /// once inflated, as a memory budget granted it (see
    /// [`Connection::allow_memory`]).
    memory_allowance: usize,
    deflater: Deflater,
    /// Where outgoing messages are compressed.
    scratch: BytesMut,
}

impl Connection {
    /// A connection that completed its handshake, with the compression
    /// parameters it negotiated (if any).
    pub fn new(role: Role, config: Config, deflate: Option<DeflateParams>) -> Self {
        let compression = deflate.map(|params| {
            Box::new(Compression {
                inflater: Inflater::new(&params, role),
                pending: None,
                memory_allowance: usize::MAX,
                deflater: Deflater::new(
                    &params,
                    role,
                    config.deflate.level,
                    config.deflate.threshold,
                ),
                scratch: BytesMut::new(),
            })
        });
        Self {
            role,
            state: State::Open,
            limits: config.limits,
            read: BytesMut::new(),
            reading: Reading::Header,
            message: None,
            assembly: None,
            utf8: Utf8Validator::default(),
            compression,
            out: OutBuf::default(),
            close_sent: false,
            ending: None,
        }
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Open, Closing (our close frame sent, the peer's awaited) or Closed.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The close frame the peer sent, once it has arrived (`Some(None)`: a
    /// close frame without a code).
    pub fn close_received(&self) -> Option<&Option<CloseFrame>> {
        self.ending.as_ref()?.close_received.as_ref()
    }

    /// The protocol error that failed the connection, if one did.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.ending.as_ref()?.error.as_ref()
    }

    /// The buffer incoming bytes are appended to. Releases a lent message.
    #[inline]
    pub fn read_buf(&mut self) -> &mut BytesMut {
        self.release_lent();
        &mut self.read
    }

    /// Bytes waiting to be written to the peer.
    pub fn outgoing(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// How many bytes the next frame still needs, when known (capped at a
    /// few MiB): lets an I/O layer size one read for a large frame instead
    /// of many small ones.
    pub fn bytes_wanted(&self) -> usize {
        match &self.reading {
            Reading::Payload(f) => (f.header.payload_len as usize)
                .saturating_sub(self.read.len())
                .min(MAX_RESERVE),
            Reading::Header | Reading::Lent(_) => 0,
        }
    }

    /// Bytes held for messages still arriving: the read buffer and the
    /// message being put together (inflated data included). What a memory
    /// budget shared by many connections charges.
    pub fn held_bytes(&self) -> usize {
        self.read.capacity() + self.assembly.as_ref().map_or(0, |a| a.capacity())
    }

    /// [`held_bytes`](Self::held_bytes) once `incoming` more bytes are read
    /// and put in place, counting the growth of buffers that double when
    /// full: what a budget must grant before the read, not after.
    /// (Inflated data can grow more; its limit is the message size.)
    pub fn held_bytes_after(&self, incoming: usize) -> usize {
        let grown = |len: usize, capacity: usize| {
            let need = len + incoming;
            if need > capacity {
                need.max(capacity * 2)
            } else {
                capacity
            }
        };
        let read = grown(self.read.len(), self.read.capacity());
        let assembly = match &self.assembly {
            // Inflation waits for memory: ask for the next step.
            Some(a) if self.inflation_pending() => (a.len() * 2)
                .max(a.len() + INFLATE_STEP)
                .min(self.limits.max_message_size.saturating_add(1))
                .max(a.capacity()),
            Some(a) => grown(a.len(), a.capacity()),
            None if self.message.is_some() => incoming,
            None => 0,
        };
        read + assembly
    }

    /// Lets the read buffer and the message being put together hold
    /// `bytes` in all (what a memory budget granted, after
    /// [`held_bytes_after`](Self::held_bytes_after)). Inflation stops there
    /// and waits ([`inflation_pending`](Self::inflation_pending)) until more
    /// is allowed. Without a call, there is no bound but the limits.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Config, Connection, DeflateParams, Incoming, Message, Role};
    ///
    /// let params = DeflateParams::default();
    /// let mut client = Connection::new(Role::Client, Config::default(), Some(params));
    /// client.send(Message::binary(vec![0u8; 1 << 20])).unwrap(); // about 1 KiB compressed
    /// let pending = client.outgoing().remaining();
    /// let wire = client.outgoing().copy_to_bytes(pending);
    /// let mut server = Connection::new(Role::Server, Config::default(), Some(params));
    /// server.read_buf().extend_from_slice(&wire);
    ///
    /// server.allow_memory(64 << 10); // what a budget granted
    /// assert!(server.next_incoming().unwrap().is_none());
    /// assert!(server.inflation_pending()); // 1 MiB does not fit in 64 KiB
    /// let message = loop {
    ///     // Grant the next step (a budget would charge it first).
    ///     server.allow_memory(server.held_bytes_after(0));
    ///     if let Some(Incoming::Message(m)) = server.next_incoming().unwrap() {
    ///         break m;
    ///     }
    /// };
    /// assert_eq!(message.len(), 1 << 20);
    /// assert!(!server.inflation_pending());
    /// ```
    pub fn allow_memory(&mut self, bytes: usize) {
        if let Some(c) = &mut self.compression {
            c.memory_allowance = bytes;
        }
    }

    /// Whether a received frame waits to be inflated further once more
    /// memory is allowed: [`next_incoming`](Self::next_incoming) goes on
    /// with it, without reading more. See [`allow_memory`](Self::allow_memory)
    /// for an example.
    pub fn inflation_pending(&self) -> bool {
        self.compression
            .as_ref()
            .is_some_and(|c| c.pending.is_some())
    }

    /// Drops whatever arrived and was not handed out yet (the read buffer,
    /// a message being put together), to free its memory at once: for a
    /// connection being closed that will read nothing more.
    pub fn discard_incoming(&mut self) {
        self.release_lent();
        self.read = BytesMut::new();
        self.reading = Reading::Header;
        self.assembly = None;
        if let Some(c) = &mut self.compression {
            c.pending = None;
        }
        self.message = None;
    }

    /// Releases buffer memory that holds nothing: call when the connection
    /// goes idle, so an idle connection costs next to nothing.
    pub fn shrink(&mut self) {
        self.release_lent();
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        if self.assembly.as_ref().is_some_and(|a| a.is_empty()) && self.message.is_none() {
            self.assembly = None;
        }
        if let Some(c) = &mut self.compression {
            c.scratch = BytesMut::new();
        }
        self.out.shrink();
    }

    /// Parses the next complete message out of the read buffer.
    ///
    /// `Ok(None)` means more bytes are needed, or the connection is closed
    /// (see [`state`](Self::state)). An error fails the connection: a close
    /// frame with the error's code is queued on [`outgoing`](Self::outgoing)
    /// and the state becomes [`State::Closed`].
    #[inline]
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        Ok(match self.next_incoming()? {
            Some(Incoming::Lent) => self.take_lent(),
            Some(Incoming::Message(m)) => Some(m),
            None => None,
        })
    }

    /// Like [`next_message`](Self::next_message), but a small whole text or
    /// binary message is left in the read buffer and lent
    /// ([`Incoming::Lent`]) instead of taken out.
    ///
    /// Why: taking a message out of the buffer makes it a shared slice, with
    /// a reference count set up, counted and dropped once per message. An
    /// echo or a router that only looks at a message before it reads the
    /// next one can skip all of that.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Config, Connection, Incoming, Message, MessageRef, Role};
    ///
    /// let mut client = Connection::new(Role::Client, Config::default(), None);
    /// let mut server = Connection::new(Role::Server, Config::default(), None);
    /// client.send(Message::text("hello")).unwrap();
    /// let n = client.outgoing().remaining();
    /// server.read_buf().extend_from_slice(&client.outgoing().copy_to_bytes(n));
    ///
    /// assert_eq!(server.next_incoming().unwrap(), Some(Incoming::Lent));
    /// assert_eq!(server.lent(), Some(MessageRef::Text("hello")));
    /// server.send_lent().unwrap(); // an echo, copied straight to the output
    /// assert_eq!(server.next_incoming().unwrap(), None); // released
    /// assert_eq!(server.lent(), None);
    /// ```
    #[inline]
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        self.release_lent();
        // A received close frame or an error closes the connection.
        if self.state == State::Closed {
            return Ok(None);
        }
        let decoded = match self.lend_whole_frame() {
            Some(Ok(())) => return Ok(Some(Incoming::Lent)),
            Some(Err(e)) => Err(e),
            None => self.decode().map(|m| m.map(Incoming::Message)),
        };
        decoded.inspect_err(|e| self.fail(e))
    }

    /// The message lent by the last [`next_incoming`](Self::next_incoming),
    /// until the connection next reads.
    #[inline]
    pub fn lent(&self) -> Option<MessageRef<'_>> {
        let Reading::Lent(lent) = self.reading else {
            return None;
        };
        let payload = &self.read[..lent.len as usize];
        Some(if lent.text {
            // SAFETY: `lend_whole_frame` validated this text before lending it.
            MessageRef::Text(unsafe { std::str::from_utf8_unchecked(payload) })
        } else {
            MessageRef::Binary(payload)
        })
    }

    /// Takes the lent message out of the read buffer as an owned
    /// [`Message`] (a shared slice of the buffer, not a copy).
    #[inline]
    pub fn take_lent(&mut self) -> Option<Message> {
        let Reading::Lent(lent) = self.reading else {
            return None;
        };
        self.reading = Reading::Header;
        let payload = self.read.split_to(lent.len as usize).freeze();
        Some(if lent.text {
            Message::Text(Text::from_validated(payload))
        } else {
            Message::Binary(payload)
        })
    }

    /// Queues the lent message to the peer, as [`send`](Self::send) would
    /// queue it (compressed if that applies): an echo that copies the
    /// payload once, from the read buffer to the output. The message stays
    /// lent. Without a lent message, queues nothing.
    #[inline]
    pub fn send_lent(&mut self) -> Result<(), SendError> {
        let Reading::Lent(lent) = self.reading else {
            return Ok(());
        };
        let opcode = if lent.text {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        // The payload is in `read`, the frame goes to `out`: moving the
        // buffer out for the call (two 32-byte moves) lets the send path
        // borrow `self` whole.
        let read = std::mem::take(&mut self.read);
        let sent = self.send_data_slice(opcode, &read[..lent.len as usize]);
        self.read = read;
        sent
    }

    #[inline]
    fn release_lent(&mut self) {
        if let Reading::Lent(lent) = self.reading {
            self.reading = Reading::Header;
            self.read.advance(lent.len as usize);
        }
    }

    /// How to close the transport now that the protocol is closed (see
    /// [`Teardown`]). The teardown is clean, letting a client wait for the
    /// server to close TCP first, when the closing handshake completed
    /// without an error; `driver_failed` says the driver gave up for a
    /// reason of its own (an I/O error, a keepalive timeout).
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Role, Teardown};
    ///
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.close(None).unwrap();
    /// let n = client.outgoing().remaining();
    /// let bytes = client.outgoing().copy_to_bytes(n);
    /// server.read_buf().extend_from_slice(&bytes);
    /// server.next_message().unwrap(); // the close frame; the reply is queued
    /// // The server writes its reply, then closes TCP first.
    /// assert_eq!(server.teardown(false), Teardown::Flush { drain_first: false });
    /// ```
    pub fn teardown(&self, driver_failed: bool) -> Teardown {
        let clean = !driver_failed && self.close_received().is_some() && self.error().is_none();
        Teardown::new(self.role, clean)
    }

    /// Whether the driver's close timeout runs: from the moment the
    /// connection leaves [`State::Open`] (a close frame sent or received,
    /// or a failure) to the end of its [`Teardown`].
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let mut conn = Connection::new(Role::Client, Default::default(), None);
    /// assert!(!conn.close_timer_runs());
    /// conn.close(None).unwrap();
    /// assert!(conn.close_timer_runs());
    /// ```
    pub fn close_timer_runs(&self) -> bool {
        self.state != State::Open
    }

    /// The peer closed the TCP connection. Returns `true` if that was
    /// abnormal (before the closing handshake completed: code 1006).
    pub fn receive_eof(&mut self) -> bool {
        let abnormal = self.close_received().is_none() && self.error().is_none();
        self.state = State::Closed;
        abnormal
    }

    fn decode(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(pending) = self.compression.as_mut().and_then(|c| c.pending.take()) {
            let PendingInflate {
                payload,
                consumed,
                fin,
            } = pending;
            if let Some(message) = self.inflate_frame(payload, consumed, fin)? {
                return Ok(Some(message));
            }
            if self.inflation_pending() {
                return Ok(None);
            }
        }
        loop {
            let frame = match self.reading {
                Reading::Payload(f) => f,
                // (Never `Lent`: `next_incoming` released it.)
                Reading::Header | Reading::Lent(_) => {
                    let Some((header, used)) = FrameHeader::parse(&self.read)? else {
                        return Ok(None);
                    };
                    self.check_header(&header)?;
                    self.read.advance(used);
                    let f = FrameInProgress { header, checked: 0 };
                    self.reading = Reading::Payload(f);
                    f
                }
            };
            let len = frame.header.payload_len as usize;
            let avail = self.read.len().min(len);
            if avail < len {
                if self.is_plain_text(&frame.header) && avail > frame.checked {
                    // Fail fast: check the part of the text that has arrived.
                    if let Some(key) = frame.header.mask {
                        apply_mask(&mut self.read[frame.checked..avail], key, frame.checked);
                    }
                    self.utf8
                        .feed(&self.read[frame.checked..avail])
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                    self.reading = Reading::Payload(FrameInProgress {
                        checked: avail,
                        ..frame
                    });
                }
                // Room for the rest of the frame, in steps: the length is the
                // peer's claim, and with limits off it can be 2^63.
                self.read.reserve((len - avail).min(MAX_RESERVE));
                return Ok(None);
            }
            if let Some(key) = frame.header.mask {
                apply_mask(&mut self.read[frame.checked..len], key, frame.checked);
            }
            self.reading = Reading::Header;
            let payload = self.read.split_to(len);
            if let Some(message) = self.on_frame(frame, payload)? {
                return Ok(Some(message));
            }
            if self.inflation_pending() {
                // The next frame waits until this one is inflated.
                return Ok(None);
            }
        }
    }

    /// The common case in one pass: between messages, a whole unfragmented,
    /// uncompressed text or binary frame of under 64 KiB, already in the
    /// buffer, is unmasked and validated where it lies and lent. Anything
    /// else returns `None` having touched nothing, and goes the general way
    /// (which also reports every error but bad UTF-8).
    ///
    /// Why: a small message costs its share of one read and one write, and
    /// on a pipelined connection that share is small enough for per-frame
    /// bookkeeping (the frame and message in progress, their limits, the
    /// incremental UTF-8 state) to show. This path keeps none of it: the
    /// frame is whole, so the message is whole too.
    #[inline]
    fn lend_whole_frame(&mut self) -> Option<Result<(), ProtocolError>> {
        if !matches!(self.reading, Reading::Header) || self.message.is_some() {
            return None;
        }
        let buf = &self.read[..];
        let (b0, b1) = (*buf.first()?, *buf.get(1)?);
        // FIN set, RSV bits clear, opcode text (1) or binary (2).
        let text = match b0 {
            0x81 => true,
            0x82 => false,
            _ => return None,
        };
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return None;
        }
        let (len, mut start) = match b1 & 0x7F {
            126 => (
                u16::from_be_bytes(*buf.get(2..4)?.first_chunk()?) as usize,
                4,
            ),
            127 => return None,
            n => (n as usize, 2),
        };
        let key = if masked {
            let key = *buf.get(start..start + 4)?.first_chunk::<4>()?;
            start += 4;
            Some(key)
        } else {
            None
        };
        let limits = &self.limits;
        if buf.len() - start < len
            || len > limits.max_frame_size
            || len > limits.max_message_size
            || limits.max_fragments == 0
        {
            return None;
        }
        self.read.advance(start);
        let payload = &mut self.read[..len];
        if let Some(key) = key {
            apply_mask(payload, key, 0);
        }
        if text && simdutf8::basic::from_utf8(payload).is_err() {
            return Some(Err(ProtocolError::InvalidUtf8));
        }
        self.reading = Reading::Lent(Lent {
            len: len as u16,
            text,
        });
        Some(Ok(()))
    }

    fn is_plain_text(&self, header: &FrameHeader) -> bool {
        match header.opcode {
            OpCode::Text => !header.rsv1,
            OpCode::Continuation => self.message.is_some_and(|m| m.text && !m.compressed),
            _ => false,
        }
    }

    /// Everything that can be checked from the header alone.
    fn check_header(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.rsv1
            && (self.compression.is_none() || !matches!(h.opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        if h.opcode.is_control() {
            return Ok(());
        }
        let limits = self.limits;
        if h.payload_len > limits.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max: limits.max_frame_size,
            });
        }
        let len = h.payload_len as usize;
        let message = match (h.opcode, self.message.as_mut()) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(m)) => m,
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (op, None) => self.message.insert(MessageInProgress {
                text: op == OpCode::Text,
                compressed: h.rsv1,
                fragments: 0,
                size: 0,
            }),
        };
        message.fragments = message.fragments.saturating_add(1);
        if message.fragments as usize > limits.max_fragments {
            return Err(ProtocolError::TooManyFragments {
                max: limits.max_fragments,
            });
        }
        message.size = message.size.saturating_add(len);
        // Compressed sizes are checked after inflation, against the same limit.
        if !message.compressed && message.size > limits.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                max: limits.max_message_size,
            });
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        frame: FrameInProgress,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        let h = frame.header;
        match h.opcode {
            OpCode::Ping => {
                if !self.close_sent {
                    self.write_frame(OpCode::Pong, false, &payload);
                }
                Ok(Some(Message::Ping(payload.freeze())))
            }
            OpCode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                self.on_close(frame.clone());
                Ok(Some(Message::Close(frame)))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => self.on_data(frame, payload),
        }
    }

    fn on_data(
        &mut self,
        frame: FrameInProgress,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        let h = frame.header;
        let m = self.message.expect("check_header started the message");
        if m.compressed {
            return self.inflate_frame(payload, 0, h.fin);
        } else {
            if m.text {
                self.utf8
                    .feed(&payload[frame.checked..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            if h.fin && m.fragments == 1 {
                // The common case: one frame, handed out without a copy.
                return self.finish_message(m.text, payload.freeze()).map(Some);
            }
            self.assembly
                .get_or_insert_default()
                .extend_from_slice(&payload);
        }
        if !h.fin {
            return Ok(None);
        }
        let assembly = self.assembly.as_mut().expect("filled above");
        let data = assembly.split().freeze();
        self.finish_message(m.text, data).map(Some)
    }

    /// Inflates a compressed frame's payload from `consumed` on, as far as
    /// the memory allowance lets it; the message once the last frame is.
    fn inflate_frame(
        &mut self,
        payload: BytesMut,
        consumed: usize,
        fin: bool,
    ) -> Result<Option<Message>, ProtocolError> {
        let m = self.message.expect("a compressed message is in progress");
        let max = self.limits.max_message_size;
        let read_capacity = self.read.capacity();
        let assembly = self.assembly.get_or_insert_default();
        let compression = self
            .compression
            .as_mut()
            .expect("RSV1 is accepted only with an inflater");
        let stop_at = compression.memory_allowance.saturating_sub(read_capacity);
        let inflater = &mut compression.inflater;
        let start = assembly.len();
        let inflated = inflater.inflate_some(&payload[consumed..], assembly, max, stop_at)?;
        if let Inflated::Done = inflated {
            if fin {
                inflater.finish_message(assembly, max)?;
            }
        }
        if m.text {
            self.utf8
                .feed(&assembly[start..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if let Inflated::Paused { consumed: more } = inflated {
            compression.pending = Some(PendingInflate {
                payload,
                consumed: consumed + more,
                fin,
            });
            return Ok(None);
        }
        if !fin {
            return Ok(None);
        }
        let data = assembly.split().freeze();
        self.finish_message(m.text, data).map(Some)
    }

    fn finish_message(&mut self, text: bool, data: Bytes) -> Result<Message, ProtocolError> {
        self.message = None;
        if text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Message::Text(Text::from_validated(data)))
        } else {
            Ok(Message::Binary(data))
        }
    }

    fn on_close(&mut self, frame: Option<CloseFrame>) {
        if !self.close_sent {
            // Echo the code, as RFC 6455 §5.5.1 suggests; no code → empty close.
            let payload = frame
                .as_ref()
                .map(|f| CloseFrame::new(f.code, "").to_payload())
                .unwrap_or_default();
            self.write_frame(OpCode::Close, false, &payload);
            self.close_sent = true;
        }
        self.ending.get_or_insert_default().close_received = Some(frame);
        self.state = State::Closed;
    }

    fn fail(&mut self, error: &ProtocolError) {
        if !self.close_sent {
            let reason = error.to_string();
            let payload = CloseFrame::new(error.close_code(), reason).to_payload();
            self.write_frame(OpCode::Close, false, &payload);
            self.close_sent = true;
        }
        self.ending.get_or_insert_default().error = Some(error.clone());
        self.state = State::Closed;
    }

    /// Queues a message. Data messages are compressed when permessage-deflate
    /// was negotiated and they reach the threshold; a [`Message::Close`]
    /// starts the closing handshake (see [`close`](Self::close)).
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.send_data(OpCode::Text, t.into_bytes()),
            Message::Binary(b) => self.send_data(OpCode::Binary, b),
            Message::Ping(b) => self.send_control(OpCode::Ping, &b),
            Message::Pong(b) => self.send_control(OpCode::Pong, &b),
            Message::Close(frame) => self.close(frame),
        }
    }

    /// Starts the closing handshake (or answers it); `None` sends a close
    /// frame without a code. Closing twice is not an error.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
        }
        if self.close_sent {
            return Ok(());
        }
        let payload = frame.map(|f| f.to_payload()).unwrap_or_default();
        self.write_frame(OpCode::Close, false, &payload);
        self.close_sent = true;
        if self.state == State::Open {
            self.state = State::Closing;
        }
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong);
        }
        self.write_frame(opcode, false, payload);
        Ok(())
    }

    #[inline]
    fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if !self.compress_and_queue(opcode, &payload) {
            self.write_frame_owned(opcode, false, payload);
        }
        Ok(())
    }

    /// [`send_data`](Self::send_data) for a payload we only borrow.
    #[inline]
    fn send_data_slice(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if !self.compress_and_queue(opcode, payload) {
            self.write_frame(opcode, false, payload);
        }
        Ok(())
    }

    /// Compresses and queues a data frame if permessage-deflate applies to
    /// it; returns whether it did.
    #[inline]
    fn compress_and_queue(&mut self, opcode: OpCode, payload: &[u8]) -> bool {
        let Some(c) = self
            .compression
            .as_mut()
            .filter(|c| c.deflater.should_compress(payload.len()))
        else {
            return false;
        };
        let mut scratch = std::mem::take(&mut c.scratch);
        scratch.clear();
        c.deflater.compress(payload, &mut scratch);
        let compressed = scratch.split().freeze();
        c.scratch = scratch;
        self.write_frame_owned(opcode, true, compressed);
        true
    }

    /// Frames a payload we own: a server queues large ones without a copy.
    #[inline]
    fn write_frame_owned(&mut self, opcode: OpCode, rsv1: bool, payload: Bytes) {
        if self.role == Role::Server && payload.len() >= ZERO_COPY_MIN {
            self.write_header(opcode, rsv1, payload.len(), None);
            self.out.push(payload);
        } else {
            self.write_frame(opcode, rsv1, &payload);
        }
    }

    /// Frames a payload by copying it into the output's tail, header and
    /// payload in one reservation.
    #[inline]
    fn write_frame(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8]) {
        let mask = match self.role {
            Role::Client => Some(rand::random::<[u8; 4]>()),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin: true,
            rsv1,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.write(&mut head);
        let tail = self.out.tail_mut();
        tail.reserve(n + payload.len());
        tail.extend_from_slice(&head[..n]);
        match mask {
            Some(key) => extend_masked(tail, payload, key),
            None => tail.extend_from_slice(payload),
        }
    }

    #[inline]
    fn write_header(&mut self, opcode: OpCode, rsv1: bool, len: usize, mask: Option<[u8; 4]>) {
        let header = FrameHeader {
            fin: true,
            rsv1,
            opcode,
            mask,
            payload_len: len as u64,
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.write(&mut buf);
        self.out.extend_from_slice(&buf[..n]);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("compressed", &self.is_compressed())
            .field("buffered_in", &self.read.len())
            .field("buffered_out", &self.out.len())
            .finish()
    }
}
