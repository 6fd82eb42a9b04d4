//! Assembling the server: the store, the hub, routes, listener, TLS,
//! background tasks and the graceful shutdown. Connections are served in
//! [`crate::connection`]; the WebSocket endpoints are declared in
//! [`crate::endpoint`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{MethodFilter, get, on, post};
use duplex::MemoryBudget;

use crate::broker::Broker;
use crate::connection;
pub use crate::endpoint::Endpoint;
use crate::endpoint::upgrade_route;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::notice::Notice;
use crate::publication::now_ms;
use crate::redis::Redis;
use crate::settings::Settings;
use crate::state::{AppState, SharedTransfers};
use crate::store::{Retention, SqliteStore, Store};
use crate::workers::{self, Workers};
use crate::{api, ui};

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    accept_loop: tokio::task::JoinHandle<()>,
    /// The runtimes beyond the caller's ([`crate::workers`]).
    workers: Workers,
    notices: Vec<Notice>,
}

/// Where history is kept and who decides what other nodes must know:
/// embedded SQLite, or Redis shared with other nodes.
async fn store_and_broker(
    settings: &Settings,
    retention: Retention,
    hub: &Arc<Hub>,
    metrics: &Metrics,
    budget: &MemoryBudget,
) -> anyhow::Result<(Store, Broker)> {
    if settings.redis.is_empty() {
        let sqlite = SqliteStore::open(&settings.data, retention)?;
        let broker = Broker::embedded(sqlite.clone(), hub.clone(), metrics.clone(), budget.clone());
        return Ok((Store::Sqlite(sqlite), broker));
    }
    let node: Arc<str> = crate::store::new_epoch().into();
    let redis = Redis::connect(
        &settings.redis,
        node,
        (settings.queue_size / 2) as u64,
        retention,
        hub.clone(),
        metrics.clone(),
    )
    .await?;
    let broker = Broker::redis(redis.clone(), hub.clone(), metrics.clone(), budget.clone());
    Ok((Store::Redis(redis), broker))
}

/// TLS from `--tls-cert` and `--tls-key`, offering HTTP/2 by ALPN when it
/// is on.
fn tls_acceptor(settings: &Settings) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let cert =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            let mut config = (*duplex::tls::server_config(&cert, &key)?).clone();
            config.alpn_protocols = connection::alpn(settings.http2);
            Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
        }
        (None, None) => Ok(None),
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    }
}

impl Server {
    /// Opens the store, binds the listener and starts serving.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let retention = Retention {
            max_count: settings.history_size.max(1),
            max_age_secs: settings.history_ttl,
        };
        let metrics = Metrics::new();
        let budget = MemoryBudget::new(settings.memory_budget);
        let hub = Arc::new(Hub::new(metrics.clone(), budget.clone()));
        let (store, broker) =
            store_and_broker(&settings, retention, &hub, &metrics, &budget).await?;
        let mut notices = Vec::new();
        let tls = tls_acceptor(&settings)?;
        let listener = connection::listen(settings.bind).with_context(|| {
            format!(
                "cannot listen on {} (is another server using it? try --bind 127.0.0.1:0)",
                settings.bind
            )
        })?;
        let addr = listener.local_addr()?;
        let shared_transfers = match &store {
            Store::Redis(_) => Some(SharedTransfers {
                url: advertised_url(&settings, addr, &mut notices)?,
                secret: store
                    .meta_or_insert("node_secret", &crate::random::name(32))
                    .await?,
            }),
            Store::Sqlite(_) => None,
        };
        // Last of what can fail, so a key generated here is always shown:
        // the next start finds it kept and says nothing.
        let (api_key, generated) = resolve_api_key(&settings, &store).await?;
        notices.extend(generated);
        let state = Arc::new(AppState::new(
            settings,
            budget,
            hub,
            broker,
            store.clone(),
            metrics,
            api_key,
            shared_transfers,
        ));
        if let Some(directory) = &state.directory {
            let keep = directory
                .clone()
                .keep(state.transfers.clone(), state.shutdown.clone());
            state.tasks.spawn(keep);
        }
        if let Store::Sqlite(sqlite) = store {
            spawn_pruner(sqlite, retention, state.shutdown.clone());
        }
        let router = router(state.clone());
        let others = workers::runtimes(state.settings.threads) - 1;
        let workers = Workers::start(others, &listener, &router, &tls, &state)
            .context("cannot start the worker threads")?;
        let accept_loop = tokio::spawn(connection::accept(listener, router, tls, state.clone()));
        Ok(Self {
            addr,
            state,
            accept_loop,
            workers,
            notices,
        })
    }

    /// The state its connections share (for tests of the connection path).
    #[cfg(test)]
    pub(crate) fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// What the operator should know about how it started (a generated
    /// API key, a missing setting), for the caller to show.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
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
        self.state.shutdown.fire();
        self.state.tasks.close();
        let grace = Duration::from_secs(self.state.settings.shutdown_timeout);
        if tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        self.state.broker.clone().drain().await;
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    }
}

/// Where other nodes reach this one: `--advertise-url`, or the address it
/// listens on unless that is a wildcard.
fn advertised_url(
    settings: &Settings,
    addr: SocketAddr,
    notices: &mut Vec<Notice>,
) -> anyhow::Result<Option<String>> {
    if let Some(url) = &settings.advertise_url {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            anyhow::bail!("--advertise-url {url:?} must be a ws:// or wss:// URL (ws://HOST:PORT)");
        }
        return Ok(Some(url.clone()));
    }
    if addr.ip().is_unspecified() {
        notices.push(Notice::NoAdvertiseUrl { addr });
        return Ok(None);
    }
    let scheme = if settings.tls_cert.is_some() {
        "wss"
    } else {
        "ws"
    };
    Ok(Some(format!("{scheme}://{addr}")))
}

/// The API key: configured, or generated and kept for a server that
/// listens beyond loopback (with a notice saying so); none on loopback.
async fn resolve_api_key(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<(Option<String>, Option<Notice>)> {
    if let Some(key) = &settings.api_key {
        return Ok((Some(key.clone()), None));
    }
    if settings.is_loopback() {
        return Ok((None, None));
    }
    let generated = crate::random::name(32);
    let key = store.meta_or_insert("api_key", &generated).await?;
    let kept_in = match store {
        Store::Sqlite(_) => settings.data.display().to_string(),
        Store::Redis(_) => "Redis, for every node".to_owned(),
    };
    let notice = (key == generated).then(|| Notice::ApiKeyGenerated {
        key: key.clone(),
        kept_in,
    });
    Ok((Some(key), notice))
}

fn spawn_pruner(store: SqliteStore, retention: Retention, shutdown: crate::signal::Signal) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.fired() => return,
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
    // One route per WebSocket endpoint, each through the same checks: an
    // HTTP/1.1 upgrade is a GET, an HTTP/2 one (RFC 8441) a CONNECT.
    for endpoint in Endpoint::ALL {
        router = router.route(
            endpoint.path(),
            on(
                MethodFilter::GET.or(MethodFilter::CONNECT),
                move |State(state): State<Arc<AppState>>, req: Request| {
                    upgrade_route(state, endpoint, req)
                },
            ),
        );
    }
    router
        .route("/", get(ui::index))
        .route("/app.js", get(ui::script))
        .route("/app.css", get(ui::style))
        .route("/duplex.js", get(ui::hub_client))
        .route("/duplex.d.ts", get(ui::hub_client_types))
        .route("/hub-protocol.js", get(ui::hub_protocol))
        .route("/hub-protocol.d.ts", get(ui::hub_protocol_types))
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
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .with_state(state)
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
        let store = Store::Sqlite(SqliteStore::open(dir.path(), retention).unwrap());
        let loopback = Settings {
            data: dir.path().into(),
            ..Settings::default()
        };
        assert_eq!(
            resolve_api_key(&loopback, &store).await.unwrap(),
            (None, None)
        );
        let public = Settings {
            bind: "0.0.0.0:8080".parse().unwrap(),
            ..loopback.clone()
        };
        let (first, notice) = resolve_api_key(&public, &store).await.unwrap();
        let first = first.expect("a generated key");
        assert_eq!(first.len(), 32);
        assert!(
            matches!(&notice, Some(Notice::ApiKeyGenerated { key, .. }) if *key == first),
            "{notice:?}"
        );
        assert_eq!(
            resolve_api_key(&public, &store).await.unwrap(),
            (Some(first.clone()), None),
            "kept, not regenerated, and said only once"
        );
        let configured = Settings {
            api_key: Some("mine".into()),
            ..public
        };
        assert_eq!(
            resolve_api_key(&configured, &store).await.unwrap(),
            (Some("mine".to_owned()), None)
        );
    }
}
