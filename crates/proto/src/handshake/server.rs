//! The server side of the opening handshake: validate a request, answer 101
//! or reject it with a status and a one-line reason.
//!
//! ```
//! use duplex_proto::handshake::server::{RequestError, ServerHandshake};
//! let plain_http = http::Request::get("/").header("Host", "a.test").body(()).unwrap();
//! let error = ServerHandshake::default().accept(&plain_http).unwrap_err();
//! assert_eq!(error, RequestError::NotUpgrade);
//! assert_eq!(error.status(), 426); // Upgrade Required
//! ```

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::head::HeadError;
use super::{accept_key, header_has_token, header_list};
use crate::deflate::{DeflateConfig, DeflateParams};
use crate::extension::{ExtensionSyntaxError, parse_extensions};

/// What a server offers in the handshake.
///
/// ```
/// use duplex_proto::handshake::server::ServerHandshake;
/// let req = http::Request::get("/chat")
///     .header("Host", "example.com")
///     .header("Upgrade", "websocket")
///     .header("Connection", "keep-alive, Upgrade")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("Sec-WebSocket-Version", "13")
///     .header("Sec-WebSocket-Protocol", "v2.chat, v1.chat")
///     .body(()).unwrap();
/// let server = ServerHandshake { protocols: vec!["v1.chat".into()], deflate: None };
/// let accepted = server.accept(&req).unwrap();
/// assert_eq!(accepted.response.status(), 101);
/// assert_eq!(accepted.response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// assert_eq!(accepted.protocol.as_deref(), Some("v1.chat"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerHandshake {
    /// Subprotocols the server speaks, most preferred first.
    pub protocols: Vec<String>,
    /// permessage-deflate settings, or `None` to decline compression.
    pub deflate: Option<DeflateConfig>,
}

/// A request the server accepted.
///
/// ```
/// use duplex_proto::handshake::{client::ClientHandshake, server::ServerHandshake};
/// let request = ClientHandshake::new(vec!["chat".into()], None)
///     .request("a.test", "/", &http::HeaderMap::new()).unwrap();
/// let server = ServerHandshake { protocols: vec!["chat".into()], deflate: None };
/// let accepted = server.accept(&request).unwrap();
/// assert_eq!(accepted.response.headers()["sec-websocket-protocol"], "chat");
/// assert_eq!((accepted.protocol.as_deref(), accepted.deflate), (Some("chat"), None));
/// ```
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The `101 Switching Protocols` response to send.
    pub response: Response<()>,
    /// The subprotocol chosen, if any.
    pub protocol: Option<String>,
    /// The compression parameters agreed, if compression was negotiated.
    pub deflate: Option<DeflateParams>,
}

/// Why a request is not a valid WebSocket upgrade. Each maps to an HTTP
/// status; [`RequestError::response`] builds the rejection.
///
/// ```
/// use duplex_proto::handshake::server::{RequestError, ServerHandshake};
/// let post = http::Request::post("/").body(()).unwrap();
/// let error = ServerHandshake::default().accept(&post).unwrap_err();
/// assert_eq!(error, RequestError::Method(http::Method::POST));
/// assert_eq!(error.response().headers()["allow"], "GET");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The head could not be read.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Only GET can be upgraded.
    #[error("method {0} cannot open a WebSocket; use GET")]
    Method(Method),
    /// HTTP/1.0 cannot be upgraded.
    #[error("a WebSocket handshake needs HTTP/1.1")]
    Version,
    /// RFC 6455 §4.1 requires Host.
    #[error("missing Host header")]
    MissingHost,
    /// No `Upgrade: websocket`: this is a plain HTTP request.
    #[error("this endpoint speaks WebSocket: send Upgrade: websocket")]
    NotUpgrade,
    /// `Connection` lacks the `Upgrade` token.
    #[error("the Connection header must contain Upgrade")]
    ConnectionNotUpgrade,
    /// A WebSocket version other than 13.
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64.
    #[error("Sec-WebSocket-Key must be 16 bytes, base64-encoded")]
    InvalidKey,
    /// `Sec-WebSocket-Extensions` does not parse.
    #[error(transparent)]
    Extensions(#[from] ExtensionSyntaxError),
    /// An extended CONNECT (RFC 8441) whose `:protocol` is missing or is
    /// not `websocket`.
    #[error("an extended CONNECT opens a WebSocket only with :protocol websocket (got {})", .0.as_deref().unwrap_or("none"))]
    ConnectProtocol(Option<String>),
}

impl RequestError {
    /// The HTTP status this error is answered with.
    ///
    /// ```
    /// use duplex_proto::handshake::server::RequestError;
    /// assert_eq!(RequestError::MissingHost.status(), http::StatusCode::BAD_REQUEST);
    /// assert_eq!(RequestError::Method(http::Method::PUT).status(), 405);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Head(HeadError::TooLarge(_) | HeadError::TooManyHeaders(_)) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotUpgrade | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A complete rejection: status, the headers RFC 6455 asks for, and the
    /// reason as a one-line plain-text body.
    ///
    /// ```
    /// use duplex_proto::handshake::server::RequestError;
    /// let resp = RequestError::UnsupportedVersion.response();
    /// assert_eq!(resp.status(), 426);
    /// assert_eq!(resp.headers()["sec-websocket-version"], "13");
    /// ```
    pub fn response(&self) -> Response<String> {
        let body = format!("{self}\n");
        let mut resp = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::CONNECTION, "close");
        match self {
            Self::UnsupportedVersion => resp = resp.header(header::SEC_WEBSOCKET_VERSION, "13"),
            Self::NotUpgrade => {
                resp = resp
                    .header(header::UPGRADE, "websocket")
                    .header(header::SEC_WEBSOCKET_VERSION, "13");
            }
            Self::Method(_) => resp = resp.header(header::ALLOW, "GET"),
            _ => {}
        }
        resp.body(body).expect("static headers are valid")
    }

    /// The rejection as bytes ready to write to the socket.
    ///
    /// ```
    /// use duplex_proto::handshake::server::RequestError;
    /// let bytes = RequestError::MissingHost.to_bytes();
    /// assert!(bytes.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    /// assert!(bytes.ends_with(b"\r\n\r\nmissing Host header\n"));
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let resp = self.response();
        let mut out = Vec::with_capacity(256);
        super::head::write_response(&resp, &mut out);
        out.extend_from_slice(resp.body().as_bytes());
        out
    }
}

impl ServerHandshake {
    /// Validates an upgrade request and builds the 101 response.
    ///
    /// ```
    /// use duplex_proto::handshake::server::{RequestError, ServerHandshake};
    /// let request = http::Request::get("/").header("Host", "a.test")
    ///     .header("Upgrade", "websocket").header("Connection", "Upgrade")
    ///     .header("Sec-WebSocket-Version", "13").header("Sec-WebSocket-Key", "c2hvcnQ=")
    ///     .body(()).unwrap();
    /// let error = ServerHandshake::default().accept(&request).unwrap_err();
    /// assert_eq!(error, RequestError::InvalidKey); // "short" is not 16 bytes
    /// ```
    pub fn accept<B>(&self, req: &Request<B>) -> Result<Accepted, RequestError> {
        if req.method() != Method::GET {
            return Err(RequestError::Method(req.method().clone()));
        }
        if req.version() < Version::HTTP_11 {
            return Err(RequestError::Version);
        }
        let headers = req.headers();
        if !headers.contains_key(header::HOST) {
            return Err(RequestError::MissingHost);
        }
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(RequestError::NotUpgrade);
        }
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(RequestError::ConnectionNotUpgrade);
        }
        check_version(headers)?;
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(RequestError::InvalidKey)?;
        if !is_valid_key(key.as_bytes()) {
            return Err(RequestError::InvalidKey);
        }

        let negotiated = self.negotiate(headers)?;
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()));
        negotiated.into_accepted(resp)
    }

    /// Validates an extended CONNECT over HTTP/2 (RFC 8441 §4–5) and builds
    /// its `200` response. `protocol` is the request's `:protocol`
    /// pseudo-header, which `http::Request` cannot carry: HTTP/2 libraries
    /// hand it over beside the request (hyper's `ext::Protocol`, h2's).
    /// There is no key and no accept value (the stream is already
    /// WebSocket-only); the version, subprotocols and permessage-deflate
    /// are negotiated exactly as on HTTP/1.1.
    ///
    /// ```
    /// use duplex_proto::handshake::server::ServerHandshake;
    /// let req = http::Request::connect("https://example.com/chat")
    ///     .version(http::Version::HTTP_2)
    ///     .header("Sec-WebSocket-Version", "13")
    ///     .header("Sec-WebSocket-Protocol", "v2.chat, v1.chat")
    ///     .body(()).unwrap();
    /// let server = ServerHandshake { protocols: vec!["v1.chat".into()], deflate: None };
    /// let accepted = server.accept_connect(&req, Some("websocket")).unwrap();
    /// assert_eq!(accepted.response.status(), 200);
    /// assert_eq!(accepted.protocol.as_deref(), Some("v1.chat"));
    /// assert!(server.accept_connect(&req, None).is_err());
    /// ```
    pub fn accept_connect<B>(
        &self,
        req: &Request<B>,
        protocol: Option<&str>,
    ) -> Result<Accepted, RequestError> {
        if req.method() != Method::CONNECT {
            return Err(RequestError::Method(req.method().clone()));
        }
        if protocol != Some("websocket") {
            return Err(RequestError::ConnectProtocol(protocol.map(str::to_owned)));
        }
        let headers = req.headers();
        if req.uri().authority().is_none() && !headers.contains_key(header::HOST) {
            return Err(RequestError::MissingHost);
        }
        check_version(headers)?;
        self.negotiate(headers)?
            .into_accepted(Response::builder().status(StatusCode::OK))
    }

    /// The subprotocol and the compression, from the client's offers: the
    /// same on HTTP/1.1 and HTTP/2.
    fn negotiate(&self, headers: &http::HeaderMap) -> Result<Negotiation, RequestError> {
        let offered = header_list(headers, header::SEC_WEBSOCKET_PROTOCOL);
        let protocol = self
            .protocols
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .cloned();

        let mut deflate = None;
        let mut extension_response = None;
        if let Some(config) = &self.deflate {
            for value in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
                let value = value
                    .to_str()
                    .map_err(|_| ExtensionSyntaxError("not ASCII"))?;
                for offer in parse_extensions(value)? {
                    if deflate.is_none() {
                        if let Some((params, response)) = config.accept_offer(&offer) {
                            deflate = Some(params);
                            extension_response = Some(response.to_string());
                        }
                    }
                }
            }
        }
        Ok(Negotiation {
            protocol,
            deflate,
            extension_response,
        })
    }
}

/// What the server agreed to, before it is put in a response.
struct Negotiation {
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    extension_response: Option<String>,
}

impl Negotiation {
    /// `resp` (its status and form's headers) with the agreed subprotocol
    /// and extension added.
    fn into_accepted(self, mut resp: http::response::Builder) -> Result<Accepted, RequestError> {
        if let Some(p) = &self.protocol {
            resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p.as_str());
        }
        if let Some(ext) = self.extension_response {
            let value = HeaderValue::from_str(&ext).expect("extension tokens are header-safe");
            resp = resp.header(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        let response = resp.body(()).map_err(|_| RequestError::InvalidKey)?;
        Ok(Accepted {
            response,
            protocol: self.protocol,
            deflate: self.deflate,
        })
    }
}

/// Only version 13 is spoken (RFC 6455 §4.1; RFC 8441 keeps it).
fn check_version(headers: &http::HeaderMap) -> Result<(), RequestError> {
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        == Some(b"13")
    {
        Ok(())
    } else {
        Err(RequestError::UnsupportedVersion)
    }
}

/// A key is the base64 of 16 bytes: 24 characters ending in `==`.
fn is_valid_key(key: &[u8]) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() == 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HeadLimits;
    use crate::handshake::head::read_request;

    const GOOD: &str = "GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn check(extra: &str, replace: Option<(&str, &str)>) -> Result<Accepted, RequestError> {
        let mut raw = GOOD.to_string();
        if let Some((from, to)) = replace {
            raw = raw.replace(from, to);
        }
        raw.push_str(extra);
        raw.push_str("\r\n");
        let (req, _) = read_request(raw.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        ServerHandshake {
            protocols: vec![],
            deflate: Some(Default::default()),
        }
        .accept(&req)
    }

    #[test]
    fn accepts_a_valid_request_case_insensitively() {
        assert_eq!(check("", None).unwrap().response.status(), 101);
    }

    #[test]
    fn rejects_each_missing_piece_with_its_status() {
        let cases = [
            (("GET", "POST"), StatusCode::METHOD_NOT_ALLOWED),
            (("HTTP/1.1", "HTTP/1.0"), StatusCode::BAD_REQUEST),
            (("Host: a\r\n", ""), StatusCode::BAD_REQUEST),
            (
                ("Upgrade: WebSocket", "Upgrade: h2c"),
                StatusCode::UPGRADE_REQUIRED,
            ),
            (
                ("Connection: Upgrade", "Connection: close"),
                StatusCode::BAD_REQUEST,
            ),
            (("Version: 13", "Version: 8"), StatusCode::UPGRADE_REQUIRED),
            (
                ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for ((from, to), status) in cases {
            let err = check("", Some((from, to))).unwrap_err();
            assert_eq!(err.status(), status, "{from} -> {to}: {err}");
            let wire = String::from_utf8(err.to_bytes()).unwrap();
            assert!(
                wire.starts_with(&format!("HTTP/1.1 {}", status.as_u16())),
                "{wire}"
            );
        }
    }

    #[test]
    fn picks_the_first_acceptable_deflate_offer() {
        let ok = check("Sec-WebSocket-Extensions: permessage-deflate; bogus, permessage-deflate; client_no_context_takeover\r\n", None).unwrap();
        assert!(ok.deflate.unwrap().client_no_context_takeover);
        assert_eq!(
            ok.response.headers()["sec-websocket-extensions"],
            "permessage-deflate; client_no_context_takeover"
        );
    }

    #[test]
    fn declines_unknown_extensions_without_failing() {
        let ok = check("Sec-WebSocket-Extensions: x-unknown\r\n", None).unwrap();
        assert!(ok.deflate.is_none());
        assert!(
            !ok.response
                .headers()
                .contains_key("sec-websocket-extensions")
        );
    }

    #[test]
    fn malformed_extension_header_is_a_400() {
        assert_eq!(
            check("Sec-WebSocket-Extensions: ;;\r\n", None)
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
    }
}
