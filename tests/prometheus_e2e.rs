//! A real Prometheus server scrapes the exporter, which watches the simulated API server, and
//! evaluates the shipped rule file: a leader that stops renewing must show up as
//! `kubevirt_leader_present 0` and a pending NoLeadingVirtOperator.

mod common;

use std::time::Duration;

use common::{
    prometheus::{Prometheus, eventually},
    *,
};

#[tokio::test]
async fn prometheus_sees_the_leader_go_and_no_leading_virt_operator_pends() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let store = bed.store.clone();
    let renewer = tokio::spawn(async move {
        loop {
            store.renew_lease(NS, OPERATOR);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let prometheus = Prometheus::start(&bed.exporter.addr.to_string());
    let http = common::http();
    let present = format!("kubevirt_leader_present{{namespace=\"{NS}\",component=\"{OPERATOR}\"}}");

    eventually("Prometheus scrapes present = 1", async || {
        (prometheus.value(&http, &present).await? == 1.0).then_some(())
    })
    .await;
    let ready =
        format!("kubevirt_leader_pods_ready{{namespace=\"{NS}\",component=\"{OPERATOR}\"}}");
    assert_eq!(prometheus.value(&http, &ready).await, Some(2.0));
    assert_eq!(
        prometheus
            .alert_state(&http, "NoLeadingVirtOperator", NS)
            .await,
        None
    );

    // The leader hangs: it stops renewing, its pod stays Ready.
    renewer.abort();
    eventually("Prometheus scrapes present = 0", async || {
        (prometheus.value(&http, &present).await? == 0.0).then_some(())
    })
    .await;
    let state = eventually("NoLeadingVirtOperator in Prometheus", async || {
        prometheus
            .alert_state(&http, "NoLeadingVirtOperator", NS)
            .await
    })
    .await;
    // The rule waits 10 minutes before firing; promtool's tests prove that part.
    assert_eq!(state, "pending");
    assert_eq!(prometheus.value(&http, &ready).await, Some(2.0));
    // The exporter is up and sighted: no other alert is even pending.
    let alerts = prometheus
        .api(&http, "/api/v1/alerts", &[])
        .await
        .expect("alerts");
    let names: Vec<&str> = alerts["alerts"]
        .as_array()
        .expect("alert list")
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(names, ["NoLeadingVirtOperator"]);
    let up = prometheus
        .value(&http, "up{job=\"kubevirt-leader-exporter\"}")
        .await;
    assert_eq!(up, Some(1.0));
}

#[tokio::test]
async fn a_leader_renewing_every_7s_raises_kubevirt_leader_renewals_slow() {
    let bed = Bed::start(settings(&[])).await;
    for name in [POD_A, POD_B] {
        bed.store.apply(kubevirt_leader_sim::pod(
            NS,
            name,
            &[("kubevirt.io", OPERATOR)],
            true,
        ));
    }
    // KubeVirt's 15 s lease: the leader is slow, not gone.
    bed.store
        .apply(kubevirt_leader_sim::lease(NS, OPERATOR, POD_A, 15));
    let store = bed.store.clone();
    let renewer = tokio::spawn(async move {
        loop {
            store.renew_lease(NS, OPERATOR);
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
    });
    let prometheus = Prometheus::start(&bed.exporter.addr.to_string());
    let http = common::http();
    let state = eventually("KubevirtLeaderRenewalsSlow in Prometheus", async || {
        prometheus
            .alert_state(&http, "KubevirtLeaderRenewalsSlow", NS)
            .await
            .filter(|s| s == "firing")
    })
    .await;
    assert_eq!(state, "firing");
    let slow = format!(
        "kubevirt_leader_lease_renewal_interval_seconds_count{{namespace=\"{NS}\"}} \
         - ignoring(le) kubevirt_leader_lease_renewal_interval_seconds_bucket{{namespace=\"{NS}\",le=\"6\"}}"
    );
    let slow = prometheus
        .value(&http, &slow)
        .await
        .expect("slow intervals");
    assert!(slow >= 3.0, "{slow}");
    // Slow, not gone: the leader is still present.
    let present = format!("kubevirt_leader_present{{namespace=\"{NS}\",component=\"{OPERATOR}\"}}");
    assert_eq!(prometheus.value(&http, &present).await, Some(1.0));
    renewer.abort();
}
