//! Errors: each says what happened and, where it helps, what to try.

use std::io;
use std::time::Duration;

use duplex_proto::handshake::client::ResponseError;
use duplex_proto::handshake::head::HeadError;
use duplex_proto::handshake::server::RequestError;
use duplex_proto::{ProtocolError, SendError};

/// Everything that can go wrong with a WebSocket.
///
/// Kept to 32 bytes (the large cases are boxed), because every
/// `recv()` returns `Option<Result<Message, Error>>`: it is copied out per
/// message and held wherever a caller's loop keeps it across an `.await`.
///
/// ```
/// use duplex::{Error, url::WsUrl};
/// let error = WsUrl::parse("ftp://example.com/").unwrap_err();
/// assert!(matches!(error, Error::Url(_)));
/// let message = r#"invalid URL "ftp://example.com/": scheme "ftp" is not ws or wss"#;
/// assert_eq!(error.to_string(), message);
/// ```
///
/// Each message already says what caused it, so no variant also hands its
/// cause on as [`std::error::Error::source`]: a report that prints the
/// chain (`anyhow`'s `{:#}`) says it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The peer broke the protocol or exceeded a limit; the connection was
    /// closed with the matching close code.
    #[error("protocol error (closed with {code}): {0}", code = .0.close_code())]
    Protocol(ProtocolError),
    /// A message could not be sent (a closed connection is
    /// [`Error::Closed`], never this).
    #[error("cannot send: {0}")]
    Send(SendError),
    /// The connection is closed; nothing more can be sent or received.
    #[error("the connection is closed")]
    Closed,
    /// The peer dropped the TCP connection without a closing handshake (1006).
    #[error("the peer closed the connection without a close frame (1006)")]
    AbnormalClosure,
    /// No pong came back within the pong timeout; closed with 1011.
    #[error("keepalive: no pong within {0:?}; closed with 1011")]
    KeepaliveTimeout(Duration),
    /// The connection was closed with 1013 (try again later) to keep the
    /// memory held for peers within the [`MemoryBudget`](crate::MemoryBudget).
    #[error(
        "the memory budget for peers' messages is spent and this connection held the most; closed with 1013"
    )]
    MemoryBudget,
    /// Nothing arrived within the idle timeout; closed with 1001.
    #[error("idle for {0:?}; closed with 1001")]
    IdleTimeout(Duration),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(Box<HandshakeError>),
    /// The opening handshake did not finish in time.
    #[error("the opening handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// A `ws://` or `wss://` URL that cannot be used.
    #[error("{0}")]
    Url(Box<UrlError>),
    /// TLS could not be set up or failed; [`TlsError::kind`] says how.
    #[error("TLS: {0}")]
    Tls(Box<TlsError>),
    /// The proxy could not be used; [`ProxyError::kind`] says how.
    #[error("proxy: {0}")]
    Proxy(Box<ProxyError>),
    /// The server's host name could not be resolved.
    #[error("cannot resolve the host name {host:?}: {error}")]
    Resolve {
        /// The name.
        host: Box<str>,
        /// What the resolver said.
        error: io::Error,
    },
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

/// How TLS failed: what a caller can act on (trust a CA, use another
/// name, use `ws://`), beside the message for people.
///
/// ```
/// use duplex::{Error, TlsError, TlsErrorKind};
///
/// let e = Error::from(TlsError::new(TlsErrorKind::UnknownIssuer, "invalid peer certificate: UnknownIssuer"));
/// let Error::Tls(tls) = &e else { unreachable!() };
/// assert_eq!(tls.kind(), TlsErrorKind::UnknownIssuer);
/// assert_eq!(e.to_string(), "TLS: invalid peer certificate: UnknownIssuer");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    kind: TlsErrorKind,
    message: String,
}

/// The kinds of [`TlsError`].
///
/// ```
/// use duplex::{Error, TlsErrorKind};
/// let Err(Error::Tls(error)) = duplex::tls::server_config(b"", b"") else { panic!() };
/// assert_eq!(error.kind(), TlsErrorKind::Config);
/// assert_eq!(error.to_string(), "no certificate found in the PEM file");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// A certificate, key or CA file that cannot be used, or a host name
    /// that cannot be a TLS server name: a setup error.
    Config,
    /// The server's certificate does not name the host connected to.
    NameMismatch,
    /// The server's certificate is not signed by a trusted authority.
    UnknownIssuer,
    /// The server's certificate has expired (or this machine's clock is
    /// wrong).
    Expired,
    /// The server does not speak TLS on this port.
    NotTls,
    /// Any other failure of the TLS handshake.
    Handshake,
}

impl TlsError {
    /// A TLS error of `kind`, described by `message`.
    ///
    /// ```
    /// use duplex::{TlsError, TlsErrorKind};
    /// let error = TlsError::new(TlsErrorKind::NotTls, "the server answered in plain HTTP");
    /// assert_eq!(error.to_string(), "the server answered in plain HTTP");
    /// ```
    pub fn new(kind: TlsErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// How it failed.
    ///
    /// ```
    /// use duplex::{TlsError, TlsErrorKind};
    /// let error = TlsError::new(TlsErrorKind::Expired, "certificate expired");
    /// assert_eq!(error.kind(), TlsErrorKind::Expired);
    /// ```
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Tls(Box::new(e))
    }
}

/// How a proxy failed: whether trying again may help, beside the message
/// for people.
///
/// ```
/// use duplex::{ProxyError, ProxyErrorKind};
///
/// let e = ProxyError::new(ProxyErrorKind::Credentials, "the proxy refused CONNECT: 407");
/// assert!(!e.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    kind: ProxyErrorKind,
    message: String,
}

/// The kinds of [`ProxyError`].
///
/// ```
/// use duplex::{Error, ProxyErrorKind, proxy::Proxy};
/// let Err(Error::Proxy(error)) = Proxy::parse("ftp://127.0.0.1") else { panic!() };
/// assert_eq!(error.kind(), ProxyErrorKind::InvalidUrl);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// The proxy URL cannot be used.
    InvalidUrl,
    /// The proxy could not be reached.
    Unreachable,
    /// The proxy wants credentials, or refused the ones given.
    Credentials,
    /// The proxy refused the tunnel: the destination is not allowed, or
    /// could not be reached from the proxy.
    Refused,
    /// The proxy's answer was not understood.
    BadAnswer,
}

impl ProxyError {
    /// A proxy error of `kind`, described by `message`.
    ///
    /// ```
    /// use duplex::{Error, ProxyError, ProxyErrorKind};
    /// let error = Error::from(ProxyError::new(ProxyErrorKind::Refused, "403 Forbidden"));
    /// assert_eq!(error.to_string(), "proxy: 403 Forbidden");
    /// ```
    pub fn new(kind: ProxyErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// How it failed.
    ///
    /// ```
    /// use duplex::{ProxyError, ProxyErrorKind};
    /// let error = ProxyError::new(ProxyErrorKind::Unreachable, "connection refused");
    /// assert_eq!(error.kind(), ProxyErrorKind::Unreachable);
    /// ```
    pub fn kind(&self) -> ProxyErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed (not for a bad URL or
    /// refused credentials).
    ///
    /// ```
    /// use duplex::{ProxyError, ProxyErrorKind};
    /// assert!(ProxyError::new(ProxyErrorKind::Unreachable, "down").is_transient());
    /// assert!(!ProxyError::new(ProxyErrorKind::InvalidUrl, "no host").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        !matches!(
            self.kind,
            ProxyErrorKind::InvalidUrl | ProxyErrorKind::Credentials
        )
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Error::Proxy(Box::new(e))
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        match e {
            // One way to say it, whichever layer noticed.
            SendError::Closed => Error::Closed,
            other => Error::Send(other),
        }
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(Box::new(e))
    }
}

impl Error {
    /// An [`Error::Url`]: `url` cannot be used, for `reason`.
    ///
    /// ```
    /// let error = duplex::Error::url("ws://", "missing host");
    /// assert_eq!(error.to_string(), r#"invalid URL "ws://": missing host"#);
    /// ```
    pub fn url(url: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Url(Box::new(UrlError {
            url: url.into(),
            reason: reason.into(),
        }))
    }
}

/// A URL that cannot be used, and why.
///
/// ```
/// let Err(duplex::Error::Url(error)) = duplex::url::WsUrl::parse("ftp://a.test") else {
///     panic!("not a WebSocket URL");
/// };
/// assert_eq!(error.url, "ftp://a.test");
/// assert_eq!(error.reason, r#"scheme "ftp" is not ws or wss"#);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("invalid URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why the opening handshake failed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/");
/// # tokio::spawn(async move {
/// #     let server = duplex::ServerBuilder::new().filter(|_| {
/// #         Err(http::Response::builder().status(404).body("no such room\n".into()).unwrap())
/// #     });
/// #     let mut ws = server.accept(listener.accept().await?.0).await?;
/// #     while let Some(msg) = ws.recv().await {
/// #         let msg = msg?;
/// #         if msg.is_data() {
/// #             ws.send(msg).await?;
/// #         }
/// #     }
/// #     Ok::<_, duplex::Error>(())
/// # });
/// use duplex::{Error, HandshakeError, ResponseError};
/// let Err(Error::Handshake(error)) = duplex::connect(&url).await else { panic!() };
/// let HandshakeError::Response { error, body } = *error else { panic!() };
/// assert_eq!(error, ResponseError::Status(http::StatusCode::NOT_FOUND));
/// assert_eq!(body, "no such room\n"); // the server's reason
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Server side: the request is not a valid upgrade (answered with a 4xx).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Client side: the server answered, but not with a valid 101.
    #[error("{error}{hint}", hint = hint(.error, .body))]
    Response {
        /// What was wrong with the response.
        error: ResponseError,
        /// The start of the response body, when the server sent one (it
        /// often says why).
        body: String,
    },
    /// Client side: the response head could not be read.
    #[error("unreadable response: {0}")]
    Head(#[from] HeadError),
    /// Server side: the request filter refused the request with this status.
    #[error("request refused with {0}")]
    Refused(http::StatusCode),
    /// The peer closed the connection during the handshake.
    #[error("the peer closed the connection during the handshake")]
    Eof,
    /// Client side, HTTP/2: TLS's ALPN did not choose `h2` (or, without
    /// TLS, the server did not answer the HTTP/2 preface).
    #[error(
        "the server does not speak HTTP/2 here (TLS did not choose h2, or the HTTP/2 preface got no HTTP/2 answer): use HTTP/1.1"
    )]
    NoHttp2,
    /// Client side, HTTP/2: the server's SETTINGS do not enable the
    /// extended CONNECT, so it cannot open WebSockets over HTTP/2.
    #[error(
        "the server speaks HTTP/2 but does not open WebSockets over it (no SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441): use HTTP/1.1"
    )]
    NoExtendedConnect,
    /// Client side, HTTP/2: the server reset the stream with
    /// `HTTP_1_1_REQUIRED`: this socket must be opened over HTTP/1.1 (a
    /// browser would retry it so).
    #[error(
        "the server asks for this WebSocket over HTTP/1.1 (it reset the HTTP/2 stream with HTTP_1_1_REQUIRED)"
    )]
    Http1Required,
}

fn hint(error: &ResponseError, body: &str) -> String {
    let mut out = String::new();
    if !body.trim().is_empty() {
        out.push_str(&format!(": {}", body.trim()));
    }
    if let ResponseError::Status(status) = error {
        out.push_str(&format!(" ({})", status_hint(*status)));
    }
    out
}

/// What a status in answer to a WebSocket upgrade usually means, and what
/// to try: the one table of such hints (the CLI words its errors with it).
///
/// ```
/// use duplex::status_hint;
/// use http::StatusCode;
///
/// assert_eq!(status_hint(StatusCode::NOT_FOUND), "check the URL's path");
/// ```
pub fn status_hint(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "check the URL's path",
        401 | 403 => "the server wants credentials: add them (a header or token)",
        400 => "the server rejected the upgrade request: a missing header or subprotocol?",
        426 => "the server wants another protocol version or TLS (try wss://)",
        301 | 302 | 303 | 307 | 308 => {
            "the server redirects elsewhere, and redirects are not followed: connect to the new location"
        }
        200..=299 => "this is a plain HTTP endpoint, not a WebSocket one",
        429 | 503 => "the server is busy: try again later",
        500..=599 => "the server failed: try again later",
        _ => "the server did not accept the WebSocket upgrade",
    }
}

/// A `Result` with [`Error`].
///
/// ```
/// fn port(url: &str) -> duplex::Result<u16> {
///     Ok(duplex::url::WsUrl::parse(url)?.port)
/// }
/// assert_eq!(port("wss://example.com/").unwrap(), 443);
/// assert!(port("example.com").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The whole chain, as `anyhow`'s `{:#}` prints it.
    fn chain(e: &Error) -> String {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }

    #[test]
    fn a_report_of_the_chain_says_each_cause_once() {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let errors = [
            (Error::from(refused()), "connection refused"),
            (
                Error::from(ProtocolError::ReservedOpcode(3)),
                "reserved opcode",
            ),
            (
                Error::Resolve {
                    host: "nowhere.invalid".into(),
                    error: refused(),
                },
                "connection refused",
            ),
        ];
        for (e, cause) in &errors {
            let text = chain(e);
            assert_eq!(text.matches(cause).count(), 1, "{text:?}");
        }
    }
}
