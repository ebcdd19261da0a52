//! What happened to a component's lease in one namespace, kept for people: who held it and
//! since when, the holder's changes, losses and returns and the exporter's blind spells as a
//! bounded timeline, and how regularly the holder renewed. A leader whose renewals slip
//! towards its renew deadline is in trouble before it loses the lease.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Events kept per component and namespace; older ones are dropped.
pub const EVENTS_KEPT: usize = 50;

/// Upper bounds of the renewal interval histogram, in seconds: they resolve KubeVirt's 2 s
/// retry period and reach past its 10 s renew deadline and 15 s lease duration.
pub const RENEWAL_BUCKETS: [f64; 11] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0];

/// How far back the recent renewal intervals reach.
pub const RECENT_FOR: Duration = Duration::from_secs(300);

/// At most this many recent intervals are kept, whatever the renewal rate.
const RECENT_KEPT: usize = 300;

/// Something that happened to a lease, as the exporter saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The exporter saw the lease for the first time (at its start, or when it appeared).
    Seen,
    /// A holder took a lease that had none.
    Acquired,
    /// Another holder took the lease over.
    Changed { previous: String },
    /// The holder gave the lease up (an empty holder).
    Released { previous: String },
    /// The holder stopped renewing: the record has not changed for the lease duration plus
    /// the grace, confirmed by a direct read.
    Lost,
    /// The holder renewed again after it was lost.
    Back,
    /// The Lease object was deleted.
    Deleted,
    /// The lease watch failed: what happens next is not seen until it lists again.
    Blind,
    /// The lease watch listed again after failing.
    SawAgain,
    /// A container of the holder's pod restarted (a crash, an OOM kill, a failed liveness
    /// probe); `restarts` in all. A client-go elector that comes back under the same
    /// identity renews its own lease at once, so the lease alone never shows this.
    HolderRestarted { restarts: u32 },
}

impl EventKind {
    /// A short name, as in `/status.json`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Seen => "seen",
            EventKind::Acquired => "acquired",
            EventKind::Changed { .. } => "changed",
            EventKind::Released { .. } => "released",
            EventKind::Lost => "lost",
            EventKind::Back => "back",
            EventKind::Deleted => "deleted",
            EventKind::Blind => "blind",
            EventKind::SawAgain => "saw_again",
            EventKind::HolderRestarted { .. } => "holder_restarted",
        }
    }
}

/// One event, with the facts at that moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// By the exporter's monotonic clock; shown as wall-clock time.
    pub at: Instant,
    pub kind: EventKind,
    /// The holder after the event.
    pub holder: Option<String>,
    /// The lease's leaseTransitions after the event.
    pub transitions: Option<i32>,
}

/// The renewal interval histogram, cumulative as Prometheus exposes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RenewalCounts {
    /// Per bound of [`RENEWAL_BUCKETS`], the intervals at most that long.
    pub buckets: [u64; RENEWAL_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl RenewalCounts {
    fn observe(&mut self, interval: Duration) {
        let seconds = interval.as_secs_f64();
        for (bound, count) in RENEWAL_BUCKETS.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The figures a scrape exports for one lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseStats {
    /// Holder changes seen, to and from no holder included.
    pub changes: u64,
    /// How long the current holder has held the lease, by this process's clock.
    pub holder_since: Duration,
    pub renewals: RenewalCounts,
}

/// The history of one lease.
#[derive(Clone, Debug)]
pub struct History {
    events: VecDeque<Event>,
    holder: Option<String>,
    holder_since: Instant,
    changes: u64,
    renewals: RenewalCounts,
    recent: VecDeque<(Instant, Duration)>,
    /// The holder's last renewal seen by a working watch; `None` after a blind spell, so
    /// that no interval spans one.
    last_renewal: Option<Instant>,
    /// A `Lost` event stands for the current record.
    lost: bool,
}

impl History {
    fn empty(now: Instant) -> Self {
        Self {
            events: VecDeque::new(),
            holder: None,
            holder_since: now,
            changes: 0,
            renewals: RenewalCounts::default(),
            recent: VecDeque::new(),
            last_renewal: None,
            lost: false,
        }
    }

    /// First sight of a lease at `now`, held by `holder`: at start-up, or after a blind
    /// spell. Not a change: the exporter did not see it happen.
    pub fn seen(holder: Option<String>, transitions: Option<i32>, now: Instant) -> Self {
        let mut history = Self::empty(now);
        history.holder = holder;
        history.push(now, EventKind::Seen, transitions);
        history
    }

    /// A lease created while the exporter watched, at `now`: its first holder acquired it
    /// then, which counts as a change.
    pub fn created(holder: Option<String>, transitions: Option<i32>, now: Instant) -> Self {
        let mut history = Self::empty(now);
        if holder.is_some() {
            history.changed(holder, transitions, now, true);
        } else {
            history.push(now, EventKind::Seen, transitions);
        }
        history
    }

    /// Appends an event; the timeline stays in order even for an event dated back (a loss
    /// noticed after a blind spell that ended later than the lease ran out).
    fn push(&mut self, at: Instant, kind: EventKind, transitions: Option<i32>) {
        let at = self.events.back().map_or(at, |last| at.max(last.at));
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at,
            kind,
            holder: self.holder.clone(),
            transitions,
        });
    }

    /// The record changed at `now` and names `holder`. `live`: a working watch delivered it
    /// as it happened, rather than a list after a blind spell.
    pub fn changed(
        &mut self,
        holder: Option<String>,
        transitions: Option<i32>,
        now: Instant,
        live: bool,
    ) {
        let was_lost = std::mem::take(&mut self.lost);
        if holder == self.holder {
            if was_lost {
                self.push(now, EventKind::Back, transitions);
            }
            if let Some(last) = self.last_renewal.filter(|_| live && holder.is_some()) {
                self.observe(now, now.saturating_duration_since(last));
            }
        } else {
            let previous = std::mem::replace(&mut self.holder, holder);
            self.changes += 1;
            self.holder_since = now;
            let kind = match (previous, &self.holder) {
                (None, _) => EventKind::Acquired,
                (Some(previous), Some(_)) => EventKind::Changed { previous },
                (Some(previous), None) => EventKind::Released { previous },
            };
            self.push(now, kind, transitions);
        }
        self.last_renewal = live.then_some(now);
    }

    fn observe(&mut self, now: Instant, interval: Duration) {
        self.renewals.observe(interval);
        if self.recent.len() == RECENT_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((now, interval));
    }

    /// The holder stopped renewing: its record ran out at `expired_at`. Said once per record.
    pub fn lost(&mut self, expired_at: Instant, transitions: Option<i32>) {
        if !self.lost && self.holder.is_some() {
            self.lost = true;
            self.push(expired_at, EventKind::Lost, transitions);
        }
    }

    pub fn deleted(&mut self, now: Instant) {
        self.lost = false;
        self.last_renewal = None;
        if self.holder.take().is_some() {
            self.changes += 1;
            self.holder_since = now;
        }
        self.push(now, EventKind::Deleted, None);
    }

    pub fn blind(&mut self, now: Instant) {
        self.last_renewal = None;
        self.push(now, EventKind::Blind, None);
    }

    pub fn saw_again(&mut self, now: Instant, transitions: Option<i32>) {
        self.push(now, EventKind::SawAgain, transitions);
    }

    /// The holder's pod restarted a container; `restarts` in all.
    pub fn holder_restarted(&mut self, restarts: u32, now: Instant) {
        self.push(now, EventKind::HolderRestarted { restarts }, None);
    }

    pub fn stats(&self, now: Instant) -> LeaseStats {
        LeaseStats {
            changes: self.changes,
            holder_since: now.saturating_duration_since(self.holder_since),
            renewals: self.renewals.clone(),
        }
    }

    /// Oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// The renewal intervals observed within [`RECENT_FOR`] before `now`, oldest first, as
    /// (when the renewal was seen, interval).
    pub fn recent(&self, now: Instant) -> Vec<(Instant, Duration)> {
        self.recent
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= RECENT_FOR)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn kinds(history: &History) -> Vec<&'static str> {
        history.events().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn intervals_only_between_renewals_by_the_same_holder() {
        let t0 = Instant::now();
        let a = || Some("a".to_owned());
        let mut h = History::seen(a(), Some(0), t0);
        // The first change seen only starts the clock: the exporter did not see the one
        // before it.
        h.changed(a(), Some(0), t0 + 2 * S, true);
        h.changed(a(), Some(0), t0 + 4 * S, true);
        h.changed(a(), Some(0), t0 + 11 * S, true);
        h.changed(Some("b".into()), Some(1), t0 + 20 * S, true);
        h.changed(Some("b".into()), Some(1), t0 + 22 * S, true);
        let stats = h.stats(t0 + 25 * S);
        assert_eq!(stats.renewals.count, 3);
        assert_eq!(stats.renewals.sum, 2.0 + 7.0 + 2.0);
        // le=1: 0, le=2: 2, le=3: 2, le=4: 2, le=6: 2, le=8: 3 ...
        assert_eq!(stats.renewals.buckets[..6], [0, 2, 2, 2, 2, 3]);
        assert_eq!(stats.changes, 1);
        assert_eq!(stats.holder_since, 5 * S);
        assert_eq!(kinds(&h), ["seen", "changed"]);
    }

    #[test]
    fn no_interval_spans_a_blind_spell() {
        let t0 = Instant::now();
        let a = || Some("a".to_owned());
        let mut h = History::seen(a(), None, t0);
        h.changed(a(), None, t0 + 2 * S, true);
        h.blind(t0 + 3 * S);
        // Listed again after the spell: not live, so no interval and no clock.
        h.changed(a(), None, t0 + 30 * S, false);
        h.saw_again(t0 + 30 * S, None);
        h.changed(a(), None, t0 + 31 * S, true);
        assert_eq!(h.stats(t0 + 31 * S).renewals.count, 0);
        h.changed(a(), None, t0 + 33 * S, true);
        let stats = h.stats(t0 + 33 * S);
        assert_eq!((stats.renewals.count, stats.renewals.sum), (1, 2.0));
        assert_eq!(kinds(&h), ["seen", "blind", "saw_again"]);
    }

    #[test]
    fn a_lease_created_under_watch_was_acquired() {
        let t0 = Instant::now();
        let h = History::created(Some("a".into()), Some(0), t0);
        assert_eq!(kinds(&h), ["acquired"]);
        assert_eq!(h.stats(t0).changes, 1);
        let empty = History::created(None, None, t0);
        assert_eq!(kinds(&empty), ["seen"]);
        assert_eq!(empty.stats(t0).changes, 0);
    }

    #[test]
    fn a_lost_holder_is_said_once_and_its_return_is_said() {
        let t0 = Instant::now();
        let a = || Some("a".to_owned());
        let mut h = History::seen(a(), None, t0);
        h.lost(t0 + 25 * S, None);
        h.lost(t0 + 26 * S, None);
        h.changed(a(), None, t0 + 40 * S, true);
        h.lost(t0 + 65 * S, None);
        h.changed(None, None, t0 + 70 * S, true);
        h.changed(Some("b".into()), Some(1), t0 + 71 * S, true);
        h.deleted(t0 + 80 * S);
        assert_eq!(
            kinds(&h),
            [
                "seen", "lost", "back", "lost", "released", "acquired", "deleted"
            ]
        );
        assert_eq!(h.stats(t0 + 80 * S).changes, 3);
        let released = h.events().nth(4).expect("released");
        assert_eq!(
            released.kind,
            EventKind::Released {
                previous: "a".into()
            }
        );
        assert_eq!(released.holder, None);
    }

    #[test]
    fn the_timeline_is_bounded_and_in_order() {
        let t0 = Instant::now();
        let mut h = History::seen(None, None, t0);
        for i in 1..=200u32 {
            let holder = (i % 2 == 0).then(|| format!("pod-{i}"));
            h.changed(holder, None, t0 + i * S, true);
        }
        let events: Vec<&Event> = h.events().collect();
        assert_eq!(events.len(), EVENTS_KEPT);
        assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(events.last().map(|e| e.at), Some(t0 + 200 * S));
    }

    #[test]
    fn recent_intervals_reach_back_a_few_minutes_only() {
        let t0 = Instant::now();
        let a = || Some("a".to_owned());
        let mut h = History::seen(a(), None, t0);
        for i in 0..=400u32 {
            h.changed(a(), None, t0 + 2 * i * S, true);
        }
        let now = t0 + 800 * S;
        let recent = h.recent(now);
        assert_eq!(recent.len(), 151);
        assert!(
            recent
                .iter()
                .all(|(at, d)| now - *at <= RECENT_FOR && *d == 2 * S)
        );
    }
}
