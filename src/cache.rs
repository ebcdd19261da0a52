//! What the exporter knows: per component and scope, the pods and leases its watches have
//! listed, whether those watches can be trusted, and when each lease record last changed.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::{Deref, DerefMut},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    config::{Component, Settings},
    judge::{LeaseRecord, LeaseSeen, PodInfo, Reason, Verdict, judge},
};

/// Namespace and name of an object.
pub type Key = (String, String);

/// The objects one watch has delivered.
#[derive(Debug)]
pub struct Slot<T> {
    objects: BTreeMap<Key, T>,
    /// Filled while a (re)list is in progress, swapped in when it completes, so that a
    /// half-finished list never shows and objects deleted meanwhile disappear.
    relisting: Option<BTreeMap<Key, T>>,
    synced: bool,
    healthy: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relisting: None,
            synced: false,
            healthy: false,
        }
    }
}

impl<T> Slot<T> {
    /// The first full list has completed at some point.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The last (re)list completed and no error was seen since.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn objects(&self) -> &BTreeMap<Key, T> {
        &self.objects
    }

    fn begin_list(&mut self) {
        self.relisting = Some(BTreeMap::new());
    }

    fn end_list(&mut self) {
        if let Some(listed) = self.relisting.take() {
            self.objects = listed;
            self.synced = true;
            self.healthy = true;
        }
    }

    fn put(&mut self, key: Key, value: T, during_list: bool) {
        match (&mut self.relisting, during_list) {
            (Some(listed), true) => listed.insert(key, value),
            _ => self.objects.insert(key, value),
        };
    }

    fn remove(&mut self, key: &Key) {
        self.objects.remove(key);
    }

    fn fail(&mut self) {
        self.healthy = false;
        self.relisting = None;
    }
}

/// The last state logged for one namespace, to log only changes.
#[derive(Clone, Debug, PartialEq)]
struct Logged {
    present: bool,
    holder: Option<String>,
}

/// One component within one scope (a namespace, or the whole cluster): the unit a pair of
/// watches (pods and leases) fills.
#[derive(Debug)]
pub struct Target {
    pub component: Component,
    /// `None`: the whole cluster.
    pub namespace: Option<String>,
    pub pods: Slot<PodInfo>,
    pub leases: Slot<LeaseSeen>,
    /// When each lease (by namespace) was last confirmed with a direct read.
    confirmed: BTreeMap<String, Instant>,
    /// Since when the lease watch has been failing, if it is.
    leases_blind_since: Option<Instant>,
    logged: BTreeMap<String, Logged>,
}

/// A watch event, already reduced to what the cache keeps.
#[derive(Debug)]
pub enum Change<T> {
    /// A (re)list starts.
    Begin,
    /// An object of the (re)list.
    Listed(Key, T),
    /// The (re)list is complete.
    End,
    Applied(Key, T),
    Deleted(Key),
}

impl Target {
    pub fn new(component: Component, namespace: Option<String>) -> Self {
        Self {
            component,
            namespace,
            pods: Slot::default(),
            leases: Slot::default(),
            confirmed: BTreeMap::new(),
            leases_blind_since: None,
            logged: BTreeMap::new(),
        }
    }

    /// Where this target's watches look, for logs.
    pub fn scope(&self) -> &str {
        self.namespace.as_deref().unwrap_or("all namespaces")
    }

    pub fn apply_pod(&mut self, change: Change<PodInfo>) {
        match change {
            Change::Begin => self.pods.begin_list(),
            Change::Listed(key, pod) => self.pods.put(key, pod, true),
            Change::End => self.pods.end_list(),
            Change::Applied(key, pod) => self.pods.put(key, pod, false),
            Change::Deleted(key) => self.pods.remove(&key),
        }
    }

    /// Records a lease. The change time moves only when the record differs from the one
    /// held, so that a re-list of an unrenewed lease does not make it look fresh.
    pub fn apply_lease(&mut self, change: Change<LeaseRecord>, now: Instant) {
        match change {
            Change::Begin => self.leases.begin_list(),
            Change::Listed(key, record) => {
                let seen = self.observe(&key, record, now);
                self.leases.put(key, seen, true);
            }
            Change::End => {
                self.discount_blind_time(now);
                self.leases.end_list();
                let live: BTreeSet<&String> =
                    self.leases.objects.keys().map(|(ns, _)| ns).collect();
                self.confirmed.retain(|ns, _| live.contains(ns));
            }
            Change::Applied(key, record) => {
                let seen = self.observe(&key, record, now);
                self.leases.put(key, seen, false);
            }
            Change::Deleted(key) => {
                self.confirmed.remove(&key.0);
                self.leases.remove(&key);
            }
        }
    }

    fn observe(&self, key: &Key, record: LeaseRecord, now: Instant) -> LeaseSeen {
        match self.leases.objects.get(key) {
            Some(old) if old.record == record => old.clone(),
            _ => LeaseSeen {
                record,
                changed_at: now,
            },
        }
    }

    /// A watch failed: until its next complete list, nothing it delivered is trusted.
    pub fn pods_failed(&mut self) {
        self.pods.fail();
    }

    /// The lease watch failed at `now`.
    pub fn leases_failed(&mut self, now: Instant) {
        self.leases.fail();
        self.leases_blind_since.get_or_insert(now);
    }

    /// The exporter's clock for a lease runs only while it can see the lease: a record that
    /// did not change across a blind spell has its change time moved on by the spell's
    /// length. Otherwise a live leader that renewed during an API server outage would look
    /// dead after it, while a dead leader still accumulates age whenever the exporter can see.
    fn discount_blind_time(&mut self, now: Instant) {
        let Some(since) = self.leases_blind_since.take() else {
            return;
        };
        let blind = now.saturating_duration_since(since);
        for seen in self
            .leases
            .relisting
            .iter_mut()
            .flat_map(|m| m.values_mut())
        {
            if seen.changed_at < since {
                seen.changed_at = seen
                    .changed_at
                    .checked_add(blind)
                    .map_or(now, |t| t.min(now));
            }
        }
    }

    /// Neither watch has a problem: the cache can be judged.
    pub fn sighted(&self) -> bool {
        self.pods.healthy && self.leases.healthy
    }

    /// Leases whose record has not changed for a full lease duration and that have not been
    /// confirmed by a direct read within the last lease duration.
    pub fn leases_to_confirm(&self, now: Instant) -> Vec<Key> {
        self.leases
            .objects
            .iter()
            .filter(|(key, seen)| self.confirm_due(&key.0, seen).is_some_and(|due| due <= now))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn confirm_due(&self, namespace: &str, seen: &LeaseSeen) -> Option<Instant> {
        let duration = seen.duration()?;
        let since = match self.confirmed.get(namespace) {
            Some(&at) if at > seen.changed_at => at,
            _ => seen.changed_at,
        };
        since.checked_add(duration)
    }

    pub fn mark_confirmed(&mut self, namespace: &str, now: Instant) {
        self.confirmed.insert(namespace.to_owned(), now);
    }

    /// The next instant at which something may change without any event: a lease is due for
    /// confirmation or runs out.
    pub fn next_deadline(&self, now: Instant, grace: Duration) -> Option<Instant> {
        self.leases
            .objects
            .iter()
            .flat_map(|((ns, _), seen)| {
                let expiry = seen
                    .duration()
                    .and_then(|d| seen.changed_at.checked_add(d.saturating_add(grace)))
                    .and_then(|t| t.checked_add(Duration::from_millis(1)));
                [self.confirm_due(ns, seen), expiry]
            })
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// Judges every namespace where the component has pods or a lease, or `None` when the
    /// watches cannot be trusted: blind is not "no leader".
    pub fn verdicts(&self, now: Instant, grace: Duration) -> Option<Vec<(String, Verdict)>> {
        if !self.sighted() {
            return None;
        }
        let verdicts = self
            .namespaces()
            .into_iter()
            .filter_map(|ns| {
                let lease = self.lease_in(ns);
                let verdict = judge(self.pods_in(ns), lease, now, grace);
                let unconfirmed = matches!(verdict.reason, Reason::Expired { .. })
                    && lease.is_some_and(|l| !self.confirmed_since_change(ns, l));
                (!unconfirmed).then(|| (ns.clone(), verdict))
            })
            .collect();
        Some(verdicts)
    }

    /// An expired lease is reported only once a direct read has confirmed it, so that a
    /// hung watch alone cannot produce "no leader".
    fn confirmed_since_change(&self, namespace: &str, lease: &LeaseSeen) -> bool {
        self.confirmed
            .get(namespace)
            .is_some_and(|&at| at >= lease.changed_at)
    }

    fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.pods
            .objects
            .range((namespace.to_owned(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, pod)| pod)
    }

    fn lease_in(&self, namespace: &str) -> Option<&LeaseSeen> {
        self.leases
            .objects
            .iter()
            .find(|((ns, _), _)| ns == namespace)
            .map(|(_, seen)| seen)
    }

    /// Logs leader changes since the last call: operators grep for these lines.
    pub fn log_changes(&mut self, now: Instant, grace: Duration) {
        let Some(verdicts) = self.verdicts(now, grace) else {
            return;
        };
        let component = self.component.name.as_str();
        for (ns, v) in verdicts {
            let state = Logged {
                present: v.present,
                holder: v.holder.clone(),
            };
            log_change(self.logged.get(&ns), &state, &ns, component, &v);
            self.logged.insert(ns, state);
        }
        let known: BTreeSet<String> = self.namespaces().into_iter().cloned().collect();
        self.logged.retain(|ns, _| known.contains(ns));
    }

    fn namespaces(&self) -> BTreeSet<&String> {
        self.pods
            .objects
            .keys()
            .chain(self.leases.objects.keys())
            .map(|(ns, _)| ns)
            .collect()
    }
}

fn log_change(old: Option<&Logged>, new: &Logged, namespace: &str, component: &str, v: &Verdict) {
    let holder = new.holder.as_deref().unwrap_or("");
    let reason = v.reason.to_string();
    match old {
        None if new.present => tracing::info!(namespace, component, holder, "leader present"),
        None => tracing::info!(namespace, component, holder, reason, "no leader"),
        Some(old) if old.holder != new.holder => {
            let previous = old.holder.as_deref().unwrap_or("");
            tracing::info!(
                namespace,
                component,
                holder,
                previous,
                present = new.present,
                "leader changed"
            );
        }
        Some(old) if old.present && !new.present => {
            tracing::info!(namespace, component, holder, reason, "leader lost")
        }
        Some(old) if !old.present && new.present => {
            tracing::info!(namespace, component, holder, "leader back")
        }
        Some(_) => {}
    }
    if !new.present && old.is_none_or(|o| o.present || o.holder != new.holder) {
        tracing::debug!(namespace, component, holder, reason, "leader not present");
    }
}

/// Everything the exporter knows, shared by the watch tasks and the HTTP handlers.
#[derive(Debug)]
pub struct Cache {
    targets: Vec<Mutex<Target>>,
    pub grace: Duration,
    /// Bumped by every update, so that what was computed from the cache can tell whether
    /// it still stands.
    generation: AtomicU64,
}

/// A target locked for an update; the cache's generation moves on when it is released.
pub struct Updating<'a> {
    guard: MutexGuard<'a, Target>,
    generation: &'a AtomicU64,
}

impl Deref for Updating<'_> {
    type Target = Target;

    fn deref(&self) -> &Target {
        &self.guard
    }
}

impl DerefMut for Updating<'_> {
    fn deref_mut(&mut self) -> &mut Target {
        &mut self.guard
    }
}

impl Drop for Updating<'_> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl Cache {
    /// One target per component and scope.
    pub fn new(settings: &Settings) -> Self {
        let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings.namespaces.iter().cloned().map(Some).collect()
        };
        let targets = settings
            .components
            .iter()
            .flat_map(|c| {
                scopes
                    .iter()
                    .map(|s| Mutex::new(Target::new(c.clone(), s.clone())))
            })
            .collect();
        Self {
            targets,
            grace: settings.lease_grace,
            generation: AtomicU64::new(0),
        }
    }

    /// The target at `index`, to change it.
    pub fn update(&self, index: usize) -> Updating<'_> {
        Updating {
            guard: self.target(index),
            generation: &self.generation,
        }
    }

    /// Changes whenever a target is updated.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The target at `index`, to read it. A panic elsewhere while holding the lock leaves
    /// plain data behind, so a poisoned lock is used as it is.
    pub fn target(&self, index: usize) -> MutexGuard<'_, Target> {
        self.targets[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn targets(&self) -> impl Iterator<Item = MutexGuard<'_, Target>> {
        (0..self.targets.len()).map(|i| self.target(i))
    }

    /// Every watch has completed its first list.
    pub fn synced(&self) -> bool {
        self.targets().all(|t| t.pods.synced() && t.leases.synced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_components;

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
    }

    fn record(holder: &str, renew: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            duration_seconds: Some(15),
            transitions: Some(0),
            renew_time: Some(renew.into()),
            acquire_time: None,
            has_spec: true,
        }
    }

    fn ready(name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            ready_condition: true,
            deleting: false,
        }
    }

    fn synced_target() -> Target {
        let mut t = Target::new(default_components().remove(0), None);
        t.apply_pod(Change::Begin);
        t.apply_pod(Change::End);
        t.apply_lease(Change::Begin, Instant::now());
        t.apply_lease(Change::End, Instant::now());
        t
    }

    #[test]
    fn blind_until_both_lists_complete_and_after_a_failure() {
        let t0 = Instant::now();
        let mut t = Target::new(default_components().remove(0), None);
        assert!(t.verdicts(t0, Duration::ZERO).is_none());
        t.apply_pod(Change::Begin);
        t.apply_pod(Change::Listed(key("kubevirt", "a"), ready("a")));
        t.apply_pod(Change::End);
        assert!(t.verdicts(t0, Duration::ZERO).is_none());
        t.apply_lease(Change::Begin, t0);
        t.apply_lease(Change::End, t0);
        let v = t.verdicts(t0, Duration::ZERO).expect("sighted");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1.pods_ready, 1);
        t.leases_failed(t0);
        assert!(t.verdicts(t0, Duration::ZERO).is_none());
        assert!(t.leases.synced());
    }

    #[test]
    fn relist_replaces_contents_atomically() {
        let t0 = Instant::now();
        let mut t = synced_target();
        t.apply_pod(Change::Applied(key("kubevirt", "a"), ready("a")));
        t.apply_pod(Change::Applied(key("kubevirt", "b"), ready("b")));
        t.apply_pod(Change::Begin);
        t.apply_pod(Change::Listed(key("kubevirt", "b"), ready("b")));
        // Mid-list the old contents still stand.
        assert_eq!(
            t.verdicts(t0, Duration::ZERO).expect("sighted")[0].1.pods,
            2
        );
        t.apply_pod(Change::End);
        assert_eq!(
            t.verdicts(t0, Duration::ZERO).expect("sighted")[0].1.pods,
            1
        );
    }

    #[test]
    fn unchanged_record_keeps_its_change_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut t = synced_target();
        let k = key("kubevirt", "virt-operator");
        t.apply_lease(Change::Applied(k.clone(), record("a", "r1")), t0);
        t.apply_lease(Change::Begin, t1);
        t.apply_lease(Change::Listed(k.clone(), record("a", "r1")), t1);
        t.apply_lease(Change::End, t1);
        assert_eq!(t.leases.objects()[&k].changed_at, t0);
        t.apply_lease(Change::Applied(k.clone(), record("a", "r2")), t1);
        assert_eq!(t.leases.objects()[&k].changed_at, t1);
    }

    #[test]
    fn blind_time_does_not_age_a_lease() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let grace = Duration::from_secs(5);
        let k = key("kubevirt", "virt-operator");
        let mut t = synced_target();
        t.apply_pod(Change::Applied(key("kubevirt", "a"), ready("a")));
        t.apply_lease(Change::Applied(k.clone(), record("a", "r1")), t0);
        // The watch fails at 5 s and lists again at 65 s: the unchanged record is 5 s old.
        t.leases_failed(at(5));
        t.apply_lease(Change::Begin, at(65));
        t.apply_lease(Change::Listed(k.clone(), record("a", "r1")), at(65));
        t.apply_lease(Change::End, at(65));
        assert_eq!(t.leases.objects()[&k].changed_at, at(60));
        let v = t.verdicts(at(66), grace).expect("sighted");
        assert!(v[0].1.present, "{:?}", v[0].1.reason);
        // A dead leader still dies by the sighted clock: 20 s of sight after its last change.
        t.mark_confirmed("kubevirt", at(81));
        let v = t.verdicts(at(81), grace).expect("sighted");
        assert!(!v[0].1.present);
        // A second relist without a failure moves nothing.
        t.apply_lease(Change::Begin, at(90));
        t.apply_lease(Change::Listed(k.clone(), record("a", "r1")), at(90));
        t.apply_lease(Change::End, at(90));
        assert_eq!(t.leases.objects()[&k].changed_at, at(60));
    }

    #[test]
    fn confirmation_is_due_once_per_duration() {
        let t0 = Instant::now();
        let mut t = synced_target();
        let k = key("kubevirt", "virt-operator");
        t.apply_lease(Change::Applied(k.clone(), record("a", "r1")), t0);
        assert!(t.leases_to_confirm(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(
            t.leases_to_confirm(t0 + Duration::from_secs(15)),
            vec![k.clone()]
        );
        t.mark_confirmed("kubevirt", t0 + Duration::from_secs(15));
        assert!(t.leases_to_confirm(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(t.leases_to_confirm(t0 + Duration::from_secs(30)), vec![k]);
        let grace = Duration::from_secs(5);
        assert_eq!(
            t.next_deadline(t0 + Duration::from_secs(16), grace),
            Some(t0 + Duration::from_millis(20_001))
        );
    }

    #[test]
    fn cache_has_a_target_per_component_and_namespace() {
        let mut s = Settings::with_defaults(Duration::from_secs(5));
        assert_eq!(Cache::new(&s).len(), 3);
        s.namespaces = vec!["a".into(), "b".into()];
        let c = Cache::new(&s);
        assert_eq!(c.len(), 6);
        assert!(!c.synced());
        assert_eq!(c.target(1).namespace.as_deref(), Some("b"));
    }
}
