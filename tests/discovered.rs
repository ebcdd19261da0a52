//! Components added and removed while the exporter runs, through the real kube client, the
//! simulated API server and `/metrics` over HTTP: a discovered component's series appear
//! with `discovered="true"`, follow its Lease to another workload and to none without a
//! scrape reading blind or "no leader", and go when it is dropped, its watches with them;
//! the configured components' series never change.

mod common;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use kube::core::Selector;
use kubevirt_leader_exporter::{
    components::{Component, Workload},
    targets::DiscoverError,
};
use kubevirt_leader_sim::{Faults, Store, lease, pod};

/// Where the discovered Lease lives, and its name.
const DATA: &str = "data";
const LOCK: &str = "db-leader";
/// Long, for this Lease and virt-operator's, so that a busy machine's late renewal cannot
/// read as "no leader": what is tested here is that nothing else does.
const LOCK_SECONDS: i32 = 15;

/// `LOCK`'s component, held by the pods of StatefulSet `name`, labelled `app=<name>`.
fn held_by(name: &str) -> Component {
    let workload = Workload {
        kind: "StatefulSet".into(),
        name: name.into(),
        namespace: None,
    };
    let selector = Selector::from_iter([("app".to_owned(), name.to_owned())]);
    Component::discovered(LOCK, Some((workload, selector)))
}

/// `count` Ready pods of StatefulSet `name` in `DATA`.
fn pods_of(store: &Store, name: &str, count: usize) {
    for i in 0..count {
        store.apply(pod(DATA, &format!("{name}-{i}"), &[("app", name)], true));
    }
}

/// Renews `LOCK` every 500 ms, as its live leader would.
fn renew_lock(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            store.renew_lease(DATA, LOCK);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// `kubevirt_leader_<name>` of the discovered component, only if it says it was discovered.
fn lock(s: &Scrape, name: &str) -> Option<f64> {
    s.value(
        &format!("kubevirt_leader_{name}"),
        &[
            ("namespace", DATA),
            ("component", LOCK),
            ("discovered", "true"),
        ],
    )
}

/// The configured components' series: names and labels, with the values of those that
/// stand still while leaders renew.
fn configured(s: &Scrape) -> BTreeSet<String> {
    const STILL: [&str; 7] = [
        "present",
        "pods",
        "pods_ready",
        "holder_ready",
        "holder_info",
        "lease_transitions",
        "namespaces",
    ];
    s.0.lines()
        .filter(|l| !l.starts_with('#') && l.contains("component=\"") && !l.contains(LOCK))
        .filter_map(|l| {
            let (series, _) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?.strip_prefix("kubevirt_leader_")?;
            Some(if STILL.contains(&name) {
                l.to_owned()
            } else {
                series.to_owned()
            })
        })
        .collect()
}

/// Requests for anything in `DATA`: only the discovered component's watches ask there.
fn requests_in_data(faults: &Faults) -> u64 {
    faults.requests_under(&format!("/api/v1/namespaces/{DATA}/"))
        + faults.requests_under(&format!("/apis/coordination.k8s.io/v1/namespaces/{DATA}/"))
}

/// Ends every open watch stream and waits until each of the `watches` configured watches
/// has asked again (they watch the whole cluster, so their paths name no namespace). A
/// watch still running anywhere asks again the same way.
async fn every_watch_asks_again(faults: &Faults, watches: u64) {
    let asked = || {
        faults.requests_under("/api/v1/pods")
            + faults.requests_under("/apis/coordination.k8s.io/v1/leases")
    };
    let before = asked();
    faults.close_watches();
    until_true("the configured watches to ask again", || {
        asked() >= before + watches
    })
    .await;
}

async fn until_true(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/status.json` entry of component `name`, if there is one.
async fn status_of(bed: &Bed, name: &str) -> Option<serde_json::Value> {
    let status = status_json(&bed.http, bed.exporter.addr).await;
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["component"] == name)
        .cloned()
}

/// Scrapes every 50 ms until stopped; returns the scrapes in which the discovered component
/// was not led (absent counts: blind is what must not happen either).
fn scrapes_without_a_leader(bed: &Bed) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (http, addr, flag) = (bed.http.clone(), bed.exporter.addr, stop.clone());
    let task = tokio::spawn(async move {
        let mut bad = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let s = scrape(&http, addr).await;
            if lock(&s, "present") != Some(1.0) {
                bad.push(s.0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bad
    });
    (stop, task)
}

#[tokio::test]
async fn a_discovered_component_comes_follows_its_workload_and_goes() {
    let mut settings = settings(&[]);
    settings.max_discovered = 1;
    let configured_watches = 2 * settings.components.len() as u64;
    let bed = Bed::start(settings).await;
    for name in [POD_A, POD_B] {
        bed.store
            .apply(pod(NS, name, &[("kubevirt.io", OPERATOR)], true));
    }
    bed.store.apply(lease(NS, OPERATOR, POD_A, LOCK_SECONDS));
    let renewer = spawn_renewer(bed.store.clone());
    pods_of(&bed.store, "db", 2);
    bed.store.apply(lease(DATA, LOCK, "db-0", LOCK_SECONDS));
    let lock_renewer = renew_lock(bed.store.clone());
    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    let start = bed.until("virt-operator led", |s| s.settled(NS)).await;
    let before = configured(&start);
    assert!(
        !start.0.contains(LOCK),
        "nothing discovered yet:\n{}",
        start.0
    );
    assert_eq!(requests_in_data(&faults), 0);

    // Discovered: its series appear, saying so, with what the simulated cluster holds.
    let launcher = bed.exporter.launcher();
    let discovered = launcher
        .discover(held_by("db"), DATA.into())
        .expect("discovered");
    let s = bed
        .until("the discovered component led", |s| {
            lock(s, "present") == Some(1.0) && lock(s, "pods_ready") == Some(2.0)
        })
        .await;
    for line in [
        "kubevirt_leader_present{component=\"db-leader\",discovered=\"true\",namespace=\"data\"} 1",
        "kubevirt_leader_holder_info{component=\"db-leader\",discovered=\"true\",holder=\"db-0\",namespace=\"data\"} 1",
        "kubevirt_leader_namespaces{component=\"db-leader\",discovered=\"true\"} 1",
    ] {
        assert!(s.0.lines().any(|l| l == line), "{line} missing:\n{}", s.0);
    }
    assert_eq!(lock(&s, "holder_ready"), Some(1.0));
    assert_eq!(configured(&s), before, "the configured series changed");
    let db = status_of(&bed, LOCK).await.expect("in /status.json");
    assert_eq!(db["discovered"], true);
    assert_eq!(
        db["workload"],
        serde_json::json!({"kind": "StatefulSet", "name": "db", "namespace": DATA})
    );
    let operator = status_of(&bed, OPERATOR).await.expect("virt-operator");
    assert_eq!(operator["discovered"], false);
    assert!(operator["workload"].is_null());

    // Its watches ask in its namespace: a closed stream is asked for again there.
    let asked = requests_in_data(&faults);
    assert!(asked >= 2, "{asked} requests for its two watches");
    every_watch_asks_again(&faults, configured_watches).await;
    until_true("its watches to ask again", || {
        requests_in_data(&faults) >= asked + 2
    })
    .await;

    // One discovered component is the most allowed here; a configured Lease is never
    // discovered, and that is no refusal.
    let known = launcher.discover(Component::discovered(OPERATOR, None), NS.into());
    assert!(matches!(known.err(), Some(DiscoverError::Known { .. })));
    let refused = launcher.discover(Component::discovered("other-lock", None), DATA.into());
    assert_eq!(refused.err(), Some(DiscoverError::Full { max: 1 }));
    let refusals = |s: &Scrape| s.value("kubevirt_leader_exporter_discovery_refused_total", &[]);
    bed.until("one refusal counted", |s| refusals(s) == Some(1.0))
        .await;

    // Its Lease moves to another workload, then to none: no scrape reads blind or "no
    // leader" meanwhile.
    let (stop, watcher) = scrapes_without_a_leader(&bed);
    pods_of(&bed.store, "db-v2", 3);
    bed.store.take_lease(DATA, LOCK, "db-v2-0");
    bed.until("the new holder", |s| {
        s.holder_of(DATA, LOCK).as_deref() == Some("db-v2-0")
    })
    .await;
    assert!(discovered.replace(held_by("db-v2")));
    bed.until("the new workload's pods", |s| {
        lock(s, "pods") == Some(3.0)
            && lock(s, "pods_ready") == Some(3.0)
            && lock(s, "holder_ready") == Some(1.0)
    })
    .await;
    let db = status_of(&bed, LOCK).await.expect("in /status.json");
    assert_eq!(db["workload"]["name"], "db-v2");
    assert_eq!(db["pod_selector"], "app=db-v2");
    assert!(discovered.replace(Component::discovered(LOCK, None)));
    let s = bed
        .until("no pods for an abandoned Lease", |s| {
            lock(s, "pods") == Some(0.0)
        })
        .await;
    assert_eq!(lock(&s, "present"), Some(1.0), "the Lease alone decides");
    let db = status_of(&bed, LOCK).await.expect("in /status.json");
    assert_eq!(
        (&db["discovered"], &db["workload"]),
        (&true.into(), &serde_json::Value::Null)
    );
    let (_, page) = bed.get("/").await;
    assert!(
        page.contains("abandoned: no holder pod, no workload"),
        "{page}"
    );
    stop.store(true, Ordering::Relaxed);
    let unled = watcher.await.expect("scraper");
    assert!(
        unled.is_empty(),
        "{} scrapes without the discovered leader, the first:\n{}",
        unled.len(),
        unled[0]
    );

    // Dropped: its series and its entry go, and its watches ask no more.
    drop(discovered);
    let s = bed
        .until("the discovered series gone", |s| !s.0.contains(LOCK))
        .await;
    assert_eq!(configured(&s), before, "the configured series changed");
    assert!(status_of(&bed, LOCK).await.is_none());
    every_watch_asks_again(&faults, configured_watches).await;
    let asked = requests_in_data(&faults);
    for _ in 0..2 {
        every_watch_asks_again(&faults, configured_watches).await;
    }
    assert_eq!(
        requests_in_data(&faults),
        asked,
        "a forgotten component's watch still asks"
    );
    let s = bed.scrape().await;
    assert_eq!(configured(&s), before, "the configured series changed");
    lock_renewer.abort();
    renewer.abort();
}
