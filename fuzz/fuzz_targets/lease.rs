//! One line of a lease watch stream (or a lease read directly), applied to the lease book,
//! confirmed by a direct read, and judged now and later.
#![no_main]

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{ResourceExt, core::WatchEvent, runtime::watcher::Event};
use kubevirt_leader_exporter::objects::{lease_record, reduce};
use kubevirt_leader_exporter_fuzz::bed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let event = match serde_json::from_slice::<WatchEvent<Lease>>(data) {
        Ok(WatchEvent::Added(lease) | WatchEvent::Modified(lease)) => Event::Apply(lease),
        Ok(WatchEvent::Deleted(lease)) => Event::Delete(lease),
        Ok(WatchEvent::Bookmark(_) | WatchEvent::Error(_)) => return,
        Err(_) => match serde_json::from_slice::<Lease>(data) {
            Ok(lease) => Event::Apply(lease),
            Err(_) => return,
        },
    };
    let (namespace, record) = match &event {
        Event::Apply(lease) => (lease.namespace().unwrap_or_default(), Some(lease_record(lease))),
        _ => (String::new(), None),
    };
    let bed = bed();
    let target = bed.target();
    let now = Instant::now();
    target.apply_leases(reduce(event, |l| l.namespace().unwrap_or_default(), lease_record), now);
    let later = now + Duration::from_secs(3600);
    let _ = target.next_deadline(now);
    for due in target.leases_due(later) {
        let _ = target.confirm_lease(&due, record.clone(), later);
    }
    let _ = target.confirm_lease(&namespace, record, later);
    target.deadline_passed(later);
    bed.read_all();
});
