//! Lines of a pod watch stream (one event per line), decoded into the slim pod view and
//! applied to listed watches (both watches of every target listed from a baseline of pods
//! and leases), then judged and rendered. An ERROR line fails every pods watch, which lists
//! again.

use kube::core::WatchEvent;
use kubevirt_leader_exporter::objects::PodView;

/// Runs one input; returns whether it changed what is judged
/// ([`crate::changed_the_baseline`]) and ended with per-component series
/// ([`crate::has_component_series`]).
pub fn run(data: &[u8]) -> bool {
    let events: Vec<WatchEvent<PodView>> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    crate::play_stream(events, |bed, event, at| bed.pod_line(event, at))
}
