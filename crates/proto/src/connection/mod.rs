//! The connection state machine: bytes in, messages out; messages in, bytes out.
//!
//! Split by direction: `receive.rs` parses, reassembles, inflates and
//! validates what arrives (and answers pings and closes); `send.rs` frames,
//! masks and compresses what goes out; `phase.rs` is where the closing
//! handshake stands. This file holds the state they share.
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
//!
//! ```
//! use duplex_proto::connection::{Config, Connection};
//! use duplex_proto::{Message, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default(), None);
//! client.read_buf().extend_from_slice(b"\x81\x02hi"); // a server's text frame
//! assert_eq!(client.next_message().unwrap(), Some(Message::text("hi")));
//! ```

use bytes::BytesMut;

use crate::close::CloseFrame;
use crate::deflate::{DeflateConfig, DeflateParams, Deflater, Inflater};
use crate::error::ProtocolError;
use crate::frame::FrameHeader;
use crate::limits::Limits;
use crate::message::Message;
use crate::outgoing::OutBuf;
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
///
/// ```
/// use duplex_proto::{Connection, Message, Role, SendError};
/// let mut conn = Connection::new(Role::Server, Default::default(), None);
/// let ping = Message::Ping(vec![0; 126].into());
/// assert_eq!(conn.send(ping), Err(SendError::ControlFrameTooLong));
/// conn.close(None).unwrap();
/// assert_eq!(conn.send(Message::text("late")), Err(SendError::Closed));
/// ```
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
    /// A whole frame lent in place at the front of `read`, until the
    /// connection next reads.
    Lent(Lent),
}

/// A whole message left in the read buffer (see [`Incoming::Lent`]): the
/// buffer starts with its frame, header included.
///
/// The header stays in the buffer until the message is released, so that
/// the buffer advances once per message, not twice.
#[derive(Debug, Clone, Copy)]
struct Lent {
    /// Where the payload starts: the header's length (2 to 8 bytes), or 0
    /// once the receive loop has consumed the header (the frame came in
    /// more than one read).
    start: u8,
    /// At most 64 KiB: only whole frames with a 16-bit length are lent.
    len: u16,
    text: bool,
}

impl Lent {
    /// A frame whose header the receive loop has read, now whole at the
    /// front of the read buffer (unmasked; its text not yet checked), if
    /// it is a message of its own that can be lent: FIN, text or binary,
    /// not compressed, under 64 KiB.
    #[inline]
    fn of_read(header: &crate::frame::FrameHeader) -> Option<Lent> {
        use crate::frame::OpCode;
        let text = match header.opcode {
            OpCode::Text => true,
            OpCode::Binary => false,
            _ => return None,
        };
        if !header.fin || header.rsv1 {
            return None;
        }
        Some(Lent {
            start: 0,
            len: u16::try_from(header.payload_len).ok()?,
            text,
        })
    }

    /// The payload's place in the read buffer.
    #[inline]
    fn payload(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }

    /// The whole frame's length.
    #[inline]
    fn frame_len(self) -> usize {
        self.start as usize + self.len as usize
    }

    /// The opcode to send it back with.
    #[inline]
    fn opcode(self) -> crate::frame::OpCode {
        if self.text {
            crate::frame::OpCode::Text
        } else {
            crate::frame::OpCode::Binary
        }
    }
}

/// What decides which frames are taken whole, worked out once for a batch
/// (see `Connection::whole_frames`).
#[derive(Debug, Clone, Copy)]
struct WholeFrames {
    /// Payloads taken are shorter than this: within the limits, and under
    /// 64 KiB (a 16-bit length).
    len_below: usize,
    /// Whether frames must come masked (a server's) or not (a client's).
    masked: bool,
}

/// What [`Connection::next_incoming`] found.
///
/// ```
/// use duplex_proto::{Connection, Incoming, Message, Role};
/// let mut client = Connection::new(Role::Client, Default::default(), None);
/// client.read_buf().extend_from_slice(b"\x8a\x00\x81\x02hi"); // a pong, then text
/// let pong = Message::Pong(Default::default());
/// assert_eq!(client.next_incoming().unwrap(), Some(Incoming::Message(pong)));
/// assert_eq!(client.next_incoming().unwrap(), Some(Incoming::Lent));
/// ```
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
    phase: Phase,
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

mod echo;
mod phase;
mod receive;
mod send;

pub use echo::Echoed;
use phase::Phase;

impl Connection {
    /// A connection that completed its handshake, with the compression
    /// parameters it negotiated (if any).
    ///
    /// ```
    /// use duplex_proto::{Config, Connection, DeflateParams, Role, State};
    /// let params = DeflateParams::default(); // as the handshake negotiated
    /// let conn = Connection::new(Role::Server, Config::default(), Some(params));
    /// assert_eq!(conn.state(), State::Open);
    /// assert!(conn.is_compressed());
    /// ```
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
            phase: Phase::Open,
            limits: config.limits,
            read: BytesMut::new(),
            reading: Reading::Header,
            message: None,
            assembly: None,
            utf8: Utf8Validator::default(),
            compression,
            out: OutBuf::default(),
        }
    }

    /// Which side this is.
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let conn = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(conn.role(), Role::Client);
    /// ```
    pub fn role(&self) -> Role {
        self.role
    }

    /// Open, Closing (our close frame sent, the peer's awaited) or Closed.
    ///
    /// ```
    /// use duplex_proto::{Connection, Role, State};
    /// let mut conn = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(conn.state(), State::Open);
    /// conn.close(None).unwrap();
    /// assert_eq!(conn.state(), State::Closing);
    /// ```
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// Whether permessage-deflate is in use.
    ///
    /// ```
    /// use duplex_proto::{Connection, DeflateParams, Role};
    /// let plain = Connection::new(Role::Client, Default::default(), None);
    /// let params = Some(DeflateParams::default());
    /// let deflate = Connection::new(Role::Client, Default::default(), params);
    /// assert!(!plain.is_compressed());
    /// assert!(deflate.is_compressed());
    /// ```
    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }

    /// The limits in force.
    ///
    /// ```
    /// use duplex_proto::{Config, Connection, Limits, Role};
    /// let config = Config { limits: Limits::unlimited(), ..Config::default() };
    /// let conn = Connection::new(Role::Server, config, None);
    /// assert_eq!(conn.limits(), &Limits::unlimited());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The close frame the peer sent, once it has arrived (`Some(None)`: a
    /// close frame without a code).
    ///
    /// ```
    /// use duplex_proto::{CloseCode, CloseFrame, Connection, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(client.close_received(), None);
    /// client.read_buf().extend_from_slice(b"\x88\x02\x03\xe8"); // close, code 1000
    /// client.next_message().unwrap();
    /// let frame = CloseFrame::new(CloseCode::NORMAL, "");
    /// assert_eq!(client.close_received(), Some(&Some(frame)));
    /// ```
    pub fn close_received(&self) -> Option<&Option<CloseFrame>> {
        self.phase.closed()?.close_received.as_ref()
    }

    /// The protocol error that failed the connection, if one did.
    ///
    /// ```
    /// use duplex_proto::{Connection, ProtocolError, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(client.error(), None);
    /// client.read_buf().extend_from_slice(b"\x83\x00"); // opcode 3 is reserved
    /// assert!(client.next_message().is_err());
    /// assert_eq!(client.error(), Some(&ProtocolError::ReservedOpcode(3)));
    /// ```
    pub fn error(&self) -> Option<&ProtocolError> {
        self.phase.closed()?.error.as_ref()
    }

    /// The buffer incoming bytes are appended to. Releases a lent message.
    ///
    /// ```
    /// use duplex_proto::{Connection, Message, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x82\x01\x2a"); // what a socket read gave
    /// assert_eq!(client.next_message().unwrap(), Some(Message::binary(vec![42])));
    /// ```
    #[inline]
    pub fn read_buf(&mut self) -> &mut BytesMut {
        self.release_lent();
        &mut self.read
    }

    /// Bytes waiting to be written to the peer.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Message, Role};
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// server.send(Message::text("hi")).unwrap();
    /// assert_eq!(server.outgoing().chunk(), b"\x81\x02hi");
    /// server.outgoing().advance(4); // what a socket write took
    /// assert!(server.outgoing().is_empty());
    /// ```
    pub fn outgoing(&mut self) -> &mut OutBuf {
        &mut self.out
    }

    /// How many bytes the next frame still needs, when known (capped at a
    /// few MiB): lets an I/O layer size one read for a large frame instead
    /// of many small ones.
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x82\x7e\x10\x00"); // a 4096-byte frame
    /// assert_eq!(client.next_message().unwrap(), None);
    /// assert_eq!(client.bytes_wanted(), 4096);
    /// ```
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
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let mut conn = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(conn.held_bytes(), 0);
    /// conn.read_buf().reserve(1024);
    /// assert!(conn.held_bytes() >= 1024);
    /// ```
    #[inline]
    pub fn held_bytes(&self) -> usize {
        self.read.capacity() + self.assembly.as_ref().map_or(0, |a| a.capacity())
    }

    /// [`held_bytes`](Self::held_bytes) once `incoming` more bytes are read
    /// and put in place, counting the growth of buffers that double when
    /// full: what a budget must grant before the read, not after.
    /// (Inflated data can grow more; its limit is the message size.)
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let conn = Connection::new(Role::Client, Default::default(), None);
    /// assert_eq!(conn.held_bytes(), 0);
    /// assert_eq!(conn.held_bytes_after(100), 100); // a budget grants 100 first
    /// ```
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
    ///
    /// ```
    /// use duplex_proto::{Connection, DeflateParams, Role};
    /// let params = Some(DeflateParams::default());
    /// let conn = Connection::new(Role::Server, Default::default(), params);
    /// assert!(!conn.inflation_pending()); // nothing received yet
    /// ```
    pub fn inflation_pending(&self) -> bool {
        self.compression
            .as_ref()
            .is_some_and(|c| c.pending.is_some())
    }

    /// Drops whatever arrived and was not handed out yet (the read buffer,
    /// a message being put together), to free its memory at once: for a
    /// connection being closed that will read nothing more.
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x81\x05hel"); // half a frame
    /// assert!(client.held_bytes() > 0);
    /// client.discard_incoming();
    /// assert_eq!(client.held_bytes(), 0);
    /// ```
    pub fn discard_incoming(&mut self) {
        self.release_lent();
        self.read = BytesMut::new();
        self.reading = Reading::Header;
        self.assembly = None;
        if let Some(c) = &mut self.compression {
            c.pending = None;
        }
        self.message = None;
        // A partial code point of the discarded message must not carry
        // over to the next one.
        self.utf8.reset();
    }

    /// Releases buffer memory that holds nothing: call when the connection
    /// goes idle, so an idle connection costs next to nothing.
    ///
    /// ```
    /// use duplex_proto::{Connection, Role};
    /// let mut conn = Connection::new(Role::Client, Default::default(), None);
    /// conn.read_buf().reserve(4096);
    /// assert!(conn.held_bytes() >= 4096);
    /// conn.shrink(); // idle: nothing is buffered
    /// assert_eq!(conn.held_bytes(), 0);
    /// ```
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
        self.state() != State::Open
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("compressed", &self.is_compressed())
            .field("buffered_in", &self.read.len())
            .field("buffered_out", &self.out.len())
            .finish()
    }
}
