//! The lease book: a component's Lease in each namespace of a scope, as its watch delivered
//! it, with the exporter's own clock on every record. It owns what freshness rests on: when
//! each record last changed, the time the watch was blind (which does not count), and the
//! direct reads that confirm a record nobody renews. Beside the records it keeps each lease's
//! [`History`].

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    history::{History, LeaseStats},
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

#[derive(Debug)]
pub struct LeaseBook {
    /// Beyond the lease duration, before an unchanged record counts as run out.
    grace: Duration,
    leases: BTreeMap<String, LeaseState>,
    /// Per namespace; kept when the Lease is deleted, so that its story stays readable.
    histories: BTreeMap<String, History>,
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
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            leases: BTreeMap::new(),
            histories: BTreeMap::new(),
            relisting: None,
            healthy: false,
            listed_once: false,
            blind_since: None,
        }
    }

    pub fn apply(&mut self, change: LeaseChange, now: Instant) {
        match change {
            LeaseChange::ListStarted => self.relisting = Some(BTreeMap::new()),
            LeaseChange::Listed(namespace, record) => {
                let state = self.observe(&namespace, record, now, false);
                if let Some(listed) = &mut self.relisting {
                    listed.insert(namespace, state);
                }
            }
            LeaseChange::ListDone => self.list_done(now),
            LeaseChange::Applied(namespace, record) => {
                let live = self.blind_since.is_none();
                if live {
                    self.note_expiry(&namespace, now);
                }
                let state = self.observe(&namespace, record, now, live);
                self.leases.insert(namespace, state);
            }
            LeaseChange::Deleted(namespace) => {
                if self.leases.remove(&namespace).is_some()
                    && let Some(history) = self.histories.get_mut(&namespace)
                {
                    history.deleted(now);
                }
            }
        }
    }

    /// The state of `record` as seen at `now`: an unchanged record keeps its change time and
    /// confirmation, so that a re-list of an unrenewed lease does not make it look fresh. A
    /// changed record goes into the lease's history; `live` when a working watch delivered
    /// it as it happened.
    fn observe(
        &mut self,
        namespace: &str,
        record: LeaseRecord,
        now: Instant,
        live: bool,
    ) -> LeaseState {
        if let Some(old) = self.leases.get(namespace)
            && old.record == record
        {
            return old.clone();
        }
        let holder = record.holder.clone().filter(|h| !h.is_empty());
        match self.histories.get_mut(namespace) {
            Some(history) => history.changed(holder, record.transitions, now, live),
            None => {
                let history = if live {
                    History::created(holder, record.transitions, now)
                } else {
                    History::seen(holder, record.transitions, now)
                };
                self.histories.insert(namespace.to_owned(), history);
            }
        }
        LeaseState::new(record, now)
    }

    fn list_done(&mut self, now: Instant) {
        let Some(mut listed) = self.relisting.take() else {
            return;
        };
        let was_blind = self.blind_since.take();
        if let Some(since) = was_blind {
            discount_blind_time(&mut listed, since, now);
        }
        for (namespace, history) in &mut self.histories {
            match listed.get(namespace) {
                None if self.leases.contains_key(namespace) => history.deleted(now),
                Some(state) if was_blind.is_some() => {
                    history.saw_again(now, state.record.transitions);
                }
                _ => {}
            }
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
        if self.blind_since.is_none() {
            self.blind_since = Some(now);
            for (namespace, history) in &mut self.histories {
                if self.leases.contains_key(namespace) {
                    history.blind(now);
                }
            }
        }
    }

    /// Puts a `Lost` event in the history of every lease that has run out by `now`: past its
    /// duration plus the grace, and found unchanged by a direct read (as the verdict
    /// requires). Called when a deadline passes, after a confirming read, and before a
    /// change is applied, so that a late wake-up loses nothing.
    pub fn note_expiries(&mut self, now: Instant) {
        let namespaces: Vec<String> = self.leases.keys().cloned().collect();
        for namespace in namespaces {
            self.note_expiry(&namespace, now);
        }
    }

    fn note_expiry(&mut self, namespace: &str, now: Instant) {
        if self.blind_since.is_some() {
            return;
        }
        let (Some(state), Some(history)) = (
            self.leases.get(namespace),
            self.histories.get_mut(namespace),
        ) else {
            return;
        };
        let expired_at = state
            .duration()
            .and_then(|d| state.changed_at.checked_add(d.saturating_add(self.grace)));
        if let Some(at) = expired_at
            && at < now
            && state.confirmed()
        {
            history.lost(at, state.record.transitions);
        }
    }

    /// The figures a scrape exports, per namespace.
    pub fn stats(&self, now: Instant) -> BTreeMap<String, LeaseStats> {
        self.histories
            .iter()
            .map(|(namespace, history)| (namespace.clone(), history.stats(now)))
            .collect()
    }

    /// A container of the pod holding the lease in `namespace` restarted; `restarts` in all.
    pub fn holder_restarted(&mut self, namespace: &str, restarts: u32, now: Instant) {
        if let Some(history) = self.histories.get_mut(namespace) {
            history.holder_restarted(restarts, now);
        }
    }

    pub fn history(&self, namespace: &str) -> Option<&History> {
        self.histories.get(namespace)
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn grace(&self) -> Duration {
        self.grace
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
                self.note_expiry(namespace, now);
                Confirmation::Unchanged
            }
            (None, None) => Confirmation::Unchanged,
            (_, fresh) => {
                // Blind first: the watch missed changes, so the newer record is no renewal
                // seen as it happened.
                self.failed(now);
                match fresh {
                    Some(record) => self.apply(LeaseChange::Applied(namespace.into(), record), now),
                    None => self.apply(LeaseChange::Deleted(namespace.into()), now),
                }
                Confirmation::Behind
            }
        }
    }

    /// The next instant at which a verdict may change without any event: a lease is due
    /// for confirmation, or runs out after its duration plus `grace`.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let grace = self.grace;
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
        let mut book = LeaseBook::new(Duration::from_secs(5));
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
            book.next_deadline(at(16)),
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

    fn story(book: &LeaseBook) -> Vec<&'static str> {
        book.history(NS)
            .expect("history")
            .events()
            .map(|e| e.kind.name())
            .collect()
    }

    #[test]
    fn the_history_follows_the_watch_and_the_confirming_reads() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut book = listed(t0);
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r1")), at(0));
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r2")), at(2));
        book.apply(LeaseChange::Applied(NS.into(), record("a", "r3")), at(4));
        // The holder stops; the read at 19 s confirms it; the deadline at 24 s passes.
        assert_eq!(
            book.confirm(NS, Some(record("a", "r3")), at(19)),
            Confirmation::Unchanged
        );
        book.note_expiries(at(23));
        // Created under the exporter's eyes: acquired.
        assert_eq!(
            story(&book),
            ["acquired"],
            "not run out before 4 + 15 + 5 s"
        );
        book.note_expiries(at(25));
        book.note_expiries(at(26));
        let lost = book.history(NS).and_then(|h| h.events().last().cloned());
        assert_eq!(lost.map(|e| e.at), Some(at(24)), "lost when it ran out");
        // A standby takes over.
        let mut taken = record("b", "r4");
        taken.transitions = Some(1);
        book.apply(LeaseChange::Applied(NS.into(), taken), at(30));
        assert_eq!(story(&book), ["acquired", "lost", "changed"]);
        let stats = &book.stats(at(31))[NS];
        assert_eq!(
            (stats.changes, stats.holder_since),
            (2, Duration::from_secs(1))
        );
        assert_eq!(stats.renewals.count, 2, "a -> a at 2 s and at 4 s");

        // A watch that fell behind: the newer record is no renewal seen as it happened.
        assert_eq!(
            book.confirm(NS, Some(record("b", "r9")), at(50)),
            Confirmation::Behind
        );
        relist(&mut book, &[(NS, record("b", "r10"))], at(51));
        book.apply(LeaseChange::Applied(NS.into(), record("b", "r11")), at(53));
        assert_eq!(book.stats(at(53))[NS].renewals.count, 2);
        assert_eq!(
            story(&book),
            ["acquired", "lost", "changed", "blind", "saw_again"]
        );
        // Gone from a relist: deleted, and the story is kept.
        relist(&mut book, &[], at(60));
        assert_eq!(
            story(&book),
            [
                "acquired",
                "lost",
                "changed",
                "blind",
                "saw_again",
                "deleted"
            ]
        );
        assert_eq!(book.stats(at(60))[NS].changes, 3);
    }
}
