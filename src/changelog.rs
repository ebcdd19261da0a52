//! Leader changes as log lines: a consumer of successive snapshots that logs what differs.
//! Operators grep for these lines.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use crate::{
    judge::Verdict,
    targets::{Snapshot, Targets},
};

/// What was last logged for a component in a namespace.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    present: bool,
    holder: Option<String>,
}

/// A leader change between two snapshots.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaderEvent {
    /// First sight of a component in a namespace.
    FirstSeen,
    Changed {
        previous: Option<String>,
    },
    Lost,
    Back,
}

/// One logged change, with the verdict it came from.
#[derive(Clone, Debug)]
pub struct Logged {
    pub namespace: String,
    pub component: String,
    pub event: LeaderEvent,
    pub verdict: Verdict,
}

/// The last state seen per component and namespace.
#[derive(Debug, Default)]
pub struct LeaderLog {
    seen: BTreeMap<(String, String), Seen>,
    /// Per component, whether it was last found in some namespace.
    found: BTreeMap<String, bool>,
}

impl LeaderLog {
    /// The changes since the last snapshot. Blind targets and verdicts still waiting for a
    /// direct read say nothing; namespaces and discovered components that are gone are
    /// forgotten, so that one found again is told as a first sight.
    pub fn changes(&mut self, snapshot: &Snapshot) -> Vec<Logged> {
        let known = |c: &String| snapshot.targets.iter().any(|t| t.component == *c);
        self.seen.retain(|(c, _), _| known(c));
        let mut out = Vec::new();
        for target in &snapshot.targets {
            let Some(verdicts) = &target.verdicts else {
                continue;
            };
            let component = &target.component;
            self.seen
                .retain(|(c, ns), _| c != component || verdicts.iter().any(|(n, _)| n == ns));
            for (namespace, verdict) in verdicts.iter().filter(|(_, v)| v.is_known()) {
                let now = Seen {
                    present: verdict.present,
                    holder: verdict.holder.clone(),
                };
                let key = (component.clone(), namespace.clone());
                if let Some(event) = event(self.seen.get(&key), &now) {
                    out.push(Logged {
                        namespace: namespace.clone(),
                        component: component.clone(),
                        event,
                        verdict: verdict.clone(),
                    });
                }
                self.seen.insert(key, now);
            }
        }
        out
    }
}

fn event(before: Option<&Seen>, now: &Seen) -> Option<LeaderEvent> {
    match before {
        None => Some(LeaderEvent::FirstSeen),
        Some(b) if b.holder != now.holder => Some(LeaderEvent::Changed {
            previous: b.holder.clone(),
        }),
        Some(b) if b.present && !now.present => Some(LeaderEvent::Lost),
        Some(b) if !b.present && now.present => Some(LeaderEvent::Back),
        Some(_) => None,
    }
}

fn log(entry: &Logged) {
    let Logged {
        namespace,
        component,
        verdict,
        ..
    } = entry;
    let holder = verdict.holder.as_deref().unwrap_or("");
    let reason = verdict.reason.to_string();
    match &entry.event {
        LeaderEvent::FirstSeen if verdict.present => {
            tracing::info!(namespace, component, holder, "leader present");
        }
        LeaderEvent::FirstSeen => tracing::info!(namespace, component, holder, reason, "no leader"),
        LeaderEvent::Changed { previous } => tracing::info!(
            namespace,
            component,
            holder,
            previous = previous.as_deref().unwrap_or(""),
            present = verdict.present,
            "leader changed"
        ),
        LeaderEvent::Lost => tracing::info!(namespace, component, holder, reason, "leader lost"),
        LeaderEvent::Back => tracing::info!(namespace, component, holder, "leader back"),
    }
    if !verdict.present {
        tracing::debug!(namespace, component, holder, reason, "leader not present");
    }
}

impl LeaderLog {
    /// Components that are now found nowhere (`false`) or found again (`true`), once their
    /// watches have listed.
    pub fn found_changes(&mut self, snapshot: &Snapshot) -> Vec<(String, bool)> {
        self.found
            .retain(|c, _| snapshot.targets.iter().any(|t| t.component == *c));
        let mut out = Vec::new();
        for (component, count) in snapshot.namespaces_found() {
            let Some(count) = count else { continue };
            let found = count > 0;
            let before = self.found.insert(component.to_owned(), found);
            if before != Some(found) && (before.is_some() || !found) {
                out.push((component.to_owned(), found));
            }
        }
        out
    }
}

fn log_found(component: &str, found: bool) {
    if found {
        tracing::info!(component, "component found");
    } else {
        tracing::warn!(
            component,
            "component found in no namespace: check --namespace, its pod selector and Lease \
             name, and the exporter's RBAC; no leader alert can fire for it"
        );
    }
}

/// Logs every leader change, and components found nowhere, until the targets are dropped.
pub async fn run(targets: Arc<Targets>) {
    let mut changed = targets.subscribe();
    let mut leaders = LeaderLog::default();
    loop {
        let snapshot = targets.snapshot(Instant::now());
        for entry in leaders.changes(&snapshot) {
            log(&entry);
        }
        for (component, found) in leaders.found_changes(&snapshot) {
            log_found(&component, found);
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{judge::Reason, targets::TargetSnapshot};

    fn verdict(present: bool, holder: &str) -> Verdict {
        Verdict {
            pods: 2,
            pods_ready: 2,
            present,
            reason: if present {
                Reason::Present
            } else {
                Reason::Expired {
                    age: Duration::from_secs(30),
                    limit: Duration::from_secs(25),
                }
            },
            holder: Some(holder.into()),
            holder_ready: Some(true),
            lease: None,
        }
    }

    fn snapshot(verdicts: Option<Vec<(&str, Verdict)>>) -> Snapshot {
        Snapshot {
            targets: vec![TargetSnapshot {
                component: "virt-operator".into(),
                origin: crate::components::Origin::Configured,
                scope: "all namespaces".into(),
                pods_healthy: verdicts.is_some(),
                leases_healthy: verdicts.is_some(),
                listed: true,
                verdicts: verdicts
                    .map(|vs| vs.into_iter().map(|(ns, v)| (ns.to_owned(), v)).collect()),
                stats: Default::default(),
            }],
        }
    }

    fn events(log: &mut LeaderLog, snap: &Snapshot) -> Vec<(String, LeaderEvent)> {
        log.changes(snap)
            .into_iter()
            .map(|l| (l.namespace, l.event))
            .collect()
    }

    #[test]
    fn a_component_gone_and_back_is_first_seen_again() {
        let mut log = LeaderLog::default();
        let led = snapshot(Some(vec![("kubevirt", verdict(true, "a"))]));
        let first = [("kubevirt".to_owned(), LeaderEvent::FirstSeen)];
        assert_eq!(events(&mut log, &led), first);
        assert!(events(&mut log, &led).is_empty());
        let gone = Snapshot {
            targets: Vec::new(),
        };
        assert!(events(&mut log, &gone).is_empty());
        assert_eq!(events(&mut log, &led), first);
    }

    #[test]
    fn logs_first_sight_changes_loss_and_return_once_each() {
        let mut log = LeaderLog::default();
        let a = snapshot(Some(vec![("kubevirt", verdict(true, "a"))]));
        assert_eq!(
            events(&mut log, &a),
            [("kubevirt".to_owned(), LeaderEvent::FirstSeen)]
        );
        assert!(events(&mut log, &a).is_empty());
        let lost = snapshot(Some(vec![("kubevirt", verdict(false, "a"))]));
        assert_eq!(events(&mut log, &lost)[0].1, LeaderEvent::Lost);
        assert_eq!(events(&mut log, &a)[0].1, LeaderEvent::Back);
        let b = snapshot(Some(vec![("kubevirt", verdict(true, "b"))]));
        assert_eq!(
            events(&mut log, &b)[0].1,
            LeaderEvent::Changed {
                previous: Some("a".into())
            }
        );
    }

    #[test]
    fn a_component_found_nowhere_is_said_once_and_so_is_its_return() {
        let mut log = LeaderLog::default();
        assert!(
            log.found_changes(&snapshot(None)).is_empty(),
            "blind says nothing"
        );
        let empty = snapshot(Some(vec![]));
        assert_eq!(
            log.found_changes(&empty),
            [("virt-operator".to_owned(), false)]
        );
        assert!(log.found_changes(&empty).is_empty());
        let a = snapshot(Some(vec![("kubevirt", verdict(true, "a"))]));
        assert_eq!(log.found_changes(&a), [("virt-operator".to_owned(), true)]);
        // Found at first sight is the normal case: nothing to say.
        let mut fresh = LeaderLog::default();
        assert!(fresh.found_changes(&a).is_empty());
    }

    #[test]
    fn blind_and_unconfirmed_say_nothing() {
        let mut log = LeaderLog::default();
        let a = snapshot(Some(vec![("kubevirt", verdict(true, "a"))]));
        events(&mut log, &a);
        assert!(events(&mut log, &snapshot(None)).is_empty());
        let mut waiting = verdict(false, "a");
        waiting.reason = Reason::Unconfirmed {
            age: Duration::from_secs(30),
            limit: Duration::from_secs(25),
        };
        assert!(events(&mut log, &snapshot(Some(vec![("kubevirt", waiting)]))).is_empty());
        // A namespace that went away is new when it comes back.
        events(&mut log, &snapshot(Some(vec![])));
        assert_eq!(events(&mut log, &a)[0].1, LeaderEvent::FirstSeen);
    }
}
