//! Accepting WebSocket connections on a stream you already have.

use std::sync::{Arc, LazyLock};

use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::server::{Accepted, RequestError, ServerHandshake};
use duplex_proto::{Connection, DeflateConfig, Role};
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::error::Result;
use crate::socket::WebSocket;

/// Accepts a WebSocket on `stream` with default settings (compression
/// accepted, default limits).
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     tokio::spawn(async move {
///         let mut ws = duplex::accept(tcp).await?;
///         while let Some(msg) = ws.recv().await {
///             let msg = msg?;
///             if msg.is_data() {
///                 ws.feed(msg).await?; // flushed by the next recv: one write per batch
///             }
///         }
///         Ok::<(), duplex::Error>(())
///     });
/// }
/// # }
/// ```
pub fn accept<S>(stream: S) -> impl Future<Output = Result<WebSocket<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One builder for every call: the sockets share its settings.
    static DEFAULT: LazyLock<ServerBuilder> = LazyLock::new(ServerBuilder::new);
    DEFAULT.accept(stream)
}

/// A check run on each upgrade request before it is accepted: return a
/// response (e.g. 401, 404) to refuse it.
///
/// ```
/// use std::sync::Arc;
/// let members_only: duplex::RequestFilter = Arc::new(|req| match req.headers().get("cookie") {
///     Some(_) => Ok(()),
///     None => Err(http::Response::builder().status(401).body(String::new()).unwrap()),
/// });
/// assert_eq!(members_only(&http::Request::new(())).unwrap_err().status(), 401);
/// ```
pub type RequestFilter =
    Arc<dyn Fn(&Request<()>) -> std::result::Result<(), Response<String>> + Send + Sync>;

/// Settings for accepting connections.
///
/// ```
/// use duplex::ServerBuilder;
/// let server = ServerBuilder::new()
///     .protocols(["chat.v1"])
///     .config(duplex::Config::default().with_compression().with_max_message_size(1 << 20))
///     .filter(|req| if req.uri().path() == "/ws" { Ok(()) } else {
///         Err(http::Response::builder().status(404).body("no WebSocket here\n".into()).unwrap())
///     });
/// ```
#[derive(Clone)]
pub struct ServerBuilder {
    /// Shared with every socket it opens.
    config: Arc<Config>,
    protocols: Vec<String>,
    head_limits: HeadLimits,
    filter: Option<RequestFilter>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("protocols", &self.protocols)
            .finish()
    }
}

impl ServerBuilder {
    /// Defaults: compression accepted, default limits and timeouts.
    ///
    /// ```
    /// let server = duplex::ServerBuilder::new();
    /// assert!(server.get_config().deflate.is_some()); // compression accepted
    /// assert!(server.get_filter().is_none());
    /// ```
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                deflate: Some(DeflateConfig::default()),
                ..Config::default()
            }),
            protocols: Vec::new(),
            head_limits: HeadLimits::default(),
            filter: None,
        }
    }

    /// Replaces all connection settings. A new builder accepts
    /// compression; to change one setting, start from its config:
    ///
    /// ```
    /// use duplex::ServerBuilder;
    /// let server = ServerBuilder::new();
    /// let config = server.get_config().clone().with_max_message_size(1 << 20);
    /// let server = server.config(config);
    /// assert!(server.get_config().deflate.is_some());
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// The connection settings.
    ///
    /// ```
    /// let server = duplex::ServerBuilder::new();
    /// assert_eq!(server.get_config().handshake_timeout, std::time::Duration::from_secs(10));
    /// ```
    pub fn get_config(&self) -> &Config {
        &self.config
    }

    /// Subprotocols, most preferred first.
    ///
    /// ```
    /// use duplex::proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec!["chat".into()], None);
    /// let request = client.request("a.test", "/", &Default::default()).unwrap();
    /// let server = duplex::ServerBuilder::new().protocols(["chat", "superchat"]);
    /// let accepted = server.accept_request(&request).unwrap();
    /// assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    /// ```
    pub fn protocols<I: IntoIterator<Item = P>, P: Into<String>>(mut self, protocols: I) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Limits on the request head (size and header count).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new().head_limits(
    /// #         duplex::proto::handshake::HeadLimits { max_headers: 8, ..Default::default() },
    /// #     );
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{Error, HandshakeError, ClientBuilder};
    /// let crowded = (0..10).fold(ClientBuilder::new(), |c, i| c.header(&format!("x-{i}"), "1"));
    /// let Err(Error::Handshake(error)) = crowded.connect(&url).await else { panic!() };
    /// assert!(matches!(*error, HandshakeError::Response { .. }));
    /// assert!(error.to_string().contains("431")); // Request Header Fields Too Large
    /// # Ok(()) }
    /// ```
    pub fn head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// A check run on each request before accepting it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/private");
    /// # let task = tokio::spawn(async move {
    /// let server = duplex::ServerBuilder::new().filter(|req| match req.uri().path() {
    ///     "/ws" => Ok(()),
    ///     _ => Err(http::Response::builder().status(404).body("not here\n".into()).unwrap()),
    /// });
    /// let refused = server.accept(listener.accept().await?.0).await.unwrap_err();
    /// assert_eq!(refused.to_string(), "handshake failed: request refused with 404 Not Found");
    /// # Ok::<_, duplex::Error>(()) });
    /// # assert!(duplex::connect(&url).await.is_err());
    /// # task.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Request<()>) -> std::result::Result<(), Response<String>> + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    pub(crate) fn handshake(&self) -> ServerHandshake {
        ServerHandshake {
            protocols: self.protocols.clone(),
            deflate: self.config.deflate,
        }
    }

    /// Validates a request (already read) and builds the 101 response.
    ///
    /// ```
    /// use duplex::proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec!["chat".into()], None);
    /// let request = client.request("a.test", "/", &Default::default()).unwrap();
    /// let accepted = duplex::ServerBuilder::new().accept_request(&request).unwrap();
    /// assert_eq!(accepted.response.status(), 101);
    /// assert!(client.verify(&accepted.response).is_ok());
    /// ```
    pub fn accept_request<B>(
        &self,
        req: &Request<B>,
    ) -> std::result::Result<Accepted, RequestError> {
        self.handshake().accept(req)
    }

    /// Validates an HTTP/2 extended CONNECT (RFC 8441) whose `:protocol`
    /// pseudo-header is `protocol`, and builds the 200 response: the same
    /// subprotocol and compression negotiation as
    /// [`accept_request`](Self::accept_request).
    ///
    /// ```
    /// use duplex::proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec!["chat".into()], None);
    /// let request = client.connect_request("https://a.test/chat", &Default::default()).unwrap();
    /// let server = duplex::ServerBuilder::new().protocols(["chat"]);
    /// let accepted = server.accept_connect_request(&request, Some("websocket")).unwrap();
    /// assert_eq!(accepted.response.status(), 200); // not 101: this is HTTP/2
    /// assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    /// ```
    pub fn accept_connect_request<B>(
        &self,
        req: &Request<B>,
        protocol: Option<&str>,
    ) -> std::result::Result<Accepted, RequestError> {
        self.handshake().accept_connect(req, protocol)
    }

    /// The socket for a stream whose handshake `accepted` completed.
    ///
    /// ```
    /// use duplex::proto::handshake::client::ClientHandshake;
    /// let client = ClientHandshake::new(vec!["chat".into()], None);
    /// let request = client.request("a.test", "/", &Default::default()).unwrap();
    /// let server = duplex::ServerBuilder::new().protocols(["chat"]);
    /// let accepted = server.accept_request(&request).unwrap(); // the 101 to write back
    /// let (stream, _client_side) = tokio::io::duplex(4096);
    /// let ws = server.open(stream, &accepted);
    /// assert_eq!(ws.protocol(), Some("chat"));
    /// ```
    pub fn open<S>(&self, stream: S, accepted: &Accepted) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let conn = Connection::new(Role::Server, self.config.proto(), accepted.deflate);
        WebSocket::from_parts(stream, conn, self.config.clone(), accepted.protocol.clone())
    }

    /// Reads the upgrade request from `stream`, answers it, and returns the
    /// open socket: [`ServerBuilder::read_request`], then
    /// [`Incoming::accept`](crate::Incoming::accept). A bad request is
    /// answered with its 4xx status and a one-line reason, then reported as
    /// an error. Reading the request and writing each answer are bounded by
    /// [`Config::handshake_timeout`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// let server = duplex::ServerBuilder::new().protocols(["echo"]);
    /// tokio::spawn(async move {
    ///     let (tcp, _) = listener.accept().await?;
    ///     let mut ws = server.accept(tcp).await?;
    ///     let first = ws.recv().await.expect("open")?;
    ///     ws.send(first).await
    /// });
    /// let mut client = duplex::ClientBuilder::new().protocols(["echo"]).connect(&url).await?;
    /// client.send("hello").await?;
    /// assert_eq!(client.recv().await.unwrap()?.as_text(), Some("hello"));
    /// # Ok(()) }
    /// ```
    pub async fn accept<S>(&self, stream: S) -> Result<WebSocket<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The handshake's state (the head buffer, the parsed request, the
        // timer: about 2 KiB) lives in its own allocation, freed when the
        // handshake ends. Inline, it would widen the caller's future, and so
        // every connection's task, for the connection's whole life: async
        // state machines are as large as their largest state.
        Box::pin(async move {
            match self.read_request(stream).await {
                Ok(incoming) => incoming.accept(self).await,
                Err(no) => Err(no.answer(self.get_config().handshake_timeout).await),
            }
        })
        .await
    }

    /// The request head limits.
    ///
    /// ```
    /// use duplex::{ServerBuilder, proto::handshake::HeadLimits};
    /// let limits = HeadLimits { max_head_size: 4096, max_headers: 32 };
    /// let server = ServerBuilder::new().head_limits(limits);
    /// assert_eq!(server.get_head_limits().max_headers, 32);
    /// ```
    pub fn get_head_limits(&self) -> &HeadLimits {
        &self.head_limits
    }

    /// The request filter, if any.
    ///
    /// ```
    /// let server = duplex::ServerBuilder::new().filter(|req| match req.uri().path() {
    ///     "/ws" => Ok(()),
    ///     _ => Err(http::Response::builder().status(404).body(String::new()).unwrap()),
    /// });
    /// let filter = server.get_filter().expect("set above");
    /// assert!(filter(&http::Request::get("/ws").body(()).unwrap()).is_ok());
    /// ```
    pub fn get_filter(&self) -> Option<&RequestFilter> {
        self.filter.as_ref()
    }
}
