//! Every setting of `duplex serve`, with its default.
//!
//! Settings come from a TOML file, then `DUPLEX_*` environment variables,
//! then command-line flags, each overriding the one before. This struct is
//! the TOML file's shape; the binary applies the environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The server's configuration.
///
/// ```
/// let s: duplex_server::Settings = toml::from_str("bind = '127.0.0.1:9000'\nhistory_size = 500").unwrap();
/// assert_eq!(s.bind.port(), 9000);
/// assert_eq!(s.history_size, 500);
/// assert_eq!(s.queue_size, 1024); // the rest keep their defaults
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Threads serving connections, each with its own runtime
    /// ([`crate::workers`]); 0: one per core the process may run on.
    pub threads: usize,
    /// Directory for the database and the generated API key.
    pub data: PathBuf,
    /// Redis servers (`redis://HOST:PORT[/DB]`) through which several nodes
    /// share channels, history, recovery and the API key; with more than
    /// one, channels are spread over them by a hash of their name (every
    /// node must list the same servers in the same order). Empty: one node,
    /// history in SQLite under `data`.
    pub redis: Vec<String>,
    /// Where the other nodes reach this one (`ws://HOST:PORT` or
    /// `wss://...`), to forward file-transfer connections to the transfers
    /// it holds. Default: `ws://` and the address it listens on, unless
    /// that is a wildcard (`0.0.0.0`, `[::]`) or the node serves TLS (a
    /// certificate seldom names an IP address).
    pub advertise_url: Option<String>,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// API key for `/api/publish` and admin endpoints. Generated and kept in
    /// the data directory when the server is not bound to loopback and none
    /// is set.
    pub api_key: Option<String>,
    /// Secret for HS256 JWT tokens; without it tokens are not accepted.
    pub jwt_secret: Option<String>,
    /// Whether connections without a token may use the hub.
    pub allow_anonymous: bool,
    /// Origins browsers may connect from (`https://example.com`); empty: any.
    pub allowed_origins: Vec<String>,
    /// Whether HTTP/2 is served: offered by ALPN on TLS, accepted with
    /// prior knowledge on plain TCP, WebSockets on it by extended CONNECT
    /// (RFC 8441). Off: HTTP/1.1 only.
    pub http2: bool,
    /// WebSockets one HTTP/2 connection may carry at once; past it a new
    /// one is reset with `HTTP_1_1_REQUIRED`, and clients open it over
    /// HTTP/1.1 instead. 0: every WebSocket over HTTP/1.1, pages still
    /// over HTTP/2. Default: the connection's stream limit (never reached
    /// first). Chromium closes the whole connection when one of its
    /// streams is reset so, with the page's other sockets: see
    /// docs/http2.md.
    pub http2_max_sockets: usize,
    /// Largest hub WebSocket message, in bytes.
    pub max_message_size: usize,
    /// Largest echo WebSocket message, in bytes.
    pub echo_max_message_size: usize,
    /// Bytes the server may hold on its peers' behalf, all connections
    /// together: unfinished and large messages, output waiting for slow
    /// readers, queued hub deliveries, relay buffers, long request heads.
    /// Past it the heaviest connection is closed with 1013.
    /// Default: a quarter of the machine's memory (or of the cgroup's
    /// limit, if lower).
    pub memory_budget: usize,
    /// WebSocket connections open at once, in all (0: no limit). Default:
    /// nine tenths of the process's file-descriptor limit.
    pub max_connections: usize,
    /// WebSocket connections open at once from one client address (0: no
    /// limit; behind a reverse proxy on the same machine, every client has
    /// the proxy's address).
    pub max_connections_per_address: usize,
    /// Largest `data` of one publication, in bytes of JSON.
    pub max_data_size: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Messages queued for one connection before it counts as a slow consumer.
    pub queue_size: usize,
    /// Commands per second one connection may send, on average.
    pub rate_limit: f64,
    /// Commands one connection may send in a burst.
    pub rate_burst: u32,
    /// Publications kept per channel.
    pub history_size: u64,
    /// Oldest publication kept, in seconds.
    pub history_ttl: u64,
    /// Seconds between keepalive pings (0: off).
    pub ping_interval: u64,
    /// Seconds a graceful shutdown waits for connections to close.
    pub shutdown_timeout: u64,
    /// Largest file transfer a sender may announce on `/files`, in bytes.
    pub transfer_max_size: u64,
    /// File transfers open at once.
    pub transfer_max_concurrent: usize,
    /// Receivers one file transfer may have at once.
    pub transfer_max_receivers: usize,
    /// Seconds a transfer code can be used to join.
    pub transfer_code_ttl: u64,
    /// Bytes the relay holds for one receiver at most (the credit window).
    pub transfer_window: usize,
    /// Failed joins (wrong codes) one address may make per minute.
    pub transfer_failed_joins: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".parse().expect("valid address"),
            threads: 0,
            data: PathBuf::from("duplex-data"),
            redis: Vec::new(),
            advertise_url: None,
            tls_cert: None,
            tls_key: None,
            api_key: None,
            jwt_secret: None,
            allow_anonymous: true,
            allowed_origins: Vec::new(),
            http2: true,
            http2_max_sockets: duplex::http2::MAX_STREAMS as usize,
            max_message_size: 64 << 10,
            echo_max_message_size: 64 << 20,
            memory_budget: default_memory_budget(),
            max_connections: crate::admission::default_max_connections(),
            max_connections_per_address: 1024,
            max_data_size: 32 << 10,
            max_subscriptions: 100,
            queue_size: 1024,
            rate_limit: 50.0,
            rate_burst: 200,
            history_size: 10_000,
            history_ttl: 7 * 24 * 3600,
            ping_interval: 25,
            shutdown_timeout: 5,
            transfer_max_size: 1 << 40,
            transfer_max_concurrent: 100,
            transfer_max_receivers: 8,
            transfer_code_ttl: 3600,
            transfer_window: 8 << 20,
            transfer_failed_joins: 10,
        }
    }
}

impl Settings {
    /// Reads a TOML file; unknown keys are an error that names them.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Whether the server listens only on a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.bind.ip().is_loopback()
    }
}

/// A quarter of the memory this process may use: the machine's
/// (`/proc/meminfo`), or its cgroup's limit if lower; 1 GiB where neither
/// can be read.
pub fn default_memory_budget() -> usize {
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c) / 4,
        (Some(m), None) => m / 4,
        (None, Some(c)) => c / 4,
        (None, None) => 1 << 30,
    }
}
