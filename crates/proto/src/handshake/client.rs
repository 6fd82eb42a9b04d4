//! The client side of the opening handshake: build the request, verify the
//! server's answer.
//!
//! ```
//! use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
//! let client = ClientHandshake::new(vec![], None);
//! let not_found = http::Response::builder().status(404).body(()).unwrap();
//! assert_eq!(client.verify(&not_found), Err(ResponseError::Status(http::StatusCode::NOT_FOUND)));
//! ```

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

use super::head::HeadError;
use super::{accept_key, header_has_token, header_list};
use crate::deflate::{DeflateConfig, DeflateParams};
use crate::extension::parse_extensions;

/// One client handshake: holds the random key until the response arrives.
///
/// ```
/// use duplex_proto::handshake::{client::ClientHandshake, server::ServerHandshake, accept_key};
/// let client = ClientHandshake::new(vec!["chat".into()], None);
/// let req = client.request("example.com", "/ws?room=1", &http::HeaderMap::new()).unwrap();
/// assert_eq!(req.headers()["host"], "example.com");
///
/// let server = ServerHandshake { protocols: vec!["chat".into()], deflate: None };
/// let accepted = server.accept(&req).unwrap();
/// let negotiated = client.verify(&accepted.response).unwrap();
/// assert_eq!(negotiated.protocol.as_deref(), Some("chat"));
/// ```
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    key: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// What the server agreed to.
///
/// ```
/// use duplex_proto::handshake::{client::ClientHandshake, server::ServerHandshake};
/// use duplex_proto::DeflateConfig;
/// let client = ClientHandshake::new(vec![], Some(DeflateConfig::default()));
/// let request = client.request("example.com", "/", &http::HeaderMap::new()).unwrap();
/// let server = ServerHandshake { deflate: Some(DeflateConfig::default()), ..Default::default() };
/// let negotiated = client.verify(&server.accept(&request).unwrap().response).unwrap();
/// assert_eq!(negotiated.deflate.unwrap().client_max_window_bits, 15);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// Compression parameters, if the server accepted permessage-deflate.
    pub deflate: Option<DeflateParams>,
}

/// Why the server's response does not complete the handshake.
///
/// ```
/// use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
/// let client = ClientHandshake::new(vec![], None);
/// let response = http::Response::builder().status(101)
///     .header("Upgrade", "websocket").header("Connection", "Upgrade")
///     .header("Sec-WebSocket-Accept", "not the right one").body(()).unwrap();
/// assert_eq!(client.verify(&response), Err(ResponseError::BadAccept));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The head could not be read.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Any status but 101 (on HTTP/2: but a 2xx): the server did not open
    /// the WebSocket.
    #[error("the server answered {0} instead of opening the WebSocket")]
    Status(StatusCode),
    /// 101 without `Upgrade: websocket`.
    #[error("the server's response lacks Upgrade: websocket")]
    NotUpgrade,
    /// 101 without `Connection: Upgrade`.
    #[error("the server's response lacks Connection: Upgrade")]
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Accept` missing or wrong: not a WebSocket server, or a
    /// proxy that mangled the handshake.
    #[error("the server's Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// The server chose a subprotocol the client did not offer.
    #[error("the server chose subprotocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    /// The server's extension response is invalid or was not offered.
    #[error("invalid Sec-WebSocket-Extensions in the response: {0}")]
    Extension(String),
}

impl ClientHandshake {
    /// A handshake with a fresh random key.
    ///
    /// ```
    /// use duplex_proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec!["v2".into(), "v1".into()], None);
    /// let request = client.request("example.com", "/", &http::HeaderMap::new()).unwrap();
    /// assert_eq!(request.headers()["sec-websocket-protocol"], "v2, v1");
    /// ```
    pub fn new(protocols: Vec<String>, deflate: Option<DeflateConfig>) -> Self {
        let raw: [u8; 16] = rand::random();
        Self {
            key: base64::engine::general_purpose::STANDARD.encode(raw),
            protocols,
            deflate,
        }
    }

    /// The `Sec-WebSocket-Key` sent.
    ///
    /// ```
    /// use duplex_proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec![], None);
    /// let request = client.request("example.com", "/", &http::HeaderMap::new()).unwrap();
    /// assert_eq!(request.headers()["sec-websocket-key"], client.key());
    /// assert_eq!(client.key().len(), 24); // 16 random bytes, base64-encoded
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The upgrade request. `host` is the Host header value (with the port
    /// when it is not the scheme's default); `extra` headers are added last
    /// and may override none of the handshake's own. Fails if the host, the
    /// path or a subprotocol cannot appear in an HTTP head (spaces, CR/LF...).
    ///
    /// ```
    /// use duplex_proto::handshake::client::ClientHandshake;
    /// let mut extra = http::HeaderMap::new();
    /// extra.insert("authorization", "Bearer t0ken".parse().unwrap());
    /// extra.insert("upgrade", "h2c".parse().unwrap()); // ignored: the handshake's own
    /// let req = ClientHandshake::new(vec![], None).request("a.test:8080", "/ws", &extra).unwrap();
    /// assert_eq!(req.headers()["authorization"], "Bearer t0ken");
    /// assert_eq!(req.headers()["upgrade"], "websocket");
    /// assert_eq!(req.headers()["host"], "a.test:8080");
    /// ```
    pub fn request(
        &self,
        host: &str,
        path_and_query: &str,
        extra: &HeaderMap,
    ) -> Result<Request<()>, http::Error> {
        let req = Request::get(path_and_query)
            .header(header::HOST, host)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_KEY, &self.key)
            .header(header::SEC_WEBSOCKET_VERSION, "13");
        self.finish(req, extra)
    }

    /// The extended CONNECT request that opens a WebSocket on an HTTP/2
    /// stream (RFC 8441 §4–5), for `uri` (scheme, authority, path and
    /// query). The HTTP/2 library must add the `:protocol` pseudo-header,
    /// `websocket`, which `http::Request` cannot carry (h2's
    /// `ext::Protocol`), and send it only once the server's SETTINGS
    /// enabled the extended CONNECT. No key: the stream is the WebSocket's
    /// alone. `extra` headers are added as in [`ClientHandshake::request`].
    ///
    /// ```
    /// use duplex_proto::handshake::{client::ClientHandshake, server::ServerHandshake};
    /// let client = ClientHandshake::new(vec!["chat".into()], None);
    /// let req = client.connect_request("https://example.com/ws", &http::HeaderMap::new()).unwrap();
    /// assert_eq!(req.method(), http::Method::CONNECT);
    /// assert!(!req.headers().contains_key("sec-websocket-key"));
    ///
    /// let server = ServerHandshake { protocols: vec!["chat".into()], deflate: None };
    /// let accepted = server.accept_connect(&req, Some("websocket")).unwrap();
    /// let negotiated = client.verify_connect(&accepted.response).unwrap();
    /// assert_eq!(negotiated.protocol.as_deref(), Some("chat"));
    /// ```
    pub fn connect_request(
        &self,
        uri: &str,
        extra: &HeaderMap,
    ) -> Result<Request<()>, http::Error> {
        let req = Request::connect(uri)
            .version(http::Version::HTTP_2)
            .header(header::SEC_WEBSOCKET_VERSION, "13");
        // HTTP/2 forbids connection-specific headers (RFC 9113 §8.2.2):
        // HTTP/2 libraries refuse a request that has them.
        let extra: HeaderMap = extra
            .iter()
            .filter(|(name, _)| !is_connection_specific(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        self.finish(req, &extra)
    }

    /// `req` with the subprotocols and compression offered, then the
    /// `extra` headers that are not the handshake's own: the same in both
    /// forms.
    fn finish(
        &self,
        mut req: http::request::Builder,
        extra: &HeaderMap,
    ) -> Result<Request<()>, http::Error> {
        if !self.protocols.is_empty() {
            req = req.header(header::SEC_WEBSOCKET_PROTOCOL, self.protocols.join(", "));
        }
        if let Some(cfg) = &self.deflate {
            let offers: Vec<String> = cfg.offers().iter().map(|o| o.to_string()).collect();
            let offer =
                HeaderValue::from_str(&offers.join(", ")).expect("offer tokens are header-safe");
            req = req.header(header::SEC_WEBSOCKET_EXTENSIONS, offer);
        }
        let mut req = req.body(())?;
        for (name, value) in extra {
            if !is_handshake_header(name) {
                req.headers_mut().append(name, value.clone());
            }
        }
        Ok(req)
    }

    /// Verifies the server's answer to an extended CONNECT: a `2xx` (RFC
    /// 8441 §5), then the subprotocol and compression as on HTTP/1.1.
    ///
    /// ```
    /// use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
    /// let client = ClientHandshake::new(vec![], None);
    /// let ok = http::Response::builder().status(200).body(()).unwrap();
    /// assert_eq!(client.verify_connect(&ok).unwrap().protocol, None);
    /// let refused = http::Response::builder().status(403).body(()).unwrap();
    /// assert!(matches!(client.verify_connect(&refused), Err(ResponseError::Status(_))));
    /// ```
    pub fn verify_connect<B>(&self, resp: &Response<B>) -> Result<Negotiated, ResponseError> {
        if !resp.status().is_success() {
            return Err(ResponseError::Status(resp.status()));
        }
        self.negotiated(resp.headers())
    }

    /// Verifies the server's response.
    ///
    /// ```
    /// use duplex_proto::handshake::{accept_key, client::ClientHandshake};
    /// let client = ClientHandshake::new(vec![], None);
    /// let response = http::Response::builder().status(101)
    ///     .header("Upgrade", "websocket").header("Connection", "Upgrade")
    ///     .header("Sec-WebSocket-Accept", accept_key(client.key().as_bytes()))
    ///     .body(()).unwrap();
    /// let negotiated = client.verify(&response).unwrap();
    /// assert_eq!((negotiated.protocol, negotiated.deflate), (None, None));
    /// ```
    pub fn verify<B>(&self, resp: &Response<B>) -> Result<Negotiated, ResponseError> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::Status(resp.status()));
        }
        let headers = resp.headers();
        if !header_has_token(headers, header::UPGRADE, "websocket") {
            return Err(ResponseError::NotUpgrade);
        }
        if !header_has_token(headers, header::CONNECTION, "upgrade") {
            return Err(ResponseError::ConnectionNotUpgrade);
        }
        let expected = accept_key(self.key.as_bytes());
        if headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .map(|v| v.as_bytes())
            != Some(expected.as_bytes())
        {
            return Err(ResponseError::BadAccept);
        }
        self.negotiated(headers)
    }

    /// What the server chose, checked against what was offered.
    fn negotiated(&self, headers: &HeaderMap) -> Result<Negotiated, ResponseError> {
        let chosen = header_list(headers, header::SEC_WEBSOCKET_PROTOCOL);
        let protocol = match chosen.as_slice() {
            [] => None,
            [one] if self.protocols.contains(one) => Some(one.clone()),
            _ => return Err(ResponseError::UnexpectedProtocol(chosen.join(", "))),
        };
        let mut deflate = None;
        for value in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
            let value = value
                .to_str()
                .map_err(|_| ResponseError::Extension("not ASCII".into()))?;
            for ext in
                parse_extensions(value).map_err(|e| ResponseError::Extension(e.to_string()))?
            {
                let Some(cfg) = &self.deflate else {
                    return Err(ResponseError::Extension(format!(
                        "{} was not offered",
                        ext.name
                    )));
                };
                if deflate.is_some() {
                    return Err(ResponseError::Extension(
                        "permessage-deflate accepted twice".into(),
                    ));
                }
                deflate = Some(
                    cfg.accept_response(&ext)
                        .map_err(|e| ResponseError::Extension(e.into()))?,
                );
            }
        }
        Ok(Negotiated { protocol, deflate })
    }
}

/// Headers about one connection, which HTTP/2 does not carry.
fn is_connection_specific(name: &header::HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ]
    .contains(name)
}

fn is_handshake_header(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ]
    .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server::ServerHandshake;

    fn response(
        client: &ClientHandshake,
        f: impl FnOnce(&mut Response<()>),
    ) -> Result<Negotiated, ResponseError> {
        let req = client.request("h", "/", &HeaderMap::new()).unwrap();
        let mut resp = ServerHandshake {
            protocols: vec!["a".into()],
            deflate: Some(DeflateConfig::default()),
        }
        .accept(&req)
        .unwrap()
        .response;
        f(&mut resp);
        client.verify(&resp)
    }

    #[test]
    fn negotiates_compression_end_to_end() {
        let client = ClientHandshake::new(vec![], Some(DeflateConfig::default()));
        assert_eq!(
            response(&client, |_| {}).unwrap().deflate,
            Some(DeflateParams::default())
        );
    }

    #[test]
    fn rejects_a_wrong_accept() {
        let client = ClientHandshake::new(vec![], None);
        let err = response(&client, |r| {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_static("nope"),
            );
        });
        assert_eq!(err, Err(ResponseError::BadAccept));
    }

    #[test]
    fn rejects_unoffered_protocol_and_extension() {
        let client = ClientHandshake::new(vec![], None);
        let err = response(&client, |r| {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("a"),
            );
        });
        assert!(matches!(err, Err(ResponseError::UnexpectedProtocol(_))));
        let err = response(&client, |r| {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static("permessage-deflate"),
            );
        });
        assert!(matches!(err, Err(ResponseError::Extension(_))));
    }

    #[test]
    fn unsafe_inputs_are_an_error_not_a_bare_request() {
        let client = ClientHandshake::new(vec!["chat\r\nX-Injected: 1".into()], None);
        assert!(
            client
                .request("example.com", "/ws", &HeaderMap::new())
                .is_err()
        );
        let client = ClientHandshake::new(vec![], None);
        assert!(
            client
                .request("example.com", "/w s", &HeaderMap::new())
                .is_err()
        );
    }

    #[test]
    fn a_404_is_reported_as_a_status() {
        let client = ClientHandshake::new(vec![], None);
        let err = response(&client, |r| *r.status_mut() = StatusCode::NOT_FOUND);
        assert_eq!(err, Err(ResponseError::Status(StatusCode::NOT_FOUND)));
    }
}
