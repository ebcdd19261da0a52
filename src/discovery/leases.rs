//! Which Leases are leader elections. Most of a cluster's Leases are heartbeats: one per
//! node in `kube-node-lease`, renewed every 10 s, and one per kube-apiserver. They are
//! kept out of the watch by the API server itself where a selector can say so, so that a
//! thousand nodes cost the exporter no events; what no selector can tell apart is left out
//! here.

use k8s_openapi::api::coordination::v1::Lease;
use kube::{ResourceExt, runtime::watcher};

/// The namespace of the kubelets' node heartbeats, one Lease per node, holder the node.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The label kube-apiserver puts on its identity Leases (`apiserver-<hash>` in
/// kube-system), which it renews as heartbeats.
pub const APISERVER_IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";

/// Why a Lease is not a leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotElection {
    /// A kubelet's heartbeat in `kube-node-lease`.
    NodeHeartbeat,
    /// A kube-apiserver's identity.
    ApiServerIdentity,
    /// Held under its own name, as heartbeats are: nobody competes for it.
    HeldByItsName,
    /// Never acquired: client-go's elector writes `acquireTime` with every record (a
    /// release included), the heartbeat controllers never do.
    NeverAcquired,
}

/// What to ask the API server for: every Lease but the node heartbeats and the API
/// servers' identities, which it leaves out itself.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default()
        .fields(&format!("metadata.namespace!={NODE_LEASE_NAMESPACE}"))
        .labels(&format!("!{APISERVER_IDENTITY_LABEL}"))
}

/// Why `lease` is not a leader election, or `None` when it is one. The selectors of
/// [`watch_config`] are checked again: a Lease listed some other way must not slip in.
pub fn not_an_election(lease: &Lease) -> Option<NotElection> {
    if lease.namespace().as_deref() == Some(NODE_LEASE_NAMESPACE) {
        return Some(NotElection::NodeHeartbeat);
    }
    if lease.labels().contains_key(APISERVER_IDENTITY_LABEL) {
        return Some(NotElection::ApiServerIdentity);
    }
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.as_deref());
    if holder.is_some_and(|h| !h.is_empty() && h == lease.name_any()) {
        return Some(NotElection::HeldByItsName);
    }
    if spec.and_then(|s| s.acquire_time.as_ref()).is_none() {
        return Some(NotElection::NeverAcquired);
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec,
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
        jiff::Timestamp,
    };

    use super::*;

    fn lease(namespace: &str, name: &str, holder: &str, acquired: bool) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                acquire_time: acquired.then_some(MicroTime(Timestamp::UNIX_EPOCH)),
                renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
                lease_transitions: acquired.then_some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn client_go_elections_are_elections_released_or_not() {
        let held = lease(
            "cert-manager",
            "cert-manager-cainjector-leader-election",
            "ci-7f_1a2b",
            true,
        );
        assert_eq!(not_an_election(&held), None);
        let released = lease("kube-system", "kube-scheduler", "", true);
        assert_eq!(not_an_election(&released), None);
    }

    #[test]
    fn heartbeats_are_not() {
        let node = lease(NODE_LEASE_NAMESPACE, "node-1", "node-1", false);
        assert_eq!(not_an_election(&node), Some(NotElection::NodeHeartbeat));
        let mut apiserver = lease(
            "kube-system",
            "apiserver-x5pq",
            "apiserver-x5pq_9e1c",
            false,
        );
        apiserver
            .labels_mut()
            .insert(APISERVER_IDENTITY_LABEL.into(), "kube-apiserver".into());
        assert_eq!(
            not_an_election(&apiserver),
            Some(NotElection::ApiServerIdentity)
        );
        let own_name = lease("tenant", "beat", "beat", true);
        assert_eq!(not_an_election(&own_name), Some(NotElection::HeldByItsName));
        let never = lease("tenant", "beat", "someone", false);
        assert_eq!(not_an_election(&never), Some(NotElection::NeverAcquired));
        let empty = Lease {
            metadata: ObjectMeta {
                name: Some("bare".into()),
                namespace: Some("tenant".into()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        assert_eq!(not_an_election(&empty), Some(NotElection::NeverAcquired));
    }

    #[test]
    fn the_server_leaves_out_the_heartbeats_it_can_tell() {
        let config = watch_config();
        assert_eq!(
            config.field_selector.as_deref(),
            Some("metadata.namespace!=kube-node-lease")
        );
        assert_eq!(
            config.label_selector.as_deref(),
            Some("!apiserver.kubernetes.io/identity")
        );
    }
}
