//! What the exporter knows, one target per component and scope (a namespace, or the whole
//! cluster). Each pair of watch tasks holds the handle of its target and updates it; readers
//! take one [`Snapshot`] of every target, judged at one instant. The targets of the
//! configured components live as long as the exporter; discovered ones come and go while it
//! runs.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    components::Origin,
    config::{Component, Settings},
    history::{Event, LeaseStats},
    judge::{LeaseRecord, PodInfo, Verdict, judge},
    leases::{Confirmation, LeaseBook, LeaseChange},
    pods::{PodChange, PodName, PodSet},
};

/// One component within one scope: the unit a pair of watches (pods and leases) fills.
#[derive(Debug)]
pub struct Target {
    /// `None`: the whole cluster.
    pub namespace: Option<String>,
    /// Changes only when a discovered target's Lease is resolved to another workload; its
    /// pods watch follows, its lease watch and what both have seen stay.
    component: watch::Sender<Arc<Component>>,
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
    fn new(
        component: Component,
        namespace: Option<String>,
        grace: Duration,
        generation: Arc<watch::Sender<u64>>,
    ) -> Self {
        Self {
            namespace,
            component: watch::Sender::new(Arc::new(component)),
            state: Mutex::new(State {
                pods: PodSet::default(),
                leases: LeaseBook::new(grace),
            }),
            generation,
        }
    }

    /// What is watched now.
    pub fn component(&self) -> Arc<Component> {
        self.component.borrow().clone()
    }

    /// Wakes when the component is replaced; what it holds counts as seen.
    pub fn component_changes(&self) -> watch::Receiver<Arc<Component>> {
        self.component.subscribe()
    }

    /// Whether this target already judges the Lease `component` holds, or a component of its
    /// name, in `namespace`: a second target would report the same leader twice.
    fn covers(&self, namespace: &str, component: &Component) -> bool {
        let own = self.component();
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && (own.lease == component.lease || own.name == component.name)
    }

    /// Whether this is the target of Lease `lease` in `namespace`, scoped to it.
    fn is(&self, namespace: &str, lease: &str) -> bool {
        self.namespace.as_deref() == Some(namespace) && self.component().lease == lease
    }

    /// Where it looks and what it looks for, as discovered targets are ordered.
    fn key(&self) -> (Option<String>, String) {
        (self.namespace.clone(), self.component().lease.clone())
    }

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
        self.snapshot_of(&self.component(), &self.lock(), now)
    }

    /// [`Target::snapshot`] with each lease's timeline and recent renewals, for people.
    pub fn status(&self, now: Instant) -> TargetStatus {
        let component = self.component();
        let mut state = self.lock();
        // The verdict reads "no leader" from the moment the lease ran out; the watch task
        // that tells the story wakes a little later. The story must not lag the verdict.
        state.leases.note_expiries(now);
        let snapshot = self.snapshot_of(&component, &state, now);
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
            lease: component.lease.clone(),
            pod_selector: component.label_selector(),
        }
    }

    fn snapshot_of(&self, component: &Component, state: &State, now: Instant) -> TargetSnapshot {
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
            component: component.name.clone(),
            origin: component.origin.clone(),
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
    pub origin: Origin,
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

impl TargetSnapshot {
    pub fn discovered(&self) -> bool {
        matches!(self.origin, Origin::Discovered { .. })
    }
}

/// Every target, judged at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub targets: Vec<TargetSnapshot>,
}

/// Where a component was found, per [`Snapshot::found`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub component: &'a str,
    /// Every target of this name was discovered.
    pub discovered: bool,
    /// In how many namespaces; `None` while any of its watches cannot be trusted.
    pub namespaces: Option<usize>,
}

impl Snapshot {
    /// Every watch of the configured components has completed its first list. A discovered
    /// component that has not listed yet, or cannot, is blind on its own: it must not take
    /// the exporter out of its Service and blind every other component with it.
    pub fn listed(&self) -> bool {
        self.targets
            .iter()
            .filter(|t| !t.discovered())
            .all(|t| t.listed)
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
        self.found()
            .into_iter()
            .map(|f| (f.component, f.namespaces))
            .collect()
    }

    /// [`Snapshot::namespaces_found`], with whether each component was discovered.
    pub fn found(&self) -> Vec<Found<'_>> {
        let mut found: Vec<Found<'_>> = Vec::new();
        for target in &self.targets {
            let count = target.verdicts.as_ref().map(Vec::len);
            match found.iter_mut().find(|f| f.component == target.component) {
                Some(f) => {
                    f.namespaces = f.namespaces.zip(count).map(|(a, b)| a + b);
                    f.discovered &= target.discovered();
                }
                None => found.push(Found {
                    component: &target.component,
                    discovered: target.discovered(),
                    namespaces: count,
                }),
            }
        }
        found
    }
}

/// Why a discovered component is not watched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoverError {
    /// A configured component (which wins) or an earlier discovery judges its Lease, or a
    /// component of its name, in that namespace already.
    #[error("Lease {lease} in {namespace} is watched already")]
    Known { namespace: String, lease: String },
    /// As many discovered components as allowed are watched; counted as a refusal.
    #[error("{max} discovered components are watched already, the most allowed")]
    Full { max: usize },
}

/// The handles of every target.
#[derive(Debug)]
pub struct Targets {
    /// The configured components', for the exporter's whole run.
    fixed: Vec<Arc<Target>>,
    /// Found at run time, ordered by namespace and Lease. Replaced whole on every change, so
    /// that a reader holds one list for as long as it judges, without holding the lock.
    discovered: Mutex<Arc<Vec<Arc<Target>>>>,
    max_discovered: usize,
    /// Discoveries turned away because `max_discovered` were watched.
    refused: AtomicU64,
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
        let fixed = settings
            .components
            .iter()
            .flat_map(|component| {
                scopes.iter().map(|namespace| {
                    Arc::new(Target::new(
                        component.clone(),
                        namespace.clone(),
                        settings.lease_grace,
                        generation.clone(),
                    ))
                })
            })
            .collect();
        Self {
            fixed,
            discovered: Mutex::default(),
            max_discovered: settings.max_discovered,
            refused: AtomicU64::new(0),
            generation,
            grace: settings.lease_grace,
        }
    }

    /// Beyond a lease's duration, before an unchanged record counts as run out.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The configured components' targets, which are never forgotten.
    pub fn handles(&self) -> &[Arc<Target>] {
        &self.fixed
    }

    /// Every target, the configured ones first, as one consistent view: a target discovered
    /// or forgotten meanwhile changes only the next.
    pub fn all(&self) -> Vec<Arc<Target>> {
        let discovered = self.lock_discovered().clone();
        self.fixed
            .iter()
            .chain(discovered.iter())
            .cloned()
            .collect()
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            targets: self.all().iter().map(|t| t.snapshot(now)).collect(),
        }
    }

    /// Every target's [`TargetStatus`] at `now`.
    pub fn status(&self, now: Instant) -> Vec<TargetStatus> {
        self.all().iter().map(|t| t.status(now)).collect()
    }

    fn lock_discovered(&self) -> MutexGuard<'_, Arc<Vec<Arc<Target>>>> {
        self.discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a target for `component`, found from its Lease in `namespace`, and returns it for
    /// its watches to fill; it is blind, as every target is, until both have listed. The
    /// component's origin, [`Component::discovered`]'s, is what labels its series and status.
    pub fn discover(
        &self,
        component: Component,
        namespace: String,
    ) -> Result<Arc<Target>, DiscoverError> {
        let mut discovered = self.lock_discovered();
        if self
            .fixed
            .iter()
            .chain(discovered.iter())
            .any(|t| t.covers(&namespace, &component))
        {
            return Err(DiscoverError::Known {
                namespace,
                lease: component.lease,
            });
        }
        if discovered.len() >= self.max_discovered {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(DiscoverError::Full {
                max: self.max_discovered,
            });
        }
        let target = Arc::new(Target::new(
            component,
            Some(namespace),
            self.grace,
            self.generation.clone(),
        ));
        let mut next = Vec::clone(&discovered);
        let at = next.partition_point(|t| t.key() < target.key());
        next.insert(at, target.clone());
        *discovered = Arc::new(next);
        drop(discovered);
        self.moved_on();
        Ok(target)
    }

    /// Removes the discovered target of Lease `lease` in `namespace`; `false` if there is
    /// none. Its series go with it; its watches are their owner's to stop.
    pub fn forget(&self, namespace: &str, lease: &str) -> bool {
        let mut discovered = self.lock_discovered();
        let Some(at) = discovered.iter().position(|t| t.is(namespace, lease)) else {
            return false;
        };
        let mut next = Vec::clone(&discovered);
        next.remove(at);
        *discovered = Arc::new(next);
        drop(discovered);
        self.moved_on();
        true
    }

    /// Gives the discovered target of `component`'s Lease in `namespace` this component, as
    /// when its holder was resolved again to another workload; `false` if there is no such
    /// target, or it is named otherwise. What its watches have seen stays, so no scrape
    /// meanwhile reads blind or "no leader": its pods watch lists again with the new
    /// selector and swaps the pods in whole when that list is complete.
    pub fn replace(&self, namespace: &str, component: Component) -> bool {
        let discovered = self.lock_discovered().clone();
        let Some(target) = discovered
            .iter()
            .find(|t| t.is(namespace, &component.lease))
        else {
            return false;
        };
        if target.component().name != component.name {
            return false;
        }
        let changed = target.component.send_if_modified(|own| {
            let changed = **own != component;
            if changed {
                *own = Arc::new(component);
            }
            changed
        });
        if changed {
            self.moved_on();
        }
        true
    }

    /// Discoveries turned away since start because the most allowed were watched.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn moved_on(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
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

    fn discovered(lease: &str, workload: &str) -> Component {
        let selector = [("app".to_owned(), workload.to_owned())]
            .into_iter()
            .collect();
        let workload = crate::components::Workload {
            kind: "Deployment".into(),
            name: workload.into(),
            namespace: None,
        };
        Component::discovered(lease, Some((workload, selector)))
    }

    fn leases(targets: &Targets) -> Vec<String> {
        targets
            .all()
            .iter()
            .map(|t| format!("{}/{}", t.scope(), t.component().lease))
            .collect()
    }

    #[test]
    fn discovered_targets_come_and_go_and_move_the_generation_on() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        let before = targets.generation();
        let b = targets
            .discover(discovered("b-lock", "b"), "kubevirt".into())
            .expect("new");
        assert_ne!(targets.generation(), before);
        targets
            .discover(discovered("a-lock", "a"), "kubevirt".into())
            .expect("new");
        // Configured first, then the discovered by namespace and Lease.
        assert_eq!(
            leases(&targets)[3..],
            ["kubevirt/a-lock", "kubevirt/b-lock"]
        );
        assert_eq!(
            targets.handles().len(),
            3,
            "handles are the configured targets"
        );
        list_both(&b, t0);
        let snapshot = targets.snapshot(t0);
        let seen = &snapshot.targets[4];
        assert_eq!(
            (seen.component.as_str(), seen.discovered()),
            ("b-lock", true)
        );
        assert_eq!(seen.verdicts.as_ref().expect("listed")[0].1.pods_ready, 1);
        assert!(!snapshot.targets[0].discovered());
        let before = targets.generation();
        assert!(targets.forget("kubevirt", "b-lock"));
        assert_ne!(targets.generation(), before);
        assert!(!targets.forget("kubevirt", "b-lock"), "forgotten already");
        assert!(!targets.forget("other", "a-lock"), "another namespace's");
        assert_eq!(leases(&targets)[3..], ["kubevirt/a-lock"]);
        assert!(
            targets
                .status(t0)
                .iter()
                .all(|t| t.snapshot.component != "b-lock")
        );
    }

    #[test]
    fn configured_targets_win_and_a_lease_is_discovered_once() {
        let targets = Targets::new(&settings());
        let known = |namespace: &str, lease: &str| DiscoverError::Known {
            namespace: namespace.into(),
            lease: lease.into(),
        };
        // The configured virt-operator watches its Lease in every namespace.
        let operator = Component::discovered("virt-operator", None);
        assert_eq!(
            targets.discover(operator, "kubevirt".into()).err(),
            Some(known("kubevirt", "virt-operator"))
        );
        // So is a component of a configured one's name, whatever its Lease.
        let mut named = discovered("controller-lock", "x");
        named.name = "virt-controller".into();
        assert!(targets.discover(named, "kubevirt".into()).is_err());
        targets
            .discover(discovered("x-lock", "x"), "kubevirt".into())
            .expect("new");
        assert_eq!(
            targets
                .discover(discovered("x-lock", "y"), "kubevirt".into())
                .err(),
            Some(known("kubevirt", "x-lock"))
        );
        targets
            .discover(discovered("x-lock", "x"), "other".into())
            .expect("another namespace's Lease of that name");
        assert_eq!(targets.refused(), 0, "known is not refused");

        // Configured for one namespace only: another namespace's Lease is free.
        let mut s = settings();
        s.namespaces = vec!["kubevirt".into()];
        let targets = Targets::new(&s);
        let operator = || Component::discovered("virt-operator", None);
        assert!(targets.discover(operator(), "kubevirt".into()).is_err());
        assert!(targets.discover(operator(), "other".into()).is_ok());
    }

    #[test]
    fn beyond_the_bound_discoveries_are_refused_and_counted() {
        let mut s = settings();
        s.max_discovered = 1;
        let targets = Targets::new(&s);
        targets
            .discover(discovered("a-lock", "a"), "kubevirt".into())
            .expect("within the bound");
        let before = targets.generation();
        assert_eq!(
            targets
                .discover(discovered("b-lock", "b"), "kubevirt".into())
                .err(),
            Some(DiscoverError::Full { max: 1 })
        );
        assert_eq!(targets.refused(), 1);
        assert_eq!(targets.generation(), before, "nothing changed");
        assert_eq!(targets.all().len(), 4);
        assert!(targets.forget("kubevirt", "a-lock"));
        targets
            .discover(discovered("b-lock", "b"), "kubevirt".into())
            .expect("room again");
        assert_eq!(targets.refused(), 1);
    }

    #[test]
    fn a_replaced_workload_keeps_what_was_seen() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        let target = targets
            .discover(discovered("x-lock", "x"), "kubevirt".into())
            .expect("new");
        held_by_a(&target, t0);
        let mut changes = target.component_changes();
        let before = targets.generation();
        assert!(targets.replace("kubevirt", discovered("x-lock", "x2")));
        assert_ne!(targets.generation(), before);
        assert!(changes.has_changed().expect("open"), "the pods watch wakes");
        assert_eq!(target.component().label_selector(), "app=x2");
        let snapshot = target.snapshot(t0);
        let (_, verdict) = &snapshot.verdicts.as_ref().expect("still sighted")[0];
        assert!(verdict.present && verdict.pods_ready == 1, "{verdict:?}");
        let workload = |s: &TargetSnapshot| match &s.origin {
            Origin::Discovered { workload } => workload.as_ref().map(|w| w.name.clone()),
            Origin::Configured => None,
        };
        assert_eq!(workload(&snapshot).as_deref(), Some("x2"));

        // The same again changes nothing and wakes nobody.
        changes.borrow_and_update();
        let before = targets.generation();
        assert!(targets.replace("kubevirt", discovered("x-lock", "x2")));
        assert_eq!(targets.generation(), before);
        assert!(!changes.has_changed().expect("open"));

        // Abandoned: no workload, no pods to watch.
        assert!(targets.replace("kubevirt", Component::discovered("x-lock", None)));
        assert!(!target.component().watches_pods());
        assert_eq!(workload(&target.snapshot(t0)), None);

        assert!(!targets.replace("other", discovered("x-lock", "x")));
        let mut renamed = discovered("x-lock", "x");
        renamed.name = "y".into();
        assert!(!targets.replace("kubevirt", renamed));
        // The configured ones are never replaced.
        assert!(!targets.replace("kubevirt", Component::discovered("virt-operator", None)));
    }

    #[test]
    fn readiness_waits_for_the_configured_targets_only() {
        let t0 = Instant::now();
        let targets = Targets::new(&settings());
        for target in targets.handles() {
            list_both(target, t0);
        }
        assert!(targets.snapshot(t0).listed());
        targets
            .discover(discovered("x-lock", "x"), "kubevirt".into())
            .expect("new");
        let snapshot = targets.snapshot(t0);
        assert!(snapshot.listed(), "a discovered target blind on its own");
        assert!(
            !snapshot.pods_healthy(),
            "but its watches have not listed yet"
        );
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
