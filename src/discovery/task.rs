//! The discovery task: one watch of the cluster's Leases (but the heartbeats the API server
//! leaves out), and every leader election among them judged as a component of its own, for
//! as long as its Lease exists. Configured components win over a discovered Lease of the
//! same namespace and name.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
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
    components::{Component, Workload},
    targets::{DiscoverError, Targets},
    watch::{Discovered, Launcher},
};

/// How long resolving one holder may take before it is given up until the Lease changes.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Lease as discovery keeps it: `(namespace, name)`.
type Key = (String, String);

/// What discovery knows of one leader election.
enum Entry {
    /// Judged as a component; `holder`, the holder it was last resolved for.
    Watched { holder: String, handle: Discovered },
    /// A configured component covers it.
    Configured,
    /// Left out: the bound on discovered components was reached. Tried again when one goes.
    LeftOut,
    /// Its workload is in another namespace than its Lease, which a component cannot watch.
    Elsewhere,
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
                found: BTreeMap::new(),
                listing: BTreeMap::new(),
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
    found: BTreeMap<Key, Entry>,
    /// Per scope (a namespace, or `None` for all), the Leases its list in progress has
    /// shown so far.
    listing: BTreeMap<Option<String>, BTreeSet<Key>>,
}

/// A watch event of the Leases of one scope.
type ScopedEvent = (
    Option<String>,
    Result<watcher::Event<Lease>, watcher::Error>,
);

impl Discovery {
    async fn run(&mut self, mut events: impl stream::Stream<Item = ScopedEvent> + Unpin) {
        while let Some((scope, event)) = events.next().await {
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
                Err(error) => warn!(
                    error = crate::error_chain(&error),
                    "watching leases failed, retrying"
                ),
            }
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
        match self.found.get(&key) {
            Some(Entry::Configured | Entry::LeftOut | Entry::Elsewhere) => return,
            // A released Lease keeps the workload it had: its standbys take it over.
            Some(Entry::Watched { holder: last, .. }) if *last == holder || holder.is_empty() => {
                return;
            }
            _ => {}
        }
        if self.configured(&key) {
            self.found.insert(key, Entry::Configured);
            return;
        }
        let Some(found) = self.resolve(&key, &holder).await else {
            return;
        };
        if found.as_ref().is_some_and(|f| f.namespace != key.0) {
            info!(
                namespace = key.0,
                lease = key.1,
                "its workload is in another namespace: not judged"
            );
            self.found.insert(key, Entry::Elsewhere);
            return;
        }
        let component = Component::discovered(
            &key.1,
            found.map(|f| {
                let workload = Workload {
                    kind: f.kind.as_str().to_owned(),
                    name: f.name,
                };
                (workload, f.selector)
            }),
        );
        self.judge(key, holder, component);
    }

    /// The workload behind `holder`; `None` when it could not be asked (tried again at the
    /// Lease's next change). A Lease already judged keeps its workload when the new holder
    /// names none: a leader that died with its pod.
    async fn resolve(&self, key: &Key, holder: &str) -> Option<Option<Found>> {
        let asked = resolve::workload(&self.client, &key.0, &key.1, holder);
        let found = match tokio::time::timeout(RESOLVE_TIMEOUT, asked).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                warn!(
                    namespace = key.0,
                    lease = key.1,
                    error = crate::error_chain(&error),
                    "resolving the holder failed"
                );
                return None;
            }
            Err(_) => {
                warn!(
                    namespace = key.0,
                    lease = key.1,
                    "resolving the holder timed out"
                );
                return None;
            }
        };
        match (found, self.found.get(key)) {
            (None, Some(Entry::Watched { .. })) => None,
            (found, _) => Some(found),
        }
    }

    fn judge(&mut self, key: Key, holder: String, component: Component) {
        if let Some(Entry::Watched {
            holder: last,
            handle,
        }) = self.found.get_mut(&key)
        {
            handle.replace(component);
            *last = holder;
            return;
        }
        match self.launcher.discover(component, key.0.clone()) {
            Ok(handle) => {
                info!(
                    namespace = key.0,
                    lease = key.1,
                    "discovered a leader election"
                );
                self.found.insert(key, Entry::Watched { holder, handle });
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
                self.found.insert(key, Entry::LeftOut);
            }
        }
    }

    /// The Lease went, or stopped being an election: its component goes, and one left out
    /// may take its place at its Lease's next change.
    fn gone(&mut self, key: &Key) {
        if let Some(Entry::Watched { .. }) = self.found.remove(key) {
            info!(
                namespace = key.0,
                lease = key.1,
                "a discovered leader election is gone"
            );
            self.found
                .retain(|_, entry| !matches!(entry, Entry::LeftOut));
        }
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
