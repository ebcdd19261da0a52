//! Property tests of the judging function over random pods, leases and clock steps.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kubevirt_leader_exporter::{
    judge::{LeaseRecord, LeaseState, PodInfo, judge},
    leases::{LeaseBook, LeaseChange},
    objects::lease_record,
};
use proptest::prelude::*;

const NS: &str = "kubevirt";
const HOLDER: &str = "virt-operator-a";

/// A lease book whose watch has listed (nothing) at `at`.
fn book(grace: Duration, at: Instant) -> LeaseBook {
    let mut book = LeaseBook::new(grace);
    book.apply(LeaseChange::ListStarted, at);
    book.apply(LeaseChange::ListDone, at);
    book
}

/// The Lease as the holder writes it `written` after its first renewal, by a node clock
/// `skew_secs` off the exporter's.
fn renewed(skew_secs: i64, written: Duration) -> Lease {
    let epoch = Timestamp::from_second(1_795_000_000).expect("valid");
    let at = epoch
        .checked_add(SignedDuration::from_secs(skew_secs))
        .and_then(|t| t.checked_add(SignedDuration::try_from(written).expect("small")))
        .expect("in range");
    Lease {
        metadata: ObjectMeta {
            name: Some("virt-operator".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(HOLDER.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at)),
            ..LeaseSpec::default()
        }),
    }
}

const NAMES: [&str; 4] = ["virt-operator-a", "virt-operator-b", "virt-operator-c", ""];

fn pods() -> impl Strategy<Value = Vec<PodInfo>> {
    prop::collection::vec(
        (0..NAMES.len(), any::<bool>(), any::<bool>()).prop_map(|(n, ready, deleting)| PodInfo {
            name: NAMES[n].to_owned(),
            ready_condition: ready,
            deleting,
            ..PodInfo::default()
        }),
        0..5,
    )
}

fn record() -> impl Strategy<Value = LeaseRecord> {
    (
        prop::option::of(prop_oneof![
            (0..NAMES.len()).prop_map(|n| NAMES[n].to_owned()),
            // controller-runtime's `<hostname>_<uuid>`, and near misses of it.
            (0..NAMES.len(), "[_a-f0-9-]{0,12}")
                .prop_map(|(n, tail)| format!("{}{tail}", NAMES[n])),
            ".{0,300}"
        ]),
        prop::option::of(prop_oneof![any::<i32>(), -2..30i32]),
        prop::option::of(any::<i32>()),
        prop::option::of("[0-9:TZ.-]{0,30}"),
        any::<bool>(),
    )
        .prop_map(
            |(holder, duration_seconds, transitions, renew_time, has_spec)| LeaseRecord {
                holder,
                duration_seconds,
                transitions,
                renew_time,
                acquire_time: None,
                has_spec,
            },
        )
}

/// Offsets from a base instant, in milliseconds: when the record changed and when it is judged.
fn clock() -> impl Strategy<Value = (u64, u64, u64)> {
    (0..100_000u64, 0..200_000u64, 0..20_000u64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn present_means_a_fresh_record_held_or_just_released_and_nothing_else(
        pods in pods(),
        record in prop::option::of(record()),
        (changed_ms, now_ms, grace_ms) in clock(),
        confirmed_ms in prop::option::of(0..200_000u64),
    ) {
        let base = Instant::now();
        let grace = Duration::from_millis(grace_ms);
        let at = |ms: u64| base + Duration::from_millis(ms);
        let lease = record.map(|record| LeaseState {
            record,
            changed_at: at(changed_ms),
            confirmed_at: confirmed_ms.map(at),
        });
        let now = base + Duration::from_millis(now_ms);
        let v = judge(&pods, lease.as_ref(), now, grace);

        let live: Vec<&PodInfo> = pods.iter().filter(|p| !p.deleting).collect();
        prop_assert_eq!(v.pods as usize, live.len());
        prop_assert_eq!(v.pods_ready as usize, live.iter().filter(|p| p.ready_condition).count());
        // (a lease with a positive duration at all, fresh): held, or released so recently that
        // a standby is due to take it.
        let timed = lease.as_ref().map(|l| {
            let seconds = l.record.duration_seconds.unwrap_or(0);
            let limit = Duration::from_secs(seconds.max(0).unsigned_abs().into()) + grace;
            let timed = l.record.has_spec && seconds > 0;
            (timed, timed && now.saturating_duration_since(l.changed_at) <= limit)
        });
        let fresh = timed.is_some_and(|(_, fresh)| fresh);
        prop_assert_eq!(v.present, fresh);
        let holder = lease
            .as_ref()
            .and_then(|l| l.record.holder.as_deref())
            .filter(|h| !h.is_empty());
        prop_assert_eq!(v.holder.as_deref(), holder);
        // An expiry is known only once a direct read has seen the record since its change.
        let expired = timed.is_some_and(|(timed, fresh)| timed && !fresh);
        let confirmed = lease
            .as_ref()
            .is_some_and(|l| l.confirmed_at.is_some_and(|c| c >= l.changed_at));
        prop_assert_eq!(v.is_known(), !expired || confirmed);
        // The pods never change the decision.
        prop_assert_eq!(judge(&[], lease.as_ref(), now, grace).present, v.present);
    }

    #[test]
    fn holder_ready_follows_the_pod_the_holder_names(
        pods in pods(),
        record in record(),
        (changed_ms, now_ms, grace_ms) in clock(),
    ) {
        let base = Instant::now();
        let lease = LeaseState { record, changed_at: base + Duration::from_millis(changed_ms), confirmed_at: None };
        let v = judge(&pods, Some(&lease), base + Duration::from_millis(now_ms), Duration::from_millis(grace_ms));
        let holder = lease.record.holder.as_deref().filter(|h| !h.is_empty());
        let named = holder.and_then(|h| {
            pods.iter().rev().find(|p| {
                !p.name.is_empty() && (h == p.name || h.strip_prefix(&p.name).is_some_and(|t| t.starts_with('_')))
            })
        });
        prop_assert_eq!(v.holder_ready, named.map(|p| p.ready_condition && !p.deleting));
        prop_assert_eq!(v.holder.as_deref(), holder);
    }

    /// Two nodes whose clocks disagree by days write the same renewals: what the exporter
    /// makes of them depends only on when its watch delivered each change, never on the
    /// `renewTime` a node wrote, in the past or the future of the exporter's clock.
    #[test]
    fn renew_time_is_never_compared_with_the_clock(
        gaps_ms in prop::collection::vec(0..30_000u64, 1..8),
        skews in (-864_000..864_000i64, -864_000..864_000i64),
        repeat_last in any::<bool>(),
        since_last_ms in 0..60_000u64,
    ) {
        let base = Instant::now();
        let grace = Duration::from_secs(5);
        let (mut a, mut b) = (book(grace, base), book(grace, base));
        let (mut at, mut last_change) = (base, base);
        for (i, gap) in gaps_ms.iter().enumerate() {
            at += Duration::from_millis(*gap);
            let written = Duration::from_millis(gaps_ms[..=i].iter().sum());
            a.apply(LeaseChange::Applied(NS.into(), lease_record(&renewed(skews.0, written))), at);
            b.apply(LeaseChange::Applied(NS.into(), lease_record(&renewed(skews.1, written))), at);
            last_change = at;
        }
        if repeat_last {
            // The same record delivered again (a relist, a duplicate event) is no renewal.
            at += Duration::from_millis(since_last_ms / 2);
            let written = Duration::from_millis(gaps_ms.iter().sum());
            a.apply(LeaseChange::Applied(NS.into(), lease_record(&renewed(skews.0, written))), at);
        }
        let now = last_change + Duration::from_millis(since_last_ms);
        let pods = [PodInfo { name: HOLDER.into(), ready_condition: true, ..PodInfo::default() }];
        for book in [&a, &b] {
            prop_assert_eq!(book.get(NS).map(|l| l.changed_at), Some(last_change));
        }
        let (va, vb) = (judge(&pods, a.get(NS), now, grace), judge(&pods, b.get(NS), now, grace));
        prop_assert_eq!(va.present, vb.present);
        prop_assert_eq!(va.present, since_last_ms <= 20_000);
        prop_assert_eq!(va.lease.map(|l| l.age), Some(Duration::from_millis(since_last_ms)));
    }

    #[test]
    fn freshness_only_decays_as_the_clock_advances(
        pods in pods(),
        record in record(),
        (changed_ms, now_ms, grace_ms) in clock(),
        step_ms in 0..100_000u64,
    ) {
        let base = Instant::now();
        let lease = LeaseState { record, changed_at: base + Duration::from_millis(changed_ms), confirmed_at: None };
        let grace = Duration::from_millis(grace_ms);
        let earlier = base + Duration::from_millis(now_ms);
        let later = earlier + Duration::from_millis(step_ms);
        let before = judge(&pods, Some(&lease), earlier, grace);
        let after = judge(&pods, Some(&lease), later, grace);
        prop_assert!(!after.present || before.present, "a lease became live with time alone");
        prop_assert_eq!(
            (before.pods, before.pods_ready, before.holder, before.holder_ready),
            (after.pods, after.pods_ready, after.holder, after.holder_ready)
        );
    }
}
