//! Lines of a lease watch stream (one event per line, 2 s apart) applied to listed watches
//! (both watches of every target listed from a baseline of pods and leases); a line that is
//! a Lease itself changes it on the server unseen by the watch, which the confirming read
//! then finds. Judged right after and an hour later, once the lease watch task has
//! confirmed what ran out, and rendered each time. An ERROR line fails every lease watch,
//! which lists again.

use k8s_openapi::api::coordination::v1::Lease;
use kube::core::WatchEvent;

enum Line {
    Watched(WatchEvent<Lease>),
    OnServer(Lease),
}

/// Runs one input; returns whether it changed what is judged
/// ([`crate::changed_the_baseline`]) and ended with per-component series
/// ([`crate::has_component_series`]).
pub fn run(data: &[u8]) -> bool {
    let lines: Vec<Line> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| match serde_json::from_slice(line) {
            Ok(event) => Some(Line::Watched(event)),
            Err(_) => serde_json::from_slice(line).ok().map(Line::OnServer),
        })
        .collect();
    crate::play_stream(lines, |bed, line, at| match line {
        Line::Watched(event) => bed.lease_line(event, at),
        Line::OnServer(lease) => {
            bed.put_lease(lease);
        }
    })
}
