//! The benchmark's target: a `ws://` or `http://` URL on loopback.
//!
//! The load generator refuses any other host unless `--allow-remote` is given:
//! pointing a flood at someone else's server by mistake must not be easy.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

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
}

impl Target {
    /// Parses `ws://` or `http://` URLs (TLS is not benchmarked here).
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .with_context(|| format!("{url}: only ws:// and http:// URLs can be benchmarked"))?;
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
            format!("{authority}:80")
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
        Ok(Self {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
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
    }

    #[test]
    fn refuses_remote_hosts() {
        assert!(Target::parse("ws://192.0.2.1:80/", false).is_err());
        assert!(Target::parse("wss://127.0.0.1/", false).is_err());
        assert!(Target::parse("ws://192.0.2.1:80/", true).is_ok());
    }
}
