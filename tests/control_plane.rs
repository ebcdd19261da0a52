//! The exporter against a real kube-apiserver and etcd (envtest-style assets from
//! `KUBEBUILDER_ASSETS`). The exporter binary runs as an unprivileged user bound to exactly the
//! ClusterRole shipped in deploy/, and every assertion reads `/metrics` over HTTP.

mod common;
mod envtest;

use std::time::Duration;

use common::{Scrape, scrape, until};
use envtest::{ADMIN_TOKEN, Cluster, ControlPlane, EXPORTER_TOKEN, ExporterProcess, assets};

/// Short leases keep the tests quick; KubeVirt's own are 15 s. The exporter runs with a 2 s
/// grace.
const LEASE_SECONDS: i32 = 5;
const LIMIT_SECONDS: f64 = 7.0;
const A: &str = "virt-operator-a";
const B: &str = "virt-operator-b";

struct Setup {
    plane: ControlPlane,
    cluster: Cluster,
    http: reqwest::Client,
}

async fn setup() -> Option<Setup> {
    let assets = assets()?;
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    Some(Setup {
        plane,
        cluster: Cluster { client: admin },
        http: common::http(),
    })
}

impl Setup {
    fn exporter(&self, extra: &[&str]) -> ExporterProcess {
        let args: Vec<&str> = ["--lease-grace=2s"].iter().chain(extra).copied().collect();
        ExporterProcess::start(&self.plane.kubeconfig_file(EXPORTER_TOKEN), &args)
    }

    /// Two Ready virt-operator pods in `ns`, `A` holding the lease.
    async fn kubevirt(&self, ns: &str) {
        self.cluster.namespace(ns).await;
        self.cluster.pod(ns, A, true).await;
        self.cluster.pod(ns, B, true).await;
        self.cluster.lease(ns, A, LEASE_SECONDS).await;
    }
}

fn op(s: &Scrape, name: &str, ns: &str) -> Option<f64> {
    s.operator(name, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_life_cycle_on_a_real_api_server() {
    let Some(t) = setup().await else { return };
    let exporter = t.exporter(&[]);
    let ns = "kubevirt";
    t.kubevirt(ns).await;

    // 1. A live leader.
    let mut renewer = t.cluster.renew_every_2s(ns, A);
    // The pod and lease watches are separate streams: wait for both to have caught up.
    let s = until(&t.http, exporter.addr, "leader present", |s| {
        op(s, "present", ns) == Some(1.0) && op(s, "pods_ready", ns) == Some(2.0)
    })
    .await;
    assert_eq!(op(&s, "holder_ready", ns), Some(1.0));
    assert_eq!(s.holder(ns).as_deref(), Some(A));

    // 2. The leader hangs: not before duration + grace, then no leader. Every scrape until
    // the loss is judged by the exporter's own age of the lease in that same scrape: within
    // duration + grace, the leader is live. A run so slow that no scrape came within that
    // window has the leader renew once more and hang again, so that the claim is always
    // checked on a scrape that falls within it.
    let mut attempts = 0;
    let s = loop {
        renewer.abort();
        attempts += 1;
        let within = std::cell::Cell::new(0);
        let s = until(&t.http, exporter.addr, "leader lost", |s| {
            let present = op(s, "present", ns);
            if let Some(age) = op(s, "lease_age_seconds", ns)
                && age <= LIMIT_SECONDS
            {
                assert_eq!(
                    present,
                    Some(1.0),
                    "reported lost at lease age {age}, within duration + grace:\n{}",
                    s.0
                );
                within.set(within.get() + 1);
            }
            present == Some(0.0)
        })
        .await;
        if within.get() > 0 {
            break s;
        }
        assert!(
            attempts < 3,
            "no scrape within {LIMIT_SECONDS}s of the last renewal in {attempts} tries"
        );
        renewer = t.cluster.renew_every_2s(ns, A);
        until(&t.http, exporter.addr, "leader renewing again", |s| {
            op(s, "present", ns) == Some(1.0)
                && op(s, "lease_age_seconds", ns).is_some_and(|age| age <= LIMIT_SECONDS)
        })
        .await;
    };
    let age = op(&s, "lease_age_seconds", ns).expect("age");
    assert!(
        age > LIMIT_SECONDS,
        "lost at lease age {age}, before {LIMIT_SECONDS}"
    );
    assert_eq!(
        s.holder(ns).as_deref(),
        Some(A),
        "the dead leader's name stays in the lease"
    );

    // 3. The other pod takes the lease.
    let renewer = t.cluster.renew_every_2s(ns, B);
    let s = until(&t.http, exporter.addr, "new leader", |s| {
        op(s, "present", ns) == Some(1.0) && s.holder(ns).as_deref() == Some(B)
    })
    .await;
    assert_eq!(op(&s, "lease_transitions", ns), Some(1.0));
    let changes = exporter.log_lines(&["leader changed", "\"namespace\":\"kubevirt\"", B]);
    assert_eq!(changes.len(), 1, "{changes:?}");

    // 4. The holder stops being Ready, then its pod is deleted: it still leads while it
    // renews, and holder_ready tells the pod's side.
    t.cluster.set_ready(ns, B, false).await;
    let s = until(&t.http, exporter.addr, "holder not ready", |s| {
        op(s, "holder_ready", ns) == Some(0.0)
    })
    .await;
    assert_eq!(op(&s, "present", ns), Some(1.0));
    t.cluster.set_ready(ns, B, true).await;
    until(&t.http, exporter.addr, "holder ready again", |s| {
        op(s, "holder_ready", ns) == Some(1.0)
    })
    .await;
    t.cluster.delete_pod(ns, B).await;
    // A deleted pod may first show up terminating (not counted, not Ready), then gone.
    let s = until(&t.http, exporter.addr, "holder deleted", |s| {
        op(s, "pods", ns) == Some(1.0) && op(s, "holder_ready", ns).is_none()
    })
    .await;
    assert_eq!(op(&s, "present", ns), Some(1.0));
    renewer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_openshift_cnv_without_configuration_and_namespace_flag_restricts() {
    let Some(t) = setup().await else { return };
    t.kubevirt("kubevirt").await;
    t.kubevirt("openshift-cnv").await;
    let renewers = [
        t.cluster.renew_every_2s("kubevirt", A),
        t.cluster.renew_every_2s("openshift-cnv", A),
    ];
    let wide = t.exporter(&[]);
    let narrow = t.exporter(&["--namespace=kubevirt"]);
    until(&t.http, wide.addr, "both namespaces", |s| {
        op(s, "present", "kubevirt") == Some(1.0)
            && op(s, "present", "openshift-cnv") == Some(1.0)
            && op(s, "pods_ready", "openshift-cnv") == Some(2.0)
    })
    .await;
    let s = until(&t.http, narrow.addr, "kubevirt", |s| {
        op(s, "present", "kubevirt") == Some(1.0)
    })
    .await;
    assert!(!s.0.contains("openshift-cnv"), "{}", s.0);
    for r in renewers {
        r.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_and_compaction() {
    let Some(mut t) = setup().await else { return };
    let ns = "kubevirt";
    t.kubevirt(ns).await;
    let renewer = t.cluster.renew_every_2s(ns, A);
    let mut exporter = t.exporter(&[]);
    until(&t.http, exporter.addr, "leader present", |s| {
        op(s, "present", ns) == Some(1.0)
    })
    .await;

    // 6. kube-apiserver dies and comes back on the same etcd, while the leader keeps renewing
    // (its renewals fail while the API server is down). A scraper watches every 100 ms.
    let http = t.http.clone();
    let addr = exporter.addr;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        let (mut zeros, mut blind) = (Vec::new(), 0);
        while !*stopped.borrow_and_update() {
            let s = scrape(&http, addr).await;
            match op(&s, "present", ns) {
                Some(0.0) => zeros.push(s.0),
                None => blind += 1,
                _ => {}
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), stopped.changed()).await;
        }
        (zeros, blind)
    });
    t.plane.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.plane.start_apiserver().await;
    until(&t.http, exporter.addr, "watches healthy again", |s| {
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")],
        ) == Some(1.0)
            && s.value(
                "kubevirt_leader_exporter_watch_healthy",
                &[("resource", "pods")],
            ) == Some(1.0)
            && op(s, "present", ns) == Some(1.0)
    })
    .await;
    // Two more lease durations on the restarted server.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = stop.send(true);
    let (zeros, blind) = watcher.await.expect("scraper");
    assert!(
        zeros.is_empty(),
        "a scrape said no leader during the restart:\n{}",
        zeros[0]
    );
    assert!(
        blind > 0,
        "the exporter never went blind: the restart was not observed"
    );
    let s = scrape(&t.http, exporter.addr).await;
    assert_eq!(op(&s, "present", ns), Some(1.0));
    assert!(
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "leases")]
        ) >= Some(1.0)
    );
    assert!(
        exporter.process_alive(),
        "the exporter must ride out the restart"
    );

    // 7. The exporter misses changes (stopped), etcd compacts past its resource version, and
    // its watches drop: it must list again and match the store, deletions included.
    exporter.signal("STOP");
    t.cluster.delete_pod(ns, B).await;
    t.cluster.set_ready(ns, A, false).await;
    t.plane.compact_etcd().await;
    t.plane.kill_apiserver();
    t.plane.start_apiserver().await;
    exporter.signal("CONT");
    let s = until(&t.http, exporter.addr, "state after compaction", |s| {
        op(s, "pods", ns) == Some(1.0) && op(s, "pods_ready", ns) == Some(0.0)
    })
    .await;
    assert_eq!(op(&s, "holder_ready", ns), Some(0.0));
    assert_eq!(op(&s, "present", ns), Some(1.0));
    renewer.abort();
}

#[test]
fn versions_are_read_as_kube_apiserver_prints_them() {
    use envtest::parse_version;
    assert_eq!(parse_version("Kubernetes v1.20.2\n"), Some((1, 20)));
    assert_eq!(parse_version("Kubernetes v1.31.0-rc.1"), Some((1, 31)));
    assert_eq!(parse_version("Kubernetes v1.24+"), Some((1, 24)));
    assert_eq!(parse_version("nonsense"), None);
}

/// kube-apiserver 1.24 and later (what `setup-envtest use` fetches) refuse `--insecure-port`:
/// a stand-in that reports such a version and refuses the flag as they do, then runs the
/// real server, must still come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_api_server_is_started_without_the_flags_it_refuses() {
    let Some(assets) = assets() else { return };
    let newer = common::temp_dir("newer-apiserver");
    for tool in ["etcd", "kubectl", "leader-elector"] {
        let from = assets.join(tool);
        if from.exists() {
            std::os::unix::fs::symlink(&from, newer.join(tool)).expect("link");
        }
    }
    let real = assets.join("kube-apiserver");
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = --version ] && {{ echo 'Kubernetes v1.31.0'; exit 0; }}\n\
         for arg; do case \"$arg\" in --insecure-port*) \
         echo \"Error: unknown flag: --insecure-port\" >&2; exit 1;; esac; done\n\
         exec {} \"$@\"\n",
        real.display()
    );
    let wrapper = newer.join("kube-apiserver");
    std::fs::write(&wrapper, script).expect("write");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    assert_eq!(envtest::apiserver_version(&wrapper), (1, 31));
    let plane = ControlPlane::start(&newer).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    // It stores and serves objects. (The namespace `default` is no proof: the API server
    // creates it a moment after it reports ready.)
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(admin);
    let namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "started-without-insecure-port" }
    }))
    .expect("namespace");
    namespaces
        .create(&kube::api::PostParams::default(), &namespace)
        .await
        .expect("the API server stores a namespace");
    let read = namespaces
        .get("started-without-insecure-port")
        .await
        .expect("the API server serves it");
    assert!(read.metadata.uid.is_some(), "{read:?}");
}
