//! The watch tasks: kube-rs watchers that keep the cache filled, and the direct reads that
//! confirm a lease that seems to have stopped being renewed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        utils::Backoff,
        watcher::{self, Event, ExponentialBackoff},
    },
};
use serde::{Deserialize, Deserializer};
use tracing::{debug, info, warn};

use crate::{
    cache::{Cache, Change, Key},
    judge::{LeaseRecord, PodInfo},
    metrics::{Metrics, Resource},
};

/// The API access the exporter needs, as (API group, resource, verbs): the RBAC rules in
/// `deploy/` must grant exactly this.
pub const API_ACCESS: [(&str, &str, [&str; 3]); 2] = [
    ("", "pods", ["get", "list", "watch"]),
    ("coordination.k8s.io", "leases", ["get", "list", "watch"]),
];

/// How long a confirming read of a lease may take before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries of a failed watch start after 0.4 s and double up to 2 s, each plus a random
/// 0-100 %: never more than 4 s apart, so the exporter sees again within a few seconds of
/// the API server answering, and the jitter spreads the retries of many exporters that
/// lost the API server at the same moment. kube's default (up to 60 s with jitter) would
/// keep an exporter blind for long after a short outage.
const RETRY_FIRST: Duration = Duration::from_millis(400);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The retry schedule of one watch; reset whenever a list completes.
fn retry_backoff() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(RETRY_FIRST)
        .with_max_delay(RETRY_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// What the watch tasks share.
#[derive(Clone)]
pub struct Watches {
    pub client: Client,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
}

impl Watches {
    /// Spawns a pod watch and a lease watch for every target in the cache.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.cache.len())
            .flat_map(|i| {
                [
                    tokio::spawn(self.clone().watch_pods(i)),
                    tokio::spawn(self.clone().watch_leases(i)),
                ]
            })
            .collect()
    }

    fn api<K>(&self, index: usize) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.cache.target(index).namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn pod_stream(&self, index: usize) -> BoxStream<'static, watcher::Result<Event<PodView>>> {
        let selector = self.cache.target(index).component.label_selector();
        // Small pages keep the transient memory of a re-list of many pods small.
        watcher(
            self.api(index),
            watcher::Config::default().labels(&selector).page_size(100),
        )
    }

    fn lease_stream(&self, index: usize) -> BoxStream<'static, watcher::Result<Event<Lease>>> {
        let name = self.cache.target(index).component.lease.clone();
        watcher(
            self.api(index),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
    }

    fn failed(&self, index: usize, resource: Resource, error: &dyn std::fmt::Display) {
        self.metrics.watch_error(resource);
        let mut target = self.cache.update(index);
        let (component, scope) = (target.component.name.clone(), target.scope().to_owned());
        warn!(resource = resource.as_str(), component, scope, %error, "watch failed, retrying");
        match resource {
            Resource::Pods => target.pods_failed(),
            Resource::Leases => target.leases_failed(Instant::now()),
        }
    }

    async fn watch_pods(self, index: usize) {
        let mut backoff = retry_backoff();
        loop {
            let mut stream = self.pod_stream(index);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if matches!(event, Event::InitDone) {
                            backoff.reset();
                        }
                        let mut target = self.cache.update(index);
                        target.apply_pod(reduce(event, pod_info));
                        target.log_changes(Instant::now(), self.cache.grace);
                    }
                    Err(error) => {
                        self.failed(index, Resource::Pods, &error);
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.next().unwrap_or(RETRY_MAX)).await;
        }
    }

    async fn watch_leases(self, index: usize) {
        let mut backoff = retry_backoff();
        loop {
            match self.lease_stream_once(index, &mut backoff).await {
                Restart::AfterError => {
                    tokio::time::sleep(backoff.next().unwrap_or(RETRY_MAX)).await;
                }
                Restart::Now => {}
            }
        }
    }

    /// Runs one lease watcher until it fails or a direct read shows it fell behind.
    async fn lease_stream_once(&self, index: usize, backoff: &mut ExponentialBackoff) -> Restart {
        let mut stream = self.lease_stream(index);
        loop {
            let deadline = self
                .cache
                .target(index)
                .next_deadline(Instant::now(), self.cache.grace);
            let timer = sleep_until(deadline);
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        if matches!(event, Event::InitDone) {
                            backoff.reset();
                        }
                        let now = Instant::now();
                        let mut target = self.cache.update(index);
                        target.apply_lease(reduce(event, lease_record), now);
                        target.log_changes(now, self.cache.grace);
                    }
                    Some(Err(error)) => {
                        self.failed(index, Resource::Leases, &error);
                        return Restart::AfterError;
                    }
                    None => return Restart::AfterError,
                },
                () = timer => {
                    if let Some(restart) = self.confirm_leases(index).await {
                        return restart;
                    }
                    self.cache.update(index).log_changes(Instant::now(), self.cache.grace);
                }
            }
        }
    }

    /// Reads each lease that has not changed for a full lease duration, so that a watch that
    /// hangs silently cannot make a live leader look dead.
    async fn confirm_leases(&self, index: usize) -> Option<Restart> {
        let due = self.cache.target(index).leases_to_confirm(Instant::now());
        for key in due {
            let api: Api<Lease> = Api::namespaced(self.client.clone(), &key.0);
            let read = tokio::time::timeout(CONFIRM_TIMEOUT, api.get_opt(&key.1)).await;
            let fresh = match read {
                Ok(Ok(lease)) => lease.as_ref().map(lease_record),
                Ok(Err(error)) => {
                    self.failed(index, Resource::Leases, &error);
                    return Some(Restart::AfterError);
                }
                Err(_) => {
                    self.failed(
                        index,
                        Resource::Leases,
                        &"confirming read of the lease timed out",
                    );
                    return Some(Restart::AfterError);
                }
            };
            if let Some(restart) = self.compare_read(index, &key, fresh) {
                return Some(restart);
            }
        }
        None
    }

    fn compare_read(&self, index: usize, key: &Key, fresh: Option<LeaseRecord>) -> Option<Restart> {
        let now = Instant::now();
        let mut target = self.cache.update(index);
        let held = target.leases.objects().get(key).map(|seen| &seen.record);
        if held == fresh.as_ref() {
            debug!(
                namespace = key.0,
                lease = key.1,
                "lease confirmed unrenewed by a direct read"
            );
            target.mark_confirmed(&key.0, now);
            return None;
        }
        let change = match fresh {
            Some(record) => Change::Applied(key.clone(), record),
            None => Change::Deleted(key.clone()),
        };
        target.apply_lease(change, now);
        target.leases_failed(now);
        self.metrics.watch_error(Resource::Leases);
        drop(target);
        warn!(
            namespace = key.0,
            lease = key.1,
            "lease watch fell behind a direct read; restarting it"
        );
        Some(Restart::Now)
    }
}

enum Restart {
    AfterError,
    Now,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A watcher, restarted from a fresh list after every error. Only a completed list tells the
/// exporter that its cache matches the server again, which is what `watch_healthy` and the
/// per-component series stand on. Retries wait by [`retry_backoff`].
fn watcher<K>(api: Api<K>, config: watcher::Config) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config).boxed()
}

fn key_of<K: kube::Resource>(object: &K) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// Reduces a watch event to what the cache keeps, so full objects are never stored.
fn reduce<K: kube::Resource, T>(event: Event<K>, keep: fn(&K) -> T) -> Change<T> {
    match event {
        Event::Init => Change::Begin,
        Event::InitApply(o) => Change::Listed(key_of(&o), keep(&o)),
        Event::InitDone => Change::End,
        Event::Apply(o) => Change::Applied(key_of(&o), keep(&o)),
        Event::Delete(o) => Change::Deleted(key_of(&o)),
    }
}

/// A pod as the exporter reads it off the wire: metadata reduced to what the watch needs,
/// and the status conditions. Everything else (spec, managed fields, annotations) is skipped
/// while decoding, so a pod never costs more than this, not even for a moment.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodView {
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<PodStatusView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodStatusView {
    #[serde(default)]
    pub conditions: Option<Vec<PodConditionView>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodConditionView {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaView::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Pod".into()
    }

    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The readiness facts of a pod. A pod without status or conditions is not Ready.
pub fn pod_info(pod: &PodView) -> PodInfo {
    let ready_condition = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodInfo {
        name: pod.name_any(),
        ready_condition,
        deleting: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// The record of a lease, as leader election writes it.
pub fn lease_record(lease: &Lease) -> LeaseRecord {
    let Some(spec) = &lease.spec else {
        return LeaseRecord::default();
    };
    LeaseRecord {
        holder: spec.holder_identity.clone(),
        duration_seconds: spec.lease_duration_seconds,
        transitions: spec.lease_transitions,
        renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
        acquire_time: spec.acquire_time.as_ref().map(|t| t.0.to_string()),
        has_spec: true,
    }
}

/// Logs where the exporter looks, once at start-up.
pub fn log_scope(cache: &Cache) {
    for target in cache.targets() {
        info!(
            component = target.component.name,
            scope = target.scope(),
            pods = target.component.label_selector(),
            lease = target.component.lease,
            "watching"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_jittered_and_start_over_after_a_list() {
        let mut backoff = retry_backoff();
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next().expect("endless")).collect();
        assert!(delays[0] >= RETRY_FIRST && delays[0] < RETRY_FIRST * 2);
        assert!(delays.iter().all(|d| *d < RETRY_MAX * 2), "{delays:?}");
        let late = &delays[10..];
        assert!(late.iter().all(|d| *d >= RETRY_MAX));
        assert!(
            late.iter().any(|d| *d != late[0]),
            "no jitter: every exporter would retry in step"
        );
        backoff.reset();
        assert!(backoff.next().expect("endless") < RETRY_FIRST * 2);
    }

    #[test]
    fn pod_view_keeps_only_what_is_judged() {
        let full = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "virt-operator-a", "namespace": "kubevirt", "resourceVersion": "42",
                "labels": {"kubevirt.io": "virt-operator"}, "annotations": {"big": "x".repeat(10_000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "deletionTimestamp": "2026-11-25T10:00:00Z"},
            "spec": {"containers": [{"name": "virt-operator", "image": "quay.io/kubevirt/virt-operator"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
        });
        let pod: PodView = serde_json::from_value(full).expect("decodes");
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        let info = pod_info(&pod);
        assert_eq!(info.name, "virt-operator-a");
        assert!(info.ready_condition && info.deleting && !info.is_ready());

        let bare: PodView = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}}))
            .expect("decodes");
        assert!(!pod_info(&bare).ready_condition);
        let odd: PodView = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))
        .expect("decodes");
        assert!(!pod_info(&odd).ready_condition);
    }
}
