//! Assembling the server: routes, listener, TLS, background tasks and the
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use duplex::{Config, MemoryBudget, ServerBuilder, WebSocket};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::either::Either;

use crate::admission::{Admitted, Refusal};
use crate::broker::Broker;
use crate::fastpath::{self, Sniffed};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::publication::now_ms;
use crate::settings::Settings;
use crate::state::AppState;
use crate::store::{Retention, SqliteStore};
use crate::{api, echo, session, ui};

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let retention = Retention {
            max_count: settings.history_size.max(1),
            max_age_secs: settings.history_ttl,
        };
        let store = SqliteStore::open(&settings.data, retention)?;
        let api_key = resolve_api_key(&settings, &store).await?;
        let metrics = Metrics::new();
        let budget = MemoryBudget::new(settings.memory_budget);
        let hub = Arc::new(Hub::new(metrics.clone(), budget.clone()));
        let broker = Broker::start(store.clone(), hub.clone(), metrics.clone(), budget.clone());
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => {
                let cert = std::fs::read(cert)
                    .with_context(|| format!("cannot read {}", cert.display()))?;
                let key =
                    std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
                Some(tokio_rustls::TlsAcceptor::from(duplex::tls::server_config(
                    &cert, &key,
                )?))
            }
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
        };
        let listener = TcpListener::bind(settings.bind).await.with_context(|| {
            format!(
                "cannot listen on {} (is another server using it? try --bind 127.0.0.1:0)",
                settings.bind
            )
        })?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(
            settings,
            budget,
            hub,
            broker,
            store.clone(),
            metrics,
            api_key,
        ));
        spawn_pruner(store, retention, state.shutdown.clone());
        let router = router(state.clone());
        let accept_loop = tokio::spawn(accept(listener, router, tls, state.clone()));
        Ok(Self {
            addr,
            state,
            accept_loop,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file-transfer relay's transfers (to inspect them: tests, tools).
    pub fn transfers(&self) -> &Arc<crate::transfer::Rooms> {
        &self.state.transfers
    }

    /// The API key `/api` requests need, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.state.api_key.as_deref()
    }

    /// Whether it serves TLS.
    pub fn scheme(&self) -> (&'static str, &'static str) {
        if self.state.settings.tls_cert.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        }
    }

    /// Graceful shutdown: stop accepting, close every WebSocket with 1001,
    /// wait (bounded) for connections, then let the store finish writing.
    pub async fn shutdown(self) {
        self.accept_loop.abort();
        self.state.shutdown.cancel();
        self.state.tasks.close();
        let grace = Duration::from_secs(self.state.settings.shutdown_timeout);
        if tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        self.state.broker.clone().drain().await;
    }
}

async fn resolve_api_key(
    settings: &Settings,
    store: &SqliteStore,
) -> anyhow::Result<Option<String>> {
    if let Some(key) = &settings.api_key {
        return Ok(Some(key.clone()));
    }
    if settings.is_loopback() {
        return Ok(None);
    }
    if let Some(key) = store.meta("api_key").await? {
        return Ok(Some(key));
    }
    let key: String = {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut rng = rand::rng();
        (0..32)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    store.set_meta("api_key", &key).await?;
    println!(
        "duplex: generated an API key (kept in {}): {key}",
        settings.data.display()
    );
    println!("duplex: publish with: curl -H 'Authorization: Bearer {key}' ...");
    Ok(Some(key))
}

fn spawn_pruner(
    store: SqliteStore,
    retention: Retention,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let cutoff = now_ms() - (retention.max_age_secs as i64) * 1000;
                    if let Err(e) = store.prune(cutoff).await {
                        tracing::warn!("pruning old history failed: {e:#}");
                    }
                }
            }
        }
    });
}

fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    // One route per WebSocket endpoint, each through the same checks.
    for endpoint in Endpoint::ALL {
        router = router.route(
            endpoint.path(),
            get(move |State(state): State<Arc<AppState>>, req: Request| {
                upgrade_route(state, endpoint, req)
            }),
        );
    }
    router
        .route("/", get(ui::index))
        .route("/app.js", get(ui::script))
        .route("/app.css", get(ui::style))
        .route("/send", get(ui::send))
        .route("/receive", get(ui::receive))
        .route("/transfer.js", get(ui::transfer_script))
        .route("/transfer-core.js", get(ui::transfer_core))
        .route("/transfer-protocol.js", get(ui::transfer_protocol))
        .route("/transfer.css", get(ui::transfer_style))
        .route("/vendor/noble.js", get(ui::noble))
        .route(
            "/echo-http",
            post(|body: axum::body::Bytes| async move { body }),
        )
        .route("/api/publish", post(api::publish))
        .route("/api/channels/{channel}/history", get(api::history))
        .route("/api/channels/{channel}/presence", get(api::presence))
        .route("/api/channels/{channel}/kick", post(api::kick))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(api::metrics))
        .with_state(state)
}

async fn accept(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let connection = ConnectionParts {
            peer,
            router: router.clone(),
            state: state.clone(),
        };
        match &tls {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                state.tasks.spawn(async move {
                    let handshake = tokio::time::timeout(fastpath::HEAD_WAIT, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => serve_http1(stream, connection).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            None => {
                state.tasks.spawn(serve_http1(tcp, connection));
            }
        }
    }
}

/// What serving a connection needs besides its stream.
struct ConnectionParts {
    peer: SocketAddr,
    router: Router,
    state: Arc<AppState>,
}

/// An HTTP/1.1 connection, plain or TLS: WebSocket upgrades to the
/// endpoints are answered without hyper ([`fastpath`]); everything else is
/// served by hyper, the bytes already read replayed in front.
///
/// This future lives as long as the connection, so it is kept small: the
/// head reading and the hyper connection are boxed (freed when done), and
/// the arguments travel inside the box rather than in this future.
fn serve_http1<S>(stream: S, parts: ConnectionParts) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sniffing = Box::pin(async move {
        let sniffed = fastpath::sniff(stream, parts.peer.ip(), &parts.state).await;
        (sniffed, parts)
    });
    // Only the next stage is held while the connection lives, not the
    // sniffing's output it was made from.
    async move {
        let stage = {
            let (sniffed, parts) = sniffing.await;
            next_stage(sniffed, parts)
        };
        stage.await
    }
}

type BoxedStage = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a connection does after its first head: an echo socket runs
/// inline (it is what most idle connections are); a hub session, the relay
/// and a hyper connection run boxed.
fn next_stage<S>(
    sniffed: Sniffed<S>,
    ConnectionParts {
        peer,
        router,
        state,
    }: ConnectionParts,
) -> Either<impl std::future::Future<Output = ()> + Send, BoxedStage>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match sniffed {
        Sniffed::Socket(Endpoint::Echo, ws, admitted) => Either::Left(async move {
            // Counted as open until the socket ends.
            let _admitted = admitted;
            echo::run(ws, state).await
        }),
        Sniffed::Socket(endpoint, ws, admitted) => Either::Right(Box::pin(async move {
            run_socket(endpoint, ws, state, Some(peer.ip()), admitted).await
        })),
        Sniffed::Http(stream) => Either::Right(Box::pin(async move {
            let builder = http_builder();
            let service = with_peer(router, peer);
            let shutdown = state.shutdown.clone();
            drop(state);
            if let Err(e) =
                serve_connection(&builder, TokioIo::new(stream), service, shutdown).await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        })),
        Sniffed::Closed => Either::Right(Box::pin(std::future::ready(()))),
    }
}

/// The router, with the peer's address attached to every request as
/// `ConnectInfo` (the file relay limits code guessing per address).
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: SocketAddr,
}

fn with_peer(router: Router, peer: SocketAddr) -> PeerService {
    PeerService { router, peer }
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for PeerService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move {
            tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await
        })
    }
}

/// hyper's connection settings: a request head must arrive within
/// [`fastpath::HEAD_WAIT`], as on the fast path (hyper has no such limit
/// without a timer, and a slowloris trickling a head was held for ever).
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(fastpath::HEAD_WAIT);
    builder
}

async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: PeerService,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

fn origin_allowed<B>(state: &AppState, req: &http::Request<B>) -> bool {
    let allowed = &state.settings.allowed_origins;
    match req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        Some(origin) if !allowed.is_empty() => allowed.iter().any(|a| a == origin),
        _ => true,
    }
}

fn forbidden_origin() -> Response {
    (
        StatusCode::FORBIDDEN,
        "this Origin may not open WebSockets here (see allowed_origins)\n",
    )
        .into_response()
}

/// The WebSocket endpoints. Every upgrade to one of them, by the fast
/// path or by a route, passes [`socket_server`]'s checks and runs in
/// [`run_socket`]: there is no other way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: the hub protocol.
    Hub,
    /// `/echo`.
    Echo,
    /// `/files`: the file-transfer relay.
    Files,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Hub, Endpoint::Echo, Endpoint::Files];

    /// Where it is served.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Hub => "/ws",
            Self::Echo => "/echo",
            Self::Files => "/files",
        }
    }

    /// The endpoint at this path.
    pub fn of(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }
}

/// Each WebSocket endpoint's settings (limits, compression, keepalive),
/// built once: the sockets share them.
pub struct SocketServers {
    /// The memory held for peers (their unfinished and large messages,
    /// queued deliveries, replies, relay buffers, request heads), bounded
    /// together (`--memory-budget`).
    pub budget: MemoryBudget,
    hub: ServerBuilder,
    echo: ServerBuilder,
    /// No compression: the relay carries ciphertext, which cannot shrink.
    files: ServerBuilder,
}

impl SocketServers {
    /// The endpoints' settings from the server's, sharing `budget`.
    pub fn new(settings: &Settings, budget: MemoryBudget) -> Self {
        let mut config = Config::default()
            .with_compression()
            .with_max_message_size(settings.max_message_size);
        config.handshake_timeout = fastpath::HEAD_WAIT;
        config.limits.max_frame_size = settings.max_message_size;
        if settings.ping_interval > 0 {
            config.ping_interval = Some(Duration::from_secs(settings.ping_interval));
        }
        Self {
            hub: ServerBuilder::new()
                .config(config)
                .memory_budget(budget.clone()),
            echo: ServerBuilder::new()
                .config(Config {
                    handshake_timeout: fastpath::HEAD_WAIT,
                    ..Config::default()
                })
                .deflate(Some(duplex::DeflateConfig::default()))
                .max_message_size(settings.echo_max_message_size)
                .memory_budget(budget.clone()),
            // A frame of the relay's largest size, plus room for the
            // WebSocket header.
            files: ServerBuilder::new()
                .config(Config {
                    handshake_timeout: fastpath::HEAD_WAIT,
                    ..Config::default()
                })
                .deflate(None)
                .max_message_size(crate::transfer::Limits::from_settings(settings).max_frame + 64)
                .memory_budget(budget.clone()),
            budget,
        }
    }

    /// The settings a request head is read with before its endpoint is
    /// known: every endpoint's head limits, budget and timeout are alike.
    pub fn reader(&self) -> &ServerBuilder {
        &self.echo
    }
}

/// The checks every upgrade to `endpoint` passes, on the axum route and on
/// the fast path alike: the Origin allow-list, admission (the connection
/// limits, counting this one from `address` until the [`Admitted`] is
/// dropped), then the endpoint's settings (whose limits the handshake and
/// the socket apply).
pub fn socket_server<'s, B>(
    state: &'s AppState,
    endpoint: Endpoint,
    req: &http::Request<B>,
    address: Option<std::net::IpAddr>,
) -> Result<(&'s ServerBuilder, Admitted), Refused> {
    if !origin_allowed(state, req) {
        return Err(Refused::Origin);
    }
    let admitted = state.admission.admit(address).map_err(Refused::Admission)?;
    let server = match endpoint {
        Endpoint::Hub => &state.sockets.hub,
        Endpoint::Echo => &state.sockets.echo,
        Endpoint::Files => &state.sockets.files,
    };
    Ok((server, admitted))
}

/// Why [`socket_server`] refused an upgrade.
#[derive(Debug)]
pub enum Refused {
    /// The Origin is not allowed (403).
    Origin,
    /// A connection limit is reached (503 with `Retry-After`).
    Admission(Refusal),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Origin => forbidden_origin(),
            Self::Admission(refusal) => refusal.into_response(),
        }
    }
}

/// Runs an open WebSocket on its endpoint until it closes: the hub session
/// (authentication, rate limits, metrics), the echo loop or the relay
/// (which limits code guessing per client address `ip`).
pub async fn run_socket<S>(
    endpoint: Endpoint,
    ws: WebSocket<S>,
    state: Arc<AppState>,
    ip: Option<std::net::IpAddr>,
    admitted: Admitted,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Counted as open until the socket ends.
    let _admitted = admitted;
    match endpoint {
        // Boxed: a session's state is large, and the echo task should not
        // carry its size.
        Endpoint::Hub => Box::pin(session::run(ws, state)).await,
        Endpoint::Echo => echo::run(ws, state).await,
        Endpoint::Files => {
            let (rooms, shutdown) = (state.transfers.clone(), state.shutdown.clone());
            drop(state);
            Box::pin(crate::transfer::relay::run(ws, rooms, ip, shutdown)).await
        }
    }
}

async fn upgrade_route(state: Arc<AppState>, endpoint: Endpoint, req: Request) -> Response {
    // The accept loop adds the peer's address; without it every client
    // shares one budget of failed joins on /files, and of connections.
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (server, admitted) = match socket_server(&state, endpoint, &req, ip) {
        Ok((server, admitted)) => (server.clone(), admitted),
        Err(refused) => {
            if matches!(refused, Refused::Admission(_)) {
                state.admission.count_refusal();
            }
            return refused.into_response();
        }
    };
    match duplex::upgrade::upgrade(req, &server) {
        Ok((response, pending)) => {
            let tracker = state.tasks.clone();
            tracker.spawn(async move {
                match pending.await {
                    Ok(ws) => run_socket(endpoint, ws, state, ip, admitted).await,
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            response.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_generated_once_for_public_binds_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_count: 10,
            max_age_secs: 60,
        };
        let store = SqliteStore::open(dir.path(), retention).unwrap();
        let loopback = Settings {
            data: dir.path().into(),
            ..Settings::default()
        };
        assert_eq!(resolve_api_key(&loopback, &store).await.unwrap(), None);
        let public = Settings {
            bind: "0.0.0.0:8080".parse().unwrap(),
            ..loopback.clone()
        };
        let first = resolve_api_key(&public, &store)
            .await
            .unwrap()
            .expect("a generated key");
        assert_eq!(first.len(), 32);
        assert_eq!(
            resolve_api_key(&public, &store).await.unwrap(),
            Some(first.clone()),
            "kept, not regenerated"
        );
        let configured = Settings {
            api_key: Some("mine".into()),
            ..public
        };
        assert_eq!(
            resolve_api_key(&configured, &store)
                .await
                .unwrap()
                .as_deref(),
            Some("mine")
        );
    }
}
