//! kubevirt-leader-exporter: tells Prometheus whether KubeVirt's leader-elected components
//! have a live leader.
//!
//! The exporter watches the components' pods and Leases ([`watch`]), keeps a reduced copy
//! per component and scope ([`targets`], holding [`pods`] and [`leases`]), judges leadership
//! at scrape time ([`judge`]) and serves the result ([`metrics`], [`http`]); [`changelog`]
//! logs leader changes; [`publish`] publishes the certificate it serves for the kubectl
//! plugin to check.

pub mod auth;
pub mod changelog;
pub mod client_ca;
pub mod components;
pub mod config;
pub mod discovery;
pub mod heap;
pub mod history;
pub mod http;
pub mod judge;
pub mod leases;
pub mod metrics;
pub mod objects;
pub mod page;
pub mod pods;
pub mod publish;
pub mod status;
pub mod targets;
pub mod tls;
pub mod watch;

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc};

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use rustls::server::ResolvesServerCert;
use tokio::task::JoinHandle;

use crate::{
    auth::Gate,
    config::{Auth, Settings},
    http::AppState,
    metrics::Metrics,
    targets::Targets,
};

/// What `RUST_LOG` defaults to. kube's per-request failure lines and its watcher's warnings
/// on every forbidden retry are off: a failing watch says so itself, once, with the whole
/// cause (`RUST_LOG=info,kube_client=debug,kube_runtime=debug` shows them).
pub const DEFAULT_LOG_FILTER: &str =
    "info,kube_client::client::builder=off,kube_runtime::watcher=error";

/// An error and its causes, each said once: errors from kube, hyper and std often repeat
/// their cause in their own message, and often hide the useful part ("connection refused")
/// in a cause.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("reading the client CA from {origin}: {error}")]
    ClientCa { origin: String, error: kube::Error },
    #[error("kubeconfig {path}: {error}")]
    Kubeconfig {
        path: String,
        error: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration found (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A kube client from `path`, or from kube's own inference (in-cluster, then KUBECONFIG,
/// then ~/.kube/config) without one.
pub async fn client(path: Option<&Path>) -> Result<Client, Error> {
    client_for(kube_config(path).await?)
}

/// The kube configuration [`client`] builds its client from.
pub async fn kube_config(path: Option<&Path>) -> Result<kube::Config, Error> {
    let Some(path) = path else {
        return Ok(kube::Config::infer().await?);
    };
    let name = path.display().to_string();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|error| Error::Kubeconfig {
        path: name.clone(),
        error,
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Kubeconfig { path: name, error })
}

/// A kube client from an in-memory kubeconfig, by the same path as a file.
pub async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Client, Error> {
    from_kubeconfig(kubeconfig, "(in memory)".into()).await
}

async fn from_kubeconfig(kubeconfig: Kubeconfig, path: String) -> Result<Client, Error> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Kubeconfig { path, error })?;
    client_for(config)
}

/// Says once which API server the exporter talks to: watch errors later need not repeat it.
pub fn client_for(config: kube::Config) -> Result<Client, Error> {
    tracing::info!(server = %config.cluster_url, "Kubernetes API server");
    Ok(Client::try_from(config)?)
}

/// What the exporter serves HTTPS with.
struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    /// The chain served, as it changes.
    served: tls::ServedChain,
    /// The files, when the certificate comes from files.
    files: Option<Arc<tls::ReloadingCert>>,
}

/// The TLS configuration to serve with, if any: the given files, else a generated
/// certificate when authentication is on (tokens never travel in plain HTTP).
fn server_tls(
    settings: &Settings,
    client_ca: Option<Arc<tls::ClientCaVerifier>>,
) -> Result<Option<ServerTls>, Error> {
    let (cert, served, files): (Arc<dyn ResolvesServerCert>, _, _) = match &settings.tls {
        Some((cert, key)) => {
            let files = Arc::new(tls::ReloadingCert::new(cert, key)?);
            (files.clone(), files.served(), Some(files))
        }
        None if settings.https() => {
            let generated = tls::GeneratedCert::new(self_signed_names())?;
            tracing::warn!(
                sha256 = %generated.fingerprint,
                "serving a self-signed certificate made at start: encrypted, but clients \
                 cannot verify it (give --tls-cert-file and --tls-key-file to change that)"
            );
            let served = generated.served();
            (Arc::new(generated), served, None)
        }
        None => return Ok(None),
    };
    Ok(Some(ServerTls {
        config: tls::server_config(cert, client_ca)?,
        served,
        files,
    }))
}

/// The names a generated certificate is for: the pod's hostname and localhost.
fn self_signed_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(host) = std::env::var("HOSTNAME")
        && !host.is_empty()
        && host != "localhost"
    {
        names.push(host);
    }
    names
}

/// A running exporter: watch tasks, the leader-change log and the HTTP server.
pub struct Exporter {
    pub addr: SocketAddr,
    pub targets: Arc<Targets>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    watches: Vec<watch::Watches>,
    launcher: watch::Launcher,
}

impl Exporter {
    /// Starts watching with `client` and serving on `settings.listen`, until `shutdown`
    /// completes.
    pub async fn start(
        settings: &Settings,
        client: Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, Error> {
        let (client_ca, follow_ca) = match &settings.auth {
            Auth::Kubernetes {
                client_ca: Some(ca),
                ..
            } => {
                let (verifier, task) = client_ca::load(ca, &client).await?;
                (Some(verifier), task)
            }
            _ => (None, None),
        };
        let tls = server_tls(settings, client_ca)?;
        let listen = settings.listen;
        let listener = http::listen(listen).map_err(|error| Error::Listen {
            addr: listen,
            error,
        })?;
        let addr = listener.local_addr().map_err(|error| Error::Listen {
            addr: listen,
            error,
        })?;
        let targets = Arc::new(Targets::new(settings));
        let metrics = Arc::new(Metrics::new(targets.clone())?);
        let gate = match &settings.auth {
            Auth::None => None,
            Auth::Kubernetes {
                audiences,
                reviews_per_second,
                cache,
                ..
            } => Some(Arc::new(Gate::new(
                client.clone(),
                audiences.clone(),
                *reviews_per_second,
                cache.clone(),
                metrics.auth_metrics(),
            ))),
        };
        let watches = watch::spawn(&client, &targets, &metrics, settings.pod_check_interval);
        let launcher = watch::Launcher::new(
            targets.clone(),
            client.clone(),
            metrics.clone(),
            settings.pod_check_interval,
        );
        let mut tasks = vec![tokio::spawn(changelog::run(targets.clone()))];
        if settings.discover {
            tasks.push(discovery::task::spawn(
                client.clone(),
                targets.clone(),
                launcher.clone(),
                settings.namespaces.clone(),
            ));
        }
        tasks.extend(follow_ca);
        match (&settings.publish, &tls) {
            (Some(pod), Some(tls)) => {
                tasks.push(publish::spawn(
                    client.clone(),
                    pod.clone(),
                    tls.served.clone(),
                ));
                if let Some(files) = &tls.files {
                    tasks.push(files.clone().follow(publish::FILE_CHECK));
                }
            }
            (Some(_), None) => {
                tracing::info!("not publishing a serving certificate: serving plain HTTP");
            }
            (None, _) => {}
        }
        let auth = if gate.is_some() { "kubernetes" } else { "none" };
        let app = http::router(AppState {
            targets: targets.clone(),
            metrics,
            gate,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = tls.map(|tls| tls.config);
        let server = tokio::spawn(http::serve(listener, app, tls, settings.limits, shutdown));
        tracing::info!(%addr, scheme, auth, "serving /metrics");
        Ok(Self {
            addr,
            targets,
            server,
            tasks,
            watches,
            launcher,
        })
    }

    /// Adds and watches components found while it runs.
    pub fn launcher(&self) -> watch::Launcher {
        self.launcher.clone()
    }

    /// Waits for the HTTP server to finish after shutdown; the watches stop when the
    /// exporter is dropped.
    pub async fn wait(mut self) -> Result<(), Error> {
        (&mut self.server)
            .await
            .map_err(|join| Error::Serve(std::io::Error::other(join)))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
        for task in &self.tasks {
            task.abort();
        }
        self.watches.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /etc/x: {0}")]
    struct Reading(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid configuration")]
    struct Invalid(#[source] Reading);

    #[test]
    fn every_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            error_chain(&Invalid(Reading(io()))),
            "invalid configuration: reading /etc/x: no such file"
        );
    }
}
