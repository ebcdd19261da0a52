//! kubectl's own flags, against two real kube-apiservers: the plugin reaches the cluster
//! kubectl would reach with the same flags and environment, and the exporter's environment
//! variables change nothing.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/envtest/mod.rs"]
mod envtest;

use std::{path::Path, process::Command};

use envtest::{ADMIN_TOKEN, ControlPlane, elector_assets};
use serde_json::{Value, json};

/// Cluster `a` runs KubeVirt upstream's way, in `kubevirt`; cluster `b` as OpenShift does,
/// in `openshift-cnv`. Each leader's name says its cluster.
const A: (&str, &str) = ("kubevirt", "virt-operator-on-a");
const B: (&str, &str) = ("openshift-cnv", "virt-operator-on-b");

async fn cluster_with_leader(plane: &ControlPlane, (ns, pod): (&str, &str)) {
    let cluster = plane.kubevirt(ns, &[pod]).await;
    cluster.lease(ns, pod, 15).await;
}

/// One kubeconfig entry of each kind for `plane`, named `name`.
fn entries(plane: &ControlPlane, name: &str) -> (Value, Value, Value) {
    let yaml = plane.kubeconfig_yaml(ADMIN_TOKEN);
    let config: Value = serde_saphyr::from_str(&yaml).expect("a kubeconfig");
    let cluster = json!({"name": name, "cluster": config["clusters"][0]["cluster"]});
    let user = json!({"name": name, "user": config["users"][0]["user"]});
    let context = json!({"name": name, "context": {"cluster": name, "user": name}});
    (cluster, user, context)
}

fn kubeconfig(path: &Path, current: &str, entries: &[(Value, Value, Value)]) {
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        "users": entries.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
        "contexts": entries.iter().map(|e| e.2.clone()).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_string(&config).expect("JSON")).expect("write");
}

/// `diagnose` of virt-operator, judged by the API server's clock: (exit status, the
/// namespace and the holder it found, or `None` when it found none).
fn diagnose(env: &[(&str, String)], args: &[&str]) -> (i32, Option<(String, String)>) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
        .env_clear()
        .env("HOME", "/nonexistent")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .args(args)
        .args([
            "diagnose",
            "--component=virt-operator",
            "--observe=0s",
            "--output=json",
        ])
        .output()
        .expect("run the plugin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().expect("exit status");
    let Ok(report) = serde_json::from_slice::<Value>(&out.stdout) else {
        panic!("{args:?}: no report (exit {code}): {stderr}");
    };
    let found = report["components"]
        .as_array()
        .and_then(|c| c.first())
        .map(|f| {
            let facts = &f["facts"];
            (
                facts["namespace"].as_str().unwrap_or_default().to_owned(),
                facts["lease"]["value"]["holder"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        });
    (code, found)
}

fn found((ns, pod): (&str, &str)) -> Option<(String, String)> {
    Some((ns.to_owned(), pod.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_flags_reach_the_cluster_kubectl_would() {
    let Some(assets) = elector_assets() else {
        return;
    };
    let (a, b) = tokio::join!(ControlPlane::start(&assets), ControlPlane::start(&assets));
    tokio::join!(cluster_with_leader(&a, A), cluster_with_leader(&b, B));
    let dir = common::temp_dir("kubeconfig-flags");
    let both = dir.join("both");
    kubeconfig(&both, "a", &[entries(&a, "a"), entries(&b, "b")]);
    let flag = format!("--kubeconfig={}", both.display());
    let none: &[(&str, String)] = &[];

    // The current context, then the one asked for.
    assert_eq!(diagnose(none, &[&flag]), (0, found(A)));
    assert_eq!(diagnose(none, &[&flag, "--context=b"]), (0, found(B)));
    // The context's cluster and user, each replaced.
    assert_eq!(
        diagnose(none, &[&flag, "--cluster=b", "--user=b"]),
        (0, found(B))
    );
    let unknown = Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
        .args([&flag, "--context=c", "diagnose"])
        .output()
        .expect("run the plugin");
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("failed to load current context: c"),
        "{stderr}"
    );

    // KUBECONFIG with one file per cluster, merged: the first file's current context wins.
    let (file_a, file_b) = (dir.join("a"), dir.join("b"));
    kubeconfig(&file_a, "a", &[entries(&a, "a")]);
    kubeconfig(&file_b, "b", &[entries(&b, "b")]);
    let merged = [(
        "KUBECONFIG",
        format!("{}:{}", file_b.display(), file_a.display()),
    )];
    assert_eq!(diagnose(&merged, &[]), (0, found(B)));
    assert_eq!(diagnose(&merged, &["--context=a"]), (0, found(A)));
    // --kubeconfig alone, KUBECONFIG aside.
    let only_a = format!("--kubeconfig={}", file_a.display());
    assert_eq!(diagnose(&merged, &[&only_a]), (0, found(A)));

    // -n: where the component runs; elsewhere it is not found.
    assert_eq!(
        diagnose(none, &[&flag, "--context=b", "-n", "openshift-cnv"]),
        (0, found(B))
    );
    assert_eq!(
        diagnose(none, &[&flag, "--context=b", "--namespace=kubevirt"]),
        (2, None)
    );

    // The exporter's variables, each of which would change what the exporter looks at.
    let exporters = [
        (
            "KUBEVIRT_LEADER_EXPORTER_KUBECONFIG",
            "/nonexistent".to_owned(),
        ),
        ("KUBEVIRT_LEADER_EXPORTER_NAMESPACES", "kubevirt".to_owned()),
        (
            "KUBEVIRT_LEADER_EXPORTER_PRESETS",
            "control-plane".to_owned(),
        ),
        ("KUBEVIRT_LEADER_EXPORTER_CONFIG", "/nonexistent".to_owned()),
        ("KUBECONFIG", file_b.display().to_string()),
    ];
    assert_eq!(diagnose(&exporters, &[]), (0, found(B)));

    // A limit on each request, as kubectl's: a bare number is seconds.
    assert_eq!(
        diagnose(none, &[&flag, "--request-timeout=30"]),
        (0, found(A))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_version_is_a_flag_as_for_kubectl_plugins() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"))
        .arg("--version")
        .output()
        .expect("run the plugin");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("kubectl kubevirt-leader {}", env!("CARGO_PKG_VERSION"))
    );
}
