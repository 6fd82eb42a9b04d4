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
    pub fn get_config(&self) -> &Config {
        &self.config
    }

    /// Subprotocols, most preferred first.
    pub fn protocols<I: IntoIterator<Item = P>, P: Into<String>>(mut self, protocols: I) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Limits on the request head (size and header count).
    pub fn head_limits(mut self, limits: HeadLimits) -> Self {
        self.head_limits = limits;
        self
    }

    /// A check run on each request before accepting it.
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
    pub fn accept_connect_request<B>(
        &self,
        req: &Request<B>,
        protocol: Option<&str>,
    ) -> std::result::Result<Accepted, RequestError> {
        self.handshake().accept_connect(req, protocol)
    }

    /// The socket for a stream whose handshake `accepted` completed.
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
    pub fn get_head_limits(&self) -> &HeadLimits {
        &self.head_limits
    }

    /// The request filter, if any.
    pub fn get_filter(&self) -> Option<&RequestFilter> {
        self.filter.as_ref()
    }
}
