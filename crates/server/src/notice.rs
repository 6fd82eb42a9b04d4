//! What an operator should know about how the server started. The library
//! only reports it ([`crate::Server::notices`]); the binary prints it.

use std::fmt;
use std::net::SocketAddr;

/// One thing worth telling the operator at start.
///
/// ```
/// use duplex_server::Notice;
/// let notice = Notice::ApiKeyGenerated { key: "k".into(), kept_in: "./duplex-data".into() };
/// assert!(notice.to_string().starts_with("generated an API key (kept in ./duplex-data): k"));
/// assert!(!notice.is_warning());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// No API key was configured and the server listens beyond loopback,
    /// so one was generated (or the one generated before was kept).
    ApiKeyGenerated {
        /// The key: `Authorization: Bearer KEY` on `/api/publish`.
        key: String,
        /// Where it is kept (the data directory, or Redis).
        kept_in: String,
    },
    /// Nodes share file transfers, but this one listens on a wildcard
    /// address without `--advertise-url`: the others cannot reach it.
    NoAdvertiseUrl {
        /// Where it listens.
        addr: SocketAddr,
    },
}

impl Notice {
    /// Whether it warns of something the operator should change.
    pub fn is_warning(&self) -> bool {
        matches!(self, Notice::NoAdvertiseUrl { .. })
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::ApiKeyGenerated { key, kept_in } => write!(
                f,
                "generated an API key (kept in {kept_in}): {key}\n\
                 publish with: curl -H 'Authorization: Bearer {key}' ..."
            ),
            Notice::NoAdvertiseUrl { addr } => write!(
                f,
                "listening on {addr} without --advertise-url: receivers that reach another node cannot be forwarded to the file transfers opened on this one"
            ),
        }
    }
}
