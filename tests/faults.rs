//! Never wrong under faults: the simulated API server restarts, forgets history, fails,
//! throttles and sends odd objects, and the exporter must neither report a live leader dead
//! nor miss a dead one.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kubevirt_leader_sim::{Kind, lease, pod};
use serde_json::json;

fn healthy(s: &Scrape) -> bool {
    ["pods", "leases"]
        .iter()
        .all(|r| s.value("kubevirt_leader_exporter_watch_healthy", &[("resource", r)]) == Some(1.0))
}

fn errors(s: &Scrape, resource: &str) -> f64 {
    s.value(
        "kubevirt_leader_exporter_watch_errors_total",
        &[("resource", resource)],
    )
    .unwrap_or(0.0)
}

/// Scrapes every 50 ms until stopped and returns the scrapes that said "no leader" for `NS`,
/// and how many saw nothing (blind).
fn watch_for_false_alarms(
    bed: &Bed,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<(Vec<String>, usize)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (http, addr, flag) = (bed.http.clone(), bed.exporter.addr, stop.clone());
    let task = tokio::spawn(async move {
        let (mut zeros, mut blind) = (Vec::new(), 0);
        while !flag.load(Ordering::Relaxed) {
            let s = scrape(&http, addr).await;
            match s.present(NS) {
                Some(0.0) => zeros.push(s.0),
                None => blind += 1,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (zeros, blind)
    });
    (stop, task)
}

#[tokio::test]
async fn api_restart_while_the_leader_renews_never_reads_as_no_leader() {
    let mut bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let renewer = spawn_renewer(bed.store.clone());
    bed.until("leader present", |s| s.settled(NS)).await;
    let (stop, watcher) = watch_for_false_alarms(&bed);
    // Down for longer than the lease duration plus grace.
    let sim = bed.sim.take().expect("sim");
    bed.sim = Some(sim.restart(Duration::from_secs(4)).await.expect("restart"));
    let s = bed
        .until("healthy after the restart", |s| {
            healthy(s) && s.present(NS) == Some(1.0)
        })
        .await;
    assert!(
        errors(&s, "leases") >= 1.0 && errors(&s, "pods") >= 1.0,
        "{}",
        s.0
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (zeros, blind) = watcher.await.expect("scraper");
    assert!(
        zeros.is_empty(),
        "a scrape said no leader during the restart:\n{}",
        zeros[0]
    );
    assert!(blind > 0, "the exporter never noticed the outage");
    renewer.abort();
}

#[tokio::test]
async fn gone_on_resume_relists_and_matches_the_store_exactly() {
    let settings = settings(&[]);
    let watches = u32::try_from(settings.components.len() * 2).expect("few");
    let bed = Bed::start(settings).await;
    bed.seed_operator(NS);
    bed.until("two pods", |s| s.operator("pods", NS) == Some(2.0))
        .await;
    let sim = bed.sim.as_ref().expect("sim");

    // Every watch is cut; as many resumes as there are watches get 410 Gone.
    sim.faults.gone_on_resume(watches);
    sim.faults.close_watches();
    bed.store.delete::<Pod>(NS, POD_B);
    bed.store.take_lease(NS, OPERATOR, POD_A);
    let s = bed
        .until("state after 410", |s| {
            s.operator("pods", NS) == Some(1.0)
                && s.operator("lease_transitions", NS) == Some(1.0)
                && healthy(s)
        })
        .await;
    assert!(errors(&s, "pods") >= 1.0, "{}", s.0);
    sim.faults.heal();
}

#[tokio::test]
async fn compaction_while_disconnected_drops_deleted_objects() {
    let mut bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.seed_operator("other");
    bed.until("both namespaces", |s| {
        s.operator("pods", "other") == Some(2.0)
    })
    .await;
    let (addr, store, _) = bed.sim.take().expect("sim").stop().await;
    // While the exporter cannot see: objects go, others come, history is compacted.
    store.delete::<Pod>(NS, POD_B);
    store.delete::<Pod>("other", POD_A);
    store.delete::<Pod>("other", POD_B);
    store.delete::<k8s_openapi::api::coordination::v1::Lease>("other", OPERATOR);
    store.apply(pod(
        NS,
        "virt-operator-c",
        &[("kubevirt.io", OPERATOR)],
        false,
    ));
    store.compact();
    bed.sim = Some(
        kubevirt_leader_sim::SimServer::start_on(addr, store)
            .await
            .expect("sim"),
    );
    // Objects deleted while disconnected must go: nothing of "other" may linger.
    bed.until("state after compaction", |s| {
        healthy(s)
            && s.operator("pods", NS) == Some(2.0)
            && s.operator("pods_ready", NS) == Some(1.0)
            && s.operator("pods", "other").is_none()
            && s.present("other").is_none()
    })
    .await;
}

#[tokio::test]
async fn bursts_of_500_and_429_back_off_and_recover() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let renewer = spawn_renewer(bed.store.clone());
    bed.until("leader present", |s| s.settled(NS)).await;
    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    for (name, inject) in [
        (
            "500",
            Box::new(|f: &kubevirt_leader_sim::Faults| f.fail_next(u32::MAX)) as Box<dyn Fn(&_)>,
        ),
        (
            "429",
            Box::new(|f: &kubevirt_leader_sim::Faults| f.throttle_next(u32::MAX, 1)),
        ),
    ] {
        inject(&faults);
        faults.close_watches();
        let before = faults.requests();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let made = faults.requests() - before;
        // Six watches and the lease reads, each backing off from 0.4 s to at most 4 s: a few
        // dozen requests at most. A hot loop would make thousands. A loaded machine only
        // makes fewer: the bound holds whatever the delays.
        assert!(made <= 80, "{name}: {made} requests in 8 s");
        let s = bed.scrape().await;
        assert!(
            s.blind(),
            "{name}: series exported while the API fails:\n{}",
            s.0
        );
        faults.heal();
        let s = bed
            .until(&format!("recovery after {name}"), |s| {
                healthy(s) && s.present(NS) == Some(1.0)
            })
            .await;
        assert!(errors(&s, "pods") >= 1.0);
        eprintln!("{name}: {made} requests in 8 s of failures");
    }
    renewer.abort();
}

/// A namespace with one Ready virt-operator pod `p` and a lease built from `spec`.
fn odd_lease(bed: &Bed, ns: &str, spec: serde_json::Value) {
    bed.store
        .apply(pod(ns, "p", &[("kubevirt.io", OPERATOR)], true));
    apply_lease(bed, ns, spec);
}

fn apply_lease(bed: &Bed, ns: &str, spec: serde_json::Value) {
    let mut lease = json!({"metadata": {"namespace": ns, "name": OPERATOR}});
    if !spec.is_null() {
        lease["spec"] = spec;
    }
    bed.store.apply_json(Kind::Lease, lease);
}

/// The duration of the leases [`renewed`] builds.
const RENEWED_SECONDS: u64 = 15;

/// How long the exporter takes a lease that [`renewed`] builds for live, by its own age of
/// the lease: the duration, then the grace.
fn renewed_limit() -> f64 {
    (Duration::from_secs(RENEWED_SECONDS) + GRACE).as_secs_f64()
}

fn age(s: &Scrape, ns: &str) -> Option<f64> {
    s.operator("lease_age_seconds", ns)
}

/// Puts a Ready pod and a lease from each case's spec in the case's namespace and returns
/// a scrape for which `also` holds and that judged every case while the exporter's age of its lease was within
/// [`renewed_limit`]: only then does "live" or "no leader" say what the case is about,
/// rather than that its lease has run out. A run so slow that a lease aged past the window
/// before it was judged has that lease created again, and the exporter judges it anew.
async fn judged_fresh(
    bed: &Bed,
    cases: &[(&str, serde_json::Value)],
    also: impl Fn(&Scrape) -> bool,
) -> Scrape {
    for (ns, spec) in cases {
        odd_lease(bed, ns, spec.clone());
    }
    let judged = |s: &Scrape| {
        also(s)
            && cases.iter().all(|(ns, _)| {
                s.present(ns).is_some()
                    && age(s, ns).is_some()
                    && s.operator("pods_ready", ns).is_some()
            })
    };
    let start = std::time::Instant::now();
    loop {
        let s = bed.until("every case judged", judged).await;
        let stale: Vec<(&str, f64)> = cases
            .iter()
            .filter_map(|(ns, _)| Some((*ns, age(&s, ns)?)))
            .filter(|(_, age)| *age > renewed_limit())
            .collect();
        if stale.is_empty() {
            return s;
        }
        assert!(
            start.elapsed() < 3 * PATIENCE,
            "leases aged past {}s before they were judged: {stale:?}",
            renewed_limit()
        );
        eprintln!("judged too late, creating the leases again: {stale:?}");
        for (ns, _) in &stale {
            let spec = cases.iter().find(|(n, _)| n == ns).map(|(_, spec)| spec);
            bed.store
                .delete::<k8s_openapi::api::coordination::v1::Lease>(ns, OPERATOR);
            apply_lease(bed, ns, spec.cloned().unwrap_or_default());
        }
        bed.until("the leases created again", |s| {
            judged(s)
                && stale
                    .iter()
                    .all(|(ns, old)| age(s, ns).is_some_and(|age| age < *old))
        })
        .await;
    }
}

fn renewed(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"holderIdentity": "p", "leaseDurationSeconds": RENEWED_SECONDS,
        "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 2});
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            spec.as_object_mut().expect("object").remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    spec
}

#[tokio::test]
async fn odd_objects_on_the_wire() {
    let bed = Bed::start(settings(&[])).await;
    let long = "h".repeat(10_000);
    let cases: Vec<(&str, serde_json::Value, f64)> = vec![
        ("no-spec", serde_json::Value::Null, 0.0),
        // No pod has such a name, but the lease alone decides.
        ("long-holder", renewed(json!({"holderIdentity": long})), 1.0),
        (
            "no-duration",
            renewed(json!({"leaseDurationSeconds": null})),
            0.0,
        ),
        (
            "zero-duration",
            renewed(json!({"leaseDurationSeconds": 0})),
            0.0,
        ),
        (
            "negative-duration",
            renewed(json!({"leaseDurationSeconds": -5})),
            0.0,
        ),
        (
            "huge-duration",
            renewed(json!({"leaseDurationSeconds": i32::MAX})),
            1.0,
        ),
        // client-go judges by a change of the record, never by renewTime.
        ("no-renew-time", renewed(json!({"renewTime": null})), 1.0),
        // A renewTime ahead of our clock is what node clock skew produces: harmless.
        (
            "future-renew-time",
            renewed(json!({"renewTime": "2999-01-01T00:00:00.000000Z"})),
            1.0,
        ),
        (
            "unknown-fields",
            renewed(json!({"futureField": {"x": [1, 2]}, "strategy": "Whatever"})),
            1.0,
        ),
    ];
    // Pods without status, without conditions, with an odd condition, without labels.
    bed.store.apply_json(Kind::Pod, json!({"metadata": {"namespace": "pods", "name": "no-status", "labels": {"kubevirt.io": OPERATOR}}}));
    bed.store.apply_json(Kind::Pod, json!({"metadata": {"namespace": "pods", "name": "no-conditions", "labels": {"kubevirt.io": OPERATOR}}, "status": {"phase": "Pending"}}));
    bed.store.apply_json(Kind::Pod, json!({"metadata": {"namespace": "pods", "name": "unknown", "labels": {"kubevirt.io": OPERATOR}}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}, {"type": "Weird"}]}}));
    bed.store.apply_json(
        Kind::Pod,
        json!({"metadata": {"namespace": "pods", "name": "no-labels"}}),
    );

    let leases: Vec<(&str, serde_json::Value)> = cases
        .iter()
        .map(|(ns, spec, _)| (*ns, spec.clone()))
        .collect();
    let s = judged_fresh(&bed, &leases, |s| s.operator("pods", "pods") == Some(3.0)).await;
    for (ns, _, want) in &cases {
        assert_eq!(s.present(ns), Some(*want), "{ns}");
        assert_eq!(s.operator("pods_ready", ns), Some(1.0), "{ns}");
    }
    assert_eq!(s.holder("no-spec"), None);
    assert_eq!(s.holder("long-holder").map(|h| h.len()), Some(253));
    assert_eq!(s.operator("holder_ready", "long-holder"), None);
    assert_eq!(s.operator("holder_ready", "no-renew-time"), Some(1.0));
    assert_eq!(
        s.operator("lease_duration_seconds", "negative-duration"),
        None
    );
    assert_eq!(
        s.operator("lease_duration_seconds", "huge-duration"),
        Some(f64::from(i32::MAX))
    );
    assert_eq!(s.operator("pods", "pods"), Some(3.0));
    assert_eq!(s.operator("pods_ready", "pods"), Some(0.0));
    let out = promtool_check(&s.0);
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A released lease (client-go's release writes an empty holder) is a handover: a standby
/// takes it at its next look, so it reads as a live leader until its duration and the grace
/// have run out since the release, and as no leader from then on. Both sides of that moment
/// are checked by the exporter's own age of the lease, whatever the machine's speed.
#[tokio::test]
async fn a_released_lease_hands_over_until_its_duration_and_grace_run_out() {
    let bed = Bed::start(settings(&[])).await;
    let cases = [
        ("empty-holder", renewed(json!({"holderIdentity": ""}))),
        // Without a duration there is no window for a handover: no leader at once.
        (
            "empty-holder-no-duration",
            renewed(json!({"holderIdentity": "", "leaseDurationSeconds": null})),
        ),
    ];
    let s = judged_fresh(&bed, &cases, |_| true).await;
    let within = age(&s, "empty-holder").expect("age");
    assert_eq!(
        s.present("empty-holder"),
        Some(1.0),
        "a release {within}s old read as no leader:\n{}",
        s.0
    );
    assert_eq!(s.present("empty-holder-no-duration"), Some(0.0), "{}", s.0);
    for (ns, _) in &cases {
        assert_eq!(s.holder(ns), None, "{ns}");
        assert_eq!(s.operator("pods_ready", ns), Some(1.0), "{ns}");
    }

    let s = until_within(
        Duration::from_secs(RENEWED_SECONDS) + GRACE + PATIENCE,
        &bed.http,
        bed.exporter.addr,
        "the release past its duration and grace",
        |s| {
            s.present("empty-holder").is_some()
                && age(s, "empty-holder").is_some_and(|age| age > renewed_limit())
        },
    )
    .await;
    let past = age(&s, "empty-holder").expect("age");
    assert_eq!(
        s.present("empty-holder"),
        Some(0.0),
        "a release {past}s old still read as a handover:\n{}",
        s.0
    );
    assert_eq!(s.present("empty-holder-no-duration"), Some(0.0), "{}", s.0);
}

#[tokio::test]
async fn an_undecodable_object_blinds_the_watch_until_it_is_fixed() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("leader present", |s| s.settled(NS)).await;
    // A lease no API server would accept: the duration is a string.
    bed.store.apply_json(
        Kind::Lease,
        json!({"metadata": {"namespace": "broken", "name": OPERATOR},
        "spec": {"holderIdentity": "p", "leaseDurationSeconds": "fifteen"}}),
    );
    let s = bed.until("blind", |s| s.blind()).await;
    assert_eq!(
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")]
        ),
        Some(0.0)
    );
    bed.store
        .apply(lease("broken", OPERATOR, "p", LEASE_SECONDS));
    let s = bed
        .until("sighted again", |s| {
            healthy(s) && s.present("broken").is_some()
        })
        .await;
    assert_eq!(s.holder("broken").as_deref(), Some("p"));
    assert_eq!(s.operator("holder_ready", "broken"), None);
}

#[tokio::test]
async fn a_pod_flipping_ready_loses_no_update() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("2 ready", |s| s.operator("pods_ready", NS) == Some(2.0))
        .await;
    let store = bed.store.clone();
    let flipper = tokio::spawn(async move {
        let mut ready = true;
        for _ in 0..600 {
            ready = !ready;
            store.set_pod_ready(NS, POD_B, ready);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // End on "not Ready": the last update must win.
        store.set_pod_ready(NS, POD_B, false);
    });
    let mut scrapes = 0;
    while !flipper.is_finished() {
        let s = bed.scrape().await;
        let ready = s.operator("pods_ready", NS).expect("pods_ready");
        assert!(ready == 1.0 || ready == 2.0, "{ready}");
        scrapes += 1;
    }
    flipper.await.expect("flipper");
    assert!(scrapes > 0, "no scrape while the pod flipped");
    bed.until("last update wins", |s| {
        s.operator("pods_ready", NS) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn slow_responses_still_sync() {
    let bed = Bed::start(settings(&[])).await;
    bed.sim
        .as_ref()
        .expect("sim")
        .faults
        .delay(Duration::from_millis(500));
    bed.seed_operator(NS);
    let renewer = spawn_renewer(bed.store.clone());
    bed.until("leader present", |s| s.settled(NS)).await;
    bed.until_ready().await;
    renewer.abort();
}
