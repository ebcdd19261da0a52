//! Discovery against a real kube-apiserver: from a Lease's holder identity to the workload
//! whose pods compete for it, for each shape of holder the electors write, for a leader that
//! died with its pod, and for a Lease nothing stands behind any more.

mod common;
mod envtest;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    core::v1::Pod,
};
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use kubevirt_leader_exporter::{
    Exporter,
    config::{DEFAULT_GRACE, Settings},
    discovery::resolve::{Found, WorkloadKind, workload},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use envtest::{Cluster, EXPORTER_TOKEN};

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

/// The Deployment `name` in `ns`, its ReplicaSet `<name>-<hash>` and a Ready pod of it
/// per suffix, labelled `app=<name>`; returns the pods' names.
async fn deployment_with_pods(
    admin: &Client,
    ns: &str,
    name: &str,
    hash: &str,
    suffixes: &[&str],
) -> Vec<String> {
    let labels = json!({"app": name});
    let selector = json!({"matchLabels": labels});
    let deployment: Deployment = create(
        admin,
        ns,
        json!({
            "metadata": {"name": name},
            "spec": {"selector": selector, "template": template(&labels)}
        }),
    )
    .await;
    let set = format!("{name}-{hash}");
    let replica_set: ReplicaSet = create(
        admin,
        ns,
        json!({
            "metadata": {"name": set, "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": uid(&deployment), "controller": true
            }]},
            "spec": {"selector": selector, "template": template(&labels)}
        }),
    )
    .await;
    let cluster = Cluster {
        client: admin.clone(),
    };
    let mut pods = Vec::new();
    for suffix in suffixes {
        let pod_name = format!("{set}-{suffix}");
        let owner = (set.as_str(), uid(&replica_set));
        let _: Pod = create(
            admin,
            ns,
            pod(
                &pod_name,
                &labels,
                "ReplicaSet",
                (owner.0, &owner.1),
                json!({}),
            ),
        )
        .await;
        cluster.set_ready(ns, &pod_name, true).await;
        pods.push(pod_name);
    }
    pods
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
    let Some((_plane, admin, _)) =
        envtest::api_server(&["storage", "cert-manager", "tenant"]).await
    else {
        return;
    };

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

/// Scrapes until the discovered component `labels` names leads, with `ready` Ready pods
/// and a Ready holder.
async fn until_led(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    what: &str,
    labels: &[(&str, &str)],
    ready: f64,
) -> common::Scrape {
    common::until(http, addr, what, |s| {
        s.value("kubevirt_leader_present", labels) == Some(1.0)
            && s.value("kubevirt_leader_pods_ready", labels) == Some(ready)
            && s.value("kubevirt_leader_holder_ready", labels) == Some(1.0)
    })
    .await
}

/// Renews every node Lease and the API server identity Lease `apiserver-x5pq` over and
/// over, as kubelets and kube-apiservers do; counts the rounds completed.
fn renew_heartbeats(admin: Client, nodes: usize) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    use k8s_openapi::api::coordination::v1::Lease;
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = rounds.clone();
    let task = tokio::spawn(async move {
        let node_leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
        let identities: Api<Lease> = Api::namespaced(admin, "kube-system");
        let params = PatchParams::default();
        // Every node once a second, not as fast as the API server allows: the other tests
        // share these two cores.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1) / nodes as u32);
        loop {
            for n in 0..nodes {
                tick.tick().await;
                let patch = Patch::Merge(json!({"spec": {"renewTime": now_micro()}}));
                node_leases
                    .patch(&format!("node-{n}"), &params, &patch)
                    .await
                    .expect("renew a node Lease");
            }
            let patch = Patch::Merge(json!({"spec": {"renewTime": now_micro()}}));
            identities
                .patch("apiserver-x5pq", &params, &patch)
                .await
                .expect("renew the identity Lease");
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (rounds, task)
}

const NODES: usize = 300;

/// The leases watch events the exporter counted.
fn lease_events(scrape: &common::Scrape) -> f64 {
    scrape
        .value(
            "kubevirt_leader_exporter_watch_events_total",
            &[("resource", "leases")],
        )
        .expect("watch_events_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_nobody_configured_is_found_and_judged_and_heartbeats_are_not() {
    use k8s_openapi::api::coordination::v1::Lease;
    let Some((plane, admin, cluster)) = envtest::api_server(&["storage"]).await else {
        return;
    };
    // The exporter runs with the cluster-wide installs' rights, no more: at first without
    // discovery's, which come while it runs.
    plane.grant_exporter_rbac(&admin).await;
    plane.grant_elector_rbac(&admin, "storage").await;

    // A Deployment of two Ready pods, through its ReplicaSet, the first of which will lead.
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

    // What must never become a component: node heartbeats, renewed all along, an API
    // server's identity and a Lease held under its own name.
    let renewed = now_micro();
    for n in 0..NODES {
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
    let (rounds, renewing) = renew_heartbeats(admin.clone(), NODES);

    // An election whose leader wrote its Lease once and renews it no more: no event will
    // come to ask about it again.
    let reports = deployment_with_pods(
        &admin,
        "storage",
        "reports",
        "5f6d7c8b9",
        &["x2x4q", "k7m9p"],
    )
    .await;
    let _: Lease = create(
        &admin,
        "storage",
        json!({
            "metadata": {"name": "reports"},
            "spec": {"holderIdentity": reports[0], "leaseDurationSeconds": 15,
                     "acquireTime": renewed, "renewTime": renewed}
        }),
    )
    .await;

    let mut settings = Settings::with_defaults(DEFAULT_GRACE);
    settings.discover = true;
    let exporter = Exporter::start(
        &settings,
        plane.client(EXPORTER_TOKEN).await,
        std::future::pending(),
    )
    .await
    .expect("exporter starts");
    let http = common::http();
    let ready = common::until(&http, exporter.addr, "the exporter listed", |s| {
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")],
        ) == Some(1.0)
    })
    .await;
    assert!(!ready.0.contains("ebs-csi-aws-com"), "{}", ready.0);

    // Without the rights on workloads its holder cannot be followed: not judged, and asked
    // again 30 s later, though its Lease never changes.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let unresolved = common::scrape(&http, exporter.addr).await;
    assert!(
        !unresolved.0.contains("component=\"reports\""),
        "{}",
        unresolved.0
    );
    plane
        .grant_exporter_cluster_role(&admin, "deploy/discover-leaders/clusterrole.yaml")
        .await;
    let reports = [
        ("component", "reports"),
        ("namespace", "storage"),
        ("discovered", "true"),
    ];
    common::until_within(
        std::time::Duration::from_secs(60),
        &http,
        exporter.addr,
        "the unchanged election asked about again",
        |s| s.value("kubevirt_leader_pods_ready", &reports) == Some(2.0),
    )
    .await;

    // An election that starts while the exporter runs is found.
    let identity = format!("{}_{UUID}", pods[0]);
    let elector = plane.elector("storage", "ebs-csi-aws-com", &identity, &[]);
    let discovered = [
        ("component", "ebs-csi-aws-com"),
        ("namespace", "storage"),
        ("discovered", "true"),
    ];
    let scrape = until_led(
        &http,
        exporter.addr,
        "the election discovered",
        &discovered,
        2.0,
    )
    .await;
    for heartbeat in ["node-0", "node-299", "apiserver-x5pq", "beat"] {
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
    // cert-manager keeps its Lease in kube-system, apart from its pods, and appends to its
    // pod's name in its identity: judged with the Lease, from its pods where they run.
    cluster.namespace("cert-manager").await;
    plane.grant_elector_rbac(&admin, "kube-system").await;
    let cert_manager = deployment_with_pods(
        &admin,
        "cert-manager",
        "cert-manager",
        "7d9f8b6c5d",
        &["x2x4q", "k7m9p"],
    )
    .await;
    let identity = format!("{}-external-cert-manager-controller", cert_manager[0]);
    let controller = plane.elector("kube-system", "cert-manager-controller", &identity, &[]);
    let apart = [
        ("component", "cert-manager-controller"),
        ("namespace", "kube-system"),
        ("discovered", "true"),
    ];
    until_led(&http, exporter.addr, "cert-manager discovered", &apart, 2.0).await;
    let status = common::status_json(&http, exporter.addr).await;
    assert_eq!(
        discovered_entry(&status, "cert-manager-controller")["workload"],
        json!({"kind": "Deployment", "name": "cert-manager", "namespace": "cert-manager"})
    );
    drop(controller);
    let scrape = common::scrape(&http, exporter.addr).await;

    // The shipped rights were enough: no watch or read failed.
    assert_eq!(
        scrape.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "leases")]
        ),
        Some(0.0),
        "{}",
        scrape.0
    );

    // The Lease goes: so does the component.
    drop(elector);
    Api::<Lease>::namespaced(admin.clone(), "storage")
        .delete("ebs-csi-aws-com", &Default::default())
        .await
        .expect("delete the Lease");
    let before = common::until(&http, exporter.addr, "the component gone", |s| {
        !s.0.contains("component=\"ebs-csi-aws-com\"")
    })
    .await;

    // Now only heartbeats change: at least two whole rounds of renewals of every one of them reach
    // the exporter as no event at all.
    let from = rounds.load(Ordering::SeqCst);
    while rounds.load(Ordering::SeqCst) < from + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = common::scrape(&http, exporter.addr).await;
    renewing.abort();
    assert_eq!(
        lease_events(&after),
        lease_events(&before),
        "heartbeat renewals reached the exporter"
    );
}

/// Scrapes every 250 ms until stopped; returns what each scrape read of `component`'s
/// `kubevirt_leader_present` in `ns` (`None`: absent).
fn sample_present(
    http: reqwest::Client,
    addr: std::net::SocketAddr,
    labels: [(&'static str, &'static str); 3],
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<Option<f64>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut read = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            let scrape = common::scrape(&http, addr).await;
            read.push(scrape.value("kubevirt_leader_present", &labels));
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        read
    });
    (stop, task)
}

async fn delete_pod(admin: &Client, ns: &str, name: &str) {
    Api::<Pod>::namespaced(admin.clone(), ns)
        .delete(name, &Default::default())
        .await
        .expect("delete pod");
}

/// The discovered entry of `component` in a `/status.json`.
fn discovered_entry<'a>(status: &'a Value, component: &str) -> &'a Value {
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["component"] == component)
        .unwrap_or_else(|| panic!("no {component}: {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handovers_never_read_no_leader_a_dead_one_does_and_an_abandoned_lease_stays_quiet() {
    use k8s_openapi::api::coordination::v1::Lease;
    use std::time::{Duration, Instant};
    let Some((plane, admin, _)) = envtest::api_server(&["migration", "old"]).await else {
        return;
    };
    plane.grant_elector_rbac(&admin, "migration").await;

    // A Deployment of three Ready pods: two elect, the third serves webhooks and never does.
    let pods = deployment_with_pods(
        &admin,
        "migration",
        "forklift-controller",
        "7c9d5b8f4",
        &["x2x4q", "k7m9p", "q8w3z"],
    )
    .await;
    let [first, second, _bystander] = [&pods[0], &pods[1], &pods[2]];
    let leader = plane.elector("migration", "forklift-controller", first, &[]);
    leader.until_leading().await;
    let standby = plane.elector("migration", "forklift-controller", second, &[]);

    // Left behind by an operator uninstalled long ago: no pod, no ReplicaSet, no Deployment.
    let long_ago = "2026-01-01T00:00:00.000000Z";
    let _: Lease = create(
        &admin,
        "old",
        json!({
            "metadata": {"name": "gone-operator-lock"},
            "spec": {"holderIdentity": format!("gone-operator-7d9f8b6c5d-abcde_{UUID}"),
                     "leaseDurationSeconds": 15, "acquireTime": long_ago, "renewTime": long_ago}
        }),
    )
    .await;

    let mut settings = Settings::with_defaults(DEFAULT_GRACE);
    settings.discover = true;
    let exporter = Exporter::start(&settings, admin.clone(), std::future::pending())
        .await
        .expect("exporter starts");
    let http = common::http();
    let forklift = [
        ("component", "forklift-controller"),
        ("namespace", "migration"),
        ("discovered", "true"),
    ];
    until_led(
        &http,
        exporter.addr,
        "the election discovered",
        &forklift,
        3.0,
    )
    .await;

    // The leader dies with its pod, without releasing: the standby takes over, and no
    // scrape in between reads "no leader" or nothing.
    let (stop, sampling) = sample_present(http.clone(), exporter.addr, forklift);
    drop(leader);
    delete_pod(&admin, "migration", first).await;
    let new_holder = [
        ("component", "forklift-controller"),
        ("holder", second.as_str()),
    ];
    common::until(&http, exporter.addr, "the standby leading", |s| {
        s.value("kubevirt_leader_holder_info", &new_holder) == Some(1.0)
            && s.value("kubevirt_leader_holder_ready", &forklift) == Some(1.0)
    })
    .await;
    // Some renewals by the new leader, and their resolving, inside the sampling too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let read = sampling.await.expect("sampler");
    assert!(read.len() > 40, "only {} samples", read.len());
    assert!(
        read.iter().all(|p| *p == Some(1.0)),
        "a handover read as no leader or blind: {read:?}"
    );

    // The new leader dies too, with its pod: the pod left is Ready but never elects, so
    // there is no leader, once the lease's 15 s and the grace have run out.
    drop(standby);
    let died = Instant::now();
    delete_pod(&admin, "migration", second).await;
    let dead = common::until(&http, exporter.addr, "no leader", |s| {
        s.value("kubevirt_leader_present", &forklift) == Some(0.0)
    })
    .await;
    assert!(
        died.elapsed() >= Duration::from_secs(20),
        "no leader read after {:?}, before the lease and its grace ran out",
        died.elapsed()
    );
    assert_eq!(
        dead.value("kubevirt_leader_pods_ready", &forklift),
        Some(1.0)
    );
    assert_eq!(
        dead.value("kubevirt_leader_holder_ready", &forklift),
        None,
        "{}",
        dead.0
    );

    // An exporter that starts only now finds the workload through the ReplicaSet the dead
    // holder's name names, and judges it the same.
    let later = Exporter::start(&settings, admin.clone(), std::future::pending())
        .await
        .expect("second exporter starts");
    let seen = common::until(&http, later.addr, "no leader, seen afresh", |s| {
        s.value("kubevirt_leader_present", &forklift) == Some(0.0)
            && s.value("kubevirt_leader_pods_ready", &forklift) == Some(1.0)
    })
    .await;
    assert_eq!(seen.value("kubevirt_leader_pods", &forklift), Some(1.0));
    let status = common::status_json(&http, later.addr).await;
    assert_eq!(
        discovered_entry(&status, "forklift-controller")["workload"],
        json!({"kind": "Deployment", "name": "forklift-controller", "namespace": "migration"})
    );

    // The abandoned Lease: shown, said to be abandoned, with no pods, so that
    // NoLeadingComponent's guard (Ready pods) holds it quiet.
    let old = [
        ("component", "gone-operator-lock"),
        ("namespace", "old"),
        ("discovered", "true"),
    ];
    let quiet = common::until(&http, later.addr, "the abandoned lease judged", |s| {
        s.value("kubevirt_leader_present", &old) == Some(0.0)
    })
    .await;
    assert_eq!(quiet.value("kubevirt_leader_pods_ready", &old), Some(0.0));
    let status = common::status_json(&http, later.addr).await;
    let entry = discovered_entry(&status, "gone-operator-lock");
    assert_eq!(entry["discovered"], true);
    assert_eq!(entry["workload"], Value::Null);

    // diagnose, for someone with the shipped diagnose role, finds both by their Lease's name.
    let kubeconfig = plane.on_call(&admin).await;
    let out = std::process::Command::new(common::workspace_binary("kubectl-kubevirt_leader"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["diagnose", "--observe=0s", "--output=json"])
        .arg("--component=forklift-controller,gone-operator-lock,no-such-lease")
        .output()
        .expect("run the plugin");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["unchecked"], json!([]));
    assert_eq!(report["not_found"], json!(["no-such-lease"]));
    let found: Vec<(&str, &str, usize, &str)> = report["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|f| {
            let facts = &f["facts"];
            (
                facts["component"].as_str().unwrap_or_default(),
                facts["namespace"].as_str().unwrap_or_default(),
                facts["pods"].as_array().map_or(0, Vec::len),
                f["verdict"]["health"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("forklift-controller", "migration", 1, "no_leader"),
            ("gone-operator-lock", "old", 0, "no_leader"),
        ]
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_bound_leases_wait_and_one_is_taken_for_each_that_goes() {
    use k8s_openapi::api::coordination::v1::Lease;
    let Some((_plane, admin, _)) = envtest::api_server(&["jobs"]).await else {
        return;
    };
    // Three elections whose leaders wrote their Leases once: nothing but discovery itself
    // asks about them again.
    let names = ["alpha", "bravo", "charlie"];
    let acquired = now_micro();
    for name in names {
        let pods = deployment_with_pods(&admin, "jobs", name, "5f6d7c8b9", &["x2x4q"]).await;
        let _: Lease = create(
            &admin,
            "jobs",
            json!({
                "metadata": {"name": name},
                "spec": {"holderIdentity": pods[0], "leaseDurationSeconds": 15,
                         "acquireTime": acquired, "renewTime": acquired}
            }),
        )
        .await;
    }
    let mut settings = Settings::with_defaults(DEFAULT_GRACE);
    settings.discover = true;
    settings.max_discovered = 1;
    let exporter = Exporter::start(&settings, admin.clone(), std::future::pending())
        .await
        .expect("exporter starts");
    let http = common::http();
    let judged = |s: &common::Scrape| -> Vec<&str> {
        names
            .into_iter()
            .filter(|n| {
                let labels = [("component", *n), ("discovered", "true")];
                s.value("kubevirt_leader_pods_ready", &labels).is_some()
            })
            .collect()
    };
    let refused =
        |s: &common::Scrape| s.value("kubevirt_leader_exporter_discovery_refused_total", &[]);
    let first = common::until(&http, exporter.addr, "one judged, two refused", |s| {
        judged(s).len() == 1 && refused(s) == Some(2.0)
    })
    .await;
    let taken = judged(&first)[0];

    // Its Lease goes: one of the two left out takes its place, and only one is asked.
    Api::<Lease>::namespaced(admin.clone(), "jobs")
        .delete(taken, &Default::default())
        .await
        .expect("delete the Lease");
    common::until(&http, exporter.addr, "another judged", |s| {
        let now = judged(s);
        now.len() == 1 && now[0] != taken
    })
    .await;
    // Past the second for which a rendering is served again: the count as it stands.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = common::scrape(&http, exporter.addr).await;
    assert_eq!(refused(&after), Some(2.0), "{}", after.0);
    assert_eq!(judged(&after).len(), 1, "{}", after.0);
}
