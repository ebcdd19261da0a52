//! The Grafana dashboard: valid JSON, PromQL that parses, and only series the exporter
//! really serves.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/kubevirt-leader-dashboard.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("valid JSON")
}

/// Every query of every panel, with Grafana's variables replaced by what they stand for.
fn exprs(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("expr")
                .replace("$namespace", ".*")
                .replace("$component", ".*")
        })
        .collect()
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("kubevirt_leader_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn queries_parse_as_promql() {
    let rules: String = exprs(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: '{}'\n",
                e.replace('\'', "''")
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("kle-dashboard-{}.rules.yml", std::process::id()));
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool must be installed (Debian package `prometheus`)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn queries_use_only_series_the_exporter_serves() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let scrape = bed.until("leader present", |s| s.settled(NS)).await;
    let served = metric_names(&scrape.0);
    let d = dashboard();
    let used = metric_names(&exprs(&d).join("\n"));
    let used_by_variables = metric_names(&d["templating"].to_string());
    assert!(used.len() >= 9, "{used:?}");
    for name in [
        "kubevirt_leader_holder_ready",
        "kubevirt_leader_lease_renewal_interval_seconds_bucket",
        "kubevirt_leader_changes_total",
        "kubevirt_leader_holder_since_seconds",
    ] {
        assert!(used.contains(name), "{name} not in {used:?}");
    }
    for name in used.iter().chain(&used_by_variables) {
        assert!(
            served.contains(name),
            "the dashboard queries {name}, which the exporter does not serve"
        );
    }
}

/// The dashboard shows every component the exporter serves (the stack's and the control
/// plane's as well as KubeVirt's): components are chosen by the `component` variable, which
/// lists whatever the exporter serves and defaults to all of them, and no panel names a
/// component of its own.
#[test]
fn dashboard_is_not_limited_to_kubevirts_components() {
    let d = dashboard();
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let component = variables
        .iter()
        .find(|v| v["name"] == "component")
        .expect("a `component` variable");
    assert_eq!(component["type"], "query");
    assert_eq!(component["multi"], true);
    assert_eq!(component["includeAll"], true);
    assert_eq!(component["current"]["value"], "$__all");
    // Filled from what the exporter serves, not a fixed list; no regex narrows it.
    let definition = component["definition"].as_str().expect("definition");
    assert!(
        definition.starts_with("label_values(kubevirt_leader_")
            && definition.ends_with(", component)"),
        "{definition}"
    );
    assert_eq!(component["regex"], "");
    assert!(
        component
            .get("options")
            .is_none_or(|o| o.as_array().is_none_or(Vec::is_empty))
    );

    let mut queries = 0;
    for panel in d["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("");
        assert!(
            panel.get("repeat").is_none() || panel["repeat"] == "component",
            "{title} repeats over something else"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            queries += 1;
            // No hard-coded component: either the variable or no component matcher at all.
            for (i, _) in expr.match_indices("component") {
                let rest = expr[i + "component".len()..].trim_start();
                if let Some(op) = ["=~", "!~", "!=", "="]
                    .iter()
                    .find(|op| rest.starts_with(**op))
                {
                    let value = rest[op.len()..].trim_start();
                    assert!(
                        *op == "=~" && value.starts_with("\"$component\""),
                        "{title}: `{expr}` matches the component other than by $component"
                    );
                }
            }
            for name in [
                "virt-operator",
                "virt-controller",
                "virt-synchronization-controller",
            ] {
                assert!(!expr.contains(name), "{title}: `{expr}` names {name}");
            }
            // Series that name a component are kept apart by it.
            if expr.contains("kubevirt_leader_") && !expr.contains("kubevirt_leader_exporter_") {
                assert!(
                    expr.contains("component=~\"$component\""),
                    "{title}: {expr}"
                );
                let legend = target["legendFormat"].as_str().unwrap_or("");
                assert!(legend.contains("{{component}}"), "{title}: {legend}");
            }
        }
    }
    assert!(queries >= 9, "only {queries} queries");
}
