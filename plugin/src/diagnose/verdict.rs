//! The conclusion for one component in one namespace, from fixed rules over the gathered
//! facts: whether it has a live leader, what is wrong if not, and the runbook's next step.

use serde::Serialize;

use super::facts::{Facts, LeaseFacts, Lookup, rejects_the_lease};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Leader,
    NoLeader,
    /// Not enough could be read to tell.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub health: Health,
    /// What is wrong (or worth knowing), most telling first, in plain words.
    pub findings: Vec<String>,
    /// The runbook's next step.
    pub next_step: String,
    /// Look-ups the user was not allowed to make, and what that leaves unchecked.
    pub unchecked: Vec<String>,
}

/// Judges `facts` by the rules, in order.
pub fn verdict(facts: &Facts) -> Verdict {
    let unchecked = unchecked(facts);
    let lease = match &facts.lease {
        Lookup::Found(lease) => lease.as_ref(),
        Lookup::Forbidden(why) | Lookup::Failed(why) | Lookup::Unavailable(why) => {
            return Verdict {
                health: Health::Unknown,
                findings: vec![format!(
                    "could not read the Lease {}: {why}",
                    facts.lease_name
                )],
                next_step: "Run diagnose with a user who may get leases in this namespace.".into(),
                unchecked,
            };
        }
    };
    let mut findings = Vec::new();
    let health = health(facts, lease, &mut findings);
    if health != Health::Leader {
        causes(facts, lease, health, &mut findings);
    }
    warnings(facts, &mut findings);
    Verdict {
        health,
        next_step: next_step(health, &findings),
        findings,
        unchecked,
    }
}

fn health(facts: &Facts, lease: Option<&LeaseFacts>, findings: &mut Vec<String>) -> Health {
    let Some(lease) = lease else {
        findings.push(format!(
            "the Lease {} does not exist: no pod has ever acquired it here",
            facts.lease_name
        ));
        return Health::NoLeader;
    };
    let Some(holder) = &lease.holder else {
        findings.push("the lease has no holder: it was released and nobody took it".into());
        return Health::NoLeader;
    };
    match (&facts.observation, lease.renewed_seconds_ago_by_server) {
        (Some(seen), _) if seen.changed => {
            findings.push(format!("leader present: {holder} renews the lease"));
            Health::Leader
        }
        (Some(seen), ago) => unrenewed(holder, seen.seconds, ago, lease, findings),
        // Not watched: judge by the API server's own clock.
        (None, Some(ago)) => match lease.duration_seconds {
            Some(d) if ago <= f64::from(d) => {
                findings.push(format!(
                    "leader present: {holder} renewed {ago:.0}s ago by the API server's clock"
                ));
                Health::Leader
            }
            _ => {
                findings.push(format!(
                    "the lease names {holder}, last renewed {ago:.0}s ago by the API server's clock, past its duration"
                ));
                Health::NoLeader
            }
        },
        (None, None) => {
            findings.push("the lease was not watched and the API server's clock is unknown: cannot tell whether it is renewed".into());
            Health::Unknown
        }
    }
}

/// The lease did not change while watched. A watch shorter than the lease's duration proves
/// nothing by itself (a slow but live leader renews within the duration), unless the API
/// server's clock says the last renewal is already past it.
fn unrenewed(
    holder: &str,
    watched: f64,
    ago: Option<f64>,
    lease: &LeaseFacts,
    findings: &mut Vec<String>,
) -> Health {
    let duration = lease.duration_seconds.map(f64::from);
    if duration.is_none_or(|d| watched >= d) {
        findings.push(format!(
            "the lease names {holder}, but nobody renewed it in {watched:.0}s of watching"
        ));
        return Health::NoLeader;
    }
    match ago.zip(duration) {
        Some((ago, d)) if ago > d => {
            findings.push(format!(
                "the lease names {holder}, not renewed in {watched:.0}s of watching and last \
                 renewed {ago:.0}s ago by the API server's clock, past its {d:.0}s duration"
            ));
            Health::NoLeader
        }
        _ => {
            findings.push(format!(
                "the lease names {holder}, not renewed in {watched:.0}s of watching, less than \
                 its duration: watch longer (--observe)"
            ));
            Health::Unknown
        }
    }
}

/// Why there is no leader, from the facts that explain it.
fn causes(facts: &Facts, lease: Option<&LeaseFacts>, health: Health, findings: &mut Vec<String>) {
    if let Some(holder) = lease.and_then(|l| l.holder.as_deref())
        && facts.pods_listed
        && !facts
            .pods
            .iter()
            .any(|p| p.running() && holder_names(holder, &p.name))
    {
        findings.push(format!(
            "the lease names {holder}, which is not a running pod: the lease is stale; it \
             expires by itself unless renewed (see the runbook before deleting it)"
        ));
    }
    if let Some(rights) = facts.rights.found() {
        for right in rights.iter().filter(|r| !r.allowed) {
            findings.push(format!(
                "the service account {} may not {} leases",
                right.service_account, right.verb
            ));
        }
    }
    if let Some(hooks) = facts.webhooks.found() {
        for hook in hooks {
            findings.push(format!(
                "{} webhook {} ({}) intercepts lease updates",
                hook.kind, hook.name, hook.configuration
            ));
        }
    }
    for excerpt in &facts.logs {
        let Some(lines) = excerpt.lines.found() else {
            continue;
        };
        if let Some(line) = lines.iter().rev().find(|l| rejects_the_lease(l)) {
            findings.push(format!("{} logs: {}", excerpt.pod, line.trim()));
        }
    }
    let logs_read = facts.logs.iter().any(|e| e.lines.found().is_some());
    let trying = facts.logs.iter().any(|e| e.tries_to_acquire);
    if health == Health::NoLeader && logs_read && !trying {
        findings.push("nobody renews the lease and no pod logs an acquisition attempt".into());
    }
    if !facts.pods_listed {
        // Nothing to say about pods that could not be listed.
    } else if facts.pods.is_empty() {
        findings.push("no pod of the component exists here".into());
    } else if !facts.pods.iter().any(|p| p.ready) {
        findings.push("no pod of the component is Ready".into());
    }
}

/// Facts worth knowing whatever the health: restarts and their last reason, and containers
/// that wait instead of running.
fn warnings(facts: &Facts, findings: &mut Vec<String>) {
    for pod in facts.pods.iter() {
        let waiting = pod
            .waiting
            .as_ref()
            .map(|reason| format!("waiting in {reason}"));
        let restarts = (pod.restarts > 0).then(|| {
            let last = pod
                .last_termination
                .as_ref()
                .map(|(reason, code)| format!(", last {reason} (exit code {code})"))
                .unwrap_or_default();
            format!("restarted {} times{last}", pod.restarts)
        });
        let said: Vec<String> = restarts.into_iter().chain(waiting).collect();
        if !said.is_empty() {
            findings.push(format!("{} {}", pod.name, said.join(", now ")));
        }
    }
}

/// Whether the holder identity names the pod: KubeVirt uses the pod name, controller-runtime
/// `<pod>_<uuid>`.
fn holder_names(holder: &str, pod: &str) -> bool {
    holder
        .strip_prefix(pod)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

fn unchecked(facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if !facts.pods_listed {
        out.push(
            "the pods: whether the lease's holder is a running pod, their readiness, restarts, \
             logs and service accounts (listing the pods failed)"
                .to_owned(),
        );
    }
    if let Lookup::Forbidden(_) = facts.rights {
        out.push(
            "whether the pods' service accounts may update leases (creating a \
             SubjectAccessReview was forbidden)"
                .to_owned(),
        );
    }
    if let Lookup::Forbidden(_) = facts.webhooks {
        out.push(
            "admission webhooks on leases (listing webhook configurations was forbidden)".into(),
        );
    }
    if let Lookup::Forbidden(_) = facts.events {
        out.push("events (listing events was forbidden)".into());
    }
    out
}

fn next_step(health: Health, findings: &[String]) -> String {
    // Matched on the rules' own wording, never on quoted log lines.
    let says = |what: &str| {
        findings
            .iter()
            .filter(|f| !f.contains(" logs: "))
            .any(|f| f.contains(what))
    };
    match health {
        Health::Leader => "Nothing to do.".into(),
        Health::Unknown => "Look again with more rights, or read the runbook's diagnosis by hand.".into(),
        Health::NoLeader if says(" may not ") => {
            "Restore the service account's rights on coordination.k8s.io leases (its Role and RoleBinding).".into()
        }
        Health::NoLeader if says("intercepts lease updates") => {
            "Fix the webhook, or exclude coordination.k8s.io leases from its rules.".into()
        }
        Health::NoLeader if says("not a running pod") => {
            "Find out why the standby does not take over: read its log for lease errors (see the runbook).".into()
        }
        Health::NoLeader => "Follow the runbook's diagnosis: read the pods' logs for leader election errors.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::facts::{Observation, PodFacts, Right, Webhook};

    fn pod(name: &str, running: bool) -> PodFacts {
        PodFacts {
            name: name.into(),
            phase: Some(if running { "Running" } else { "Failed" }.into()),
            ready: running,
            deleting: false,
            node: None,
            age_seconds: None,
            restarts: 0,
            last_termination: None,
            waiting: None,
            service_account: "kubevirt-operator".into(),
        }
    }

    fn facts(holder: Option<&str>, renewed: bool) -> Facts {
        Facts {
            component: "virt-operator".into(),
            namespace: "kubevirt".into(),
            lease_name: "virt-operator".into(),
            pods: vec![pod("a", true), pod("b", true)],
            pods_listed: true,
            lease: Lookup::Found(Some(LeaseFacts {
                holder: holder.map(str::to_owned),
                acquire_time: None,
                renew_time: None,
                duration_seconds: Some(15),
                transitions: Some(0),
                renewed_seconds_ago_by_server: Some(1.0),
            })),
            observation: Some(Observation {
                seconds: 20.0,
                changed: renewed,
            }),
            rights: Lookup::Found(vec![]),
            webhooks: Lookup::Found(vec![]),
            events: Lookup::Found(vec![]),
            logs: vec![],
            objects: Default::default(),
        }
    }

    #[test]
    fn a_renewing_holder_leads() {
        let v = verdict(&facts(Some("a"), true));
        assert_eq!(v.health, Health::Leader);
        assert_eq!(v.findings, ["leader present: a renews the lease"]);
    }

    #[test]
    fn a_short_watch_proves_nothing_unless_the_server_clock_agrees() {
        let mut f = facts(Some("a"), false);
        f.observation = Some(Observation {
            seconds: 5.0,
            changed: false,
        });
        assert_eq!(verdict(&f).health, Health::Unknown);
        if let Lookup::Found(Some(lease)) = &mut f.lease {
            lease.renewed_seconds_ago_by_server = Some(60.0);
        }
        assert_eq!(verdict(&f).health, Health::NoLeader);
    }

    #[test]
    fn pods_that_could_not_be_listed_are_not_called_missing() {
        let mut f = facts(Some("gone"), false);
        f.pods.clear();
        f.pods_listed = false;
        let v = verdict(&f);
        assert_eq!(v.health, Health::NoLeader, "the lease alone decides");
        assert!(
            !v.findings.iter().any(|x| x.contains("not a running pod")),
            "{v:?}"
        );
        assert!(!v.findings.iter().any(|x| x.starts_with("no pod")), "{v:?}");
        assert!(
            v.unchecked.iter().any(|u| u.starts_with("the pods")),
            "{v:?}"
        );
    }

    #[test]
    fn a_holder_that_is_not_a_running_pod_is_stale() {
        let v = verdict(&facts(Some("gone"), false));
        assert_eq!(v.health, Health::NoLeader);
        assert!(
            v.findings[1].contains("gone, which is not a running pod"),
            "{v:?}"
        );
    }

    #[test]
    fn missing_rights_and_webhooks_are_named() {
        let mut f = facts(Some("a"), false);
        f.rights = Lookup::Found(vec![Right {
            service_account: "kubevirt-operator".into(),
            verb: "update".into(),
            allowed: false,
        }]);
        f.webhooks = Lookup::Found(vec![Webhook {
            kind: "validating",
            configuration: "deny-leases".into(),
            name: "leases.example.com".into(),
            failure_policy: Some("Fail".into()),
        }]);
        let v = verdict(&f);
        assert_eq!(v.health, Health::NoLeader);
        assert!(
            v.findings
                .iter()
                .any(|x| x == "the service account kubevirt-operator may not update leases")
        );
        assert!(
            v.findings
                .iter()
                .any(|x| x.contains("webhook leases.example.com (deny-leases)"))
        );
        assert!(v.next_step.contains("rights"));
    }

    #[test]
    fn forbidden_look_ups_are_said_and_the_lease_still_decides() {
        let mut f = facts(Some("a"), true);
        f.rights = Lookup::Forbidden("no".into());
        let v = verdict(&f);
        assert_eq!(v.health, Health::Leader);
        assert_eq!(v.unchecked.len(), 1);
        f.lease = Lookup::Forbidden("no".into());
        assert_eq!(verdict(&f).health, Health::Unknown);
    }

    #[test]
    fn logs_tell_rejections_and_silence() {
        use crate::diagnose::facts::LogExcerpt;
        let mut f = facts(Some("a"), false);
        f.logs = vec![
            LogExcerpt {
                pod: "a".into(),
                lines: Lookup::Found(vec![
                    "reconciling webhook configuration virt-api-validator".into(),
                    "error retrieving resource lock kubevirt/virt-operator: leases.coordination.k8s.io \"virt-operator\" is forbidden".into(),
                ]),
                tries_to_acquire: false,
            },
            LogExcerpt {
                pod: "b".into(),
                lines: Lookup::Unavailable("no node".into()),
                tries_to_acquire: false,
            },
        ];
        let v = verdict(&f);
        assert!(
            v.findings
                .iter()
                .any(|x| x.starts_with("a logs: error retrieving resource lock")),
            "{v:?}"
        );
        assert!(
            v.findings.iter().any(|x| x.starts_with("nobody renews")),
            "{v:?}"
        );
        // Only the rejection is named, not the line about a webhook configuration, and the
        // next step follows the rules' findings, not the quoted line.
        assert!(
            !v.findings.iter().any(|x| x.contains("virt-api-validator")),
            "{v:?}"
        );
        assert!(!v.next_step.starts_with("Fix the webhook"), "{v:?}");
        // An attempt logged anywhere in what was read counts, kept line or not.
        f.logs[1].tries_to_acquire = true;
        assert!(
            !verdict(&f)
                .findings
                .iter()
                .any(|x| x.starts_with("nobody renews"))
        );
    }

    #[test]
    fn restarts_and_their_reason_are_told() {
        let mut f = facts(Some("a"), true);
        f.pods[0].restarts = 4;
        f.pods[0].last_termination = Some(("OOMKilled".into(), 137));
        let v = verdict(&f);
        assert!(
            v.findings
                .iter()
                .any(|x| x == "a restarted 4 times, last OOMKilled (exit code 137)")
        );
        f.pods[0].waiting = Some("CrashLoopBackOff".into());
        f.pods[1].waiting = Some("ImagePullBackOff".into());
        let v = verdict(&f);
        assert!(v.findings.iter().any(|x| x
            == "a restarted 4 times, last OOMKilled (exit code 137), now waiting in CrashLoopBackOff"));
        assert!(
            v.findings
                .iter()
                .any(|x| x == "b waiting in ImagePullBackOff"),
            "{v:?}"
        );
    }

    #[test]
    fn without_watching_the_server_clock_decides() {
        let mut f = facts(Some("a"), false);
        f.observation = None;
        assert_eq!(verdict(&f).health, Health::Leader);
        if let Lookup::Found(Some(l)) = &mut f.lease {
            l.renewed_seconds_ago_by_server = Some(60.0);
        }
        assert_eq!(verdict(&f).health, Health::NoLeader);
    }
}
