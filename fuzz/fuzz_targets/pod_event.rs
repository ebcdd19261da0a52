//! Lines of a pod watch stream (one event per line), decoded into the slim pod view and
//! applied to listed watches (both watches of every target listed from a baseline of pods
//! and leases), then judged and rendered. An ERROR line fails every pods watch, which lists
//! again.
#![no_main]

use kube::core::WatchEvent;
use kubevirt_leader_exporter::objects::PodView;
use kubevirt_leader_exporter_fuzz::{Bed, STEP, baseline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let events: Vec<WatchEvent<PodView>> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    if events.is_empty() {
        return;
    }
    let mut bed = Bed::new();
    baseline(&mut bed);
    let mut at = bed.t0;
    bed.list_all(at);
    for event in events {
        at += STEP;
        bed.pod_line(event, at);
    }
    bed.judge_and_read(at);
});
