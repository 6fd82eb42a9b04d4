//! Frame headers (RFC 6455 §5.2): parsing and encoding, zero-copy.
//!
//! The parser reads a header straight out of the read buffer and says how
//! many bytes it took; the payload stays where it is, to be unmasked in place
//! and handed out without a copy. Checks that need nothing but the header
//! (reserved opcodes, lengths of control frames, the 64-bit length's top bit)
//! happen here, so a bad frame fails before its payload arrives.
//!
//! ```
//! use duplex_proto::frame::{FrameHeader, OpCode};
//! let wire = [0x89, 0x80, 1, 2, 3, 4]; // a masked, empty ping
//! let (header, used) = FrameHeader::parse(&wire).unwrap().unwrap();
//! assert_eq!((header.opcode, header.mask, used), (OpCode::Ping, Some([1, 2, 3, 4]), 6));
//! ```

use crate::error::ProtocolError;

/// The kind of a frame.
///
/// ```
/// use duplex_proto::frame::OpCode;
/// assert_eq!(OpCode::from_u8(0x2).unwrap(), OpCode::Binary);
/// assert!(OpCode::Pong.is_control());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// A further fragment of a text or binary message.
    Continuation,
    /// The first (or only) frame of a UTF-8 text message.
    Text,
    /// The first (or only) frame of a binary message.
    Binary,
    /// Starts or answers the closing handshake.
    Close,
    /// Asks the peer for a pong.
    Ping,
    /// Answers a ping, or is a one-way heartbeat.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte.
    ///
    /// ```
    /// use duplex_proto::{ProtocolError, frame::OpCode};
    /// assert_eq!(OpCode::from_u8(0x9), Ok(OpCode::Ping));
    /// assert_eq!(OpCode::from_u8(0x3), Err(ProtocolError::ReservedOpcode(3)));
    /// ```
    pub fn from_u8(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The four bits on the wire.
    ///
    /// ```
    /// use duplex_proto::frame::OpCode;
    /// assert_eq!(OpCode::Close.as_u8(), 0x8);
    /// ```
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    ///
    /// ```
    /// use duplex_proto::frame::OpCode;
    /// assert!(OpCode::Ping.is_control());
    /// assert!(!OpCode::Continuation.is_control());
    /// ```
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest header: 2 bytes, 8 bytes of length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed frame header.
///
/// ```
/// use duplex_proto::frame::{FrameHeader, OpCode};
/// let header = FrameHeader { fin: true, rsv1: false, opcode: OpCode::Text, mask: None, payload_len: 5 };
/// let mut wire = Vec::new();
/// header.encode(&mut wire);
/// assert_eq!(wire, [0x81, 0x05]);
/// let (parsed, used) = FrameHeader::parse(&wire).unwrap().unwrap();
/// assert_eq!((parsed, used), (header, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: set on the first frame of a compressed message (RFC 7692).
    pub rsv1: bool,
    /// What the frame is.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// The payload's length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`. Returns `Ok(None)` while the
    /// header is incomplete, else the header and its length in bytes.
    ///
    /// RSV2 and RSV3 are always an error: Duplex negotiates no extension that
    /// uses them.
    ///
    /// ```
    /// use duplex_proto::{ProtocolError, frame::FrameHeader};
    /// assert_eq!(FrameHeader::parse(&[0x82, 0x7e, 0x01]), Ok(None)); // incomplete
    /// let (header, used) = FrameHeader::parse(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
    /// assert_eq!((header.payload_len, used), (256, 4));
    /// assert_eq!(FrameHeader::parse(&[0x09, 0x00]), Err(ProtocolError::FragmentedControlFrame));
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        if buf.len() < 2 {
            // Check what we can of a lone first byte: fail fast.
            if let Some(&b0) = buf.first() {
                Self::check_first_byte(b0)?;
            }
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let opcode = Self::check_first_byte(b0)?;
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 as usize > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let (payload_len, mut pos) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            n => (n as u64, 2),
        };
        let mask = if masked {
            match buf.get(pos..pos + 4) {
                Some(k) => {
                    pos += 4;
                    Some([k[0], k[1], k[2], k[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    fn check_first_byte(b0: u8) -> Result<OpCode, ProtocolError> {
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        OpCode::from_u8(b0 & 0x0F)
    }

    /// The encoded length of this header.
    ///
    /// ```
    /// use duplex_proto::frame::{FrameHeader, OpCode};
    /// let mut header = FrameHeader {
    ///     fin: true, rsv1: false, opcode: OpCode::Binary, mask: None, payload_len: 70_000,
    /// };
    /// assert_eq!(header.len(), 10); // 2 + an 8-byte length
    /// header.mask = Some([0; 4]);
    /// assert_eq!(header.len(), 14);
    /// ```
    pub fn len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// A header is never empty; this exists for clippy's `len_without_is_empty`.
    ///
    /// ```
    /// use duplex_proto::frame::{FrameHeader, OpCode};
    /// let header = FrameHeader {
    ///     fin: true, rsv1: false, opcode: OpCode::Pong, mask: None, payload_len: 0,
    /// };
    /// assert!(!header.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header into a fixed buffer; returns the bytes used.
    ///
    /// ```
    /// use duplex_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
    /// let header = FrameHeader {
    ///     fin: false, rsv1: true, opcode: OpCode::Text, mask: Some([9; 4]), payload_len: 3,
    /// };
    /// let mut buf = [0u8; MAX_HEADER_LEN];
    /// let n = header.write(&mut buf);
    /// assert_eq!(buf[..n], [0x41, 0x83, 9, 9, 9, 9]);
    /// ```
    #[inline]
    pub fn write(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        let (bytes, n) = self.to_bytes();
        out.copy_from_slice(&bytes[..MAX_HEADER_LEN]);
        n
    }

    /// The header's bytes, as the first of 16 (the rest are zero), and how
    /// many there are.
    ///
    /// Built in a register, not byte by byte in memory: a writer that then
    /// copies the header with a few wide stores would otherwise wait for
    /// the narrow stores to reach memory first (a failed store-to-load
    /// forward, a stall on every frame).
    ///
    /// ```
    /// use duplex_proto::frame::{FrameHeader, OpCode};
    /// let header = FrameHeader {
    ///     fin: true, rsv1: false, opcode: OpCode::Binary, mask: None, payload_len: 300,
    /// };
    /// let (bytes, n) = header.to_bytes();
    /// assert_eq!(bytes[..n], [0x82, 126, 0x01, 0x2c]);
    /// ```
    #[inline]
    pub fn to_bytes(&self) -> ([u8; 16], usize) {
        let first = u128::from((self.fin as u8) << 7 | (self.rsv1 as u8) << 6 | self.opcode.as_u8());
        let mask_bit = u128::from(self.mask.is_some() as u8) << 15;
        // Little-endian: byte i of the header is bits 8i..8i+8, so the
        // big-endian length is the byte-swapped number.
        let (word, n) = match self.payload_len {
            len @ 0..=125 => (u128::from(len as u8) << 8, 2),
            len @ 126..=0xFFFF => (126 << 8 | u128::from((len as u16).swap_bytes()) << 16, 4),
            len => (127 << 8 | u128::from(len.swap_bytes()) << 16, 10),
        };
        let mut word = first | mask_bit | word;
        let mut n = n;
        if let Some(key) = self.mask {
            word |= u128::from(u32::from_le_bytes(key)) << (8 * n);
            n += 4;
        }
        (word.to_le_bytes(), n)
    }

    /// Appends the header to a byte vector.
    ///
    /// ```
    /// use duplex_proto::frame::{FrameHeader, OpCode};
    /// let header = FrameHeader {
    ///     fin: true, rsv1: false, opcode: OpCode::Binary, mask: None, payload_len: 300,
    /// };
    /// let mut wire = vec![];
    /// header.encode(&mut wire);
    /// assert_eq!(wire, [0x82, 126, 0x01, 0x2c]);
    /// ```
    pub fn encode(&self, out: &mut impl Extend<u8>) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = self.write(&mut buf);
        out.extend(buf[..n].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    proptest! {
        #[test]
        fn headers_round_trip(op in opcode(), fin: bool, rsv1: bool, mask: Option<[u8; 4]>, len in 0u64..(1 << 40)) {
            let len = if op.is_control() { len % 126 } else { len };
            let fin = fin || op.is_control();
            let h = FrameHeader { fin, rsv1, opcode: op, mask, payload_len: len };
            let mut wire = Vec::new();
            h.encode(&mut wire);
            prop_assert_eq!(wire.len(), h.len());
            // Every strict prefix is incomplete, never an error.
            for cut in 0..wire.len() {
                prop_assert_eq!(FrameHeader::parse(&wire[..cut]).unwrap(), None);
            }
            prop_assert_eq!(FrameHeader::parse(&wire).unwrap(), Some((h, wire.len())));
        }
    }

    #[test]
    fn rejects_reserved_opcodes_and_bits_from_the_first_byte() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
        assert_eq!(
            FrameHeader::parse(&[0x81 | 0x20]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0x81 | 0x10]),
            Err(ProtocolError::ReservedBits)
        );
    }

    #[test]
    fn rejects_bad_control_frames() {
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
    }

    #[test]
    fn rejects_length_with_top_bit() {
        let mut wire = vec![0x82, 127];
        wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(FrameHeader::parse(&wire), Err(ProtocolError::InvalidLength));
    }
}
