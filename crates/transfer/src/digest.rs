//! Checking bytes kept from an earlier attempt. Chunks sent on a connection
//! are proven by their AEAD tags; what a receiver already had when it
//! connected (a `.part` left by an earlier attempt, or the file already in
//! place) is checked by the file's *seal* ([`crate::chunk`]), which carries
//! the digest of the first `k` chunks, `k` being what the receiver said it
//! had:
//!
//! ```text
//! digest = SHA-256("duplex transfer v2 file\0" ‖ size u64 ‖ chunk size u64
//!                  ‖ SHA-256(chunk 0) ‖ … ‖ SHA-256(chunk k−1))
//! ```
//!
//! Both sides take it by reading those chunks, from the sender's file and
//! from the receiver's `.part`: only bytes at rest are digested, so a fresh
//! transfer reads every byte once. It catches a `.part` whose chunks came
//! from another version of the file. Browsers compute the same with Web
//! Crypto, whose SHA-256 is one-shot: a chunk at a time.
//!
//! ```
//! use duplex_transfer::digest::{FileDigest, chunk_digest};
//!
//! let mut file = FileDigest::new(5, 4);
//! file.push(&chunk_digest(b"abcd"));
//! file.push(&chunk_digest(b"e"));
//! assert_eq!(file.finish(), FileDigest::of(b"abcde", 4));
//! ```

use ring::digest::{Context, SHA256, digest};

/// Bytes of a SHA-256 digest.
pub const DIGEST: usize = 32;

/// The label in front of every file digest.
pub const FILE_LABEL: &[u8] = b"duplex transfer v2 file\0";

/// SHA-256 of one chunk.
pub fn chunk_digest(data: &[u8]) -> [u8; DIGEST] {
    digest(&SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A file's digest, fed its chunk digests in order.
#[derive(Clone)]
pub struct FileDigest(Context);

impl FileDigest {
    /// Starts the digest of a file of `size` bytes cut in `chunk_size`
    /// chunks.
    pub fn new(size: u64, chunk_size: u64) -> Self {
        let mut ctx = Context::new(&SHA256);
        ctx.update(FILE_LABEL);
        ctx.update(&size.to_be_bytes());
        ctx.update(&chunk_size.to_be_bytes());
        Self(ctx)
    }

    /// Adds the next chunk's digest.
    pub fn push(&mut self, chunk: &[u8; DIGEST]) {
        self.0.update(chunk);
    }

    /// The file's digest.
    pub fn finish(self) -> [u8; DIGEST] {
        self.0
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes")
    }

    /// The digest of a whole file held in memory.
    pub fn of(data: &[u8], chunk_size: u64) -> [u8; DIGEST] {
        let mut file = Self::new(data.len() as u64, chunk_size);
        for chunk in data.chunks(chunk_size as usize) {
            file.push(&chunk_digest(chunk));
        }
        file.finish()
    }
}

/// Chunks in a file of `size` bytes: its seal is chunk number this.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// Lower-case hex, as digests are shown to users.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Chunking is part of the digest: the same bytes cut otherwise, or
        /// one byte changed anywhere, give another digest.
        #[test]
        fn the_digest_binds_every_byte_and_the_cut(
            data in proptest::collection::vec(any::<u8>(), 1..3000),
            chunk in 1u64..1000,
            at in any::<prop::sample::Index>(),
        ) {
            let digest = FileDigest::of(&data, chunk);
            prop_assert_ne!(digest, FileDigest::of(&data, chunk + 1));
            let mut altered = data.clone();
            altered[at.index(data.len())] ^= 1;
            prop_assert_ne!(digest, FileDigest::of(&altered, chunk));
            prop_assert_eq!(chunk_count(data.len() as u64, chunk), data.chunks(chunk as usize).count() as u64);
        }
    }

    #[test]
    fn an_empty_file_has_a_digest_and_no_chunks() {
        assert_eq!(chunk_count(0, 1024), 0);
        assert_eq!(FileDigest::of(b"", 1024), FileDigest::new(0, 1024).finish());
    }
}
