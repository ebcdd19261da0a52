//! A page of a pod list as the API server sends it, decoded into the slim pod view and
//! applied as a complete relist.
#![no_main]

use kube::{core::ObjectList, runtime::watcher::Event};
use kubevirt_leader_exporter::{
    objects::{PodView, pod_info, reduce},
    watch::pod_name,
};
use kubevirt_leader_exporter_fuzz::bed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = serde_json::from_slice::<ObjectList<PodView>>(data) else {
        return;
    };
    let bed = bed();
    let target = bed.target();
    target.apply_pods(reduce(Event::Init, pod_name, pod_info));
    for pod in list.items {
        target.apply_pods(reduce(Event::InitApply(pod), pod_name, pod_info));
    }
    target.apply_pods(reduce(Event::InitDone, pod_name, pod_info));
    bed.read_all();
});
