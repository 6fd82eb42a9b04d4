//! Reaching the server through a proxy: HTTP `CONNECT` or SOCKS5.
//!
//! The proxy comes from an explicit URL or from the environment, the way
//! curl reads it: `https_proxy` for `wss://`, `http_proxy` for `ws://`
//! (either case, lower-case first), then `all_proxy` / `ALL_PROXY` for
//! both, with `no_proxy` listing hosts to reach directly.
//!
//! - `http://[user:pass@]host[:port]`: an HTTP proxy, asked to `CONNECT`;
//!   credentials are sent as Basic `Proxy-Authorization`.
//! - `socks5://[user:pass@]host[:port]`: a SOCKS5 proxy (RFC 1928), the
//!   server's name resolved here; `socks5h://` lets the proxy resolve it
//!   (curl's convention). Credentials use RFC 1929 username/password.
//!
//! ```
//! use duplex::proxy::ProxyConfig;
//! let config = ProxyConfig::Url("socks5h://user:pass@127.0.0.1:1080".into());
//! let proxy = config.resolve("example.com", true)?.expect("a proxy");
//! assert_eq!((proxy.scheme(), proxy.address()), ("socks5h", ("127.0.0.1", 1080)));
//! # Ok::<_, duplex::Error>(())
//! ```

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::head::read_response;
use http::Uri;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::error::{Error, ProxyError, ProxyErrorKind};
use crate::handshake_io::read_head;

/// Which proxy a client uses.
///
/// ```
/// use duplex::{ClientBuilder, proxy::ProxyConfig};
/// assert_eq!(ProxyConfig::default(), ProxyConfig::FromEnv);
/// assert_eq!(ProxyConfig::None.resolve("example.com", true)?, None); // direct
/// let client = ClientBuilder::new().proxy(ProxyConfig::Url("http://127.0.0.1:3128".into()));
/// # drop(client);
/// # Ok::<_, duplex::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyConfig {
    /// From `https_proxy` / `http_proxy` / `no_proxy` (the default).
    #[default]
    FromEnv,
    /// Connect directly.
    None,
    /// Always this proxy (`http://[user:pass@]host:port`,
    /// `socks5://...` or `socks5h://...`).
    Url(String),
}

/// A proxy to tunnel through.
///
/// ```
/// use duplex::proxy::Proxy;
/// let proxy = Proxy::parse("127.0.0.1:3128")?; // no scheme: an HTTP proxy
/// assert_eq!((proxy.scheme(), proxy.address()), ("http", ("127.0.0.1", 3128)));
/// assert!(Proxy::parse("ftp://127.0.0.1").is_err());
/// # Ok::<_, duplex::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: Kind,
    host: String,
    port: u16,
    authorization: Option<String>,
    credentials: Option<(String, String)>,
}

/// The protocol spoken to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5; `remote_dns`: the proxy resolves the server's name.
    Socks5 { remote_dns: bool },
}

impl Proxy {
    /// Parses `http://[user:pass@]host[:port]` (port defaults to 80),
    /// `socks5://[user:pass@]host[:port]` or `socks5h://...` (port
    /// defaults to 1080). A URL without a scheme is an HTTP proxy.
    ///
    /// ```
    /// let p = duplex::proxy::Proxy::parse("http://alice:s3cret@127.0.0.1:3128").unwrap();
    /// assert_eq!(p.address(), ("127.0.0.1", 3128));
    /// let s = duplex::proxy::Proxy::parse("socks5h://127.0.0.1").unwrap();
    /// assert_eq!((s.scheme(), s.address()), ("socks5h", ("127.0.0.1", 1080)));
    /// ```
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| -> Error {
            ProxyError::new(
                ProxyErrorKind::InvalidUrl,
                format!("invalid proxy URL {url:?}: {reason}"),
            )
            .into()
        };
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
        let (kind, default_port) = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => (Kind::Http, 80),
            Some("socks5") => (Kind::Socks5 { remote_dns: false }, 1080),
            Some("socks5h") => (Kind::Socks5 { remote_dns: true }, 1080),
            Some(other) => {
                return Err(bad(&format!(
                    "scheme {other} is not supported; use an http://, socks5:// or socks5h:// proxy"
                )));
            }
            None => return Err(bad("missing scheme")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let userinfo = authority.as_str().rsplit_once('@').map(|(u, _)| u);
        let authorization = userinfo.filter(|_| kind == Kind::Http).map(|userinfo| {
            let decoded = percent_decode(userinfo);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded)
            )
        });
        let credentials = match userinfo.filter(|_| kind != Kind::Http) {
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    String::from_utf8(percent_decode(s))
                        .map_err(|_| bad("the SOCKS5 credentials are not UTF-8"))
                };
                Some((decode(user)?, decode(pass)?))
            }
            None => None,
        };
        Ok(Self {
            kind,
            host,
            port,
            authorization,
            credentials,
        })
    }

    /// The proxy's host and port.
    ///
    /// ```
    /// let proxy = duplex::proxy::Proxy::parse("http://[::1]")?;
    /// assert_eq!(proxy.address(), ("::1", 80)); // no brackets, the default port
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The protocol spoken to the proxy, as a URL scheme: `http`, `socks5`
    /// or `socks5h`.
    ///
    /// ```
    /// use duplex::proxy::Proxy;
    /// assert_eq!(Proxy::parse("SOCKS5://127.0.0.1")?.scheme(), "socks5");
    /// assert_eq!(Proxy::parse("127.0.0.1:8080")?.scheme(), "http");
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn scheme(&self) -> &'static str {
        match self.kind {
            Kind::Http => "http",
            Kind::Socks5 { remote_dns: false } => "socks5",
            Kind::Socks5 { remote_dns: true } => "socks5h",
        }
    }

    /// Opens a TCP connection to the proxy and asks it to tunnel to
    /// `host:port`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let proxy_url = format!("http://{}", proxy.local_addr()?);
    /// # tokio::spawn(async move { // an HTTP CONNECT proxy
    /// #     let (mut client, _) = proxy.accept().await?;
    /// #     let mut head = Vec::new();
    /// #     while !head.ends_with(b"\r\n\r\n") { head.push(client.read_u8().await?); }
    /// #     let target = String::from_utf8_lossy(&head).split(' ').nth(1).unwrap().to_owned();
    /// #     let mut server = tokio::net::TcpStream::connect(target).await?;
    /// #     client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    /// #     tokio::io::copy_bidirectional(&mut client, &mut server).await
    /// # });
    /// let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let proxy = duplex::proxy::Proxy::parse(&proxy_url)?;
    /// let mut tunnel = proxy.connect("127.0.0.1", target.local_addr()?.port()).await?;
    /// let (mut far_end, _) = target.accept().await?;
    /// far_end.write_all(b"hi").await?;
    /// let mut greeting = [0; 2];
    /// tunnel.read_exact(&mut greeting).await?;
    /// assert_eq!(&greeting, b"hi");
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| -> Error {
                ProxyError::new(
                    ProxyErrorKind::Unreachable,
                    format!("cannot reach the proxy {}:{}: {e}", self.host, self.port),
                )
                .into()
            })?;
        tcp.set_nodelay(true)?;
        match self.kind {
            Kind::Http => self.http_connect(tcp, host, port).await,
            Kind::Socks5 { remote_dns } => self.socks5_connect(tcp, host, port, remote_dns).await,
        }
    }

    /// Asks an HTTP proxy to `CONNECT` to `host:port`.
    async fn http_connect(
        &self,
        mut tcp: TcpStream,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, Error> {
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
        let (resp, used, buf) = read_head(&mut tcp, &HeadLimits::default(), None, read_response)
            .await
            .map_err(|e| -> Error {
                ProxyError::new(
                    ProxyErrorKind::BadAnswer,
                    format!("bad answer to CONNECT: {e}"),
                )
                .into()
            })?;
        if !resp.status().is_success() {
            let (kind, hint) = match resp.status().as_u16() {
                407 => (
                    ProxyErrorKind::Credentials,
                    " (the proxy wants credentials: put them in the URL, http://user:pass@host:port)",
                ),
                403 => (
                    ProxyErrorKind::Refused,
                    " (the proxy does not allow this destination)",
                ),
                _ => (ProxyErrorKind::Refused, ""),
            };
            let message = format!(
                "the proxy refused CONNECT {target}: {}{hint}",
                resp.status()
            );
            return Err(ProxyError::new(kind, message).into());
        }
        if buf.len() > used {
            return Err(ProxyError::new(
                ProxyErrorKind::BadAnswer,
                "the proxy sent data before the tunnel was used",
            )
            .into());
        }
        Ok(tcp)
    }

    /// Asks a SOCKS5 proxy to connect to `host:port`: by name when the
    /// proxy resolves (`socks5h`), else by an address resolved here.
    async fn socks5_connect(
        &self,
        tcp: TcpStream,
        host: &str,
        port: u16,
        remote_dns: bool,
    ) -> Result<TcpStream, Error> {
        use tokio_socks::tcp::Socks5Stream;
        let target = if let Ok(ip) = host.parse::<IpAddr>() {
            Target::Addr(SocketAddr::new(ip, port))
        } else if remote_dns {
            Target::Name(host, port)
        } else {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .and_then(|mut addrs| {
                    addrs
                        .next()
                        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
                })
                .map_err(|e| Error::Resolve {
                    host: host.into(),
                    error: std::io::Error::new(
                        e.kind(),
                        format!("{e} (to let the proxy resolve it, use socks5h://)"),
                    ),
                })?;
            Target::Addr(addr)
        };
        let shown = match &target {
            Target::Addr(a) => a.to_string(),
            Target::Name(h, p) => format!("{h}:{p}"),
        };
        let result = match (&self.credentials, target) {
            (None, Target::Addr(a)) => Socks5Stream::connect_with_socket(tcp, a).await,
            (None, Target::Name(h, p)) => Socks5Stream::connect_with_socket(tcp, (h, p)).await,
            (Some((user, pass)), Target::Addr(a)) => {
                Socks5Stream::connect_with_password_and_socket(tcp, a, user, pass).await
            }
            (Some((user, pass)), Target::Name(h, p)) => {
                Socks5Stream::connect_with_password_and_socket(tcp, (h, p), user, pass).await
            }
        };
        result.map(Socks5Stream::into_inner).map_err(|e| {
            use tokio_socks::Error as S;
            use ProxyErrorKind as K;
            let (kind, hint) = match &e {
                S::NoAcceptableAuthMethods | S::AuthorizationRequired => (
                    K::Credentials,
                    " (the proxy wants credentials: put them in the URL, socks5://user:pass@host:port)",
                ),
                S::PasswordAuthFailure(_) | S::InvalidAuthValues(_) => (
                    K::Credentials,
                    " (check the user name and password in the proxy URL)",
                ),
                S::ConnectionNotAllowedByRuleset => {
                    (K::Refused, " (the proxy does not allow this destination)")
                }
                S::ConnectionRefused => (
                    K::Refused,
                    " (the proxy reached the host, but nothing listens on that port)",
                ),
                S::HostUnreachable | S::NetworkUnreachable => (
                    K::Refused,
                    " (the proxy cannot reach the host; check the host name)",
                ),
                S::Io(_) | S::InvalidResponseVersion => {
                    (K::BadAnswer, " (is this really a SOCKS5 proxy?)")
                }
                _ => (K::Refused, ""),
            };
            let message = format!(
                "the SOCKS5 proxy {}:{} could not connect to {shown}: {e}{hint}",
                self.host, self.port
            );
            Error::from(ProxyError::new(kind, message))
        })
    }
}

/// Where a SOCKS5 proxy is asked to connect.
enum Target<'a> {
    Addr(SocketAddr),
    Name(&'a str, u16),
}

impl ProxyConfig {
    /// The proxy to use for a connection to `host`, if any.
    ///
    /// ```
    /// use duplex::proxy::ProxyConfig;
    /// let config = ProxyConfig::Url("http://127.0.0.1:3128".into());
    /// let proxy = config.resolve("example.com", false)?.expect("always this proxy");
    /// assert_eq!(proxy.address(), ("127.0.0.1", 3128));
    /// assert_eq!(ProxyConfig::None.resolve("example.com", false)?, None);
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn resolve(&self, host: &str, tls: bool) -> Result<Option<Proxy>, Error> {
        match self {
            Self::None => Ok(None),
            Self::Url(url) => Proxy::parse(url).map(Some),
            Self::FromEnv => {
                let names: &[&str] = if tls {
                    &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
                } else {
                    &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
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
        let err = Proxy::parse("ftp://127.0.0.1:1080")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://") && err.contains("socks5://"),
            "{err}"
        );
    }

    #[test]
    fn socks5_urls_carry_decoded_credentials_and_no_basic_auth() {
        let p = Proxy::parse("socks5://us%40er:p%3Ass@127.0.0.1").unwrap();
        assert_eq!(p.scheme(), "socks5");
        assert_eq!(p.address(), ("127.0.0.1", 1080));
        assert_eq!(p.credentials, Some(("us@er".into(), "p:ss".into())));
        assert_eq!(p.authorization, None);
        let h = Proxy::parse("SOCKS5H://proxy:9050").unwrap();
        assert_eq!((h.scheme(), h.address()), ("socks5h", ("proxy", 9050)));
        assert_eq!(h.credentials, None);
    }
}
