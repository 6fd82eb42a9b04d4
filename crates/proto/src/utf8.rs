//! Incremental UTF-8 validation that fails at the first invalid byte.
//!
//! A text message may arrive split across fragments and reads, and a code
//! point may be split between them. RFC 6455 §8.1 asks an endpoint to fail the
//! connection as soon as it sees invalid UTF-8, not when the message ends;
//! Autobahn's 6.4.x cases check exactly that. The bulk is checked with SIMD
//! (simdutf8); only the up-to-3 bytes of a code point cut at a boundary are
//! carried over to the next piece.
//!
//! ```
//! use duplex_proto::utf8::{InvalidUtf8, Utf8Validator};
//! let mut v = Utf8Validator::default();
//! assert_eq!(v.feed("é".as_bytes()), Ok(()));
//! assert_eq!(v.feed(b"\xc0\xaf"), Err(InvalidUtf8)); // an overlong '/'
//! ```

/// The input is not valid UTF-8.
///
/// ```
/// use duplex_proto::utf8::{InvalidUtf8, Utf8Validator};
/// let mut v = Utf8Validator::default();
/// v.feed(b"\xe2\x98").unwrap(); // two thirds of a snowman
/// assert_eq!(v.finish(), Err(InvalidUtf8));
/// assert_eq!(InvalidUtf8.to_string(), "invalid UTF-8 in a text message");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in a text message")]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
///
/// ```
/// use duplex_proto::utf8::Utf8Validator;
/// let mut v = Utf8Validator::default();
/// let snowman = "☃".as_bytes(); // three bytes
/// v.feed(&snowman[..1]).unwrap(); // a code point cut in two is fine so far
/// v.feed(&snowman[1..]).unwrap();
/// v.finish().unwrap();
///
/// // An invalid byte fails at once, without waiting for the end.
/// assert!(v.feed(b"ok \xff").is_err());
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

impl Utf8Validator {
    /// Checks the next piece of the stream. Fails if the bytes seen so far can
    /// no longer be the start of valid UTF-8.
    ///
    /// ```
    /// use duplex_proto::utf8::Utf8Validator;
    /// let mut v = Utf8Validator::default();
    /// assert!(v.feed(b"caf\xc3").is_ok()); // 'é' is cut: its first byte waits
    /// assert!(v.feed(b"\xa9").is_ok());
    /// assert!(v.feed(b"\xa9").is_err()); // a continuation byte with no lead
    /// ```
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let have = self.partial_len as usize;
            let need = sequence_len(self.partial[0]) - have;
            let take = need.min(input.len());
            self.partial[have..have + take].copy_from_slice(&input[..take]);
            let len = have + take;
            match simdutf8::compat::from_utf8(&self.partial[..len]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: the input ran out before the code point did.
                    self.partial_len = len as u8;
                    return Ok(());
                }
            }
            input = &input[take..];
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the stream: fails if it stopped in the middle of a code point.
    /// The validator is ready for a new stream afterwards.
    ///
    /// ```
    /// use duplex_proto::utf8::Utf8Validator;
    /// let mut v = Utf8Validator::default();
    /// v.feed(b"\xc3").unwrap();
    /// assert!(v.finish().is_err()); // ended inside a code point
    /// assert!(v.finish().is_ok()); // and ready for a new stream
    /// ```
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.partial_len > 0;
        self.partial_len = 0;
        if incomplete { Err(InvalidUtf8) } else { Ok(()) }
    }

    /// Forgets any carried bytes.
    ///
    /// ```
    /// use duplex_proto::utf8::Utf8Validator;
    /// let mut v = Utf8Validator::default();
    /// v.feed(b"\xc3").unwrap(); // a message cut short
    /// v.reset();
    /// assert!(v.feed(b"ok").and_then(|()| v.finish()).is_ok());
    /// ```
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }
}

/// The length of the sequence a valid lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_split(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &c in cuts {
            let c = c.min(bytes.len()).max(start);
            v.feed(&bytes[start..c])?;
            start = c;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn incomplete_at_end_fails() {
        let mut v = Utf8Validator::default();
        v.feed(&"€".as_bytes()[..2]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn fails_at_first_bad_byte_of_a_split_code_point() {
        let mut v = Utf8Validator::default();
        v.feed(b"\xf0").unwrap();
        // 0xF0 must be followed by 0x90..=0xBF: 0x80 is already wrong.
        assert_eq!(v.feed(b"\x80"), Err(InvalidUtf8));
    }

    #[test]
    fn surrogates_and_overlongs_fail() {
        for bad in [
            &b"\xed\xa0\x80"[..],
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
            b"\xff",
        ] {
            assert!(check_split(bad, &[1]).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(bytes in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(check_split(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_text_any_split(s in "\\PC{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut cuts = cuts;
            cuts.sort();
            prop_assert!(check_split(s.as_bytes(), &cuts).is_ok());
        }
    }
}
