//! One line of a pod watch stream, decoded into the slim pod view and applied.
#![no_main]

use kube::{core::WatchEvent, runtime::watcher::Event};
use kubevirt_leader_exporter::{
    objects::{PodView, pod_info, reduce},
    watch::pod_name,
};
use kubevirt_leader_exporter_fuzz::bed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<WatchEvent<PodView>>(data) else {
        return;
    };
    let event = match event {
        WatchEvent::Added(pod) | WatchEvent::Modified(pod) => Event::Apply(pod),
        WatchEvent::Deleted(pod) => Event::Delete(pod),
        WatchEvent::Bookmark(_) | WatchEvent::Error(_) => return,
    };
    let bed = bed();
    bed.target().apply_pods(reduce(event, pod_name, pod_info));
    bed.read_all();
});
