//! HTTPS for /metrics, with the certificate and key reloaded when they change on disk:
//! cert-manager and OpenShift's service CA rotate them in place.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and key do not belong together: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// What identifies a version of a file: rotations either rewrite it (new modification
/// time) or swap in a new file (new inode, as Kubernetes' secret volumes do).
type FileStamp = Option<(SystemTime, u64, u64)>;
type Stamp = (FileStamp, FileStamp);

/// Serves the certificate in the files, loading them again when either changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|error| TlsError::Read {
            path: path.into(),
            error,
        })
    };
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.into(),
        });
    }
    let key_error = |message: String| TlsError::Key {
        path: key_path.into(),
        message,
    };
    let key =
        PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| key_error(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the files once; a bad pair is an error at start-up.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let stamp = (stamp(cert_path), stamp(key_path));
        let certified = load(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: Mutex::new((stamp, Arc::new(certified))),
        })
    }

    /// The certificate to serve now. A pair that fails to load (half-written during a
    /// rotation, say) leaves the previous one in service.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamp = (stamp(&self.cert_path), stamp(&self.key_path));
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != stamp {
            match load(&self.cert_path, &self.key_path) {
                Ok(certified) => {
                    tracing::info!(cert = %self.cert_path.display(), "loaded a new TLS certificate");
                    *current = (stamp, Arc::new(certified));
                }
                Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
            }
        }
        current.1.clone()
    }

    /// A rustls server configuration that asks this resolver on every handshake.
    pub fn server_config(self: Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
