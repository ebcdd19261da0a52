//! The component file given with `--config`. A file that parses becomes the exporter's
//! components in two namespaced scopes: each gets a Ready pod and a lease it holds in one of
//! them, both watches of every target list, each lease is renewed once, and everything is
//! judged and rendered (so component names and selectors from the file reach the series, the
//! status page and `/status.json`).

use kube::core::WatchEvent;
use kubevirt_leader_exporter::components::parse_components;

use crate::{Bed, STEP, lease, pod};

/// Runs one input; returns whether it reached the per-component series
/// ([`crate::has_component_series`]).
pub fn run(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(components) = parse_components(text) else {
        return false;
    };
    let mut bed = Bed::with(components.clone(), vec!["kubevirt".into(), "other".into()]);
    let t0 = bed.t0;
    for component in &components {
        let leader = format!("{}-0", component.name);
        bed.put_pod(pod("kubevirt", &leader, true));
        bed.put_pod(pod("kubevirt", &format!("{}-1", component.name), false));
        bed.put_lease(lease(
            "kubevirt",
            &component.lease,
            &leader,
            "2026-11-27T03:12:09Z",
        ));
    }
    bed.list_all(t0);
    let renewed: Vec<_> = components
        .iter()
        .map(|c| {
            lease(
                "kubevirt",
                &c.lease,
                &format!("{}-0", c.name),
                "2026-11-27T03:12:11Z",
            )
        })
        .collect();
    for lease in renewed {
        bed.lease_line(WatchEvent::Modified(lease), t0 + STEP);
    }
    let reached = bed.judge_and_read(t0 + STEP);
    let body = bed.metrics.render().expect("render");
    let body = String::from_utf8_lossy(&body);
    for component in &components {
        let series = format!("component=\"{}\"", component.name);
        assert!(body.contains(&series), "no series for {}", component.name);
    }
    reached
}
