//! The end-to-end layer between a sender and one receiver (protocol 2):
//! SPAKE2 keyed by the whole code turns the short code into a shared
//! secret, HKDF-SHA256 turns that into an AES-256-GCM key, and every
//! message is sealed under a nonce that is never used twice with that key.
//!
//! Why these: AES-GCM runs in AES-NI/PCLMUL hardware on the CPUs people
//! move files between (several GB/s a core) and is in every browser's Web
//! Crypto, so the page seals in native code too; SHA-256 and HKDF are in
//! Web Crypto as well. SPAKE2 runs once per receiver and stays in software.
//!
//! Nonces are `direction ‖ space ‖ 0 0 ‖ sequence number` (12 bytes): each
//! side counts the messages it seals in each [`Space`], and a key lives for
//! one key exchange, so a nonce is never reused — not after a resume (a new
//! exchange, a new key), and not when a file changed on disk and a chunk is
//! sent again with other contents (a new sequence number).
//!
//! ```
//! use duplex_transfer::seal::{Direction, Handshake, Space};
//!
//! let (sender, to_receiver) = Handshake::start("7-violet-anchor");
//! let (receiver, to_sender) = Handshake::start("7-violet-anchor");
//! let s = sender.finish(&to_sender).unwrap();
//! let r = receiver.finish(&to_receiver).unwrap();
//! let mut buf = *b"hello";
//! let tag = s.seal_in_place(Direction::ToReceiver, Space::Data, 0, b"aad", &mut buf);
//! let mut sealed = [&buf[..], &tag[..]].concat();
//! let plain = r.open_in_place(Direction::ToReceiver, Space::Data, 0, b"aad", &mut sealed);
//! assert_eq!(plain.unwrap(), b"hello");
//! ```

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// The version of the end-to-end layer: the first byte of every key
/// exchange message, so that peers of different versions say so instead
/// of failing as if the code were wrong.
pub const PROTOCOL: u8 = 2;

/// SPAKE2's identity (both sides use the symmetric form).
pub const IDENTITY: &[u8] = b"duplex transfer v2";

/// HKDF's `info` for the AES-256-GCM key (the salt is empty).
pub const KEY_INFO: &[u8] = b"duplex transfer v2 aes-256-gcm key";

/// Bytes of the AES-GCM tag after every ciphertext.
pub const TAG: usize = 16;

/// The first byte of a protocol-1 key exchange message (SPAKE2's
/// symmetric side byte, `S`): such a peer runs an older Duplex.
const PROTOCOL_1_FIRST_BYTE: u8 = 0x53;

/// Which way a message goes: part of every nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// Sender to receiver.
    ToReceiver = 0,
    /// Receiver to sender.
    ToSender = 1,
}

impl Direction {
    /// The other way.
    pub fn reverse(self) -> Self {
        match self {
            Direction::ToReceiver => Direction::ToSender,
            Direction::ToSender => Direction::ToReceiver,
        }
    }
}

/// Which sequence a message is numbered in: part of every nonce. Control
/// messages and data (chunks) are sealed by different tasks, each in
/// order, so each has its own count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Space {
    /// Sealed control messages (`Kind::Sealed`).
    Control = 0,
    /// Chunks and file seals (`Kind::Chunk`).
    Data = 1,
}

/// The nonce of message `seq` of `space` going `dir`.
pub fn nonce(dir: Direction, space: Space, seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = dir as u8;
    n[1] = space as u8;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Why a key exchange could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another version of this layer.
    #[error(
        "the other side runs a Duplex that speaks transfer protocol {theirs} (this one speaks {PROTOCOL}); run the same version on both sides"
    )]
    OtherVersion {
        /// The peer's version (1 for peers that did not say).
        theirs: u8,
    },
    /// The peer's message is not a SPAKE2 message.
    #[error("the key exchange failed: the other side's message is malformed ({0})")]
    Malformed(String),
}

/// The first half of the key exchange.
pub struct Handshake(Spake2<Ed25519Group>);

impl Handshake {
    /// Starts the exchange for `code`; returns the message for the peer
    /// (the version byte, then SPAKE2's message).
    pub fn start(code: &str) -> (Self, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.as_bytes()),
            &Identity::new(IDENTITY),
        );
        (Self(state), Self::message(&msg))
    }

    /// [`Handshake::start`] with a given source of randomness (for the
    /// known-answer test).
    pub fn start_with_rng(
        code: &str,
        rng: impl rand_core::CryptoRng + rand_core::RngCore,
    ) -> (Self, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric_with_rng(
            &Password::new(code.as_bytes()),
            &Identity::new(IDENTITY),
            rng,
        );
        (Self(state), Self::message(&msg))
    }

    fn message(spake: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + spake.len());
        out.push(PROTOCOL);
        out.extend_from_slice(spake);
        out
    }

    /// Finishes with the peer's message. A wrong code is not detected here
    /// (the keys just differ): the first sealed message fails to open.
    pub fn finish(self, peer_msg: &[u8]) -> Result<Sealer, HandshakeError> {
        self.finish_shared(peer_msg)
            .map(|shared| Sealer::from_shared(&shared))
    }

    /// The SPAKE2 shared secret (for the known-answer test).
    pub fn finish_shared(self, peer_msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        match peer_msg.first() {
            Some(&PROTOCOL) => {}
            Some(&PROTOCOL_1_FIRST_BYTE) => return Err(HandshakeError::OtherVersion { theirs: 1 }),
            Some(&theirs) if theirs < PROTOCOL_1_FIRST_BYTE => {
                return Err(HandshakeError::OtherVersion { theirs });
            }
            _ => return Err(HandshakeError::Malformed("no version byte".into())),
        }
        self.0
            .finish(&peer_msg[1..])
            .map_err(|e| HandshakeError::Malformed(format!("{e:?}")))
    }
}

/// Seals and opens messages with the agreed key.
pub struct Sealer(LessSafeKey);

/// HKDF output length for a raw 32-byte key.
struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

/// The AES-256-GCM key for a SPAKE2 shared secret.
pub fn derive_key(shared: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
        .extract(shared)
        .expand(&[KEY_INFO], KeyLen)
        .and_then(|okm| okm.fill(&mut key))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

impl Sealer {
    /// The sealer for a SPAKE2 shared secret.
    pub fn from_shared(shared: &[u8]) -> Self {
        Self::from_key(&derive_key(shared))
    }

    /// The sealer for a raw AES-256-GCM key.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"),
        ))
    }

    /// Encrypts `buf` in place, authenticating `aad` with it; returns the
    /// tag that follows the ciphertext on the wire.
    pub fn seal_in_place(
        &self,
        dir: Direction,
        space: Space,
        seq: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG] {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(dir, space, seq)),
                Aad::from(aad),
                buf,
            )
            .expect("AES-GCM sealing cannot fail below 64 GiB");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypts `ciphertext ‖ tag` in place; the plaintext (a prefix of
    /// `buf`), or `None` if it was altered or sealed with another key.
    pub fn open_in_place<'a>(
        &self,
        dir: Direction,
        space: Space,
        seq: u64,
        aad: &[u8],
        buf: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(dir, space, seq)),
                Aad::from(aad),
                buf,
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_code_agrees_and_a_wrong_code_cannot_open() {
        let (a, ma) = Handshake::start("7-violet-anchor");
        let (b, mb) = Handshake::start("7-violet-anchor");
        let (c, mc) = Handshake::start("7-violet-anvil");
        let sa = a.finish(&mb).unwrap();
        let sb = b.finish(&ma).unwrap();
        let seal = |s: &Sealer, dir, space, seq, plain: &[u8]| {
            let mut buf = plain.to_vec();
            let tag = s.seal_in_place(dir, space, seq, b"h", &mut buf);
            buf.extend_from_slice(&tag);
            buf
        };
        let sealed = seal(&sa, Direction::ToReceiver, Space::Data, 9, b"secret");
        let open = |s: &Sealer, dir, space, seq, sealed: &[u8]| {
            let mut buf = sealed.to_vec();
            s.open_in_place(dir, space, seq, b"h", &mut buf)
                .map(|p| p.to_vec())
        };
        assert_eq!(
            open(&sb, Direction::ToReceiver, Space::Data, 9, &sealed).unwrap(),
            b"secret"
        );
        // Another direction, space or number: another nonce.
        assert!(open(&sb, Direction::ToSender, Space::Data, 9, &sealed).is_none());
        assert!(open(&sb, Direction::ToReceiver, Space::Control, 9, &sealed).is_none());
        assert!(open(&sb, Direction::ToReceiver, Space::Data, 10, &sealed).is_none());
        let (a2, ma2) = Handshake::start("7-violet-anchor");
        let sc = c.finish(&ma2).unwrap();
        let sa2 = a2.finish(&mc).unwrap();
        let sealed = seal(&sa2, Direction::ToReceiver, Space::Control, 0, b"x");
        assert!(open(&sc, Direction::ToReceiver, Space::Control, 0, &sealed).is_none());
    }

    #[test]
    fn an_older_peer_is_named_not_taken_for_a_wrong_code() {
        // A protocol-1 message: SPAKE2's own, which starts with `S`.
        let (_, v2) = Handshake::start("1-a-b");
        let v1 = &v2[1..];
        let (hs, _) = Handshake::start("1-a-b");
        assert_eq!(
            hs.finish(v1).err(),
            Some(HandshakeError::OtherVersion { theirs: 1 })
        );
        let (hs, _) = Handshake::start("1-a-b");
        assert!(matches!(hs.finish(&[]), Err(HandshakeError::Malformed(_))));
        let (hs, _) = Handshake::start("1-a-b");
        assert!(matches!(
            hs.finish(&[PROTOCOL, 1, 2]),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn a_tampered_message_does_not_open() {
        let sealer = Sealer::from_key(&[7; 32]);
        let mut buf = vec![1u8; 100];
        let tag = sealer.seal_in_place(Direction::ToSender, Space::Data, 3, b"a", &mut buf);
        buf.extend_from_slice(&tag);
        for at in [0, 50, 99, 100, 115] {
            let mut altered = buf.clone();
            altered[at] ^= 1;
            assert!(
                sealer
                    .open_in_place(Direction::ToSender, Space::Data, 3, b"a", &mut altered)
                    .is_none()
            );
        }
        assert!(
            sealer
                .open_in_place(Direction::ToSender, Space::Data, 3, b"b", &mut buf.clone())
                .is_none()
        );
    }
}
