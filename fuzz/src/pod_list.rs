//! A page of a pod list as the API server sends it, decoded into the slim pod view: compared
//! with the pods watch as the quiet-watch check does, then applied as a complete relist of
//! the pods watch, with the lease watch listed beside it (a lease per component and
//! namespace found, held by the first pod listed there), and judged and rendered.

use std::collections::BTreeMap;

use kube::core::ObjectList;
use kubevirt_leader_exporter::{
    objects::{PodView, pod_info},
    pods::{PodChange, PodName},
    watch::pod_name,
};

use crate::{Bed, lease};

/// Runs one input; returns whether it reached the per-component series
/// ([`crate::has_component_series`]).
pub fn run(data: &[u8]) -> bool {
    let Ok(list) = serde_json::from_slice::<ObjectList<PodView>>(data) else {
        return false;
    };
    let complete = list.metadata.continue_.as_deref().is_none_or(str::is_empty);
    let mut bed = Bed::new();
    let t0 = bed.t0;
    let mut listed: Vec<BTreeMap<PodName, _>> = vec![BTreeMap::new(); bed.handles().len()];
    for pod in list.items {
        listed[bed.pod_target(&pod)].insert(pod_name(&pod), pod_info(&pod));
        bed.put_pod(pod);
    }
    for i in 0..bed.handles().len() {
        let mut first_in: BTreeMap<String, String> = BTreeMap::new();
        for (namespace, name) in bed.server_pods[i].keys() {
            first_in
                .entry(namespace.clone())
                .or_insert_with(|| name.clone());
        }
        let lease_name = bed.handles()[i].component().lease.clone();
        for (namespace, holder) in first_in {
            bed.put_lease(lease(
                &namespace,
                &lease_name,
                &holder,
                "2026-11-27T03:12:09Z",
            ));
        }
    }
    // Blind before any list; then the leases listed and the pods watch listed empty.
    assert_eq!(bed.handles()[0].pods_agree(&listed[0], complete), None);
    for (i, target) in bed.handles().iter().enumerate() {
        bed.list_leases(i, t0);
        target.apply_pods(PodChange::ListStarted);
        target.apply_pods(PodChange::ListDone);
        let agrees = target.pods_agree(&listed[i], complete);
        assert_eq!(agrees, Some(listed[i].is_empty()));
    }
    bed.read_at(&[t0]);
    // The page as the pods watch's relist: now the watch agrees with it.
    for (i, target) in bed.handles().iter().enumerate() {
        bed.list_pods(i);
        assert_eq!(target.pods_agree(&listed[i], complete), Some(true));
    }
    bed.judge_and_read(t0)
}
