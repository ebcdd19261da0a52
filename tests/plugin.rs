//! The kubectl plugin as people run it: a real `kubectl` finds `kubectl-kubevirt_leader` on
//! the PATH and hands it the command line (`kubectl kubevirt-leader ...`), with the user's
//! kubeconfig from KUBECONFIG, against a real kube-apiserver. `status` through a port-forward
//! needs a kubelet: tests/node.rs runs it on a real node.

mod common;
mod envtest;

use std::{path::Path, process::Command};

use envtest::{ADMIN_TOKEN, ControlPlane, elector_assets};
use serde_json::Value;

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";

/// `kubectl` with the plugin's folder first on the PATH, as the user with `kubeconfig`.
fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> std::process::Output {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"));
    let dir = plugin.parent().expect("the plugin's folder");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("kubectl");
    command.args(args).env("PATH", path);
    match kubeconfig {
        Some(file) => command.env("KUBECONFIG", file),
        None => command.env_remove("KUBECONFIG"),
    };
    command.output().expect("kubectl must be installed")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn kubectl_finds_the_plugin_and_it_says_what_it_is() {
    let list = kubectl(None, &["plugin", "list"]);
    assert!(
        text(&list).contains("kubectl-kubevirt_leader"),
        "{}",
        text(&list)
    );
    let help = kubectl(None, &["kubevirt-leader", "--help"]);
    assert!(help.status.success(), "{}", text(&help));
    let help = text(&help);
    for command in ["diagnose", "status", "version"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(help.contains("Usage: kubectl kubevirt-leader"), "{help}");
    let version = kubectl(None, &["kubevirt-leader", "version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kubectl-kubevirt_leader {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_exporter_has_no_diagnose_and_names_the_plugin() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubevirt-leader-exporter"))
        .args(["diagnose", "--component=virt-operator"])
        .output()
        .expect("run the exporter");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("kubectl kubevirt-leader diagnose"),
        "{}",
        text(&out)
    );
    let help = Command::new(env!("CARGO_BIN_EXE_kubevirt-leader-exporter"))
        .arg("--help")
        .output()
        .expect("run the exporter");
    assert!(!text(&help).contains("diagnose"), "{}", text(&help));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_kubevirt_leader_diagnose_judges_a_real_leader_with_the_users_kubeconfig() {
    let Some(assets) = elector_assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let cluster = plane.kubevirt(NS, &[A]).await;
    let elector = plane.elector(NS, "virt-operator", A, &[]);
    elector.until_leading().await;
    let kubeconfig = plane.kubeconfig_file(ADMIN_TOKEN);
    let out = kubectl(
        Some(&kubeconfig),
        &[
            "kubevirt-leader",
            "diagnose",
            "--component=virt-operator",
            "--observe=3s",
            "--output=json",
        ],
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let finding = &report["components"][0];
    assert_eq!(finding["facts"]["component"], "virt-operator", "{report:#}");
    assert_eq!(finding["verdict"]["health"], "leader", "{report:#}");

    // `status` finds no exporter here, and says where it looked.
    let out = kubectl(Some(&kubeconfig), &["kubevirt-leader", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no running exporter pod in namespace kubevirt-leader-exporter"),
        "{}",
        text(&out)
    );
    drop(cluster);
}
