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
    time::{Duration, Instant},
};

use common::prometheus::{Prometheus, eventually_within};
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

// What the test sets, from which every wait below follows.

/// Every Prometheus here scrapes and evaluates its rules this often.
const INTERVAL: Duration = Duration::from_secs(1);
/// The in-cluster servers send what they scraped at least this often...
const REMOTE_WRITE_DEADLINE: Duration = Duration::from_secs(1);
/// ...and retry a failed send at most this much later.
const REMOTE_WRITE_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// `leader-elector` runs with KubeVirt's virt-operator timings: a 15 s lease, renewed every
/// 2 s (the retry period).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The exporters run with the default grace.
const GRACE: Duration = kubevirt_leader_exporter::config::DEFAULT_GRACE;
/// NoLeadingVirtOperator's `for:` in the test's copy of the rules.
const FOR: Duration = Duration::from_secs(600 / FOR_DIVISOR);
/// Added to every wait: the intervals above are what the servers aim at, and on two loaded
/// cores shared by two API servers, two etcds, four Prometheus servers and two exporters
/// each step can start seconds late. 30 s covers many missed intervals in a row, while
/// a step that never happens, or one that waits on a timer more than that longer than the
/// ones above (a grace or a `for:` of a minute), still fails.
const MARGIN: Duration = Duration::from_secs(30);

/// How long the parts may take to start: no part of the claim, and so generous. The waits
/// that test the claim begin once everything runs.
const STARTING: Duration = Duration::from_secs(120);

/// From a change of what an exporter serves to both central servers holding it: the
/// in-cluster server's next scrape, then the slower of the two ways on, the federating
/// server's next scrape or a remote-write batch (sent by its deadline, and once more after
/// a failed send).
fn to_the_centre() -> Duration {
    INTERVAL + INTERVAL.max(REMOTE_WRITE_DEADLINE + REMOTE_WRITE_MAX_BACKOFF)
}

/// Prometheus's YAML for a duration, whole seconds or milliseconds.
fn yaml(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The shipped rules with every `for:` divided by [`FOR_DIVISOR`].
fn shortened_rules(dir: &Path) -> PathBuf {
    common::prometheus::shortened_rules(dir, FOR_DIVISOR)
}

/// A cluster's own Prometheus: scrapes its exporter, labels what leaves it with
/// `cluster: <name>`, remote-writes to `receiver` and evaluates no rules.
fn in_cluster_prometheus(name: &str, exporter: SocketAddr, receiver: &str) -> Prometheus {
    let (interval, deadline, backoff) = (
        yaml(INTERVAL),
        yaml(REMOTE_WRITE_DEADLINE),
        yaml(REMOTE_WRITE_MAX_BACKOFF),
    );
    Prometheus::from_config_with_args(
        &format!(
            "global: {{scrape_interval: {interval}, evaluation_interval: {interval}, external_labels: {{cluster: '{name}'}}}}\n\
             scrape_configs:\n\
             - job_name: kubevirt-leader-exporter\n\
             \x20 honor_labels: true\n\
             \x20 static_configs: [{{targets: ['{exporter}']}}]\n\
             remote_write:\n\
             - url: '{receiver}/api/v1/write'\n\
             \x20 queue_config: {{batch_send_deadline: {deadline}, min_backoff: 100ms, max_backoff: {backoff}}}\n"
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
    let interval = yaml(INTERVAL);
    let central = |extra: &str| {
        format!(
            "global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n\
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
    let ready = |c: &str| {
        format!(
            "kubevirt_leader_pods_ready{{cluster=\"{c}\",namespace=\"{NS}\",component=\"virt-operator\"}}"
        )
    };
    // Starting up is no part of the claim: the waits below begin once both exporters see
    // their leader and both pods, and all four servers run...
    for exporter in [&exporter_a, &exporter_b] {
        common::until_within(
            STARTING,
            &http,
            exporter.addr,
            "the exporter sees its leader and both pods",
            |s| s.present(NS) == Some(1.0) && s.operator("pods_ready", NS) == Some(2.0),
        )
        .await;
    }
    for prometheus in [&in_a, &in_b, &federator, &receiver] {
        prometheus.until_ready(&http).await;
    }
    // ...and have scraped their targets once: a server's first scrape waits on its own
    // discovery, which hands targets to the scrapers at most every 5 s.
    for (prometheus, targets) in [(&in_a, 1.0), (&in_b, 1.0), (&federator, 2.0)] {
        eventually_within(STARTING, "the first scrapes", async || {
            (prometheus.value(&http, "count(up == 1)").await? == targets).then_some(())
        })
        .await;
    }
    let started = Instant::now();

    // Both clusters arrive with their label, each with its leader and both pods: what the
    // exporters already serve reaches the centre by the way each takes.
    let budget = to_the_centre() + MARGIN;
    for (way, prometheus) in centrals {
        eventually_within(
            budget.saturating_sub(started.elapsed()),
            &format!("{way}: both clusters lead"),
            async || {
                for cluster in ["a", "b"] {
                    let leads = prometheus.value(&http, &present(cluster)).await?;
                    let pods = prometheus.value(&http, &ready(cluster)).await?;
                    (leads == 1.0 && pods == 2.0).then_some(())?;
                }
                Some(())
            },
        )
        .await;
        assert_eq!(
            prometheus.label_values(&http, "cluster", SERIES).await,
            Some(vec!["a".to_owned(), "b".to_owned()]),
            "{way}: the exporter's series carry the cluster label"
        );
        assert_eq!(
            no_leader_alerts(prometheus, &http).await,
            Some(vec![]),
            "{way}: no alert while both clusters lead"
        );
    }
    println!(
        "both clusters seen centrally after {:?}, {:?} after all ran",
        begun.elapsed(),
        started.elapsed()
    );

    // Cluster b's leader may no longer renew the Lease; its pods stay Ready.
    plane_b.unbind_elector(&admin_b, NS).await;
    let lost = Instant::now();
    // Its last renewal came at most a retry period before; the exporter reports no leader
    // once the lease is older than its duration and the grace (the confirming read is due
    // at the duration, before that), and the centre has it one way on later.
    let budget = RETRY_PERIOD + LEASE_DURATION + GRACE + to_the_centre() + MARGIN;
    for (way, prometheus) in centrals {
        eventually_within(
            budget.saturating_sub(lost.elapsed()),
            &format!("{way}: cluster b has no leader"),
            async || (prometheus.value(&http, &present("b")).await? == 0.0).then_some(()),
        )
        .await;
    }
    println!(
        "cluster b without a leader after {:?} (budget {budget:?})",
        lost.elapsed()
    );
    // Both centres hold it: the next evaluation makes the alert pending...
    let seen = Instant::now();
    let budget = INTERVAL + MARGIN;
    for (way, prometheus) in centrals {
        eventually_within(
            budget.saturating_sub(seen.elapsed()),
            &format!("{way}: {ALERT} for cluster b"),
            async || {
                only_b_alerted(prometheus, &http, &["pending", "firing"])
                    .await
                    .then_some(())
            },
        )
        .await;
    }
    // ...and it fires once it has been pending for its `for:`, at the evaluation after.
    let pending = Instant::now();
    let budget = FOR + INTERVAL + MARGIN;
    for (way, prometheus) in centrals {
        eventually_within(
            budget.saturating_sub(pending.elapsed()),
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
