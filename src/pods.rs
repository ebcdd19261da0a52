//! The pods one watch has delivered for a component within a scope.

use std::collections::BTreeMap;

use crate::{judge::PodInfo, objects::Change};

/// Where a pod lives and what it is called: the key of the pod set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// A change to the pod set.
pub type PodChange = Change<PodName, PodInfo>;

/// The pods, and whether their watch can be trusted.
#[derive(Debug, Default)]
pub struct PodSet {
    pods: BTreeMap<PodName, PodInfo>,
    /// Filled while a (re)list is in progress, swapped in when it completes, so that a
    /// half-finished list never shows and pods deleted meanwhile disappear.
    relisting: Option<BTreeMap<PodName, PodInfo>>,
    /// The last (re)list completed and no error was seen since.
    healthy: bool,
    /// A list has completed at some point.
    listed_once: bool,
}

impl PodSet {
    pub fn apply(&mut self, change: PodChange) {
        match change {
            PodChange::ListStarted => self.relisting = Some(BTreeMap::new()),
            PodChange::Listed(key, pod) => {
                if let Some(listed) = &mut self.relisting {
                    listed.insert(key, pod);
                }
            }
            PodChange::ListDone => {
                if let Some(listed) = self.relisting.take() {
                    self.pods = listed;
                    self.healthy = true;
                    self.listed_once = true;
                }
            }
            PodChange::Applied(key, pod) => {
                self.pods.insert(key, pod);
            }
            PodChange::Deleted(key) => {
                self.pods.remove(&key);
            }
        }
    }

    /// The watch failed: nothing it delivered is trusted until its next complete list.
    pub fn failed(&mut self) {
        self.healthy = false;
        self.relisting = None;
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn listed_once(&self) -> bool {
        self.listed_once
    }

    /// The pods in `namespace`.
    pub fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a PodInfo> {
        let from = PodName {
            namespace: namespace.to_owned(),
            name: String::new(),
        };
        self.pods
            .range(from..)
            .take_while(move |(key, _)| key.namespace == namespace)
            .map(|(_, pod)| pod)
    }

    /// Every namespace with at least one pod.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(|key| key.namespace.as_str())
    }

    /// Whether pods read directly (`listed`, all of them when `complete`) agree with what the
    /// watch delivered: each listed pod is held, with the same facts, and when complete
    /// nothing else is held.
    pub fn agrees_with(&self, listed: &BTreeMap<PodName, PodInfo>, complete: bool) -> bool {
        let held = listed
            .iter()
            .all(|(key, pod)| self.pods.get(key) == Some(pod));
        held && (!complete || self.pods.len() == listed.len())
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> PodName {
        PodName {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn ready(name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            ready_condition: true,
            ..PodInfo::default()
        }
    }

    #[test]
    fn a_direct_list_agrees_only_with_the_same_pods_and_facts() {
        let mut pods = PodSet::default();
        pods.apply(PodChange::ListStarted);
        pods.apply(PodChange::Listed(key("kubevirt", "a"), ready("a")));
        pods.apply(PodChange::Listed(key("kubevirt", "b"), ready("b")));
        pods.apply(PodChange::ListDone);
        let listed = |items: &[(&str, bool)]| -> BTreeMap<PodName, PodInfo> {
            items
                .iter()
                .map(|(name, is_ready)| {
                    let mut info = ready(name);
                    info.ready_condition = *is_ready;
                    (key("kubevirt", name), info)
                })
                .collect()
        };
        assert!(pods.agrees_with(&listed(&[("a", true), ("b", true)]), true));
        assert!(!pods.agrees_with(&listed(&[("a", true), ("b", false)]), true));
        assert!(
            !pods.agrees_with(&listed(&[("a", true)]), true),
            "b is gone"
        );
        assert!(
            pods.agrees_with(&listed(&[("a", true)]), false),
            "one page of several"
        );
        assert!(!pods.agrees_with(&listed(&[("a", true), ("b", true), ("c", true)]), true));
    }

    #[test]
    fn relist_replaces_contents_atomically() {
        let mut pods = PodSet::default();
        assert!(!pods.healthy() && !pods.listed_once());
        pods.apply(PodChange::ListStarted);
        pods.apply(PodChange::ListDone);
        pods.apply(PodChange::Applied(key("kubevirt", "a"), ready("a")));
        pods.apply(PodChange::Applied(key("kubevirt", "b"), ready("b")));
        pods.apply(PodChange::ListStarted);
        pods.apply(PodChange::Listed(key("kubevirt", "b"), ready("b")));
        // Mid-list the old contents still stand.
        assert_eq!(pods.in_namespace("kubevirt").count(), 2);
        pods.apply(PodChange::ListDone);
        assert_eq!(pods.in_namespace("kubevirt").count(), 1);
        assert!(pods.healthy());
    }

    #[test]
    fn a_failure_drops_a_half_finished_list() {
        let mut pods = PodSet::default();
        pods.apply(PodChange::ListStarted);
        pods.apply(PodChange::Listed(key("a", "p"), ready("p")));
        pods.failed();
        pods.apply(PodChange::ListDone);
        assert!(pods.is_empty() && !pods.healthy() && !pods.listed_once());
    }

    #[test]
    fn namespaces_are_kept_apart() {
        let mut pods = PodSet::default();
        for (ns, name) in [("a", "p"), ("b", "p"), ("b", "q"), ("c", "p")] {
            pods.apply(PodChange::Applied(key(ns, name), ready(name)));
        }
        assert_eq!(pods.in_namespace("b").count(), 2);
        assert_eq!(pods.in_namespace("bb").count(), 0);
        assert_eq!(pods.len(), 4);
    }
}
