//! What a Lease's holder identity tells of the pod that holds it, and what a pod's name
//! tells of the workload that made it, for when the pod is gone.
//!
//! The shapes, as the electors write them:
//! - `<host>_<uuid>`: client-go's usual identity, and controller-runtime's, kube-scheduler's,
//!   kube-controller-manager's, cert-manager's cainjector's, CDI's, HCO's;
//! - `<host>`: the CSI sidecars (`os.Hostname()`, every character but `[a-zA-Z0-9-]` made
//!   `-`), ingress-nginx (its pod's name);
//! - `<host>-external-cert-manager-controller`: cert-manager's controller.
//!
//! The host is the pod's name, unless the pod runs on the host network: then it is the
//! node's host name, and the pod is one of that node's host-network pods.

use crate::components::is_dns_subdomain;

/// What some electors append to the host name in their identity.
const IDENTITY_SUFFIXES: [&str; 1] = ["-external-cert-manager-controller"];

/// The characters of the random suffixes Kubernetes gives generated names
/// (`k8s.io/apimachinery/pkg/util/rand`), and of a ReplicaSet's pod-template hash.
const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The host name in a holder identity: a pod's name, or a node's for a pod on the host
/// network. `None` for an empty holder (a released Lease) or one that names no host.
pub fn holder_host(holder: &str) -> Option<&str> {
    // Host names have no `_`: what follows the last one is the elector's own UUID.
    let host = holder.rsplit_once('_').map_or(holder, |(host, _)| host);
    let host = without_identity_suffix(host);
    (!host.is_empty() && is_dns_subdomain(host)).then_some(host)
}

/// `host` without what some electors append to it in their identity.
pub fn without_identity_suffix(host: &str) -> &str {
    IDENTITY_SUFFIXES
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))
        .unwrap_or(host)
}

/// A workload controller that a pod's name says made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Maker {
    /// `<replicaset>-<5 generated characters>`: a Deployment's pod, through its ReplicaSet.
    ReplicaSet(String),
    /// `<daemonset>-<5 generated characters>`.
    DaemonSet(String),
    /// `<statefulset>-<ordinal>`.
    StatefulSet(String),
}

/// The controllers that may have made the pod `pod`, by the shape of its name, to look up
/// when the pod itself is gone (a leader that died with its pod still has a workload).
pub fn makers_named_by(pod: &str) -> Vec<Maker> {
    let Some((prefix, suffix)) = pod.rsplit_once('-') else {
        return Vec::new();
    };
    if prefix.is_empty() {
        return Vec::new();
    }
    if suffix.len() == 5 && suffix.bytes().all(|b| GENERATED.contains(&b)) {
        vec![
            Maker::ReplicaSet(prefix.to_owned()),
            Maker::DaemonSet(prefix.to_owned()),
        ]
    } else if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
        vec![Maker::StatefulSet(prefix.to_owned())]
    } else {
        Vec::new()
    }
}

/// The Deployment a ReplicaSet's name says it belongs to (`<deployment>-<pod-template
/// hash>`), for when the ReplicaSet is gone too.
pub fn deployment_named_by(replica_set: &str) -> Option<&str> {
    let (deployment, hash) = replica_set.rsplit_once('-')?;
    let hashed = (1..=10).contains(&hash.len()) && hash.bytes().all(|b| GENERATED.contains(&b));
    (hashed && !deployment.is_empty()).then_some(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_each_electors_identity() {
        for (holder, host) in [
            // client-go and controller-runtime: `<host>_<uuid>`.
            (
                "cdi-deployment-6d8f9c7b5-x2x4q_5b4a3c1e-7f1d-4d2e-9a3b-0c1d2e3f4a5b",
                Some("cdi-deployment-6d8f9c7b5-x2x4q"),
            ),
            // kube-scheduler on the host network: the node's name.
            (
                "control-plane-1_0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f",
                Some("control-plane-1"),
            ),
            // ingress-nginx, the CSI sidecars: the pod's name alone.
            (
                "ingress-nginx-controller-7c9f8d6b5-k2m4n",
                Some("ingress-nginx-controller-7c9f8d6b5-k2m4n"),
            ),
            // cert-manager's controller.
            (
                "cert-manager-5d8f9c7b6-x2x4q-external-cert-manager-controller",
                Some("cert-manager-5d8f9c7b6-x2x4q"),
            ),
            // A released Lease, and holders that name no host.
            ("", None),
            ("_5b4a3c1e", None),
            ("Not A Host", None),
        ] {
            assert_eq!(holder_host(holder), host, "{holder:?}");
        }
    }

    #[test]
    fn a_pods_name_names_its_maker() {
        assert_eq!(
            makers_named_by("csi-provisioner-6d8f9c7b5-x2x4q"),
            [
                Maker::ReplicaSet("csi-provisioner-6d8f9c7b5".into()),
                Maker::DaemonSet("csi-provisioner-6d8f9c7b5".into())
            ]
        );
        assert_eq!(
            makers_named_by("etcd-backup-12"),
            [Maker::StatefulSet("etcd-backup".into())]
        );
        // A static pod is named after its node: `a` and `e` are not in Kubernetes'
        // generated alphabet. A guess is only a name to look up: a node named `...-1`
        // makes one that finds nothing.
        assert!(makers_named_by("kube-scheduler-master").is_empty());
        assert_eq!(
            makers_named_by("kube-scheduler-node-1"),
            [Maker::StatefulSet("kube-scheduler-node".into())]
        );
        assert!(makers_named_by("abcde").is_empty());
        assert!(makers_named_by("-x2x4q").is_empty());
        assert_eq!(
            deployment_named_by("csi-provisioner-6d8f9c7b5"),
            Some("csi-provisioner")
        );
        assert_eq!(
            deployment_named_by("virt-operator-74d8cc6bcd"),
            Some("virt-operator")
        );
        assert_eq!(deployment_named_by("no-hash-here"), None);
        assert_eq!(deployment_named_by("plain"), None);
    }
}
