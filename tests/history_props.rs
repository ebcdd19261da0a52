//! Property tests of a lease's history over random sequences of watch events, failures,
//! relists, confirming reads and deadlines: renewal intervals are observed only between
//! changes by the same holder and never across a blind spell, and the timeline is bounded
//! and in order.

use std::time::{Duration, Instant};

use kubevirt_leader_exporter::{
    history::EVENTS_KEPT,
    judge::LeaseRecord,
    leases::{LeaseBook, LeaseChange},
};
use proptest::prelude::*;

const NS: &str = "kubevirt";
const HOLDERS: [Option<&str>; 3] = [Some("virt-operator-a"), Some("virt-operator-b"), None];

#[derive(Clone, Debug)]
enum Op {
    /// The holder at this index writes a new record, seen by the watch.
    Write(usize),
    /// The watch fails.
    Fail,
    /// The watch lists again; with a new record written during the gap by the holder at
    /// this index.
    Relist(Option<usize>),
    /// A direct read; with a newer record on the server (the watch fell behind).
    Confirm(Option<usize>),
    Deadline,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..HOLDERS.len()).prop_map(Op::Write),
        1 => Just(Op::Fail),
        1 => prop::option::of(0..HOLDERS.len()).prop_map(Op::Relist),
        1 => prop::option::of(0..HOLDERS.len()).prop_map(Op::Confirm),
        1 => Just(Op::Deadline),
    ]
}

fn record(holder: usize, serial: u32) -> LeaseRecord {
    LeaseRecord {
        holder: HOLDERS[holder].map(str::to_owned),
        duration_seconds: Some(15),
        transitions: Some(0),
        renew_time: Some(serial.to_string()),
        acquire_time: None,
        has_spec: true,
    }
}

/// What the test knows independently of the book: who held the lease when, and when the
/// watch was blind.
#[derive(Default)]
struct World {
    holders: Vec<(Instant, Option<&'static str>)>,
    blind: Vec<(Instant, Instant)>,
    blind_since: Option<Instant>,
}

impl World {
    fn holder_at(&self, at: Instant) -> Option<&'static str> {
        self.holders
            .iter()
            .rev()
            .find(|(since, _)| *since <= at)
            .and_then(|(_, h)| *h)
    }

    fn blind_between(&self, from: Instant, to: Instant) -> bool {
        let open = self.blind_since.map(|s| (s, to));
        self.blind
            .iter()
            .chain(open.iter())
            .any(|(start, end)| *start <= to && *end >= from)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn renewals_and_timeline_keep_their_promises(
        ops in prop::collection::vec((op(), 1..4000u64), 1..120),
    ) {
        let t0 = Instant::now();
        let mut book = LeaseBook::new(Duration::from_secs(5));
        book.apply(LeaseChange::ListStarted, t0);
        book.apply(LeaseChange::Listed(NS.into(), record(0, 0)), t0);
        book.apply(LeaseChange::ListDone, t0);
        let mut world = World { holders: vec![(t0, HOLDERS[0])], ..World::default() };
        let (mut now, mut serial) = (t0, 0);
        for (op, step_ms) in ops {
            now += Duration::from_millis(step_ms);
            serial += 1;
            match op {
                Op::Write(h) => {
                    world.holders.push((now, HOLDERS[h]));
                    book.apply(LeaseChange::Applied(NS.into(), record(h, serial)), now);
                }
                Op::Fail => {
                    world.blind_since.get_or_insert(now);
                    book.failed(now);
                }
                Op::Relist(written) => {
                    book.apply(LeaseChange::ListStarted, now);
                    let current = book.get(NS).map(|s| s.record.clone());
                    let listed = match written {
                        Some(h) => {
                            world.holders.push((now, HOLDERS[h]));
                            Some(record(h, serial))
                        }
                        None => current,
                    };
                    if let Some(r) = listed {
                        book.apply(LeaseChange::Listed(NS.into(), r), now);
                    }
                    book.apply(LeaseChange::ListDone, now);
                    if let Some(since) = world.blind_since.take() {
                        world.blind.push((since, now));
                    }
                }
                Op::Confirm(newer) => {
                    let current = book.get(NS).map(|s| s.record.clone());
                    let fresh = match newer {
                        Some(h) => {
                            world.holders.push((now, HOLDERS[h]));
                            Some(record(h, serial))
                        }
                        None => current.clone(),
                    };
                    if fresh != current {
                        world.blind_since.get_or_insert(now);
                    }
                    book.confirm(NS, fresh, now);
                }
                Op::Deadline => book.note_expiries(now),
            }
        }
        let Some(history) = book.history(NS) else {
            return Err(TestCaseError::fail("no history"));
        };
        for (at, interval) in history.recent(now) {
            let from = at - interval;
            prop_assert!(!world.blind_between(from, at), "interval {interval:?} at {at:?} spans a blind spell");
            let holder = world.holder_at(at);
            prop_assert!(holder.is_some());
            prop_assert_eq!(world.holder_at(from), holder, "interval across a holder change");
        }
        let stats = &book.stats(now)[NS];
        prop_assert_eq!(stats.renewals.count as usize, history.recent(now).len());
        prop_assert!(stats.renewals.buckets.windows(2).all(|w| w[0] <= w[1]));
        let events: Vec<_> = history.events().collect();
        prop_assert!(!events.is_empty() && events.len() <= EVENTS_KEPT);
        prop_assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
        prop_assert!(events.iter().all(|e| e.at <= now));
    }
}
