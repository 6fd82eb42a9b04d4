//! An echo's whole loop, for the messages it can decide without the
//! receive loop: each whole small data frame at the front of the read
//! buffer goes straight back, unmasked as it is copied to the output.
//!
//! An echo is what `duplex serve` /echo and every benchmark's server do, and
//! on a pipelined connection most of its work per message is bookkeeping:
//! lend the message (unmask it in place), queue a copy, release it. Here
//! the payload is read once and written once, and the read buffer advances
//! once per batch of frames.

use bytes::Buf;

use super::Connection;
use super::WholeFrames;
use crate::State;

/// What one call of [`Connection::echo_buffered`] echoed.
///
/// ```
/// use duplex_proto::connection::Echoed;
/// let none = Echoed::default();
/// assert_eq!((none.messages, none.bytes), (0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Echoed {
    /// Messages echoed.
    pub messages: usize,
    /// Their payload bytes.
    pub bytes: usize,
}

impl Connection {
    /// Echoes the data messages at the front of the read buffer that are
    /// whole as one small frame each, as `next_incoming` then
    /// [`send_lent`](Self::send_lent) would, until the output holds
    /// `limit` bytes or more (a driver's backpressure mark).
    ///
    /// It stops, leaving the rest for [`next_incoming`](Self::next_incoming),
    /// at the first frame that needs the receive loop: a control frame, a
    /// fragment, a frame not yet whole, one of 64 KiB or more, one over the
    /// limits, one that compression applies to (either way), or text that
    /// is not valid UTF-8 (left as it came, for `next_incoming` to fail the
    /// connection on, with the same close frame). So a driver may call this
    /// before each receive and lose nothing: what it echoes, the two-step
    /// path would have echoed, byte for byte for a server (a client masks
    /// each frame with a fresh key either way).
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Message, Role};
    ///
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// client.send(Message::text("one")).unwrap();
    /// client.send(Message::binary(&b"two"[..])).unwrap();
    /// client.send(Message::Ping("three".into())).unwrap();
    /// let n = client.outgoing().remaining();
    /// server.read_buf().extend_from_slice(&client.outgoing().copy_to_bytes(n));
    ///
    /// let echoed = server.echo_buffered(usize::MAX);
    /// assert_eq!((echoed.messages, echoed.bytes), (2, 6)); // not the ping
    /// let n = server.outgoing().remaining();
    /// client.read_buf().extend_from_slice(&server.outgoing().copy_to_bytes(n));
    /// assert_eq!(client.next_message().unwrap(), Some(Message::text("one")));
    /// assert_eq!(client.next_message().unwrap(), Some(Message::binary(&b"two"[..])));
    /// assert!(matches!(server.next_message().unwrap(), Some(Message::Ping(_))));
    /// ```
    pub fn echo_buffered(&mut self, limit: usize) -> Echoed {
        self.release_lent();
        let mut echoed = Echoed::default();
        if self.state() == State::Closed || self.phase.close_sent() {
            return echoed;
        }
        let Some(rules) = self.echo_rules() else {
            return echoed;
        };
        // Frames echoed are consumed in one step at the end.
        let mut consumed = 0;
        while self.out.len() < limit {
            let Some((lent, key)) = self.whole_frame_at(consumed, rules) else {
                break;
            };
            let frame = &self.read[consumed..consumed + lent.frame_len()];
            let payload = &frame[lent.payload()];
            let echoed_ok = match key {
                // A server's: unmasked into the output, and text checked
                // there, so the read buffer stays as it came.
                Some(_) => {
                    let at = self.out.tail_mut().len();
                    let copy = self.out.extend_unmasked_echo(frame, lent.start as usize);
                    let valid = !lent.text || simdutf8::basic::from_utf8(copy).is_ok();
                    if !valid {
                        self.out.tail_mut().truncate(at);
                    }
                    valid
                }
                // A client's: the payload came in the clear, and goes out
                // masked with a fresh key, as every client frame.
                None => {
                    let valid = !lent.text || simdutf8::basic::from_utf8(payload).is_ok();
                    if valid {
                        let read = std::mem::take(&mut self.read);
                        let payload = &read[consumed..][lent.payload()];
                        self.write_frame(lent.opcode(), false, payload);
                        self.read = read;
                    }
                    valid
                }
            };
            if !echoed_ok {
                break;
            }
            consumed += lent.frame_len();
            echoed.messages += 1;
            echoed.bytes += lent.len as usize;
        }
        self.read.advance(consumed);
        echoed
    }

    /// The bytes an [`echo_buffered`](Self::echo_buffered) of what is
    /// buffered now would take from the front of the read buffer, up to
    /// `limit`: the whole frames it may echo, one after another (text not
    /// yet checked). A server's echo of them is no longer, so a driver that
    /// gives the output this much room first (see
    /// [`OutBuf::replace_buffer`](crate::OutBuf::replace_buffer)) echoes
    /// without growing it.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::{Connection, Message, Role};
    ///
    /// let mut client = Connection::new(Role::Client, Default::default(), None);
    /// let mut server = Connection::new(Role::Server, Default::default(), None);
    /// assert_eq!(server.echo_room_wanted(usize::MAX), 0);
    /// client.send(Message::binary(vec![1; 100])).unwrap();
    /// client.send(Message::text("two")).unwrap();
    /// client.send(Message::binary(vec![1; 70_000])).unwrap(); // left to the receive loop
    /// client.send(Message::text("four")).unwrap();
    /// let n = client.outgoing().remaining();
    /// server.read_buf().extend_from_slice(&client.outgoing().copy_to_bytes(n));
    /// assert_eq!(server.echo_room_wanted(usize::MAX), 106 + 9); // two masked frames
    /// assert_eq!(server.echo_room_wanted(50), 106); // whole frames, to the first past 50
    /// ```
    pub fn echo_room_wanted(&self, limit: usize) -> usize {
        let Some(rules) = self.echo_rules() else {
            return 0;
        };
        let mut at = 0;
        while at < limit {
            let Some((lent, _)) = self.whole_frame_at(at, rules) else {
                break;
            };
            at += lent.frame_len();
        }
        at
    }

    /// Which frames an echo may take from the read buffer, if any.
    fn echo_rules(&self) -> Option<WholeFrames> {
        let mut rules = self.whole_frames()?;
        // What compression applies to is for the receive loop, so that the
        // echo is the same either way.
        if let Some(c) = &self.compression {
            rules.len_below = rules.len_below.min(c.deflater.compresses_from());
        }
        Some(rules)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};

    use crate::mask::extend_masked;
    use crate::{Connection, Echoed, Message, ProtocolError, Role};

    /// A client's whole masked frame.
    fn masked(first: u8, payload: &[u8], key: [u8; 4]) -> BytesMut {
        assert!(payload.len() < 126);
        let mut wire = BytesMut::from(&[first, 0x80 | payload.len() as u8][..]);
        wire.extend_from_slice(&key);
        extend_masked(&mut wire, payload, key);
        wire
    }

    fn sent(conn: &mut Connection) -> Vec<u8> {
        let n = conn.outgoing().remaining();
        conn.outgoing().copy_to_bytes(n).to_vec()
    }

    proptest::proptest! {
        /// The room an echo wants is exactly what it then takes from the
        /// read buffer (valid text), and the echo is no longer: whatever
        /// frames, control frames and a frame cut short follow.
        #[test]
        fn the_room_wanted_is_what_the_echo_takes(
            frames in proptest::collection::vec((0u8..4, 0usize..126), 0..24),
            cut in 0usize..10,
        ) {
            let mut server = Connection::new(Role::Server, Default::default(), None);
            let mut wire = BytesMut::new();
            for (kind, len) in &frames {
                let first = [0x82, 0x81, 0x89, 0x02][*kind as usize]; // binary, text, ping, a fragment
                let payload = vec![b'a'; if *kind == 2 { len % 126 } else { *len }];
                wire.extend_from_slice(&masked(first, &payload, [1, 2, 3, 4]));
            }
            let cut = cut.min(wire.len());
            wire.truncate(wire.len() - cut);
            server.read_buf().extend_from_slice(&wire);
            let wanted = server.echo_room_wanted(usize::MAX);
            let before = server.read_buf().len();
            server.echo_buffered(usize::MAX);
            proptest::prop_assert_eq!(wanted, before - server.read_buf().len());
            proptest::prop_assert!(server.outgoing().len() <= wanted);
        }
    }

    /// Text that is not UTF-8 stops the echo with nothing of it written and
    /// the read buffer as it came; `next_message` then fails on it.
    #[test]
    fn invalid_text_is_neither_echoed_nor_consumed() {
        let mut server = Connection::new(Role::Server, Default::default(), None);
        let good = masked(0x81, b"ok", [1, 2, 3, 4]);
        let bad = masked(0x81, b"a\xffb", [5, 6, 7, 8]);
        server.read_buf().extend_from_slice(&good);
        server.read_buf().extend_from_slice(&bad);
        let echoed = server.echo_buffered(usize::MAX);
        assert_eq!(
            echoed,
            Echoed {
                messages: 1,
                bytes: 2
            }
        );
        assert_eq!(sent(&mut server), b"\x81\x02ok");
        assert_eq!(&server.read_buf()[..], &bad[..]);
        assert_eq!(server.next_message(), Err(ProtocolError::InvalidUtf8));
    }

    /// A length sent in a longer form than it needs goes back in the
    /// shortest (RFC 6455 §5.2), as the two-step path sends it.
    #[test]
    fn an_echo_uses_the_shortest_length_form() {
        let key = [3, 1, 4, 1];
        let mut wire = BytesMut::from(&[0x81, 0x80 | 126, 0, 5][..]);
        wire.extend_from_slice(&key);
        extend_masked(&mut wire, b"hello", key);
        let mut server = Connection::new(Role::Server, Default::default(), None);
        server.read_buf().extend_from_slice(&wire);
        assert_eq!(server.echo_buffered(usize::MAX).messages, 1);
        assert_eq!(sent(&mut server), b"\x81\x05hello");

        let mut two_step = Connection::new(Role::Server, Default::default(), None);
        two_step.read_buf().extend_from_slice(&wire);
        assert!(two_step.lend_buffered());
        two_step.send_lent().unwrap();
        assert_eq!(sent(&mut two_step), b"\x81\x05hello");
    }

    /// The echo stops once the output reaches the limit, and goes on from
    /// there when called again.
    #[test]
    fn the_limit_stops_the_echo_between_frames() {
        let mut server = Connection::new(Role::Server, Default::default(), None);
        for (i, word) in [&b"one"[..], b"two", b"six"].into_iter().enumerate() {
            let key = [i as u8; 4];
            server
                .read_buf()
                .extend_from_slice(&masked(0x82, word, key));
        }
        assert_eq!(server.echo_buffered(1).messages, 1); // over it after one
        assert_eq!(server.echo_buffered(1).messages, 0);
        assert_eq!(sent(&mut server), b"\x82\x03one");
        assert_eq!(server.echo_buffered(10).messages, 2);
        assert_eq!(sent(&mut server), b"\x82\x03two\x82\x03six");
        assert!(server.read_buf().is_empty());
    }

    /// Nothing is echoed once a close frame was sent.
    #[test]
    fn nothing_is_echoed_after_closing() {
        let mut server = Connection::new(Role::Server, Default::default(), None);
        server
            .read_buf()
            .extend_from_slice(&masked(0x81, b"late", [9; 4]));
        server.close(None).unwrap();
        let close = sent(&mut server);
        assert_eq!(server.echo_buffered(usize::MAX), Echoed::default());
        assert!(sent(&mut server).is_empty(), "after {close:?}");
    }

    /// A client echoes what a server sent in the clear, masked with a key
    /// of its own.
    #[test]
    fn a_client_masks_its_echo() {
        let mut client = Connection::new(Role::Client, Default::default(), None);
        client.read_buf().extend_from_slice(b"\x81\x02hi\x82\x01!");
        assert_eq!(client.echo_buffered(usize::MAX).messages, 2);
        let mut server = Connection::new(Role::Server, Default::default(), None);
        server.read_buf().extend_from_slice(&sent(&mut client));
        assert_eq!(server.next_message(), Ok(Some(Message::text("hi"))));
        assert_eq!(server.next_message(), Ok(Some(Message::binary(&b"!"[..]))));
    }
}
