//! What goes out: messages framed (masked by a client), compressed when
//! negotiated, queued on the outgoing buffer; the closing handshake begun.

use bytes::Bytes;

use super::*;
use crate::close::CloseFrame;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::mask::extend_masked;
use crate::message::Message;
use crate::outgoing::ZERO_COPY_MIN;

impl Connection {
    /// Queues a message. Data messages are compressed when permessage-deflate
    /// was negotiated and they reach the threshold; a [`Message::Close`]
    /// starts the closing handshake (see [`close`](Self::close)).
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Message, Role};
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// server.send(Message::binary(vec![1, 2])).unwrap();
    /// assert_eq!(server.outgoing().chunk(), b"\x82\x02\x01\x02");
    /// ```
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

    /// Queues the lent message to the peer, as [`send`](Self::send) would
    /// queue it (compressed if that applies): an echo that copies the
    /// payload once, from the read buffer to the output. The message stays
    /// lent. Without a lent message, queues nothing.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Incoming, Role};
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// server.read_buf().extend_from_slice(b"\x81\x82\0\0\0\0hi"); // masked (by zeros) "hi"
    /// assert_eq!(server.next_incoming().unwrap(), Some(Incoming::Lent));
    /// server.send_lent().unwrap();
    /// assert_eq!(server.outgoing().chunk(), b"\x81\x02hi");
    /// ```
    #[inline]
    pub fn send_lent(&mut self) -> Result<(), SendError> {
        let Reading::Lent(lent) = self.reading else {
            return Ok(());
        };
        // The payload is in `read`, the frame goes to `out`: moving the
        // buffer out for the call (two 32-byte moves) lets the send path
        // borrow `self` whole.
        let read = std::mem::take(&mut self.read);
        let sent = self.send_data_slice(lent.opcode(), &read[lent.payload()]);
        self.read = read;
        sent
    }

    /// Starts the closing handshake (or answers it); `None` sends a close
    /// frame without a code. Closing twice is not an error.
    ///
    /// ```
    /// use duplex_proto::{CloseCode, CloseFrame, Connection, Role, SendError, State};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// let abnormal = CloseFrame::new(CloseCode::ABNORMAL, "");
    /// assert_eq!(client.close(Some(abnormal)), Err(SendError::InvalidCloseCode(1006)));
    /// client.close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))).unwrap();
    /// assert_eq!(client.state(), State::Closing);
    /// assert_eq!(client.close(None), Ok(())); // twice is no error
    /// ```
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
        }
        if self.phase.close_sent() {
            return Ok(());
        }
        let payload = frame.map(|f| f.to_payload()).unwrap_or_default();
        self.write_frame(OpCode::Close, false, &payload);
        self.phase.on_close_sent();
        Ok(())
    }

    pub(super) fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.phase.close_sent() {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlFrameTooLong);
        }
        self.write_frame(opcode, false, payload);
        Ok(())
    }

    #[inline]
    pub(super) fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if self.phase.close_sent() {
            return Err(SendError::Closed);
        }
        if self.compression.is_none() || !self.compress_and_queue(opcode, &payload) {
            self.write_frame_owned(opcode, false, payload);
        }
        Ok(())
    }

    /// [`send_data`](Self::send_data) for a payload we only borrow.
    #[inline]
    pub(super) fn send_data_slice(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if self.phase.close_sent() {
            return Err(SendError::Closed);
        }
        if self.compression.is_none() || !self.compress_and_queue(opcode, payload) {
            self.write_frame(opcode, false, payload);
        }
        Ok(())
    }

    /// Compresses and queues a data frame if permessage-deflate applies to
    /// it; returns whether it did. (Its callers check first whether the
    /// connection compresses at all, inline.)
    pub(super) fn compress_and_queue(&mut self, opcode: OpCode, payload: &[u8]) -> bool {
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
    pub(super) fn write_frame_owned(&mut self, opcode: OpCode, rsv1: bool, payload: Bytes) {
        if self.role == Role::Server && payload.len() >= ZERO_COPY_MIN {
            self.write_header(opcode, rsv1, payload.len(), None);
            self.out.push(payload);
        } else {
            self.write_frame(opcode, rsv1, &payload);
        }
    }

    /// Frames a payload by copying it into the output's tail, header and
    /// payload in one reservation. Inline for a server (its frames are
    /// copied as they are); a client's masking is out of line.
    #[inline]
    pub(super) fn write_frame(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8]) {
        match self.role {
            Role::Server => {
                let header = FrameHeader {
                    fin: true,
                    rsv1,
                    opcode,
                    mask: None,
                    payload_len: payload.len() as u64,
                };
                self.out.extend_frame(&header, payload);
            }
            Role::Client => self.write_masked_frame(opcode, rsv1, payload),
        }
    }

    /// A client's frame: a fresh random key, and the payload masked as it
    /// is copied.
    #[inline(never)]
    fn write_masked_frame(&mut self, opcode: OpCode, rsv1: bool, payload: &[u8]) {
        let key = rand::random::<[u8; 4]>();
        let header = FrameHeader {
            fin: true,
            rsv1,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.write(&mut head);
        let tail = self.out.tail_mut();
        tail.reserve(n + payload.len());
        tail.extend_from_slice(&head[..n]);
        extend_masked(tail, payload, key);
    }

    #[inline]
    pub(super) fn write_header(
        &mut self,
        opcode: OpCode,
        rsv1: bool,
        len: usize,
        mask: Option<[u8; 4]>,
    ) {
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
