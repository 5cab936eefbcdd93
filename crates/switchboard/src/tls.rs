//! The certificate shared by HTTPS/WSS and TURN over TLS, swappable while
//! the process runs (PROTOCOL.md §8, reload).
//!
//! Both TLS listeners are handed the same [`ServerConfig`], whose
//! certificate resolver reads the current [`CertifiedKey`] at each
//! handshake. A reload swaps that key: handshakes from then on present the
//! new certificate, while established connections, whose handshake is
//! long done, are not touched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why a certificate could not be (re)loaded. A reload that fails keeps
/// the certificate in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// `tls.cert` or `tls.key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("tls.cert {0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("tls.key {0}: no PEM private key in it")]
    NoKey(PathBuf),
    /// The key is not one rustls can sign with, or does not match the
    /// certificate.
    #[error("tls.cert {cert} and tls.key {key} do not make a usable pair: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// Only one of `tls.cert` and `tls.key` is set.
    #[error("tls.cert and tls.key go together")]
    HalfPair,
    /// A reload without `tls.cert`/`tls.key` where the node serves them.
    #[error(
        "tls.cert and tls.key cannot be removed by a reload (the TLS listeners stay up): restart to turn TLS off"
    )]
    Removed,
    /// The development certificate could not be made.
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(String),
    /// rustls refused its own defaults (never with the ring provider).
    #[error("TLS protocol versions: {0}")]
    Protocol(rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `tls.cert` and `tls.key`, read again on each reload.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at start; a reload keeps it.
    SelfSigned,
}

/// The resolver rustls asks at every handshake.
#[derive(Debug)]
struct SwapResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SwapResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole key (the write is one swap).
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A certificate pair read and checked by [`CertStore::stage`], not in use
/// yet.
#[derive(Debug)]
pub struct StagedCert {
    source: Source,
    pair: Option<CertifiedKey>,
}

/// The certificate of every TLS listener, and the means to replace it.
/// Cloning is cheap and clones share the certificate.
///
/// ```no_run
/// # fn f() -> Result<(), switchboard::tls::TlsError> {
/// let store = switchboard::tls::CertStore::load("cert.pem".as_ref(), "key.pem".as_ref())?;
/// let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config());
/// // ... on SIGHUP: new handshakes get the files' new pair.
/// store.reload()?;
/// # let _ = acceptor; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CertStore {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    source: Mutex<Source>,
    resolver: Arc<SwapResolver>,
    config: Arc<ServerConfig>,
    provider: Arc<CryptoProvider>,
}

impl CertStore {
    /// Reads a PEM certificate chain and private key, and checks that they
    /// match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = provider();
        let pair = read_pair(cert, key, &provider)?;
        Self::with(
            Source::Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            pair,
            provider,
        )
    }

    /// A development certificate for localhost, made now.
    pub fn self_signed() -> Result<Self, TlsError> {
        let provider = provider();
        let pair = self_signed(&provider)?;
        Self::with(Source::SelfSigned, pair, provider)
    }

    /// From `[tls]`: the files, or a self-signed certificate; `None` when
    /// TLS is off.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Self>, TlsError> {
        match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
            (None, None) if cfg.self_signed => Self::self_signed().map(Some),
            (None, None) => Ok(None),
            _ => Err(TlsError::HalfPair),
        }
    }

    fn with(
        source: Source,
        pair: CertifiedKey,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let resolver = Arc::new(SwapResolver {
            current: RwLock::new(Arc::new(pair)),
        });
        let config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Protocol)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(Self {
            inner: Arc::new(StoreInner {
                source: Mutex::new(source),
                resolver,
                config: Arc::new(config),
                provider,
            }),
        })
    }

    /// The rustls configuration every TLS listener uses (HTTPS/WSS and
    /// TURN over TLS alike): always the same one, whose certificate follows
    /// [`Self::reload`].
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.config.clone()
    }

    /// Reads the certificate files again and, when they make a matching
    /// pair, uses them for every handshake from now on. Returns whether the
    /// certificate changed. On error the certificate in use stays. A
    /// self-signed certificate is kept as it is.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let staged = self.stage_source(self.source())?;
        Ok(self.install(staged))
    }

    /// Like [`Self::reload`], from other files (`tls.cert`/`tls.key` were
    /// changed in the config); later reloads read these.
    pub fn reload_from(&self, cert: &Path, key: &Path) -> Result<bool, TlsError> {
        let staged = self.stage_source(Source::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })?;
        Ok(self.install(staged))
    }

    /// Reads and checks the pair `[tls]` names, without using it yet
    /// ([`Self::install`] does), so that a reload can check everything
    /// before it changes anything. The files of a store made from files
    /// cannot be taken away by a reload (the listeners stay up): that is
    /// refused. A self-signed store stays self-signed unless files are named.
    pub fn stage(&self, cfg: &TlsConfig) -> Result<StagedCert, TlsError> {
        let source = match (&cfg.cert, &cfg.key, self.source()) {
            (Some(cert), Some(key), _) => Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (None, None, Source::SelfSigned) => Source::SelfSigned,
            (None, None, Source::Files { .. }) => return Err(TlsError::Removed),
            _ => return Err(TlsError::HalfPair),
        };
        self.stage_source(source)
    }

    fn stage_source(&self, source: Source) -> Result<StagedCert, TlsError> {
        let pair = match &source {
            Source::Files { cert, key } => Some(read_pair(cert, key, &self.inner.provider)?),
            Source::SelfSigned => None,
        };
        Ok(StagedCert { source, pair })
    }

    /// Serves `staged` to every handshake from now on; returns whether the
    /// certificate changed.
    pub fn install(&self, staged: StagedCert) -> bool {
        let StagedCert { source, pair } = staged;
        *self.inner.source.lock().unwrap_or_else(|p| p.into_inner()) = source;
        let Some(pair) = pair else {
            return false;
        };
        let mut current = self
            .inner
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let changed = current.cert != pair.cert;
        *current = Arc::new(pair);
        changed
    }

    fn source(&self) -> Source {
        self.inner
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The end-entity certificate served now (DER).
    pub fn current_cert(&self) -> Option<CertificateDer<'static>> {
        self.inner
            .resolver
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .first()
            .cloned()
    }
}

/// Builds the rustls config from `tls.cert`/`tls.key`, or a self-signed
/// development certificate. `None` when TLS is off. The certificate of
/// this config cannot be reloaded: use [`CertStore`] for that.
pub fn server_config(cfg: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    Ok(CertStore::from_config(cfg)?.map(|s| s.server_config()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("tls.cert", cert)?;
    let key_pem = read("tls.key", key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            what: "tls.cert",
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            what: "tls.key",
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.to_path_buf()))?;
    CertifiedKey::from_der(certs, private, provider).map_err(|source| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

fn self_signed(provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    tracing::warn!("serving a self-signed development certificate: browsers will warn");
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    CertifiedKey::from_der(vec![cert.cert.der().clone()], key, provider)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.cert.pem()).expect("write");
        std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write");
        (c, k, cert.cert.der().to_vec())
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let mut r = [0u8; 8];
        rand::fill(&mut r);
        let dir = std::env::temp_dir().join(format!("sb-tls-{tag}-{}", u64::from_le_bytes(r)));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn reload_swaps_the_pair_and_refuses_a_mismatch() {
        let dir = temp_dir("swap");
        let (c1, k1, der1) = write_pair(&dir, "one.test");
        let (c2, k2, der2) = write_pair(&dir, "two.test");
        let store = CertStore::load(&c1, &k1).expect("loads");
        let config = store.server_config();
        assert_eq!(store.current_cert().expect("cert").as_ref(), &der1[..]);
        assert!(!store.reload().expect("same files"), "nothing changed");

        // A key that is not the certificate's: refused, the old pair stays.
        assert!(matches!(
            store.reload_from(&c1, &k2),
            Err(TlsError::Pair { .. })
        ));
        assert_eq!(store.current_cert().expect("cert").as_ref(), &der1[..]);

        // The files are replaced in place, as certbot does.
        std::fs::copy(&c2, &c1).expect("copy");
        std::fs::copy(&k2, &k1).expect("copy");
        assert!(store.reload().expect("a good pair"));
        assert_eq!(store.current_cert().expect("cert").as_ref(), &der2[..]);
        assert!(Arc::ptr_eq(&config, &store.server_config()));

        std::fs::write(&c1, "not pem").expect("write");
        assert!(matches!(store.reload(), Err(TlsError::NoCertificate(_))));
        std::fs::remove_file(&k1).expect("rm");
        assert!(matches!(store.reload(), Err(TlsError::Read { .. })));
        assert_eq!(store.current_cert().expect("cert").as_ref(), &der2[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn half_a_pair_is_refused() {
        let cfg = TlsConfig {
            cert: Some("a.pem".into()),
            key: None,
            self_signed: false,
        };
        assert!(matches!(
            CertStore::from_config(&cfg),
            Err(TlsError::HalfPair)
        ));
        assert!(
            CertStore::from_config(&TlsConfig::default())
                .expect("off")
                .is_none()
        );
    }
}
