//! Random names and secrets: epochs, node names, transfer tokens, the
//! generated API key and the nodes' shared secret.

use rand::Rng;

/// `len` random lowercase letters and digits (5.2 bits each, from the
/// thread's cryptographically secure generator).
pub fn name(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_have_the_length_asked_and_differ() {
        let (a, b) = (super::name(24), super::name(24));
        assert_eq!(a.len(), 24);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, b);
    }
}
