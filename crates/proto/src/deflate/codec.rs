//! The per-connection compressor and decompressor.
//!
//! Both write straight into the spare capacity of a `BytesMut`, so a message
//! costs no intermediate buffer. The decompressor never grows its output past
//! the message limit: a decompression bomb (a few KiB that inflate to
//! gigabytes; CVE-2018-1000518 in python-websockets was one) ends in close
//! code 1009 after at most `limit + 1` bytes of output.
//!
//! zlib state is allocated on first use, so an idle connection that
//! negotiated compression but never used it costs nothing extra.
//!
//! ```
//! use bytes::BytesMut;
//! use duplex_proto::deflate::codec::{Deflater, Inflater};
//! use duplex_proto::{DeflateParams, Role};
//!
//! let params = DeflateParams::default();
//! let (mut wire, mut plain) = (BytesMut::new(), BytesMut::new());
//! Deflater::new(&params, Role::Server, 1, 0).compress(&[b'a'; 1000], &mut wire);
//! assert!(wire.len() < 20);
//! let mut inflater = Inflater::new(&params, Role::Client);
//! inflater.inflate(&wire, &mut plain, 1 << 20).unwrap();
//! inflater.finish_message(&mut plain, 1 << 20).unwrap();
//! assert_eq!(plain.len(), 1000);
//! ```

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::DeflateParams;
use crate::Role;
use crate::error::ProtocolError;

/// The four bytes a sync flush ends with; RFC 7692 strips them on the wire.
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses outgoing messages.
///
/// ```
/// use duplex_proto::{DeflateParams, Role, deflate::{Deflater, Inflater}};
/// let params = DeflateParams::default();
/// let mut deflater = Deflater::new(&params, Role::Client, 6, 0);
/// let mut inflater = Inflater::new(&params, Role::Server);
/// let mut wire = bytes::BytesMut::new();
/// deflater.compress(b"hello hello hello hello", &mut wire);
/// let mut plain = bytes::BytesMut::new();
/// inflater.inflate(&wire, &mut plain, 1 << 20).unwrap();
/// inflater.finish_message(&mut plain, 1 << 20).unwrap();
/// assert_eq!(&plain[..], b"hello hello hello hello");
/// ```
pub struct Deflater {
    z: Option<Compress>,
    level: u32,
    window_bits: u8,
    no_context_takeover: bool,
    threshold: usize,
}

impl Deflater {
    /// A compressor for the side `role` of a connection with these parameters.
    ///
    /// ```
    /// use duplex_proto::{DeflateParams, Role, deflate::Deflater};
    /// let params = DeflateParams { server_max_window_bits: 8, ..Default::default() };
    /// let deflater = Deflater::new(&params, Role::Server, 1, 64);
    /// assert!(!deflater.should_compress(1000)); // zlib has no 8-bit window
    /// ```
    pub fn new(params: &DeflateParams, role: Role, level: u32, threshold: usize) -> Self {
        let (window_bits, no_context_takeover) = match role {
            Role::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
            ),
        };
        Self {
            z: None,
            level: level.min(9),
            window_bits,
            no_context_takeover,
            threshold,
        }
    }

    /// Whether a message of `len` bytes should be compressed.
    ///
    /// zlib cannot produce a raw deflate stream with a 256-byte (8-bit)
    /// window; rather than silently use a larger window than the peer
    /// allowed (as zlib-based peers do), such a connection sends its messages
    /// uncompressed, which RFC 7692 permits.
    ///
    /// ```
    /// use duplex_proto::{DeflateParams, Role, deflate::Deflater};
    /// let deflater = Deflater::new(&DeflateParams::default(), Role::Client, 1, 64);
    /// assert!(!deflater.should_compress(63)); // under the threshold
    /// assert!(deflater.should_compress(64));
    /// ```
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.compresses_from()
    }

    /// The shortest message compressed (`usize::MAX`: none), for a caller
    /// deciding many messages at once.
    ///
    /// ```
    /// use duplex_proto::{DeflateParams, Role, deflate::Deflater};
    /// let deflater = Deflater::new(&DeflateParams::default(), Role::Client, 1, 64);
    /// assert_eq!(deflater.compresses_from(), 64);
    /// ```
    pub fn compresses_from(&self) -> usize {
        if self.window_bits > 8 {
            self.threshold
        } else {
            usize::MAX
        }
    }

    /// Appends the compressed form of `input` (trailer stripped) to `out`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::{DeflateParams, Role, deflate::Deflater};
    /// let mut deflater = Deflater::new(&DeflateParams::default(), Role::Client, 1, 0);
    /// let mut out = BytesMut::new();
    /// deflater.compress(b"", &mut out);
    /// assert_eq!(&out[..], [0x00]); // an empty message: an empty stored block
    /// ```
    pub fn compress(&mut self, input: &[u8], out: &mut BytesMut) {
        let (level, bits) = (self.level, self.window_bits.max(9));
        let z = self.z.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        let start_in = z.total_in();
        let start_len = out.len();
        loop {
            let consumed = (z.total_in() - start_in) as usize;
            let remaining = input.len() - consumed;
            out.reserve(remaining.min(256 << 10) + 64);
            let before = z.total_out();
            let spare = out.spare_capacity_mut();
            let room = spare.len();
            // Only a stream error can fail here, and our stream is always valid.
            z.compress_uninit(&input[consumed..], spare, FlushCompress::Sync)
                .expect("deflate on a valid stream");
            let produced = (z.total_out() - before) as usize;
            // SAFETY: zlib initialised exactly `produced` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + produced) };
            let done = (z.total_in() - start_in) as usize == input.len();
            if done && produced < room {
                break;
            }
        }
        if out[start_len..].ends_with(&SYNC_TRAILER) {
            out.truncate(out.len() - SYNC_TRAILER.len());
        }
        if out.len() == start_len {
            // Nothing new to flush (an empty message after earlier ones): an
            // empty payload would make the receiver read the trailer it
            // appends as a stored block's length. RFC 7692 §7.2.3.6: send
            // 0x00, the header of an empty stored block the trailer completes.
            out.extend_from_slice(&[0x00]);
        }
        if self.no_context_takeover {
            z.reset();
        }
    }
}

/// Decompresses incoming messages, frame by frame.
///
/// ```
/// use bytes::BytesMut;
/// use duplex_proto::{DeflateParams, ProtocolError, Role, deflate::Inflater};
/// let mut inflater = Inflater::new(&DeflateParams::default(), Role::Client);
/// let mut out = BytesMut::new();
/// let bad = inflater.inflate(&[0xff, 0xff], &mut out, 1 << 20);
/// assert_eq!(bad, Err(ProtocolError::InvalidCompressedData));
/// ```
pub struct Inflater {
    z: Option<Decompress>,
    no_context_takeover: bool,
}

/// How far [`Inflater::inflate_some`] got.
///
/// ```
/// use bytes::BytesMut;
/// use duplex_proto::{DeflateParams, Role, deflate::{Inflated, Inflater}};
/// let mut inflater = Inflater::new(&DeflateParams::default(), Role::Client);
/// let mut out = BytesMut::new();
/// let done = inflater.inflate_some(b"\xf2H\xcd\xc9\xc9\x07\x00", &mut out, 100, 100);
/// assert_eq!(done, Ok(Inflated::Done));
/// assert_eq!(&out[..], b"Hello");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflated {
    /// All the input is inflated.
    Done,
    /// Stopped at the requested size, having consumed this much input.
    Paused {
        /// Input bytes consumed.
        consumed: usize,
    },
}

impl Inflater {
    /// A decompressor for the side `role` of a connection: it reads what the
    /// *peer* compressed.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::{DeflateParams, Role, deflate::Inflater};
    /// // A client inflates what the server compressed: "Hello" (RFC 7692 §7.2.3.1).
    /// let mut inflater = Inflater::new(&DeflateParams::default(), Role::Client);
    /// let mut out = BytesMut::new();
    /// inflater.inflate(b"\xf2H\xcd\xc9\xc9\x07\x00", &mut out, 100).unwrap();
    /// assert_eq!(&out[..], b"Hello");
    /// ```
    pub fn new(params: &DeflateParams, role: Role) -> Self {
        let no_context_takeover = match role {
            Role::Server => params.client_no_context_takeover,
            Role::Client => params.server_no_context_takeover,
        };
        Self {
            z: None,
            no_context_takeover,
        }
    }

    /// Inflates one frame's payload, appending to `out`, and fails once
    /// `out` would grow past `limit` bytes.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::{DeflateParams, ProtocolError, Role, deflate::Inflater};
    /// let mut inflater = Inflater::new(&DeflateParams::default(), Role::Server);
    /// let mut out = BytesMut::new();
    /// let too_big = inflater.inflate(b"\xf2H\xcd\xc9\xc9\x07\x00", &mut out, 4); // "Hello"
    /// assert_eq!(too_big, Err(ProtocolError::MessageTooLarge { max: 4 }));
    /// ```
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        match self.inflate_some(input, out, limit, usize::MAX)? {
            Inflated::Done => Ok(()),
            Inflated::Paused { .. } => unreachable!("no stop below the limit"),
        }
    }

    /// Like [`inflate`](Self::inflate), but stops once `out` holds
    /// `stop_at` bytes, if that is within `limit`: a memory budget then
    /// decides whether the rest may be inflated. Call again with the input
    /// not consumed (possibly none: zlib may hold output back) to go on.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::deflate::{Deflater, Inflated, Inflater};
    /// use duplex_proto::{DeflateParams, Role};
    ///
    /// let params = DeflateParams::default();
    /// let mut compressed = BytesMut::new();
    /// Deflater::new(&params, Role::Client, 6, 0).compress(&[7u8; 100_000], &mut compressed);
    /// let mut inflater = Inflater::new(&params, Role::Server);
    /// let mut out = BytesMut::new();
    /// let limit = 1 << 20;
    /// let Inflated::Paused { consumed } =
    ///     inflater.inflate_some(&compressed, &mut out, limit, 4096).unwrap()
    /// else {
    ///     panic!("100,000 bytes do not fit in 4096");
    /// };
    /// assert_eq!(out.len(), 4096);
    /// let rest = inflater.inflate_some(&compressed[consumed..], &mut out, limit, usize::MAX);
    /// assert_eq!(rest.unwrap(), Inflated::Done);
    /// inflater.finish_message(&mut out, limit).unwrap();
    /// assert_eq!(&out[..], &[7u8; 100_000][..]);
    /// ```
    pub fn inflate_some(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
        stop_at: usize,
    ) -> Result<Inflated, ProtocolError> {
        // A 15-bit window reads streams made with any smaller window too.
        let z = self
            .z
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        // One byte past the limit tells a message that is too large.
        let cap = stop_at.min(limit.saturating_add(1));
        let mut consumed = 0;
        loop {
            if out.len() >= cap && cap <= limit {
                return Ok(Inflated::Paused { consumed });
            }
            let room = cap - out.len();
            if out.capacity() == out.len() {
                out.reserve((input.len() * 4).clamp(4096, 1 << 20).min(room));
            }
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let spare = out.spare_capacity_mut();
            let spare_len = spare.len().min(room);
            let status = z
                .decompress_uninit(
                    &input[consumed..],
                    &mut spare[..spare_len],
                    FlushDecompress::Sync,
                )
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let produced = (z.total_out() - before_out) as usize;
            let used = (z.total_in() - before_in) as usize;
            // SAFETY: zlib initialised exactly `produced` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + produced) };
            consumed += used;
            if out.len() > limit {
                return Err(ProtocolError::MessageTooLarge { max: limit });
            }
            if status == Status::StreamEnd {
                // A final block ends the deflate stream; a peer may start a new one.
                z.reset(false);
            }
            if consumed == input.len() && produced < spare_len {
                return Ok(Inflated::Done);
            }
            if used == 0 && produced == 0 && status != Status::StreamEnd {
                // No progress with input left and room to write: the stream is stuck.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }

    /// Ends a message: feeds the stripped trailer, and resets the window if
    /// the peer does not keep context between messages.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::{DeflateParams, Role, deflate::Inflater};
    /// let mut inflater = Inflater::new(&DeflateParams::default(), Role::Client);
    /// let mut out = BytesMut::new();
    /// inflater.inflate(b"\xf2H\xcd\xc9\xc9\x07\x00", &mut out, 100).unwrap();
    /// inflater.finish_message(&mut out, 100).unwrap(); // the stripped 00 00 ff ff
    /// assert_eq!(&out[..], b"Hello");
    /// ```
    pub fn finish_message(
        &mut self,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.inflate(&SYNC_TRAILER, out, limit)?;
        if self.no_context_takeover {
            if let Some(z) = &mut self.z {
                z.reset(false);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(params: DeflateParams) -> (Deflater, Inflater) {
        (
            Deflater::new(&params, Role::Server, 6, 0),
            Inflater::new(&params, Role::Client),
        )
    }

    fn round_trip(d: &mut Deflater, i: &mut Inflater, msg: &[u8]) -> Vec<u8> {
        let mut wire = BytesMut::new();
        d.compress(msg, &mut wire);
        let mut out = BytesMut::new();
        // Feed it in two pieces, as two frames would arrive.
        let mid = wire.len() / 2;
        i.inflate(&wire[..mid], &mut out, usize::MAX).unwrap();
        i.inflate(&wire[mid..], &mut out, usize::MAX).unwrap();
        i.finish_message(&mut out, usize::MAX).unwrap();
        out.to_vec()
    }

    proptest! {
        #[test]
        fn messages_round_trip_with_and_without_context(msgs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 1..5), nct: bool, bits in 9u8..=15) {
            let params = DeflateParams { server_no_context_takeover: nct, server_max_window_bits: bits, ..DeflateParams::default() };
            let (mut d, mut i) = pair(params);
            for msg in &msgs {
                prop_assert_eq!(&round_trip(&mut d, &mut i, msg), msg);
            }
        }
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let (mut d, _) = pair(DeflateParams::default());
        let msg = b"{\"channel\":\"news\",\"data\":\"the same words again\"}";
        let mut first = BytesMut::new();
        d.compress(msg, &mut first);
        let mut second = BytesMut::new();
        d.compress(msg, &mut second);
        assert!(
            second.len() < first.len() / 2,
            "{} vs {}",
            second.len(),
            first.len()
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let (mut d, mut i) = pair(DeflateParams::default());
        let zeros = vec![0u8; 8 << 20];
        let mut wire = BytesMut::new();
        d.compress(&zeros, &mut wire);
        assert!(wire.len() < 64 << 10);
        let mut out = BytesMut::new();
        let err = i.inflate(&wire, &mut out, 1 << 20).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooLarge { max: 1 << 20 });
        assert!(out.len() <= (1 << 20) + 1);
        assert!(out.capacity() < 4 << 20, "capacity {}", out.capacity());
    }

    #[test]
    fn empty_messages_between_others_stay_decodable() {
        for nct in [false, true] {
            let (mut d, mut i) = pair(DeflateParams {
                server_no_context_takeover: nct,
                ..DeflateParams::default()
            });
            for msg in [&b"a"[..], b"", b"", b"hello", b"", b"hello"] {
                assert_eq!(
                    round_trip(&mut d, &mut i, msg),
                    msg,
                    "no context takeover: {nct}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (_, mut i) = pair(DeflateParams::default());
        let mut out = BytesMut::new();
        assert_eq!(
            i.inflate(&[0xff; 32], &mut out, 1 << 20),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn eight_bit_windows_send_uncompressed() {
        let params = DeflateParams {
            server_max_window_bits: 8,
            ..DeflateParams::default()
        };
        assert!(!Deflater::new(&params, Role::Server, 6, 0).should_compress(1000));
        assert!(Deflater::new(&params, Role::Client, 6, 0).should_compress(1000));
    }
}
