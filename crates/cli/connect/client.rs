//! Turns `duplex connect` options into a [`ClientBuilder`]: headers,
//! credentials, subprotocols, compression, limits, keepalive, timeouts,
//! TLS trust and the proxy. Mistakes are usage errors, reported before
//! anything is dialled.

use base64::Engine;
use duplex::proxy::{Proxy, ProxyConfig};
use duplex::{ClientBuilder, Config};

use super::ConnectArgs;
use crate::exit::Failure;

/// Builds the client, or says which option is wrong.
pub fn build(args: &ConnectArgs) -> Result<ClientBuilder, Failure> {
    let mut config = Config::default()
        .with_max_message_size(args.max_message_size)
        .with_max_frame_size(args.max_message_size)
        .with_handshake_timeout(args.connect_timeout);
    config.ping_interval = args.ping_interval;
    if args.compress {
        config = config.with_compression();
    }
    let mut client = ClientBuilder::new()
        .config(config)
        .http2(args.http2)
        .connect_timeout(args.connect_timeout)
        .protocols(subprotocols(&args.subprotocol));
    for header in &args.header {
        let (name, value) = parse_header(header)?;
        client = client.header(name, value);
    }
    if let Some(origin) = &args.origin {
        client = client.header("Origin", origin);
    }
    if let Some(user) = &args.user {
        let token = base64::engine::general_purpose::STANDARD.encode(user);
        client = client.header("Authorization", &format!("Basic {token}"));
    }
    if args.insecure {
        client = client.tls_config(duplex::tls::insecure_client_config());
    } else if let Some(path) = &args.cacert {
        let pem = std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read --cacert {}: {e}", path.display())))?;
        if !has_certificate(&pem) {
            return Err(Failure::usage(format!(
                "--cacert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            )));
        }
        let tls = duplex::tls::client_config_with_ca_only(&pem)
            .map_err(|e| Failure::usage(format!("--cacert {}: {e}", path.display())))?;
        client = client.tls_config(tls);
    }
    Ok(client.proxy(proxy(args)?))
}

fn has_certificate(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
}

/// The proxy setting: `--no-proxy`, `--proxy URL`, or the environment.
pub fn proxy(args: &ConnectArgs) -> Result<ProxyConfig, Failure> {
    if args.no_proxy {
        return Ok(ProxyConfig::None);
    }
    match &args.proxy {
        Some(url) => {
            Proxy::parse(url).map_err(|e| Failure::usage(format!("--proxy: {e}")))?;
            Ok(ProxyConfig::Url(url.clone()))
        }
        None => Ok(ProxyConfig::FromEnv),
    }
}

/// `--subprotocol a,b --subprotocol c` → `[a, b, c]`.
fn subprotocols(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `Name: value` (curl's `-H` syntax).
fn parse_header(header: &str) -> Result<(&str, &str), Failure> {
    let bad = |why: &str| Failure::usage(format!("-H {header:?}: {why}; write -H 'Name: value'"));
    let (name, value) = header.split_once(':').ok_or_else(|| bad("no colon"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(bad("not a valid header name"));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad("the value has a line break"));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_the_curl_way() {
        assert_eq!(parse_header("X-Token: abc").unwrap(), ("X-Token", "abc"));
        assert_eq!(parse_header("A:b:c").unwrap(), ("A", "b:c"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn subprotocols_split_on_commas() {
        let given = vec!["a, b".to_owned(), "c".to_owned()];
        assert_eq!(subprotocols(&given), ["a", "b", "c"]);
    }
}
