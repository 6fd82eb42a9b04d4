//! WebSockets over HTTP/2 (RFC 8441), client side: one HTTP/2 connection
//! carries many WebSockets, each an extended CONNECT stream — as browsers
//! do on a page's own connection.
//!
//! The connection is TLS with ALPN `h2` for `wss://`, or prior knowledge
//! (h2c) for `ws://`. Nothing is sent until the server's SETTINGS have
//! arrived and enabled the extended CONNECT (a PING round trip proves
//! they were read: a server sends its SETTINGS first).

use bytes::Bytes;

/// What a peer may send on one stream before the application reads it.
/// Well below [`CONNECTION_WINDOW`], so that a socket whose application
/// stops reading fills its own window, not the connection's: it takes
/// sixteen such sockets to stall the connection's other streams.
pub const STREAM_WINDOW: u32 = 128 << 10;

/// What a peer may send on all streams of a connection together before
/// they are read.
pub const CONNECTION_WINDOW: u32 = 2 << 20;

/// Streams (WebSockets and requests) a server lets a peer open at once on
/// one connection.
pub const MAX_STREAMS: u32 = 128;
use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
use duplex_proto::{Connection, Role};
use http::Response;

use crate::client::ClientBuilder;
use crate::error::{Error, HandshakeError, Result};
use crate::h2_stream::H2Stream;
use crate::socket::WebSocket;
use crate::url::WsUrl;

/// An HTTP/2 connection whose server enabled the extended CONNECT: opens
/// WebSockets on it, as many as the server's stream limit allows. Clones
/// share the connection; it closes when the last clone and the last socket
/// on it are gone.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let h2 = duplex::ClientBuilder::new().connect_http2("wss://example.com/").await?;
/// let mut chat = h2.open("/chat").await?;
/// let mut feed = h2.open("/feed").await?; // same TCP and TLS connection
/// chat.send("hello").await?;
/// # drop(feed); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Http2Connection {
    send: h2::client::SendRequest<Bytes>,
    /// `https` or `http`: the `:scheme` of each CONNECT.
    scheme: &'static str,
    /// The `:authority` of each CONNECT (host, and port if not the
    /// default).
    authority: String,
    /// The subprotocols, compression, headers and limits of each socket.
    builder: ClientBuilder,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .finish()
    }
}

impl ClientBuilder {
    /// Opens an HTTP/2 connection to the server of `url` (its path is not
    /// used: give each socket's to [`Http2Connection::open`]) and waits
    /// for the server's SETTINGS. Fails with
    /// [`HandshakeError::NoHttp2`] if TLS did not choose `h2`, or
    /// [`HandshakeError::NoExtendedConnect`] if the server did not enable
    /// WebSockets over HTTP/2.
    pub async fn connect_http2(&self, url: &str) -> Result<Http2Connection> {
        let url = WsUrl::parse(url)?;
        // Offering HTTP/1.1 too lets an HTTP/1.1-only server answer, rather
        // than end the TLS handshake: it is then told apart below.
        let io = self.transport(&url, &[b"h2", b"http/1.1"]).await?;
        if url.tls && io.alpn_protocol() != Some(b"h2") {
            return Err(HandshakeError::NoHttp2.into());
        }
        let timeout = self.get_config().handshake_timeout;
        let handshake = async {
            let (send, mut connection) = h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .handshake(io)
                .await
                .map_err(h2_error)?;
            let mut ping = connection.ping_pong().expect("taken once, here");
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("HTTP/2 connection: {e}");
                }
            });
            // The server's SETTINGS come before its PONG.
            ping.ping(h2::Ping::opaque()).await.map_err(h2_error)?;
            Ok::<_, Error>(send)
        };
        let send = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| Error::HandshakeTimeout(timeout))??;
        if !send.is_extended_connect_protocol_enabled() {
            return Err(HandshakeError::NoExtendedConnect.into());
        }
        Ok(Http2Connection {
            send,
            scheme: if url.tls { "https" } else { "http" },
            authority: url.host_header.clone(),
            builder: self.clone(),
        })
    }
}

impl Http2Connection {
    /// Opens a WebSocket at `path_and_query` (`/chat?room=1`) on a new
    /// stream: an extended CONNECT answered 200, with the builder's
    /// subprotocols, compression and headers negotiated as on HTTP/1.1.
    pub async fn open(&self, path_and_query: &str) -> Result<WebSocket<H2Stream>> {
        let config = self.builder.get_config();
        let hs = ClientHandshake::new(self.builder.get_protocols().to_vec(), config.deflate);
        let uri = format!("{}://{}{}", self.scheme, self.authority, path_and_query);
        let mut request = hs
            .connect_request(&uri, self.builder.get_headers())
            .map_err(|e| Error::url(&uri, e.to_string()))?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let timeout = config.handshake_timeout;
        let exchange = async {
            let mut send = self.send.clone().ready().await.map_err(h2_error)?;
            let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
            let response = response.await.map_err(h2_error)?;
            Ok::<_, Error>((response, stream))
        };
        let (response, send) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::HandshakeTimeout(timeout))??;
        let (parts, mut recv) = response.into_parts();
        let head = Response::from_parts(parts, ());
        let negotiated = match hs.verify_connect(&head) {
            Ok(negotiated) => negotiated,
            Err(error) => {
                // The start of a refusal's body says why.
                let body = match (&error, tokio::time::timeout(timeout, recv.data()).await) {
                    (ResponseError::Status(_), Ok(Some(Ok(data)))) => {
                        String::from_utf8_lossy(&data[..data.len().min(300)]).into_owned()
                    }
                    _ => String::new(),
                };
                return Err(HandshakeError::Response { error, body }.into());
            }
        };
        let conn = Connection::new(Role::Client, config.proto(), negotiated.deflate);
        Ok(WebSocket::from_parts(
            H2Stream::new(send, recv),
            conn,
            config.clone(),
            negotiated.protocol,
        ))
    }
}

fn h2_error(e: h2::Error) -> Error {
    Error::Io(if e.is_io() {
        e.into_io().expect("checked is_io")
    } else {
        std::io::Error::other(e)
    })
}
