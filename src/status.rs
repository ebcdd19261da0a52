//! What the status page and `/status.json` show: every component in every namespace, its
//! leader, its renewals and its story, from one read of the targets. The page renders this
//! very structure, so the two never disagree. The JSON schema is documented in docs/metrics.md.

use std::{
    borrow::Cow,
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::jiff::{Timestamp, Unit};
use serde::{Deserialize, Serialize};

use crate::{
    components::Origin,
    history::{Event, EventKind, LeaseStats},
    judge::Verdict,
    targets::{TargetStatus, Timeline},
};

/// Bumped when a field changes meaning or goes away; new fields may appear at any time.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub schema: u32,
    pub exporter_version: Cow<'static, str>,
    /// When this was read, RFC 3339.
    pub generated_at: String,
    /// Every watch of the configured components has completed its first list.
    pub ready: bool,
    pub components: Vec<ComponentStatus>,
}

/// One component within one scope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub component: String,
    /// A namespace, or "all namespaces".
    pub scope: String,
    /// Found at run time from its Lease, rather than configured. Absent from the status of
    /// exporters before 0.2.0, which read as `false`.
    #[serde(default)]
    pub discovered: bool,
    /// The workload whose pods hold a discovered component's Lease; `None` for a configured
    /// component, and for an abandoned Lease whose holder resolved to no workload.
    #[serde(default)]
    pub workload: Option<WorkloadView>,
    /// The name of the Lease its leader holds.
    pub lease: String,
    /// The label selector of its pods; empty for an abandoned Lease, which has none.
    pub pod_selector: String,
    pub pods_watch_healthy: bool,
    pub leases_watch_healthy: bool,
    /// In how many namespaces the component has pods or its Lease; `None` while blind.
    pub found_in: Option<usize>,
    pub namespaces: Vec<NamespaceStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// Deployment, StatefulSet, DaemonSet, or "static pods".
    pub kind: String,
    pub name: String,
    /// Where its pods run: the Lease's namespace but for a Lease kept apart from its
    /// workload, as cert-manager keeps its in kube-system.
    pub namespace: String,
}

impl ComponentStatus {
    /// Discovered, and its Lease's holder resolved to no workload.
    pub fn abandoned(&self) -> bool {
        self.discovered && self.workload.is_none()
    }
}

/// The state of a card on the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A live leader holds the lease.
    Leader,
    /// No live leader.
    NoLeader,
    /// The lease looks run out and a direct read is confirming it.
    Checking,
    /// A watch is failing or has not listed yet: nothing is known now.
    Blind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamespaceStatus {
    pub namespace: String,
    pub state: State,
    /// Why the leader is or is not present; `None` while blind.
    pub reason: Option<String>,
    pub holder: Option<String>,
    /// Whether the holder's pod is Ready; `None` when no pod matches the holder.
    pub holder_ready: Option<bool>,
    pub pods: Option<u32>,
    pub pods_ready: Option<u32>,
    /// Ready pods besides the holder's, that would take over if it went: 0 for a component
    /// that runs one replica.
    pub standbys: Option<u32>,
    pub lease: Option<LeaseView>,
    /// How long the current holder has held the lease, by the exporter's clock.
    pub holder_since_seconds: Option<f64>,
    /// Holder changes the exporter has seen, to and from no holder included.
    pub holder_changes: Option<u64>,
    #[serde(default)]
    pub renewals: Renewals,
    /// Oldest first, at most 50.
    #[serde(default)]
    pub events: Vec<EventView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseView {
    /// Since the exporter last saw the record change.
    pub age_seconds: f64,
    /// The lease duration plus the grace: past it, the lease has run out.
    pub limit_seconds: Option<f64>,
    pub duration_seconds: Option<f64>,
    pub transitions: Option<i32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Renewals {
    pub count: u64,
    pub sum_seconds: f64,
    /// The last few minutes' intervals, oldest first.
    pub recent: Vec<RenewalView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewalView {
    pub at: String,
    /// How long before `generated_at`.
    pub ago_seconds: f64,
    pub interval_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventView {
    pub at: String,
    /// seen, acquired, changed, released, lost, back, deleted, blind, saw_again or
    /// holder_restarted.
    pub kind: Cow<'static, str>,
    /// The holder after the event.
    pub holder: Option<String>,
    /// The holder before, for changed and released.
    pub previous: Option<String>,
    pub transitions: Option<i32>,
    /// For holder_restarted: the holder pod's container restarts in all.
    pub restarts: Option<u32>,
}

/// Turns instants of the monotonic clock into wall-clock time, from one reading of both.
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    fn format(&self, at: Instant) -> String {
        let back = self.now.saturating_duration_since(at);
        let wall = self
            .wall
            .checked_sub(back)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        format_wall(wall)
    }
}

fn format_wall(wall: SystemTime) -> String {
    Timestamp::try_from(wall)
        .and_then(|t| t.round(Unit::Millisecond))
        .map_or_else(|_| "unknown".to_owned(), |t| t.to_string())
}

/// The status of every target, read at `now` (wall-clock `wall`).
pub fn status(targets: &[TargetStatus], now: Instant, wall: SystemTime, grace: Duration) -> Status {
    let clock = Clock { now, wall };
    let components = targets
        .iter()
        .map(|t| component(t, &clock, grace))
        .collect::<Vec<_>>();
    Status {
        schema: SCHEMA_VERSION,
        exporter_version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
        generated_at: format_wall(wall),
        ready: targets
            .iter()
            .filter(|t| !t.snapshot.discovered())
            .all(|t| t.snapshot.listed),
        components,
    }
}

fn component(target: &TargetStatus, clock: &Clock, grace: Duration) -> ComponentStatus {
    let snapshot = &target.snapshot;
    let namespaces = match &snapshot.verdicts {
        Some(verdicts) => verdicts
            .iter()
            .map(|(ns, verdict)| {
                let mut view = history_only(ns, target, clock);
                let stats = target.snapshot.stats.get(ns.as_str());
                judged(&mut view, verdict, stats, grace);
                view
            })
            .collect(),
        // Blind: what is known is the story so far.
        None => target
            .timelines
            .keys()
            .map(|ns| history_only(ns, target, clock))
            .collect(),
    };
    let workload = match &snapshot.origin {
        Origin::Discovered {
            workload: Some(workload),
        } => Some(WorkloadView {
            kind: workload.kind.clone(),
            name: workload.name.clone(),
            namespace: workload
                .namespace
                .clone()
                .unwrap_or_else(|| snapshot.scope.clone()),
        }),
        _ => None,
    };
    ComponentStatus {
        component: snapshot.component.clone(),
        scope: snapshot.scope.clone(),
        discovered: snapshot.discovered(),
        workload,
        lease: target.lease.clone(),
        pod_selector: target.pod_selector.clone(),
        pods_watch_healthy: snapshot.pods_healthy,
        leases_watch_healthy: snapshot.leases_healthy,
        found_in: snapshot.verdicts.as_ref().map(Vec::len),
        namespaces,
    }
}

/// A namespace's card with only its history: the state while nothing is known now.
fn history_only(ns: &str, target: &TargetStatus, clock: &Clock) -> NamespaceStatus {
    let stats = target.snapshot.stats.get(ns);
    let timeline = target.timelines.get(ns);
    NamespaceStatus {
        namespace: ns.to_owned(),
        state: State::Blind,
        reason: None,
        holder: None,
        holder_ready: None,
        pods: None,
        pods_ready: None,
        standbys: None,
        lease: None,
        holder_since_seconds: None,
        holder_changes: stats.map(|s| s.changes),
        renewals: renewals(stats, timeline, clock),
        events: timeline
            .map(|t| t.events.iter().map(|e| event(e, clock)).collect())
            .unwrap_or_default(),
    }
}

/// Fills in what the verdict says now.
fn judged(
    view: &mut NamespaceStatus,
    verdict: &Verdict,
    stats: Option<&LeaseStats>,
    grace: Duration,
) {
    view.state = match (verdict.is_known(), verdict.present) {
        (false, _) => State::Checking,
        (true, true) => State::Leader,
        (true, false) => State::NoLeader,
    };
    view.reason = Some(verdict.reason.to_string());
    view.holder.clone_from(&verdict.holder);
    view.holder_ready = verdict.holder_ready;
    view.pods = Some(verdict.pods);
    view.pods_ready = Some(verdict.pods_ready);
    let holder_counted = u32::from(verdict.holder_ready == Some(true));
    view.standbys = Some(verdict.pods_ready.saturating_sub(holder_counted));
    view.lease = verdict.lease.as_ref().map(|l| LeaseView {
        age_seconds: l.age.as_secs_f64(),
        limit_seconds: l.duration.map(|d| (d + grace).as_secs_f64()),
        duration_seconds: l.duration.map(|d| d.as_secs_f64()),
        transitions: l.transitions,
    });
    view.holder_since_seconds = stats
        .filter(|_| verdict.holder.is_some())
        .map(|s| s.holder_since.as_secs_f64());
}

fn renewals(stats: Option<&LeaseStats>, timeline: Option<&Timeline>, clock: &Clock) -> Renewals {
    let Some(stats) = stats else {
        return Renewals::default();
    };
    Renewals {
        count: stats.renewals.count,
        sum_seconds: stats.renewals.sum,
        recent: timeline
            .map(|t| {
                t.recent_renewals
                    .iter()
                    .map(|(at, interval)| RenewalView {
                        at: clock.format(*at),
                        ago_seconds: clock.now.saturating_duration_since(*at).as_secs_f64(),
                        interval_seconds: interval.as_secs_f64(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn event(e: &Event, clock: &Clock) -> EventView {
    let previous = match &e.kind {
        EventKind::Changed { previous } | EventKind::Released { previous } => {
            Some(previous.clone())
        }
        _ => None,
    };
    let restarts = match e.kind {
        EventKind::HolderRestarted { restarts } => Some(restarts),
        _ => None,
    };
    EventView {
        at: clock.format(e.at),
        kind: Cow::Borrowed(e.kind.name()),
        holder: e.holder.clone(),
        previous,
        transitions: e.transitions,
        restarts,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use kube::core::Selector;
    use serde_json::Value;

    use super::*;
    use crate::{
        components::{Component, Workload},
        config::Settings,
        judge::LeaseRecord,
        leases::LeaseChange,
        pods::PodChange,
        targets::Targets,
    };

    /// The status of the configured components, seen nowhere, and of two discovered in
    /// namespace `data`: `db-leader`, held by a pod of StatefulSet `db`, and `old-lock`, an
    /// abandoned Lease.
    pub(crate) fn with_discovered() -> Status {
        let grace = Duration::from_secs(5);
        let targets = Targets::new(&Settings::with_defaults(grace));
        let db = Workload {
            kind: "StatefulSet".into(),
            name: "db".into(),
            namespace: None,
        };
        let found = [
            Component::discovered(
                "db-leader",
                Some((db, Selector::from_iter([("app", "db")]))),
            ),
            Component::discovered("old-lock", None),
        ];
        for component in found {
            targets.discover(component, "data".into()).expect("new");
        }
        let now = Instant::now();
        for target in targets.all() {
            list(&target, now);
        }
        status(&targets.status(now), now, SystemTime::now(), grace)
    }

    fn list(target: &Arc<crate::targets::Target>, now: Instant) {
        target.apply_pods(PodChange::ListStarted);
        target.apply_pods(PodChange::ListDone);
        target.apply_leases(LeaseChange::ListStarted, now);
        if target.component().is_discovered() {
            let record = LeaseRecord {
                holder: Some("someone".into()),
                duration_seconds: Some(15),
                has_spec: true,
                ..LeaseRecord::default()
            };
            target.apply_leases(LeaseChange::Listed("data".into(), record), now);
        }
        target.apply_leases(LeaseChange::ListDone, now);
    }

    #[test]
    fn discovered_components_say_so_with_their_workload() {
        let status = with_discovered();
        assert!(
            status.ready,
            "discovered components do not hold readiness up"
        );
        let json = serde_json::to_value(&status).expect("JSON");
        let component = |name: &str| {
            json["components"]
                .as_array()
                .expect("components")
                .iter()
                .find(|c| c["component"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {json:#}"))
        };
        let db = component("db-leader");
        assert_eq!(db["discovered"], true);
        assert_eq!(
            db["workload"],
            serde_json::json!({"kind": "StatefulSet", "name": "db", "namespace": "data"})
        );
        assert_eq!(
            (&db["scope"], &db["pod_selector"]),
            (&"data".into(), &"app=db".into())
        );
        let old = component("old-lock");
        assert_eq!(
            (&old["discovered"], &old["workload"]),
            (&true.into(), &Value::Null)
        );
        assert_eq!(old["namespaces"][0]["pods"], 0);
        let operator = component("virt-operator");
        assert_eq!(
            (&operator["discovered"], &operator["workload"]),
            (&false.into(), &Value::Null)
        );
    }
}
