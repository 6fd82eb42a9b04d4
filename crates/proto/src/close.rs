//! Close codes and close frames (RFC 6455 §7.4).
//!
//! Some codes are only for reporting and must never appear on the wire
//! (1005 "no status", 1006 "abnormal", 1015 "TLS failure"); the rest of
//! 0–2999 is reserved for future RFCs and is invalid to receive. 3000–3999
//! are registered with IANA, 4000–4999 are for private use.
//!
//! ```
//! use duplex_proto::close::{CloseCode, CloseFrame};
//! let frame = CloseFrame::new(CloseCode(4001), "session expired");
//! assert_eq!(frame.to_string(), "4001 (session expired)");
//! assert!(!CloseCode::NO_STATUS.is_sendable()); // 1005 is only reported
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::utf8::Utf8Validator;

/// A close status code.
///
/// ```
/// use duplex_proto::CloseCode;
/// assert!(CloseCode::NORMAL.is_sendable());
/// assert!(CloseCode(4000).is_sendable());
/// assert!(!CloseCode::ABNORMAL.is_sendable()); // 1006 is for reporting only
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: reported when a close frame had no code. Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: reported when the connection dropped without a close frame. Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: the client needed an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway got a bad response from upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: reported when the TLS handshake failed. Never sent.
    pub const TLS_FAILURE: Self = Self(1015);

    /// Whether the code may appear in a close frame on the wire.
    ///
    /// ```
    /// use duplex_proto::CloseCode;
    /// assert!(CloseCode::GOING_AWAY.is_sendable());
    /// assert!(!CloseCode(2000).is_sendable()); // reserved for future RFCs
    /// assert!(!CloseCode::TLS_FAILURE.is_sendable());
    /// ```
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

/// The code and reason of a close frame.
///
/// ```
/// use duplex_proto::{CloseCode, CloseFrame};
/// let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
/// let payload = frame.to_payload();
/// assert_eq!(&payload[..], b"\x03\xe8bye");
/// assert_eq!(CloseFrame::parse(&payload).unwrap(), Some(frame));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// A human-readable reason, at most 123 bytes of UTF-8.
    pub reason: String,
}

/// The longest reason that fits a control frame beside the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame; a reason longer than 123 bytes is cut at a character
    /// boundary so the frame stays a valid control frame.
    ///
    /// ```
    /// use duplex_proto::{CloseCode, CloseFrame};
    /// let frame = CloseFrame::new(CloseCode::NORMAL, "é".repeat(100));
    /// assert_eq!(frame.reason.len(), 122); // 123 would split an `é`
    /// assert_eq!(frame.code, CloseCode::NORMAL);
    /// ```
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }

    /// Parses a received close payload: empty (no code), or a valid code and
    /// a UTF-8 reason.
    ///
    /// ```
    /// use duplex_proto::{CloseCode, CloseFrame, ProtocolError};
    /// let frame = CloseFrame::parse(b"\x03\xe9gone").unwrap().unwrap();
    /// assert_eq!(frame, CloseFrame::new(CloseCode::GOING_AWAY, "gone"));
    /// assert_eq!(CloseFrame::parse(b"").unwrap(), None); // no code
    /// assert_eq!(CloseFrame::parse(b"\x03"), Err(ProtocolError::InvalidClosePayload));
    /// ```
    pub fn parse(payload: &[u8]) -> Result<Option<Self>, ProtocolError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ProtocolError::InvalidClosePayload),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let mut v = Utf8Validator::default();
                v.feed(reason)
                    .and_then(|()| v.finish())
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Self {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// The payload of a close frame carrying this code and reason.
    ///
    /// ```
    /// use duplex_proto::{CloseCode, CloseFrame};
    /// let payload = CloseFrame::new(CloseCode(4000), "").to_payload();
    /// assert_eq!(&payload[..], &4000u16.to_be_bytes());
    /// ```
    pub fn to_payload(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.reason.len());
        b.put_u16(self.code.0);
        b.extend_from_slice(self.reason.as_bytes());
        b.freeze()
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} ({})", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_of_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(
            CloseFrame::parse(b"\x03"),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(
            CloseFrame::parse(b"\x03\xed"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let frame = CloseFrame::new(CloseCode::NORMAL, "é".repeat(100));
        assert!(frame.reason.len() <= MAX_REASON_LEN);
        assert!(frame.to_payload().len() <= crate::frame::MAX_CONTROL_PAYLOAD);
    }
}
