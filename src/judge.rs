//! The leader and readiness decision: a pure function of what the exporter holds in memory
//! and the current instant, so that it can be tested without any I/O. Everything that
//! decides what is exported for a component in a namespace is here, the confirming read
//! included.

use std::time::{Duration, Instant};

use crate::discovery::holders::without_identity_suffix;

/// What the exporter keeps of a pod: enough to count it, judge its readiness and tell whether
/// it holds a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready_condition: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Container restarts, all containers together.
    pub restarts: u32,
    /// The node's name, for a pod on the host network: control-plane electors run as such
    /// static pods and name themselves after the node's hostname.
    pub host_node: Option<String>,
}

impl PodInfo {
    /// Ready as the exporter counts it: a pod on its way out no longer counts.
    pub fn is_ready(&self) -> bool {
        self.ready_condition && !self.deleting
    }

    /// Whether `holder` names this pod. KubeVirt's identity is the pod's name (its
    /// hostname); controller-runtime appends `_<uuid>` to it. Pod names cannot contain `_`,
    /// so at most one pod matches a holder. On the host network the hostname is the node's:
    /// kube-scheduler and kube-controller-manager hold `<node hostname>_<uuid>`, matched
    /// against the node's name without regard to case, as hostnames compare. A hostname
    /// that differs from the node's name (an FQDN against a short name) matches no pod.
    /// cert-manager's controller appends `-external-cert-manager-controller` to its pod's.
    pub fn is_named_by(&self, holder: &str) -> bool {
        let host = holder.split_once('_').map_or(holder, |(host, _)| host);
        let named = |name: &str| host == name || without_identity_suffix(host) == name;
        (!self.name.is_empty() && named(&self.name))
            || self
                .host_node
                .as_deref()
                .is_some_and(|node| host.eq_ignore_ascii_case(node))
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

/// A Lease as the exporter observed it: its record, when (by the exporter's own monotonic
/// clock) that record last changed, and when a direct read last found it unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub record: LeaseRecord,
    pub changed_at: Instant,
    pub confirmed_at: Option<Instant>,
}

impl LeaseState {
    /// A record first seen at `now`, not yet confirmed.
    pub fn new(record: LeaseRecord, now: Instant) -> Self {
        Self {
            record,
            changed_at: now,
            confirmed_at: None,
        }
    }

    /// A direct read found this very record after its last change.
    pub fn confirmed(&self) -> bool {
        self.confirmed_at.is_some_and(|at| at >= self.changed_at)
    }

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
    Expired {
        age: Duration,
        limit: Duration,
    },
    /// The holder gave the lease up (an empty holder, as client-go's release writes) no
    /// longer ago than the lease duration plus the grace: a standby takes a released lease at
    /// its next look, so this is a handover, not a lost leader.
    Released {
        age: Duration,
        limit: Duration,
    },
    /// Expired by the watch's account, but no direct read has confirmed it yet: a watch that
    /// hangs silently looks exactly like this, so nothing is reported until the read answers.
    Unconfirmed {
        age: Duration,
        limit: Duration,
    },
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
            Reason::Expired { age, limit } => write!(
                f,
                "the lease record has not changed for {:.3}s, over the {:.3}s limit (duration + grace)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
            Reason::Released { age, limit } => write!(
                f,
                "the holder released the lease {:.3}s ago; a standby takes it at its next look \
                 (no leader after {:.3}s)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
            Reason::Unconfirmed { age, limit } => write!(
                f,
                "the lease record has not changed for {:.3}s, over the {:.3}s limit; \
                 reading it directly before reporting it",
                age.as_secs_f64(),
                limit.as_secs_f64()
            ),
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
    /// A live leader holds the lease, or one released it so recently that a standby is due
    /// to take it over: decided by the lease alone.
    pub present: bool,
    pub reason: Reason,
    /// The non-empty holder identity, whether or not the leader is live.
    pub holder: Option<String>,
    /// Whether the pod the holder names is Ready; `None` when no pod of the component
    /// matches the holder. A separate fact from `present`: readiness does not follow
    /// leadership, and a leader keeps renewing while its pod terminates.
    pub holder_ready: Option<bool>,
    /// Facts about the lease, when there is one.
    pub lease: Option<LeaseFacts>,
}

impl Verdict {
    /// Whether this may be exported: an unconfirmed expiry is not known yet.
    pub fn is_known(&self) -> bool {
        !matches!(self.reason, Reason::Unconfirmed { .. })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseFacts {
    pub age: Duration,
    pub duration: Option<Duration>,
    pub transitions: Option<i32>,
}

/// Judges one component in one namespace at `now`.
///
/// The leader is present when the lease names a holder, has a positive duration, and the
/// exporter saw its record change within that duration plus `grace`, by its own clock: the
/// rule a client-go standby applies before it takes a lease over. The pods only add counts
/// and the holder's readiness. A lease that seems expired counts as expired only once a
/// direct read has found the same record ([`LeaseState::confirmed`]); until then the verdict
/// is not [known](Verdict::is_known).
pub fn judge<'a>(
    pods: impl IntoIterator<Item = &'a PodInfo>,
    lease: Option<&LeaseState>,
    now: Instant,
    grace: Duration,
) -> Verdict {
    let holder = lease
        .and_then(|l| l.record.holder.as_deref())
        .filter(|h| !h.is_empty());
    let (mut counted, mut ready, mut holder_ready) = (0, 0, None);
    for pod in pods {
        if holder.is_some_and(|h| pod.is_named_by(h)) {
            holder_ready = Some(pod.is_ready());
        }
        if !pod.deleting {
            counted += 1;
            ready += u32::from(pod.is_ready());
        }
    }
    let reason = lease_reason(lease, holder, now, grace);
    Verdict {
        pods: counted,
        pods_ready: ready,
        present: matches!(reason, Reason::Present | Reason::Released { .. }),
        reason,
        holder: holder.map(str::to_owned),
        holder_ready,
        lease: lease.map(|l| LeaseFacts {
            age: now.saturating_duration_since(l.changed_at),
            duration: l.duration(),
            transitions: l.record.transitions,
        }),
    }
}

fn lease_reason(
    lease: Option<&LeaseState>,
    holder: Option<&str>,
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
    let Some(duration) = lease.duration() else {
        return match holder {
            Some(_) => Reason::InvalidDuration(record.duration_seconds),
            None => Reason::NoHolder,
        };
    };
    let age = now.saturating_duration_since(lease.changed_at);
    let limit = duration.saturating_add(grace);
    match (age > limit, lease.confirmed(), holder) {
        (false, _, Some(_)) => Reason::Present,
        (false, _, None) => Reason::Released { age, limit },
        (true, true, Some(_)) => Reason::Expired { age, limit },
        (true, true, None) => Reason::NoHolder,
        (true, false, _) => Reason::Unconfirmed { age, limit },
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
            ..PodInfo::default()
        }
    }

    /// A lease confirmed by a direct read right when it last changed.
    fn lease(holder: &str, changed_at: Instant) -> LeaseState {
        LeaseState {
            record: LeaseRecord {
                holder: Some(holder.into()),
                duration_seconds: Some(15),
                transitions: Some(3),
                renew_time: Some("2026-01-01T00:00:00.000000Z".into()),
                acquire_time: None,
                has_spec: true,
            },
            changed_at,
            confirmed_at: Some(changed_at),
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
    fn an_expiry_counts_only_once_a_direct_read_confirmed_the_record() {
        // A watch that hangs silently looks like a lease nobody renews: nothing is reported
        // until a direct read has seen the same record.
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(21);
        let mut l = lease("virt-operator-a", t0);
        l.confirmed_at = None;
        let v = judge(&two_pods(), Some(&l), late, GRACE);
        assert!(matches!(v.reason, Reason::Unconfirmed { .. }));
        assert!(!v.is_known() && !v.present);
        // A read from before the last change confirms nothing.
        l.confirmed_at = Some(t0 - Duration::from_secs(1));
        assert!(!judge(&two_pods(), Some(&l), late, GRACE).is_known());
        l.confirmed_at = Some(t0 + Duration::from_secs(15));
        let v = judge(&two_pods(), Some(&l), late, GRACE);
        assert!(v.is_known() && matches!(v.reason, Reason::Expired { .. }));
        // A fresh lease needs no confirmation.
        l.confirmed_at = None;
        assert!(judge(&two_pods(), Some(&l), t0, GRACE).present);
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
        assert_eq!(v.holder_ready, Some(true));
        assert_eq!(v.holder.as_deref(), Some("virt-operator-a"));
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
    fn readiness_of_the_holder_does_not_decide_presence() {
        // KubeVirt's readiness probe does not follow leadership, and a probe failure on a
        // working leader must not read as "no leader".
        let t0 = Instant::now();
        let pods = vec![pod("virt-operator-a", false), pod("virt-operator-b", true)];
        let v = judge(&pods, Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert!(v.present);
        assert_eq!(v.holder_ready, Some(false));
        assert_eq!(v.pods_ready, 1);
        let v = judge(&pods, Some(&lease("virt-operator-b", t0)), t0, GRACE);
        assert_eq!(v.holder_ready, Some(true));
        let v = judge(&pods, Some(&lease("someone-else", t0)), t0, GRACE);
        assert!(
            v.present,
            "a holder that is no pod of ours still holds the lease"
        );
        assert_eq!(v.holder_ready, None);
    }

    #[test]
    fn a_terminating_leader_still_leads_but_is_not_ready() {
        // During a rolling update the old leader renews until it exits.
        let t0 = Instant::now();
        let mut pods = two_pods();
        pods[0].deleting = true;
        let v = judge(&pods, Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert_eq!((v.pods, v.pods_ready), (1, 1));
        assert!(v.present);
        assert_eq!(v.holder_ready, Some(false));
        assert!(!pods[0].is_ready());
    }

    #[test]
    fn holder_names_a_pod_exactly_or_with_a_suffix_after_underscore() {
        let p = pod("my-controller-7d9f", true);
        assert!(p.is_named_by("my-controller-7d9f"));
        assert!(p.is_named_by("my-controller-7d9f_0c7e4ac3-5d6f-4a8b-9c1d-2e3f4a5b6c7d"));
        assert!(!p.is_named_by("my-controller-7d9"));
        assert!(!p.is_named_by("my-controller-7d9f0"));
        assert!(!p.is_named_by("my-controller-7d9f-x"));
        assert!(!p.is_named_by(""));
        assert!(p.is_named_by("my-controller-7d9f-external-cert-manager-controller"));
        assert!(!p.is_named_by("my-controller-7d9f-other-controller"));
        let literal = pod("x-external-cert-manager-controller", true);
        assert!(literal.is_named_by("x-external-cert-manager-controller"));
        let t0 = Instant::now();
        let pods = vec![pod("my-controller-7d9", false), p];
        let v = judge(
            &pods,
            Some(&lease("my-controller-7d9f_1234", t0)),
            t0,
            GRACE,
        );
        assert_eq!(v.holder_ready, Some(true));
    }

    #[test]
    fn a_static_pod_is_named_by_its_nodes_hostname() {
        let scheduler = |name: &str, node: &str| PodInfo {
            name: name.into(),
            ready_condition: true,
            host_node: Some(node.into()),
            ..PodInfo::default()
        };
        let p = scheduler("kube-scheduler-cp-1", "cp-1");
        assert!(p.is_named_by("cp-1_0c7e4ac3-5d6f-4a8b-9c1d-2e3f4a5b6c7d"));
        assert!(
            p.is_named_by("CP-1_0c7e4ac3"),
            "hostnames compare without case"
        );
        assert!(
            p.is_named_by("kube-scheduler-cp-1"),
            "its own name still counts"
        );
        assert!(!p.is_named_by("cp-10_0c7e4ac3"));
        assert!(
            !p.is_named_by("cp-1.example.com_0c7e4ac3"),
            "an FQDN is not the node name"
        );
        let off_host = PodInfo {
            host_node: None,
            ..p.clone()
        };
        assert!(!off_host.is_named_by("cp-1_0c7e4ac3"));
        let t0 = Instant::now();
        let pods = vec![
            scheduler("kube-scheduler-cp-1", "cp-1"),
            PodInfo {
                ready_condition: false,
                ..scheduler("kube-scheduler-cp-2", "cp-2")
            },
        ];
        let v = judge(&pods, Some(&lease("cp-2_4f1d", t0)), t0, GRACE);
        assert_eq!((v.present, v.holder_ready), (true, Some(false)));
    }

    #[test]
    fn no_lease_and_no_pods() {
        let t0 = Instant::now();
        let v = judge(&two_pods(), None, t0, GRACE);
        assert_eq!(v.reason, Reason::NoLease);
        assert_eq!((v.pods_ready, v.holder, v.lease), (2, None, None));
        // The lease alone decides: a live lease with no pods in sight still has a leader.
        let v = judge(&[], Some(&lease("virt-operator-a", t0)), t0, GRACE);
        assert_eq!((v.pods, v.pods_ready, v.present), (0, 0, true));
        assert_eq!(v.holder_ready, None);
    }

    #[test]
    fn odd_records_are_not_present() {
        let t0 = Instant::now();
        let pods = two_pods();
        type Mutation = fn(&mut LeaseRecord);
        // Each case with the words the status page and the logs show for it.
        let cases: Vec<(Mutation, Reason, &str)> = vec![
            (
                |r| *r = LeaseRecord::default(),
                Reason::NoSpec,
                "the lease has no spec",
            ),
            (
                |r| {
                    r.holder = None;
                    r.duration_seconds = None;
                },
                Reason::NoHolder,
                "the lease has no holder",
            ),
            (
                |r| r.duration_seconds = None,
                Reason::InvalidDuration(None),
                "the lease has no duration",
            ),
            (
                |r| r.duration_seconds = Some(0),
                Reason::InvalidDuration(Some(0)),
                "the lease duration 0s is not positive",
            ),
            (
                |r| r.duration_seconds = Some(-5),
                Reason::InvalidDuration(Some(-5)),
                "the lease duration -5s is not positive",
            ),
        ];
        for (mutate, want, text) in cases {
            let mut l = lease("virt-operator-a", t0);
            mutate(&mut l.record);
            let v = judge(&pods, Some(&l), t0, GRACE);
            assert_eq!(v.reason, want);
            assert!(!v.present);
            assert_eq!(v.reason.to_string(), text);
        }
    }

    #[test]
    fn a_missing_renew_time_does_not_matter() {
        // client-go never reads renewTime to decide; only a change of the record counts.
        let t0 = Instant::now();
        let mut l = lease("virt-operator-a", t0);
        l.record.renew_time = None;
        assert!(judge(&two_pods(), Some(&l), t0, GRACE).present);
    }

    #[test]
    fn a_released_lease_is_a_handover_until_duration_and_grace_run_out() {
        let t0 = Instant::now();
        // What client-go's release writes: no holder, a one-second lease.
        let mut released = lease("", t0);
        released.record.holder = Some(String::new());
        released.record.duration_seconds = Some(1);
        let limit = Duration::from_secs(1) + GRACE;
        let v = judge(&two_pods(), Some(&released), t0 + limit, GRACE);
        assert!(v.present);
        assert_eq!(v.reason, Reason::Released { age: limit, limit });
        assert_eq!((v.holder, v.holder_ready, v.pods_ready), (None, None, 2));
        let later = t0 + limit + Duration::from_millis(1);
        let v = judge(&two_pods(), Some(&released), later, GRACE);
        assert!(!v.present && v.is_known());
        assert_eq!(v.reason, Reason::NoHolder);
        // Nobody took it over, by the watch's account: a direct read must say so first.
        released.confirmed_at = None;
        let v = judge(&two_pods(), Some(&released), later, GRACE);
        assert!(!v.present && !v.is_known());
    }

    #[test]
    fn empty_holder_is_reported_as_no_holder() {
        let t0 = Instant::now();
        let mut l = lease("", t0);
        l.record.holder = Some(String::new());
        let v = judge(&two_pods(), Some(&l), t0, GRACE);
        assert_eq!((v.holder, v.holder_ready), (None, None));
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
