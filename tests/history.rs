//! Renewal health and leadership history end to end: the simulated API server feeds the
//! exporter through the real kube client; assertions read `/metrics`, `/status.json` and `/`
//! over HTTP.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kubevirt_leader_sim::{lease, pod};
use serde_json::Value;

/// KubeVirt's own lease duration: long enough that slow renewals do not lose the lease.
const KUBEVIRT_LEASE_SECONDS: i32 = 15;

/// KubeVirt installed while the exporter watches: the lease is created under its eyes.
async fn seed(bed: &Bed) {
    bed.until_ready().await;
    for name in [POD_A, POD_B] {
        bed.store
            .apply(pod(NS, name, &[("kubevirt.io", OPERATOR)], true));
    }
    bed.store
        .apply(lease(NS, OPERATOR, POD_A, KUBEVIRT_LEASE_SECONDS));
}

fn count(s: &Scrape) -> Option<f64> {
    s.operator("lease_renewal_interval_seconds_count", NS)
}

/// The operator's card in `/status.json`.
fn card(status: &Value) -> &Value {
    &status["components"][0]["namespaces"][0]
}

#[tokio::test]
async fn renewals_every_2s_then_every_7s_land_in_their_buckets() {
    let bed = Bed::start(settings(&[])).await;
    seed(&bed).await;
    bed.until("leader present", |s| s.settled(NS)).await;
    // The lease's creation starts the clock; each renewal after it ends an interval.
    let pauses: [u32; 6] = [2, 2, 2, 7, 7, 7];
    for pause in pauses {
        tokio::time::sleep(Duration::from_secs(pause.into())).await;
        assert!(bed.store.renew_lease(NS, OPERATOR));
    }
    bed.until("6 intervals", |s| count(s) == Some(6.0)).await;
    // Intervals are measured by when the watch delivered each renewal, which load can
    // delay: each lands in the bucket its own measured length says, and together they
    // span at least the pauses between the writes.
    let (s, intervals) = renewals_at_rest(&bed.http, bed.exporter.addr, NS, OPERATOR).await;
    assert_eq!(intervals.len(), 6);
    assert_histogram_of(&s, NS, OPERATOR, &intervals);
    let written: u32 = pauses.iter().sum();
    let sum: f64 = intervals.iter().sum();
    assert!(sum >= f64::from(written), "{intervals:?}");
    // The creation of the lease was the one holder change.
    assert_eq!(s.operator("changes_total", NS), Some(1.0));
    let held = s
        .operator("holder_since_seconds", NS)
        .expect("holder_since");
    assert!(held >= f64::from(written), "{held}");
}

/// The kinds of the events of virt-operator in `NS`, oldest first.
fn story(status: &Value) -> Vec<String> {
    common::event_kinds(status, OPERATOR, NS)
}

async fn status(bed: &Bed) -> Value {
    let (code, body) = bed.get("/status.json").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test]
async fn a_takeover_a_release_and_a_blind_spell_are_told_in_order() {
    let bed = Bed::start(settings(&[])).await;
    seed(&bed).await;
    bed.until("leader present", |s| s.settled(NS)).await;
    bed.store.take_lease(NS, OPERATOR, POD_B);
    bed.until("B leads", |s| s.holder(NS).as_deref() == Some(POD_B))
        .await;
    bed.store.update::<Lease>(NS, OPERATOR, |l| {
        if let Some(spec) = &mut l.spec {
            spec.holder_identity = Some(String::new());
        }
    });
    bed.until("released", |s| s.present(NS) == Some(0.0)).await;

    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    faults.fail_next(u32::MAX);
    faults.close_watches();
    bed.until("blind", Scrape::blind).await;
    // While blind, the page still tells the story so far.
    let blind = status(&bed).await;
    assert_eq!(card(&blind)["state"], "blind", "{blind:#}");
    assert_eq!(story(&blind).last().map(String::as_str), Some("blind"));
    faults.heal();
    bed.until("seeing again", |s| s.present(NS) == Some(0.0))
        .await;

    bed.store.take_lease(NS, OPERATOR, POD_A);
    bed.until("A leads", |s| s.settled(NS)).await;
    let status = status(&bed).await;
    assert_eq!(
        story(&status),
        [
            "acquired",
            "changed",
            "released",
            "blind",
            "saw_again",
            "acquired"
        ],
        "{status:#}"
    );
    let card = self::card(&status);
    assert_eq!(card["state"], "leader");
    assert_eq!(card["holder"], POD_A);
    assert_eq!(card["holder_changes"], 4);
    // RFC 3339 times with as many fractional digits as they need ("15.7Z", "15.755Z"):
    // compared as times, not as text.
    let times: Vec<k8s_openapi::jiff::Timestamp> = card["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["at"].as_str()?.parse().ok())
        .collect();
    assert_eq!(times.len(), 6, "{card:#}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let changed = &card["events"][1];
    assert_eq!(
        (&changed["holder"], &changed["previous"]),
        (&Value::from(POD_B), &Value::from(POD_A))
    );

    let (_, page) = bed.get("/").await;
    assert!(page.contains("class=\"card leader\""), "{page}");
    assert!(page.contains("took over from"), "{page}");
    assert!(page.contains("released the lease"), "{page}");
    assert!(page.contains("lost sight of the lease"), "{page}");
}
