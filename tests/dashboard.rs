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
