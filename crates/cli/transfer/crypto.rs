//! End-to-end encryption between a sender and one receiver: SPAKE2 keyed
//! by the whole code turns a short shared secret into a strong key, then
//! every message is sealed with ChaCha20-Poly1305. Nonces are derived from
//! (direction, file index, chunk index), so a chunk sent twice is sealed
//! identically and no nonce is ever used for two different plaintexts.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Which way a message goes: part of every nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sender to receiver.
    ToReceiver = 0,
    /// Receiver to sender.
    ToSender = 1,
}

/// The file index control messages use in their nonces.
pub const CONTROL: u32 = u32::MAX;

/// The first half of the key exchange.
pub struct Handshake(Spake2<Ed25519Group>);

impl Handshake {
    /// Starts the exchange for `code`; returns the message for the peer.
    pub fn start(code: &str) -> (Self, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.as_bytes()),
            &Identity::new(b"duplex transfer v1"),
        );
        (Self(state), msg)
    }

    /// Finishes with the peer's message. A wrong code is not detected here
    /// (the keys just differ): the first sealed message fails to open.
    pub fn finish(self, peer_msg: &[u8]) -> anyhow::Result<Sealer> {
        let shared = self
            .0
            .finish(peer_msg)
            .map_err(|e| anyhow::anyhow!("the key exchange failed: {e:?}"))?;
        let key = blake3::derive_key("duplex transfer v1 chacha20poly1305 key", &shared);
        Ok(Sealer(ChaCha20Poly1305::new(Key::from_slice(&key))))
    }
}

/// Seals and opens messages with the agreed key.
pub struct Sealer(ChaCha20Poly1305);

fn nonce(dir: Direction, file: u32, index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = dir as u8;
    n[1..5].copy_from_slice(&file.to_be_bytes());
    n[5..].copy_from_slice(&index.to_be_bytes()[1..]);
    *Nonce::from_slice(&n)
}

impl Sealer {
    /// Encrypts `plain`, authenticating `aad` with it.
    pub fn seal(&self, dir: Direction, file: u32, index: u64, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        self.0
            .encrypt(&nonce(dir, file, index), Payload { msg: plain, aad })
            .expect("ChaCha20-Poly1305 encryption cannot fail for these sizes")
    }

    /// Encrypts `buf` in place (no copy of a large chunk); returns the
    /// 16-byte tag that follows the ciphertext on the wire.
    pub fn seal_in_place(
        &self,
        dir: Direction,
        file: u32,
        index: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; 16] {
        self.0
            .encrypt_in_place_detached(&nonce(dir, file, index), aad, buf)
            .expect("ChaCha20-Poly1305 encryption cannot fail for these sizes")
            .into()
    }

    /// Decrypts `ciphertext ‖ tag` in place, leaving the plaintext; `false`
    /// if it was altered or sealed with another key.
    pub fn open_in_place(
        &self,
        dir: Direction,
        file: u32,
        index: u64,
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> bool {
        self.0
            .decrypt_in_place(&nonce(dir, file, index), aad, buf)
            .is_ok()
    }

    /// Decrypts, or `None` if the message was altered or sealed with another
    /// key.
    pub fn open(
        &self,
        dir: Direction,
        file: u32,
        index: u64,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        self.0
            .decrypt(&nonce(dir, file, index), Payload { msg: sealed, aad })
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
        let (a2, ma2) = Handshake::start("7-violet-anchor");
        let sa = a.finish(&mb).unwrap();
        let sb = b.finish(&ma).unwrap();
        let sealed = sa.seal(Direction::ToReceiver, 3, 9, b"h", b"secret");
        assert_eq!(
            sb.open(Direction::ToReceiver, 3, 9, b"h", &sealed).unwrap(),
            b"secret"
        );
        assert!(sb.open(Direction::ToSender, 3, 9, b"h", &sealed).is_none());
        assert!(
            sb.open(Direction::ToReceiver, 3, 10, b"h", &sealed)
                .is_none()
        );
        let mut buf = b"in place".to_vec();
        let tag = sa.seal_in_place(Direction::ToSender, 1, 2, b"a", &mut buf);
        buf.extend_from_slice(&tag);
        assert_eq!(
            sb.open(Direction::ToSender, 1, 2, b"a", &buf).unwrap(),
            b"in place"
        );
        buf[0] ^= 1;
        assert!(!sb.open_in_place(Direction::ToSender, 1, 2, b"a", &mut buf.clone()));
        buf[0] ^= 1;
        assert!(sb.open_in_place(Direction::ToSender, 1, 2, b"a", &mut buf));
        assert_eq!(buf, b"in place");
        let sc = c.finish(&ma2).unwrap();
        let sa2 = a2.finish(&mc).unwrap();
        let sealed = sa2.seal(Direction::ToReceiver, 0, 0, b"", b"x");
        assert!(sc.open(Direction::ToReceiver, 0, 0, b"", &sealed).is_none());
    }
}
