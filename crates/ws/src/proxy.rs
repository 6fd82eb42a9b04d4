//! Reaching the server through an HTTP proxy with `CONNECT`.
//!
//! The proxy comes from an explicit URL or from the environment, the way
//! curl reads it: `https_proxy` for `wss://`, `http_proxy` for `ws://`
//! (either case, lower-case first), with `no_proxy` listing hosts to reach
//! directly. Credentials in the proxy URL (`http://user:pass@proxy:3128`)
//! are sent as Basic `Proxy-Authorization`.

use base64::Engine;
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::head::read_response;
use http::Uri;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::Error;
use crate::handshake_io::read_head;

/// Which proxy a client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyConfig {
    /// From `https_proxy` / `http_proxy` / `no_proxy` (the default).
    #[default]
    FromEnv,
    /// Connect directly.
    None,
    /// Always this proxy (`http://[user:pass@]host:port`).
    Url(String),
}

/// A proxy to tunnel through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    authorization: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port]` (port defaults to 80).
    ///
    /// ```
    /// let p = duplex::proxy::Proxy::parse("http://alice:s3cret@127.0.0.1:3128").unwrap();
    /// assert_eq!(p.address(), ("127.0.0.1", 3128));
    /// ```
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Proxy(format!("invalid proxy URL {url:?}: {reason}"));
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "scheme {other} is not supported; use an http:// proxy"
                )));
            }
            None => return Err(bad("missing scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let authorization = authority.as_str().rsplit_once('@').map(|(userinfo, _)| {
            let decoded = percent_decode(userinfo);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            )
        });
        Ok(Self {
            host,
            port,
            authorization,
        })
    }

    /// The proxy's host and port.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Opens a TCP connection to the proxy and asks it to tunnel to
    /// `host:port`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::Proxy(format!(
                    "cannot reach the proxy {}:{}: {e}",
                    self.host, self.port
                ))
            })?;
        tcp.set_nodelay(true)?;
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await?;
        let (resp, used, buf) = read_head(&mut tcp, &HeadLimits::default(), read_response)
            .await
            .map_err(|e| Error::Proxy(format!("bad answer to CONNECT: {e}")))?;
        if !resp.status().is_success() {
            let hint = match resp.status().as_u16() {
                407 => {
                    " (the proxy wants credentials: put them in the URL, http://user:pass@host:port)"
                }
                403 => " (the proxy does not allow this destination)",
                _ => "",
            };
            return Err(Error::Proxy(format!(
                "the proxy refused CONNECT {target}: {}{hint}",
                resp.status()
            )));
        }
        if buf.len() > used {
            return Err(Error::Proxy(
                "the proxy sent data before the tunnel was used".into(),
            ));
        }
        Ok(tcp)
    }
}

impl ProxyConfig {
    /// The proxy to use for a connection to `host`, if any.
    pub fn resolve(&self, host: &str, tls: bool) -> Result<Option<Proxy>, Error> {
        match self {
            Self::None => Ok(None),
            Self::Url(url) => Proxy::parse(url).map(Some),
            Self::FromEnv => {
                let names: &[&str] = if tls {
                    &["https_proxy", "HTTPS_PROXY"]
                } else {
                    &["http_proxy", "HTTP_PROXY"]
                };
                let Some(url) = names
                    .iter()
                    .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
                else {
                    return Ok(None);
                };
                let no_proxy = std::env::var("no_proxy")
                    .or_else(|_| std::env::var("NO_PROXY"))
                    .unwrap_or_default();
                if bypasses(&no_proxy, host) {
                    return Ok(None);
                }
                Proxy::parse(&url).map(Some)
            }
        }
    }
}

/// Whether `no_proxy` (comma-separated hosts, domain suffixes, or `*`)
/// covers `host`.
///
/// ```
/// use duplex::proxy::bypasses;
/// assert!(bypasses("localhost, .internal", "api.internal"));
/// assert!(bypasses("example.com", "ws.example.com"));
/// assert!(!bypasses("example.com", "notexample.com"));
/// assert!(bypasses("*", "anything"));
/// ```
pub fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('.');
            host == entry || host.ends_with(&format!(".{entry}"))
        })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_into_basic_auth() {
        let p = Proxy::parse("http://us%40er:p%3Ass@proxy:8080").unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(p.authorization, Some(format!("Basic {expected}")));
        assert_eq!(p.address(), ("proxy", 8080));
    }

    #[test]
    fn rejects_other_schemes_with_a_hint() {
        let err = Proxy::parse("socks5://127.0.0.1:1080")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://"), "{err}");
    }
}
