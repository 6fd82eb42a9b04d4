//! What can go wrong on an open connection, and which close code says so.
//!
//! ```
//! use duplex_proto::{CloseCode, error::ProtocolError};
//! let error = ProtocolError::ReservedOpcode(3);
//! assert_eq!(error.to_string(), "reserved opcode 0x3");
//! assert_eq!(error.close_code(), CloseCode::PROTOCOL_ERROR);
//! ```

use crate::close::CloseCode;

/// A violation of RFC 6455 / RFC 7692 by the peer, or a configured limit it
/// exceeded. Each maps to the close code the connection is failed with.
///
/// ```
/// use bytes::Buf;
/// use duplex_proto::{Config, Connection, ProtocolError, Role, State};
///
/// let mut server = Connection::new(Role::Server, Config::default(), None);
/// server.read_buf().extend_from_slice(b"\x81\x00"); // an unmasked text frame
/// assert_eq!(server.next_message(), Err(ProtocolError::UnmaskedFrame));
/// assert_eq!(server.error(), Some(&ProtocolError::UnmaskedFrame));
/// assert_eq!(server.state(), State::Closed);
/// let close = server.outgoing().copy_to_bytes(4); // the frame that fails it
/// assert_eq!(close[2..], 1002u16.to_be_bytes()); // see ProtocolError::close_code
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Opcodes 3–7 and 0xB–0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV2/RSV3 set, or RSV1 without a compression extension or on a frame
    /// that may not carry it.
    #[error("reserved bits set without a negotiated extension that defines them")]
    ReservedBits,
    /// A 64-bit payload length with its most significant bit set.
    #[error("payload length with the most significant bit set")]
    InvalidLength,
    /// A server received an unmasked frame.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A client received a masked frame.
    #[error("server frame is masked")]
    MaskedFrame,
    /// Close, ping or pong with more than 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// Close, ping or pong without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is unfinished.
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    /// A close frame whose payload is a single byte.
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close code that must not be sent (1005, 1006, 1015, reserved ranges).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// Text or a close reason that is not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A compressed message that does not inflate.
    #[error("compressed data is corrupt")]
    InvalidCompressedData,
    /// A frame larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message (after reassembly and inflation) larger than the configured maximum.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// A message split into more fragments than the configured maximum.
    #[error("message split into more than {max} fragments")]
    TooManyFragments {
        /// The configured limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code to fail the connection with.
    ///
    /// ```
    /// use duplex_proto::{CloseCode, ProtocolError};
    /// assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
    /// assert_eq!(ProtocolError::MessageTooLarge { max: 10 }.close_code(), CloseCode::TOO_BIG);
    /// ```
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. }
            | Self::MessageTooLarge { .. }
            | Self::TooManyFragments { .. } => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
