//! The certificate the exporter serves, published where only it (and whoever administers its
//! namespace) can write: a ConfigMap in its own namespace, named after its pod and owned by
//! it. `kubectl kubevirt-leader status` reads it through the API server and sends the user's
//! token only to an endpoint that shows that certificate, so that a pod merely labelled like
//! the exporter never receives it.
//!
//! The pod learns its name, namespace and UID from the downward API (environment variables
//! set in `deploy/core`); without them, as outside a cluster, nothing is published.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta,
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, api::PostParams};
use rustls_pki_types::CertificateDer;
use tokio::task::JoinHandle;

use crate::tls::ServedChain;

/// The pod's name, from the downward API (`metadata.name`).
pub const POD_NAME_ENV: &str = "KUBEVIRT_LEADER_EXPORTER_POD_NAME";
/// The pod's namespace (`metadata.namespace`).
pub const POD_NAMESPACE_ENV: &str = "KUBEVIRT_LEADER_EXPORTER_POD_NAMESPACE";
/// The pod's UID (`metadata.uid`), for the ConfigMap's owner reference.
pub const POD_UID_ENV: &str = "KUBEVIRT_LEADER_EXPORTER_POD_UID";

/// The API access publishing needs in the pod's own namespace, as (API group, resource,
/// verbs): the Role in `deploy/serving-cert` must grant exactly this.
pub const API_ACCESS: [(&str, &str, [&str; 3]); 1] =
    [("", "configmaps", ["get", "create", "update"])];

/// The ConfigMap key that holds the served certificate chain, PEM, end-entity first.
pub const CERT_KEY: &str = "tls.crt";

/// The labels of a published ConfigMap.
pub const LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/name", "kubevirt-leader-exporter"),
    ("app.kubernetes.io/component", "serving-certificate"),
];

/// How long after a successful write the ConfigMap is looked at again, in case someone
/// deleted or changed it.
pub const RECHECK: Duration = Duration::from_secs(300);
/// How often the certificate files are looked at while publishing, so that a rotation is
/// published even while nobody connects (a handshake looks at them too).
pub const FILE_CHECK: Duration = Duration::from_secs(5);
/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The pod the exporter runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl PodIdentity {
    /// From the downward API's environment variables; `None` unless all three are set (a
    /// warning names the missing ones when only some are).
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let found = [POD_NAME_ENV, POD_NAMESPACE_ENV, POD_UID_ENV].map(var);
        match found {
            [Some(name), Some(namespace), Some(uid)] => Some(Self {
                name,
                namespace,
                uid,
            }),
            [None, None, None] => None,
            partial => {
                let missing: Vec<&str> = [POD_NAME_ENV, POD_NAMESPACE_ENV, POD_UID_ENV]
                    .into_iter()
                    .zip(&partial)
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| n)
                    .collect();
                tracing::warn!(
                    missing = %missing.join(", "),
                    "not publishing the serving certificate: the pod's name, namespace and UID \
                     must all be set"
                );
                None
            }
        }
    }
}

/// `certs` as PEM, each certificate in its own block.
pub fn pem(certs: &[CertificateDer<'_>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for cert in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The ConfigMap that publishes `certs` for `pod`.
pub fn config_map(pod: &PodIdentity, certs: &[CertificateDer<'_>]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            labels: Some(
                LABELS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            // Garbage-collected with the pod. No blockOwnerDeletion: the pod's deletion never
            // waits for it (and setting it would need rights on the pod's finalizers).
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        data: Some([(CERT_KEY.to_owned(), pem(certs))].into()),
        ..Default::default()
    }
}

/// What a publication did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Created,
    Updated,
    Unchanged,
}

/// Makes the pod's ConfigMap hold `certs`: created if missing, replaced if it differs, left
/// alone if it already does.
pub async fn publish(
    api: &Api<ConfigMap>,
    pod: &PodIdentity,
    certs: &[CertificateDer<'_>],
) -> Result<Published, kube::Error> {
    let wanted = config_map(pod, certs);
    let Some(existing) = api.get_opt(&pod.name).await? else {
        api.create(&PostParams::default(), &wanted).await?;
        return Ok(Published::Created);
    };
    let labelled = LABELS.iter().all(|(k, v)| {
        existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(*k))
            .is_some_and(|have| have == v)
    });
    if existing.data == wanted.data
        && existing.metadata.owner_references == wanted.metadata.owner_references
        && labelled
    {
        return Ok(Published::Unchanged);
    }
    let mut replacement = wanted;
    replacement.metadata.resource_version = existing.metadata.resource_version;
    api.replace(&pod.name, &PostParams::default(), &replacement)
        .await?;
    Ok(Published::Updated)
}

/// Publishes the served chain now and whenever it changes, checks again every
/// [`RECHECK`], and retries a failed write after a backoff that doubles from
/// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]. A failure is logged and never stops the exporter
/// serving.
pub fn spawn(client: Client, pod: PodIdentity, mut served: ServedChain) -> JoinHandle<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, &pod.namespace);
    tracing::info!(
        configmap = %format!("{}/{}", pod.namespace, pod.name),
        "publishing the serving certificate"
    );
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            let certs = served.borrow_and_update().clone();
            let wait = match publish(&api, &pod, &certs).await {
                Ok(outcome) => {
                    if outcome != Published::Unchanged || failing {
                        tracing::info!(
                            configmap = %format!("{}/{}", pod.namespace, pod.name),
                            ?outcome,
                            "published the serving certificate"
                        );
                    }
                    failing = false;
                    backoff = FIRST_BACKOFF;
                    RECHECK
                }
                Err(error) => {
                    tracing::warn!(
                        error = %crate::error_chain(&error),
                        retry_in = ?backoff,
                        "publishing the serving certificate failed; `kubectl kubevirt-leader \
                         status` cannot verify this exporter until it succeeds"
                    );
                    failing = true;
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            changed_or(&mut served, wait).await;
        }
    })
}

/// Waits until the served chain changes or `wait` has passed. A sender that has gone (the
/// server's configuration dropped) leaves only the wait.
async fn changed_or(served: &mut ServedChain, wait: Duration) {
    tokio::select! {
        changed = served.changed() => {
            if changed.is_err() {
                tokio::time::sleep(wait).await;
            }
        }
        () = tokio::time::sleep(wait) => {}
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn the_pem_reads_back_as_the_same_certificates() {
        let key = rcgen::KeyPair::generate().expect("key");
        let certs: Vec<CertificateDer<'static>> = (0..2)
            .map(|i| {
                rcgen::CertificateParams::new(vec![format!("host{i}")])
                    .expect("params")
                    .self_signed(&key)
                    .expect("cert")
                    .der()
                    .clone()
            })
            .collect();
        let text = pem(&certs);
        let read: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .expect("PEM");
        assert_eq!(read, certs);
        assert!(text.lines().all(|l| l.len() <= 64), "{text}");
    }

    #[test]
    fn the_config_map_is_the_pods_and_never_blocks_its_deletion() {
        let pod = PodIdentity {
            name: "kle-abc".into(),
            namespace: "kle".into(),
            uid: "1234".into(),
        };
        let map = config_map(&pod, &[]);
        assert_eq!(map.metadata.name.as_deref(), Some("kle-abc"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("kle"));
        let owner = &map.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", "1234"));
        assert_eq!(owner.block_owner_deletion, None);
    }
}
