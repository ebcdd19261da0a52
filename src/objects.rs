//! The API objects as the exporter reads them off the wire, and what it keeps of them.

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use kube::{Resource, ResourceExt, runtime::watcher::Event};
use serde::{Deserialize, Deserializer};

use crate::judge::{LeaseRecord, PodInfo};

/// A watch event reduced to what is kept: `V` for each object, under key `K`.
#[derive(Debug)]
pub enum Change<K, V> {
    /// A (re)list starts.
    ListStarted,
    /// An object of the (re)list.
    Listed(K, V),
    /// The (re)list is complete.
    ListDone,
    Applied(K, V),
    Deleted(K),
}

/// Reduces a watch event, so that full objects are never stored.
pub fn reduce<O, K, V>(event: Event<O>, key: impl Fn(&O) -> K, keep: fn(&O) -> V) -> Change<K, V> {
    match event {
        Event::Init => Change::ListStarted,
        Event::InitApply(o) => Change::Listed(key(&o), keep(&o)),
        Event::InitDone => Change::ListDone,
        Event::Apply(o) => Change::Applied(key(&o), keep(&o)),
        Event::Delete(o) => Change::Deleted(key(&o)),
    }
}

/// A pod with its metadata reduced to what the watch needs, where it runs, and its status
/// conditions. Everything else (containers, managed fields, annotations) is skipped while
/// decoding, so a pod never costs more than this, not even for a moment.
#[derive(Resource, Clone, Debug, Default, Deserialize)]
#[resource(inherit = Pod)]
pub struct PodView {
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpecView>,
    #[serde(default)]
    pub status: Option<PodStatusView>,
}

/// Where a pod runs: a control-plane elector on the host network names itself after the
/// node's hostname, not the pod.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    #[serde(default, deserialize_with = "lenient")]
    pub node_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub host_network: Option<bool>,
}

/// A field of the wrong type reads as absent: these two only help name a holder's pod, and
/// are not worth blinding the whole watch over.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusView {
    #[serde(default)]
    pub conditions: Option<Vec<PodConditionView>>,
    #[serde(default)]
    pub container_statuses: Option<Vec<ContainerStatusView>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatusView {
    #[serde(default)]
    pub restart_count: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodConditionView {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaView::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

/// The readiness facts of a pod. A pod without status or conditions is not Ready.
pub fn pod_info(pod: &PodView) -> PodInfo {
    let status = pod.status.as_ref();
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    // A negative or absurd count from a broken object counts as none rather than wrapping.
    let restarts = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .fold(0u32, u32::saturating_add);
    let host_node = pod
        .spec
        .as_ref()
        .filter(|s| s.host_network == Some(true))
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    PodInfo {
        name: pod.name_any(),
        ready_condition,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        restarts,
        host_node,
    }
}

/// The record of a lease, as leader election writes it.
pub fn lease_record(lease: &Lease) -> LeaseRecord {
    let Some(spec) = &lease.spec else {
        return LeaseRecord::default();
    };
    LeaseRecord {
        holder: spec.holder_identity.clone(),
        duration_seconds: spec.lease_duration_seconds,
        transitions: spec.lease_transitions,
        renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
        acquire_time: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
        has_spec: true,
    }
}

/// The owner that controls an object (its ReplicaSet, its StatefulSet, ...), if any.
pub fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_view_is_a_pod_to_the_api() {
        assert_eq!(PodView::plural(&()), "pods");
        assert_eq!(PodView::kind(&()), "Pod");
        assert_eq!(PodView::api_version(&()), "v1");
    }

    #[test]
    fn pod_view_keeps_only_what_is_judged() {
        let full = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "virt-operator-a", "namespace": "kubevirt", "resourceVersion": "42",
                "labels": {"kubevirt.io": "virt-operator"}, "annotations": {"big": "x".repeat(10_000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "deletionTimestamp": "2026-11-25T10:00:00Z"},
            "spec": {"containers": [{"name": "virt-operator", "image": "quay.io/kubevirt/virt-operator"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
        });
        let pod: PodView = serde_json::from_value(full).expect("decodes");
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        let info = pod_info(&pod);
        assert_eq!(info.name, "virt-operator-a");
        assert!(info.ready_condition && info.deleting && !info.is_ready());

        assert_eq!(info.host_node, None, "not on the host network");
        let bare: PodView = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}}))
            .expect("decodes");
        assert!(!pod_info(&bare).ready_condition);
        let static_pod: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-scheduler-node-1"},
            "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": []}}))
        .expect("decodes");
        assert_eq!(pod_info(&static_pod).host_node.as_deref(), Some("node-1"));
        let odd_spec: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"nodeName": 7, "hostNetwork": "yes"}}))
        .expect("a spec of the wrong shape still decodes");
        assert_eq!(pod_info(&odd_spec).host_node, None);
        let odd: PodView = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))
        .expect("decodes");
        assert!(!pod_info(&odd).ready_condition);
    }
}
