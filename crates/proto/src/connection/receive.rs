//! What arrives: frames parsed in place, messages reassembled, inflated
//! and validated, pings and closes answered.

use bytes::{Buf, Bytes, BytesMut};

use super::*;
use crate::State;
use crate::close::CloseFrame;
use crate::deflate::Inflated;
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::message::{Message, MessageRef, Text};

impl Connection {
    /// Parses the next complete message out of the read buffer.
    ///
    /// `Ok(None)` means more bytes are needed, or the connection is closed
    /// (see [`state`](Self::state)). An error fails the connection: a close
    /// frame with the error's code is queued on [`outgoing`](Self::outgoing)
    /// and the state becomes [`State::Closed`].
    ///
    /// ```
    /// use duplex_proto::{Connection, Message, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x81\x05hel");
    /// assert_eq!(client.next_message().unwrap(), None); // needs more bytes
    /// client.read_buf().extend_from_slice(b"lo");
    /// assert_eq!(client.next_message().unwrap(), Some(Message::text("hello")));
    /// ```
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
        if self.state() == State::Closed {
            return Ok(None);
        }
        if self.lend_whole_frame() {
            return Ok(Some(Incoming::Lent));
        }
        self.decode().inspect_err(|e| self.fail(e))
    }

    /// Lends the next message if it is already whole in the read buffer as
    /// one small unfragmented data frame, as
    /// [`next_incoming`](Self::next_incoming) would; otherwise changes
    /// nothing (beyond releasing the last lent message) and says `false`,
    /// leaving the frame to `next_incoming`. The common case of a busy
    /// connection, for a driver to try before its full receive loop.
    ///
    /// ```
    /// use duplex_proto::{Connection, MessageRef, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x82\x02hi\x89\x00");
    /// assert!(client.lend_buffered());
    /// assert_eq!(client.lent(), Some(MessageRef::Binary(b"hi")));
    /// assert!(!client.lend_buffered()); // a ping: for next_incoming
    /// assert_eq!(client.lent(), None);
    /// ```
    #[inline]
    pub fn lend_buffered(&mut self) -> bool {
        self.release_lent();
        self.state() != State::Closed && self.lend_whole_frame()
    }

    /// The message lent by the last [`next_incoming`](Self::next_incoming),
    /// until the connection next reads.
    ///
    /// ```
    /// use duplex_proto::{Connection, Incoming, MessageRef, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x82\x02hi");
    /// assert_eq!(client.next_incoming().unwrap(), Some(Incoming::Lent));
    /// assert_eq!(client.lent(), Some(MessageRef::Binary(b"hi")));
    /// ```
    #[inline]
    pub fn lent(&self) -> Option<MessageRef<'_>> {
        let Reading::Lent(lent) = self.reading else {
            return None;
        };
        let payload = &self.read[lent.payload()];
        Some(if lent.text {
            // SAFETY: `lend_whole_frame` validated this text before lending it.
            MessageRef::Text(unsafe { std::str::from_utf8_unchecked(payload) })
        } else {
            MessageRef::Binary(payload)
        })
    }

    /// Takes the lent message out of the read buffer as an owned
    /// [`Message`] (a shared slice of the buffer, not a copy).
    ///
    /// ```
    /// use duplex_proto::{Connection, Incoming, Message, Role};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// client.read_buf().extend_from_slice(b"\x81\x02hi");
    /// assert_eq!(client.next_incoming().unwrap(), Some(Incoming::Lent));
    /// assert_eq!(client.take_lent(), Some(Message::text("hi")));
    /// assert_eq!(client.lent(), None); // taken
    /// ```
    #[inline]
    pub fn take_lent(&mut self) -> Option<Message> {
        let Reading::Lent(lent) = self.reading else {
            return None;
        };
        self.reading = Reading::Header;
        self.read.advance(lent.start as usize);
        let payload = self.read.split_to(lent.len as usize).freeze();
        Some(if lent.text {
            Message::Text(Text::from_validated(payload))
        } else {
            Message::Binary(payload)
        })
    }

    #[inline]
    pub(super) fn release_lent(&mut self) {
        if let Reading::Lent(lent) = self.reading {
            self.reading = Reading::Header;
            self.read.advance(lent.frame_len());
        }
    }

    /// The peer closed the TCP connection. Returns `true` if that was
    /// abnormal (before the closing handshake completed: code 1006).
    ///
    /// ```
    /// use duplex_proto::{Connection, Role, State};
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// assert!(client.receive_eof()); // no close frame came first: 1006
    /// assert_eq!(client.state(), State::Closed);
    /// ```
    pub fn receive_eof(&mut self) -> bool {
        let abnormal = self.close_received().is_none() && self.error().is_none();
        self.phase.close();
        abnormal
    }

    pub(super) fn decode(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        if let Some(pending) = self.compression.as_mut().and_then(|c| c.pending.take()) {
            let PendingInflate {
                payload,
                consumed,
                fin,
            } = pending;
            if let Some(message) = self.inflate_frame(payload, consumed, fin)? {
                return Ok(Some(Incoming::Message(message)));
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
            if let Some(lent) = Lent::of_read(&frame.header) {
                // A message in one frame that came in more than one read:
                // lent where it lies too, not split off the buffer (which
                // makes the buffer shared: an allocation, and a copy when
                // it next grows).
                if lent.text {
                    self.utf8
                        .feed(&self.read[frame.checked..len])
                        .and_then(|()| self.utf8.finish())
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                self.message = None;
                self.reading = Reading::Lent(lent);
                return Ok(Some(Incoming::Lent));
            }
            self.reading = Reading::Header;
            let payload = self.read.split_to(len);
            if let Some(message) = self.on_frame(frame, payload)? {
                return Ok(Some(Incoming::Message(message)));
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
    pub(super) fn lend_whole_frame(&mut self) -> bool {
        self.try_lend_whole_frame().is_some()
    }

    /// `lend_whole_frame`, written with `?`: `None` changes nothing.
    #[inline]
    fn try_lend_whole_frame(&mut self) -> Option<()> {
        let (lent, key) = self.whole_frame_at(0, self.whole_frames()?)?;
        let payload = &mut self.read[lent.payload()];
        if let Some(key) = key {
            apply_mask(payload, key, 0);
        }
        if lent.text && simdutf8::basic::from_utf8(payload).is_err() {
            // Left as it came (masking is its own inverse) for `decode`,
            // which finds the first bad byte and fails the connection.
            if let Some(key) = key {
                apply_mask(payload, key, 0);
            }
            return None;
        }
        self.reading = Reading::Lent(lent);
        Some(())
    }

    /// Whether frames may be taken whole (see
    /// [`whole_frame_at`](Self::whole_frame_at)) now, and what decides it
    /// for each, worked out once for a batch of frames. `None` while a
    /// frame or a fragmented message is in progress.
    #[inline]
    pub(super) fn whole_frames(&self) -> Option<WholeFrames> {
        let limits = &self.limits;
        let ready = matches!(self.reading, Reading::Header)
            && self.message.is_none()
            && limits.max_fragments > 0;
        ready.then(|| WholeFrames {
            len_below: limits
                .max_frame_size
                .min(limits.max_message_size)
                .min(u16::MAX as usize)
                + 1,
            masked: self.role == Role::Server,
        })
    }

    /// The frame `skip` bytes into the read buffer (at its front, for a
    /// lend), if it is a whole message on its own that needs none of the
    /// receive loop's bookkeeping: FIN set, RSV bits clear, text or binary,
    /// masked as the role expects, a length within `rules` (under 64 KiB
    /// and the limits), all of it buffered. Its place from `skip` on
    /// (header included) and its mask key; the payload is still masked and
    /// its text not yet validated.
    #[inline]
    pub(super) fn whole_frame_at(
        &self,
        skip: usize,
        rules: WholeFrames,
    ) -> Option<(Lent, Option<[u8; 4]>)> {
        let buf = self.read.get(skip..)?;
        let (b0, b1) = (*buf.first()?, *buf.get(1)?);
        // FIN set, RSV bits clear, opcode text (1) or binary (2).
        let text = match b0 {
            0x81 => true,
            0x82 => false,
            _ => return None,
        };
        let masked = b1 & 0x80 != 0;
        if masked != rules.masked {
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
        if len >= rules.len_below || buf.len() - start < len {
            return None;
        }
        let lent = Lent {
            start: start as u8,
            len: len as u16,
            text,
        };
        Some((lent, key))
    }

    pub(super) fn is_plain_text(&self, header: &FrameHeader) -> bool {
        match header.opcode {
            OpCode::Text => !header.rsv1,
            OpCode::Continuation => self.message.is_some_and(|m| m.text && !m.compressed),
            _ => false,
        }
    }

    /// Everything that can be checked from the header alone.
    pub(super) fn check_header(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
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

    pub(super) fn on_frame(
        &mut self,
        frame: FrameInProgress,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        let h = frame.header;
        match h.opcode {
            OpCode::Ping => {
                if !self.phase.close_sent() {
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

    pub(super) fn on_data(
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
    pub(super) fn inflate_frame(
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

    pub(super) fn finish_message(
        &mut self,
        text: bool,
        data: Bytes,
    ) -> Result<Message, ProtocolError> {
        self.message = None;
        if text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Message::Text(Text::from_validated(data)))
        } else {
            Ok(Message::Binary(data))
        }
    }

    pub(super) fn on_close(&mut self, frame: Option<CloseFrame>) {
        if !self.phase.close_sent() {
            // Echo the code, as RFC 6455 §5.5.1 suggests; no code → empty close.
            let payload = frame
                .as_ref()
                .map(|f| CloseFrame::new(f.code, "").to_payload())
                .unwrap_or_default();
            self.write_frame(OpCode::Close, false, &payload);
            self.phase.on_close_sent();
        }
        self.phase.close().close_received = Some(frame);
    }

    pub(super) fn fail(&mut self, error: &ProtocolError) {
        if !self.phase.close_sent() {
            let reason = error.to_string();
            let payload = CloseFrame::new(error.close_code(), reason).to_payload();
            self.write_frame(OpCode::Close, false, &payload);
            self.phase.on_close_sent();
        }
        self.phase.close().error = Some(error.clone());
    }
}

#[cfg(test)]
mod tests {
    use crate::mask::extend_masked;
    use crate::{Connection, Incoming, MessageRef, ProtocolError, Role};

    /// A message in one frame that arrives over several reads is lent
    /// where it lies once whole, as one that arrived in one read is; its
    /// text is checked first, in pieces as it comes and at the end.
    #[test]
    fn a_frame_whole_after_several_reads_is_lent() {
        let key = [7, 1, 9, 3];
        let frame = |first: u8, payload: &[u8]| {
            let mut wire = bytes::BytesMut::from(&[first, 0x80 | payload.len() as u8][..]);
            wire.extend_from_slice(&key);
            extend_masked(&mut wire, payload, key);
            wire
        };
        for (first, payload) in [(0x82, &b"binary payload"[..]), (0x81, "text, é".as_bytes())] {
            let wire = frame(first, payload);
            for cut in 1..wire.len() {
                let mut server = Connection::new(Role::Server, Default::default(), None);
                server.read_buf().extend_from_slice(&wire[..cut]);
                assert_eq!(
                    server.next_incoming(),
                    Ok(None),
                    "{cut} bytes of {}",
                    wire.len()
                );
                server.read_buf().extend_from_slice(&wire[cut..]);
                assert_eq!(server.next_incoming(), Ok(Some(Incoming::Lent)));
                let expected = match first {
                    0x81 => MessageRef::Text(std::str::from_utf8(payload).unwrap()),
                    _ => MessageRef::Binary(payload),
                };
                assert_eq!(server.lent(), Some(expected));
                assert_eq!(server.next_incoming(), Ok(None)); // released
                assert!(server.read_buf().is_empty());
            }
        }
        // Text whose last byte completes nothing fails at the end.
        let wire = frame(0x81, b"ab\xC3");
        let mut server = Connection::new(Role::Server, Default::default(), None);
        server.read_buf().extend_from_slice(&wire[..8]);
        assert_eq!(server.next_incoming(), Ok(None));
        server.read_buf().extend_from_slice(&wire[8..]);
        assert_eq!(server.next_incoming(), Err(ProtocolError::InvalidUtf8));
    }

    /// A whole text frame that is not UTF-8 is not lent, and the buffer is
    /// left as it came, for `next_incoming` to fail on.
    #[test]
    fn invalid_text_is_left_for_next_incoming() {
        let mut server = Connection::new(Role::Server, Default::default(), None);
        let key = [1, 2, 3, 4];
        let mut wire = bytes::BytesMut::from(&[0x81, 0x83, 1, 2, 3, 4][..]);
        extend_masked(&mut wire, b"a\xffb", key);
        server.read_buf().extend_from_slice(&wire);
        assert!(!server.lend_buffered());
        assert_eq!(&server.read_buf()[..], &wire[..]);
        assert_eq!(server.next_incoming(), Err(ProtocolError::InvalidUtf8));

        let mut server = Connection::new(Role::Server, Default::default(), None);
        let mut wire = bytes::BytesMut::from(&[0x81, 0x82, 1, 2, 3, 4][..]);
        extend_masked(&mut wire, b"ok", key);
        server.read_buf().extend_from_slice(&wire);
        assert!(server.lend_buffered());
        assert_eq!(server.next_incoming(), Ok(None)); // released, nothing more
        assert!(!matches!(server.next_incoming(), Ok(Some(Incoming::Lent))));
    }
}
