//! The lease book: a component's Lease in each namespace of a scope, as its watch delivered
//! it, with the exporter's own clock on every record. It owns what freshness rests on: when
//! each record last changed, the time the watch was blind (which does not count), and the
//! direct reads that confirm a record nobody renews.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    judge::{LeaseRecord, LeaseState},
    objects::Change,
};

/// A change to the book, keyed by namespace (a component has one Lease per namespace).
pub type LeaseChange = Change<String, LeaseRecord>;

/// What a direct read of a lease showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The record the watch delivered is the current one.
    Unchanged,
    /// The API server holds a newer record: the watch fell behind and must start over. The
    /// newer record is already in the book.
    Behind,
}

#[derive(Debug, Default)]
pub struct LeaseBook {
    leases: BTreeMap<String, LeaseState>,
    /// Filled while a (re)list is in progress, swapped in when it completes.
    relisting: Option<BTreeMap<String, LeaseState>>,
    /// The last (re)list completed and no error was seen since.
    healthy: bool,
    /// A list has completed at some point.
    listed_once: bool,
    /// Since when the watch has been failing, if it is.
    blind_since: Option<Instant>,
}

impl LeaseBook {
    pub fn apply(&mut self, change: LeaseChange, now: Instant) {
        match change {
            LeaseChange::ListStarted => self.relisting = Some(BTreeMap::new()),
            LeaseChange::Listed(namespace, record) => {
                let state = self.observe(&namespace, record, now);
                if let Some(listed) = &mut self.relisting {
                    listed.insert(namespace, state);
                }
            }
            LeaseChange::ListDone => self.list_done(now),
            LeaseChange::Applied(namespace, record) => {
                let state = self.observe(&namespace, record, now);
                self.leases.insert(namespace, state);
            }
            LeaseChange::Deleted(namespace) => {
                self.leases.remove(&namespace);
            }
        }
    }

    /// The state of `record` as seen at `now`: an unchanged record keeps its change time and
    /// confirmation, so that a re-list of an unrenewed lease does not make it look fresh.
    fn observe(&self, namespace: &str, record: LeaseRecord, now: Instant) -> LeaseState {
        match self.leases.get(namespace) {
            Some(old) if old.record == record => old.clone(),
            _ => LeaseState::new(record, now),
        }
    }

    fn list_done(&mut self, now: Instant) {
        let Some(mut listed) = self.relisting.take() else {
            return;
        };
        if let Some(since) = self.blind_since.take() {
            discount_blind_time(&mut listed, since, now);
        }
        self.leases = listed;
        self.healthy = true;
        self.listed_once = true;
    }

    /// The watch failed at `now`: nothing it delivered is trusted until its next complete
    /// list, and the lease clock stops until then.
    pub fn failed(&mut self, now: Instant) {
        self.healthy = false;
        self.relisting = None;
        self.blind_since.get_or_insert(now);
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn listed_once(&self) -> bool {
        self.listed_once
    }

    pub fn get(&self, namespace: &str) -> Option<&LeaseState> {
        self.leases.get(namespace)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.leases.keys().map(String::as_str)
    }

    /// Namespaces whose lease has not changed for a full lease duration and has not been
    /// confirmed by a direct read within the last lease duration.
    pub fn due_for_confirmation(&self, now: Instant) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(_, state)| confirmation_due(state).is_some_and(|due| due <= now))
            .map(|(namespace, _)| namespace.clone())
            .collect()
    }

    /// Records what a direct read of the lease in `namespace` found at `now`.
    pub fn confirm(
        &mut self,
        namespace: &str,
        fresh: Option<LeaseRecord>,
        now: Instant,
    ) -> Confirmation {
        let held = self.leases.get_mut(namespace);
        match (held, fresh) {
            (Some(state), Some(record)) if state.record == record => {
                state.confirmed_at = Some(now);
                Confirmation::Unchanged
            }
            (None, None) => Confirmation::Unchanged,
            (_, fresh) => {
                match fresh {
                    Some(record) => self.apply(LeaseChange::Applied(namespace.into(), record), now),
                    None => self.apply(LeaseChange::Deleted(namespace.into()), now),
                }
                self.failed(now);
                Confirmation::Behind
            }
        }
    }

    /// The next instant at which a verdict may change without any event: a lease is due
    /// for confirmation, or runs out after its duration plus `grace`.
    pub fn next_deadline(&self, now: Instant, grace: Duration) -> Option<Instant> {
        self.leases
            .values()
            .flat_map(|state| {
                let expiry = state
                    .duration()
                    .and_then(|d| state.changed_at.checked_add(d.saturating_add(grace)))
                    .and_then(|t| t.checked_add(Duration::from_millis(1)));
                [confirmation_due(state), expiry]
            })
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

/// When a direct read of `state` is due: one lease duration after its last change or its
/// last confirmation, whichever is later.
fn confirmation_due(state: &LeaseState) -> Option<Instant> {
    let duration = state.duration()?;
    let since = match state.confirmed_at {
        Some(at) if at > state.changed_at => at,
        _ => state.changed_at,
    };
    since.checked_add(duration)
}

/// The exporter's clock for a lease runs only while it can see the lease: a record that did
/// not change across a blind spell has its change time moved on by the spell's length.
/// Otherwise a live leader that renewed during an API server outage would look dead after
/// it, while a dead leader still accumulates age whenever the exporter can see.
fn discount_blind_time(leases: &mut BTreeMap<String, LeaseState>, since: Instant, now: Instant) {
    let blind = now.saturating_duration_since(since);
    for state in leases.values_mut() {
        if state.changed_at < since {
            state.changed_at = state
                .changed_at
                .checked_add(blind)
                .map_or(now, |t| t.min(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "kubevirt";

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

    fn listed(now: Instant) -> LeaseBook {
        let mut book = LeaseBook::default();
        book.apply(LeaseChange::ListStarted, now);
        book.apply(LeaseChange::ListDone, now);
        book
    }

    fn relist(book: &mut LeaseBook, records: &[(&str, LeaseRecord)], now: Instant) {
        book.apply(LeaseChange::ListStarted, now);
        for (ns, r) in records {
            book.apply(LeaseChange::Listed((*ns).into(), r.clone()), now);
        }
        book.apply(LeaseChange::ListDone, now);
    }

    #[test]
    fn unchanged_record_keeps_its_change_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut book = listed(t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r1")), t0);
        relist(&mut book, &[(NS, record("a", "r1"))], t1);
        assert_eq!(book.get(NS).expect("lease").changed_at, t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r2")), t1);
        assert_eq!(book.get(NS).expect("lease").changed_at, t1);
    }

    #[test]
    fn blind_time_does_not_age_a_lease() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut book = listed(t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r1")), t0);
        // The watch fails at 5 s and lists again at 65 s: the unchanged record is 5 s old.
        book.failed(at(5));
        assert!(!book.healthy());
        relist(&mut book, &[(NS, record("a", "r1"))], at(65));
        assert!(book.healthy());
        assert_eq!(book.get(NS).expect("lease").changed_at, at(60));
        // A second relist without a failure moves nothing.
        relist(&mut book, &[(NS, record("a", "r1"))], at(90));
        assert_eq!(book.get(NS).expect("lease").changed_at, at(60));
    }

    #[test]
    fn confirmation_is_due_once_per_duration() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut book = listed(t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r1")), t0);
        assert!(book.due_for_confirmation(at(14)).is_empty());
        assert_eq!(book.due_for_confirmation(at(15)), [NS]);
        assert_eq!(
            book.confirm(NS, Some(record("a", "r1")), at(15)),
            Confirmation::Unchanged
        );
        assert!(book.get(NS).expect("lease").confirmed());
        assert!(book.due_for_confirmation(at(29)).is_empty());
        assert_eq!(book.due_for_confirmation(at(30)), [NS]);
        assert_eq!(
            book.next_deadline(at(16), Duration::from_secs(5)),
            Some(t0 + Duration::from_millis(20_001))
        );
    }

    #[test]
    fn a_newer_record_on_the_server_means_the_watch_fell_behind() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut book = listed(t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r1")), t0);
        assert_eq!(
            book.confirm(NS, Some(record("a", "r9")), at(15)),
            Confirmation::Behind
        );
        let state = book.get(NS).expect("lease");
        assert_eq!((state.changed_at, state.confirmed()), (at(15), false));
        assert!(!book.healthy(), "the watch must list again");
        // A lease that is gone on the server is gone from the book.
        assert_eq!(book.confirm(NS, None, at(16)), Confirmation::Behind);
        assert!(book.get(NS).is_none());
    }
}
