//! `kubectl kubevirt-leader status`: the exporter's `/status.json`, fetched through a
//! port-forward to one of its pods (the API server checks the user's right to forward),
//! printed for a terminal.
//!
//! Who gets the user's credentials: the pod is one of the exporter's Deployment's own
//! (through its ReplicaSet, by UID), never merely one with the right labels. The
//! kubeconfig's token, which the API server accepts, goes only to an endpoint that has proven
//! it is the exporter ([`Proof`]): by showing the certificate the exporter published for that
//! pod ([`kubevirt_leader_exporter::publish`]), read through the API server, or one that verifies with
//! `--exporter-ca-file`. Anything else gets only what cannot be replayed against the API
//! server: the kubeconfig's client certificate (in the handshake) and a token the user gave
//! with `--token`.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::ValueEnum;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes, header::AUTHORIZATION};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{ConfigMap, Pod},
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use rustls::client::{WebPkiServerVerifier, danger::ServerCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use kubevirt_leader_exporter::{http::STATUS_JSON_PATH, objects::controller, publish};

#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// Namespace the exporter runs in.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_STATUS_EXPORTER_NAMESPACE",
        default_value = "kubevirt-leader-exporter"
    )]
    pub exporter_namespace: String,

    /// The exporter's Deployment: only a Ready pod of its own (through its ReplicaSet) is
    /// asked, never one that merely carries its labels.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_STATUS_EXPORTER_DEPLOYMENT",
        default_value = "kubevirt-leader-exporter"
    )]
    pub exporter_deployment: String,

    /// Bearer token to show the exporter, for an account bound to
    /// kubevirt-leader-exporter-metrics-reader (`$(kubectl create token <sa> -n <ns>)`); sent
    /// whether or not the exporter has proven itself. Default: the kubeconfig user's own (its
    /// token, token file or exec plugin's), sent only to an exporter that has proven itself
    /// with its certificate; a client certificate from the kubeconfig is presented too.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM CA bundle the exporter's certificate may also prove itself with, for the Service's
    /// name `<deployment>.<namespace>.svc` (cert-manager's CA, OpenShift's service CA).
    /// Default: only the certificate the exporter publishes proves it.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_EXPORTER_CA_FILE")]
    pub exporter_ca_file: Option<PathBuf>,

    /// `text` for people, `json` for the exporter's /status.json as it is.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Events to show per component and namespace, newest first.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_EVENTS", default_value_t = 5)]
    pub events: usize,
}

impl StatusArgs {
    /// The name the exporter's Service is reached by in the cluster, which a certificate
    /// from cert-manager or OpenShift's service CA carries.
    pub fn service_name(&self) -> String {
        format!(
            "{}.{}.svc",
            self.exporter_deployment, self.exporter_namespace
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// How long `status` waits for the exporter's answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "no running exporter pod in namespace {namespace}: there is no Deployment {deployment} \
         (--exporter-deployment, --exporter-namespace)"
    )]
    NoDeployment {
        namespace: String,
        deployment: String,
    },
    #[error(
        "no running exporter pod in namespace {namespace}: no pod of Deployment {deployment}'s \
         own (through its ReplicaSet) is Ready"
    )]
    NoExporter {
        namespace: String,
        deployment: String,
    },
    #[error("looking up the exporter's pods: {0}")]
    List(#[source] kube::Error),
    #[error("the Deployment's selector: {0}")]
    Selector(String),
    #[error("--exporter-ca-file {path}: {message}")]
    ExporterCa { path: PathBuf, message: String },
    #[error("port-forward to {pod}: {error}")]
    PortForward {
        pod: String,
        #[source]
        error: kube::Error,
    },
    #[error("talking to the exporter through the port-forward: {0}")]
    Http(String),
    #[error(
        "the exporter wants credentials (401): it takes bearer tokens, and client certificates \
         only when started with --client-ca-file or --client-ca-from-cluster; pass --token \
         with the token of an account bound to the ClusterRole \
         kubevirt-leader-exporter-metrics-reader, e.g. \
         --token \"$(kubectl create token <serviceaccount> -n <namespace>)\""
    )]
    Unauthorized,
    #[error(
        "the exporter wants credentials (401), and your kubeconfig's token was not sent: \
         {why}. The API server accepts that token, so it goes only to an endpoint that proves \
         it is the exporter, by the certificate the exporter publishes in a ConfigMap named \
         after its pod (it needs its pod's name, namespace and UID from deploy/core and the \
         Role of deploy/serving-cert) or by one that verifies with --exporter-ca-file. \
         Otherwise pass --token with the token of an account bound to the ClusterRole \
         kubevirt-leader-exporter-metrics-reader, e.g. \
         --token \"$(kubectl create token <serviceaccount> -n <namespace>)\""
    )]
    Withheld { why: String },
    #[error(
        "the exporter refused this user (403): bind it to the ClusterRole \
         kubevirt-leader-exporter-metrics-reader"
    )]
    Forbidden,
    #[error("the exporter answered {code}: {body}")]
    Answer { code: StatusCode, body: String },
    #[error("the kubeconfig's credentials: {0}")]
    Credentials(String),
    #[error("the exporter's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no answer from the exporter within {0:?}")]
    Timeout(std::time::Duration),
}

/// What the plugin may show the exporter: the user's own credentials.
#[derive(Default)]
pub struct Credentials {
    /// The kubeconfig user's bearer token. The API server accepts it, so it goes only to an
    /// exporter that has proven itself.
    pub kubeconfig_token: Option<String>,
    /// A bearer token the user gave (`--token`): sent to whatever answers, as asked.
    pub given_token: Option<String>,
    /// A client certificate chain and its key, presented when the exporter asks for one
    /// (it does with `--client-ca-file` or `--client-ca-from-cluster`). Its signature in the
    /// handshake cannot be replayed, so it goes to whatever answers.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Credentials {
    /// `token` if given, else the kubeconfig user's own: its token, token file or exec
    /// plugin's (as EKS, GKE, AKS and OIDC logins give them); and its client certificate.
    pub async fn of(config: &kube::Config, token: Option<String>) -> Result<Self, StatusError> {
        let kubeconfig_token = match token {
            Some(_) => None,
            None => kubeconfig_token(config).await?,
        };
        Ok(Self {
            kubeconfig_token,
            given_token: token,
            identity: kubeconfig_identity(&config.auth_info)?,
        })
    }

    /// The token to send to an endpoint that has proven it is the exporter (`proven`), or
    /// has not.
    fn token(&self, proven: bool) -> Option<&str> {
        match (&self.given_token, proven) {
            (Some(given), _) => Some(given),
            (None, true) => self.kubeconfig_token.as_deref(),
            (None, false) => None,
        }
    }
}

/// The bearer token kube would send the API server for this kubeconfig, taken from the
/// request its own authentication layer prepares (which runs exec plugins and refreshes
/// tokens as kubectl does).
async fn kubeconfig_token(config: &kube::Config) -> Result<Option<String>, StatusError> {
    use kube::client::ConfigExt;
    use tower::{Layer, ServiceExt, service_fn};
    let credentials = |e: &dyn std::fmt::Display| StatusError::Credentials(e.to_string());
    let Some(layer) = config.auth_layer().map_err(|e| credentials(&e))? else {
        return Ok(None);
    };
    // The layer wraps a service that answers HTTP responses: this one answers with the
    // header it was handed.
    let seen = service_fn(|request: Request<Empty<Bytes>>| async move {
        let header = request.headers().get(AUTHORIZATION).cloned();
        Ok::<_, tower::BoxError>(hyper::Response::new(header))
    });
    let header = layer
        .layer(seen)
        .oneshot(Request::new(Empty::new()))
        .await
        .map_err(|e| credentials(&e))?
        .into_body();
    Ok(header.and_then(|value| {
        let value = value.to_str().ok()?;
        value.strip_prefix("Bearer ").map(str::to_owned)
    }))
}

/// The kubeconfig user's client certificate and key, from its data or its files.
fn kubeconfig_identity(
    auth: &kube::config::AuthInfo,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, StatusError> {
    use secrecy::ExposeSecret;
    let cert = pem(
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_deref(),
    )?;
    let key_data = auth.client_key_data.as_ref().map(|k| k.expose_secret());
    let key = pem(key_data, auth.client_key.as_deref())?;
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let bad = |what: &str, e: rustls_pki_types::pem::Error| {
        StatusError::Credentials(format!("the kubeconfig's client {what}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad("key", e))?;
    Ok(Some((certs, key)))
}

/// PEM from a kubeconfig's base64 `data`, else from the file at `path`.
fn pem(data: Option<&str>, path: Option<&str>) -> Result<Option<Vec<u8>>, StatusError> {
    use base64::Engine;
    if let Some(data) = data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| StatusError::Credentials(format!("the kubeconfig's client data: {e}")))?;
        return Ok(Some(pem));
    }
    let Some(path) = path else { return Ok(None) };
    std::fs::read(path)
        .map(Some)
        .map_err(|e| StatusError::Credentials(format!("reading {path}: {e}")))
}

/// The exporter's pod that `status` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExporterPod {
    pub name: String,
    pub uid: String,
    /// The port of its `metrics` container port.
    pub port: u16,
}

/// The object's controller, if it has one.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Ready pod of Deployment `deployment` in `namespace`: one whose controller is a
/// ReplicaSet whose controller is that Deployment, each compared by UID. A pod that merely
/// carries the Deployment's labels, or names its ReplicaSet without being its own, is never
/// chosen.
pub async fn exporter_pod(
    client: &Client,
    namespace: &str,
    deployment: &str,
) -> Result<ExporterPod, StatusError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(owner) = deployments
        .get_opt(deployment)
        .await
        .map_err(StatusError::List)?
    else {
        return Err(StatusError::NoDeployment {
            namespace: namespace.into(),
            deployment: deployment.into(),
        });
    };
    let owner_uid = owner.metadata.uid.clone().unwrap_or_default();
    let selector = kube::core::Selector::try_from(owner.spec.selector.clone())
        .map_err(|e| StatusError::Selector(e.to_string()))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector.to_string()))
        .await
        .map_err(StatusError::List)?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    // Whether the ReplicaSet with this UID is the Deployment's.
    let mut owned: BTreeMap<String, bool> = BTreeMap::new();
    for pod in listed.items.iter().filter(|p| is_ready(p)) {
        let Some(set) = controller(&pod.metadata)
            .filter(|o| o.kind == "ReplicaSet" && o.api_version.starts_with("apps/"))
        else {
            continue;
        };
        let ours = match owned.get(&set.uid) {
            Some(ours) => *ours,
            None => {
                let found = replica_sets
                    .get_opt(&set.name)
                    .await
                    .map_err(StatusError::List)?;
                let ours = found.is_some_and(|rs| {
                    rs.metadata.uid.as_deref() == Some(set.uid.as_str())
                        && controller(&rs.metadata).is_some_and(|d| {
                            d.kind == "Deployment"
                                && d.api_version.starts_with("apps/")
                                && d.uid == owner_uid
                        })
                });
                owned.insert(set.uid.clone(), ours);
                ours
            }
        };
        if !ours {
            continue;
        }
        let port = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("metrics"))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(8080);
        return Ok(ExporterPod {
            name: pod.name_any(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            port,
        });
    }
    Err(StatusError::NoExporter {
        namespace: namespace.into(),
        deployment: deployment.into(),
    })
}

/// How many times, a second apart, the published certificate is read when the endpoint
/// showed another: the exporter publishes a rotated certificate moments after loading it,
/// and it loads it on a handshake (this one, perhaps).
const PUBLISHED_READS: usize = 3;

/// Where an exporter's pod publishes the certificate it serves.
struct PublishedFor {
    api: Api<ConfigMap>,
    namespace: String,
    pod: ExporterPod,
}

impl PublishedFor {
    /// The certificates the pod published, or why there are none to trust.
    async fn read(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let (ns, name) = (&self.namespace, &self.pod.name);
        let map = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| {
                format!(
                    "reading ConfigMap {ns}/{name}: {}",
                    kubevirt_leader_exporter::error_chain(&e)
                )
            })?
            .ok_or_else(|| {
                format!("the exporter published no certificate (no ConfigMap {ns}/{name})")
            })?;
        let owned = map
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Pod" && o.uid == self.pod.uid);
        if !owned {
            return Err(format!(
                "ConfigMap {ns}/{name} is not pod {name}'s (no owner reference to its UID {})",
                self.pod.uid
            ));
        }
        let pem = map
            .data
            .as_ref()
            .and_then(|d| d.get(publish::CERT_KEY))
            .ok_or_else(|| format!("ConfigMap {ns}/{name} has no {}", publish::CERT_KEY))?;
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ConfigMap {ns}/{name}: {e}"))
    }

    /// Whether `end_entity` is the certificate the pod published.
    async fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), String> {
        for read in 1..=PUBLISHED_READS {
            let published = self.read().await?;
            if published.first().is_some_and(|c| c == end_entity) {
                return Ok(());
            }
            if read < PUBLISHED_READS {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Err(format!(
            "the endpoint showed another certificate than the one pod {} published in \
             ConfigMap {}/{}",
            self.pod.name, self.namespace, self.pod.name
        ))
    }
}

/// How an endpoint proves it is the exporter: by the certificate it shows in the handshake
/// (whose key it must hold: the handshake's signature is checked). Any one way suffices.
#[derive(Default)]
pub struct Proof {
    /// Certificates known to be the exporter's.
    pinned: Vec<CertificateDer<'static>>,
    /// The certificate the exporter published for its pod, read when needed.
    published: Option<PublishedFor>,
    /// A CA the user trusts, and the name the certificate must carry.
    ca: Option<(Arc<WebPkiServerVerifier>, ServerName<'static>)>,
}

impl Proof {
    /// The endpoint must show one of `certs`.
    pub fn pinned(certs: Vec<CertificateDer<'static>>) -> Self {
        Self {
            pinned: certs,
            ..Self::default()
        }
    }

    /// The endpoint must show the certificate `pod` published: the first of ConfigMap
    /// `<pod>`'s `tls.crt` in `namespace`, owned by the pod (by UID), read through the API
    /// server.
    pub fn published(client: &Client, namespace: &str, pod: &ExporterPod) -> Self {
        Self {
            published: Some(PublishedFor {
                api: Api::namespaced(client.clone(), namespace),
                namespace: namespace.into(),
                pod: pod.clone(),
            }),
            ..Self::default()
        }
    }

    /// A certificate that verifies with the CAs in the PEM file `path` for `name` proves it
    /// too.
    pub fn or_ca_file(mut self, path: &Path, name: &str) -> Result<Self, StatusError> {
        let fail = |message: String| StatusError::ExporterCa {
            path: path.into(),
            message,
        };
        let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&text) {
            roots
                .add(cert.map_err(|e| fail(e.to_string()))?)
                .map_err(|e| fail(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(fail("holds no PEM certificate".into()));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(name.to_owned()).map_err(|e| fail(e.to_string()))?;
        self.ca = Some((verifier, name));
        Ok(self)
    }

    /// `Ok` when `chain` (what the endpoint showed, end-entity first) proves it is the
    /// exporter; else why not.
    pub async fn check(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err("the endpoint showed no certificate".into());
        };
        let mut why = Vec::new();
        if let Some((verifier, name)) = &self.ca {
            match verifier.verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
            {
                Ok(_) => return Ok(()),
                Err(e) => why.push(format!(
                    "its certificate does not verify with --exporter-ca-file for {}: {e}",
                    name.to_str()
                )),
            }
        }
        if self.pinned.contains(end_entity) {
            return Ok(());
        }
        if !self.pinned.is_empty() {
            why.push("its certificate is none of those pinned".into());
        }
        if let Some(published) = &self.published {
            match published.check(end_entity).await {
                Ok(()) => return Ok(()),
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            why.push("nothing to check its certificate against".into());
        }
        Err(why.join("; "))
    }
}

/// The exporter's `/status.json`, and the pod it came from.
pub async fn fetch(
    client: &Client,
    args: &StatusArgs,
    credentials: &Credentials,
) -> Result<(String, Value), StatusError> {
    let namespace = &args.exporter_namespace;
    let pod = exporter_pod(client, namespace, &args.exporter_deployment).await?;
    let mut proof = Proof::published(client, namespace, &pod);
    if let Some(path) = &args.exporter_ca_file {
        proof = proof.or_ca_file(path, &args.service_name())?;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let forward = || {
        let (api, name, port) = (api.clone(), pod.name.clone(), pod.port);
        async move {
            let mut forwarder = api.portforward(&name, &[port]).await.map_err(|error| {
                StatusError::PortForward {
                    pod: name.clone(),
                    error,
                }
            })?;
            forwarder
                .take_stream(port)
                .ok_or_else(|| StatusError::Http("the port-forward gave no stream".into()))
        }
    };
    let answer = read_status(forward, credentials, &proof).await?;
    Ok((pod.name, answer))
}

/// GET /status.json over a connection from `connect`: HTTPS, as the shipped installs serve,
/// showing `credentials` as far as the certificate the endpoint shows proves it is the
/// exporter (`proof`, checked after the handshake and before anything is sent); plain HTTP,
/// without any, when the exporter does not speak TLS (as one with `--auth=none` and no
/// certificate).
pub async fn read_status<C, F, S>(
    connect: C,
    credentials: &Credentials,
    proof: &Proof,
) -> Result<Value, StatusError>
where
    C: Fn() -> F,
    F: Future<Output = Result<S, StatusError>>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: String| StatusError::Http(e);
    let identity = credentials
        .identity
        .as_ref()
        .map(|(certs, key)| (certs.clone(), key.clone_key()));
    // Any certificate completes the handshake (whose signature is still checked); the proof
    // decides afterwards what is sent.
    let tls = kubevirt_leader_exporter::tls::unverified_client_config(identity)
        .map_err(|e| http(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = ServerName::try_from("localhost").map_err(|e| http(e.to_string()))?;
    match connector.connect(name, connect().await?).await {
        Ok(tls) => {
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let proven = proof.check(&chain).await;
            let token = credentials.token(proven.is_ok());
            let withheld = match proven {
                Err(why) if credentials.kubeconfig_token.is_some() && token.is_none() => Some(why),
                _ => None,
            };
            match get(tls, token).await {
                Err(StatusError::Unauthorized) if withheld.is_some() => {
                    Err(StatusError::Withheld {
                        why: withheld.unwrap_or_default(),
                    })
                }
                answer => answer,
            }
        }
        Err(error) if tls_alert(&error).is_some() => Err(refused(&error)),
        Err(_) => get(connect().await?, None).await,
    }
}

/// The alert a TLS server sent, if `error` or one of its causes is one: the server spoke TLS
/// and said no (to a client certificate, say).
fn tls_alert(error: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(rustls::Error::AlertReceived(alert)) = cause.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        // An io::Error's source() skips the error it wraps: go inside it instead.
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

fn refused(error: &(dyn std::error::Error + 'static)) -> StatusError {
    StatusError::Http(format!(
        "the exporter refused the TLS handshake ({}): a client certificate it does not trust?",
        tls_alert(error).map_or_else(|| error.to_string(), |a| format!("{a:?}"))
    ))
}

/// GET /status.json over `stream`.
async fn get<S>(stream: S, token: Option<&str>) -> Result<Value, StatusError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| StatusError::Http(kubevirt_leader_exporter::error_chain(&e));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get(STATUS_JSON_PATH).header(hyper::header::HOST, "localhost");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| StatusError::Http(e.to_string()))?;
    let response = tokio::time::timeout(STATUS_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StatusError::Timeout(STATUS_TIMEOUT))?;
    let response = match response {
        Ok(response) => response,
        // The request only knows it was cancelled; the connection knows why. With TLS 1.3 a
        // refused client certificate shows here, after the handshake seemed to succeed.
        Err(error) if tls_alert(&error).is_some() => return Err(refused(&error)),
        Err(error) => {
            return Err(match connection.await {
                Ok(Err(cause)) if tls_alert(&cause).is_some() => refused(&cause),
                Ok(Err(cause)) => http(cause),
                _ => http(error),
            });
        }
    };
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    match code {
        StatusCode::OK => Ok(serde_json::from_slice(&body)?),
        StatusCode::UNAUTHORIZED => Err(StatusError::Unauthorized),
        StatusCode::FORBIDDEN => Err(StatusError::Forbidden),
        code => Err(StatusError::Answer {
            code,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kube configuration whose user is `user` (YAML, indented for its place).
    async fn config_with_user(user: &str) -> kube::Config {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             users:\n- name: u\n  user:\n{user}"
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config")
    }

    #[tokio::test]
    async fn the_users_own_token_goes_along_even_from_an_exec_plugin() {
        let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-the-plugin"}}"#;
        let exec = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
             interactiveMode: Never\n      command: echo\n      args: ['{credential}']\n"
        );
        let config = config_with_user(&exec).await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        assert_eq!(
            credentials.kubeconfig_token.as_deref(),
            Some("from-the-plugin")
        );
        assert!(credentials.identity.is_none());

        let config = config_with_user("    token: own-token\n").await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        assert_eq!(credentials.kubeconfig_token.as_deref(), Some("own-token"));
        // A token given wins, and the kubeconfig's is not even fetched.
        let given = Credentials::of(&config, Some("given".into()))
            .await
            .expect("credentials");
        assert_eq!(given.given_token.as_deref(), Some("given"));
        assert_eq!(given.kubeconfig_token, None);
    }

    #[tokio::test]
    async fn a_client_certificate_in_the_kubeconfig_is_presented() {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["someone".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let b64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert.pem()),
            b64(key.serialize_pem())
        );
        let config = config_with_user(&user).await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        let (certs, _) = credentials.identity.expect("identity");
        assert_eq!(certs, vec![cert.der().clone()]);
        assert!(credentials.kubeconfig_token.is_none() && credentials.given_token.is_none());
    }
}
