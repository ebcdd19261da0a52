//! The discovery task: one watch of the cluster's Leases (but the heartbeats the API server
//! leaves out), and every leader election among them judged as a component of its own, for
//! as long as its Lease exists. Configured components win over a discovered Lease of the
//! same namespace and name.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    leases::{not_an_election, watch_config},
    resolve::{self, Found},
};
use crate::{
    components::Component,
    targets::{DiscoverError, Targets},
    watch::{Discovered, Launcher, Watched},
};

/// How long resolving one holder may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a holder whose resolving failed is left alone. A leader renews every few
/// seconds: asking again at each renewal would send a failing request or three per Lease
/// that often, as when the install does not grant the reads on workloads.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);

/// A Lease as discovery keeps it: `(namespace, name)`.
type Key = (String, String);

/// What discovery knows of one leader election.
enum Entry {
    /// Judged as a component; `holder`, the holder it was last resolved for, and when to
    /// ask again if that failed.
    Watched {
        holder: String,
        handle: Discovered,
        retry_at: Option<Instant>,
    },
    /// A configured component covers it.
    Configured,
    /// Left out, holder `holder`: the bound on discovered components was reached. Asked
    /// again when a discovered component goes, one for each that goes.
    LeftOut { holder: String },
    /// Its workload runs outside the namespaces the exporter watches.
    OutOfScope,
    /// Resolving `holder` failed; asked again when the holder changes or at `retry_at`.
    Unresolved {
        holder: String,
        retry_at: Option<Instant>,
    },
}

/// Runs discovery for ever, over `namespaces` (every namespace when empty).
pub fn spawn(
    client: Client,
    targets: Arc<Targets>,
    launcher: Launcher,
    namespaces: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    let span = info_span!("discovery");
    tokio::spawn(
        async move {
            let namespaces_in_scope = namespaces.clone();
            let scopes: Vec<Option<String>> = if namespaces.is_empty() {
                vec![None]
            } else {
                namespaces.into_iter().map(Some).collect()
            };
            let events = stream::select_all(scopes.into_iter().map(|scope| {
                let api: Api<Lease> = match &scope {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                watcher(api, watch_config())
                    .default_backoff()
                    .map(move |event| (scope.clone(), event))
                    .boxed()
            }));
            let mut discovery = Discovery {
                client,
                targets,
                launcher,
                scope: namespaces_in_scope,
                found: BTreeMap::new(),
                listing: BTreeMap::new(),
                freed: 0,
            };
            discovery.run(events).await;
        }
        .instrument(span),
    )
}

struct Discovery {
    client: Client,
    targets: Arc<Targets>,
    launcher: Launcher,
    /// The namespaces watched; empty for all.
    scope: Vec<String>,
    found: BTreeMap<Key, Entry>,
    /// Per scope (a namespace, or `None` for all), the Leases its list in progress has
    /// shown so far.
    listing: BTreeMap<Option<String>, BTreeSet<Key>>,
    /// Discovered components gone since Leases left out were last asked again: as many of
    /// those may be taken now.
    freed: usize,
}

/// A watch event of the Leases of one scope.
type ScopedEvent = (
    Option<String>,
    Result<watcher::Event<Lease>, watcher::Error>,
);

impl Discovery {
    /// Handles events as they come, and between them asks again what is due: failed
    /// look-ups after [`RESOLVE_RETRY`] even when their Lease no longer changes (a leader
    /// that died while the API server could not answer), Leases left out when a place
    /// frees.
    async fn run(&mut self, mut events: impl stream::Stream<Item = ScopedEvent> + Unpin) {
        loop {
            let retry_at = self.next_retry();
            let wake = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = events.next() => match item {
                    Some((scope, event)) => self.event(scope, event).await,
                    None => return,
                },
                () = wake => {}
            }
            self.retry().await;
        }
    }

    async fn event(
        &mut self,
        scope: Option<String>,
        event: Result<watcher::Event<Lease>, watcher::Error>,
    ) {
        if let Ok(event) = &event {
            self.launcher.metrics().watch_event(Watched::Leases, event);
        }
        match event {
            Ok(watcher::Event::Init) => {
                self.listing.insert(scope, BTreeSet::new());
            }
            Ok(watcher::Event::InitApply(lease)) => {
                if let Some(seen) = self.listing.get_mut(&scope) {
                    seen.insert(key(&lease));
                }
                self.seen(&lease).await;
            }
            Ok(watcher::Event::InitDone) => self.listed(&scope),
            Ok(watcher::Event::Apply(lease)) => self.seen(&lease).await,
            Ok(watcher::Event::Delete(lease)) => self.gone(&key(&lease)),
            Err(error) => {
                self.launcher.metrics().watch_error(Watched::Leases);
                warn!(
                    error = crate::error_chain(&error),
                    "watching leases failed, retrying"
                );
            }
        }
    }

    /// The earliest time a failed look-up is due again.
    fn next_retry(&self) -> Option<Instant> {
        self.found
            .values()
            .filter_map(|entry| match entry {
                Entry::Watched { retry_at, .. } | Entry::Unresolved { retry_at, .. } => *retry_at,
                _ => None,
            })
            .min()
    }

    /// Asks again for the failed look-ups that are due, and for as many Leases left out as
    /// places have freed.
    async fn retry(&mut self) {
        let now = Instant::now();
        let due: Vec<(Key, String)> = self
            .found
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Watched {
                    holder,
                    retry_at: Some(at),
                    ..
                }
                | Entry::Unresolved {
                    holder,
                    retry_at: Some(at),
                } if *at <= now => Some((key.clone(), holder.clone())),
                _ => None,
            })
            .collect();
        for (key, holder) in due {
            self.ask(key, holder).await;
        }
        while self.freed > 0 {
            let Some((key, holder)) = self.found.iter().find_map(|(key, entry)| match entry {
                Entry::LeftOut { holder } => Some((key.clone(), holder.clone())),
                _ => None,
            }) else {
                self.freed = 0;
                break;
            };
            self.freed -= 1;
            self.found.remove(&key);
            self.ask(key, holder).await;
        }
    }

    /// A list of `scope` completed: what it did not show of that scope is gone.
    fn listed(&mut self, scope: &Option<String>) {
        let Some(seen) = self.listing.remove(scope) else {
            return;
        };
        let gone: Vec<Key> = self
            .found
            .keys()
            .filter(|k| scope.as_ref().is_none_or(|ns| *ns == k.0) && !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.gone(&key);
        }
    }

    async fn seen(&mut self, lease: &Lease) {
        let key = key(lease);
        if let Some(why) = not_an_election(lease) {
            debug!(
                namespace = key.0,
                lease = key.1,
                ?why,
                "not a leader election"
            );
            self.gone(&key);
            return;
        }
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if self.worth_asking(&key, &holder) {
            self.ask(key, holder).await;
        }
    }

    /// Judges the Lease `key` held by `holder`, unless a configured component covers it.
    async fn ask(&mut self, key: Key, holder: String) {
        if self.configured(&key) {
            self.found.insert(key, Entry::Configured);
            return;
        }
        match self.resolve(&key, &holder).await {
            Ok(found) => self.resolved(key, holder, found),
            Err(()) => self.failed(key, holder),
        }
    }

    /// Whether the Lease's holder must be resolved: it is new, or an earlier attempt for
    /// it failed long enough ago.
    fn worth_asking(&self, key: &Key, holder: &str) -> bool {
        match self.found.get(key) {
            None => true,
            Some(Entry::Configured | Entry::LeftOut { .. } | Entry::OutOfScope) => false,
            // A released Lease keeps the workload it had: its standbys take it over.
            Some(Entry::Watched { .. }) if holder.is_empty() => false,
            Some(
                Entry::Watched {
                    holder: last,
                    retry_at,
                    ..
                }
                | Entry::Unresolved {
                    holder: last,
                    retry_at,
                },
            ) => last != holder || retry_at.is_some_and(|at| Instant::now() >= at),
        }
    }

    /// Judges the Lease with the workload `found` behind `holder`.
    fn resolved(&mut self, key: Key, holder: String, found: Option<Found>) {
        if let Some(Entry::Watched {
            holder: last,
            retry_at,
            ..
        }) = self.found.get_mut(&key)
            && found.is_none()
        {
            // A holder that names no workload, as a leader that died with its pod and its
            // ReplicaSet: the workload already known still says whose pods to judge.
            *last = holder;
            *retry_at = None;
            return;
        }
        if let Some(found) = found.as_ref().filter(|f| !self.in_scope(&f.namespace)) {
            info!(
                namespace = key.0,
                lease = key.1,
                workload_namespace = found.namespace,
                "its workload runs outside the watched namespaces: not judged"
            );
            self.found.insert(key, Entry::OutOfScope);
            return;
        }
        let component = resolve::component(&key.0, &key.1, found);
        self.judge(key, holder, component);
    }

    /// Resolving `holder` failed: a Lease already judged goes on with the workload it had,
    /// and either is asked again only after [`RESOLVE_RETRY`] or a new holder.
    fn failed(&mut self, key: Key, holder: String) {
        let at = Some(Instant::now() + RESOLVE_RETRY);
        match self.found.get_mut(&key) {
            Some(Entry::Watched {
                holder: last,
                retry_at,
                ..
            }) => {
                *last = holder;
                *retry_at = at;
            }
            _ => {
                let entry = Entry::Unresolved {
                    holder,
                    retry_at: at,
                };
                self.found.insert(key, entry);
            }
        }
    }

    /// The workload behind `holder`, or `Err` when the API server could not tell.
    async fn resolve(&self, key: &Key, holder: &str) -> Result<Option<Found>, ()> {
        let asked = resolve::workload(&self.client, &key.0, &key.1, holder);
        match tokio::time::timeout(RESOLVE_TIMEOUT, asked).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(error)) => {
                warn!(
                    namespace = key.0,
                    lease = key.1,
                    error = crate::error_chain(&error),
                    "resolving the holder failed; trying again in 30 s or at a new holder"
                );
                Err(())
            }
            Err(_) => {
                warn!(
                    namespace = key.0,
                    lease = key.1,
                    "resolving the holder timed out; trying again in 30 s or at a new holder"
                );
                Err(())
            }
        }
    }

    fn judge(&mut self, key: Key, holder: String, component: Component) {
        if let Some(Entry::Watched {
            holder: last,
            handle,
            retry_at,
        }) = self.found.get_mut(&key)
        {
            handle.replace(component);
            *last = holder;
            *retry_at = None;
            return;
        }
        match self.launcher.discover(component, key.0.clone()) {
            Ok(handle) => {
                info!(
                    namespace = key.0,
                    lease = key.1,
                    "discovered a leader election"
                );
                let entry = Entry::Watched {
                    holder,
                    handle,
                    retry_at: None,
                };
                self.found.insert(key, entry);
            }
            Err(DiscoverError::Known { .. }) => {
                self.found.insert(key, Entry::Configured);
            }
            Err(DiscoverError::Full { max }) => {
                warn!(
                    namespace = key.0,
                    lease = key.1,
                    max,
                    "too many discovered components: left out"
                );
                self.found.insert(key, Entry::LeftOut { holder });
            }
        }
    }

    /// The Lease went, or stopped being an election: its component goes, and a Lease left
    /// out may take its place.
    fn gone(&mut self, key: &Key) {
        if let Some(Entry::Watched { .. }) = self.found.remove(key) {
            info!(
                namespace = key.0,
                lease = key.1,
                "a discovered leader election is gone"
            );
            self.freed += 1;
        }
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|ns| ns == namespace)
    }

    fn configured(&self, (namespace, lease): &Key) -> bool {
        self.targets.all().iter().any(|target| {
            let component = target.component();
            !component.is_discovered()
                && component.lease == *lease
                && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
        })
    }
}

fn key(lease: &Lease) -> Key {
    (lease.namespace().unwrap_or_default(), lease.name_any())
}
