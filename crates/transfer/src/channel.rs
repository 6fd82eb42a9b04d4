//! Control messages sealed into peer frames and opened from them, in
//! order, replays refused; and the numbering of the data frames that
//! follow ([`chunk`](crate::chunk)). Both ends of a transfer use it.

use std::sync::Arc;

use duplex::Message;

use crate::control::Control;
use crate::peer_frame;
use crate::seal::{Direction, Sealer, Space, TAG};
use crate::{Kind, chunk};

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
