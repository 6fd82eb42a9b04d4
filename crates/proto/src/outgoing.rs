//! The outgoing byte queue: frames waiting to be written, in order.
//!
//! Small frames are appended to one contiguous tail, so that many replies to
//! one read go out in a single `write` (the pipelined benchmark row in
//! `shared/anchors.md` is decided here). Large unmasked payloads are queued
//! as shared `Bytes` instead of copied, and written with `writev`.
//!
//! ```
//! use bytes::{Buf, Bytes};
//! use duplex_proto::outgoing::OutBuf;
//! let mut out = OutBuf::default();
//! out.extend_from_slice(b"\x82\x7e\x10\x00"); // a header, copied
//! out.push(Bytes::from(vec![0u8; 4096])); // its payload, shared
//! assert_eq!(out.len(), 4100);
//! assert_eq!(out.chunk(), b"\x82\x7e\x10\x00"); // in order
//! ```

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::FrameHeader;
use crate::mask::mask_into;

/// Payloads at least this long are queued by reference rather than copied.
pub(crate) const ZERO_COPY_MIN: usize = 4096;

/// Bytes waiting to be written. Implements [`Buf`], including
/// `chunks_vectored`, so an I/O layer can hand it to `writev` directly.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use duplex_proto::OutBuf;
/// let mut out = OutBuf::default();
/// out.extend_from_slice(b"ab");
/// out.push(Bytes::from_static(b"cd"));
/// out.extend_from_slice(b"ef");
/// assert_eq!(out.remaining(), 6);
/// assert_eq!(&out.copy_to_bytes(6)[..], b"abcdef");
/// ```
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Shared payloads and the tail bytes queued before them, in order;
    /// boxed and allocated on first use (most connections never queue a
    /// payload by reference, and an idle connection holds only the pointer).
    chunks: Option<Box<Chunks>>,
    /// Bytes after the last chunk.
    tail: BytesMut,
}

/// Copies `len` bytes from `src` to `dst`; lengths up to 32 without a call.
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes, and they do not
/// overlap.
#[inline(always)]
unsafe fn copy_payload(src: *const u8, dst: *mut u8, len: usize) {
    // Two pieces of `K` bytes, from the start and to the end: together they
    // cover any length from K to 2K.
    #[inline(always)]
    unsafe fn two<const K: usize>(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: K <= len, so both pieces lie within the first `len` bytes.
        unsafe {
            let (a, b) = (
                src.cast::<[u8; K]>().read_unaligned(),
                src.add(len - K).cast::<[u8; K]>().read_unaligned(),
            );
            dst.cast::<[u8; K]>().write_unaligned(a);
            dst.add(len - K).cast::<[u8; K]>().write_unaligned(b);
        }
    }
    // SAFETY: each arm's length is within the bounds `two` needs.
    unsafe {
        match len {
            0 => {}
            1..4 => {
                // First, middle and last byte: covers 1 to 3.
                *dst = *src;
                *dst.add(len / 2) = *src.add(len / 2);
                *dst.add(len - 1) = *src.add(len - 1);
            }
            4..8 => two::<4>(src, dst, len),
            8..16 => two::<8>(src, dst, len),
            16..=32 => two::<16>(src, dst, len),
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// Copies `len` bytes from `src` to `dst` XORed with the mask `key` from
/// its first byte (RFC 6455 §5.3): a received payload unmasked as it is
/// copied, in one pass; lengths up to 32 as two overlapping pieces, like
/// [`copy_payload`], each XORed with the key at its own phase.
///
/// # Safety
/// As for [`copy_payload`].
#[inline(always)]
unsafe fn copy_unmasked(src: *const u8, dst: *mut u8, len: usize, key: [u8; 4]) {
    // The key starting `at` bytes into the payload, as 4 bytes in memory
    // order (little-endian arithmetic, so the same on every target).
    let key_at = |at: usize| u32::from_le_bytes(key).rotate_right(8 * (at as u32 & 3));
    let wide = |k: u32| u64::from(k) | (u64::from(k) << 32);
    // SAFETY: each arm reads and writes within the first `len` bytes.
    unsafe {
        let load = |at: usize| src.add(at);
        match len {
            0 => {}
            1..4 => {
                for (i, k) in key.into_iter().enumerate().take(len) {
                    *dst.add(i) = *load(i) ^ k;
                }
            }
            4..8 => {
                for at in [0, len - 4] {
                    let word = u32::from_le_bytes(load(at).cast::<[u8; 4]>().read_unaligned());
                    let word = (word ^ key_at(at)).to_le_bytes();
                    dst.add(at).cast::<[u8; 4]>().write_unaligned(word);
                }
            }
            8..16 => {
                for at in [0, len - 8] {
                    let word = u64::from_le_bytes(load(at).cast::<[u8; 8]>().read_unaligned());
                    let word = (word ^ wide(key_at(at))).to_le_bytes();
                    dst.add(at).cast::<[u8; 8]>().write_unaligned(word);
                }
            }
            16..=32 => {
                for at in [0, len - 16] {
                    let k = u128::from(wide(key_at(at)));
                    let word = u128::from_le_bytes(load(at).cast::<[u8; 16]>().read_unaligned());
                    let word = (word ^ (k | (k << 64))).to_le_bytes();
                    dst.add(at).cast::<[u8; 16]>().write_unaligned(word);
                }
            }
            _ => {
                mask_into(
                    std::slice::from_raw_parts(src, len),
                    std::slice::from_raw_parts_mut(dst.cast::<std::mem::MaybeUninit<u8>>(), len),
                    key,
                );
            }
        }
    }
}

#[derive(Debug, Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    len: usize,
}

impl OutBuf {
    /// Appends bytes, copying them into the tail.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.extend_from_slice(b"ab");
    /// out.extend_from_slice(b"cd");
    /// assert_eq!(out.chunk(), b"abcd"); // one contiguous tail
    /// ```
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
    }

    /// Appends a frame: its header, then its payload as it is (for a frame
    /// that is not masked), in one reservation.
    ///
    /// At the sizes of most frames a call to `memcpy` costs more than the
    /// copy itself (a call through the PLT, then a branch on the length),
    /// and a pipelined echo would make two per message. So the header is
    /// stored as one 16-byte value (only its own bytes count), and a
    /// payload of up to 32 bytes as two overlapping pieces of fixed size.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::OutBuf;
    /// use duplex_proto::frame::{FrameHeader, OpCode};
    /// let mut out = OutBuf::default();
    /// let header = FrameHeader {
    ///     fin: true, rsv1: false, opcode: OpCode::Binary, mask: None, payload_len: 5,
    /// };
    /// out.extend_frame(&header, b"hello");
    /// assert_eq!(out.chunk(), b"\x82\x05hello");
    /// ```
    #[inline]
    pub fn extend_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let (head, n) = header.to_bytes();
        let len = payload.len();
        let tail = &mut self.tail;
        tail.reserve(head.len() + len);
        let at = tail.len();
        let dst = tail.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: `reserve` made room for 16 + len bytes past the tail's
        // length, and n <= 16; every copy stays within that and within its
        // source, and the length grows only by what was written.
        unsafe {
            dst.cast::<[u8; 16]>().write_unaligned(head);
            copy_payload(payload.as_ptr(), dst.add(n), len);
            tail.set_len(at + n + len);
        }
    }

    /// Appends a server's echo of `frame`, a client's whole masked frame
    /// of at most 65,535 payload bytes whose header is `start` bytes long
    /// (6 or 8, its last 4 the key): the same first byte, the payload's
    /// length in its shortest form (RFC 6455 §5.2; the client may have used
    /// a longer one), then the payload, unmasked as it is copied. Returns
    /// the unmasked copy (to check text on).
    ///
    /// The header is stored as 4 bytes whatever its length: for a 2-byte
    /// one the other two are overwritten by the payload or lie past the
    /// tail's length.
    #[inline]
    pub(crate) fn extend_unmasked_echo(&mut self, frame: &[u8], start: usize) -> &mut [u8] {
        assert!(start == 6 || start == 8, "a masked header of 6 or 8 bytes");
        let (header, payload) = frame.split_at(start);
        let key: [u8; 4] = header[start - 4..].try_into().expect("4 bytes");
        let len = payload.len();
        let [hi, lo] = u16::try_from(len).expect("a 16-bit length").to_be_bytes();
        let (echo_header, head) = match u8::try_from(len) {
            Ok(short) if short < 126 => ([header[0], short, hi, lo], 2),
            _ => ([header[0], 126, hi, lo], 4),
        };
        let tail = &mut self.tail;
        tail.reserve(4 + len);
        let at = tail.len();
        let dst = tail.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        // SAFETY: `reserve` made room for 4 + len bytes past the length, and
        // head <= 4; the length grows only by what was written.
        unsafe {
            dst.cast::<[u8; 4]>().write_unaligned(echo_header);
            copy_unmasked(payload.as_ptr(), dst.add(head), len, key);
            tail.set_len(at + head + len);
        }
        &mut tail[at + head..]
    }

    /// Bytes the tail can take before it must grow.
    ///
    /// ```
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// assert_eq!(out.room(), 0);
    /// out.provide(bytes::BytesMut::with_capacity(4096));
    /// out.extend_from_slice(b"frame");
    /// assert!(out.room() >= 4091);
    /// ```
    pub fn room(&self) -> usize {
        self.tail.capacity() - self.tail.len()
    }

    /// Moves the tail into `buf` (a larger buffer from the I/O layer's
    /// pool) and returns the tail's old buffer, emptied, for the pool: a
    /// copy of what the tail holds now, where growing it would copy it
    /// once per doubling, and the allocator perhaps everything behind it.
    ///
    /// ```
    /// use bytes::{Buf, BytesMut};
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.provide(BytesMut::with_capacity(1024));
    /// out.extend_from_slice(b"first");
    /// let old = out.replace_buffer(BytesMut::with_capacity(64 << 10));
    /// assert!(old.is_empty() && old.capacity() >= 1024);
    /// assert!(out.room() >= (64 << 10) - 5);
    /// out.extend_from_slice(b", second");
    /// assert_eq!(out.chunk(), b"first, second");
    /// ```
    pub fn replace_buffer(&mut self, mut buf: BytesMut) -> BytesMut {
        buf.clear();
        buf.extend_from_slice(&self.tail);
        let mut old = std::mem::replace(&mut self.tail, buf);
        old.clear();
        old
    }

    /// The tail, for encoders that write in place.
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues a shared buffer without copying it.
    ///
    /// ```
    /// use bytes::{Buf, Bytes};
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.extend_from_slice(b"head:");
    /// out.push(Bytes::from_static(b"payload"));
    /// assert_eq!(out.chunk(), b"head:"); // what was queued first goes first
    /// out.advance(5);
    /// assert_eq!(out.chunk(), b"payload");
    /// ```
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let chunks = self.chunks.get_or_insert_default();
        if !self.tail.is_empty() {
            // Keep order: what is already in the tail goes first.
            let head = self.tail.split().freeze();
            chunks.len += head.len();
            chunks.queue.push_back(head);
        }
        chunks.len += bytes.len();
        chunks.queue.push_back(bytes);
    }

    /// Bytes waiting.
    ///
    /// ```
    /// use bytes::{Buf, Bytes};
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.extend_from_slice(b"ab");
    /// out.push(Bytes::from_static(b"cde"));
    /// assert_eq!(out.len(), 5);
    /// out.advance(3);
    /// assert_eq!(out.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.tail.len() + self.chunks.as_ref().map_or(0, |c| c.len)
    }

    /// Nothing waiting.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// assert!(out.is_empty());
    /// out.extend_from_slice(b"x");
    /// out.advance(1);
    /// assert!(out.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the tail's buffer out if nothing is waiting, so an I/O layer can
    /// pool it while the connection is idle.
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.provide(bytes::BytesMut::with_capacity(4096));
    /// out.extend_from_slice(b"frame");
    /// assert!(out.recycle().is_none()); // still waiting to be written
    /// out.advance(5);
    /// let buffer = out.recycle().unwrap(); // to a pool, while idle
    /// assert!(buffer.capacity() >= 4000 && out.needs_buffer());
    /// ```
    pub fn recycle(&mut self) -> Option<BytesMut> {
        (self.is_empty() && self.tail.capacity() > 0).then(|| {
            self.chunks = None;
            std::mem::take(&mut self.tail)
        })
    }

    /// Drops everything waiting, frames cut short included: for a
    /// connection being torn down whose peer reads nothing, so that what it
    /// holds is freed at once. Nothing may be written after it.
    ///
    /// ```
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.extend_from_slice(b"a frame the peer will never read");
    /// out.discard();
    /// assert!(out.is_empty() && out.needs_buffer()); // its memory is freed
    /// ```
    pub fn discard(&mut self) {
        self.chunks = None;
        self.tail = BytesMut::new();
    }

    /// Whether the tail has no memory (see [`provide`](Self::provide)).
    ///
    /// ```
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// assert!(out.needs_buffer());
    /// out.provide(bytes::BytesMut::with_capacity(4096));
    /// assert!(!out.needs_buffer());
    /// ```
    pub fn needs_buffer(&self) -> bool {
        self.is_empty() && self.tail.capacity() == 0
    }

    /// Gives an empty buffer to write the next frames into, if the tail has
    /// none.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.provide(BytesMut::with_capacity(4096)); // from the I/O layer's pool
    /// out.extend_from_slice(b"frame"); // written into the pooled buffer
    /// assert_eq!(out.recycle(), None); // not while bytes wait
    /// assert_eq!(out.len(), 5);
    /// ```
    pub fn provide(&mut self, mut buf: BytesMut) {
        if self.tail.capacity() == 0 && self.is_empty() {
            buf.clear();
            self.tail = buf;
        }
    }

    /// Frees the tail's memory if nothing is waiting (idle connections keep
    /// no buffer).
    ///
    /// ```
    /// use bytes::Buf;
    /// use duplex_proto::OutBuf;
    /// let mut out = OutBuf::default();
    /// out.provide(bytes::BytesMut::with_capacity(1024));
    /// out.extend_from_slice(b"frame");
    /// out.advance(5);
    /// assert!(!out.needs_buffer()); // the emptied tail keeps its memory
    /// out.shrink();
    /// assert!(out.needs_buffer());
    /// ```
    pub fn shrink(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
            self.chunks = None;
        }
    }
}

impl Buf for OutBuf {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.as_ref().and_then(|c| c.queue.front()) {
            Some(c) => c,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len(), "advance past the end of OutBuf");
        while cnt > 0 {
            match self.chunks.as_mut() {
                Some(chunks) if !chunks.queue.is_empty() => {
                    let front = chunks.queue.front_mut().expect("not empty");
                    if front.len() <= cnt {
                        cnt -= front.len();
                        chunks.len -= front.len();
                        chunks.queue.pop_front();
                    } else {
                        front.advance(cnt);
                        chunks.len -= cnt;
                        return;
                    }
                }
                _ => {
                    self.tail.advance(cnt);
                    return;
                }
            }
        }
        if self.is_empty() {
            // Reuse the tail's allocation from its start.
            self.tail.clear();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut i = 0;
        for c in self.chunks.iter().flat_map(|c| c.queue.iter()) {
            if i == dst.len() {
                return i;
            }
            dst[i] = IoSlice::new(c);
            i += 1;
        }
        if i < dst.len() && !self.tail.is_empty() {
            dst[i] = IoSlice::new(&self.tail);
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::apply_mask;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keeps_order_across_any_advance(parts in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..20)), 0..10), steps in proptest::collection::vec(1usize..15, 0..20)) {
            let mut out = OutBuf::default();
            let mut expected = Vec::new();
            for (shared, bytes) in &parts {
                expected.extend_from_slice(bytes);
                if *shared { out.push(Bytes::copy_from_slice(bytes)) } else { out.extend_from_slice(bytes) }
            }
            let mut got = Vec::new();
            for s in steps {
                let n = s.min(out.chunk().len());
                got.extend_from_slice(&out.chunk()[..n]);
                out.advance(n);
            }
            while out.has_remaining() {
                let mut slices = [IoSlice::new(&[]); 4];
                let k = out.chunks_vectored(&mut slices);
                let first = slices[..k].iter().map(|s| s.len()).sum::<usize>().min(7);
                let flat: Vec<u8> = slices[..k].iter().flat_map(|s| s.iter().copied()).take(first).collect();
                got.extend_from_slice(&flat);
                out.advance(first);
            }
            prop_assert_eq!(got, expected);
        }

        /// Every header length and every payload length around the copy's
        /// size classes, after any tail already queued.
        #[test]
        fn a_frame_is_its_header_then_its_payload(before in proptest::collection::vec(any::<u8>(), 0..40), fin: bool, rsv1: bool, mask: Option<[u8; 4]>, payload in proptest::collection::vec(any::<u8>(), 0..80), long in prop_oneof![Just(None), (126u64..=0xFFFF).prop_map(Some), (0x10000u64..).prop_map(Some)]) {
            let header = FrameHeader { fin, rsv1, opcode: crate::frame::OpCode::Binary, mask, payload_len: long.unwrap_or(payload.len() as u64) };
            let mut out = OutBuf::default();
            out.extend_from_slice(&before);
            out.extend_frame(&header, &payload);
            let mut expected = before.clone();
            header.encode(&mut expected);
            expected.extend_from_slice(&payload);
            prop_assert_eq!(out.chunk(), &expected[..]);
            prop_assert_eq!(out.len(), expected.len());
        }

        /// A server's echo of any client frame a server echoes whole (both
        /// header lengths, a 16-bit length form for short payloads too,
        /// every payload length around the copy's size classes, any key,
        /// any tail already queued) is the frame the server would build
        /// from the unmasked payload, its length in the shortest form.
        #[test]
        fn an_unmasked_echo_is_the_frame_sent_back(before in proptest::collection::vec(any::<u8>(), 0..40), text: bool, key: [u8; 4], plain in proptest::collection::vec(any::<u8>(), 0..300), extended: bool) {
            let opcode = if text { crate::frame::OpCode::Text } else { crate::frame::OpCode::Binary };
            let len = plain.len() as u64;
            // A 16-bit length for short payloads too: legal, if not minimal.
            let received = FrameHeader { fin: true, rsv1: false, opcode, mask: Some(key), payload_len: len };
            let mut frame = Vec::new();
            received.encode(&mut frame);
            if extended && len < 126 {
                frame.truncate(2);
                frame[1] = 0x80 | 126;
                frame.extend_from_slice(&(len as u16).to_be_bytes());
                frame.extend_from_slice(&key);
            }
            let start = frame.len();
            let mut masked = plain.clone();
            apply_mask(&mut masked, key, 0);
            frame.extend_from_slice(&masked);

            let mut out = OutBuf::default();
            out.extend_from_slice(&before);
            let copy = out.extend_unmasked_echo(&frame, start).to_vec();
            prop_assert_eq!(&copy, &plain);
            // The shortest length form, whatever the client used.
            let mut expected = before.clone();
            FrameHeader { mask: None, ..received }.encode(&mut expected);
            expected.extend_from_slice(&plain);
            prop_assert_eq!(out.chunk(), &expected[..]);
            prop_assert_eq!(out.len(), expected.len());
        }
    }
}
