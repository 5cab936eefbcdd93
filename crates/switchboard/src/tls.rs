//! The certificate shared by HTTPS/WSS and TURN over TLS.

use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Builds the rustls config from `tls.cert`/`tls.key`, or a self-signed
/// development certificate. `None` when TLS is off.
pub fn server_config(cfg: &TlsConfig) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (certs, key) = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
                std::fs::File::open(cert)
                    .with_context(|| format!("tls.cert {}", cert.display()))?,
            ))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("tls.cert {}: bad PEM", cert.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "tls.cert {} holds no certificate",
                cert.display()
            );
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key).with_context(|| format!("tls.key {}", key.display()))?,
            ))
            .with_context(|| format!("tls.key {}: bad PEM", key.display()))?
            .with_context(|| format!("tls.key {} holds no private key", key.display()))?;
            (certs, key)
        }
        (None, None) if cfg.self_signed => self_signed()?,
        (None, None) => return Ok(None),
        _ => anyhow::bail!("tls.cert and tls.key go together"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    Ok(Some(Arc::new(config)))
}

fn self_signed() -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    tracing::warn!("serving a self-signed development certificate: browsers will warn");
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("self-signed key: {e}"))?;
    Ok((vec![cert.cert.der().clone()], key))
}
