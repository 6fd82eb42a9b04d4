//! `ws://` and `wss://` URLs: where to connect and what to ask for.
//!
//! ```
//! use duplex::url::WsUrl;
//! let url = WsUrl::parse("ws://example.com:8080/chat")?;
//! assert_eq!(url.host_header, "example.com:8080");
//! assert_eq!(url.path_and_query, "/chat");
//! # Ok::<_, duplex::Error>(())
//! ```

use http::Uri;

use crate::error::Error;

/// A parsed WebSocket URL.
///
/// ```
/// use duplex::url::WsUrl;
/// let u = WsUrl::parse("wss://user@example.com/chat?room=1").unwrap();
/// assert!(u.tls);
/// assert_eq!((u.host.as_str(), u.port), ("example.com", 443));
/// assert_eq!(u.host_header, "example.com");
/// assert_eq!(u.path_and_query, "/chat?room=1");
/// let v6 = WsUrl::parse("ws://[::1]:9001").unwrap();
/// assert_eq!((v6.host.as_str(), v6.port, v6.host_header.as_str()), ("::1", 9001, "[::1]:9001"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss` (or `https`): TLS.
    pub tls: bool,
    /// The host to connect to, without IPv6 brackets.
    pub host: String,
    /// The port, defaulted from the scheme.
    pub port: u16,
    /// The Host header: host, with the port when it is not the default.
    pub host_header: String,
    /// The request target.
    pub path_and_query: String,
}

impl WsUrl {
    /// Parses a URL; `http`/`https` are accepted as `ws`/`wss`.
    ///
    /// ```
    /// use duplex::url::WsUrl;
    /// let url = WsUrl::parse("https://example.com").unwrap(); // as wss://
    /// assert_eq!((url.tls, url.port, url.path_and_query.as_str()), (true, 443, "/"));
    /// assert!(WsUrl::parse("example.com/chat").is_err()); // no scheme
    /// ```
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::url(url, reason);
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("ws") | Some("http") => false,
            Some("wss") | Some("https") => true,
            Some(other) => return Err(bad(&format!("scheme {other:?} is not ws or wss"))),
            None => {
                return Err(bad(
                    "missing scheme: write ws://host/path or wss://host/path",
                ));
            }
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let bracketed = authority.host();
        if bracketed.is_empty() {
            return Err(bad("missing host"));
        }
        let host = bracketed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let default_port = if tls { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host_header = if port == default_port {
            bracketed.to_owned()
        } else {
            format!("{bracketed}:{port}")
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else {
            format!("/{path_and_query}")
        };
        Ok(Self {
            tls,
            host,
            port,
            host_header,
            path_and_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unusable_urls() {
        for bad in ["127.0.0.1:80", "ftp://x/", "ws://", "ws:///path"] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_path_and_port() {
        let u = WsUrl::parse("ws://h").unwrap();
        assert_eq!(
            (u.port, u.path_and_query.as_str(), u.host_header.as_str()),
            (80, "/", "h")
        );
        assert_eq!(WsUrl::parse("ws://h:8080").unwrap().host_header, "h:8080");
    }
}
