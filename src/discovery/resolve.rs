//! From a Lease's holder to the workload whose pods compete for it, through the API server:
//! the holder's pod, then its controller (ReplicaSet → Deployment, StatefulSet, DaemonSet;
//! a static pod stands for the static pods of its kind). A holder whose pod is gone is
//! followed through the controller its pod's name names, so that a leader that died with
//! its pod still leaves a workload whose Ready standbys can be judged.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams},
    core::Selector,
};

use super::holders::{Maker, deployment_named_by, holder_host, makers_named_by};
use crate::{
    components::{Component, Workload},
    objects::controller,
};

/// The kinds of workload a leader election is resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// Static pods, which the kubelets run from files: they have no controller object, and
    /// stand for the pods with the same labels.
    StaticPods,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::StaticPods => "static pods",
        }
    }
}

/// The workload behind a leader election: where its pods are and which they are.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    pub selector: Selector,
}

/// The component that judges Lease `lease` of `namespace` with the pods of `found`, or
/// none (abandoned).
pub fn component(namespace: &str, lease: &str, found: Option<Found>) -> Component {
    Component::discovered(
        lease,
        found.map(|f| {
            let workload = Workload {
                kind: f.kind.as_str().to_owned(),
                name: f.name,
                namespace: (f.namespace != namespace).then_some(f.namespace),
            };
            (workload, f.selector)
        }),
    )
}

/// Resolves `holder`, the holder identity of a Lease in `namespace`. `Ok(None)`: nothing
/// behind it, as for a Lease left by an operator since removed, or a released Lease.
pub async fn workload(
    client: &Client,
    namespace: &str,
    lease: &str,
    holder: &str,
) -> kube::Result<Option<Found>> {
    let Some(host) = holder_host(holder) else {
        return Ok(None);
    };
    if let Some(pod) = holder_pod(client, namespace, lease, host).await? {
        return of_pod(client, &pod).await;
    }
    named_by(client, namespace, host).await
}

/// The pod a holder's host names: the pod of that name in the Lease's namespace, else
/// anywhere (cert-manager keeps its Lease in kube-system, its pods elsewhere), else a
/// host-network pod on the node of that name in the Lease's namespace.
async fn holder_pod(
    client: &Client,
    namespace: &str,
    lease: &str,
    host: &str,
) -> kube::Result<Option<DynamicObject>> {
    let here = namespaced::<Pod>(client, namespace);
    if let Some(pod) = here.get_opt(host).await? {
        return Ok(Some(pod));
    }
    // From the API server's cache: these lists take every pod into account.
    let named = ListParams::default()
        .fields(&format!("metadata.name={host}"))
        .match_any();
    let everywhere: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<Pod>(&()));
    match everywhere.list(&named).await {
        Ok(mut anywhere) if anywhere.items.len() == 1 => return Ok(anywhere.items.pop()),
        Ok(_) => {}
        // Rights in some namespaces only (a scoped install): look no further than those.
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        Err(error) => return Err(error),
    }
    let on_node = ListParams::default()
        .fields(&format!("spec.nodeName={host}"))
        .match_any();
    let host_network: Vec<DynamicObject> = here
        .list(&on_node)
        .await?
        .items
        .into_iter()
        .filter(|p| p.data["spec"]["hostNetwork"] == true)
        .collect();
    Ok(host_network_holder(host_network, lease))
}

/// Of a node's host-network pods, the one that holds `lease`: the only one, or the one
/// named after the Lease (static pods are named `<name>-<node>`, as kube-scheduler's).
fn host_network_holder(mut pods: Vec<DynamicObject>, lease: &str) -> Option<DynamicObject> {
    if pods.len() == 1 {
        return pods.pop();
    }
    let prefix = format!("{lease}-");
    let mut named: Vec<DynamicObject> = pods
        .into_iter()
        .filter(|p| p.name_any().starts_with(&prefix))
        .collect();
    (named.len() == 1).then(|| named.pop()).flatten()
}

/// The workload of a pod, by its controller.
async fn of_pod(client: &Client, pod: &DynamicObject) -> kube::Result<Option<Found>> {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(owner) = controller(&pod.metadata) else {
        return Ok(None);
    };
    match owner.kind.as_str() {
        "ReplicaSet" => replica_set(client, &namespace, &owner.name).await,
        "StatefulSet" => stateful_set(client, &namespace, &owner.name).await,
        "DaemonSet" => daemon_set(client, &namespace, &owner.name).await,
        // A mirror pod: the kubelet runs it from a file and the API server shows it owned
        // by its node.
        "Node" => Ok(static_pods(pod, &namespace)),
        _ => Ok(None),
    }
}

/// The workload the name of a pod that is gone names, by the controllers that may have
/// made it.
async fn named_by(client: &Client, namespace: &str, pod: &str) -> kube::Result<Option<Found>> {
    for maker in makers_named_by(pod) {
        let found = match &maker {
            Maker::ReplicaSet(name) => replica_set(client, namespace, name).await?,
            Maker::DaemonSet(name) => daemon_set(client, namespace, name).await?,
            Maker::StatefulSet(name) => stateful_set(client, namespace, name).await?,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// A ReplicaSet's Deployment; one gone with its ReplicaSet too is found by the name.
async fn replica_set(client: &Client, namespace: &str, name: &str) -> kube::Result<Option<Found>> {
    let sets = namespaced::<ReplicaSet>(client, namespace);
    let deployment = match sets.get_opt(name).await? {
        Some(set) => match controller(&set.metadata) {
            Some(owner) if owner.kind == "Deployment" => owner.name.clone(),
            _ => return Ok(None),
        },
        None => match deployment_named_by(name) {
            Some(deployment) => deployment.to_owned(),
            None => return Ok(None),
        },
    };
    let deployments = namespaced::<Deployment>(client, namespace);
    Ok(deployments
        .get_opt(&deployment)
        .await?
        .and_then(|d| of_workload(WorkloadKind::Deployment, &d)))
}

async fn stateful_set(client: &Client, namespace: &str, name: &str) -> kube::Result<Option<Found>> {
    let sets = namespaced::<StatefulSet>(client, namespace);
    Ok(sets
        .get_opt(name)
        .await?
        .and_then(|s| of_workload(WorkloadKind::StatefulSet, &s)))
}

async fn daemon_set(client: &Client, namespace: &str, name: &str) -> kube::Result<Option<Found>> {
    let sets = namespaced::<DaemonSet>(client, namespace);
    Ok(sets
        .get_opt(name)
        .await?
        .and_then(|s| of_workload(WorkloadKind::DaemonSet, &s)))
}

/// Objects of kind `K` in `namespace`, read as plain JSON: only their metadata and a field
/// or two are used, and typed reads would bring every field's decoder of pods and
/// workloads into the exporter.
fn namespaced<K: Resource<DynamicType = ()>>(
    client: &Client,
    namespace: &str,
) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<K>(&()))
}

/// A workload of `kind` by its `spec.selector`.
fn of_workload(kind: WorkloadKind, object: &DynamicObject) -> Option<Found> {
    let selector: LabelSelector =
        serde_json::from_value(object.data["spec"]["selector"].clone()).ok()?;
    found(kind, &object.metadata, Some(&selector))
}

/// A workload of `kind` with `selector`; `None` for a selector that would take every pod,
/// which no controller may have but a hand-made object could.
fn found(kind: WorkloadKind, meta: &ObjectMeta, selector: Option<&LabelSelector>) -> Option<Found> {
    let selector = Selector::try_from(selector?.clone()).ok()?;
    (!selector.selects_all()).then(|| Found {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        selector,
    })
}

/// The static pods like `pod`: those with all its labels, in its namespace.
fn static_pods(pod: &DynamicObject, namespace: &str) -> Option<Found> {
    let labels = pod.labels().clone();
    let selector = LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let mut found = found(WorkloadKind::StaticPods, &pod.metadata, Some(&selector))?;
    found.namespace = namespace.to_owned();
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> DynamicObject {
        DynamicObject::new(name, &ApiResource::erase::<Pod>(&()))
    }

    #[test]
    fn of_a_nodes_host_network_pods_the_one_named_after_the_lease_holds_it() {
        let names = |p: Option<DynamicObject>| p.map(|p| p.name_any());
        let pods = vec![pod("kube-scheduler-node-1"), pod("kube-proxy-x2x4q")];
        assert_eq!(
            names(host_network_holder(pods.clone(), "kube-scheduler")),
            Some("kube-scheduler-node-1".into())
        );
        assert_eq!(names(host_network_holder(pods, "csi-snapshotter")), None);
        let alone = vec![pod("csi-controller-node-1")];
        assert_eq!(
            names(host_network_holder(alone, "ebs-csi-aws-com")),
            Some("csi-controller-node-1".into())
        );
        assert_eq!(names(host_network_holder(Vec::new(), "any")), None);
    }
}
