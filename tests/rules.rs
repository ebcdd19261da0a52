//! The alert rules: promtool's unit tests (the real Prometheus rule engine) and the promise
//! that the PrometheusRule and the plain rule file carry the same groups.

use std::{path::Path, process::Command};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool must be installed (Debian package `prometheus`)")
}

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo(path)).expect("read");
    serde_saphyr::from_str(&text).expect("valid YAML")
}

#[test]
fn rule_file_is_valid() {
    let out = promtool(&["check", "rules", "deploy/rules/kubevirt-leader.rules.yml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every promtool test file in tests/rules/, so that a new one cannot be forgotten.
fn promtool_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo("tests/rules"))
        .expect("tests/rules")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".test.yml"))
        .map(|name| format!("tests/rules/{name}"))
        .collect();
    files.sort();
    files
}

#[test]
fn promtool_unit_tests_pass() {
    let files = promtool_test_files();
    for expected in [
        "tests/rules/kubevirt-leader.test.yml",
        "tests/rules/no-leading-component.test.yml",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not in {files:?}"
        );
    }
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("SUCCESS").count(), files.len(), "{text}");
}

#[test]
fn prometheus_rule_and_rule_file_do_not_drift() {
    let plain = yaml("deploy/rules/kubevirt-leader.rules.yml");
    let operator = yaml("deploy/prometheus-operator/prometheusrule.yaml");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert!(plain["groups"].as_array().is_some_and(|g| !g.is_empty()));
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "deploy/prometheus-operator/prometheusrule.yaml and deploy/rules/kubevirt-leader.rules.yml differ: change both"
    );
}

#[test]
fn leader_alerts_name_their_runbook_and_labels() {
    let plain = yaml("deploy/rules/kubevirt-leader.rules.yml");
    let rules: Vec<&serde_json::Value> = plain["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    for (alert, component) in [
        ("NoLeadingVirtOperator", "virt-operator"),
        ("NoLeadingVirtController", "virt-controller"),
    ] {
        let rule = rules.iter().find(|r| r["alert"] == alert).expect(alert);
        assert_eq!(rule["for"], "10m");
        let expr = rule["expr"].as_str().expect("expr");
        assert!(
            expr.contains(&format!(
                "kubevirt_leader_present{{component=\"{component}\"}}"
            )),
            "{expr}"
        );
        assert_eq!(rule["labels"]["severity"], "critical");
        assert_eq!(rule["labels"]["operator_health_impact"], "critical");
        // KubeVirt ships alerts of the same names: ours say where they come from, and point
        // at our own runbook first.
        assert_eq!(rule["labels"]["source"], "kubevirt-leader-exporter");
        assert_eq!(
            rule["annotations"]["runbook_url"].as_str(),
            Some(format!("{RUNBOOKS}/{alert}.md").as_str())
        );
        assert_eq!(
            rule["annotations"]["kubevirt_runbook_url"].as_str(),
            Some(format!("https://kubevirt.io/monitoring/runbooks/{alert}").as_str())
        );
    }
    // The generic alert covers every other component, virt-synchronization-controller, the
    // stack's and the control plane's included, grouped by component as well.
    let generic = rules
        .iter()
        .find(|r| r["alert"] == "NoLeadingComponent")
        .expect("NoLeadingComponent");
    assert_eq!(generic["for"], "10m");
    let expr = generic["expr"].as_str().expect("expr");
    for part in [
        "max by (cluster, namespace, component) (kubevirt_leader_present{component!~\"virt-operator|virt-controller\"}) == 0",
        "and on (cluster, namespace, component)",
        "max by (cluster, namespace, component) (kubevirt_leader_pods_ready{component!~\"virt-operator|virt-controller\"}) > 0",
    ] {
        assert!(expr.contains(part), "{part} not in {expr}");
    }
    assert_eq!(generic["labels"]["severity"], "critical");
    assert_eq!(
        generic["annotations"]["runbook_url"].as_str(),
        Some(format!("{RUNBOOKS}/NoLeadingComponent.md").as_str())
    );
    for annotation in ["summary", "description"] {
        let text = generic["annotations"][annotation]
            .as_str()
            .expect(annotation);
        assert!(
            text.contains("{{ $labels.component }}"),
            "{annotation}: {text}"
        );
    }
    assert!(
        generic["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("{{ $labels.namespace }}"))
    );
    let every_alert_says_its_source = rules
        .iter()
        .all(|r| r["labels"]["source"] == "kubevirt-leader-exporter");
    assert!(every_alert_says_its_source);
}

/// Where the project's runbooks are published, one per alert; docs/examples/runbook-url shows
/// how to change them.
const RUNBOOKS: &str =
    "https://github.com/kubevirt-leader-exporter/kubevirt-leader-exporter/blob/main/docs/runbooks";

/// The example inhibition is a valid Alertmanager configuration.
#[test]
fn alertmanager_example_is_valid() {
    let out = Command::new("amtool")
        .args([
            "check-config",
            "deploy/alertmanager/kubevirt-leader-inhibit.yml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("amtool must be installed (Debian package `prometheus-alertmanager`)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
