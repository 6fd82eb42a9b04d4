//! Limits on what a peer may make us buffer.
//!
//! Every limit counts real bytes and is checked before the bytes are
//! buffered: a frame header announcing too much fails at once, a message that
//! would inflate past the limit fails mid-inflate. That is what keeps a
//! hostile peer from growing memory (see the DoS column in `shared/anchors.md`:
//! unbounded reassembly, decompression bombs, tiny-fragment floods).
//!
//! ```
//! use duplex_proto::limits::Limits;
//! let limits = Limits::default();
//! assert_eq!(limits.max_message_size, 64 << 20);
//! assert_eq!(limits.max_fragments, 65_536);
//! ```

/// Limits applied to incoming data. The defaults suit a public server;
/// raise them for bulk transfer.
///
/// ```
/// use duplex_proto::Limits;
/// let limits = Limits { max_message_size: 1 << 20, ..Limits::default() };
/// assert_eq!(limits.max_frame_size, 16 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame payload accepted (before inflation). Default 16 MiB.
    pub max_frame_size: usize,
    /// The largest message accepted, after reassembly and inflation. Default 64 MiB.
    pub max_message_size: usize,
    /// The most frames one message may be split into. Default 65,536.
    /// Tiny-fragment floods cost a frame's worth of CPU per byte; this bounds them.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_fragments: 65_536,
        }
    }
}

impl Limits {
    /// No practical limit (for trusted peers and conformance tests).
    ///
    /// ```
    /// use duplex_proto::Limits;
    /// assert_eq!(Limits::unlimited().max_message_size, usize::MAX);
    /// ```
    pub fn unlimited() -> Self {
        Self {
            max_frame_size: usize::MAX,
            max_message_size: usize::MAX,
            max_fragments: usize::MAX,
        }
    }
}
