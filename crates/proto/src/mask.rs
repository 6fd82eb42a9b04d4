//! Payload masking (RFC 6455 §5.3).
//!
//! Every frame a client sends is XORed with a 4-byte key. Masking sits on the
//! hot path of every received byte on a server, so it works on 32-byte blocks
//! that the compiler turns into SIMD XORs, and falls back to bytes only for
//! the tail. Masking is its own inverse: the same call masks and unmasks.
//!
//! ```
//! use duplex_proto::mask::apply_mask;
//! let mut payload = *b"abc";
//! apply_mask(&mut payload, [0x20, 0x20, 0x20, 0x20], 0); // flips ASCII case
//! assert_eq!(&payload, b"ABC");
//! ```

use std::mem::MaybeUninit;

/// XORs `buf` with the mask `key`, as if `buf` started `offset` bytes into
/// the masked payload (so a payload can be unmasked piece by piece as it
/// arrives).
///
/// ```
/// use duplex_proto::mask::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut data = *b"hello, world";
/// apply_mask(&mut data, key, 0);
/// assert_ne!(&data, b"hello, world");
/// // Unmask in two pieces: the second starts 5 bytes into the payload.
/// let (a, b) = data.split_at_mut(5);
/// apply_mask(a, key, 0);
/// apply_mask(b, key, 5);
/// assert_eq!(&data, b"hello, world");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() >= ALIGNED_FROM {
        return apply_mask_aligned(buf, key, offset);
    }
    apply_mask_from(buf, rotate(key, offset));
}

/// From this many bytes on, masking goes to a 32-byte boundary first and
/// masks whole blocks from there: a vector load or store that straddles two
/// cache lines runs at half speed, and a payload rarely starts on a
/// boundary (it follows a 2- to 14-byte header).
const ALIGNED_FROM: usize = 64;

#[inline(never)]
fn apply_mask_aligned(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let head = buf.as_ptr().align_offset(32).min(buf.len());
    let (first, rest) = buf.split_at_mut(head);
    apply_mask_from(first, rotate(key, offset));
    apply_mask_from(rest, rotate(key, offset + head));
}

/// [`apply_mask`] with `key` already turned to the first byte's phase.
#[inline(always)]
fn apply_mask_from(buf: &mut [u8], key: [u8; 4]) {
    // The key repeated over a word: the same bytes in memory whatever the
    // byte order, since both halves are equal.
    let key4 = u32::from_ne_bytes(key);
    let key8 = u64::from(key4) | (u64::from(key4) << 32);
    let bulk = buf.len() & !31;
    let (blocks, rest) = buf.split_at_mut(bulk);
    if !blocks.is_empty() {
        mask_blocks(blocks, key8);
    }
    // 32, 8 and 4 are multiples of 4, so each tail starts at the same key
    // phase. Small payloads (most chat and RPC messages) are all tail: a
    // word at a time, inline, with no call and no byte loop.
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        let word: &mut [u8; 8] = word.try_into().expect("exact chunk");
        *word = (u64::from_ne_bytes(*word) ^ key8).to_ne_bytes();
    }
    let rest = words.into_remainder();
    let rest = match rest.split_first_chunk_mut::<4>() {
        Some((word, tail)) => {
            *word = (u32::from_ne_bytes(*word) ^ key4).to_ne_bytes();
            tail
        }
        None => rest,
    };
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
    }
}

/// The bulk of a large payload: fixed 32-byte blocks, which LLVM turns into
/// vector XORs (AVX2 where the CPU has it: one per block instead of two).
/// Out of line, so that the small-payload path stays short.
#[inline(never)]
fn mask_blocks(blocks: &mut [u8], key8: u64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::mask_blocks(blocks, key8) };
    }
    mask_blocks_portable(blocks, key8);
}

#[inline(always)]
fn mask_blocks_portable(blocks: &mut [u8], key8: u64) {
    for block in blocks.chunks_exact_mut(32) {
        let block: &mut [u8; 32] = block.try_into().expect("exact chunk");
        for word in block.chunks_exact_mut(8) {
            let word: &mut [u8; 8] = word.try_into().expect("exact chunk");
            *word = (u64::from_ne_bytes(*word) ^ key8).to_ne_bytes();
        }
    }
}

/// Appends `src` masked with `key` to `dst`: copy and mask in one pass, as a
/// client does when it frames a payload it does not own.
///
/// ```
/// use duplex_proto::mask::{apply_mask, extend_masked};
/// let mut out = bytes::BytesMut::new();
/// extend_masked(&mut out, b"abc", [9, 9, 9, 9]);
/// apply_mask(&mut out, [9, 9, 9, 9], 0);
/// assert_eq!(&out[..], b"abc");
/// ```
#[inline]
pub fn extend_masked(dst: &mut bytes::BytesMut, src: &[u8], key: [u8; 4]) {
    dst.reserve(src.len());
    let start = dst.len();
    mask_into(src, &mut dst.spare_capacity_mut()[..src.len()], key);
    // SAFETY: `mask_into` wrote all `src.len()` bytes past the length.
    unsafe { dst.set_len(start + src.len()) };
}

/// Writes `src` XORed with the mask `key` (from the key's first byte) into
/// `dst`, which is as long: a copy and a mask in one pass over the bytes,
/// where a copy then [`apply_mask`] would go over them twice.
///
/// ```
/// use std::mem::MaybeUninit;
/// use duplex_proto::mask::{apply_mask, mask_into};
/// let mut out = [MaybeUninit::uninit(); 5];
/// mask_into(b"hello", &mut out, [1, 2, 3, 4]);
/// let mut out = out.map(|b| unsafe { b.assume_init() }); // every byte written
/// apply_mask(&mut out, [1, 2, 3, 4], 0);
/// assert_eq!(&out, b"hello");
/// ```
///
/// # Panics
/// If `dst` is not as long as `src`.
#[inline]
pub fn mask_into(src: &[u8], dst: &mut [MaybeUninit<u8>], key: [u8; 4]) {
    assert_eq!(src.len(), dst.len(), "mask_into: a destination as long as the source");
    if src.len() >= ALIGNED_FROM {
        // Aligned for the stores (see `ALIGNED_FROM`).
        let head = dst.as_ptr().align_offset(32).min(dst.len());
        let (dst_first, dst_rest) = dst.split_at_mut(head);
        mask_into_from(&src[..head], dst_first, key);
        mask_into_from(&src[head..], dst_rest, rotate(key, head));
    } else {
        mask_into_from(src, dst, key);
    }
}

/// [`mask_into`] without the alignment, `key` at the first byte's phase.
#[inline(always)]
fn mask_into_from(src: &[u8], dst: &mut [MaybeUninit<u8>], key: [u8; 4]) {
    let key4 = u32::from_ne_bytes(key);
    let key8 = u64::from(key4) | (u64::from(key4) << 32);
    let bulk = src.len() & !31;
    let (src_blocks, src) = src.split_at(bulk);
    let (dst_blocks, dst) = dst.split_at_mut(bulk);
    if !src_blocks.is_empty() {
        mask_blocks_into(src_blocks, dst_blocks, key8);
    }
    // The tail as in `apply_mask`: words of 8, one of 4, then bytes, each
    // starting at the key's first byte.
    let mut words = src.chunks_exact(8).zip(dst.chunks_exact_mut(8));
    for (from, to) in &mut words {
        let word = u64::from_ne_bytes(from.try_into().expect("exact chunk")) ^ key8;
        write(to, &word.to_ne_bytes());
    }
    let done = src.len() & !7;
    let (src, dst) = (&src[done..], &mut dst[done..]);
    let (src, dst) = match src.split_first_chunk::<4>() {
        Some((word, rest)) => {
            write(&mut dst[..4], &(u32::from_ne_bytes(*word) ^ key4).to_ne_bytes());
            (rest, &mut dst[4..])
        }
        None => (src, dst),
    };
    for ((to, from), k) in dst.iter_mut().zip(src).zip(key) {
        to.write(from ^ k);
    }
}

/// [`mask_into`]'s bulk: 32-byte blocks, which LLVM turns into vector loads,
/// XORs and stores (AVX2 where the CPU has it).
#[inline(never)]
fn mask_blocks_into(src: &[u8], dst: &mut [MaybeUninit<u8>], key8: u64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::mask_blocks_into(src, dst, key8) };
    }
    mask_blocks_into_portable(src, dst, key8);
}

#[inline(always)]
fn mask_blocks_into_portable(src: &[u8], dst: &mut [MaybeUninit<u8>], key8: u64) {
    for (from, to) in src.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
        let mut block = [0u8; 32];
        for (out, word) in block.chunks_exact_mut(8).zip(from.chunks_exact(8)) {
            let word = u64::from_ne_bytes(word.try_into().expect("exact chunk")) ^ key8;
            out.copy_from_slice(&word.to_ne_bytes());
        }
        write(to, &block);
    }
}

/// The same loops compiled for AVX2, chosen at run time (the release
/// build targets baseline x86-64). `unsafe fn`s: a safe function with
/// `#[target_feature]` needs Rust 1.86, and the crate supports 1.85.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::mem::MaybeUninit;

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mask_blocks(blocks: &mut [u8], key8: u64) {
        super::mask_blocks_portable(blocks, key8);
    }

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mask_blocks_into(src: &[u8], dst: &mut [MaybeUninit<u8>], key8: u64) {
        super::mask_blocks_into_portable(src, dst, key8);
    }
}

#[inline(always)]
fn write(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    for (to, from) in dst.iter_mut().zip(src) {
        to.write(*from);
    }
}

#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset & 3;
    [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    proptest! {
        #[test]
        /// At any length, key phase and address (`skip` moves the start
        /// across a 32-byte boundary, which the bulk aligns to).
        fn matches_bytewise_definition(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..8, skip in 0usize..32) {
            let skip = skip.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast[skip..], key, offset);
            naive(&mut slow[skip..], key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        /// From and to any address (the stores are aligned, the loads
        /// then are not).
        fn mask_into_is_a_copy_then_apply_mask(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], from in 0usize..32, to in 0usize..32) {
            let src = &data[from.min(data.len())..];
            let mut copied = src.to_vec();
            naive(&mut copied, key, 0);
            let mut out = vec![MaybeUninit::new(0xAA); to + src.len()];
            mask_into(src, &mut out[to..], key);
            // SAFETY: initialised above, then overwritten.
            let out: Vec<u8> = out.into_iter().map(|b| unsafe { b.assume_init() }).collect();
            prop_assert_eq!(&out[to..], &copied[..]);
            prop_assert!(out[..to].iter().all(|&b| b == 0xAA), "nothing written before the destination");
        }

        #[test]
        fn extend_masked_appends_the_masked_payload(before in proptest::collection::vec(any::<u8>(), 0..40), data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4]) {
            let mut out = bytes::BytesMut::from(&before[..]);
            extend_masked(&mut out, &data, key);
            let mut expected = before.clone();
            let mut masked = data.clone();
            naive(&mut masked, key, 0);
            expected.extend_from_slice(&masked);
            prop_assert_eq!(&out[..], &expected[..]);
        }

        #[test]
        fn any_split_unmasks_the_same(data in proptest::collection::vec(any::<u8>(), 0..200), key: [u8; 4], cut in 0usize..200) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            prop_assert_eq!(whole, pieces);
        }
    }
}
