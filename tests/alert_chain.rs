//! The whole alert chain with real parts only: two client-go leader electors configured as
//! KubeVirt configures virt-operator, on a real kube-apiserver → the exporter binary → a real
//! Prometheus evaluating the shipped rule file → a real Alertmanager → a webhook receiver
//! here. NoLeadingVirtOperator must reach the receiver once when the leader is really gone,
//! and nothing may arrive for the disturbances a healthy cluster goes through, which may
//! not even make it pending. Prometheus scrapes as the shipped installs do: over HTTPS, with
//! the token of the ServiceAccount the shipped reader binding names, which the exporter
//! checks with the API server.
//!
//! The rule file is the shipped one with every `for:` divided by 20 (10m becomes 30 s), in a
//! copy this test makes, so that the test takes minutes rather than hours; expressions,
//! labels and annotations are untouched.

mod common;
mod envtest;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use common::prometheus::{Prometheus, eventually};
use envtest::{ControlPlane, EXPORTER_TOKEN, ExporterProcess, Process, ServingCert};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use serde_json::Value;

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";
const B: &str = "virt-operator-6f7d9c5b8-x9y8z";
/// How much shorter every `for:` is in the test's copy of the rules.
const FOR_DIVISOR: u64 = 20;
/// How long the quiet phase lasts after its last disturbance has reached Prometheus: the
/// longest shortened `for:` of an alert the disturbances could trip (10m in the shipped
/// rules), then a margin for Alertmanager's 1 s group wait and a loaded machine.
const QUIET: Duration = Duration::from_secs(600 / FOR_DIVISOR + 15);
/// The exporter's start time, as Prometheus scraped it: a new value means a new process.
const STARTED: &str = "process_start_time_seconds{job=\"kubevirt-leader-exporter\"}";

/// The shipped rules with every `for:` divided by [`FOR_DIVISOR`].
fn shortened_rules(dir: &Path) -> PathBuf {
    common::prometheus::shortened_rules(dir, FOR_DIVISOR)
}

/// A real Alertmanager on loopback that sends every notification to `receiver`.
struct Alertmanager {
    _process: Process,
    addr: SocketAddr,
}

impl Alertmanager {
    fn start(dir: &Path, receiver: SocketAddr) -> Self {
        // Group per alert and namespace, send at once, never repeat within the test.
        let config = format!(
            "route: {{receiver: test, group_by: [alertname, namespace], group_wait: 1s, \
             group_interval: 1s, repeat_interval: 24h}}\n\
             receivers: [{{name: test, webhook_configs: [{{url: 'http://{receiver}/', send_resolved: true}}]}}]\n"
        );
        std::fs::write(dir.join("alertmanager.yml"), config).expect("write config");
        let addr = common::free_addr();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log")).expect("log"))
            .spawn()
            .expect("prometheus-alertmanager must be installed (Debian package)");
        Self {
            _process: Process(child),
            addr,
        }
    }
}

/// One alert as a webhook notification carries it: (status, alertname, labels, annotations).
type Notified = (String, String, Value, Value);

/// The webhook receiver: every alert of every notification, in arrival order.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Notified>>>) {
    let got: Arc<Mutex<Vec<Notified>>> = Arc::default();
    let app = Router::new()
        .route(
            "/",
            post(
                |State(got): State<Arc<Mutex<Vec<Notified>>>>, body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                    for alert in body["alerts"].as_array().into_iter().flatten() {
                        got.lock().expect("lock").push((
                            alert["status"].as_str().unwrap_or_default().to_owned(),
                            alert["labels"]["alertname"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            alert["labels"].clone(),
                            alert["annotations"].clone(),
                        ));
                    }
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

fn names(got: &Arc<Mutex<Vec<Notified>>>) -> Vec<String> {
    got.lock()
        .expect("lock")
        .iter()
        .map(|(status, name, labels, _)| format!("{status} {name} {}", labels["namespace"]))
        .collect()
}

/// Waits for a notification matching `status` and `name`, at most `patience`.
async fn until_notified(
    got: &Arc<Mutex<Vec<Notified>>>,
    status: &str,
    name: &str,
    patience: Duration,
) -> Notified {
    let start = Instant::now();
    loop {
        let found = got
            .lock()
            .expect("lock")
            .iter()
            .find(|(s, n, _, _)| s == status && n == name)
            .cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(
            start.elapsed() < patience,
            "no {status} {name} notification; got {:?}",
            names(got)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Rewrites the file Prometheus discovers the exporter from.
fn point_at(targets: &Path, exporter: SocketAddr) {
    let tmp = targets.with_extension("tmp");
    std::fs::write(&tmp, format!("[{{\"targets\": [\"{exporter}\"]}}]")).expect("targets");
    std::fs::rename(tmp, targets).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leading_virt_operator_reaches_alertmanager_once_and_only_when_true() {
    let Some(assets) = envtest::elector_assets() else {
        return;
    };
    let mut plane = ControlPlane::start(&assets).await;
    let admin = plane.kubevirt(NS, &[A, B]).await.client;
    let kubeconfig = plane.kubeconfig_file(EXPORTER_TOKEN);
    let dir = common::temp_dir("alert-chain");
    let targets = dir.join("targets.json");
    let serving = ServingCert::new(&dir);
    let token_file = plane.prometheus_token_file(&admin, &dir).await;
    let secured = serving.exporter_args();
    let secured: Vec<&str> = secured.iter().map(String::as_str).collect();
    let mut exporter = ExporterProcess::start(&kubeconfig, &secured);
    point_at(&targets, exporter.addr);

    let (hook, got) = receiver().await;
    let alertmanager = Alertmanager::start(&dir, hook);
    let prometheus = Prometheus::start_with(
        &format!(
            "file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]\n  {}",
            targets.display(),
            serving.scrape_settings(&token_file)
        ),
        &shortened_rules(&dir),
        Some(alertmanager.addr),
    );
    let http = common::http();
    let present =
        format!("kubevirt_leader_present{{namespace=\"{NS}\",component=\"virt-operator\"}}");

    let a = plane.elector(NS, "virt-operator", A, &[]);
    a.until_leading().await;
    let b = plane.elector(NS, "virt-operator", B, &[]);
    eventually("Prometheus sees the leader", async || {
        (prometheus.value(&http, &present).await? == 1.0).then_some(())
    })
    .await;
    // It got in with its token, which the exporter had the API server review.
    let reviewed = "kubevirt_leader_exporter_auth_reviews_total{kind=\"tokenreview\",result=\"authenticated\"}";
    eventually("the token was reviewed", async || {
        (prometheus.value(&http, reviewed).await? >= 1.0).then_some(())
    })
    .await;

    // Start-up, before the lease existed, may have made NoLeadingVirtOperator pending: the
    // quiet phase must begin after that has cleared, so that what it finds is its own.
    let no_leader = "alertname=\"NoLeadingVirtOperator\"";
    let alerts_now = format!("ALERTS{{{no_leader}}}");
    eventually("no NoLeadingVirtOperator left from start-up", async || {
        let data = prometheus
            .api(&http, "/api/v1/query", &[("query", &alerts_now)])
            .await?;
        data["result"].as_array()?.is_empty().then_some(())
    })
    .await;
    let first_start = eventually("the exporter's start time", async || {
        prometheus.value(&http, STARTED).await
    })
    .await;

    // Quiet: a normal failover, with the killed leader's pod back as a standby...
    // Throughout, Prometheus is asked whether NoLeadingVirtOperator was ever pending: one
    // that went pending late would fire only after the notifications are checked, grouped
    // with the loud phase's, and no notification check could tell.
    let quiet = prometheus.watch_alerts(&http, no_leader);
    a.signal("KILL");
    let start = Instant::now();
    while !b.started_leading() {
        assert!(start.elapsed() < Duration::from_secs(60), "no takeover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
    let _a = plane.elector(NS, "virt-operator", A, &[]);
    // ...an API server restart...
    plane.kill_apiserver();
    plane.start_apiserver().await;
    // ...and an exporter restart, on the same address.
    let listen = format!("--listen={}", exporter.addr);
    exporter.signal("TERM");
    let stopping = Instant::now();
    while exporter.process_alive() {
        assert!(
            stopping.elapsed() < Duration::from_secs(30),
            "the exporter does not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted: Vec<&str> = secured.iter().copied().chain([listen.as_str()]).collect();
    let exporter = ExporterProcess::start(&kubeconfig, &restarted);
    // Every disturbance has reached the rules once Prometheus has scraped the restarted
    // exporter and found the leader.
    eventually("Prometheus scrapes the restarted exporter", async || {
        let started = prometheus.value(&http, STARTED).await?;
        let leads = prometheus.value(&http, &present).await?;
        (started > first_start && leads == 1.0).then_some(())
    })
    .await;
    // Then long enough for anything they made pending to fire and be notified.
    tokio::time::sleep(QUIET).await;
    let asked = quiet.finish().await;
    assert_eq!(
        names(&got),
        Vec::<String>::new(),
        "quiet disturbances notified"
    );
    assert!(
        asked.unanswered.is_empty(),
        "Prometheus left {} of {} questions about ALERTS unanswered: {:?}",
        asked.unanswered.len(),
        asked.unanswered.len() + asked.answered,
        asked.unanswered
    );
    // About one a second; this many shows the questions went on through the whole phase.
    let enough = usize::try_from(QUIET.as_secs() / 5).expect("small");
    assert!(
        asked.answered >= enough,
        "only {} answers about ALERTS in the quiet phase, fewer than {enough}",
        asked.answered
    );
    println!(
        "quiet phase: {} answers about ALERTS, none unanswered",
        asked.answered
    );
    assert!(
        asked.seen.is_empty(),
        "NoLeadingVirtOperator pending or firing in the quiet phase (seconds into it, \
         series): {:?}",
        asked.seen
    );
    assert_eq!(prometheus.value(&http, &present).await, Some(1.0));

    // Loud: the electors lose their right to update leases; the pods stay Ready.
    Api::<RoleBinding>::namespaced(admin.clone(), NS)
        .delete("leader-election", &Default::default())
        .await
        .expect("remove the electors' rights");
    // The lease is lost 25 s after the last renewal; then the shortened 30 s `for:`.
    let (_, _, labels, annotations) = until_notified(
        &got,
        "firing",
        "NoLeadingVirtOperator",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["namespace"], NS);
    assert!(
        annotations["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/docs/runbooks/NoLeadingVirtOperator.md")),
        "{annotations}"
    );
    plane.bind_elector(&admin, NS).await;
    until_notified(
        &got,
        "resolved",
        "NoLeadingVirtOperator",
        Duration::from_secs(60),
    )
    .await;
    let said = names(&got);
    assert_eq!(
        said,
        [
            format!("firing NoLeadingVirtOperator \"{NS}\""),
            format!("resolved NoLeadingVirtOperator \"{NS}\"")
        ],
        "exactly one notification and its resolution"
    );

    // The exporter stopped: its own alert, not "no leader".
    drop(exporter);
    until_notified(
        &got,
        "firing",
        "KubevirtLeaderExporterDown",
        Duration::from_secs(90),
    )
    .await;
    let firing_no_leader = names(&got)
        .iter()
        .filter(|n| n.starts_with("firing NoLeadingVirtOperator"))
        .count();
    assert_eq!(firing_no_leader, 1, "{:?}", names(&got));
    println!("notifications: {:?}", names(&got));
}
