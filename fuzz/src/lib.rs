//! What the fuzz targets share: an exporter state (its targets and its metrics), fed as the
//! watch tasks feed it, and every way it is read (judged at several instants, a scrape, the
//! status page and `/status.json`).
//!
//! A target is judged only while both of its watches are healthy, that is after each has
//! completed a list (`Init`, `InitApply`..., `InitDone` from kube's watcher). So every fuzz
//! target first lists both watches of every target, then applies its input, then judges and
//! renders.
//!
//! Events are stamped from two hours before the real clock on, so that a scrape, which
//! judges at the real `Instant::now()`, sees leases that have run out as well as the
//! verdicts at the stamped instants.
//!
//! Each target's body is a module here (`run`, which the `fuzz_target!` in
//! `fuzz_targets/<target>.rs` calls), so that `tests/seeds.rs` replays every seed through
//! the same entry point with plain `cargo test`, and checks that each corpus reaches the
//! judged, per-component series.

pub mod component_file;
pub mod http_request;
pub mod lease;
pub mod pod_event;
pub mod pod_list;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{ResourceExt, core::WatchEvent, runtime::watcher::Event};
use kubevirt_leader_exporter::{
    components::{Component, default_components},
    config::Settings,
    metrics::{Metrics, PREFIX},
    objects::{PodView, lease_record, pod_info, reduce},
    page, status,
    targets::{Target, Targets},
    watch::{Watched, pod_name},
};
use serde_json::json;

/// The live heap is counted as in the exporter's binary, so that a scrape has its series.
#[global_allocator]
static HEAP: kubevirt_leader_exporter::heap::CountingAllocator =
    kubevirt_leader_exporter::heap::CountingAllocator(std::alloc::System);

/// How far before the real clock the first event is stamped.
pub const BACK: Duration = Duration::from_secs(2 * 3600);
/// Between two events of an input: KubeVirt's retry period, so that renewals look normal.
pub const STEP: Duration = Duration::from_secs(2);
/// The grace the bed judges with (the exporter's default).
pub const GRACE: Duration = Duration::from_secs(10);

/// A fresh exporter state; each input gets its own, so that runs do not depend on what an
/// earlier input left behind.
pub struct Bed {
    pub targets: Arc<Targets>,
    pub metrics: Arc<Metrics>,
    /// The instant of the first event.
    pub t0: Instant,
    /// What the API server holds, as the harness models it: the last object of each key
    /// that the fuzzed input delivered or put there. A watch that starts over lists this,
    /// and a confirming read of a lease reads it.
    pub server_pods: Vec<BTreeMap<(String, String), PodView>>,
    pub server_leases: Vec<BTreeMap<String, Lease>>,
}

impl Bed {
    /// The built-in components across the whole cluster.
    pub fn new() -> Self {
        Self::with(default_components(), Vec::new())
    }

    /// `components` within `namespaces` (empty: the whole cluster).
    pub fn with(components: Vec<Component>, namespaces: Vec<String>) -> Self {
        let mut settings = Settings::with_defaults(GRACE);
        settings.components = components;
        settings.namespaces = namespaces;
        let targets = Arc::new(Targets::new(&settings));
        let metrics = Arc::new(Metrics::new(targets.clone()).expect("metrics register"));
        let n = targets.handles().len();
        Self {
            targets,
            metrics,
            t0: Instant::now()
                .checked_sub(BACK)
                .unwrap_or_else(Instant::now),
            server_pods: vec![BTreeMap::new(); n],
            server_leases: vec![BTreeMap::new(); n],
        }
    }

    pub fn handles(&self) -> &[Arc<Target>] {
        self.targets.handles()
    }

    /// The target whose watches would deliver `pod`: the server selects by label, which the
    /// slim pod view does not keep; KubeVirt names its pods `<component>-<hash>`, so the
    /// longest component name the pod's name starts with, else the first target. In a
    /// namespaced scope, the scope of the pod's namespace if there is one.
    pub fn pod_target(&self, pod: &PodView) -> usize {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        self.pick(&namespace, |c| {
            name.strip_prefix(c.name.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
                .then_some(c.name.len())
        })
    }

    /// The target whose lease watch would deliver `lease`: the one whose component's lease
    /// has its name (the watch selects by `metadata.name`), else the first target.
    pub fn lease_target(&self, lease: &Lease) -> usize {
        let name = lease.name_any();
        let namespace = lease.namespace().unwrap_or_default();
        self.pick(&namespace, |c| (c.lease == name).then_some(1))
    }

    fn pick(&self, namespace: &str, score: impl Fn(&Component) -> Option<usize>) -> usize {
        self.handles()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let in_scope = t.namespace.as_deref().is_none_or(|ns| ns == namespace);
                score(&t.component()).map(|s| (in_scope, s, std::cmp::Reverse(i)))
            })
            .max()
            .map_or(0, |(_, _, std::cmp::Reverse(i))| i)
    }

    /// Feeds a pod watch event to target `i`, as the pod watch task does.
    pub fn pod_event(&self, i: usize, event: Event<PodView>) {
        self.handles()[i].apply_pods(reduce(event, pod_name, pod_info));
    }

    /// Feeds a lease watch event to target `i` at `at`, as the lease watch task does.
    pub fn lease_event(&self, i: usize, event: Event<Lease>, at: Instant) {
        self.handles()[i].apply_leases(
            reduce(event, |l| l.namespace().unwrap_or_default(), lease_record),
            at,
        );
    }

    /// Both watches of every target complete a list of what the server holds: the target
    /// can be judged from then on.
    pub fn list_all(&self, at: Instant) {
        for i in 0..self.handles().len() {
            self.list_pods(i);
            self.list_leases(i, at);
        }
    }

    /// The pod watch of target `i` (re)lists what the server holds.
    pub fn list_pods(&self, i: usize) {
        self.pod_event(i, Event::Init);
        for pod in self.server_pods[i].values() {
            self.pod_event(i, Event::InitApply(pod.clone()));
        }
        self.pod_event(i, Event::InitDone);
    }

    /// The lease watch of target `i` (re)lists what the server holds.
    pub fn list_leases(&self, i: usize, at: Instant) {
        self.lease_event(i, Event::Init, at);
        for lease in self.server_leases[i].values() {
            self.lease_event(i, Event::InitApply(lease.clone()), at);
        }
        self.lease_event(i, Event::InitDone, at);
    }

    /// Puts `pod` on the server, for the target whose watch would see it.
    pub fn put_pod(&mut self, pod: PodView) -> usize {
        let i = self.pod_target(&pod);
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        self.server_pods[i].insert(key, pod);
        i
    }

    pub fn put_lease(&mut self, lease: Lease) -> usize {
        let i = self.lease_target(&lease);
        self.server_leases[i].insert(lease.namespace().unwrap_or_default(), lease);
        i
    }

    /// One line of a pod watch stream, as the watch task handles it: a change is applied
    /// (and the server holds it), a bookmark is swallowed by kube's watcher, an error fails
    /// the watch, which lists again at once.
    pub fn pod_line(&mut self, event: WatchEvent<PodView>, at: Instant) {
        match event {
            WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                let i = self.put_pod(pod.clone());
                self.pod_event(i, Event::Apply(pod));
            }
            WatchEvent::Deleted(pod) => {
                let i = self.pod_target(&pod);
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                self.server_pods[i].remove(&key);
                self.pod_event(i, Event::Delete(pod));
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(_) => {
                for i in 0..self.handles().len() {
                    self.metrics.watch_error(Watched::Pods);
                    self.handles()[i].pods_failed();
                }
                self.read_at(&[at]);
                for i in 0..self.handles().len() {
                    self.list_pods(i);
                }
            }
        }
    }

    /// One line of a lease watch stream at `at`, as [`Bed::pod_line`]; after an error the
    /// watch is blind for a while (its retry), which the lease clock must not count.
    pub fn lease_line(&mut self, event: WatchEvent<Lease>, at: Instant) {
        match event {
            WatchEvent::Added(lease) | WatchEvent::Modified(lease) => {
                let i = self.put_lease(lease.clone());
                self.lease_event(i, Event::Apply(lease), at);
            }
            WatchEvent::Deleted(lease) => {
                let i = self.lease_target(&lease);
                self.server_leases[i].remove(&lease.namespace().unwrap_or_default());
                self.lease_event(i, Event::Delete(lease), at);
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(_) => {
                for i in 0..self.handles().len() {
                    self.metrics.watch_error(Watched::Leases);
                    self.handles()[i].leases_failed(at);
                }
                self.read_at(&[at]);
                for i in 0..self.handles().len() {
                    self.list_leases(i, at + STEP);
                }
            }
        }
    }

    /// What the lease watch task does when it wakes at `at`: reads each lease due for
    /// confirmation, and those the server holds but the watch never delivered, and marks
    /// the deadlines passed; a watch that fell behind lists again at once.
    pub fn confirm_leases(&self, at: Instant) {
        for (i, target) in self.handles().iter().enumerate() {
            let _ = target.next_deadline(at);
            let mut due = target.leases_due(at);
            due.extend(self.server_leases[i].keys().cloned());
            due.sort();
            due.dedup();
            let mut behind = false;
            for namespace in due {
                let fresh = self.server_leases[i].get(&namespace).map(lease_record);
                behind |= target.confirm_lease(&namespace, fresh, at)
                    == kubevirt_leader_exporter::leases::Confirmation::Behind;
            }
            target.deadline_passed(at);
            if behind {
                self.metrics.watch_error(Watched::Leases);
                self.list_leases(i, at);
            }
        }
    }

    /// Judges every target at each of `instants`, renders the status page and
    /// `/status.json` for each, and scrapes `/metrics` (judged at the real clock).
    /// Returns whether any target was judged (both its watches healthy).
    pub fn read_at(&self, instants: &[Instant]) -> bool {
        let mut judged = false;
        let body = self.metrics.render().expect("metrics render");
        std::str::from_utf8(&body).expect("the exposition is UTF-8");
        for &at in instants {
            let snapshot = self.targets.snapshot(at);
            judged |= snapshot.targets.iter().any(|t| t.verdicts.is_some());
            let _ = snapshot.namespaces_found();
            let status = status::status(&self.targets.status(at), at, SystemTime::now(), GRACE);
            let _ = page::render(&status);
            serde_json::to_vec(&status).expect("the status serializes");
        }
        judged
    }

    /// After the input, ending at `end`: judged then, an hour later once the lease watch
    /// task has confirmed what ran out, and a scrape in between and after. Returns whether
    /// the last scrape has per-component series ([`has_component_series`]).
    pub fn judge_and_read(&self, end: Instant) -> bool {
        let later = end + Duration::from_secs(3600);
        let judged = self.read_at(&[end, later]);
        assert!(
            judged,
            "both watches were listed, so every target is judged"
        );
        self.confirm_leases(later);
        self.read_at(&[later, Instant::now()]);
        // Nothing changed since: the scrape reuses the last rendering.
        let again = self.metrics.render().expect("metrics render");
        std::str::from_utf8(&again).expect("the exposition is UTF-8");
        has_component_series(&again)
    }
}

impl Bed {
    /// What `/status.json` says at `at`, against a fixed wall clock, so that two beds can be
    /// compared.
    pub fn status_at(&self, at: Instant) -> serde_json::Value {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        serde_json::to_value(status::status(&self.targets.status(at), at, wall, GRACE))
            .expect("the status serializes")
    }
}

/// Plays the lines of a watch stream, one every [`STEP`], on listed watches of the baseline
/// (`apply` feeds one line to the bed), then judges and reads. Returns whether the lines
/// changed what is judged ([`changed_the_baseline`]) and the last scrape has per-component
/// series ([`has_component_series`]); false for no lines.
pub fn play_stream<L>(lines: Vec<L>, mut apply: impl FnMut(&mut Bed, L, Instant)) -> bool {
    if lines.is_empty() {
        return false;
    }
    let mut bed = Bed::new();
    baseline(&mut bed);
    let mut at = bed.t0;
    bed.list_all(at);
    for line in lines {
        at += STEP;
        apply(&mut bed, line, at);
    }
    let changed = changed_the_baseline(&bed, at);
    bed.judge_and_read(at) && changed
}

/// Whether what is judged at `at` (verdicts, holders, stories) differs from what the
/// baseline alone gives at the same moment: the input reached the judged state, rather than
/// being dropped on the way while the baseline kept the series there.
pub fn changed_the_baseline(bed: &Bed, at: Instant) -> bool {
    let mut alone = Bed::new();
    baseline(&mut alone);
    alone.list_all(alone.t0);
    let same_moment = alone.t0 + at.duration_since(bed.t0);
    bed.status_at(at) != alone.status_at(same_moment)
}

/// Whether `body` (a `/metrics` exposition, or an HTTP answer carrying one) has
/// per-component series: some target was judged, with a verdict for some namespace. The
/// seed test asserts it for at least one seed of every corpus, so that a target whose input
/// no longer reaches the judging function fails there rather than fuzzing nothing.
pub fn has_component_series(body: &[u8]) -> bool {
    let sample = format!("\n{PREFIX}_present{{component=\"");
    String::from_utf8_lossy(body).contains(&sample)
}

impl Default for Bed {
    fn default() -> Self {
        Self::new()
    }
}

/// A pod as the API server sends it.
pub fn pod(namespace: &str, name: &str, ready: bool) -> PodView {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .expect("a pod")
}

/// A lease as leader election writes it.
pub fn lease(namespace: &str, name: &str, holder: &str, renew: &str) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 3,
                 "acquireTime": "2026-11-27T03:10:00.000000Z", "renewTime": renew}
    }))
    .expect("a lease")
}

/// What the server holds before an input: for each built-in component a leader pod and a
/// standby in `kubevirt`; virt-operator's lease held by its Ready leader pod,
/// virt-controller's by a holder with a controller-runtime style suffix whose pod is not
/// Ready; virt-synchronization-controller has pods but no lease.
pub fn baseline(bed: &mut Bed) {
    for (name, ready) in [
        ("virt-operator-6f7d9c5b8-a1b2c", true),
        ("virt-operator-6f7d9c5b8-x9y8z", true),
        ("virt-controller-7b4c-aaaaa", false),
        ("virt-controller-7b4c-bbbbb", true),
        ("virt-synchronization-controller-5d-ccccc", true),
    ] {
        bed.put_pod(pod("kubevirt", name, ready));
    }
    bed.put_lease(lease(
        "kubevirt",
        "virt-operator",
        "virt-operator-6f7d9c5b8-a1b2c",
        "2026-11-27T03:12:09.123456Z",
    ));
    bed.put_lease(lease(
        "kubevirt",
        "virt-controller",
        "virt-controller-7b4c-aaaaa_0c7e4ac3-5d6f-4a8b-9c1d-2e3f4a5b6c7d",
        "2026-11-27T03:12:09.123456Z",
    ));
}
