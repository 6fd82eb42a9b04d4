//! The benchmark's target: a `ws://` or `http://` URL on loopback.
//!
//! The load generator refuses any other host unless `--allow-remote` is given:
//! pointing a flood at someone else's server by mistake must not be easy.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

/// Where to connect and what to ask for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host[:port]` as written, for the `Host` header.
    pub host: String,
    /// The path and query, starting with `/`.
    pub path: String,
    /// `wss://` or `https://`: TLS with this client configuration (set by
    /// [`Target::with_tls`]).
    pub tls: Option<TlsTarget>,
    secure: bool,
}

/// What a TLS connection to the target needs.
#[derive(Clone)]
pub struct TlsTarget {
    /// Trusted roots and settings.
    pub config: Arc<duplex::tls::ClientConfig>,
    /// The name the certificate must carry.
    pub name: duplex::tls::ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsTarget({:?})", self.name)
    }
}

impl Target {
    /// Parses `ws://` and `http://` URLs; `wss://` and `https://` too, which
    /// then need [`Target::with_tls`] before connecting.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self> {
        let (rest, secure) = if let Some(rest) = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
        {
            (rest, false)
        } else if let Some(rest) = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("https://"))
        {
            (rest, true)
        } else {
            bail!("{url}: only ws://, wss://, http:// and https:// URLs can be benchmarked");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if secure { 443 } else { 80 })
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        if !addr.ip().is_loopback() && !allow_remote {
            bail!(
                "{url}: {} is not a loopback address; pass --allow-remote to load another machine",
                addr.ip()
            );
        }
        let mut target = Self {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
            tls: None,
            secure,
        };
        if secure {
            target = target.with_tls(None)?;
        }
        Ok(target)
    }

    /// For a `wss://` target: trust the system's roots, or only the PEM
    /// certificates in `cacert`. Does nothing to a `ws://` target.
    pub fn with_tls(mut self, cacert: Option<&std::path::Path>) -> Result<Self> {
        if !self.secure {
            return Ok(self);
        }
        let config = match cacert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read --cacert {}", path.display()))?;
                duplex::tls::client_config_with_ca_only(&pem)
                    .with_context(|| format!("--cacert {}", path.display()))?
            }
            None => duplex::tls::client_config(&[]).context("cannot load the system's roots")?,
        };
        let host = self
            .host
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(self.host.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = duplex::tls::ServerName::try_from(host.clone())
            .with_context(|| format!("{host} is not a valid TLS server name"))?;
        self.tls = Some(TlsTarget { config, name });
        Ok(self)
    }

    /// Whether the target is on IPv4 loopback, where 127.0.0.x sources work.
    pub fn is_v4_loopback(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/echo", false).unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.path, "/echo");
        let t = Target::parse("http://127.0.0.1:9000", false).unwrap();
        assert_eq!(t.path, "/");
        let t = Target::parse("wss://localhost:8443/echo", false).unwrap();
        assert!(t.tls.is_some());
        assert_eq!(t.addr.port(), 8443);
    }

    #[test]
    fn refuses_remote_hosts() {
        assert!(Target::parse("ws://192.0.2.1:80/", false).is_err());
        assert!(Target::parse("ftp://127.0.0.1/", false).is_err());
        assert!(Target::parse("ws://192.0.2.1:80/", true).is_ok());
    }
}
