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
mod memcpy;
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
use tracing::Level;
use tracing_subscriber::filter::Targets as LogTargets;

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

/// The log filter: `RUST_LOG` when it is set and valid, else `default`; and, when `RUST_LOG`
/// was not valid, what to warn of once logging has started.
pub fn log_filter(default: &str) -> (LogTargets, Option<String>) {
    log_filter_of(std::env::var("RUST_LOG").ok().as_deref(), default)
}

/// [`log_filter`] of the value `RUST_LOG` has. A filter is a default level and levels per
/// module (`warn,kube_client=debug`), which is what people set: tracing's `Targets`, not its
/// `EnvFilter`, whose span and field filters would bring a regular-expression engine into the
/// binary.
pub fn log_filter_of(value: Option<&str>, default: &str) -> (LogTargets, Option<String>) {
    let fallback = || {
        default
            .parse()
            .unwrap_or_else(|_| LogTargets::new().with_default(Level::INFO))
    };
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (fallback(), None),
        Some(value) => match value.parse::<LogTargets>() {
            Ok(targets) => (targets, None),
            Err(error) => (
                fallback(),
                Some(format!(
                    "RUST_LOG={value:?} is not a log filter ({error}): write it as a level and \
                     levels per module, as `warn,kube_client=debug`; logging with {default:?}"
                )),
            ),
        },
    }
}

/// Logs to stderr as `format` says, filtered by `RUST_LOG` or else `default_filter`, colour
/// only for a person at a terminal, never in a log file or pipeline; an invalid `RUST_LOG`
/// is warned about once logging has started.
pub fn init_logging(format: config::LogFormat, default_filter: &str) {
    use std::io::IsTerminal;

    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let (filter, warning) = log_filter(default_filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        config::LogFormat::Text => registry.with(fmt).init(),
        config::LogFormat::Json => registry.with(fmt.json()).init(),
    }
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
}

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
    fn rust_log_is_read_as_people_write_it_and_a_bad_one_is_said() {
        use tracing::{Level, level_filters::LevelFilter};

        use super::{DEFAULT_LOG_FILTER, log_filter_of};
        let level = |filter: &tracing_subscriber::filter::Targets, target: &str| {
            [
                Level::TRACE,
                Level::DEBUG,
                Level::INFO,
                Level::WARN,
                Level::ERROR,
            ]
            .into_iter()
            .find(|l| filter.would_enable(target, l))
            .map_or(LevelFilter::OFF, LevelFilter::from_level)
        };
        let (default, warning) = log_filter_of(None, DEFAULT_LOG_FILTER);
        assert_eq!(warning, None);
        assert_eq!(
            level(&default, "kubevirt_leader_exporter::watch"),
            LevelFilter::INFO
        );
        assert_eq!(
            level(&default, "kube_client::client::builder"),
            LevelFilter::OFF
        );
        assert_eq!(level(&default, "kube_runtime::watcher"), LevelFilter::ERROR);

        let (asked, warning) = log_filter_of(Some("warn,kube_client=debug"), DEFAULT_LOG_FILTER);
        assert_eq!(warning, None);
        assert_eq!(level(&asked, "kubevirt_leader_exporter"), LevelFilter::WARN);
        assert_eq!(level(&asked, "kube_client::client"), LevelFilter::DEBUG);

        let (bad, warning) = log_filter_of(Some("info,kube=loud"), DEFAULT_LOG_FILTER);
        assert!(
            warning
                .as_deref()
                .is_some_and(|w| w.contains("RUST_LOG=\"info,kube=loud\"")),
            "{warning:?}"
        );
        assert_eq!(level(&bad, "kube_runtime::watcher"), LevelFilter::ERROR);
    }

    #[test]
    fn every_cause_is_said_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            error_chain(&Invalid(Reading(io()))),
            "invalid configuration: reading /etc/x: no such file"
        );
    }
}
