//! The binary frames of `/files`: a 4-byte big-endian peer number, then a
//! payload for the other end. The relay reads only the peer number (to
//! route a sender's frame, or to stamp a receiver's with its number); the
//! first payload byte is the [`Kind`], and the rest is end-to-end business
//! of sender and receiver.
//!
//! ```text
//!  0       4      5
//! +-------+------+------------------+
//! | peer  | kind | body ...         |
//! +-------+------+------------------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::relay_message::Peer;

/// Bytes of the peer number in front of every binary frame.
pub const PEER_HEADER: usize = 4;

/// Bytes a data frame adds to the chunk it carries: peer, kind, `seq`,
/// file, index ([`crate::chunk`]) and the AEAD tag.
pub const CHUNK_OVERHEAD: usize = crate::chunk::DATA_PREFIX + crate::seal::TAG;

/// What a peer frame carries (its first payload byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// The key exchange message: the protocol version
    /// ([`crate::seal::PROTOCOL`]), then SPAKE2's message.
    Pake = 1,
    /// A sealed control message: `seq u64` (its number in
    /// [`crate::seal::Space::Control`]), then ciphertext and tag.
    Sealed = 2,
    /// A sealed chunk or file seal ([`crate::chunk`]).
    Chunk = 3,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Pake, Kind::Sealed, Kind::Chunk];

    /// The kind with this byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == byte)
    }

    /// The name the generated JavaScript uses.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Pake => "PAKE",
            Kind::Sealed => "SEALED",
            Kind::Chunk => "CHUNK",
        }
    }
}

/// A parsed peer frame, borrowing its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFrame<'a> {
    /// The peer number: the destination in a sender's frame; the source in
    /// a frame the relay delivers to the sender; 0 from a receiver.
    pub peer: Peer,
    /// What the body is.
    pub kind: Kind,
    /// After the kind byte.
    pub body: &'a [u8],
}

impl<'a> PeerFrame<'a> {
    /// Parses a frame; `None` if it is too short or of an unknown kind
    /// (a later version's: ignore it).
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let peer = peer_of(data)?;
        let kind = Kind::from_byte(*data.get(PEER_HEADER)?)?;
        Some(Self {
            peer,
            kind,
            body: &data[PEER_HEADER + 1..],
        })
    }
}

/// A frame for `peer` of `kind`, its body the concatenation of `parts`.
pub fn encode(peer: Peer, kind: Kind, parts: &[&[u8]]) -> Bytes {
    let len = PEER_HEADER + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut b = BytesMut::with_capacity(len);
    b.put_u32(peer);
    b.put_u8(kind as u8);
    for p in parts {
        b.put_slice(p);
    }
    b.freeze()
}

/// The peer number a frame starts with; `None` if it is shorter than that.
pub fn peer_of(data: &[u8]) -> Option<Peer> {
    Some(u32::from_be_bytes(
        data.get(..PEER_HEADER)?.try_into().ok()?,
    ))
}

/// The same frame with `peer` in its header: what the relay delivers to a
/// sender from a receiver. `data` must hold at least the header.
pub fn readdress(data: &[u8], peer: Peer) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len());
    out.put_u32(peer);
    out.put_slice(&data[PEER_HEADER..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_then_parse(peer: u32, kind in 1u8..=3, a: Vec<u8>, b: Vec<u8>) {
            let kind = Kind::from_byte(kind).unwrap();
            let data = encode(peer, kind, &[&a, &b]);
            let frame = PeerFrame::parse(&data).unwrap();
            prop_assert_eq!(frame.peer, peer);
            prop_assert_eq!(frame.kind, kind);
            let body = [a.as_slice(), b.as_slice()].concat();
            prop_assert_eq!(frame.body, body.as_slice());
            let moved = readdress(&data, peer ^ 1);
            prop_assert_eq!(peer_of(&moved), Some(peer ^ 1));
            prop_assert_eq!(&moved[PEER_HEADER..], &data[PEER_HEADER..]);
        }

        #[test]
        fn any_bytes_parse_or_not_without_panicking(data: Vec<u8>) {
            let parsed = PeerFrame::parse(&data);
            prop_assert_eq!(parsed.is_some(), data.len() > PEER_HEADER && (1..=3).contains(&data[PEER_HEADER]));
        }
    }
}
