//! The simulated API server's object store: pods and leases with resource versions, an event
//! history for resuming watches, and a broadcast of every change to open watches.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Pod, PodCondition, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::Resource;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

/// Events kept for resuming watches; older resource versions get 410 Gone.
const HISTORY: usize = 10_000;

/// The kinds the simulated server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Lease,
}

impl Kind {
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod => "v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Lease => "Lease",
        }
    }

    fn of<K: Resource<DynamicType = ()>>() -> Self {
        if K::kind(&()) == "Lease" {
            Kind::Lease
        } else {
            Kind::Pod
        }
    }
}

/// A stored object, serialised once as the API server would send it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub json: Arc<str>,
}

/// One change, as watches replay it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub event_type: &'static str,
    pub object: Stored,
    /// Labels before a modification, so a watch with a label selector can turn a change
    /// that leaves or enters the selection into DELETED or ADDED.
    pub old_labels: Option<BTreeMap<String, String>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Stored>,
    history: VecDeque<Arc<Change>>,
    /// Watches must resume from this resource version or later.
    compacted: u64,
    /// Kinds whose open watch streams go silent.
    hung: Vec<Kind>,
    /// Container logs by (namespace, pod), as `pods/{name}/log` serves them.
    logs: BTreeMap<(String, String), String>,
}

/// A handle to the store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<Change>>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(HISTORY).0,
        }
    }
}

/// What a new watch starts from.
pub struct WatchStart {
    pub receiver: broadcast::Receiver<Arc<Change>>,
    /// Events the watch owes the client before live ones.
    pub backlog: Vec<Arc<Change>>,
    /// Live events at or below this version are already in the backlog.
    pub rv: u64,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the log `pods/{name}/log` serves for a pod.
    pub fn set_log(&self, namespace: &str, pod: &str, log: &str) {
        self.lock()
            .logs
            .insert((namespace.to_owned(), pod.to_owned()), log.to_owned());
    }

    /// The pod's log, if it has one.
    pub fn log(&self, namespace: &str, pod: &str) -> Option<String> {
        self.lock()
            .logs
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Creates or replaces an object, giving it a new resource version.
    pub fn apply<K>(&self, object: K)
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        match serde_json::to_value(&object) {
            Ok(value) => self.apply_json(Kind::of::<K>(), value),
            Err(error) => tracing::warn!(%error, "cannot serialise object"),
        }
    }

    /// Creates or replaces an object given as raw JSON, which need not be a valid object of
    /// its kind: tests use it to send what a typed client could not. Only `metadata` must be
    /// an object.
    pub fn apply_json(&self, kind: Kind, mut value: serde_json::Value) {
        let mut state = self.lock();
        state.rv += 1;
        let rv = state.rv;
        let object = value.as_object_mut();
        let Some(object) = object else { return };
        object.insert("apiVersion".into(), kind.api_version().into());
        object.insert("kind".into(), kind.name().into());
        let meta = object
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return;
        };
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let namespace = text(meta.get("namespace")).unwrap_or_else(|| "default".into());
        let name = text(meta.get("name")).unwrap_or_default();
        meta.insert("namespace".into(), namespace.clone().into());
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.entry("uid")
            .or_insert_with(|| format!("{}-{rv}", kind.name().to_lowercase()).into());
        meta.entry("creationTimestamp")
            .or_insert_with(|| Timestamp::now().to_string().into());
        let labels = meta
            .get("labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let stored = Stored {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            labels,
            json: value.to_string().into(),
        };
        let old = state
            .objects
            .insert((kind, namespace, name), stored.clone());
        let event_type = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let old_labels = old.map(|o| o.labels);
        self.record(&mut state, rv, event_type, stored, old_labels);
    }

    /// Reads an object back as its typed value.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let state = self.lock();
        let stored =
            state
                .objects
                .get(&(Kind::of::<K>(), namespace.to_owned(), name.to_owned()))?;
        serde_json::from_str(&stored.json).ok()
    }

    /// Changes an object in place; false when it does not exist.
    pub fn update<K>(&self, namespace: &str, name: &str, change: impl FnOnce(&mut K)) -> bool
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let Some(mut object) = self.get::<K>(namespace, name) else {
            return false;
        };
        change(&mut object);
        self.apply(object);
        true
    }

    /// Deletes an object; false when it does not exist.
    pub fn delete<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        self.delete_kind(Kind::of::<K>(), namespace, name)
    }

    fn delete_kind(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut state = self.lock();
        let Some(mut stored) = state
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        state.rv += 1;
        let rv = state.rv;
        stored.json = with_resource_version(&stored.json, rv).into();
        self.record(&mut state, rv, "DELETED", stored, None);
        true
    }

    fn record(
        &self,
        state: &mut State,
        rv: u64,
        event_type: &'static str,
        object: Stored,
        old_labels: Option<BTreeMap<String, String>>,
    ) {
        let change = Arc::new(Change {
            rv,
            event_type,
            object,
            old_labels,
        });
        if state.history.len() == HISTORY
            && let Some(dropped) = state.history.pop_front()
        {
            state.compacted = dropped.rv;
        }
        state.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(change);
    }

    /// Makes every open and new watch of `kind` hang: the stream stays open and sends
    /// nothing more, while lists and reads still answer. Streams that hung stay silent.
    pub fn hang_watches(&self, kind: Kind, hang: bool) {
        let mut state = self.lock();
        state.hung.retain(|k| *k != kind);
        if hang {
            state.hung.push(kind);
        }
    }

    pub fn watches_hung(&self, kind: Kind) -> bool {
        self.lock().hung.contains(&kind)
    }

    /// Forgets the event history, as etcd compaction does: watches resuming from an older
    /// resource version get 410 Gone and must list again.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted = state.rv;
    }

    /// Objects of `kind` that `keep` selects, with the current resource version.
    pub fn list(&self, kind: Kind, keep: impl Fn(&Stored) -> bool) -> (u64, Vec<Stored>) {
        let state = self.lock();
        let items = state
            .objects
            .values()
            .filter(|o| o.kind == kind && keep(o))
            .cloned()
            .collect();
        (state.rv, items)
    }

    pub fn get_stored(&self, kind: Kind, namespace: &str, name: &str) -> Option<Stored> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Starts a watch from `rv`: `None` means "now, after replaying every current object as
    /// ADDED". `Err` carries the oldest version still available.
    pub fn watch_from(&self, kind: Kind, rv: Option<u64>) -> Result<WatchStart, u64> {
        let state = self.lock();
        let receiver = self.events.subscribe();
        let backlog = match rv {
            None => state
                .objects
                .values()
                .filter(|o| o.kind == kind)
                .map(|o| {
                    Arc::new(Change {
                        rv: state.rv,
                        event_type: "ADDED",
                        object: o.clone(),
                        old_labels: None,
                    })
                })
                .collect(),
            Some(from) if from < state.compacted => return Err(state.compacted),
            Some(from) => state
                .history
                .iter()
                .filter(|c| c.rv > from && c.object.kind == kind)
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            receiver,
            backlog,
            rv: state.rv,
        })
    }
}

fn with_resource_version(json: &str, rv: u64) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("resourceVersion".into(), rv.to_string().into());
    }
    value.to_string()
}

/// A pod with the given labels, Ready or not.
pub fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], ready: bool) -> Pod {
    let mut pod = Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    set_ready(&mut pod, ready);
    pod
}

/// Sets the pod's `Ready` condition, as the kubelet would.
pub fn set_ready(pod: &mut Pod, ready: bool) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase = Some("Running".into());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(PodCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
}

/// A lease held by `holder`, renewed now, as leader election writes it.
pub fn lease(namespace: &str, name: &str, holder: &str, duration_seconds: i32) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

/// Leader-election steps on a stored lease.
impl Store {
    /// The holder renews: only `renewTime` moves.
    pub fn renew_lease(&self, namespace: &str, name: &str) -> bool {
        self.update::<Lease>(namespace, name, |lease| {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        })
    }

    /// Another candidate takes the lease, as after the old holder's lease expired.
    pub fn take_lease(&self, namespace: &str, name: &str, holder: &str) -> bool {
        self.update::<Lease>(namespace, name, |lease| {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = Some(holder.into());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        })
    }

    /// Sets a stored pod's readiness.
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> bool {
        self.update::<Pod>(namespace, name, |pod| set_ready(pod, ready))
    }
}
