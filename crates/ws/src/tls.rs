//! TLS with rustls: client configurations (system and webpki roots, a custom
//! CA, or, loudly, no verification) and server configurations from PEM.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> duplex::Result<()> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let url = format!("wss://{}/", listener.local_addr()?);
//! use duplex::{ClientBuilder, tls};
//! let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
//! let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
//! let server_tls = tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
//! let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);
//! tokio::spawn(async move {
//!     let tls_stream = acceptor.accept(listener.accept().await?.0).await?;
//!     duplex::accept(tls_stream).await?.send("over TLS").await
//! });
//! let client_tls = tls::client_config_with_ca_only(cert_pem.as_bytes())?;
//! let mut ws = ClientBuilder::new().tls_config(client_tls).connect(&url).await?;
//! assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("over TLS"));
//! # Ok(()) }
//! ```

use std::sync::Arc;

use rustls::RootCertStore;
pub use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
pub use rustls::{ClientConfig, ServerConfig};

use crate::error::{Error, TlsError, TlsErrorKind};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client TLS trusting the webpki roots (feature `webpki-roots`), the
/// system's roots (feature `native-roots`), and any extra CA certificates
/// given as PEM.
///
/// ```
/// let config = duplex::tls::client_config(&[]).unwrap();
/// assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
/// ```
pub fn client_config(extra_ca_pem: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "native-roots")]
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for pem in extra_ca_pem {
        add_certs(&mut roots, pem)?;
    }
    with_roots(roots)
}

/// Client TLS that trusts ONLY the given CA certificates (PEM).
///
/// ```
/// use duplex::{Error, TlsErrorKind, tls};
/// let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
/// let config = tls::client_config_with_ca_only(ca.cert.pem().as_bytes())?;
/// assert_eq!(config.alpn_protocols, [b"http/1.1"]);
/// let broken = b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n";
/// let Err(Error::Tls(error)) = tls::client_config_with_ca_only(broken) else { panic!() };
/// assert_eq!(error.kind(), TlsErrorKind::Config);
/// # Ok::<_, duplex::Error>(())
/// ```
pub fn client_config_with_ca_only(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    add_certs(&mut roots, ca_pem)?;
    with_roots(roots)
}

fn add_certs(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), Error> {
    for cert in parse_certs(pem)? {
        roots
            .add(cert)
            .map_err(|e| config_error(format!("bad CA certificate: {e}")))?;
    }
    Ok(())
}

/// A client configuration trusting `roots`, speaking HTTP/1.1 (the only
/// HTTP a WebSocket upgrade can use).
fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client TLS that accepts ANY certificate. Encrypts, but does not
/// authenticate the server: for testing only.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> duplex::Result<()> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let url = format!("wss://{}/", listener.local_addr()?);
/// # let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
/// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
/// # let tls = duplex::tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
/// # let acceptor = tokio_rustls::TlsAcceptor::from(tls);
/// # tokio::spawn(async move {
/// #     let tls = acceptor.accept(listener.accept().await?.0).await?;
/// #     let mut ws = duplex::accept(tls).await?;
/// #     while let Some(Ok(_)) = ws.recv().await {}
/// #     Ok::<_, duplex::Error>(())
/// # });
/// use duplex::{ClientBuilder, MaybeTlsStream};
/// // The server's certificate is self-signed: a client that checks nothing connects.
/// let client = ClientBuilder::new().tls_config(duplex::tls::insecure_client_config());
/// let ws = client.connect(&url).await?;
/// assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
/// # Ok(()) }
/// ```
pub fn insecure_client_config() -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Server TLS from a PEM certificate chain and a PEM private key.
///
/// ```
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
/// let config = duplex::tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes())?;
/// assert_eq!(config.alpn_protocols, [b"http/1.1"]); // what an upgrade needs
/// let acceptor = tokio_rustls::TlsAcceptor::from(config); // then accept(tcp)
/// # drop(acceptor);
/// let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
/// assert!(duplex::tls::server_config(cert_pem.as_bytes(), other_key.as_bytes()).is_err());
/// # Ok::<_, duplex::Error>(())
/// ```
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, Error> {
    let certs = parse_certs(cert_pem)?;
    if certs.is_empty() {
        return Err(config_error("no certificate found in the PEM file"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| config_error(format!("cannot read the private key: {e}")))?
        .ok_or_else(|| config_error("no private key found in the PEM file"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| config_error(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("cannot read PEM certificates: {e}")))
}

/// The TLS server name for a host (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| config_error(format!("{host:?} is not a valid TLS server name")))
}

fn config_error(message: impl Into<String>) -> Error {
    TlsError::new(TlsErrorKind::Config, message).into()
}

/// A failed TLS handshake with `host`, sorted by what rustls reports.
pub(crate) fn handshake_error(host: &str, e: &std::io::Error) -> Error {
    use rustls::CertificateError as C;
    let rustls = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    let kind = match rustls {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsErrorKind::NameMismatch,
            C::UnknownIssuer => TlsErrorKind::UnknownIssuer,
            C::Expired | C::ExpiredContext { .. } => TlsErrorKind::Expired,
            _ => TlsErrorKind::Handshake,
        },
        // A plain HTTP answer is not a TLS record.
        Some(rustls::Error::InvalidMessage(_)) => TlsErrorKind::NotTls,
        _ => TlsErrorKind::Handshake,
    };
    TlsError::new(kind, format!("handshake with {host} failed: {e}")).into()
}

#[derive(Debug)]
struct NoVerification;

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
