//! The opening handshake (RFC 6455 §4): an HTTP/1.1 Upgrade exchange.
//!
//! The server side validates a request and produces a `101 Switching
//! Protocols` response or a 4xx rejection with a one-line reason
//! ([`server`]); the client side builds a request and verifies the response
//! ([`client`]). Both read heads out of a byte buffer with bounded size and
//! header count (`head`), so a slow or endless header stream costs at most
//! the configured bytes, never a hang or unbounded memory.
//!
//! ```
//! use duplex_proto::handshake::{client::ClientHandshake, server::ServerHandshake};
//! let client = ClientHandshake::new(vec![], None);
//! let request = client.request("example.com", "/", &Default::default()).unwrap();
//! let accepted = ServerHandshake::default().accept(&request).unwrap();
//! assert_eq!(client.verify(&accepted.response).unwrap().protocol, None);
//! ```

pub mod client;
pub mod server;

crate::unstable_mod!(
    /// Reading and writing HTTP/1.1 heads, bounded. Public with the
    /// `unstable` feature.
    head
);

use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
///
/// ```
/// // The example from RFC 6455 §1.3.
/// assert_eq!(duplex_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header contains `token`, case-insensitively
/// (`Connection: keep-alive, Upgrade`).
pub(crate) fn header_has_token(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// All comma-separated values of a header across its lines.
pub(crate) fn header_list(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Limits on an HTTP head, against header floods (CVE-2024-37890 in Node's
/// `ws`) and slowloris-style endless headers.
///
/// ```
/// use duplex_proto::handshake::{HeadLimits, head::{HeadError, read_request}};
/// let limits = HeadLimits { max_headers: 1, ..HeadLimits::default() };
/// let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Flood: 1\r\n\r\n";
/// assert_eq!(read_request(raw, &limits).unwrap_err(), HeadError::TooManyHeaders(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The most bytes a request or response head may take. Default 16 KiB.
    pub max_head_size: usize,
    /// The most header lines. Default 64.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_size: 16 << 10,
            max_headers: 64,
        }
    }
}
