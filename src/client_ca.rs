//! The CA that client certificates are verified against, kept current: a file is read again
//! when it changes, and the API server's own ConfigMap is watched.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use tracing::{Instrument, info, info_span, warn};

use crate::{
    Error,
    config::ClientCa,
    tls::{self, ClientCaVerifier},
};

/// The ConfigMap in which the API server publishes the CA it verifies client certificates
/// with, and its key.
pub const CLUSTER_CLIENT_CA: (&str, &str, &str) = (
    "kube-system",
    "extension-apiserver-authentication",
    "client-ca-file",
);

fn cluster_source() -> String {
    let (namespace, name, key) = CLUSTER_CLIENT_CA;
    format!("ConfigMap {namespace}/{name}, key {key}")
}

/// The PEM text of the CA in `map`.
fn pem(map: &ConfigMap) -> &str {
    map.data
        .as_ref()
        .and_then(|data| data.get(CLUSTER_CLIENT_CA.2))
        .map_or("", String::as_str)
}

fn roots(pem: &str) -> Result<Arc<rustls::RootCertStore>, tls::TlsError> {
    tls::client_ca(pem.as_bytes(), &cluster_source())
}

/// Reads the client CA once: a CA that cannot be read is an error at start-up. For the
/// cluster's CA, also returns the task that follows the ConfigMap from then on.
pub async fn load(
    ca: &ClientCa,
    client: &Client,
) -> Result<(Arc<ClientCaVerifier>, Option<tokio::task::JoinHandle<()>>), Error> {
    match ca {
        ClientCa::File(path) => Ok((Arc::new(ClientCaVerifier::from_file(path)?), None)),
        ClientCa::Cluster => {
            let (namespace, name, _) = CLUSTER_CLIENT_CA;
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let map = api.get(name).await.map_err(|error| Error::ClientCa {
                origin: cluster_source(),
                error,
            })?;
            let in_use = pem(&map).to_owned();
            let verifier = Arc::new(ClientCaVerifier::new(roots(&in_use)?)?);
            let task = tokio::spawn(follow(api, verifier.clone(), in_use));
            Ok((verifier, Some(task)))
        }
    }
}

/// Watches the ConfigMap and verifies with what it holds now. A ConfigMap deleted or
/// emptied leaves the last good CA in service; watch errors are retried, never fatal.
async fn follow(api: Api<ConfigMap>, verifier: Arc<ClientCaVerifier>, mut in_use: String) {
    let (namespace, name, _) = CLUSTER_CLIENT_CA;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let span = info_span!("watch", resource = "configmaps", namespace, name);
    async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(map) | Event::InitApply(map)) => {
                    update(&verifier, pem(&map), &mut in_use);
                }
                Ok(Event::Delete(_)) => warn!("the ConfigMap is gone; keeping the client CA"),
                Ok(Event::Init | Event::InitDone) => {}
                Err(error) => warn!(error = %crate::error_chain(&error), "watch failed; retrying"),
            }
        }
    }
    .instrument(span)
    .await;
}

/// Replaces the CA when the ConfigMap's text changed.
fn update(verifier: &ClientCaVerifier, text: &str, in_use: &mut String) {
    if text == in_use {
        return;
    }
    match roots(text).and_then(|roots| verifier.replace(roots)) {
        Ok(()) => {
            info!("loaded a new client CA");
            text.clone_into(in_use);
        }
        Err(error) => warn!(%error, "keeping the previous client CA"),
    }
}
