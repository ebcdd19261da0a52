//! The exporter against real client-go leader electors (`leader-elector` from the assets
//! folder: client-go's own `tools/leaderelection` with a Lease lock, configured as KubeVirt
//! configures virt-operator: lease 15 s, renew deadline 10 s, retry 2 s, no release, exit on
//! loss) on a real kube-apiserver. The exporter runs with its default grace, as the user bound
//! to the shipped ClusterRole, and every assertion reads `/metrics` over HTTP.

mod common;
mod envtest;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use common::{Reading, Scrape, assert_histogram_of, renewals_at_rest, scrape, until_within};
use envtest::{Cluster, ControlPlane, EXPORTER_TOKEN, Elector, ExporterProcess, elector_assets};
use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime};

const NS: &str = "kubevirt";
const LEASE: &str = "virt-operator";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";
const B: &str = "virt-operator-6f7d9c5b8-x9y8z";
/// KubeVirt's lease duration plus the exporter's default grace.
const LIMIT_SECONDS: f64 = 25.0;
/// Long enough for a lease to run out unrenewed and be confirmed by a direct read.
const PATIENCE: Duration = Duration::from_secs(90);
const OPERATOR_LABELS: [(&str, &str); 1] = [("kubevirt.io", "virt-operator")];

struct Bed {
    plane: ControlPlane,
    cluster: Cluster,
    http: reqwest::Client,
    exporter: ExporterProcess,
}

/// A real control plane with namespace `kubevirt`, the electors' rights on leases there, and
/// the exporter (default flags but for `extra`).
async fn setup(extra: &[&str]) -> Option<Bed> {
    let assets = elector_assets()?;
    let plane = ControlPlane::start(&assets).await;
    let cluster = plane.kubevirt(NS, &[]).await;
    let exporter = ExporterProcess::start(&plane.kubeconfig_file(EXPORTER_TOKEN), extra);
    Some(Bed {
        plane,
        cluster,
        http: common::http(),
        exporter,
    })
}

impl Bed {
    /// Two Ready virt-operator pods, `A` and `B`.
    async fn pods(&self, finalizer: bool) {
        for name in [A, B] {
            self.cluster
                .pod_with(NS, name, &OPERATOR_LABELS, finalizer)
                .await;
        }
    }

    fn elector(&self, identity: &str) -> Elector {
        self.plane.elector(NS, LEASE, identity, &[])
    }

    async fn until(&self, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
        until_within(PATIENCE, &self.http, self.exporter.addr, what, check).await
    }

    fn sample(&self) -> Sampler {
        Sampler::start(self.http.clone(), self.exporter.addr)
    }

    async fn lease_renewed_at(&self) -> MicroTime {
        self.cluster
            .lease_spec(NS, LEASE)
            .await
            .renew_time
            .expect("renewTime")
    }
}

fn op(s: &Scrape, name: &str) -> Option<f64> {
    s.operator(name, NS)
}

/// `holder` leads, and the pod watch has caught up with both Ready pods (the pod and lease
/// watches are separate streams).
fn leads(s: &Scrape, holder: &str) -> bool {
    op(s, "present") == Some(1.0)
        && s.holder(NS).as_deref() == Some(holder)
        && op(s, "pods_ready") == Some(2.0)
}

/// What one scrape said about virt-operator in `kubevirt`.
#[derive(Debug)]
struct Sample {
    /// When the scrape was sent.
    at: Instant,
    wall: SystemTime,
    reading: Reading,
    holder: Option<String>,
    holder_ready: Option<f64>,
    age: Option<f64>,
}

/// Scrapes every 250 ms in the background until finished.
struct Sampler(common::Sampler<Sample>);

impl Sampler {
    fn start(http: reqwest::Client, addr: SocketAddr) -> Self {
        Self(common::Sampler::start(http, addr, |at, s| Sample {
            at,
            // The wall clock when the scrape was sent, not when it was answered.
            wall: SystemTime::now() - at.elapsed(),
            reading: Reading::of(s.as_ref(), |s| op(s, "present")),
            holder: s.as_ref().and_then(|s| s.holder(NS)),
            holder_ready: s.as_ref().and_then(|s| op(s, "holder_ready")),
            age: s.as_ref().and_then(|s| op(s, "lease_age_seconds")),
        }))
    }

    /// Waits for `n` more samples.
    async fn more(&mut self, n: usize) {
        self.0.more(n).await;
    }

    /// Stops after one more sample, so that what the caller last saw is in the samples.
    async fn finish(mut self) -> Vec<Sample> {
        self.0.more(1).await;
        self.0.finish().await
    }
}

/// Every sample, at least `min`, was answered and read a live leader.
fn always_led(samples: &[Sample], min: usize, what: &str) {
    common::assert_always_led(samples, |s| s.reading, min, what);
}

/// How many samples were sent between `from` and `to`.
fn sent_between(samples: &[Sample], from: Instant, to: Instant) -> usize {
    common::sent_between(samples, |s| s.at, from, to)
}

fn seconds_between(earlier: &MicroTime, later: &MicroTime) -> f64 {
    later.0.duration_since(earlier.0).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_electors_leads_and_readiness_does_not_decide() {
    let Some(t) = setup(&[]).await else { return };
    t.pods(false).await;
    let a = t.elector(A);
    a.until_leading().await;
    let _b = t.elector(B);
    let s = t.until("A leads", |s| leads(s, A)).await;
    assert_eq!(op(&s, "holder_ready"), Some(1.0));
    assert_eq!(op(&s, "lease_duration_seconds"), Some(15.0));

    // The leader's pod fails its readiness probe while it keeps renewing.
    t.cluster.set_ready(NS, A, false).await;
    t.until("holder not ready", |s| op(s, "holder_ready") == Some(0.0))
        .await;
    let mut sampler = t.sample();
    // Twenty samples span more than two of the leader's renewals.
    sampler.more(20).await;
    let samples = sampler.finish().await;
    always_led(&samples, 20, "a renewing leader whose pod is not Ready");
    assert!(
        samples
            .iter()
            .all(|s| s.holder_ready == Some(0.0) && s.holder.as_deref() == Some(A)),
        "{samples:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_takeovers_never_read_no_leader() {
    let Some(t) = setup(&[]).await else { return };
    t.pods(false).await;
    let mut leader = t.elector(A);
    leader.until_leading().await;
    let mut standby = t.elector(B);
    t.until("A leads", |s| leads(s, A)).await;
    let sampler = t.sample();
    let mut takeovers = Vec::new();
    let mut windows = Vec::new();
    for round in 1..=5 {
        // The leader hangs (its lease is not released); the standby must take over.
        let stopped = Instant::now();
        leader.signal("STOP");
        // A renewal already on its way may still land.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last_renewal = t.lease_renewed_at().await;
        standby.until_leading().await;
        windows.push((stopped, Instant::now()));
        let spec = t.cluster.lease_spec(NS, LEASE).await;
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some(standby.identity.as_str())
        );
        let acquired = spec.acquire_time.expect("acquireTime");
        let took = seconds_between(&last_renewal, &acquired);
        common::report(&format!(
            "takeover {round}: {took:.1}s from the last renewal to the standby leading"
        ));
        takeovers.push(took);
        // The hung leader is restarted, as the kubelet restarts a failed container, and
        // becomes the standby.
        leader.signal("KILL");
        let identity = leader.identity.clone();
        leader = std::mem::replace(&mut standby, t.elector(&identity));
    }
    let holder = leader.identity.clone();
    t.until("the last leader", |s| {
        s.holder(NS).as_deref() == Some(holder.as_str())
    })
    .await;
    let samples = sampler.finish().await;
    // Each takeover lasts at least the lease duration (15 s): the exporter is watched all
    // through it, not only before and after.
    for (round, (from, to)) in windows.iter().enumerate() {
        let seen = sent_between(&samples, *from, *to);
        assert!(seen >= 10, "takeover {}: only {seen} samples", round + 1);
    }
    always_led(&samples, 50, "takeovers");
    let changes = samples
        .windows(2)
        .filter(|w| w[0].holder != w[1].holder)
        .count();
    assert_eq!(changes, 5, "the exporter should see every takeover");
    assert!(
        takeovers.iter().all(|s| *s >= 15.0),
        "a standby took an unexpired lease: {takeovers:?}"
    );
    common::report(&format!(
        "takeovers: {} samples every 250 ms, each read a live leader",
        samples.len()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_never_reads_no_leader() {
    let Some(t) = setup(&[]).await else { return };
    t.pods(true).await;
    let mut a = t.elector(A);
    a.until_leading().await;
    let b = t.elector(B);
    t.until("A leads", |s| {
        leads(s, A) && op(s, "holder_ready") == Some(1.0)
    })
    .await;
    let sampler = t.sample();
    let deleted = Instant::now();

    // The Deployment deletes the leader's pod; it terminates but its elector renews on.
    t.cluster.delete_pod(NS, A).await;
    let s = t
        .until("holder terminating", |s| op(s, "holder_ready") == Some(0.0))
        .await;
    assert_eq!(op(&s, "present"), Some(1.0));
    assert_eq!(op(&s, "pods"), Some(1.0));
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Its process exits on SIGTERM without releasing the lease; the standby takes over.
    a.signal("TERM");
    let start = Instant::now();
    while a.exited().is_none() {
        assert!(start.elapsed() < PATIENCE, "elector A did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spec = t.cluster.lease_spec(NS, LEASE).await;
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(A),
        "the lease was released"
    );
    b.until_leading().await;
    t.until("B leads", |s| {
        s.holder(NS).as_deref() == Some(B) && op(s, "holder_ready") == Some(1.0)
    })
    .await;
    let took_over = Instant::now();
    t.cluster.release_pod(NS, A).await;
    let samples = sampler.finish().await;
    // From the deletion to the takeover is at least the lease duration (15 s).
    let seen = sent_between(&samples, deleted, took_over);
    assert!(seen >= 10, "only {seen} samples during the rolling restart");
    always_led(&samples, seen, "a rolling restart");
    assert!(
        samples
            .iter()
            .any(|s| s.holder.as_deref() == Some(A) && s.holder_ready == Some(0.0)),
        "holder_ready never read 0 while the terminating pod led"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lone_leader_is_lost_after_duration_and_grace() {
    let Some(t) = setup(&[]).await else { return };
    t.pods(false).await;
    let a = t.elector(A);
    a.until_leading().await;
    t.until("A leads", |s| leads(s, A)).await;
    let sampler = t.sample();
    a.signal("KILL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last_renewal = t.lease_renewed_at().await;
    let s = t
        .until("leader lost", |s| op(s, "present") == Some(0.0))
        .await;
    assert_eq!(
        s.holder(NS).as_deref(),
        Some(A),
        "the dead leader's name stays"
    );
    assert_eq!(op(&s, "pods_ready"), Some(2.0));
    let samples = sampler.finish().await;
    let first_zero = samples
        .iter()
        .position(|s| s.reading == Reading::Present(0.0))
        .expect("a sample read 0");
    assert!(
        samples[..first_zero]
            .iter()
            .all(|s| s.reading == Reading::Present(1.0)),
        "{samples:?}"
    );
    let lost = &samples[first_zero];
    let age = lost.age.expect("lease age");
    assert!(age > LIMIT_SECONDS, "lost at lease age {age}s");
    let renewed = SystemTime::from(last_renewal.0);
    let after = lost
        .wall
        .duration_since(renewed)
        .expect("lost after the last renewal")
        .as_secs_f64();
    assert!(
        after >= LIMIT_SECONDS,
        "reported lost {after:.1}s after the last renewal"
    );
    common::report(&format!(
        "killed leader: reported lost {after:.1}s after its last renewal (lease age {age:.1}s), \
         {:.1}s after the kill",
        lost.at.duration_since(samples[0].at).as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_lease_updates_lose_the_leader_until_rights_return() {
    let Some(t) = setup(&[]).await else { return };
    t.pods(false).await;
    let mut a = t.elector(A);
    a.until_leading().await;
    let _b = t.elector(B);
    t.until("A leads", |s| leads(s, A)).await;

    // Lease updates are refused (lost RBAC, a webhook) while both pods stay Ready.
    t.plane.unbind_elector(&t.cluster.client, NS).await;
    let s = t
        .until("no leader", |s| op(s, "present") == Some(0.0))
        .await;
    assert_eq!(op(&s, "pods_ready"), Some(2.0));
    assert_eq!(s.holder(NS).as_deref(), Some(A));
    let age = op(&s, "lease_age_seconds").expect("age");
    assert!(age > LIMIT_SECONDS, "lost at lease age {age}s");
    let status = a.exited().expect("the leader exits once it cannot renew");
    assert_eq!(status.code(), Some(1));

    // Rights come back; the kubelet has restarted the leader that exited.
    t.plane.bind_elector(&t.cluster.client, NS).await;
    let _a = t.elector(A);
    let s = t
        .until("a leader again", |s| op(s, "present") == Some(1.0))
        .await;
    assert_eq!(op(&s, "holder_ready"), Some(1.0));
    let spec = t.cluster.lease_spec(NS, LEASE).await;
    assert_eq!(s.holder(NS), spec.holder_identity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_runtime_identity_names_its_pod() {
    let dir = common::temp_dir("elector-config");
    let config = dir.join("components.yaml");
    std::fs::write(
        &config,
        "components:\n  - name: sample-controller\n    podSelector:\n      matchLabels: {app: sample-controller}\n    lease: sample-controller-lock\n",
    )
    .expect("write config");
    let Some(t) = setup(&[&format!("--config={}", config.display())]).await else {
        return;
    };
    let pod = "sample-controller-5c9d7b6f4-q2w3e";
    t.cluster
        .pod_with(NS, pod, &[("app", "sample-controller")], false)
        .await;
    let identity = format!("{pod}_0b7f3c1e-9a4d-4e2b-8f6a-5d1c2b3a4e5f");
    let elector = t
        .plane
        .elector(NS, "sample-controller-lock", &identity, &[]);
    elector.until_leading().await;
    let labels = [("namespace", NS), ("component", "sample-controller")];
    let s = t
        .until("sample-controller leads", |s| {
            s.value("kubevirt_leader_present", &labels) == Some(1.0)
                && s.value("kubevirt_leader_pods_ready", &labels) == Some(1.0)
        })
        .await;
    assert_eq!(s.value("kubevirt_leader_holder_ready", &labels), Some(1.0));
    assert!(s.0.contains(&format!("holder=\"{identity}\"")), "{}", s.0);
    assert_eq!(s.value("kubevirt_leader_pods_ready", &labels), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_while_a_leader_renews() {
    let Some(mut t) = setup(&[]).await else {
        return;
    };
    t.pods(false).await;
    // The electors contend again after losing the lease, as restarted containers would.
    let a = t
        .plane
        .elector(NS, LEASE, A, &["--exit-after-stopped=false"]);
    a.until_leading().await;
    let _b = t
        .plane
        .elector(NS, LEASE, B, &["--exit-after-stopped=false"]);
    t.until("A leads", |s| leads(s, A)).await;
    let sampler = t.sample();
    t.plane.kill_apiserver();
    tokio::time::sleep(Duration::from_secs(30)).await;
    t.plane.start_apiserver().await;
    let answering = Instant::now();
    t.until("series back", |s| op(s, "present").is_some()).await;
    let back = answering.elapsed();
    let spec = t.cluster.lease_spec(NS, LEASE).await;
    t.until("series match the lease", |s| {
        op(s, "present") == Some(1.0) && s.holder(NS) == spec.holder_identity
    })
    .await;
    let samples = sampler.finish().await;
    // The exporter itself keeps answering: blind while the API server is down, never
    // "no leader".
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| !matches!(s.reading, Reading::Present(1.0) | Reading::NoSeries))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} samples, wrong: {wrong:?}",
        samples.len()
    );
    let blind = samples
        .iter()
        .filter(|s| s.reading == Reading::NoSeries)
        .count();
    assert!(blind > 0, "the exporter never went blind during the outage");
    let s = scrape(&t.http, t.exporter.addr).await;
    assert!(
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "leases")]
        ) >= Some(1.0)
    );
    common::report(&format!(
        "API server outage of 30s: series back {:.1}s after the API server answered /readyz",
        back.as_secs_f64()
    ));
}

/// The intervals between one holder's renewals of the Lease `name` in `ns`, as the test's
/// own watch sees them arrive, by the test's clock: a measurement that shares nothing with
/// the exporter but the API server.
struct RenewalWatch {
    intervals: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RenewalWatch {
    /// Starts watching, and returns once the watch has listed, so that no renewal after
    /// this call is missed.
    async fn start(client: kube::Client, ns: &str, name: &str) -> Self {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let api: kube::Api<Lease> = kube::Api::namespaced(client, ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let intervals: std::sync::Arc<std::sync::Mutex<Vec<f64>>> = std::sync::Arc::default();
        let seen = std::sync::Arc::clone(&intervals);
        let (listed, mut has_listed) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last: Option<(String, Option<String>, Instant)> = None;
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(event) = events.next().await {
                let lease = match event {
                    Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => l,
                    Ok(watcher::Event::InitDone) => {
                        listed.send_replace(true);
                        continue;
                    }
                    Ok(_) => continue,
                    // The watcher lists again by itself; what it misses meanwhile is not
                    // measured, and the comparison below would show it.
                    Err(_) => continue,
                };
                let now = Instant::now();
                let version = lease.metadata.resource_version.unwrap_or_default();
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if let Some((v, h, at)) = &last {
                    if *v == version {
                        continue;
                    }
                    if *h == holder && holder.is_some() {
                        let interval = now.duration_since(*at).as_secs_f64();
                        seen.lock().expect("intervals").push(interval);
                    }
                }
                last = Some((version, holder, now));
            }
        });
        has_listed
            .wait_for(|listed| *listed)
            .await
            .expect("the lease watch lists");
        Self { intervals, task }
    }

    fn intervals(&self) -> Vec<f64> {
        self.intervals.lock().expect("intervals").clone()
    }
}

impl Drop for RenewalWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The exporter's histogram of `ns` counts what the test measured itself, each interval in
/// the buckets its length says. The two clocks read the same watch events a little apart
/// (more so on a loaded machine), so an interval within `TOLERANCE` of a bucket's bound may
/// fall on either side, and a renewal may have reached one of the two and not yet the other.
/// Renewals every 2 s and 6 s sit on bounds, which leaves those buckets free, but pins the
/// ones either side: nothing below, everything above.
fn assert_histogram_measures(s: &Scrape, ns: &str, measured: &[f64]) {
    const TOLERANCE: f64 = 0.5;
    let labels = [("namespace", ns), ("component", LEASE)];
    let count = renewal_count(s, ns).expect("count");
    let n = measured.len() as f64;
    assert!(
        (count - n).abs() <= 1.0,
        "counted {count}, measured {measured:?}"
    );
    for le in kubevirt_leader_exporter::history::RENEWAL_BUCKETS {
        let bucket = s
            .value(
                "kubevirt_leader_lease_renewal_interval_seconds_bucket",
                &[labels[0], labels[1], ("le", &le.to_string())],
            )
            .expect("bucket");
        let surely = measured.iter().filter(|i| **i <= le - TOLERANCE).count() as f64;
        let maybe = measured.iter().filter(|i| **i <= le + TOLERANCE).count() as f64;
        assert!(
            (surely - 1.0..=maybe + 1.0).contains(&bucket),
            "{ns}: bucket le={le} counts {bucket}, measured {measured:?}"
        );
    }
}

/// How many renewal intervals the histogram has counted for virt-operator in `ns`.
fn renewal_count(s: &Scrape, ns: &str) -> Option<f64> {
    s.value(
        "kubevirt_leader_lease_renewal_interval_seconds_count",
        &[("namespace", ns), ("component", LEASE)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_renewing_every_6s_shows_in_the_histogram_beside_one_renewing_every_2s() {
    const SLOW: &str = "struggling";
    let Some(t) = setup(&[]).await else { return };
    t.cluster.namespace(SLOW).await;
    t.plane.grant_elector_rbac(&t.cluster.client, SLOW).await;
    // The test's own watches start before the electors, as the exporter's did.
    let healthy_watch = RenewalWatch::start(t.cluster.client.clone(), NS, LEASE).await;
    let slow_watch = RenewalWatch::start(t.cluster.client.clone(), SLOW, LEASE).await;
    let _healthy = t.elector(A);
    let _struggling = t.plane.elector(SLOW, LEASE, B, &["--retry-period=6s"]);
    t.until("five intervals of the struggling leader", |s| {
        renewal_count(s, SLOW) >= Some(5.0)
    })
    .await;
    // Delivery times vary with load: what load cannot change is that each interval lands
    // in the buckets its measured length says, and that the 6 s leader's intervals are
    // fewer and typically longer than the 2 s leader's.
    let (s, slow) = renewals_at_rest(&t.http, t.exporter.addr, SLOW, LEASE).await;
    assert_histogram_of(&s, SLOW, LEASE, &slow);
    assert_histogram_measures(&s, SLOW, &slow_watch.intervals());
    let (s, healthy) = renewals_at_rest(&t.http, t.exporter.addr, NS, LEASE).await;
    assert_histogram_of(&s, NS, LEASE, &healthy);
    assert_histogram_measures(&s, NS, &healthy_watch.intervals());
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    common::report(&format!(
        "renewal intervals: retry 2 s -> mean {:.3} s, median {:.3} s over {} intervals; \
         retry 6 s -> mean {:.3} s, median {:.3} s over {} intervals",
        mean(&healthy),
        median(&healthy),
        healthy.len(),
        mean(&slow),
        median(&slow),
        slow.len()
    ));
    assert!(slow.len() >= 5, "{slow:?}");
    assert!(healthy.len() > slow.len(), "{healthy:?} {slow:?}");
    assert!(median(&healthy) < median(&slow), "{healthy:?} {slow:?}");
    // Both still lead: slow is not gone.
    assert_eq!(op(&s, "present"), Some(1.0));
    assert_eq!(s.operator("present", SLOW), Some(1.0));
}
