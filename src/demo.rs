//! `demo`: the exporter against a simulated control plane in the same process, playing a
//! leader that hangs and a takeover, narrated so a person can follow `/metrics`.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    Error, Exporter, client_from_kubeconfig,
    config::Settings,
    sim::{SimServer, Store, lease, pod},
};

const NAMESPACE: &str = "kubevirt";
const COMPONENT: &str = "virt-operator";
const PODS: [&str; 2] = [
    "virt-operator-7c9f5d4b8-a1b2c",
    "virt-operator-7c9f5d4b8-x9y8z",
];
/// KubeVirt's own leader election: a 15 s lease renewed every 2 s.
const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long each leader renews before it hangs, and how long it stays hung before the
/// other pod takes over.
const LEADING: Duration = Duration::from_secs(40);
const HUNG: Duration = Duration::from_secs(40);

/// Runs the demo until `shutdown` completes.
pub async fn run(
    settings: &Settings,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = Store::default();
    let server = SimServer::start(store.clone())
        .await
        .map_err(|source| Error::Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    seed(&store);
    let client = client_from_kubeconfig(server.kubeconfig()).await?;
    let exporter = Exporter::start(settings, client, listen, shutdown).await?;
    print(&format!(
        "Simulated Kubernetes API server: {}\nMetrics:     http://{addr}/metrics\nStatus page: http://{addr}/\n\
         Watch kubevirt_leader_present{{namespace=\"{NAMESPACE}\",component=\"{COMPONENT}\"}}. Ctrl-C stops.\n",
        server.url(),
        addr = exporter.addr
    ));
    let story = tokio::spawn(play(store, exporter.cache.clone()));
    let result = exporter.wait().await;
    story.abort();
    server.stop().await;
    result
}

fn seed(store: &Store) {
    for name in PODS {
        store.apply(pod(NAMESPACE, name, &[("kubevirt.io", COMPONENT)], true));
    }
    store.apply(lease(NAMESPACE, COMPONENT, PODS[0], LEASE_SECONDS));
}

/// Writes to stdout. A reader that went away (a closed pipe) must not stop the demo, so
/// write errors are ignored where `println!` would panic.
fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

fn say(start: Instant, text: &str) {
    print(&format!("[{:>4}s] {text}", start.elapsed().as_secs()));
}

/// Plays rounds: the leader renews, hangs (its name stays in the lease, its pod stays
/// Ready), and the other pod takes over. Narrates what the exporter reports as it changes.
async fn play(store: Store, cache: std::sync::Arc<crate::cache::Cache>) {
    let start = Instant::now();
    let mut leader = 0;
    let mut reported = None;
    say(
        start,
        &format!("{} holds the lease and renews it every 2s", PODS[leader]),
    );
    loop {
        let round = Instant::now();
        while round.elapsed() < LEADING + HUNG {
            if round.elapsed() < LEADING {
                store.renew_lease(NAMESPACE, COMPONENT);
            } else if round.elapsed() < LEADING + RENEW_EVERY {
                say(
                    start,
                    &format!(
                        "{} hangs: it stops renewing, stays Ready, and its name stays in the lease; \
                     the exporter should report no leader in about {:.0}s (lease duration + grace)",
                        PODS[leader],
                        f64::from(LEASE_SECONDS) + cache.grace.as_secs_f64()
                    ),
                );
            }
            report(start, &cache, &mut reported);
            tokio::time::sleep(RENEW_EVERY).await;
        }
        leader = 1 - leader;
        store.take_lease(NAMESPACE, COMPONENT, PODS[leader]);
        say(
            start,
            &format!("{} takes over the lease and renews it", PODS[leader]),
        );
    }
}

/// Prints what the exporter now says about virt-operator, when it changed.
fn report(start: Instant, cache: &crate::cache::Cache, reported: &mut Option<(bool, String)>) {
    let now = Instant::now();
    let seen = cache.targets().find_map(|t| {
        let verdicts = t.verdicts(now, cache.grace)?;
        (t.component.name == COMPONENT)
            .then(|| verdicts.into_iter().find(|(ns, _)| ns == NAMESPACE))
            .flatten()
    });
    let Some((_, v)) = seen else { return };
    let state = (v.present, v.holder.clone().unwrap_or_default());
    if reported.as_ref() != Some(&state) {
        let value = u8::from(v.present);
        say(
            start,
            &format!(
                "exporter: kubevirt_leader_present = {value}, holder {} ({})",
                state.1, v.reason
            ),
        );
        *reported = Some(state);
    }
}
