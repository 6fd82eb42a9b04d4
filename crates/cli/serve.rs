//! `duplex serve`: reads the settings (file, then `DUPLEX_*` environment,
//! then flags) and runs the hub until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use duplex_server::{Server, Settings};

/// Options of `duplex serve`. Each flag can also be set with the
/// environment variable shown, or in the TOML file given with --config
/// (same names, with underscores); flags win over the environment, which
/// wins over the file.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "DUPLEX_BIND")]
    pub bind: Option<SocketAddr>,
    /// Threads serving connections, each with its own runtime; 0: one per core [default: 0]
    #[arg(long, env = "DUPLEX_THREADS")]
    pub threads: Option<usize>,
    /// Directory for history and the generated API key [default: ./duplex-data]
    #[arg(long, env = "DUPLEX_DATA")]
    pub data: Option<PathBuf>,
    /// Share channels, history and recovery with other nodes through this
    /// Redis server (redis://HOST:PORT[/DB]); repeat it to spread channels
    /// over several (every node lists the same ones, in the same order)
    #[arg(long, env = "DUPLEX_REDIS", value_delimiter = ',', value_name = "URL")]
    pub redis: Vec<String>,
    /// With --redis: where the other nodes reach this one
    /// (ws://HOST:PORT), to forward file transfers to it [default: the
    /// --bind address, unless it is 0.0.0.0 or [::], or with TLS]
    #[arg(long, env = "DUPLEX_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "DUPLEX_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS and wss:// (with --tls-key)
    #[arg(long, env = "DUPLEX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "DUPLEX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Key for the HTTP API (`Authorization: Bearer KEY`); generated when
    /// bound to a non-loopback address and none is given
    #[arg(long, env = "DUPLEX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Secret for HS256 JWT connection tokens
    #[arg(long, env = "DUPLEX_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Refuse hub connections without a valid token
    #[arg(long, env = "DUPLEX_REQUIRE_TOKEN")]
    pub require_token: bool,
    /// Origins browsers may connect from (repeat or comma-separate); default any
    #[arg(long, env = "DUPLEX_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,
    /// Serve HTTP/2 (ALPN h2 on TLS, prior knowledge on plain TCP) with WebSockets over it (RFC 8441): true or false [default: true]
    #[arg(long, env = "DUPLEX_HTTP2", value_name = "BOOL")]
    pub http2: Option<bool>,
    /// Largest hub WebSocket message in bytes [default: 65536]
    #[arg(long, env = "DUPLEX_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Largest echo WebSocket message in bytes [default: 67108864]
    #[arg(long, env = "DUPLEX_ECHO_MAX_MESSAGE_SIZE")]
    pub echo_max_message_size: Option<usize>,
    /// Bytes the server may hold on its peers' behalf (unfinished and large messages, output waiting for slow readers, queued hub deliveries, relay buffers, long request heads); past it the heaviest connection is closed with 1013 [default: a quarter of the machine's memory]
    #[arg(long, env = "DUPLEX_MEMORY_BUDGET")]
    pub memory_budget: Option<usize>,
    /// WebSocket connections open at once, in all; more get 503 with Retry-After; 0: no limit [default: nine tenths of the file-descriptor limit]
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// WebSocket connections open at once from one client address; 0: no limit (behind a local reverse proxy every client has its address) [default: 1024]
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Largest publication data, in bytes of JSON [default: 32768]
    #[arg(long, env = "DUPLEX_MAX_DATA_SIZE")]
    pub max_data_size: Option<usize>,
    /// Subscriptions per connection [default: 100]
    #[arg(long, env = "DUPLEX_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Messages queued per connection before it is cut off as a slow consumer [default: 1024]
    #[arg(long, env = "DUPLEX_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Commands per second per connection, on average [default: 50]
    #[arg(long, env = "DUPLEX_RATE_LIMIT")]
    pub rate_limit: Option<f64>,
    /// Commands per connection in a burst [default: 200]
    #[arg(long, env = "DUPLEX_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Publications kept per channel [default: 10000]
    #[arg(long, env = "DUPLEX_HISTORY_SIZE")]
    pub history_size: Option<u64>,
    /// Seconds publications are kept [default: 604800]
    #[arg(long, env = "DUPLEX_HISTORY_TTL")]
    pub history_ttl: Option<u64>,
    /// Seconds between keepalive pings, 0 to disable [default: 25]
    #[arg(long, env = "DUPLEX_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Seconds a shutdown waits for connections to close [default: 5]
    #[arg(long, env = "DUPLEX_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Largest file transfer (`duplex send`) the relay accepts, in bytes [default: 1099511627776]
    #[arg(long, env = "DUPLEX_TRANSFER_MAX_SIZE")]
    pub transfer_max_size: Option<u64>,
    /// File transfers open at once [default: 100]
    #[arg(long, env = "DUPLEX_TRANSFER_MAX_CONCURRENT")]
    pub transfer_max_concurrent: Option<usize>,
    /// Receivers one file transfer may have at once [default: 8]
    #[arg(long, env = "DUPLEX_TRANSFER_MAX_RECEIVERS")]
    pub transfer_max_receivers: Option<usize>,
    /// Seconds a transfer code can be used to join [default: 3600]
    #[arg(long, env = "DUPLEX_TRANSFER_CODE_TTL")]
    pub transfer_code_ttl: Option<u64>,
    /// Bytes the relay holds per receiver at most (flow-control window) [default: 8388608]
    #[arg(long, env = "DUPLEX_TRANSFER_WINDOW")]
    pub transfer_window: Option<usize>,
    /// Wrong transfer codes one address may try per minute [default: 10]
    #[arg(long, env = "DUPLEX_TRANSFER_FAILED_JOINS")]
    pub transfer_failed_joins: Option<u32>,
}

impl ServeArgs {
    /// The settings: file (if any), then these flags and variables on top.
    pub fn settings(self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        take!(
            bind,
            threads,
            data,
            http2,
            max_message_size,
            echo_max_message_size,
            memory_budget,
            max_connections,
            max_connections_per_address,
            max_data_size,
            max_subscriptions,
            queue_size
        );
        take!(
            rate_limit,
            rate_burst,
            history_size,
            history_ttl,
            ping_interval,
            shutdown_timeout
        );
        take!(
            transfer_max_size,
            transfer_max_concurrent,
            transfer_max_receivers,
            transfer_code_ttl,
            transfer_window,
            transfer_failed_joins
        );
        if self.tls_cert.is_some() {
            s.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            s.tls_key = self.tls_key;
        }
        if self.api_key.is_some() {
            s.api_key = self.api_key;
        }
        if self.jwt_secret.is_some() {
            s.jwt_secret = self.jwt_secret;
        }
        if self.require_token {
            s.allow_anonymous = false;
        }
        if !self.redis.is_empty() {
            s.redis = self.redis;
        }
        if self.advertise_url.is_some() {
            s.advertise_url = self.advertise_url;
        }
        if !self.allowed_origin.is_empty() {
            s.allowed_origins = self.allowed_origin;
        }
        if !s.allow_anonymous && s.jwt_secret.is_none() {
            anyhow::bail!(
                "--require-token needs --jwt-secret: without a secret no token can be valid"
            );
        }
        Ok(s)
    }
}

/// Runs the server until a signal asks it to stop.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    // The first of the server's runtimes, one per core (the others are
    // the server's own: see `duplex_server::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::start(settings).await?;
        for notice in server.notices() {
            if notice.is_warning() {
                eprintln!("duplex: warning: {notice}");
            } else {
                for line in notice.to_string().lines() {
                    println!("duplex: {line}");
                }
            }
        }
        let addr = server.local_addr();
        let (http, ws) = server.scheme();
        println!("duplex: listening on {http}://{addr}");
        println!("duplex: chat UI at {http}://{addr}/   echo at {ws}://{addr}/echo   hub at {ws}://{addr}/ws");
        println!("duplex: push a notification: curl -d '{{\"channel\":\"news\",\"data\":\"hello\"}}' {http}://{addr}/api/publish");
        println!("duplex: send files at {http}://{addr}/send   or: duplex send FILE --server {http}://{addr}");
        shutdown_signal().await.context("waiting for a signal")?;
        println!("duplex: shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
