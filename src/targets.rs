//! What the exporter knows, one target per component and scope (a namespace, or the whole
//! cluster). Each pair of watch tasks holds the handle of its target and updates it; readers
//! take one [`Snapshot`] of every target, judged at one instant.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    config::{Component, Settings},
    history::{Event, LeaseStats},
    judge::{LeaseRecord, PodInfo, Verdict, judge},
    leases::{Confirmation, LeaseBook, LeaseChange},
    pods::{PodChange, PodName, PodSet},
};

/// One component within one scope: the unit a pair of watches (pods and leases) fills.
#[derive(Debug)]
pub struct Target {
    pub component: Component,
    /// `None`: the whole cluster.
    pub namespace: Option<String>,
    state: Mutex<State>,
    /// Moved on by every update, so that readers can tell when what they computed is stale.
    generation: Arc<watch::Sender<u64>>,
}

#[derive(Debug)]
struct State {
    pods: PodSet,
    leases: LeaseBook,
}

impl State {
    /// Per namespace whose lease holder is a known pod: that pod's container restarts. Only
    /// namespace `only`, when given.
    fn holder_restarts(&self, only: Option<&str>) -> BTreeMap<String, u32> {
        self.leases
            .namespaces()
            .filter(|ns| only.is_none_or(|only| only == *ns))
            .filter_map(|ns| {
                let holder = self.leases.get(ns)?.record.holder.as_deref()?;
                let pod = self
                    .pods
                    .in_namespace(ns)
                    .find(|p| !holder.is_empty() && p.is_named_by(holder))?;
                Some((ns.to_owned(), pod.restarts))
            })
            .collect()
    }
}

impl Target {
    /// Where this target's watches look, for logs.
    pub fn scope(&self) -> &str {
        self.namespace.as_deref().unwrap_or("all namespaces")
    }

    /// A panic elsewhere while holding the lock leaves plain data behind, so a poisoned lock
    /// is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let result = change(&mut self.lock());
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        result
    }

    pub fn apply_pods(&self, change: PodChange) {
        let now = Instant::now();
        // Only a change to the pods in view can show a restart: a watch event changes one
        // namespace, a completed relist any; the objects of a relist in progress none yet.
        let namespace = match &change {
            PodChange::Applied(name, _) | PodChange::Deleted(name) => Some(name.namespace.clone()),
            PodChange::ListDone => None,
            PodChange::ListStarted | PodChange::Listed(..) => {
                return self.update(|s| s.pods.apply(change));
            }
        };
        self.update(|s| {
            let before = s.holder_restarts(namespace.as_deref());
            s.pods.apply(change);
            for (namespace, restarts) in s.holder_restarts(namespace.as_deref()) {
                if before.get(&namespace).is_some_and(|b| restarts > *b) {
                    s.leases.holder_restarted(&namespace, restarts, now);
                }
            }
        });
    }

    pub fn pods_failed(&self) {
        self.update(|s| s.pods.failed());
    }

    /// Whether the pods watch is healthy and agrees with pods read directly (see
    /// [`PodSet::agrees_with`]); `None` while it is not healthy, as then there is nothing to
    /// compare.
    pub fn pods_agree(&self, listed: &BTreeMap<PodName, PodInfo>, complete: bool) -> Option<bool> {
        let state = self.lock();
        state
            .pods
            .healthy()
            .then(|| state.pods.agrees_with(listed, complete))
    }

    pub fn apply_leases(&self, change: LeaseChange, now: Instant) {
        self.update(|s| s.leases.apply(change, now));
    }

    pub fn leases_failed(&self, now: Instant) {
        self.update(|s| s.leases.failed(now));
    }

    /// Namespaces whose lease needs a direct read now.
    pub fn leases_due(&self, now: Instant) -> Vec<String> {
        self.lock().leases.due_for_confirmation(now)
    }

    pub fn confirm_lease(
        &self,
        namespace: &str,
        fresh: Option<LeaseRecord>,
        now: Instant,
    ) -> Confirmation {
        self.update(|s| s.leases.confirm(namespace, fresh, now))
    }

    /// The next instant at which a verdict may change without any event.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.lock().leases.next_deadline(now)
    }

    /// A deadline passed at `now`: what was judged before may no longer stand.
    pub fn deadline_passed(&self, now: Instant) {
        self.update(|s| s.leases.note_expiries(now));
    }

    /// Judges every namespace where the component has pods or a lease, at `now`.
    pub fn snapshot(&self, now: Instant) -> TargetSnapshot {
        self.snapshot_of(&self.lock(), now)
    }

    /// [`Target::snapshot`] with each lease's timeline and recent renewals, for people.
    pub fn status(&self, now: Instant) -> TargetStatus {
        let mut state = self.lock();
        // The verdict reads "no leader" from the moment the lease ran out; the watch task
        // that tells the story wakes a little later. The story must not lag the verdict.
        state.leases.note_expiries(now);
        let snapshot = self.snapshot_of(&state, now);
        let timelines = snapshot
            .stats
            .keys()
            .filter_map(|ns| {
                let history = state.leases.history(ns)?;
                let timeline = Timeline {
                    events: history.events().cloned().collect(),
                    recent_renewals: history.recent(now),
                };
                Some((ns.clone(), timeline))
            })
            .collect();
        TargetStatus {
            snapshot,
            timelines,
            lease: self.component.lease.clone(),
            pod_selector: self.component.label_selector(),
        }
    }

    fn snapshot_of(&self, state: &State, now: Instant) -> TargetSnapshot {
        let grace = state.leases.grace();
        let sighted = state.pods.healthy() && state.leases.healthy();
        let verdicts = sighted.then(|| {
            let namespaces: BTreeSet<&str> = state
                .pods
                .namespaces()
                .chain(state.leases.namespaces())
                .collect();
            namespaces
                .into_iter()
                .map(|ns| {
                    let verdict = judge(
                        state.pods.in_namespace(ns),
                        state.leases.get(ns),
                        now,
                        grace,
                    );
                    (ns.to_owned(), verdict)
                })
                .collect()
        });
        TargetSnapshot {
            component: self.component.name.clone(),
            scope: self.scope().to_owned(),
            pods_healthy: state.pods.healthy(),
            leases_healthy: state.leases.healthy(),
            listed: state.pods.listed_once() && state.leases.listed_once(),
            verdicts,
            stats: state.leases.stats(now),
        }
    }
}

/// A target's snapshot and, per namespace with a lease, its story.
#[derive(Clone, Debug)]
pub struct TargetStatus {
    pub snapshot: TargetSnapshot,
    pub timelines: BTreeMap<String, Timeline>,
    /// The Lease's name and the pods' label selector, for people who look further.
    pub lease: String,
    pub pod_selector: String,
}

/// What happened to one lease, oldest first.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub events: Vec<Event>,
    /// (when the renewal was seen, the interval since the one before)
    pub recent_renewals: Vec<(Instant, Duration)>,
}

/// One target, judged at one instant.
#[derive(Clone, Debug)]
pub struct TargetSnapshot {
    pub component: String,
    pub scope: String,
    pub pods_healthy: bool,
    pub leases_healthy: bool,
    /// Both watches have completed a first list at some point.
    pub listed: bool,
    /// Per namespace, or `None` while a watch cannot be trusted: blind is not "no leader".
    pub verdicts: Option<Vec<(String, Verdict)>>,
    /// Per namespace where a lease was seen, what was counted of it.
    pub stats: BTreeMap<String, LeaseStats>,
}

/// Every target, judged at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub targets: Vec<TargetSnapshot>,
}

impl Snapshot {
    /// Every watch has completed its first list.
    pub fn listed(&self) -> bool {
        self.targets.iter().all(|t| t.listed)
    }

    pub fn pods_healthy(&self) -> bool {
        self.targets.iter().all(|t| t.pods_healthy)
    }

    pub fn leases_healthy(&self) -> bool {
        self.targets.iter().all(|t| t.leases_healthy)
    }

    /// Per component, in configuration order: in how many namespaces it has pods or its
    /// Lease, or `None` while any of its watches cannot be trusted. A component found
    /// nowhere usually means a wrong setup (namespace, selector, RBAC) rather than a
    /// cluster without KubeVirt, and then no leader alert can ever fire.
    pub fn namespaces_found(&self) -> Vec<(&str, Option<usize>)> {
        let mut found: Vec<(&str, Option<usize>)> = Vec::new();
        for target in &self.targets {
            let count = target.verdicts.as_ref().map(Vec::len);
            match found.iter_mut().find(|(c, _)| *c == target.component) {
                Some((_, total)) => *total = total.zip(count).map(|(a, b)| a + b),
                None => found.push((&target.component, count)),
            }
        }
        found
    }
}

/// The handles of every target.
#[derive(Debug)]
pub struct Targets {
    targets: Vec<Arc<Target>>,
    generation: Arc<watch::Sender<u64>>,
    grace: Duration,
}

impl Targets {
    /// One target per component and scope.
    pub fn new(settings: &Settings) -> Self {
        let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings.namespaces.iter().cloned().map(Some).collect()
        };
        let generation = Arc::new(watch::Sender::new(0));
        let targets = settings
            .components
            .iter()
            .flat_map(|component| {
                scopes.iter().map(|namespace| {
                    Arc::new(Target {
                        component: component.clone(),
                        namespace: namespace.clone(),
                        state: Mutex::new(State {
                            pods: PodSet::default(),
                            leases: LeaseBook::new(settings.lease_grace),
                        }),
                        generation: generation.clone(),
                    })
                })
            })
            .collect();
        Self {
            targets,
            generation,
            grace: settings.lease_grace,
        }
    }

    /// Beyond a lease's duration, before an unchanged record counts as run out.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub fn handles(&self) -> &[Arc<Target>] {
        &self.targets
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            targets: self.targets.iter().map(|t| t.snapshot(now)).collect(),
        }
    }

    /// Every target's [`TargetStatus`] at `now`.
    pub fn status(&self, now: Instant) -> Vec<TargetStatus> {
        self.targets.iter().map(|t| t.status(now)).collect()
    }

    /// Moves on with every update of any target.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Wakes on every update of any target.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        history::EventKind,
        judge::{LeaseRecord, PodInfo},
        pods::PodName,
    };

    fn settings() -> Settings {
        Settings::with_defaults(Duration::from_secs(5))
    }

    fn list_both(target: &Target, now: Instant) {
        target.apply_pods(PodChange::ListStarted);
        target.apply_pods(PodChange::Listed(
            PodName {
                namespace: "kubevirt".into(),
                name: "a".into(),
            },
            PodInfo {
                name: "a".into(),
                ready_condition: true,
                ..PodInfo::default()
            },
        ));
        target.apply_pods(PodChange::ListDone);
        target.apply_leases(LeaseChange::ListStarted, now);
        target.apply_leases(LeaseChange::ListDone, now);
    }

    #[test]
    fn a_target_per_component_and_namespace() {
        let mut s = settings();
        assert_eq!(Targets::new(&s).handles().len(), 3);
        s.namespaces = vec!["a".into(), "b".into()];
        let targets = Targets::new(&s);
        assert_eq!(targets.handles().len(), 6);
        assert_eq!(targets.handles()[1].namespace.as_deref(), Some("b"));
        assert!(!targets.snapshot(Instant::now()).listed());
    }

    #[test]
    fn blind_until_both_lists_complete_and_after_a_failure() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        let target = &targets.handles()[0];
        assert!(target.snapshot(t0).verdicts.is_none());
        list_both(target, t0);
        let snap = target.snapshot(t0);
        let verdicts = snap.verdicts.expect("sighted");
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].1.pods_ready, 1);
        target.leases_failed(t0);
        let snap = target.snapshot(t0);
        assert!(snap.verdicts.is_none() && snap.listed && !snap.leases_healthy);
    }

    #[test]
    fn namespaces_found_per_component_across_scopes() {
        let t0 = Instant::now();
        let mut s = settings();
        s.namespaces = vec!["kubevirt".into(), "other".into()];
        let targets = Targets::new(&s);
        let handles = targets.handles();
        // virt-operator in scope "kubevirt" has a pod; its "other" scope is still blind.
        list_both(&handles[0], t0);
        assert_eq!(
            targets.snapshot(t0).namespaces_found()[0],
            ("virt-operator", None)
        );
        handles[1].apply_pods(PodChange::ListStarted);
        handles[1].apply_pods(PodChange::ListDone);
        handles[1].apply_leases(LeaseChange::ListStarted, t0);
        handles[1].apply_leases(LeaseChange::ListDone, t0);
        let snapshot = targets.snapshot(t0);
        let found = snapshot.namespaces_found();
        assert_eq!(found[0], ("virt-operator", Some(1)));
        assert_eq!(found.len(), 3);
        assert_eq!(found[1], ("virt-controller", None));
    }

    /// Lists both watches, then pod `a` takes the lease in `kubevirt` at `t0` (15 s); returns
    /// the record.
    fn held_by_a(target: &Target, t0: Instant) -> LeaseRecord {
        list_both(target, t0);
        let record = LeaseRecord {
            holder: Some("a".into()),
            duration_seconds: Some(15),
            has_spec: true,
            ..LeaseRecord::default()
        };
        target.apply_leases(LeaseChange::Applied("kubevirt".into(), record.clone()), t0);
        record
    }

    #[test]
    fn a_restart_of_the_holders_pod_is_told_in_its_story() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        let target = &targets.handles()[0];
        held_by_a(target, t0);
        let pod = |name: &str, restarts| {
            PodChange::Applied(
                PodName {
                    namespace: "kubevirt".into(),
                    name: name.into(),
                },
                PodInfo {
                    name: name.into(),
                    ready_condition: true,
                    restarts,
                    ..PodInfo::default()
                },
            )
        };
        target.apply_pods(pod("a", 1));
        // The same count again, and a standby's restart, are not the holder restarting.
        target.apply_pods(pod("a", 1));
        target.apply_pods(pod("b", 4));
        target.apply_pods(pod("a", 3));
        let status = target.status(t0);
        let told: Vec<&EventKind> = status.timelines["kubevirt"]
            .events
            .iter()
            .map(|e| &e.kind)
            .filter(|k| k.name() == "holder_restarted")
            .collect();
        assert_eq!(
            told,
            [
                &EventKind::HolderRestarted { restarts: 1 },
                &EventKind::HolderRestarted { restarts: 3 }
            ]
        );
    }

    #[test]
    fn the_story_tells_a_lost_leader_as_soon_as_the_verdict_does() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        let target = &targets.handles()[0];
        let record = held_by_a(target, t0);
        let read = t0 + Duration::from_secs(16);
        assert_eq!(
            target.confirm_lease("kubevirt", Some(record), read),
            Confirmation::Unchanged
        );
        // Past duration plus grace, before any deadline wake-up.
        let later =
            t0 + Duration::from_secs(15) + settings().lease_grace + Duration::from_millis(1);
        let status = target.status(later);
        let (_, verdict) = &status.snapshot.verdicts.as_ref().expect("sighted")[0];
        assert!(!verdict.present, "{verdict:?}");
        let told: Vec<&str> = status.timelines["kubevirt"]
            .events
            .iter()
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(told, ["acquired", "lost"]);
    }

    #[test]
    fn every_update_moves_the_generation_on() {
        let targets = Targets::new(&settings());
        let changes = targets.subscribe();
        let before = targets.generation();
        targets.handles()[2].pods_failed();
        assert_ne!(targets.generation(), before);
        assert!(changes.has_changed().expect("open"));
    }
}
