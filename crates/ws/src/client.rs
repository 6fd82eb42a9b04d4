//! Opening WebSocket connections: `ws://` and `wss://`, directly or through
//! a proxy, with headers, subprotocols, compression and timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::client::{ClientHandshake, ResponseError};
use duplex_proto::handshake::head::{read_response, write_request};
use duplex_proto::{Connection, Role};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, HandshakeError, Result};
use crate::handshake_io::read_head;
use crate::http2::Http2Mode;
#[cfg(feature = "proxy")]
use crate::proxy::ProxyConfig;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;
use crate::tls;
use crate::url::WsUrl;

/// Connects to a `ws://` or `wss://` URL with default settings (proxy from
/// the environment, system and webpki roots for TLS, no compression).
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let mut ws = duplex::connect("wss://example.com/socket").await?;
/// ws.send("hello").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<WebSocket<MaybeTlsStream>> {
    ClientBuilder::new().connect(url).await
}

/// Settings for opening connections.
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// use std::time::Duration;
/// let mut ws = duplex::ClientBuilder::new()
///     .header("Authorization", "Bearer abc")
///     .protocols(["chat.v1"])
///     .config(duplex::Config::default().with_compression())
///     .connect_timeout(Duration::from_secs(5))
///     .connect("ws://127.0.0.1:8080/ws")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    config: Config,
    protocols: Vec<String>,
    headers: HeaderMap,
    header_error: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    #[cfg(feature = "proxy")]
    proxy: ProxyConfig,
    connect_timeout: Duration,
    head_limits: HeadLimits,
    http2: Http2Mode,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// What a completed client handshake looked like (for `curl -v`-style output).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let url = format!("ws://{addr}/chat");
/// # tokio::spawn(async move {
/// #     let server = duplex::ServerBuilder::new();
/// #     let mut ws = server.accept(listener.accept().await?.0).await?;
/// #     while let Some(msg) = ws.recv().await {
/// #         let msg = msg?;
/// #         if msg.is_data() {
/// #             ws.send(msg).await?;
/// #         }
/// #     }
/// #     Ok::<_, duplex::Error>(())
/// # });
/// let (_ws, info) = duplex::ClientBuilder::new().connect_with_info(&url).await?;
/// assert_eq!(info.request.uri(), "/chat");
/// assert_eq!(info.response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
/// assert_eq!(info.response.headers()["upgrade"], "websocket");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// The request sent.
    pub request: Request<()>,
    /// The server's response: 101, or 200 over HTTP/2.
    pub response: Response<()>,
}

impl ClientBuilder {
    /// Defaults: no compression, proxy from the environment, 10 s timeouts.
    ///
    /// ```
    /// let client = duplex::ClientBuilder::new();
    /// assert!(client.get_config().deflate.is_none()); // no compression offered
    /// assert!(client.get_protocols().is_empty() && client.get_headers().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            config: Config::default(),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            header_error: None,
            tls: None,
            #[cfg(feature = "proxy")]
            proxy: ProxyConfig::FromEnv,
            connect_timeout: Duration::from_secs(10),
            head_limits: HeadLimits::default(),
            http2: Http2Mode::Never,
        }
    }

    /// Replaces all connection settings (compression among them: a
    /// client offers none by default).
    ///
    /// ```
    /// use duplex::{ClientBuilder, Config};
    /// let client = ClientBuilder::new().config(Config::default().with_compression());
    /// assert!(client.get_config().deflate.is_some());
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Adds a request header. An invalid name or value is reported by `connect`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// use duplex::ClientBuilder;
    /// let client = ClientBuilder::new().header("Authorization", "Bearer t0ken");
    /// assert_eq!(client.get_headers()["authorization"], "Bearer t0ken");
    /// let bad = ClientBuilder::new().header("two words", "x");
    /// assert!(matches!(bad.connect("ws://127.0.0.1:9/").await, Err(duplex::Error::Url(_))));
    /// # Ok(()) }
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.header_error = Some(format!("invalid header {name:?}: {value:?}")),
        }
        self
    }

    /// Subprotocols to offer, most preferred first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new().protocols(["v2"]);
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let client = duplex::ClientBuilder::new().protocols(["v3", "v2"]);
    /// assert_eq!(client.get_protocols(), ["v3", "v2"]);
    /// let ws = client.connect(&url).await?;
    /// assert_eq!(ws.protocol(), Some("v2"));
    /// # Ok(()) }
    /// ```
    pub fn protocols<I: IntoIterator<Item = P>, P: Into<String>>(mut self, protocols: I) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The TLS configuration for `wss://` (default: webpki and system roots).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("wss://{}/", listener.local_addr()?);
    /// # let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    /// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    /// # let tls = duplex::tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
    /// # let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    /// # tokio::spawn(async move {
    /// #     let tls = acceptor.accept(listener.accept().await?.0).await?;
    /// #     let mut ws = duplex::accept(tls).await?;
    /// #     while let Some(Ok(_)) = ws.recv().await {}
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{ClientBuilder, MaybeTlsStream, tls};
    /// // Trust the server's self-signed certificate, and nothing else.
    /// let config = tls::client_config_with_ca_only(cert_pem.as_bytes())?;
    /// let ws = ClientBuilder::new().tls_config(config).connect(&url).await?;
    /// assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    /// # Ok(()) }
    /// ```
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Which proxy to use (default: from the environment).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let proxy_addr = proxy.local_addr()?;
    /// # tokio::spawn(async move { // an HTTP CONNECT proxy
    /// #     let (mut client, _) = proxy.accept().await?;
    /// #     let mut head = Vec::new();
    /// #     while !head.ends_with(b"\r\n\r\n") { head.push(client.read_u8().await?); }
    /// #     let target = String::from_utf8_lossy(&head).split(' ').nth(1).unwrap().to_owned();
    /// #     let mut server = tokio::net::TcpStream::connect(target).await?;
    /// #     client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
    /// #     tokio::io::copy_bidirectional(&mut client, &mut server).await
    /// # });
    /// use duplex::{ClientBuilder, proxy::ProxyConfig};
    /// let client = ClientBuilder::new().proxy(ProxyConfig::Url(format!("http://{proxy_addr}")));
    /// let mut ws = client.connect(&url).await?;
    /// assert_eq!(ws.get_ref().peer_addr(), Some(proxy_addr)); // TCP to the proxy
    /// ws.send("through the tunnel").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("through the tunnel"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "proxy")]
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = proxy;
        self
    }

    /// Whether [`connect`](Self::connect) opens the WebSocket over HTTP/2
    /// (RFC 8441): [`Http2Mode::Never`] by default. For many sockets on
    /// one connection, see [`connect_http2`](Self::connect_http2).
    ///
    /// ```no_run
    /// # async fn run() -> duplex::Result<()> {
    /// use duplex::http2::Http2Mode;
    /// let ws = duplex::ClientBuilder::new()
    ///     .http2(Http2Mode::Auto) // HTTP/2 if the server offers WebSockets on it
    ///     .connect("wss://example.com/chat")
    ///     .await?;
    /// # drop(ws); Ok(()) }
    /// ```
    pub fn http2(mut self, mode: Http2Mode) -> Self {
        self.http2 = mode;
        self
    }

    /// How long the TCP connect, proxy tunnel and TLS handshake may take.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("wss://{addr}/");
    /// use std::time::Duration;
    /// // A server that accepts TCP but never answers the TLS handshake.
    /// let client = duplex::ClientBuilder::new().connect_timeout(Duration::from_millis(50));
    /// let Err(duplex::Error::Io(error)) = client.connect(&url).await else { panic!() };
    /// assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    /// # drop(listener);
    /// # Ok(()) }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects and completes the handshake.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let client = duplex::ClientBuilder::new().header("User-Agent", "example/1.0");
    /// let mut ws = client.connect(&url).await?;
    /// ws.send("hello").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hello"));
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, url: &str) -> Result<WebSocket<MaybeTlsStream>> {
        self.connect_with_info(url).await.map(|(ws, _)| ws)
    }

    /// Connects, and also returns the handshake's request and response.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let client = duplex::ClientBuilder::new().protocols(["chat"]);
    /// let (_ws, info) = client.connect_with_info(&url).await?;
    /// assert_eq!(info.request.headers()["sec-websocket-protocol"], "chat");
    /// assert_eq!(info.response.status(), 101);
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_info(
        &self,
        url: &str,
    ) -> Result<(WebSocket<MaybeTlsStream>, HandshakeInfo)> {
        if let Some(e) = &self.header_error {
            return Err(Error::url(url, e.clone()));
        }
        let url = WsUrl::parse(url)?;
        if self.http2 != Http2Mode::Never {
            return self.connect_http2_mode(&url, self.http2).await;
        }
        let stream = self.transport(&url, &[]).await?;
        self.handshake_on(stream, &url).await
    }

    /// The connection settings.
    ///
    /// ```
    /// use duplex::{ClientBuilder, Config};
    /// let client = ClientBuilder::new().config(Config::default().with_max_message_size(1024));
    /// assert_eq!(client.get_config().limits.max_message_size, 1024);
    /// ```
    pub fn get_config(&self) -> &Config {
        &self.config
    }

    /// The subprotocols offered.
    ///
    /// ```
    /// let client = duplex::ClientBuilder::new().protocols(["mqtt", "wamp.2.json"]);
    /// assert_eq!(client.get_protocols(), ["mqtt", "wamp.2.json"]);
    /// ```
    pub fn get_protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extra request headers.
    ///
    /// ```
    /// let client = duplex::ClientBuilder::new().header("Origin", "https://a.test");
    /// assert_eq!(client.get_headers()["origin"], "https://a.test");
    /// ```
    pub fn get_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// TCP (through the proxy, if any), then TLS for `wss://` offering
    /// `alpn` (none: the TLS configuration's own), within the connect
    /// timeout.
    pub(crate) async fn transport(&self, url: &WsUrl, alpn: &[&[u8]]) -> Result<MaybeTlsStream> {
        tokio::time::timeout(self.connect_timeout, self.open_transport(url, alpn))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "could not connect to {}:{} within {:?}",
                        url.host, url.port, self.connect_timeout
                    ),
                ))
            })?
    }

    async fn open_transport(&self, url: &WsUrl, alpn: &[&[u8]]) -> Result<MaybeTlsStream> {
        #[cfg(feature = "proxy")]
        if let Some(proxy) = self.proxy.resolve(&url.host, url.tls)? {
            let tcp = proxy.connect(&url.host, url.port).await?;
            return self.over_tls(tcp, url, alpn).await;
        }
        let addrs: Vec<_> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|error| Error::Resolve {
                host: url.host.as_str().into(),
                error,
            })?
            .collect();
        let tcp = TcpStream::connect(&addrs[..]).await.map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot connect to {}:{}: {e}", url.host, url.port),
            ))
        })?;
        tcp.set_nodelay(true)?;
        self.over_tls(tcp, url, alpn).await
    }

    /// TLS for `wss://` over a connected stream (plain for `ws://`).
    async fn over_tls(
        &self,
        tcp: TcpStream,
        url: &WsUrl,
        alpn: &[&[u8]],
    ) -> Result<MaybeTlsStream> {
        if !url.tls {
            return Ok(MaybeTlsStream::Plain(tcp));
        }
        let mut config = match &self.tls {
            Some(c) => c.clone(),
            None => tls::client_config(&[])?,
        };
        if !alpn.is_empty() {
            let mut with_alpn = (*config).clone();
            with_alpn.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            config = Arc::new(with_alpn);
        }
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = connector
            .connect(tls::server_name(&url.host)?, tcp)
            .await
            .map_err(|e| tls::handshake_error(&url.host, &e))?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }

    /// Performs the WebSocket handshake on a stream that is already
    /// connected (through whatever transport) to the server of `url`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{ClientBuilder, url::WsUrl};
    /// let tcp = tokio::net::TcpStream::connect(addr).await?; // any connected stream
    /// let (mut ws, info) = ClientBuilder::new().handshake_on(tcp, &WsUrl::parse(&url)?).await?;
    /// assert_eq!(info.response.status(), 101);
    /// ws.send("hi").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub async fn handshake_on<S>(
        &self,
        mut stream: S,
        url: &WsUrl,
    ) -> Result<(WebSocket<S>, HandshakeInfo)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.config.handshake_timeout;
        let hs = ClientHandshake::new(self.protocols.clone(), self.config.deflate);
        let request = hs
            .request(&url.host_header, &url.path_and_query, &self.headers)
            .map_err(|e| {
                Error::url(
                    format!("{}{}", url.host_header, url.path_and_query),
                    e.to_string(),
                )
            })?;
        let exchange = async {
            let mut wire = Vec::with_capacity(256);
            write_request(&request, &mut wire);
            stream.write_all(&wire).await?;
            read_head(
                &mut stream,
                &self.head_limits,
                self.config.memory_budget.as_ref(),
                read_response,
            )
            .await
        };
        let (response, used, mut buf) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::HandshakeTimeout(timeout))??;
        let negotiated = hs.verify(&response).map_err(|error| {
            let body = String::from_utf8_lossy(&buf[used..buf.len().min(used + 300)]).into_owned();
            let body = if matches!(error, ResponseError::Status(_)) {
                body
            } else {
                String::new()
            };
            Error::from(HandshakeError::Response { error, body })
        })?;
        buf.advance(used);
        let conn = Connection::new(Role::Client, self.config.proto(), negotiated.deflate);
        let mut ws = WebSocket::from_parts(stream, conn, self.config.clone(), negotiated.protocol);
        ws.preload(&buf);
        Ok((ws, HandshakeInfo { request, response }))
    }
}
