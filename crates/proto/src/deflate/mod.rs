//! permessage-deflate (RFC 7692): what to offer, what to accept, and the
//! compressor and decompressor a connection uses once it is negotiated.
//!
//! Compression is negotiated per connection in the opening handshake
//! ([`negotiation`]), then each message is compressed as a whole
//! ([`codec`]): the first frame carries RSV1, the deflate stream is flushed
//! with `Z_SYNC_FLUSH` and its trailing `00 00 ff ff` dropped. With *context
//! takeover* (the default) the LZ77 window carries over from one message to
//! the next, which is what makes small chat-like messages compress well.
//!
//! ```
//! use duplex_proto::deflate::{DeflateConfig, EXTENSION_NAME};
//! let offer = DeflateConfig::default().offer(); // what a client sends
//! let (params, response) = DeflateConfig::default().accept_offer(&offer).unwrap();
//! assert_eq!(response.name, EXTENSION_NAME);
//! assert_eq!(params.server_max_window_bits, 15);
//! ```

pub mod codec;
pub mod negotiation;

pub use codec::{Deflater, Inflated, Inflater};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// What this endpoint is willing to negotiate.
///
/// The defaults accept any offer a browser makes and keep context takeover,
/// which compresses best; set the `*_no_context_takeover` flags to trade
/// ratio for memory (no window is kept between messages).
///
/// ```
/// use duplex_proto::DeflateConfig;
/// let cfg = DeflateConfig { level: 6, ..DeflateConfig::default() };
/// assert_eq!(cfg.offer().to_string(), "permessage-deflate; client_max_window_bits");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// zlib compression level, 0 (store) to 9 (best). Default 1, the
    /// fastest: a server compresses every message for every connection,
    /// and on chat-like JSON level 6 cost about 10 times the CPU of level 1
    /// (28 against 290 MB/s with context takeover, in one run on this
    /// project's bench machine) for output about a third smaller (ratio
    /// 0.195 against 0.302). Raise it where bandwidth costs more than CPU.
    pub level: u32,
    /// Ask that the server reset its compressor after every message.
    pub server_no_context_takeover: bool,
    /// Ask that the client reset its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window, in bits (8–15), the server may compress with.
    pub server_max_window_bits: u8,
    /// The largest LZ77 window, in bits (8–15), the client may compress with.
    pub client_max_window_bits: u8,
    /// Messages shorter than this many bytes are sent uncompressed. Default
    /// 0: like browsers and python-websockets, compress everything once
    /// compression is negotiated (with context takeover, even short
    /// repetitive messages shrink). Raise it to save CPU on tiny messages.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            level: 1,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            threshold: 0,
        }
    }
}

/// The parameters both sides agreed on in the handshake.
///
/// ```
/// use duplex_proto::{DeflateConfig, DeflateParams, extension::parse_extensions};
/// let response = &parse_extensions("permessage-deflate; server_no_context_takeover").unwrap();
/// let params = DeflateConfig::default().accept_response(&response[0]).unwrap();
/// assert_eq!(params, DeflateParams { server_no_context_takeover: true, ..Default::default() });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with, in bits.
    pub server_max_window_bits: u8,
    /// The window the client compresses with, in bits.
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}
