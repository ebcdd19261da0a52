//! Discovery against a real kube-apiserver: from a Lease's holder identity to the workload
//! whose pods compete for it, for each shape of holder the electors write, for a leader that
//! died with its pod, and for a Lease nothing stands behind any more.

mod common;
mod envtest;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    core::v1::{Namespace, Pod},
};
use kube::{Api, Client, api::PostParams};
use kubevirt_leader_exporter::{
    Exporter,
    config::{DEFAULT_GRACE, Settings},
    discovery::resolve::{Found, WorkloadKind, workload},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use envtest::{ADMIN_TOKEN, Cluster, ControlPlane};

const UUID: &str = "5b4a3c1e-7f1d-4d2e-9a3b-0c1d2e3f4a5b";

async fn create<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("object");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

fn template(labels: &Value) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "c", "image": "example.com/c"}]}
    })
}

/// A pod with `labels`, controlled by the `kind` object `owner` (name, UID).
fn pod(name: &str, labels: &Value, kind: &str, owner: (&str, &str), extra: Value) -> Value {
    let api_version = if kind == "Node" { "v1" } else { "apps/v1" };
    let mut pod = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": api_version, "kind": kind, "name": owner.0, "uid": owner.1,
                "controller": true
            }]
        },
        "spec": {"containers": [{"name": "c", "image": "example.com/c"}]}
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    pod
}

/// The Deployment `csi-provisioner` in `storage` and the ReplicaSet its controller would
/// make (this API server runs none): its pods' labels and the ReplicaSet.
async fn csi_provisioner(admin: &Client) -> (Value, ReplicaSet) {
    let labels = json!({"app": "csi-provisioner"});
    let selector = json!({"matchLabels": labels});
    let deployment: Deployment = create(
        admin,
        "storage",
        json!({
            "metadata": {"name": "csi-provisioner"},
            "spec": {"selector": selector, "template": template(&labels)}
        }),
    )
    .await;
    let replica_set: ReplicaSet = create(
        admin,
        "storage",
        json!({
            "metadata": {"name": "csi-provisioner-6d8f9c7b5", "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "csi-provisioner",
                "uid": uid(&deployment), "controller": true
            }]},
            "spec": {"selector": selector, "template": template(&labels)}
        }),
    )
    .await;
    (labels, replica_set)
}

fn uid<K: kube::Resource>(object: &K) -> String {
    object.meta().uid.clone().expect("uid")
}

fn names(found: &Option<Found>) -> Option<(WorkloadKind, String, String, String)> {
    found.as_ref().map(|f| {
        (
            f.kind,
            f.namespace.clone(),
            f.name.clone(),
            f.selector.to_string(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_of_holder_finds_its_workload() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    for ns in ["storage", "cert-manager", "tenant"] {
        namespace(&admin, ns).await;
    }

    // A Deployment's pod, through its ReplicaSet; a controller-runtime identity.
    let (labels, replica_set) = csi_provisioner(&admin).await;
    let _: Pod = create(
        &admin,
        "storage",
        pod(
            "csi-provisioner-6d8f9c7b5-x2x4q",
            &labels,
            "ReplicaSet",
            ("csi-provisioner-6d8f9c7b5", &uid(&replica_set)),
            json!({}),
        ),
    )
    .await;
    let deployment_found = Some((
        WorkloadKind::Deployment,
        "storage".to_owned(),
        "csi-provisioner".to_owned(),
        "app=csi-provisioner".to_owned(),
    ));
    let holder = format!("csi-provisioner-6d8f9c7b5-x2x4q_{UUID}");
    let found = workload(&admin, "storage", "ebs-csi-aws-com", &holder).await;
    assert_eq!(names(&found.expect("resolve")), deployment_found);
    // The pod's name alone, as the CSI sidecars write it.
    let found = workload(
        &admin,
        "storage",
        "ebs-csi-aws-com",
        "csi-provisioner-6d8f9c7b5-x2x4q",
    )
    .await;
    assert_eq!(names(&found.expect("resolve")), deployment_found);
    // A leader that died with its pod: its ReplicaSet, which its name names, is still there.
    let holder = format!("csi-provisioner-6d8f9c7b5-bcdfg_{UUID}");
    let found = workload(&admin, "storage", "ebs-csi-aws-com", &holder).await;
    assert_eq!(names(&found.expect("resolve")), deployment_found);
    // ... and with its ReplicaSet gone too (an old revision's pod): the Deployment by name.
    let holder = format!("csi-provisioner-58c7d9f6b4-bcdfg_{UUID}");
    let found = workload(&admin, "storage", "ebs-csi-aws-com", &holder).await;
    assert_eq!(names(&found.expect("resolve")), deployment_found);

    // A StatefulSet's pod.
    let labels = json!({"app": "vault"});
    let set: StatefulSet = create(&admin, "tenant", json!({
        "metadata": {"name": "vault"},
        "spec": {"selector": {"matchLabels": labels}, "serviceName": "vault", "template": template(&labels)}
    }))
    .await;
    let _: Pod = create(
        &admin,
        "tenant",
        pod(
            "vault-1",
            &labels,
            "StatefulSet",
            ("vault", &uid(&set)),
            json!({}),
        ),
    )
    .await;
    let found = workload(&admin, "tenant", "vault-leader", &format!("vault-1_{UUID}")).await;
    assert_eq!(
        names(&found.expect("resolve")),
        Some((
            WorkloadKind::StatefulSet,
            "tenant".into(),
            "vault".into(),
            "app=vault".into()
        ))
    );

    // cert-manager: its Lease in kube-system, its pod (here a DaemonSet's) elsewhere.
    let labels = json!({"app": "cert-manager"});
    let daemons: DaemonSet = create(
        &admin,
        "cert-manager",
        json!({
            "metadata": {"name": "cert-manager"},
            "spec": {"selector": {"matchLabels": labels}, "template": template(&labels)}
        }),
    )
    .await;
    let _: Pod = create(
        &admin,
        "cert-manager",
        pod(
            "cert-manager-x2x4q",
            &labels,
            "DaemonSet",
            ("cert-manager", &uid(&daemons)),
            json!({}),
        ),
    )
    .await;
    let holder = "cert-manager-x2x4q-external-cert-manager-controller";
    let found = workload(&admin, "kube-system", "cert-manager-controller", holder).await;
    assert_eq!(
        names(&found.expect("resolve")),
        Some((
            WorkloadKind::DaemonSet,
            "cert-manager".into(),
            "cert-manager".into(),
            "app=cert-manager".into()
        ))
    );

    // kube-scheduler as a static pod on the host network: `<node>_<uuid>`, the mirror pod
    // named `<name>-<node>` and owned by its node, beside another host-network pod.
    let labels = json!({"component": "kube-scheduler", "tier": "control-plane"});
    let host = json!({"nodeName": "node-1", "hostNetwork": true});
    let _: Pod = create(
        &admin,
        "kube-system",
        pod(
            "kube-scheduler-node-1",
            &labels,
            "Node",
            ("node-1", UUID),
            host.clone(),
        ),
    )
    .await;
    let proxy = json!({"k8s-app": "kube-proxy"});
    let _: Pod = create(
        &admin,
        "kube-system",
        pod("kube-proxy-x2x4q", &proxy, "Node", ("node-1", UUID), host),
    )
    .await;
    let found = workload(
        &admin,
        "kube-system",
        "kube-scheduler",
        &format!("node-1_{UUID}"),
    )
    .await;
    assert_eq!(
        names(&found.expect("resolve")),
        Some((
            WorkloadKind::StaticPods,
            "kube-system".into(),
            "kube-scheduler-node-1".into(),
            "component=kube-scheduler,tier=control-plane".into()
        ))
    );

    // Nothing behind it: an operator removed with its Deployment, and a released Lease.
    let holder = format!("gone-operator-7d9f8b6c5-x2x4q_{UUID}");
    assert_eq!(
        workload(&admin, "tenant", "gone-operator", &holder)
            .await
            .expect("resolve"),
        None
    );
    assert_eq!(
        workload(&admin, "tenant", "any", "")
            .await
            .expect("resolve"),
        None
    );
}

/// Node heartbeats in `kube-node-lease`, as kubelets renew them: holder the node, no
/// `acquireTime`.
fn node_lease(node: &str, renewed: &str) -> Value {
    json!({
        "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renewed}
    })
}

fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_nobody_configured_is_found_and_judged_and_heartbeats_are_not() {
    use k8s_openapi::api::coordination::v1::Lease;
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    let cluster = Cluster {
        client: admin.clone(),
    };
    cluster.namespace("storage").await;
    plane.grant_elector_rbac(&admin, "storage").await;

    // A Deployment of two Ready pods, through its ReplicaSet, the first of which leads.
    let (labels, replica_set) = csi_provisioner(&admin).await;
    let pods = [
        "csi-provisioner-6d8f9c7b5-x2x4q",
        "csi-provisioner-6d8f9c7b5-k7m9p",
    ];
    for name in pods {
        let owner = ("csi-provisioner-6d8f9c7b5", uid(&replica_set));
        let _: Pod = create(
            &admin,
            "storage",
            pod(name, &labels, "ReplicaSet", (owner.0, &owner.1), json!({})),
        )
        .await;
        cluster.set_ready("storage", name, true).await;
    }
    let identity = format!("{}_{UUID}", pods[0]);
    let elector = plane.elector("storage", "ebs-csi-aws-com", &identity, &[]);
    elector.until_leading().await;

    // What must never become a component: node heartbeats, an API server's identity and a
    // Lease held under its own name.
    let renewed = now_micro();
    for n in 0..50 {
        let _: Lease = create(
            &admin,
            "kube-node-lease",
            node_lease(&format!("node-{n}"), &renewed),
        )
        .await;
    }
    let _: Lease = create(
        &admin,
        "kube-system",
        json!({
            "metadata": {"name": "apiserver-x5pq", "labels": {"apiserver.kubernetes.io/identity": "kube-apiserver"}},
            "spec": {"holderIdentity": format!("apiserver-x5pq_{UUID}"), "leaseDurationSeconds": 3600, "renewTime": renewed}
        }),
    )
    .await;
    let _: Lease = create(
        &admin,
        "storage",
        json!({
            "metadata": {"name": "beat"},
            "spec": {"holderIdentity": "beat", "leaseDurationSeconds": 10, "acquireTime": renewed, "renewTime": renewed}
        }),
    )
    .await;

    let mut settings = Settings::with_defaults(DEFAULT_GRACE);
    settings.discover = true;
    let exporter = Exporter::start(&settings, admin.clone(), std::future::pending())
        .await
        .expect("exporter starts");
    let http = common::http();
    let discovered = [
        ("component", "ebs-csi-aws-com"),
        ("namespace", "storage"),
        ("discovered", "true"),
    ];
    let scrape = common::until(&http, exporter.addr, "the election discovered", |s| {
        s.value("kubevirt_leader_present", &discovered) == Some(1.0)
            && s.value("kubevirt_leader_pods_ready", &discovered) == Some(2.0)
            && s.value("kubevirt_leader_holder_ready", &discovered) == Some(1.0)
    })
    .await;
    for heartbeat in ["node-0", "node-49", "apiserver-x5pq", "beat"] {
        assert!(
            !scrape.0.contains(&format!("component=\"{heartbeat}\"")),
            "{heartbeat} became a component:\n{}",
            scrape.0
        );
    }
    // The configured components are still there, not discovered.
    assert!(
        scrape.0.contains("component=\"virt-operator\""),
        "{}",
        scrape.0
    );

    // The Lease goes: so does the component.
    drop(elector);
    Api::<Lease>::namespaced(admin.clone(), "storage")
        .delete("ebs-csi-aws-com", &Default::default())
        .await
        .expect("delete the Lease");
    common::until(&http, exporter.addr, "the component gone", |s| {
        !s.0.contains("component=\"ebs-csi-aws-com\"")
    })
    .await;
}
