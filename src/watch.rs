//! The watch tasks: one kube-rs watcher per resource and target, feeding the target's
//! handle, and the direct reads that confirm a lease that seems to have stopped being renewed.
//! A target's two watches run as long as their [`Watches`] is held: for the configured
//! components that is the exporter's whole run, for a discovered one as long as its
//! [`Discovered`] handle.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{NamespaceResourceScope, api::coordination::v1::Lease};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        utils::Backoff,
        watcher::{self, Event, ExponentialBackoff},
    },
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    components::Component,
    leases::Confirmation,
    metrics::Metrics,
    objects::{PodView, lease_record, pod_info, reduce},
    pods::PodName,
    targets::{DiscoverError, Target, Targets},
};

/// The API access the exporter needs, as (API group, resource, verbs): the RBAC rules in
/// `deploy/` must grant exactly this.
pub const API_ACCESS: [(&str, &str, [&str; 3]); 2] = [
    ("", "pods", ["get", "list", "watch"]),
    ("coordination.k8s.io", "leases", ["get", "list", "watch"]),
];

/// The two watched resources, as they appear in the `resource` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Pods,
    Leases,
}

impl Watched {
    pub const ALL: [Watched; 2] = [Watched::Pods, Watched::Leases];

    pub fn as_str(self) -> &'static str {
        match self {
            Watched::Pods => "pods",
            Watched::Leases => "leases",
        }
    }
}

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

/// Starts the watches of every configured component's target; a quiet pod watch is checked
/// against a direct list every `pod_check_interval` (zero: never).
pub fn spawn(
    client: &Client,
    targets: &Targets,
    metrics: &Arc<Metrics>,
    pod_check_interval: Duration,
) -> Vec<Watches> {
    targets
        .handles()
        .iter()
        .map(|target| start(client, target, metrics, pod_check_interval))
        .collect()
}

/// Starts the pod watch and the lease watch of one target.
pub fn start(
    client: &Client,
    target: &Arc<Target>,
    metrics: &Arc<Metrics>,
    pod_check_interval: Duration,
) -> Watches {
    let component = target.component();
    info!(
        component = component.name,
        scope = target.scope(),
        pods = component.label_selector(),
        lease = component.lease,
        "watching"
    );
    let pods = PodFeed {
        target: target.clone(),
        client: client.clone(),
        check_interval: pod_check_interval,
        quiet: Mutex::new(Quiet::since(Instant::now())),
    };
    let leases = LeaseFeed {
        target: target.clone(),
        client: client.clone(),
    };
    Watches {
        tasks: [
            spawn_feed(pods, client, target, metrics.clone()),
            spawn_feed(leases, client, target, metrics.clone()),
        ],
    }
}

/// The two watch tasks of one target, which run until this is dropped.
#[derive(Debug)]
pub struct Watches {
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Watches {
    /// Stops both watches, as dropping does.
    pub fn stop(self) {}
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What starting the watches of a target found while the exporter runs takes.
#[derive(Clone)]
pub struct Launcher {
    targets: Arc<Targets>,
    client: Client,
    metrics: Arc<Metrics>,
    pod_check_interval: Duration,
}

impl Launcher {
    pub fn new(
        targets: Arc<Targets>,
        client: Client,
        metrics: Arc<Metrics>,
        pod_check_interval: Duration,
    ) -> Self {
        Self {
            targets,
            client,
            metrics,
            pod_check_interval,
        }
    }

    /// The metrics the watches it starts update.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds a target for `component`, found from its Lease in `namespace` (see
    /// [`Targets::discover`]), and starts its watches.
    pub fn discover(
        &self,
        component: Component,
        namespace: String,
    ) -> Result<Discovered, DiscoverError> {
        let target = self.targets.discover(component, namespace)?;
        let watches = self.start(&target);
        Ok(Discovered {
            targets: self.targets.clone(),
            target,
            _watches: watches,
        })
    }

    /// Starts the watches of a target.
    pub fn start(&self, target: &Arc<Target>) -> Watches {
        start(&self.client, target, &self.metrics, self.pod_check_interval)
    }
}

/// A discovered target, watched while this is held: dropping it forgets the target (its
/// series go) and stops its watches.
pub struct Discovered {
    targets: Arc<Targets>,
    target: Arc<Target>,
    _watches: Watches,
}

impl Discovered {
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// Its Lease resolved again, to another workload or to none: see [`Targets::replace`].
    pub fn replace(&self, component: Component) -> bool {
        let namespace = self.target.namespace.as_deref().unwrap_or_default();
        self.targets.replace(namespace, component)
    }
}

impl Drop for Discovered {
    fn drop(&mut self) {
        if let Some(namespace) = &self.target.namespace {
            self.targets
                .forget(namespace, &self.target.component().lease);
        }
    }
}

/// Why a watch starts over.
enum Restart {
    /// It failed, for this reason: wait by the retry schedule first.
    AfterError(String),
    /// It fell behind: list again at once.
    Now,
}

/// What a watch loop feeds: one resource of one target.
trait Feed: Send + Sync + 'static {
    type Object: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static;
    const WATCHED: Watched;

    /// Where to watch, asked again at each start of the watch; `None`: every namespace.
    fn namespace(&self) -> Option<String>;
    fn config(&self) -> watcher::Config;
    fn apply(&self, event: Event<Self::Object>);
    /// The watch failed at `now`.
    fn failed(&self, now: Instant);

    /// When the loop should call [`Feed::wake`] without an event.
    fn wake_at(&self, _now: Instant) -> Option<Instant> {
        None
    }

    /// Looks outside the stream; `Some` when the watch must start over.
    fn wake(&self, _metrics: &Metrics) -> impl Future<Output = Option<Restart>> + Send {
        std::future::ready(None)
    }

    /// Completes when what the watch selects has changed since this was called, so that it
    /// must list again.
    fn reselect(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }

    /// Nothing to watch: the feed holds an empty, complete list instead.
    fn idle(&self) -> bool {
        false
    }

    fn fail(&self, metrics: &Metrics, error: &dyn std::fmt::Display) -> Restart {
        metrics.watch_error(Self::WATCHED);
        self.failed(Instant::now());
        Restart::AfterError(error.to_string())
    }
}

/// Runs a feed's watch in a task of its own, with a span that names what it watches.
fn spawn_feed<F: Feed>(
    feed: F,
    client: &Client,
    target: &Target,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let span = info_span!(
        "watch",
        component = target.component().name.as_str(),
        scope = target.scope(),
        resource = F::WATCHED.as_str()
    );
    tokio::spawn(run(feed, client.clone(), metrics).instrument(span))
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs a feed's watch for ever. After every error the watcher starts over from a fresh
/// list: only a completed list tells the exporter that what it holds matches the server
/// again, which is what `watch_healthy` and the per-component series stand on.
async fn run<F: Feed>(feed: F, client: Client, metrics: Arc<Metrics>) {
    let mut retry = Retry {
        backoff: retry_backoff(),
        failing: None,
    };
    loop {
        if let Restart::AfterError(error) = watch_once(&feed, &client, &mut retry, &metrics).await {
            retry.failed(error);
            tokio::time::sleep(retry.backoff.next().unwrap_or(RETRY_MAX)).await;
        }
    }
}

/// The retry schedule of one watch, and the error it is failing with, so that an outage is
/// logged when it starts, when its cause changes and when it ends, not at every retry.
struct Retry {
    backoff: ExponentialBackoff,
    failing: Option<String>,
}

impl Retry {
    fn failed(&mut self, error: String) {
        if self.failing.as_ref() == Some(&error) {
            debug!(error, "watch still failing, retrying");
        } else {
            warn!(
                error,
                "watch failed, retrying (the same failure again is logged at debug)"
            );
            self.failing = Some(error);
        }
    }

    /// A list completed: the schedule starts over.
    fn listed(&mut self) {
        self.backoff.reset();
        if self.failing.take().is_some() {
            info!("watch working again");
        }
    }
}

async fn watch_once<F: Feed>(
    feed: &F,
    client: &Client,
    retry: &mut Retry,
    metrics: &Metrics,
) -> Restart {
    // Before the selection and the namespace are read, so that a change in between is not
    // missed.
    let reselect = feed.reselect();
    tokio::pin!(reselect);
    if feed.idle() {
        feed.apply(Event::Init);
        feed.apply(Event::InitDone);
        retry.listed();
        reselect.await;
        return Restart::Now;
    }
    let api = api(client, feed.namespace().as_deref());
    let mut stream = watcher::watcher(api, feed.config()).boxed();
    loop {
        let wake = sleep_until(feed.wake_at(Instant::now()));
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    metrics.watch_event(F::WATCHED, &event);
                    let listed = matches!(event, Event::InitDone);
                    feed.apply(event);
                    if listed {
                        retry.listed();
                    }
                }
                Some(Err(error)) => return feed.fail(metrics, &crate::error_chain(&error)),
                None => return feed.fail(metrics, &"watch stream ended"),
            },
            () = wake => {
                if let Some(restart) = feed.wake(metrics).await {
                    return restart;
                }
            }
            () = &mut reselect => {
                info!("the component's selection changed: listing again");
                return Restart::Now;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How many pods a check lists at most: leader-elected components run a few pods each.
const POD_CHECK_LIMIT: u32 = 100;

struct PodFeed {
    target: Arc<Target>,
    client: Client,
    check_interval: Duration,
    quiet: Mutex<Quiet>,
}

/// When the pods watch last delivered an event, when it was last checked, and whether the
/// last check disagreed.
#[derive(Clone, Copy)]
struct Quiet {
    last_event: Instant,
    last_check: Instant,
    suspect: bool,
}

impl Quiet {
    fn since(now: Instant) -> Self {
        Self {
            last_event: now,
            last_check: now,
            suspect: false,
        }
    }
}

/// How soon a check that disagreed is repeated: events already on their way are applied
/// meanwhile, so only a watch that still disagrees then is restarted.
const POD_RECHECK: Duration = Duration::from_secs(5);

impl PodFeed {
    fn quiet(&self) -> std::sync::MutexGuard<'_, Quiet> {
        self.quiet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lists the pods from the API server's cache (cheap, and as fresh as what any watch
    /// gets); `Some(agrees)` when the watch is healthy and there is something to compare.
    async fn check(&self) -> kube::Result<Option<bool>> {
        let api: Api<PodView> = api(&self.client, self.namespace().as_deref());
        let params = kube::api::ListParams::default()
            .labels(&self.target.component().label_selector())
            .limit(POD_CHECK_LIMIT)
            .match_any();
        let list = api.list(&params).await?;
        let complete = list.metadata.continue_.as_deref().is_none_or(str::is_empty);
        let listed = list
            .items
            .iter()
            .map(|p| (self.key(p), pod_info(p)))
            .collect();
        Ok(self.target.pods_agree(&listed, complete))
    }

    /// A pod as the target keeps it: under the target's namespace, which is the Lease's,
    /// also for a discovered component whose pods run elsewhere.
    fn key(&self, pod: &PodView) -> PodName {
        let mut name = pod_name(pod);
        if let Some(ns) = &self.target.namespace {
            name.namespace.clone_from(ns);
        }
        name
    }
}

impl Feed for PodFeed {
    type Object = PodView;
    const WATCHED: Watched = Watched::Pods;

    fn namespace(&self) -> Option<String> {
        let component = self.target.component();
        component
            .pods_elsewhere()
            .map(str::to_owned)
            .or_else(|| self.target.namespace.clone())
    }

    fn config(&self) -> watcher::Config {
        // Small pages keep the transient memory of a re-list of many pods small.
        watcher::Config::default()
            .labels(&self.target.component().label_selector())
            .page_size(100)
    }

    /// A discovered component's Lease can be resolved to another workload while it is
    /// watched.
    fn reselect(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut changes = self.target.component_changes();
        let selection = |c: &Component| (c.label_selector(), c.pods_elsewhere().map(str::to_owned));
        let selected = selection(&changes.borrow_and_update());
        async move {
            while changes.changed().await.is_ok() {
                if selection(&changes.borrow_and_update()) != selected {
                    return;
                }
            }
            std::future::pending().await
        }
    }

    /// An abandoned Lease has no workload, hence no pods.
    fn idle(&self) -> bool {
        !self.target.component().watches_pods()
    }

    fn apply(&self, event: Event<PodView>) {
        {
            let mut quiet = self.quiet();
            quiet.last_event = Instant::now();
            quiet.suspect = false;
        }
        self.target
            .apply_pods(reduce(event, |p| self.key(p), pod_info));
    }

    fn failed(&self, now: Instant) {
        *self.quiet() = Quiet::since(now);
        self.target.pods_failed();
    }

    fn wake_at(&self, _now: Instant) -> Option<Instant> {
        if self.check_interval.is_zero() {
            return None;
        }
        let quiet = *self.quiet();
        if quiet.suspect {
            return Some(quiet.last_check + POD_RECHECK.min(self.check_interval));
        }
        Some(quiet.last_event.max(quiet.last_check) + self.check_interval)
    }

    /// Compares a quiet watch with a direct list: kube's idle timeout alone would leave a
    /// watch that hangs silently unnoticed for about 5 minutes, and readiness stale. The
    /// check never blinds the watch: a list that fails or is slow proves nothing about it.
    async fn wake(&self, metrics: &Metrics) -> Option<Restart> {
        let checked = tokio::time::timeout(CONFIRM_TIMEOUT, self.check()).await;
        let mut quiet = self.quiet();
        quiet.last_check = Instant::now();
        match checked {
            Ok(Ok(Some(false))) if quiet.suspect => {
                quiet.suspect = false;
                metrics.watch_error(Watched::Pods);
                warn!("pods watch disagrees with a direct list twice; restarting it");
                Some(Restart::Now)
            }
            Ok(Ok(Some(false))) => {
                quiet.suspect = true;
                None
            }
            Ok(Ok(_)) => {
                quiet.suspect = false;
                None
            }
            Ok(Err(error)) => {
                debug!(
                    error = crate::error_chain(&error),
                    "checking the pods watch failed"
                );
                None
            }
            Err(_) => {
                debug!("checking the pods watch timed out");
                None
            }
        }
    }
}

/// The key of a pod in the pod set.
pub fn pod_name(pod: &PodView) -> PodName {
    PodName {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
    }
}

struct LeaseFeed {
    target: Arc<Target>,
    client: Client,
}

impl Feed for LeaseFeed {
    type Object = Lease;
    const WATCHED: Watched = Watched::Leases;

    fn namespace(&self) -> Option<String> {
        self.target.namespace.clone()
    }

    fn config(&self) -> watcher::Config {
        watcher::Config::default()
            .fields(&format!("metadata.name={}", self.target.component().lease))
    }

    fn apply(&self, event: Event<Lease>) {
        let change = reduce(event, |l| l.namespace().unwrap_or_default(), lease_record);
        self.target.apply_leases(change, Instant::now());
    }

    fn failed(&self, now: Instant) {
        self.target.leases_failed(now);
    }

    fn wake_at(&self, now: Instant) -> Option<Instant> {
        self.target.next_deadline(now)
    }

    /// Reads each lease that has not changed for a full lease duration, so that a watch that
    /// hangs silently cannot make a live leader look dead.
    async fn wake(&self, metrics: &Metrics) -> Option<Restart> {
        for namespace in self.target.leases_due(Instant::now()) {
            let api: Api<Lease> = Api::namespaced(self.client.clone(), &namespace);
            let lease = self.target.component().lease.clone();
            let read = tokio::time::timeout(CONFIRM_TIMEOUT, api.get_opt(&lease));
            let fresh = match read.await {
                Ok(Ok(lease)) => lease.as_ref().map(lease_record),
                Ok(Err(error)) => return Some(self.fail(metrics, &crate::error_chain(&error))),
                Err(_) => {
                    return Some(self.fail(metrics, &"confirming read of the lease timed out"));
                }
            };
            match self.target.confirm_lease(&namespace, fresh, Instant::now()) {
                Confirmation::Unchanged => {
                    debug!(namespace, "lease confirmed unrenewed by a direct read");
                }
                Confirmation::Behind => {
                    metrics.watch_error(Watched::Leases);
                    warn!(
                        namespace,
                        "lease watch fell behind a direct read; restarting it"
                    );
                    return Some(Restart::Now);
                }
            }
        }
        self.target.deadline_passed(Instant::now());
        None
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
}
