//! The cluster the discovery benchmark runs against: 1,000 node Leases renewed every 10 s,
//! as kubelets renew them, and 100 leader elections renewed every 2 s, each the Lease of a
//! Deployment of two Ready pods (through its ReplicaSet) whose first pod holds it.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    coordination::v1::Lease,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub const NODES: usize = 1000;
pub const ELECTIONS: usize = 100;
/// The elections are spread over this many namespaces.
const NAMESPACES: usize = 10;
const NODE_RENEWAL: Duration = Duration::from_secs(10);
const LEADER_RENEWAL: Duration = Duration::from_secs(2);
const NODE_NAMESPACE: &str = "kube-node-lease";

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

async fn create<K>(client: &Client, ns: &str, object: Value) -> anyhow::Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .context("create")
}

fn uid<K: Resource>(object: &K) -> String {
    object.meta().uid.clone().unwrap_or_default()
}

/// Where election `i` lives, and its name.
pub fn election(i: usize) -> (String, String) {
    (format!("apps-{}", i % NAMESPACES), format!("ctl-{i}"))
}

/// Creates the node Leases and the namespaces of the elections.
pub async fn populate(admin: &Client) -> anyhow::Result<()> {
    for n in 0..NAMESPACES {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("apps-{n}")}}))?;
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    let renewed = now();
    for n in 0..NODES {
        let _: Lease = create(
            admin,
            NODE_NAMESPACE,
            json!({
                "metadata": {"name": format!("node-{n}")},
                "spec": {"holderIdentity": format!("node-{n}"), "leaseDurationSeconds": 40,
                         "renewTime": renewed}
            }),
        )
        .await?;
    }
    Ok(())
}

/// Election `i`: its Deployment, ReplicaSet and two Ready pods, then its Lease, held by the
/// first pod. Returns the Lease's namespace and name.
pub async fn start_election(admin: &Client, i: usize) -> anyhow::Result<(String, String)> {
    let (ns, name) = election(i);
    let labels = json!({"app": name});
    let template = json!({"metadata": {"labels": labels},
                          "spec": {"containers": [{"name": "c", "image": "example.com/c"}]}});
    let selector = json!({"matchLabels": labels});
    let deployment: Deployment = create(
        admin,
        &ns,
        json!({"metadata": {"name": name},
               "spec": {"selector": selector, "template": template}}),
    )
    .await?;
    let set = format!("{name}-5d8f9c7b6");
    let owner = |kind: &str, name: &str, uid: String| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let replica_set: ReplicaSet = create(
        admin,
        &ns,
        json!({"metadata": {"name": set, "ownerReferences": owner("Deployment", &name, uid(&deployment))},
               "spec": {"selector": selector, "template": template}}),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let ready = Patch::Merge(json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}}));
    let holder = format!("{set}-x2x4q");
    for pod in [holder.clone(), format!("{set}-k7m9p")] {
        let _: Pod = create(
            admin,
            &ns,
            json!({"metadata": {"name": pod, "labels": labels,
                                "ownerReferences": owner("ReplicaSet", &set, uid(&replica_set))},
                   "spec": {"containers": [{"name": "c", "image": "example.com/c"}]}}),
        )
        .await?;
        pods.patch_status(&pod, &PatchParams::default(), &ready)
            .await?;
    }
    let renewed = now();
    let _: Lease = create(
        admin,
        &ns,
        json!({"metadata": {"name": name},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0}}),
    )
    .await?;
    Ok((ns, name))
}

/// Renews `leases` (namespace, name) one after the other, each once per `period`, until
/// dropped.
fn renew(admin: &Client, leases: Vec<(String, String)>, period: Duration) -> Renewer {
    let admin = admin.clone();
    Renewer(tokio::spawn(async move {
        let step = period / leases.len().max(1) as u32;
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for (ns, name) in leases.iter().cycle() {
            tick.tick().await;
            let patch = Patch::Merge(json!({"spec": {"renewTime": now()}}));
            let api: Api<Lease> = Api::namespaced(admin.clone(), ns);
            if let Err(error) = api.patch(name, &PatchParams::default(), &patch).await {
                eprintln!("renewing {ns}/{name}: {error}");
            }
        }
    }))
}

/// Renews the node Leases every 10 s and elections `0..elections` every 2 s.
pub fn renew_all(admin: &Client, elections: usize) -> (Renewer, Renewer) {
    let nodes = (0..NODES)
        .map(|n| (NODE_NAMESPACE.to_owned(), format!("node-{n}")))
        .collect();
    let leaders = (0..elections).map(election).collect();
    (
        renew(admin, nodes, NODE_RENEWAL),
        renew(admin, leaders, LEADER_RENEWAL),
    )
}

/// A renewing task, stopped when dropped.
pub struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
