//! The hub's terminal clients: `duplex publish`, `duplex subscribe` and
//! `duplex chat`, speaking docs/protocol.md to `duplex serve`.

pub mod chat;
pub mod http;
pub mod publish;
pub mod subscribe;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

/// Where the server is, and how to trust it.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (ws:// and wss:// work too)
    pub url: String,
    /// Trust this CA certificate (PEM) for https/wss
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's certificate (INSECURE: testing only)
    #[arg(long)]
    pub insecure: bool,
}

impl ServerArgs {
    /// The base as `(tls, "host:port")`.
    fn base(&self) -> anyhow::Result<(bool, String)> {
        let (tls, rest) = if let Some(r) = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("wss://"))
        {
            (true, r)
        } else if let Some(r) = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("ws://"))
        {
            (false, r)
        } else {
            bail!(
                "{:?} is not a server URL: write http://HOST:PORT (or https://)",
                self.url
            );
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            bail!("{:?} has no host", self.url);
        }
        Ok((tls, authority.to_owned()))
    }

    /// The hub WebSocket URL (`ws://HOST:PORT/ws`).
    pub fn ws_url(&self) -> anyhow::Result<String> {
        let (tls, authority) = self.base()?;
        Ok(format!(
            "{}://{authority}/ws",
            if tls { "wss" } else { "ws" }
        ))
    }

    /// An HTTP URL on the server, e.g. `/api/publish`.
    pub fn http_url(&self, path: &str) -> anyhow::Result<(bool, String, String)> {
        let (tls, authority) = self.base()?;
        Ok((tls, authority, path.to_owned()))
    }

    /// The TLS configuration these options ask for.
    pub fn tls(&self) -> anyhow::Result<Option<Arc<duplex::tls::ClientConfig>>> {
        if self.insecure {
            eprintln!("duplex: WARNING: --insecure: the server's certificate is NOT verified");
            return Ok(Some(duplex::tls::insecure_client_config()));
        }
        match &self.cacert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(Some(duplex::tls::client_config(&[&pem])?))
            }
            None => Ok(None),
        }
    }

    /// A WebSocket client builder for the hub.
    pub fn client(&self) -> anyhow::Result<duplex::ClientBuilder> {
        let mut b =
            duplex::ClientBuilder::new().config(duplex::Config::default().with_compression());
        if let Some(tls) = self.tls()? {
            b = b.tls_config(tls);
        }
        Ok(b)
    }
}
