//! The leader and readiness decision: a pure function of what the exporter holds in memory
//! and the current instant, so that it can be tested without any I/O.

use std::time::{Duration, Instant};

/// What the exporter keeps of a pod: enough to count it and to judge its readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready_condition: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

impl PodInfo {
    /// Ready as the exporter counts it: a pod on its way out no longer counts.
    pub fn is_ready(&self) -> bool {
        self.ready_condition && !self.deleting
    }
}

/// The fields of a Lease that make up its record. Two records that compare equal mean the
/// holder did not renew in between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub duration_seconds: Option<i32>,
    pub transitions: Option<i32>,
    /// Kept as the server sent it: it only takes part in change detection, never in a
    /// comparison with the local clock.
    pub renew_time: Option<String>,
    pub acquire_time: Option<String>,
    /// False when the object had no `spec` at all.
    pub has_spec: bool,
}

/// A Lease as the exporter observed it: its record and when, by the exporter's own monotonic
/// clock, that record last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSeen {
    pub record: LeaseRecord,
    pub changed_at: Instant,
}

impl LeaseSeen {
    /// The lease's own duration, when it is usable.
    pub fn duration(&self) -> Option<Duration> {
        valid_duration(self.record.duration_seconds)
    }
}

fn valid_duration(seconds: Option<i32>) -> Option<Duration> {
    match seconds {
        Some(s) if s > 0 => Some(Duration::from_secs(s.unsigned_abs().into())),
        _ => None,
    }
}

/// Why the leader is or is not present. Logged at debug level and shown on the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Present,
    NoLease,
    NoSpec,
    NoHolder,
    InvalidDuration(Option<i32>),
    NoRenewTime,
    Expired { age: Duration, limit: Duration },
    HolderNotAPod,
    HolderNotReady,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Present => f.write_str("a live leader holds the lease"),
            Reason::NoLease => f.write_str("the lease does not exist"),
            Reason::NoSpec => f.write_str("the lease has no spec"),
            Reason::NoHolder => f.write_str("the lease has no holder"),
            Reason::InvalidDuration(None) => f.write_str("the lease has no duration"),
            Reason::InvalidDuration(Some(s)) => {
                write!(f, "the lease duration {s}s is not positive")
            }
            Reason::NoRenewTime => f.write_str("the lease has no renew time"),
            Reason::Expired { age, limit } => write!(
                f,
                "the lease record has not changed for {:.3}s, over the {:.3}s limit (duration + grace)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
            Reason::HolderNotAPod => f.write_str("the holder is not one of the component's pods"),
            Reason::HolderNotReady => f.write_str("the holder pod is not Ready"),
        }
    }
}

/// The judgement for one component in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Matching pods not being deleted.
    pub pods: u32,
    /// Of those, Ready.
    pub pods_ready: u32,
    pub present: bool,
    pub reason: Reason,
    /// The non-empty holder identity, whether or not the leader is live.
    pub holder: Option<String>,
    /// Facts about the lease, when there is one.
    pub lease: Option<LeaseFacts>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseFacts {
    pub age: Duration,
    pub duration: Option<Duration>,
    pub transitions: Option<i32>,
}

/// Judges one component in one namespace at `now`.
///
/// The leader is present when the lease names a holder, the exporter saw its record change
/// within the lease duration plus `grace`, and the holder is one of `pods` and Ready.
pub fn judge<'a>(
    pods: impl IntoIterator<Item = &'a PodInfo>,
    lease: Option<&LeaseSeen>,
    now: Instant,
    grace: Duration,
) -> Verdict {
    let mut counted = 0;
    let mut ready = 0;
    let mut holder_ready = None;
    let holder = lease
        .and_then(|l| l.record.holder.as_deref())
        .filter(|h| !h.is_empty());
    for pod in pods {
        if pod.deleting {
            if Some(pod.name.as_str()) == holder {
                holder_ready.get_or_insert(false);
            }
            continue;
        }
        counted += 1;
        let is_ready = pod.is_ready();
        ready += u32::from(is_ready);
        if Some(pod.name.as_str()) == holder {
            holder_ready = Some(is_ready);
        }
    }
    let reason = lease_reason(lease, holder, holder_ready, now, grace);
    Verdict {
        pods: counted,
        pods_ready: ready,
        present: reason == Reason::Present,
        reason,
        holder: holder.map(str::to_owned),
        lease: lease.map(|l| LeaseFacts {
            age: now.saturating_duration_since(l.changed_at),
            duration: l.duration(),
            transitions: l.record.transitions,
        }),
    }
}

fn lease_reason(
    lease: Option<&LeaseSeen>,
    holder: Option<&str>,
    holder_ready: Option<bool>,
    now: Instant,
    grace: Duration,
) -> Reason {
    let Some(lease) = lease else {
        return Reason::NoLease;
    };
    let record = &lease.record;
    if !record.has_spec {
        return Reason::NoSpec;
    }
    if holder.is_none() {
        return Reason::NoHolder;
    }
    let Some(duration) = lease.duration() else {
        return Reason::InvalidDuration(record.duration_seconds);
    };
    if record.renew_time.is_none() {
        return Reason::NoRenewTime;
    }
    let age = now.saturating_duration_since(lease.changed_at);
    let limit = duration.saturating_add(grace);
    if age > limit {
        return Reason::Expired { age, limit };
    }
    match holder_ready {
        None => Reason::HolderNotAPod,
        Some(false) => Reason::HolderNotReady,
        Some(true) => Reason::Present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn pod(name: &str, ready: bool) -> PodInfo {
        PodInfo {
            name: name.into(),
            ready_condition: ready,
            deleting: false,
        }
    }

    fn lease(holder: &str, changed_at: Instant) -> LeaseSeen {
        LeaseSeen {
            record: LeaseRecord {
                holder: Some(holder.into()),
                duration_seconds: Some(15),
                transitions: Some(3),
                renew_time: Some("2026-01-01T00:00:00.000000Z".into()),
                acquire_time: None,
                has_spec: true,
            },
            changed_at,
        }
    }

    fn two_pods() -> Vec<PodInfo> {
        vec![pod("virt-operator-a", true), pod("virt-operator-b", true)]
    }

    #[test]
    fn live_leader_is_present() {
        let t0 = Instant::now();
        let v = judge(&two_pods(), Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert!(v.present, "{:?}", v.reason);
        assert_eq!((v.pods, v.pods_ready), (2, 2));
        assert_eq!(v.holder.as_deref(), Some("virt-operator-a"));
        let facts = v.lease.expect("lease facts");
        assert_eq!(facts.duration, Some(Duration::from_secs(15)));
        assert_eq!(facts.transitions, Some(3));
    }

    #[test]
    fn freshness_ends_after_duration_plus_grace_and_not_before() {
        let t0 = Instant::now();
        let l = lease("virt-operator-a", t0);
        let pods = two_pods();
        let at = |secs: f64| judge(&pods, Some(&l), t0 + Duration::from_secs_f64(secs), GRACE);
        assert!(at(19.999).present);
        assert!(at(20.0).present);
        let late = at(20.001);
        assert!(!late.present);
        assert!(matches!(late.reason, Reason::Expired { .. }));
        assert_eq!(late.holder.as_deref(), Some("virt-operator-a"));
        assert!(late.lease.expect("facts").age > Duration::from_secs(20));
    }

    #[test]
    fn dead_leader_name_left_in_lease_is_not_present() {
        // KubeVirt does not release the lease: the dead leader's name stays, and its pod may
        // even still look Ready for a while. Only freshness tells.
        let t0 = Instant::now();
        let v = judge(
            &two_pods(),
            Some(&lease("virt-operator-a", t0)),
            t0 + Duration::from_secs(600),
            GRACE,
        );
        assert!(!v.present);
        assert_eq!(v.pods_ready, 2);
    }

    #[test]
    fn grace_is_honoured() {
        let t0 = Instant::now();
        let l = lease("virt-operator-a", t0);
        let now = t0 + Duration::from_secs(17);
        assert!(!judge(&two_pods(), Some(&l), now, Duration::ZERO).present);
        assert!(judge(&two_pods(), Some(&l), now, Duration::from_secs(2)).present);
    }

    #[test]
    fn holder_must_be_a_ready_pod_of_the_component() {
        let t0 = Instant::now();
        let pods = vec![pod("virt-operator-a", false), pod("virt-operator-b", true)];
        let v = judge(&pods, Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert_eq!(v.reason, Reason::HolderNotReady);
        assert_eq!(v.pods_ready, 1);
        let v = judge(&pods, Some(&lease("someone-else", t0)), t0, GRACE);
        assert_eq!(v.reason, Reason::HolderNotAPod);
    }

    #[test]
    fn deleting_pods_are_not_counted_and_cannot_lead() {
        let t0 = Instant::now();
        let mut pods = two_pods();
        pods[0].deleting = true;
        let v = judge(&pods, Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert_eq!((v.pods, v.pods_ready), (1, 1));
        assert_eq!(v.reason, Reason::HolderNotReady);
        assert!(!pods[0].is_ready());
    }

    #[test]
    fn no_lease_and_no_pods() {
        let t0 = Instant::now();
        let v = judge(&two_pods(), None, t0, GRACE);
        assert_eq!(v.reason, Reason::NoLease);
        assert_eq!((v.pods_ready, v.holder, v.lease), (2, None, None));
        let v = judge(&[], Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert_eq!((v.pods, v.pods_ready, v.present), (0, 0, false));
    }

    #[test]
    fn odd_records_are_not_present() {
        let t0 = Instant::now();
        let pods = two_pods();
        type Mutation = fn(&mut LeaseRecord);
        let cases: Vec<(Mutation, Reason)> = vec![
            (|r| *r = LeaseRecord::default(), Reason::NoSpec),
            (|r| r.holder = None, Reason::NoHolder),
            (|r| r.holder = Some(String::new()), Reason::NoHolder),
            (|r| r.duration_seconds = None, Reason::InvalidDuration(None)),
            (
                |r| r.duration_seconds = Some(0),
                Reason::InvalidDuration(Some(0)),
            ),
            (
                |r| r.duration_seconds = Some(-5),
                Reason::InvalidDuration(Some(-5)),
            ),
            (|r| r.renew_time = None, Reason::NoRenewTime),
        ];
        for (mutate, want) in cases {
            let mut l = lease("virt-operator-a", t0);
            mutate(&mut l.record);
            let v = judge(&pods, Some(&l), t0, GRACE);
            assert_eq!(v.reason, want);
            assert!(!v.present);
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn empty_holder_is_reported_as_no_holder() {
        let t0 = Instant::now();
        let mut l = lease("", t0);
        l.record.holder = Some(String::new());
        assert_eq!(judge(&two_pods(), Some(&l), t0, GRACE).holder, None);
    }

    #[test]
    fn huge_duration_does_not_overflow() {
        let t0 = Instant::now();
        let mut l = lease("virt-operator-a", t0);
        l.record.duration_seconds = Some(i32::MAX);
        let v = judge(
            &two_pods(),
            Some(&l),
            t0 + Duration::from_secs(86_400),
            Duration::MAX,
        );
        assert!(v.present);
    }

    #[test]
    fn clock_before_observation_counts_as_fresh() {
        // `now` earlier than the observation can happen when the caller read the clock first;
        // the age saturates at zero instead of panicking.
        let t0 = Instant::now();
        let l = lease("virt-operator-a", t0 + Duration::from_secs(1));
        let v = judge(&two_pods(), Some(&l), t0, GRACE);
        assert!(v.present);
        assert_eq!(v.lease.expect("facts").age, Duration::ZERO);
    }
}
