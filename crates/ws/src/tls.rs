//! TLS with rustls: client configurations (system and webpki roots, a custom
//! CA, or, loudly, no verification) and server configurations from PEM.

use std::sync::Arc;

use rustls::RootCertStore;
pub use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
pub use rustls::{ClientConfig, ServerConfig};

use crate::error::Error;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client TLS trusting the webpki roots, the system's roots, and any extra
/// CA certificates given as PEM.
///
/// ```
/// let config = duplex::tls::client_config(&[]).unwrap();
/// assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
/// ```
pub fn client_config(extra_ca_pem: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for pem in extra_ca_pem {
        add_certs(&mut roots, pem)?;
    }
    with_roots(roots)
}

/// Client TLS that trusts ONLY the given CA certificates (PEM).
pub fn client_config_with_ca_only(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    add_certs(&mut roots, ca_pem)?;
    with_roots(roots)
}

fn add_certs(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), Error> {
    for cert in parse_certs(pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
    }
    Ok(())
}

/// A client configuration trusting `roots`, speaking HTTP/1.1 (the only
/// HTTP a WebSocket upgrade can use).
fn with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client TLS that accepts ANY certificate. Encrypts, but does not
/// authenticate the server: for testing only.
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
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, Error> {
    let certs = parse_certs(cert_pem)?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate found in the PEM file".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| Error::Tls(format!("cannot read the private key: {e}")))?
        .ok_or_else(|| Error::Tls("no private key found in the PEM file".into()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("cannot read PEM certificates: {e}")))
}

/// The TLS server name for a host (a DNS name or an IP address).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Tls(format!("{host:?} is not a valid TLS server name")))
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
