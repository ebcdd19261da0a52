//! Many clusters, one place that evaluates the rules, with real parts only: two real
//! kube-apiservers ("cluster a" and "cluster b"), each with two Ready virt-operator pods, a
//! real client-go leader elector and the exporter binary; one "in-cluster" Prometheus per
//! cluster scraping its exporter with `external_labels: {cluster: a|b}`. Two central
//! Prometheus servers take the series in, each the way docs/many-clusters.md describes:
//!
//! - a federating Prometheus scrapes both in-cluster servers' `/federate` with
//!   `honor_labels: true`;
//! - a receiving Prometheus (`--web.enable-remote-write-receiver`) gets both in-cluster
//!   servers' remote write.
//!
//! Both evaluate the shipped rule file. Cluster b's leader then loses its right to renew the
//! Lease while its pods stay Ready; cluster a keeps its leader. NoLeadingVirtOperator must
//! fire in both central servers for `cluster="b", namespace="kubevirt"` alone, and no alert
//! may ever be raised (not even pending) for cluster a.
//!
//! The rule file is the shipped one with every `for:` divided by 20 (10m becomes 30 s), in a
//! copy this test makes; expressions, labels and annotations are untouched.

mod common;
mod envtest;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use common::prometheus::{Prometheus, eventually};
use envtest::{ControlPlane, EXPORTER_TOKEN, ExporterProcess};
use serde_json::Value;

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";
const B: &str = "virt-operator-6f7d9c5b8-x9y8z";
const ALERT: &str = "NoLeadingVirtOperator";
/// How much shorter every `for:` is in the test's copy of the rules.
const FOR_DIVISOR: u64 = 20;
/// The series the central servers take in: every series the exporter serves.
const SERIES: &str = r#"{__name__=~"kubevirt_leader.*"}"#;

/// The shipped rules with every `for:` divided by [`FOR_DIVISOR`].
fn shortened_rules(dir: &Path) -> PathBuf {
    common::prometheus::shortened_rules(dir, FOR_DIVISOR)
}

/// A cluster's own Prometheus: scrapes its exporter, labels what leaves it with
/// `cluster: <name>`, remote-writes to `receiver` and evaluates no rules.
fn in_cluster_prometheus(name: &str, exporter: SocketAddr, receiver: &str) -> Prometheus {
    Prometheus::from_config_with_args(
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s, external_labels: {{cluster: '{name}'}}}}\n\
             scrape_configs:\n\
             - job_name: kubevirt-leader-exporter\n\
             \x20 honor_labels: true\n\
             \x20 static_configs: [{{targets: ['{exporter}']}}]\n\
             remote_write:\n\
             - url: '{receiver}/api/v1/write'\n\
             \x20 queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n"
        ),
        &[],
    )
}

/// The host:port of a Prometheus's URL.
fn host(prometheus: &Prometheus) -> &str {
    prometheus.url.trim_start_matches("http://")
}

/// The NoLeadingVirtOperator alerts `prometheus` has, pending or firing.
async fn no_leader_alerts(prometheus: &Prometheus, http: &reqwest::Client) -> Option<Vec<Value>> {
    Some(
        prometheus
            .alerts(http)
            .await?
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == ALERT)
            .collect(),
    )
}

/// Whether `prometheus` has exactly one NoLeadingVirtOperator alert, for cluster b and
/// namespace kubevirt, in one of `states`.
async fn only_b_alerted(prometheus: &Prometheus, http: &reqwest::Client, states: &[&str]) -> bool {
    let Some(alerts) = no_leader_alerts(prometheus, http).await else {
        return false;
    };
    alerts.len() == 1
        && alerts[0]["labels"]["cluster"] == "b"
        && alerts[0]["labels"]["namespace"] == NS
        && states.iter().any(|s| alerts[0]["state"] == *s)
}

/// The result of a range-vector query, e.g. whether a series ever existed.
async fn query(prometheus: &Prometheus, http: &reqwest::Client, q: &str) -> Vec<Value> {
    let data = prometheus
        .api(http, "/api/v1/query", &[("query", q)])
        .await
        .unwrap_or_else(|| panic!("query {q} failed"));
    data["result"].as_array().cloned().expect("result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_and_remote_write_keep_clusters_apart() {
    let Some(assets) = envtest::elector_assets() else {
        return;
    };
    let begun = Instant::now();
    let (plane_a, plane_b) =
        tokio::join!(ControlPlane::start(&assets), ControlPlane::start(&assets));
    let _admin_a = plane_a.kubevirt(NS, &[A, B]).await.client;
    let admin_b = plane_b.kubevirt(NS, &[A, B]).await.client;
    let leader_a = plane_a.elector(NS, "virt-operator", A, &[]);
    let leader_b = plane_b.elector(NS, "virt-operator", A, &[]);
    leader_a.until_leading().await;
    leader_b.until_leading().await;
    let exporter_a = ExporterProcess::start(&plane_a.kubeconfig_file(EXPORTER_TOKEN), &[]);
    let exporter_b = ExporterProcess::start(&plane_b.kubeconfig_file(EXPORTER_TOKEN), &[]);

    let dir = common::temp_dir("federation");
    let rules = shortened_rules(&dir);
    let central = |extra: &str| {
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n{extra}",
            rules.display()
        )
    };
    let receiver =
        Prometheus::from_config_with_args(&central(""), &["--web.enable-remote-write-receiver"]);
    let in_a = in_cluster_prometheus("a", exporter_a.addr, &receiver.url);
    let in_b = in_cluster_prometheus("b", exporter_b.addr, &receiver.url);
    let federator = Prometheus::from_config_with_args(
        &central(&format!(
            "scrape_configs:\n\
             - job_name: federate\n\
             \x20 honor_labels: true\n\
             \x20 metrics_path: /federate\n\
             \x20 params: {{'match[]': ['{SERIES}']}}\n\
             \x20 static_configs: [{{targets: ['{}', '{}']}}]\n",
            host(&in_a),
            host(&in_b)
        )),
        &[],
    );
    let centrals = [("federation", &federator), ("remote write", &receiver)];
    let http = common::http();
    let present = |cluster: &str| {
        format!(
            "kubevirt_leader_present{{cluster=\"{cluster}\",namespace=\"{NS}\",component=\"virt-operator\"}}"
        )
    };

    // Both clusters arrive with their label, each with its leader.
    for (way, prometheus) in centrals {
        eventually(&format!("{way}: both clusters lead"), async || {
            let a = prometheus.value(&http, &present("a")).await?;
            let b = prometheus.value(&http, &present("b")).await?;
            (a == 1.0 && b == 1.0).then_some(())
        })
        .await;
        assert_eq!(
            prometheus.label_values(&http, "cluster", SERIES).await,
            Some(vec!["a".to_owned(), "b".to_owned()]),
            "{way}: the exporter's series carry the cluster label"
        );
        let ready = |c: &str| {
            format!(
                "kubevirt_leader_pods_ready{{cluster=\"{c}\",namespace=\"{NS}\",component=\"virt-operator\"}}"
            )
        };
        assert_eq!(
            prometheus.value(&http, &ready("a")).await,
            Some(2.0),
            "{way}"
        );
        assert_eq!(
            prometheus.value(&http, &ready("b")).await,
            Some(2.0),
            "{way}"
        );
        assert_eq!(
            no_leader_alerts(prometheus, &http).await,
            Some(vec![]),
            "{way}: no alert while both clusters lead"
        );
    }
    println!("both clusters seen centrally after {:?}", begun.elapsed());

    // Cluster b's leader may no longer renew the Lease; its pods stay Ready.
    plane_b.unbind_elector(&admin_b, NS).await;
    let lost = Instant::now();
    for (way, prometheus) in centrals {
        eventually(&format!("{way}: cluster b has no leader"), async || {
            (prometheus.value(&http, &present("b")).await? == 0.0).then_some(())
        })
        .await;
    }
    println!("cluster b without a leader after {:?}", lost.elapsed());
    for (way, prometheus) in centrals {
        eventually(&format!("{way}: {ALERT} for cluster b"), async || {
            only_b_alerted(prometheus, &http, &["pending", "firing"])
                .await
                .then_some(())
        })
        .await;
    }
    for (way, prometheus) in centrals {
        eventually(
            &format!("{way}: {ALERT} firing for cluster b"),
            async || {
                only_b_alerted(prometheus, &http, &["firing"])
                    .await
                    .then_some(())
            },
        )
        .await;
    }
    println!("{ALERT} firing for cluster b after {:?}", lost.elapsed());

    for (way, prometheus) in centrals {
        let alerts = no_leader_alerts(prometheus, &http).await.expect("alerts");
        let labels = &alerts[0]["labels"];
        assert_eq!(
            (
                &labels["cluster"],
                &labels["namespace"],
                &labels["severity"]
            ),
            (
                &Value::from("b"),
                &Value::from(NS),
                &Value::from("critical")
            ),
            "{way}: {alerts:?}"
        );
        // Cluster a kept its leader and never had an alert of any kind, not even pending.
        assert_eq!(
            prometheus.value(&http, &present("a")).await,
            Some(1.0),
            "{way}"
        );
        let ever_a = query(
            prometheus,
            &http,
            r#"count_over_time(ALERTS{cluster="a"}[15m])"#,
        )
        .await;
        assert!(ever_a.is_empty(), "{way}: alerts for cluster a: {ever_a:?}");
        let ever_b = query(
            prometheus,
            &http,
            r#"count by (alertname, namespace) (count_over_time(ALERTS{cluster="b"}[15m]))"#,
        )
        .await;
        assert_eq!(
            ever_b.len(),
            1,
            "{way}: cluster b had alerts besides {ALERT}: {ever_b:?}"
        );
        assert_eq!(ever_b[0]["metric"]["alertname"], ALERT, "{way}");
        assert_eq!(ever_b[0]["metric"]["namespace"], NS, "{way}");
    }
    drop((leader_a, leader_b));
    let _ = std::fs::remove_dir_all(&dir);
    println!("done after {:?}", begun.elapsed());
}
