//! Data frames (`Kind::Chunk`): a file's chunks, sealed, then the file's
//! seal carrying its [digest](crate::digest).
//!
//! ```text
//!  0      4      5       13      17       25             n-16   n
//! +------+------+-------+-------+--------+--------------+------+
//! | peer | kind | seq   | file  | index  | ciphertext   | tag  |
//! +------+------+-------+-------+--------+--------------+------+
//!                <-------- AAD --------->
//! ```
//!
//! `seq` numbers the frames of [`Space::Data`] one way (the nonce);
//! `index` below the file's [chunk count](crate::digest::chunk_count) is a
//! chunk, and `index` equal to it is the file's seal, whose plaintext is
//! the 32-byte file digest. A frame is built in one buffer that is reused
//! for the next (no allocation per chunk once the peer let go of it): the
//! file is read straight into it and sealed in place.
//!
//! ```
//! use bytes::BytesMut;
//! use duplex_transfer::chunk::{self, ChunkHeader};
//! use duplex_transfer::seal::{Direction, Sealer};
//! use duplex_transfer::PeerFrame;
//!
//! let sealer = Sealer::from_key(&[9; 32]);
//! let header = ChunkHeader { seq: 0, file: 2, index: 7 };
//! let mut buf = BytesMut::new();
//! chunk::start(&mut buf, 1, header, 5).copy_from_slice(b"bytes");
//! chunk::seal(&mut buf, &sealer, Direction::ToReceiver);
//! let mut frame = buf.split();
//! let body = &mut frame[duplex_transfer::peer_frame::PEER_HEADER + 1..];
//! let (got, plain) = chunk::open(&sealer, Direction::ToReceiver, body).unwrap();
//! assert_eq!((got, &plain[..]), (header, &b"bytes"[..]));
//! ```

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::peer_frame::{Kind, PEER_HEADER};
use crate::relay_message::Peer;
use crate::seal::{Direction, Sealer, Space, TAG};

/// Bytes of `seq ‖ file ‖ index`, the AAD.
pub const CHUNK_HEADER: usize = 8 + 4 + 8;

/// Bytes in front of the plaintext in a data frame.
pub const DATA_PREFIX: usize = PEER_HEADER + 1 + CHUNK_HEADER;

/// What a data frame says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The frame's number in [`Space::Data`]: its nonce.
    pub seq: u64,
    /// The manifest entry.
    pub file: u32,
    /// The chunk; the file's chunk count for its seal.
    pub index: u64,
}

impl ChunkHeader {
    /// The header's bytes (the AAD).
    pub fn encode(&self) -> [u8; CHUNK_HEADER] {
        let mut b = [0u8; CHUNK_HEADER];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.file.to_be_bytes());
        b[12..].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    /// Parses the header at the start of a data frame's body.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let b = body.get(..CHUNK_HEADER)?;
        Some(Self {
            seq: u64::from_be_bytes(b[..8].try_into().ok()?),
            file: u32::from_be_bytes(b[8..12].try_into().ok()?),
            index: u64::from_be_bytes(b[12..].try_into().ok()?),
        })
    }
}

/// Starts a data frame for `peer` in `buf` (cleared first; its allocation
/// is reused when nothing else holds it) and returns the `len` bytes of
/// plaintext to fill in.
pub fn start(buf: &mut BytesMut, peer: Peer, header: ChunkHeader, len: usize) -> &mut [u8] {
    buf.clear();
    let total = DATA_PREFIX + len + TAG;
    if !buf.try_reclaim(total) {
        buf.reserve(total);
    }
    buf.put_u32(peer);
    buf.put_u8(Kind::Chunk as u8);
    buf.put_slice(&header.encode());
    buf.resize(DATA_PREFIX + len, 0);
    &mut buf[DATA_PREFIX..]
}

/// Seals the frame [`start`] began, in place, and appends the tag.
pub fn seal(buf: &mut BytesMut, sealer: &Sealer, dir: Direction) {
    let header = ChunkHeader::parse(&buf[PEER_HEADER + 1..]).expect("started by chunk::start");
    let (prefix, plain) = buf.split_at_mut(DATA_PREFIX);
    let aad = &prefix[PEER_HEADER + 1..];
    let tag = sealer.seal_in_place(dir, Space::Data, header.seq, aad, plain);
    buf.put_slice(&tag);
}

/// Opens a data frame's body (after the kind byte) in place: its header
/// and plaintext, or `None` if it is too short, altered, or sealed with
/// another key.
pub fn open<'a>(
    sealer: &Sealer,
    dir: Direction,
    body: &'a mut [u8],
) -> Option<(ChunkHeader, &'a mut [u8])> {
    let header = ChunkHeader::parse(body)?;
    if body.len() < CHUNK_HEADER + TAG {
        return None;
    }
    let (aad, sealed) = body.split_at_mut(CHUNK_HEADER);
    let plain = sealer.open_in_place(dir, Space::Data, header.seq, aad, sealed)?;
    Some((header, plain))
}

/// The sending side of one peer's data frames: numbers them in
/// [`Space::Data`], one after another.
pub struct Outbound {
    sealer: Arc<Sealer>,
    dir: Direction,
    next: u64,
}

impl Outbound {
    /// Data frames sealed with `sealer` going `dir`, numbered from 0.
    pub fn new(sealer: Arc<Sealer>, dir: Direction) -> Self {
        Self {
            sealer,
            dir,
            next: 0,
        }
    }

    /// Starts the next frame (see [`start`]): the plaintext to fill in.
    pub fn start<'a>(
        &mut self,
        buf: &'a mut BytesMut,
        peer: Peer,
        file: u32,
        index: u64,
        len: usize,
    ) -> &'a mut [u8] {
        let seq = self.next;
        self.next += 1;
        start(buf, peer, ChunkHeader { seq, file, index }, len)
    }

    /// Seals the frame begun with [`Outbound::start`].
    pub fn seal(&self, buf: &mut BytesMut) {
        seal(buf, &self.sealer, self.dir);
    }
}

/// The receiving side of one peer's data frames: opens them and refuses
/// a frame replayed (numbered at or below one already opened).
pub struct Inbound {
    sealer: Arc<Sealer>,
    dir: Direction,
    next: u64,
}

impl Inbound {
    /// Data frames sealed with `sealer` coming `dir`.
    pub fn new(sealer: Arc<Sealer>, dir: Direction) -> Self {
        Self {
            sealer,
            dir,
            next: 0,
        }
    }

    /// Opens a data frame's body (after the kind byte) in place; `None`
    /// if it does not open or is a replay.
    pub fn open<'a>(&mut self, body: &'a mut [u8]) -> Option<(ChunkHeader, &'a mut [u8])> {
        if ChunkHeader::parse(body)?.seq < self.next {
            return None;
        }
        let (header, plain) = open(&self.sealer, self.dir, body)?;
        self.next = header.seq + 1;
        Some((header, plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerFrame;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sealed_frames_open_and_altered_ones_do_not(
            seq: u64, file: u32, index: u64, peer: u32,
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            flip in any::<prop::sample::Index>(),
        ) {
            let sealer = Sealer::from_key(&[3; 32]);
            let header = ChunkHeader { seq, file, index };
            let mut buf = BytesMut::new();
            start(&mut buf, peer, header, data.len()).copy_from_slice(&data);
            seal(&mut buf, &sealer, Direction::ToReceiver);
            prop_assert_eq!(buf.len(), DATA_PREFIX + data.len() + TAG);
            let frame = buf.split().freeze();
            let parsed = PeerFrame::parse(&frame).unwrap();
            prop_assert_eq!((parsed.peer, parsed.kind), (peer, Kind::Chunk));
            let mut body = parsed.body.to_vec();
            let (got, plain) = open(&sealer, Direction::ToReceiver, &mut body).unwrap();
            prop_assert_eq!(got, header);
            prop_assert_eq!(&plain[..], &data[..]);
            // Any bit changed after the kind byte (header, ciphertext or
            // tag) is refused.
            let mut altered = parsed.body.to_vec();
            let at = flip.index(altered.len());
            altered[at] ^= 0x10;
            prop_assert!(open(&sealer, Direction::ToReceiver, &mut altered).is_none());
            prop_assert!(open(&sealer, Direction::ToSender, &mut parsed.body.to_vec()).is_none());
        }
    }

    #[test]
    fn a_replayed_frame_is_refused() {
        let sealer = Arc::new(Sealer::from_key(&[5; 32]));
        let mut out = Outbound::new(sealer.clone(), Direction::ToReceiver);
        let mut inbound = Inbound::new(sealer, Direction::ToReceiver);
        let mut frames = Vec::new();
        for index in 0..3 {
            let mut buf = BytesMut::new();
            out.start(&mut buf, 0, 0, index, 4).copy_from_slice(b"data");
            out.seal(&mut buf);
            frames.push(buf.split().freeze());
        }
        let body = |i: usize| frames[i][PEER_HEADER + 1..].to_vec();
        // A gap (frame 1 lost) is fine; going back is not.
        assert_eq!(inbound.open(&mut body(0)).unwrap().0.index, 0);
        assert_eq!(inbound.open(&mut body(2)).unwrap().0.index, 2);
        assert!(inbound.open(&mut body(1)).is_none());
        assert!(inbound.open(&mut body(2)).is_none());
    }

    #[test]
    fn the_buffer_is_reused_once_the_frame_is_let_go() {
        let sealer = Sealer::from_key(&[3; 32]);
        let mut buf = BytesMut::new();
        let header = ChunkHeader {
            seq: 0,
            file: 0,
            index: 0,
        };
        start(&mut buf, 1, header, 1 << 16);
        seal(&mut buf, &sealer, Direction::ToReceiver);
        let first = buf.split().freeze();
        let at = first.as_ptr();
        drop(first);
        start(&mut buf, 1, ChunkHeader { seq: 1, ..header }, 1 << 16);
        assert_eq!(buf.as_ptr(), at);
        assert!(open(&sealer, Direction::ToReceiver, &mut []).is_none());
    }
}
