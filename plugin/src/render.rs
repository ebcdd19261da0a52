//! `status` for a terminal: the exporter's `/status.json`, read into the exporter's own
//! status types (so a renamed field breaks the build, not the table), as a table of leaders
//! and the latest events of each lease, and the exit status it means.

use std::fmt::Write as _;

use kubevirt_leader_exporter::status::{ComponentStatus, NamespaceStatus, State, Status};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error(
    "the exporter's /status.json (schema {schema}) is not what this plugin reads (schema \
     {ours}): {error}; `--output=json` shows it as it is"
)]
pub struct Unreadable {
    schema: String,
    ours: u32,
    error: serde_json::Error,
}

/// The exporter's answer, as the status types it was written from.
pub fn read(answer: &Value) -> Result<Status, Unreadable> {
    Status::deserialize(answer).map_err(|error| Unreadable {
        schema: answer["schema"].to_string(),
        ours: kubevirt_leader_exporter::status::SCHEMA_VERSION,
        error,
    })
}

/// 0 when every namespace of every component has a leader, 1 when one has none, 2 when the
/// exporter cannot tell for one (blind, checking, not ready) or found none at all. An
/// abandoned Lease has no leader for good and no pods that miss one: it counts for nothing.
pub fn exit_code(status: &Status) -> u8 {
    let states: Vec<State> = namespaces(status)
        .filter(|(component, _)| !component.abandoned())
        .map(|(_, ns)| ns.state)
        .collect();
    if states.contains(&State::NoLeader) {
        1
    } else if states.is_empty() || !status.ready || states.iter().any(|s| *s != State::Leader) {
        2
    } else {
        0
    }
}

/// Each (component, namespace) entry.
fn namespaces(status: &Status) -> impl Iterator<Item = (&ComponentStatus, &NamespaceStatus)> {
    status
        .components
        .iter()
        .flat_map(|c| c.namespaces.iter().map(move |n| (c, n)))
}

/// A table for a terminal, then the latest events of each lease.
pub fn render(pod: &str, status: &Status, events: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "exporter {pod} (version {}), {}, at {}",
        status.exporter_version,
        if status.ready {
            "ready"
        } else {
            "NOT READY: still listing"
        },
        status.generated_at,
    );
    // Only where something was discovered: the usual table stays as it always was.
    let discovered = status.components.iter().any(|c| c.discovered);
    let mut header = [
        "COMPONENT",
        "NAMESPACE",
        "STATE",
        "HOLDER",
        "HOLDER POD",
        "LEASE AGE",
        "STANDBYS",
    ]
    .map(str::to_owned)
    .to_vec();
    if discovered {
        header.push("WORKLOAD".into());
    }
    let mut rows = vec![header];
    for (component, ns) in namespaces(status) {
        rows.push(with_workload(
            Vec::from(row(component, ns)),
            component,
            discovered,
        ));
    }
    for component in &status.components {
        if component.found_in == Some(0) {
            let mut cells = vec!["-".to_owned(); 7];
            cells[0].clone_from(&component.component);
            cells[1] = "(none found)".into();
            rows.push(with_workload(cells, component, discovered));
        }
    }
    out.push_str(&table(&rows));
    for component in &status.components {
        let blind_to = match (component.pods_watch_healthy, component.leases_watch_healthy) {
            (false, _) => "pods",
            (true, false) => "leases",
            (true, true) => continue,
        };
        let _ = writeln!(
            out,
            "BLIND: the exporter cannot watch {blind_to} of {} ({}): what it shows is the story \
             so far",
            component.component, component.scope,
        );
    }
    for (component, ns) in namespaces(status) {
        recent_events(&mut out, component, ns, events);
    }
    out
}

fn row(component: &ComponentStatus, ns: &NamespaceStatus) -> [String; 7] {
    let state = match ns.state {
        State::Leader => "leader",
        State::NoLeader => "NO LEADER",
        State::Checking => "checking",
        State::Blind => "blind",
    };
    let holder_pod = match (ns.holder_ready, &ns.holder) {
        (Some(true), _) => "Ready",
        (Some(false), _) => "NOT Ready",
        (None, None) => "-",
        (None, Some(_)) => "no such pod",
    };
    let age = match &ns.lease {
        Some(lease) => match lease.limit_seconds {
            Some(limit) => format!("{:.1}s of {limit:.0}s", lease.age_seconds),
            None => format!("{:.1}s", lease.age_seconds),
        },
        None => "-".to_owned(),
    };
    let standbys = match ns.standbys {
        Some(0) => "none".to_owned(),
        Some(n) => n.to_string(),
        None => "-".to_owned(),
    };
    [
        component.component.clone(),
        ns.namespace.clone(),
        state.to_owned(),
        or_dash(ns.holder.as_deref()),
        holder_pod.to_owned(),
        age,
        standbys,
    ]
}

/// `cells` with the WORKLOAD column when the table has one: `kind/name` for a discovered
/// component (`kind/name in namespace` when its pods run apart from its Lease),
/// `abandoned` for one whose Lease's holder resolved to no workload.
fn with_workload(mut cells: Vec<String>, component: &ComponentStatus, column: bool) -> Vec<String> {
    if column {
        cells.push(match &component.workload {
            Some(workload) if workload.namespace != component.scope => format!(
                "{}/{} in {}",
                workload.kind, workload.name, workload.namespace
            ),
            Some(workload) => format!("{}/{}", workload.kind, workload.name),
            None if component.abandoned() => "abandoned".to_owned(),
            None => "-".to_owned(),
        });
    }
    cells
}

fn recent_events(
    out: &mut String,
    component: &ComponentStatus,
    ns: &NamespaceStatus,
    events: usize,
) {
    if ns.events.is_empty() || events == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\n{} in {}, latest events:",
        component.component, ns.namespace
    );
    for event in ns.events.iter().rev().take(events) {
        let mut line = format!("  {}  {}", event.at, event.kind);
        if let Some(holder) = &event.holder {
            let _ = write!(line, " {holder}");
        }
        if let Some(previous) = &event.previous {
            let _ = write!(line, " (was {previous})");
        }
        let _ = writeln!(out, "{line}");
    }
}

fn or_dash(text: Option<&str>) -> String {
    text.unwrap_or("-").to_owned()
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.iter().map(Vec::len).max().unwrap_or_default()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths.iter().copied()) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(state: &str, ready: bool) -> Value {
        json!({
            "schema": 1, "exporter_version": "0.1.0", "generated_at": "2026-11-30T07:00:00Z",
            "ready": ready,
            "components": [{
                "component": "virt-operator", "scope": "all namespaces", "lease": "virt-operator",
                "pod_selector": "kubevirt.io=virt-operator",
                "pods_watch_healthy": true, "leases_watch_healthy": true, "found_in": 1,
                "namespaces": [{
                    "namespace": "kubevirt", "state": state, "holder": "virt-operator-a",
                    "holder_ready": true, "standbys": 1,
                    "lease": {"age_seconds": 1.5, "limit_seconds": 25.0},
                    "renewals": {"count": 3, "sum_seconds": 30.0, "recent": []},
                    "events": [
                        {"at": "2026-11-30T06:00:00Z", "kind": "seen", "holder": "virt-operator-b"},
                        {"at": "2026-11-30T06:30:00Z", "kind": "changed", "holder": "virt-operator-a",
                         "previous": "virt-operator-b"}
                    ]
                }]
            }, {
                "component": "virt-controller", "scope": "all namespaces",
                "lease": "virt-controller", "pod_selector": "kubevirt.io=virt-controller",
                "pods_watch_healthy": true, "leases_watch_healthy": false, "found_in": 0,
                "namespaces": []
            }]
        })
    }

    fn typed(value: &Value) -> Status {
        read(value).expect("a status")
    }

    /// One (component, namespace) entry, as a discovered component's.
    fn discovered(name: &str, scope: &str, workload: Value, ns: Value) -> Value {
        json!({
            "component": name, "scope": scope, "lease": name, "pod_selector": "",
            "discovered": true, "workload": workload,
            "pods_watch_healthy": true, "leases_watch_healthy": true, "found_in": 1,
            "namespaces": [ns]
        })
    }

    #[test]
    fn the_table_names_each_leader_and_what_happened() {
        let text = render("kle-abc", &typed(&status("leader", true)), 1);
        assert!(
            text.contains("exporter kle-abc (version 0.1.0), ready"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("virt-operator "))
            .expect("a row");
        for cell in [
            "kubevirt",
            "leader",
            "virt-operator-a",
            "Ready",
            "1.5s of 25s",
            "1",
        ] {
            assert!(line.contains(cell), "{cell} missing from {line:?}");
        }
        assert!(text.contains("virt-controller  (none found)"), "{text}");
        assert!(text.contains("BLIND: the exporter cannot watch leases of virt-controller"));
        assert!(
            text.contains("changed virt-operator-a (was virt-operator-b)"),
            "{text}"
        );
        assert!(
            !text.contains("seen virt-operator-b"),
            "only the newest event: {text}"
        );
    }

    #[test]
    fn discovered_components_show_their_workload() {
        let mut status = status("leader", true);
        let usual = render("p", &typed(&status), 0);
        assert!(!usual.contains("WORKLOAD"), "{usual}");
        let components = status["components"].as_array_mut().expect("components");
        components.push(discovered(
            "db-leader",
            "data",
            json!({"kind": "StatefulSet", "name": "db", "namespace": "data"}),
            json!({"namespace": "data", "state": "leader", "holder": "db-0",
                   "holder_ready": true, "standbys": 2}),
        ));
        components.push(discovered(
            "cert-manager-controller",
            "kube-system",
            json!({"kind": "Deployment", "name": "cert-manager", "namespace": "cert-manager"}),
            json!({"namespace": "kube-system", "state": "leader", "holder": "cm-0",
                   "holder_ready": true, "standbys": 0}),
        ));
        components.push(discovered(
            "old-lock",
            "data",
            Value::Null,
            json!({"namespace": "data", "state": "no_leader", "holder": "gone-7d9",
                   "holder_ready": null, "pods": 0, "standbys": 0}),
        ));
        let status = typed(&status);
        let text = render("p", &status, 0);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start:?} in {text}"))
        };
        assert!(line("COMPONENT ").ends_with("  WORKLOAD"), "{text}");
        assert!(line("db-leader ").ends_with("  StatefulSet/db"), "{text}");
        assert!(
            line("cert-manager-controller ").ends_with("  Deployment/cert-manager in cert-manager"),
            "{text}"
        );
        let old = line("old-lock ");
        assert!(
            old.contains("NO LEADER") && old.ends_with("  abandoned"),
            "{text}"
        );
        assert!(line("virt-operator ").ends_with("  -"), "{text}");
        assert!(line("virt-controller ").contains("(none found)"), "{text}");
        assert_eq!(
            exit_code(&status),
            0,
            "an abandoned Lease is no missing leader"
        );
    }

    #[test]
    fn the_exit_status_says_leader_none_or_cannot_tell() {
        assert_eq!(exit_code(&typed(&status("leader", true))), 0);
        assert_eq!(exit_code(&typed(&status("no_leader", true))), 1);
        assert_eq!(exit_code(&typed(&status("blind", true))), 2);
        assert_eq!(exit_code(&typed(&status("checking", true))), 2);
        assert_eq!(exit_code(&typed(&status("leader", false))), 2);
        let none = json!({"schema": 1, "exporter_version": "0.2.0",
                          "generated_at": "2026-11-30T07:00:00Z", "ready": true,
                          "components": []});
        assert_eq!(exit_code(&typed(&none)), 2);
    }

    #[test]
    fn a_status_of_another_shape_is_an_error_that_says_so() {
        let odd = json!({"schema": 2, "components": "nope"});
        let error = read(&odd).expect_err("not a status").to_string();
        assert!(
            error.contains("(schema 2) is not what this plugin reads (schema 1)"),
            "{error}"
        );
        let mut unknown = status("leader", true);
        unknown["components"][0]["namespaces"][0]["state"] = json!("sleeping");
        assert!(read(&unknown).is_err());
        // New fields are no reason to fail.
        let mut newer = status("leader", true);
        newer["components"][0]["new_field"] = json!(1);
        assert_eq!(exit_code(&typed(&newer)), 0);
    }
}
