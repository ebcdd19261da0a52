//! HTTPS for every endpoint: a certificate and key reloaded when they change on disk
//! (cert-manager and OpenShift's service CA rotate them in place), or one generated at start
//! when no files are given; and, when a client CA is given, client certificates verified
//! during the handshake against it, as it is now. The certificate chain being served can be
//! followed ([`ServedChain`]), for publishing it.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::SystemTime,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use tokio::sync::watch;

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
    #[error("{origin} holds no PEM CA certificate")]
    NoClientCa { origin: String },
    #[error("client CA from {origin}: {message}")]
    ClientCa { origin: String, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
}

/// What identifies a version of a file: rotations either rewrite it (new modification
/// time) or swap in a new file (new inode, as Kubernetes' secret volumes do).
type FileStamp = Option<(SystemTime, u64, u64)>;
type Stamp = (FileStamp, FileStamp);

/// The certificate chain being served, end-entity first, as it changes.
pub type ServedChain = watch::Receiver<Vec<CertificateDer<'static>>>;

/// Serves the certificate in the files, loading them again when either changes.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
    served: watch::Sender<Vec<CertificateDer<'static>>>,
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
        let (served, _) = watch::channel(certified.cert.clone());
        Ok(Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: Mutex::new((stamp, Arc::new(certified))),
            served,
        })
    }

    /// The chain served, from now on, changing when new files are loaded.
    pub fn served(&self) -> ServedChain {
        self.served.subscribe()
    }

    /// The certificate to serve now. A pair that fails to load (half-written during a
    /// rotation, say) leaves the previous one in service. Files are looked at on each
    /// handshake; [`ReloadingCert::follow`] looks without one.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamp = (stamp(&self.cert_path), stamp(&self.key_path));
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != stamp {
            match load(&self.cert_path, &self.key_path) {
                Ok(certified) => {
                    tracing::info!(cert = %self.cert_path.display(), "loaded a new TLS certificate");
                    self.served.send_replace(certified.cert.clone());
                    *current = (stamp, Arc::new(certified));
                }
                Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
            }
        }
        current.1.clone()
    }
}

impl ReloadingCert {
    /// Looks at the files every `interval`, so that a rotated certificate is loaded (and
    /// [`ReloadingCert::served`] changes) even while nobody connects.
    pub fn follow(self: Arc<Self>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.current();
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A certificate made at start for the names given, for when no files are given: the
/// connection is encrypted, but clients cannot verify whom they talk to.
#[derive(Debug)]
pub struct GeneratedCert {
    certified: Arc<CertifiedKey>,
    /// SHA-256 of the certificate, in hex, for people who want to pin it.
    pub fingerprint: String,
    served: watch::Sender<Vec<CertificateDer<'static>>>,
}

impl GeneratedCert {
    pub fn new(names: Vec<String>) -> Result<Self, TlsError> {
        let fail = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut params = rcgen::CertificateParams::new(names).map_err(fail)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubevirt-leader-exporter");
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, cert.der())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Generate(e.into()))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
        let (served, _) = watch::channel(certified.cert.clone());
        Ok(Self {
            certified: Arc::new(certified),
            fingerprint,
            served,
        })
    }

    /// The chain served: the one certificate, for as long as the process runs.
    pub fn served(&self) -> ServedChain {
        self.served.subscribe()
    }
}

impl ResolvesServerCert for GeneratedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified.clone())
    }
}

/// The CA certificates in PEM `text`, read from `source` (a file, a ConfigMap).
pub fn client_ca(text: &[u8], source: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(text) {
        let cert = cert.map_err(|e| TlsError::ClientCa {
            origin: source.into(),
            message: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            origin: source.into(),
            message: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientCa {
            origin: source.into(),
        });
    }
    Ok(Arc::new(roots))
}

/// Reads [`client_ca`] from a file.
pub fn client_ca_file(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let text = fs::read(path).map_err(|error| TlsError::Read {
        path: path.into(),
        error,
    })?;
    client_ca(&text, &path.display().to_string())
}

/// Verifies client certificates against a CA that may change while the exporter serves:
/// CAs rotate (OpenShift rotates the API server's client CA, publishing old and new together
/// for a while), and a certificate from the new CA must get in without a restart.
#[derive(Debug)]
pub struct ClientCaVerifier {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The file to follow, and the version of it in use.
    file: Option<(PathBuf, Mutex<FileStamp>)>,
}

impl ClientCaVerifier {
    pub fn new(roots: Arc<RootCertStore>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = webpki_verifier(roots, &provider)?;
        Ok(Self {
            provider,
            current: RwLock::new(verifier),
            file: None,
        })
    }

    /// Follows `path`: read now (a bad file is an error at start-up), and again when it
    /// changes.
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(path);
        let mut verifier = Self::new(client_ca_file(path)?)?;
        verifier.file = Some((path.into(), Mutex::new(stamp)));
        Ok(verifier)
    }

    /// Verifies with `roots` from now on.
    pub fn replace(&self, roots: Arc<RootCertStore>) -> Result<(), TlsError> {
        let verifier = webpki_verifier(roots, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = verifier;
        Ok(())
    }

    /// The verifier to use now, after reading the file again if it changed. A file that
    /// fails to load (half-written, say) leaves the previous CA in service.
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        if let Some((path, in_use)) = &self.file {
            let now = stamp(path);
            let mut in_use = in_use.lock().unwrap_or_else(PoisonError::into_inner);
            if *in_use != now {
                *in_use = now;
                match client_ca_file(path).and_then(|roots| self.replace(roots)) {
                    Ok(()) => tracing::info!(file = %path.display(), "loaded a new client CA"),
                    Err(error) => tracing::warn!(%error, "keeping the previous client CA"),
                }
            }
        }
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Clients may connect without a certificate: they may send a token instead.
fn webpki_verifier(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))
}

impl ClientCertVerifier for ClientCaVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: they would go stale when the CA changes, and with none every client sends
    /// the certificate it has (Go's TLS, Prometheus' included, skips a certificate whose
    /// issuer is not among the hints).
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls server configuration that asks `cert` on every handshake. With `client_ca`,
/// a client may present a certificate, which must then chain to it; clients without one
/// still connect (they may send a token instead).
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    client_ca: Option<Arc<ClientCaVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let verifies_clients = client_ca.is_some();
    let builder = match client_ca {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if verifies_clients {
        // A resumed session brings back the client certificate verified when it began,
        // without verifying it again: it would outlive the certificate's expiry and the
        // removal of its CA. Every handshake verifies instead.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// A client configuration that accepts any server certificate, as `curl -k` does: for the
/// plugin's requests through a port-forward, where the API server has already authenticated
/// the tunnel's far end as the exporter's pod and the exporter's certificate is usually
/// self-signed. Signatures are still checked. With `identity` (a certificate chain and its
/// key), it is presented when the server asks for one.
pub fn unverified_client_config(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyServer(provider.clone()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&key).expect("CA");
        (ca.pem(), Issuer::new(params, key))
    }

    fn client_cert(issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "someone");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        params.signed_by(&key, issuer).expect("cert").der().clone()
    }

    fn trusts(verifier: &ClientCaVerifier, cert: &CertificateDer<'_>) -> bool {
        verifier
            .verify_client_cert(cert, &[], UnixTime::now())
            .is_ok()
    }

    /// As a Secret or ConfigMap volume swaps files: a whole new file under the old name.
    fn swap_in(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).expect("write");
        fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn a_client_ca_file_is_followed_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("kle-client-ca-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ca.crt");
        let (first_pem, first) = new_ca("first");
        let (next_pem, next) = new_ca("next");
        let (first_cert, next_cert) = (client_cert(&first), client_cert(&next));
        swap_in(&path, &first_pem);
        let verifier = ClientCaVerifier::from_file(&path).expect("verifier");
        assert!(trusts(&verifier, &first_cert));
        assert!(!trusts(&verifier, &next_cert));

        swap_in(&path, &next_pem);
        assert!(trusts(&verifier, &next_cert));
        assert!(!trusts(&verifier, &first_cert));

        swap_in(&path, "-----BEGIN CERTIFICATE-----\nnot base64\n");
        assert!(trusts(&verifier, &next_cert), "the last good CA stays");
        fs::remove_file(&path).expect("remove");
        assert!(trusts(&verifier, &next_cert), "the last good CA stays");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A server certificate for `localhost` from its own CA, and that CA for clients.
    fn server_identity() -> (Arc<CertifiedKey>, RootCertStore) {
        let (ca_pem, ca) = new_ca("server CA");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key DER");
        let signer = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(der)
            .expect("signing key");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA"))
            .expect("root");
        (
            Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)),
            roots,
        )
    }

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    /// One connection: handshake, a byte each way (so that the client reads any session
    /// tickets), then close. Whether the server took the client.
    async fn connect(
        server: &Arc<ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, far) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
        let served = tokio::spawn(async move {
            let mut tls = acceptor.accept(far).await.map_err(|e| e.to_string())?;
            let mut byte = [0; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(client.clone());
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        if let Ok(mut tls) = connector.connect(name, near).await {
            let mut byte = [0; 1];
            let _ = tls.write_all(b"x").await;
            let _ = tls.read_exact(&mut byte).await;
        }
        served.await.expect("server task")
    }

    #[tokio::test]
    async fn a_client_certificate_is_verified_on_every_connection_not_resumed() {
        let (first_pem, first) = new_ca("first");
        let (next_pem, _) = new_ca("next");
        let verifier = Arc::new(
            ClientCaVerifier::new(client_ca(first_pem.as_bytes(), "test").expect("CA"))
                .expect("verifier"),
        );
        let (served, roots) = server_identity();
        let server =
            server_config(Arc::new(Fixed(served)), Some(verifier.clone())).expect("config");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "someone");
        let cert = params.signed_by(&key, &first).expect("cert");
        let identity = PrivateKeyDer::try_from(key.serialize_der()).expect("key DER");
        // rustls's client keeps sessions and resumes them by default, as Go's does when asked.
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], identity)
            .expect("client config"),
        );
        connect(&server, &client)
            .await
            .expect("the first CA's client");
        connect(&server, &client)
            .await
            .expect("again, while trusted");
        verifier
            .replace(client_ca(next_pem.as_bytes(), "test").expect("CA"))
            .expect("replace");
        let after = connect(&server, &client).await;
        assert!(
            after.is_err(),
            "a client of a CA no longer trusted got in: {after:?}"
        );
    }

    #[test]
    fn the_served_chain_follows_the_files() {
        let dir = std::env::temp_dir().join(format!("kle-served-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let pair = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            (cert, key)
        };
        let (first, first_key) = pair("first");
        swap_in(&key_path, &first_key.serialize_pem());
        swap_in(&cert_path, &first.pem());
        let cert = ReloadingCert::new(&cert_path, &key_path).expect("cert");
        let mut served = cert.served();
        assert_eq!(*served.borrow_and_update(), vec![first.der().clone()]);
        let (next, next_key) = pair("next");
        swap_in(&key_path, &next_key.serialize_pem());
        swap_in(&cert_path, &next.pem());
        assert!(
            !served.has_changed().expect("sender"),
            "loaded only when looked at"
        );
        cert.current();
        assert!(served.has_changed().expect("sender"));
        assert_eq!(*served.borrow_and_update(), vec![next.der().clone()]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_replaced_client_ca_verifies_from_then_on() {
        let (first_pem, first) = new_ca("first");
        let (next_pem, next) = new_ca("next");
        let verifier =
            ClientCaVerifier::new(client_ca(first_pem.as_bytes(), "test").expect("CA")).expect("v");
        assert!(trusts(&verifier, &client_cert(&first)));
        assert!(!trusts(&verifier, &client_cert(&next)));
        let both = format!("{first_pem}{next_pem}");
        verifier
            .replace(client_ca(both.as_bytes(), "test").expect("CA"))
            .expect("replace");
        assert!(trusts(&verifier, &client_cert(&first)));
        assert!(trusts(&verifier, &client_cert(&next)));
    }
}
