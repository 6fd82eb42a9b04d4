//! WebSockets over HTTP/2 (RFC 8441), client side: one HTTP/2 connection
//! carries many WebSockets, each an extended CONNECT stream — as browsers
//! do on a page's own connection.
//!
//! The connection is TLS with ALPN `h2` for `wss://`, or prior knowledge
//! (h2c) for `ws://`. Nothing is sent until the server's SETTINGS have
//! arrived and enabled the extended CONNECT (a PING round trip proves
//! they were read: a server sends its SETTINGS first).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> duplex::Result<()> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let url = format!("ws://{addr}/");
//! # tokio::spawn(async move {
//! #     let (tcp, peer) = listener.accept().await?;
//! #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
//! #         .handshake(tcp).await.map_err(std::io::Error::other)?;
//! #     let server = duplex::ServerBuilder::new();
//! #     while let Some(Ok((request, mut respond))) = h2.accept().await {
//! #         let protocol = request.extensions().get::<h2::ext::Protocol>();
//! #         let protocol = protocol.map(|p| p.as_str());
//! #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
//! #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
//! #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
//! #         let mut ws = server.open(stream, &accepted);
//! #         tokio::spawn(async move {
//! #             while let Some(Ok(msg)) = ws.recv().await {
//! #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
//! #             }
//! #         });
//! #     }
//! #     Ok::<_, duplex::Error>(())
//! # });
//! let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
//! let (mut chat, mut feed) = (h2.open("/chat").await?, h2.open("/feed").await?);
//! chat.send("on stream 1").await?;
//! feed.send("on stream 3").await?; // the same TCP connection
//! assert_eq!(feed.recv().await.unwrap()?.as_text(), Some("on stream 3"));
//! assert_eq!(chat.recv().await.unwrap()?.as_text(), Some("on stream 1"));
//! # Ok(()) }
//! ```

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

/// h2's budget for small DATA frames it holds before they are taken
/// (`data_frame_budget`: 256 bytes, less the payload, per frame under 256
/// bytes; spent, the connection is closed with `ENHANCE_YOUR_CALM`).
/// [`H2Stream`]s take every frame as soon as their task runs, so what
/// counts is how many arrive between two turns: one read of the
/// connection can bring thousands of one-message frames. This allows about
/// 34,000 at once; h2's default (half the connection window) allows 4,000.
pub const SMALL_FRAME_BUDGET: usize = 8 << 20;
use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
use duplex_proto::{Connection, Role};
use http::Response;

use crate::client::{ClientBuilder, HandshakeInfo};
use crate::error::{Error, HandshakeError, Result};
use crate::h2_stream::H2Stream;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;
use crate::url::WsUrl;

/// Which HTTP version a client opens its WebSocket with
/// ([`ClientBuilder::http2`]).
///
/// ```
/// use duplex::{ClientBuilder, http2::Http2Mode};
/// assert_eq!(Http2Mode::default(), Http2Mode::Never);
/// assert_eq!("auto".parse::<Http2Mode>(), Ok(Http2Mode::Auto)); // as a CLI flag
/// let client = ClientBuilder::new().http2(Http2Mode::Auto);
/// # drop(client);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Http2Mode {
    /// HTTP/1.1 always: an upgrade answered 101 (the default).
    #[default]
    Never,
    /// HTTP/2 for `wss://` when TLS's ALPN chooses it and the server's
    /// SETTINGS enable the extended CONNECT, else HTTP/1.1 (on a new
    /// connection if the first chose HTTP/2 without it, or the server reset
    /// the stream with `HTTP_1_1_REQUIRED`): what browsers do.
    /// `ws://` stays HTTP/1.1: without TLS there is nothing to negotiate
    /// HTTP/2 with.
    Auto,
    /// HTTP/2 only, or an error that says why not: ALPN for `wss://`,
    /// prior knowledge for `ws://`.
    Always,
}

impl std::str::FromStr for Http2Mode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(Self::Never),
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            other => Err(format!("expected auto, always or never, not {other:?}")),
        }
    }
}

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
    /// The other end of the TCP connection.
    peer: Option<std::net::SocketAddr>,
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let (tcp, peer) = listener.accept().await?;
    /// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
    /// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
    /// #     let server = duplex::ServerBuilder::new();
    /// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
    /// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
    /// #         let protocol = protocol.map(|p| p.as_str());
    /// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
    /// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
    /// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// #         let mut ws = server.open(stream, &accepted);
    /// #         tokio::spawn(async move {
    /// #             while let Some(Ok(msg)) = ws.recv().await {
    /// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
    /// #             }
    /// #         });
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
    /// let mut ws = h2.open("/echo").await?;
    /// ws.send("hello").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hello"));
    /// # Ok(()) }
    /// ```
    pub async fn connect_http2(&self, url: &str) -> Result<Http2Connection> {
        let url = WsUrl::parse(url)?;
        // Offering HTTP/1.1 too lets an HTTP/1.1-only server answer, rather
        // than end the TLS handshake: it is then told apart below.
        let io = self.transport(&url, &[b"h2", b"http/1.1"]).await?;
        if url.tls && io.alpn_protocol() != Some(b"h2") {
            return Err(HandshakeError::NoHttp2.into());
        }
        self.http2_on(io, &url).await
    }

    /// The HTTP/2 handshake on `io` (already chosen by ALPN, or prior
    /// knowledge), then the wait for the server's SETTINGS.
    pub(crate) async fn http2_on(
        &self,
        io: MaybeTlsStream,
        url: &WsUrl,
    ) -> Result<Http2Connection> {
        let peer = io.peer_addr();
        let timeout = self.get_config().handshake_timeout;
        let handshake = async {
            let (send, mut connection) = h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .data_frame_budget(SMALL_FRAME_BUDGET)
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
        let send = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(send)) => send,
            // Without TLS there was no ALPN to ask: a server that does not
            // answer the preface as HTTP/2 does not speak it.
            Ok(Err(Error::Io(_))) if !url.tls => return Err(HandshakeError::NoHttp2.into()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::HandshakeTimeout(timeout)),
        };
        if !send.is_extended_connect_protocol_enabled() {
            return Err(HandshakeError::NoExtendedConnect.into());
        }
        Ok(Http2Connection {
            send,
            peer,
            scheme: if url.tls { "https" } else { "http" },
            authority: url.host_header.clone(),
            builder: self.clone(),
        })
    }

    /// [`ClientBuilder::connect_with_info`] over HTTP/2, as the mode says.
    pub(crate) async fn connect_http2_mode(
        &self,
        url: &WsUrl,
        mode: Http2Mode,
    ) -> Result<(WebSocket<MaybeTlsStream>, HandshakeInfo)> {
        if !url.tls && mode == Http2Mode::Auto {
            // Nothing to negotiate HTTP/2 with: HTTP/1.1, as documented.
            let io = self.transport(url, &[]).await?;
            return self.handshake_on(io, url).await;
        }
        let io = if url.tls {
            self.transport(url, &[b"h2", b"http/1.1"]).await?
        } else {
            self.transport(url, &[]).await?
        };
        let chose_h2 = !url.tls || io.alpn_protocol() == Some(b"h2");
        if !chose_h2 {
            if mode == Http2Mode::Always {
                return Err(HandshakeError::NoHttp2.into());
            }
            // TLS chose HTTP/1.1: upgrade on this connection.
            return self.handshake_on(io, url).await;
        }
        let opened = match self.http2_on(io, url).await {
            Ok(h2) => h2.open_stream(&url.path_and_query).await,
            Err(e) => Err(e),
        };
        match opened {
            // HTTP/2 without WebSockets on it, or not for this one:
            // HTTP/1.1 on a new connection that offers only it.
            Err(Error::Handshake(h))
                if mode == Http2Mode::Auto
                    && matches!(
                        *h,
                        HandshakeError::NoExtendedConnect | HandshakeError::Http1Required
                    ) =>
            {
                let io = self.transport(url, &[b"http/1.1"]).await?;
                self.handshake_on(io, url).await
            }
            other => other,
        }
    }
}

impl Http2Connection {
    /// Opens a WebSocket at `path_and_query` (`/chat?room=1`) on a new
    /// stream: an extended CONNECT answered 200, with the builder's
    /// subprotocols, compression and headers negotiated as on HTTP/1.1.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let (tcp, peer) = listener.accept().await?;
    /// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
    /// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
    /// #     let server = duplex::ServerBuilder::new();
    /// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
    /// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
    /// #         let protocol = protocol.map(|p| p.as_str());
    /// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
    /// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
    /// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// #         let mut ws = server.open(stream, &accepted);
    /// #         tokio::spawn(async move {
    /// #             while let Some(Ok(msg)) = ws.recv().await {
    /// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
    /// #             }
    /// #         });
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let h2 = duplex::ClientBuilder::new().protocols(["chat"]).connect_http2(&url).await?;
    /// let mut ws = h2.open("/chat?room=1").await?; // the builder's subprotocols offered
    /// ws.send("hi").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub async fn open(&self, path_and_query: &str) -> Result<WebSocket<H2Stream>> {
        let (stream, conn, protocol, _) = self.handshake(path_and_query).await?;
        let config = self.builder.get_config().clone();
        Ok(WebSocket::from_parts(stream, conn, config, protocol))
    }

    /// How many streams the server lets this connection have open at once
    /// (its SETTINGS_MAX_CONCURRENT_STREAMS, as far as known).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let (tcp, peer) = listener.accept().await?;
    /// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
    /// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
    /// #     let server = duplex::ServerBuilder::new();
    /// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
    /// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
    /// #         let protocol = protocol.map(|p| p.as_str());
    /// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
    /// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
    /// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// #         let mut ws = server.open(stream, &accepted);
    /// #         tokio::spawn(async move {
    /// #             while let Some(Ok(msg)) = ws.recv().await {
    /// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
    /// #             }
    /// #         });
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
    /// assert!(h2.max_streams() > 1); // h2's server allows many by default
    /// # Ok(()) }
    /// ```
    pub fn max_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// A stream opened as [`open`](Self::open) opens one, for a caller that
    /// speaks WebSocket on it itself (a load generator, a bridge); the
    /// response's headers say what was negotiated.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let (tcp, peer) = listener.accept().await?;
    /// #     let mut h2 = h2::server::Builder::new().enable_connect_protocol()
    /// #         .handshake(tcp).await.map_err(std::io::Error::other)?;
    /// #     let server = duplex::ServerBuilder::new();
    /// #     while let Some(Ok((request, mut respond))) = h2.accept().await {
    /// #         let protocol = request.extensions().get::<h2::ext::Protocol>();
    /// #         let protocol = protocol.map(|p| p.as_str());
    /// #         let accepted = server.accept_connect_request(&request, protocol).unwrap();
    /// #         let send = respond.send_response(accepted.response.clone(), false).unwrap();
    /// #         let stream = duplex::H2Stream::new(send, request.into_body(), Some(peer));
    /// #         let mut ws = server.open(stream, &accepted);
    /// #         tokio::spawn(async move {
    /// #             while let Some(Ok(msg)) = ws.recv().await {
    /// #                 if msg.is_data() && ws.send(msg).await.is_err() { break; }
    /// #             }
    /// #         });
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let h2 = duplex::ClientBuilder::new().connect_http2(&url).await?;
    /// let (stream, response) = h2.open_raw("/raw").await?;
    /// assert_eq!(response.status(), 200); // the extended CONNECT's answer
    /// assert_eq!(stream.peer_addr(), Some(addr)); // frames are the caller's to write
    /// # Ok(()) }
    /// ```
    pub async fn open_raw(&self, path_and_query: &str) -> Result<(H2Stream, Response<()>)> {
        let (stream, _, _, info) = self.handshake(path_and_query).await?;
        Ok((stream, info.response))
    }

    /// [`open`](Self::open), as a [`MaybeTlsStream`] socket with the
    /// handshake's request and response.
    pub(crate) async fn open_stream(
        &self,
        path_and_query: &str,
    ) -> Result<(WebSocket<MaybeTlsStream>, HandshakeInfo)> {
        let (stream, conn, protocol, info) = self.handshake(path_and_query).await?;
        let config = self.builder.get_config().clone();
        let stream = MaybeTlsStream::Http2(Box::new(stream));
        Ok((WebSocket::from_parts(stream, conn, config, protocol), info))
    }

    /// The extended CONNECT on a new stream, verified.
    async fn handshake(
        &self,
        path_and_query: &str,
    ) -> Result<(H2Stream, Connection, Option<String>, HandshakeInfo)> {
        let config = self.builder.get_config();
        let hs = ClientHandshake::new(self.builder.get_protocols().to_vec(), config.deflate);
        let uri = format!("{}://{}{}", self.scheme, self.authority, path_and_query);
        if !path_and_query.starts_with('/') {
            return Err(Error::url(uri, "the path must start with /"));
        }
        let mut request = hs
            .connect_request(&uri, self.builder.get_headers())
            .map_err(|e| Error::url(&uri, e.to_string()))?;
        let shown = request.clone();
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let timeout = config.handshake_timeout;
        let exchange = async {
            let mut send = self.send.clone().ready().await.map_err(h2_error)?;
            let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
            let response = response.await.map_err(|e| {
                if e.reason() == Some(h2::Reason::HTTP_1_1_REQUIRED) {
                    HandshakeError::Http1Required.into()
                } else {
                    h2_error(e)
                }
            })?;
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
        let info = HandshakeInfo {
            request: shown,
            response: head,
        };
        Ok((
            H2Stream::new(send, recv, self.peer),
            conn,
            negotiated.protocol,
            info,
        ))
    }
}

fn h2_error(e: h2::Error) -> Error {
    Error::Io(crate::h2_stream::io_error(e))
}
