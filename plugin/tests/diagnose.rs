//! `diagnose` against a real kube-apiserver (and a real client-go elector): each case asserts
//! the verdict and the exit status, reading the JSON report of the binary.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/envtest/mod.rs"]
mod envtest;

use std::{path::Path, process::Command};

use envtest::{ADMIN_TOKEN, Cluster, ControlPlane, SUPPORT_TOKEN, SUPPORT_USER, elector_assets};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::api::{
    admissionregistration::v1::ValidatingWebhookConfiguration,
    core::v1::{Pod, PodSpec, Secret},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";
const B: &str = "virt-operator-6f7d9c5b8-x9y8z";

struct Bed {
    plane: ControlPlane,
    cluster: Cluster,
}

async fn setup() -> Option<Bed> {
    let assets = elector_assets()?;
    let plane = ControlPlane::start(&assets).await;
    let cluster = plane.kubevirt(NS, &[A, B]).await;
    Some(Bed { plane, cluster })
}

impl Bed {
    /// Runs the binary as the cluster's admin.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
            .arg(format!(
                "--kubeconfig={}",
                self.plane.kubeconfig_file(ADMIN_TOKEN).display()
            ))
            .args(args)
            .output()
            .expect("run diagnose")
    }

    /// Runs `diagnose` for virt-operator as the user with `token`; (exit status, report).
    fn diagnose(&self, token: &str, observe: &str, more: &[&str]) -> (i32, Value) {
        self.diagnose_with(&self.plane.kubeconfig_file(token), observe, more)
    }

    fn diagnose_with(&self, kubeconfig: &Path, observe: &str, more: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["diagnose", "--component=virt-operator", "--output=json"])
            .arg(format!("--observe={observe}"))
            .args(more)
            .output()
            .expect("run diagnose");
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().expect("exit status"), report)
    }
}

/// A webhook configuration on lease updates; its service need not exist.
async fn lease_webhook(cluster: &Cluster) {
    let webhook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "lease-policy"},
        "webhooks": [{
            "name": "leases.policy.example.com",
            "clientConfig": {"url": "https://policy.example.com/validate"},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                       "resources": ["leases"], "operations": ["UPDATE"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Ignore",
        }]
    }))
    .expect("webhook");
    Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone())
        .create(&PostParams::default(), &webhook)
        .await
        .expect("create webhook");
}

fn verdict(report: &Value) -> &Value {
    &report["components"][0]["verdict"]
}

fn findings(report: &Value) -> Vec<String> {
    verdict(report)["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_without_kubevirt_crd() {
    let Some(t) = setup().await else { return };
    let a = t.plane.elector(NS, "virt-operator", A, &[]);
    a.until_leading().await;
    let (code, report) = t.diagnose(ADMIN_TOKEN, "5s", &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(verdict(&report)["health"], "leader");
    assert_eq!(
        findings(&report)[0],
        format!("leader present: {A} renews the lease")
    );
    // No KubeVirt CRD in this cluster: found by the pods' label all the same.
    assert_eq!(report["kubevirt_namespaces"]["outcome"], "found");
    assert_eq!(report["components"][0]["facts"]["namespace"], NS);

    let text = t.run(&["diagnose", "--component=virt-operator", "--observe=0s"]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with("virt-operator in kubevirt: LEADER\n"),
        "{text}"
    );
    assert!(text.contains("by the API server's clock"), "{text}");
    // Nothing of a component that is not installed: it cannot tell.
    let none = t.run(&["diagnose", "--component=virt-synchronization-controller"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stdout).contains("not found in any namespace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_a_webhook_and_an_oom_killed_pod() {
    let Some(t) = setup().await else { return };
    // A real leader dies and its pod is gone: its name stays in the lease, which nobody
    // renews. Short timings, so that a short watch is long enough to tell.
    let a = t.plane.elector(
        NS,
        "virt-operator",
        A,
        &[
            "--lease-duration=3s",
            "--renew-deadline=2s",
            "--retry-period=500ms",
        ],
    );
    a.until_leading().await;
    a.signal("KILL");
    t.cluster.delete_pod(NS, A).await;
    lease_webhook(&t.cluster).await;
    let status = json!({"status": {"containerStatuses": [{
        "name": "main", "image": "registry.example/leader:latest", "imageID": "",
        "ready": true, "restartCount": 3,
        "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }]}});
    Api::<Pod>::namespaced(t.cluster.client.clone(), NS)
        .patch_status(B, &PatchParams::default(), &Patch::Merge(status))
        .await
        .expect("patch status");

    // B is bound to a node that has no kubelet: its log cannot be fetched.
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": B}, "target": {"kind": "Node", "name": "node-without-kubelet"}});
    let request = http::Request::post(format!("/api/v1/namespaces/{NS}/pods/{B}/binding"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).expect("JSON"))
        .expect("request");
    t.cluster
        .client
        .request_text(request)
        .await
        .expect("bind pod");

    let (code, report) = t.diagnose(ADMIN_TOKEN, "4s", &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(verdict(&report)["health"], "no_leader");
    let said = findings(&report);
    let has = |what: &str| said.iter().any(|f| f.contains(what));
    assert!(
        has(&format!(
            "{A}, which is not a running pod: the lease is stale"
        )),
        "{said:?}"
    );
    assert!(
        has("webhook leases.policy.example.com (lease-policy) intercepts lease updates"),
        "{said:?}"
    );
    assert!(
        has(&format!(
            "{B} restarted 3 times, last OOMKilled (exit code 137)"
        )),
        "{said:?}"
    );
    // The pods run as the namespace's default service account, which has no rights on
    // leases here.
    assert!(
        has("the service account default may not update leases"),
        "{said:?}"
    );
    // Without kubelets there are no logs: said as such, not as an error.
    let logs = &report["components"][0]["facts"]["logs"];
    assert_eq!(logs[0]["pod"], B, "{logs:#}");
    assert_eq!(logs[0]["lines"]["outcome"], "unavailable", "{logs:#}");
}

#[tokio::test]
async fn log_lines_about_the_lease_are_read_and_a_rejection_is_named() {
    use kubevirt_leader_sim::{SimServer, Store, kubeconfig_for, lease, pod};
    let store = Store::default();
    for name in [A, B] {
        let mut pod = pod(NS, name, &[("kubevirt.io", "virt-operator")], true);
        pod.spec = Some(PodSpec {
            node_name: Some("node-1".into()),
            ..Default::default()
        });
        store.apply(pod);
    }
    store.apply(lease(NS, "virt-operator", A, 2));
    store.set_log(
        NS,
        A,
        "I1127 reconciling\nE1127 error retrieving resource lock kubevirt/virt-operator: \
         leases.coordination.k8s.io \"virt-operator\" is forbidden: User cannot update\nI1127 done\n",
    );
    store.set_log(
        NS,
        B,
        "I1127 attempting to acquire leader lease kubevirt/virt-operator...\n",
    );
    let sim = SimServer::start(store).await.expect("sim");
    let kubeconfig = common::temp_dir("diagnose-logs").join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::to_string(&kubeconfig_for(&sim.url())).expect("JSON"),
    )
    .expect("write");
    // The simulated server runs on this test's runtime: wait for the child without blocking it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "diagnose",
            "--component=virt-operator",
            "--output=json",
            "--observe=2s",
        ])
        .output()
        .await
        .expect("run diagnose");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let logs = &report["components"][0]["facts"]["logs"];
    assert_eq!(logs[0]["pod"], A);
    assert_eq!(
        logs[0]["lines"]["value"].as_array().map(Vec::len),
        Some(1),
        "{logs:#}"
    );
    assert_eq!(
        logs[1]["lines"]["value"][0],
        "I1127 attempting to acquire leader lease kubevirt/virt-operator..."
    );
    let said = findings(&report);
    assert!(
        said.iter()
            .any(|f| f.starts_with(&format!("{A} logs: E1127 error retrieving resource lock"))),
        "{said:?}"
    );
    // B tries to acquire: not "nobody tries".
    assert!(
        !said.iter().any(|f| f.starts_with("nobody renews")),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_rights_for_reviews_still_gets_an_answer() {
    let Some(t) = setup().await else { return };
    let a = t.plane.elector(NS, "virt-operator", A, &[]);
    a.until_leading().await;
    // A user who may read pods and leases, nothing else.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "pods-and-leases-reader"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "list", "watch"]}
        ]
    }))
    .expect("ClusterRole");
    envtest::grant_cluster_role(&t.cluster.client, &role, "pods-and-leases-reader", "reader").await;
    let (code, report) = t.diagnose_with(&t.plane.kubeconfig_file_as("reader"), "5s", &[]);
    assert_eq!(code, 0, "{report:#}");
    let unchecked: Vec<&str> = verdict(&report)["unchecked"]
        .as_array()
        .expect("unchecked")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        unchecked.iter().any(|u| u.contains("SubjectAccessReview")),
        "{unchecked:?}"
    );
    assert!(
        unchecked.iter().any(|u| u.contains("webhook")),
        "{unchecked:?}"
    );
    assert_eq!(report["kubevirt_namespaces"]["outcome"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_holds_what_was_gathered_and_no_secret() {
    let Some(t) = setup().await else { return };
    let a = t.plane.elector(NS, "virt-operator", A, &[]);
    a.until_leading().await;
    lease_webhook(&t.cluster).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "kubevirt-operator-certs"},
        "stringData": {"tls.key": "do-not-leak-this-key"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(t.cluster.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let dir = common::temp_dir("diagnose-bundle").join("bundle");
    let bundle = format!("--bundle={}", dir.display());

    let (code, report) = t.diagnose(SUPPORT_TOKEN, "3s", &[&bundle]);
    assert_eq!(code, 0, "{report:#}");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let yaml = |name: &str| -> Value {
        serde_saphyr::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let base = "kubevirt/virt-operator";
    let pods = yaml(&format!("{base}/pods.yaml"));
    assert_eq!(pods["kind"], "List");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, [A, B]);
    assert!(pods["items"][0]["metadata"].get("managedFields").is_none());
    let lease = yaml(&format!("{base}/lease.yaml"));
    assert_eq!(lease["spec"]["holderIdentity"], A);
    let webhooks = yaml(&format!("{base}/webhooks.yaml"));
    assert_eq!(webhooks["items"][0]["metadata"]["name"], "lease-policy");
    assert_eq!(yaml(&format!("{base}/events.yaml"))["kind"], "List");
    assert!(read(&format!("{base}/logs/{A}.log")).starts_with("# no log available"));
    let saved: Value = serde_json::from_str(&read("report.json")).expect("report.json");
    assert_eq!(verdict(&saved)["health"], "leader");
    assert!(read("version.txt").contains("kube-apiserver v1."));
    assert!(read("report.txt").starts_with("virt-operator in kubevirt: LEADER"));

    // The README lists every file, and every file it lists is there.
    let mut on_disk = Vec::new();
    common::walk(&dir, &mut on_disk);
    let readme = read("README.txt");
    let listed: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "Files:")
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .collect();
    let mut on_disk: Vec<String> = on_disk
        .iter()
        .map(|p| p.strip_prefix(&dir).expect("inside").display().to_string())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = listed.into_iter().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "{readme}");
    for file in &on_disk {
        assert!(!read(file).contains("do-not-leak-this-key"), "{file}");
    }

    // The audit log: the person running diagnose read pods, and never a Secret.
    let mine = |e: &Value| e["user"]["username"] == SUPPORT_USER;
    let audit = t.plane.audit_events();
    let resources: Vec<&str> = audit
        .iter()
        .filter(|e| mine(e))
        .filter_map(|e| e["objectRef"]["resource"].as_str())
        .collect();
    assert!(resources.contains(&"pods"), "{resources:?}");
    assert!(!resources.contains(&"secrets"), "{resources:?}");

    // A second bundle into the same directory is refused before anything else: even before
    // the kubeconfig is read.
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
        .args(["--kubeconfig=/nonexistent/kubeconfig", "diagnose", &bundle])
        .output()
        .expect("run diagnose");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not an empty directory"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electors_whose_rights_on_leases_were_removed() {
    let Some(t) = setup().await else { return };
    // The elector runs as the pods' service account, bound to the leader-election Role.
    let account = format!("system:serviceaccount:{NS}:default");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "operator-leases"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}],
    }))
    .expect("binding");
    let bindings = Api::<RoleBinding>::namespaced(t.cluster.client.clone(), NS);
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let a = t.plane.elector_with(
        &t.plane.kubeconfig_file_as(&account),
        NS,
        "virt-operator",
        A,
        &[],
    );
    a.until_leading().await;
    let (code, report) = t.diagnose(ADMIN_TOKEN, "3s", &[]);
    assert_eq!(code, 0, "{report:#}");

    bindings
        .delete("operator-leases", &Default::default())
        .await
        .expect("delete binding");
    // Watch one lease duration and a little: the leader can no longer renew.
    let (code, report) = t.diagnose(ADMIN_TOKEN, "17s", &[]);
    assert_eq!(code, 1, "{report:#}");
    let said = findings(&report);
    assert!(
        said.iter()
            .any(|f| f == "the service account default may not update leases"),
        "{said:?}"
    );
    assert!(
        verdict(&report)["next_step"]
            .as_str()
            .is_some_and(|s| s.starts_with("Restore the service account's rights")),
        "{report:#}"
    );
}

/// Every look-up outcome in the report that is not `found`, with where it is.
fn not_found(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(outcome) = map.get("outcome").and_then(Value::as_str)
                && outcome != "found"
            {
                out.push(format!("{at}: {outcome}"));
            }
            for (key, inner) in map {
                not_found(inner, &format!("{at}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                not_found(inner, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_diagnose_role_is_enough() {
    let Some(t) = setup().await else { return };
    let a = t.plane.elector(NS, "virt-operator", A, &[]);
    a.until_leading().await;
    let on_call = t.plane.on_call(&t.cluster.client).await;

    let (code, report) = t.diagnose_with(&on_call, "3s", &[]);
    assert_eq!(code, 0, "{report:#}");
    let mut missing = Vec::new();
    // Logs are not asked for: these pods run on no node.
    let mut checked = report.clone();
    checked["components"][0]["facts"]["logs"] = Value::Null;
    not_found(&checked, "report", &mut missing);
    assert!(missing.is_empty(), "{missing:?}\n{report:#}");
    assert_eq!(verdict(&report)["unchecked"], json!([]));
    // Without the role the same person is told what could not be checked.
    Api::<ClusterRoleBinding>::all(t.cluster.client.clone())
        .delete("on-call-diagnose", &Default::default())
        .await
        .expect("delete binding");
    let (code, report) = t.diagnose_with(&on_call, "0s", &[]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["kubevirt_namespaces"]["outcome"], "forbidden");
    assert!(
        report["unchecked"][0].as_str().is_some_and(|u| u
            .starts_with("virt-operator's pods (kubevirt.io=virt-operator) could not be listed")),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubevirt_found_by_its_custom_resource() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let Some(t) = setup().await else { return };
    let a = t.plane.elector(NS, "virt-operator", A, &[]);
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "kubevirts.kubevirt.io"},
        "spec": {
            "group": "kubevirt.io", "scope": "Namespaced",
            "names": {"kind": "KubeVirt", "listKind": "KubeVirtList", "plural": "kubevirts", "singular": "kubevirt"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        }
    }))
    .expect("CRD");
    Api::<CustomResourceDefinition>::all(t.cluster.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    // KubeVirt installed in openshift-cnv, with its operator scaled to nothing.
    t.cluster.namespace("openshift-cnv").await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"));
    let kubevirts: Api<DynamicObject> =
        Api::namespaced_with(t.cluster.client.clone(), "openshift-cnv", &resource);
    let cr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": "kubevirt-kubevirt-hyperconverged"}, "spec": {},
    }))
    .expect("CR");
    let start = std::time::Instant::now();
    // The new kind is served a moment after the CRD is created.
    while let Err(error) = kubevirts.create(&PostParams::default(), &cr).await {
        assert!(start.elapsed().as_secs() < 30, "create KubeVirt: {error}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    a.until_leading().await;

    let (code, report) = t.diagnose(ADMIN_TOKEN, "3s", &[]);
    assert_eq!(
        report["kubevirt_namespaces"]["value"],
        json!(["openshift-cnv"])
    );
    assert_eq!(code, 1, "{report:#}");
    let by_namespace: Vec<(&str, &str)> = report["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter_map(|c| {
            Some((
                c["facts"]["namespace"].as_str()?,
                c["verdict"]["health"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        by_namespace,
        [("kubevirt", "leader"), ("openshift-cnv", "no_leader")]
    );
    let cnv = &report["components"][1]["verdict"]["findings"];
    assert_eq!(
        cnv[0],
        "the Lease virt-operator does not exist: no pod has ever acquired it here"
    );
    assert!(
        cnv.as_array()
            .expect("findings")
            .iter()
            .any(|f| f == "no pod of the component exists here"),
        "{cnv:#}"
    );
    // `--namespace` narrows it to one.
    let (code, report) = t.diagnose(ADMIN_TOKEN, "3s", &["--namespace=kubevirt"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["components"].as_array().map(Vec::len), Some(1));
}
