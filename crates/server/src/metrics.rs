//! Prometheus metrics, served at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The server's counters, cheap to clone (they share their values).
#[derive(Clone)]
pub struct Metrics {
    /// Open WebSocket connections (hub and echo).
    pub connections: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// WebSocket messages received.
    pub messages_in: Counter,
    /// WebSocket messages sent.
    pub messages_out: Counter,
    /// Payload bytes received.
    pub bytes_in: Counter,
    /// Payload bytes sent.
    pub bytes_out: Counter,
    /// Publications accepted.
    pub publications: Counter,
    /// Batches of publications the store refused (full disk, read-only).
    pub publish_failures: Counter,
    /// Seconds from a publish request to its commit and fan-out.
    pub publish_latency: Histogram,
    /// Connections cut off because they read too slowly.
    pub slow_consumers: Counter,
    /// The memory budget for what is held on peers' behalf, and its use
    /// (set from the budget when rendered).
    pub memory_budget: Gauge,
    /// Bytes of the memory budget in use.
    pub memory_budget_used: Gauge,
    /// Connections closed with 1013 to stay within the memory budget.
    pub memory_budget_shed: Counter,
    /// Times a connection stopped reading (or a publish waited) for memory.
    pub memory_budget_paused: Counter,
    /// Request heads answered 503 because the memory budget had no room.
    pub memory_budget_refused: Counter,
    /// WebSocket upgrades refused with 503 at a connection limit.
    pub connections_refused: Counter,
    /// Connections that chose HTTP/2 (by ALPN on TLS; a plain connection's
    /// prior-knowledge HTTP/2 is not told apart here).
    pub http2_connections: Counter,
    /// WebSockets opened on HTTP/2 streams (RFC 8441 extended CONNECT).
    pub http2_websockets: Counter,
    /// With Redis: 1 while every Redis server's announcements are received.
    pub broker_up: Gauge,
    /// With Redis: channels this node subscribes to in Redis.
    pub broker_channels: Gauge,
    /// With Redis: gaps in announcements filled from history.
    pub broker_gaps: Counter,
    /// With Redis: times publications could not be recovered for a channel
    /// and its subscribers were closed (1012) to recover with `since`.
    pub broker_lost: Counter,
    /// File transfers open on this node's relay.
    pub transfers_open: Gauge,
    /// With Redis: `/files` connections forwarded to the node holding their
    /// transfer.
    pub transfers_forwarded: Counter,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `duplex_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("duplex");
        let m = Self {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            publications: Counter::default(),
            publish_failures: Counter::default(),
            publish_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            slow_consumers: Counter::default(),
            memory_budget: Gauge::default(),
            memory_budget_used: Gauge::default(),
            memory_budget_shed: Counter::default(),
            memory_budget_paused: Counter::default(),
            memory_budget_refused: Counter::default(),
            connections_refused: Counter::default(),
            http2_connections: Counter::default(),
            http2_websockets: Counter::default(),
            broker_up: Gauge::default(),
            broker_channels: Gauge::default(),
            broker_gaps: Counter::default(),
            broker_lost: Counter::default(),
            transfers_open: Gauge::default(),
            transfers_forwarded: Counter::default(),
            registry: Arc::new(Registry::default()),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "messages_received",
            "WebSocket messages received",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_sent",
            "WebSocket messages sent",
            m.messages_out.clone(),
        );
        registry.register(
            "received_bytes",
            "WebSocket payload bytes received",
            m.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "WebSocket payload bytes sent",
            m.bytes_out.clone(),
        );
        registry.register(
            "publications",
            "Publications accepted",
            m.publications.clone(),
        );
        registry.register(
            "publish_failures",
            "Publishes the store could not take (full disk, read-only, Redis unreachable)",
            m.publish_failures.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "Publish to commit and fan-out",
            m.publish_latency.clone(),
        );
        registry.register(
            "slow_consumers_dropped",
            "Connections cut off as slow consumers",
            m.slow_consumers.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "Bytes the server may hold on peers' behalf: large and unfinished messages, queued deliveries, replies, relay buffers, request heads",
            m.memory_budget.clone(),
        );
        registry.register(
            "memory_budget_used_bytes",
            "Bytes held on peers' behalf now",
            m.memory_budget_used.clone(),
        );
        registry.register(
            "memory_budget_shed",
            "Connections closed with 1013 to stay within the memory budget",
            m.memory_budget_shed.clone(),
        );
        registry.register(
            "memory_budget_paused",
            "Times a connection stopped reading (or a publish waited) for memory",
            m.memory_budget_paused.clone(),
        );
        registry.register(
            "memory_budget_refused",
            "Request heads answered 503 because the memory budget had no room",
            m.memory_budget_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "WebSocket upgrades refused with 503 at a connection limit",
            m.connections_refused.clone(),
        );
        registry.register(
            "http2_connections",
            "TLS connections that chose HTTP/2 by ALPN",
            m.http2_connections.clone(),
        );
        registry.register(
            "http2_websockets",
            "WebSockets opened on HTTP/2 streams (RFC 8441 extended CONNECT)",
            m.http2_websockets.clone(),
        );
        registry.register(
            "broker_up",
            "With Redis: 1 while every Redis server's announcements are received",
            m.broker_up.clone(),
        );
        registry.register(
            "broker_channels",
            "With Redis: channels this node subscribes to in Redis",
            m.broker_channels.clone(),
        );
        registry.register(
            "broker_gaps",
            "With Redis: gaps in announcements filled from history",
            m.broker_gaps.clone(),
        );
        registry.register(
            "broker_lost",
            "With Redis: channels whose subscribers were closed (1012) because publications could not be recovered",
            m.broker_lost.clone(),
        );
        registry.register(
            "transfers_open",
            "File transfers open on this node's relay",
            m.transfers_open.clone(),
        );
        registry.register(
            "transfers_forwarded",
            "With Redis: /files connections forwarded to the node holding their transfer",
            m.transfers_forwarded.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Takes the memory budget's figures, to be rendered next.
    pub fn observe_budget(&self, budget: &duplex::MemoryBudget) {
        use std::sync::atomic::Ordering::Relaxed;
        self.memory_budget.set(budget.limit() as i64);
        self.memory_budget_used.set(budget.used() as i64);
        self.memory_budget_shed
            .inner()
            .store(budget.shed(), Relaxed);
        self.memory_budget_paused
            .inner()
            .store(budget.paused(), Relaxed);
    }

    /// Takes the admission's figures, to be rendered next.
    pub fn observe_admission(&self, admission: &crate::admission::Admission) {
        self.connections_refused
            .inner()
            .store(admission.refused(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes the relay's figures, to be rendered next.
    pub fn observe_transfers(
        &self,
        rooms: &crate::transfer::Rooms,
        directory: Option<&crate::transfer::Directory>,
    ) {
        self.transfers_open.set(rooms.len() as i64);
        if let Some(directory) = directory {
            self.transfers_forwarded
                .inner()
                .store(directory.forwarded(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
