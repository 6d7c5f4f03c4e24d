//! Built-in TLS (`wss://` and `https://` on the same port) with rustls.

use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Loads the PEM certificate chain and private key into an acceptor. Offers HTTP/1.1 only: the
/// WebSocket upgrade needs it.
pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("[server.tls] cert: cannot read {}", tls.cert))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("[server.tls] cert: {} is not a PEM certificate chain", tls.cert))?;
    if certs.is_empty() {
        anyhow::bail!("[server.tls] cert: {} holds no certificate", tls.cert);
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("[server.tls] key: cannot read a PEM private key from {}", tls.key))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("[server.tls]: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
