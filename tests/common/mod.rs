//! A test bed: the simulated API server, the exporter's library pointed at it through a
//! generated kubeconfig, and helpers that read `/metrics` over HTTP.
#![allow(dead_code)]

pub mod flood;
pub mod prometheus;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use kubevirt_leader_exporter::{Exporter, client_from_kubeconfig, config::Settings};
use kubevirt_leader_sim::{SimServer, Store, kubeconfig_for, lease, pod};

/// The repository: tests of every crate of the workspace share its files (deploy/, docs/).
pub fn repo() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .expect("the workspace's Cargo.lock above the crate")
}

/// One of the workspace's binaries, built for the tests: Cargo names only a crate's own to
/// its integration tests, and `cargo test` of the workspace builds them all.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        path.is_file(),
        "{} is not built: `cargo build --bin {name}` (scripts/test builds it)",
        path.display()
    );
    path
}

/// `command` without the package variables Cargo hands a test or `cargo run`: passed on to
/// a nested cargo, they would look like a changed environment to build scripts that watch
/// them (ring's watches CARGO_PKG_NAME), and it would compile ring and all above it again.
pub fn without_package_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| {
            k.starts_with("CARGO_PKG_")
                || matches!(
                    k,
                    "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_PRIMARY_PACKAGE"
                )
        }) {
            command.env_remove(key);
        }
    }
    command
}

pub const NS: &str = "kubevirt";
pub const OPERATOR: &str = "virt-operator";
pub const POD_A: &str = "virt-operator-a";
pub const POD_B: &str = "virt-operator-b";
/// Short leases keep the tests quick; the rules are the same as for 15 s.
pub const LEASE_SECONDS: i32 = 2;
pub const GRACE: Duration = Duration::from_secs(1);
/// How long to wait for something that must happen: generous, as these machines are shared.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Bed {
    pub sim: Option<SimServer>,
    pub store: Store,
    pub exporter: Exporter,
    pub http: reqwest::Client,
}

pub fn settings(namespaces: &[&str]) -> Settings {
    let mut s = Settings::with_defaults(GRACE);
    s.namespaces = namespaces.iter().map(|n| (*n).to_owned()).collect();
    s
}

/// An exporter watching a simulated API server at `api_url`.
pub async fn exporter_for(api_url: &str, settings: &Settings) -> Exporter {
    let client = client_from_kubeconfig(kubeconfig_for(api_url))
        .await
        .expect("client");
    Exporter::start(settings, client, std::future::pending())
        .await
        .expect("exporter starts")
}

impl Bed {
    pub async fn start(settings: Settings) -> Self {
        let store = Store::default();
        let sim = SimServer::start(store.clone()).await.expect("sim server");
        let exporter = exporter_for(&sim.url(), &settings).await;
        Self {
            sim: Some(sim),
            store,
            exporter,
            http: http(),
        }
    }

    /// The usual KubeVirt: two Ready virt-operator pods, `POD_A` holding the lease.
    pub fn seed_operator(&self, ns: &str) {
        self.store
            .apply(pod(ns, POD_A, &[("kubevirt.io", OPERATOR)], true));
        self.store
            .apply(pod(ns, POD_B, &[("kubevirt.io", OPERATOR)], true));
        self.store.apply(lease(ns, OPERATOR, POD_A, LEASE_SECONDS));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.exporter.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("request");
        let code = response.status().as_u16();
        (code, response.text().await.expect("body"))
    }

    pub async fn scrape(&self) -> Scrape {
        scrape(&self.http, self.exporter.addr).await
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn until_ready(&self) {
        let start = Instant::now();
        while self.get("/readyz").await.0 != 200 {
            assert!(start.elapsed() < PATIENCE, "timed out waiting for /readyz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Scrapes until `check` holds, or fails with the last scrape.
    pub async fn until(&self, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
        until(&self.http, self.exporter.addr, what, check).await
    }
}

/// Renews the operator lease in every namespace every 500 ms, as a live leader would.
pub fn spawn_renewer(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for ns in [NS, "openshift-cnv", "other"] {
                store.renew_lease(ns, OPERATOR);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// An HTTP client for the tests. reqwest is built without a TLS crypto provider of its own
/// (the exporter's ring is the only one): it is installed as the process default first.
pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().build().expect("an HTTP client")
}

/// Makes ring the process's default TLS crypto provider, once.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where an exporter serves: a `SocketAddr` is plain HTTP, [`Https`] is HTTPS.
pub trait Base: Copy + Send + Sync + 'static {
    fn url(&self, path: &str) -> String;
}

impl Base for SocketAddr {
    fn url(&self, path: &str) -> String {
        format!("http://{self}{path}")
    }
}

/// An exporter serving HTTPS at the address.
#[derive(Clone, Copy, Debug)]
pub struct Https(pub SocketAddr);

impl Base for Https {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.0)
    }
}

/// An HTTPS client builder that verifies the server with `ca` alone and presents
/// `identity` (certificate and key PEM) when given.
pub fn verifying_https(ca: &str, identity: Option<(&str, &str)>) -> reqwest::ClientBuilder {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca.as_bytes()).flatten());
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let (certs, key) = self::identity(cert, key);
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
}

/// A client certificate chain and key from their PEM text.
pub fn identity(
    cert: &str,
    key: &str,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    (
        certs,
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
    )
}

/// A client for a secured exporter as the shipped ServiceMonitor scrapes it: `token` as
/// bearer token (when given) and the server's certificate not verified, as with the
/// self-signed default (the kubelet's HTTPS probes do not verify either).
pub fn unverified_https(token: Option<&str>) -> reqwest::Client {
    let config = kubevirt_leader_exporter::tls::unverified_client_config(None).expect("TLS config");
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .tls_backend_preconfigured(std::sync::Arc::unwrap_or_clone(config))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Waits until the exporter at `addr` answers `/readyz` with 200.
pub async fn wait_serving(http: &reqwest::Client, addr: impl Base) {
    let start = Instant::now();
    while http
        .get(addr.url("/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            start.elapsed() < PATIENCE,
            "the exporter never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scrape and the renewal intervals `/status.json` lists for `component` in `ns` (oldest
/// first), read while no renewal came in between, so that both tell of the same intervals.
pub async fn renewals_at_rest(
    http: &reqwest::Client,
    addr: SocketAddr,
    ns: &str,
    component: &str,
) -> (Scrape, Vec<f64>) {
    let intervals = || async {
        let status = status_json(http, addr).await;
        let card = find_namespace_status(&status, component, ns)
            .cloned()
            .unwrap_or_default();
        card["renewals"]["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["interval_seconds"].as_f64())
            .collect::<Vec<f64>>()
    };
    let labels = [("namespace", ns), ("component", component)];
    let start = Instant::now();
    loop {
        let before = intervals().await;
        let s = scrape(http, addr).await;
        let after = intervals().await;
        let count = s.value(
            "kubevirt_leader_lease_renewal_interval_seconds_count",
            &labels,
        );
        if before == after && count == Some(after.len() as f64) {
            return (s, after);
        }
        assert!(start.elapsed() < PATIENCE, "renewals never at rest");
    }
}

/// Asserts that the served renewal histogram of `component` in `ns` counts `intervals`,
/// each in the buckets its length says, and sums them.
pub fn assert_histogram_of(s: &Scrape, ns: &str, component: &str, intervals: &[f64]) {
    let labels = [("namespace", ns), ("component", component)];
    for le in kubevirt_leader_exporter::history::RENEWAL_BUCKETS {
        let within = intervals.iter().filter(|i| **i <= le).count();
        let bucket = s.value(
            "kubevirt_leader_lease_renewal_interval_seconds_bucket",
            &[labels[0], labels[1], ("le", &le.to_string())],
        );
        assert_eq!(bucket, Some(within as f64), "le={le} {intervals:?}");
    }
    let sum = s
        .value(
            "kubevirt_leader_lease_renewal_interval_seconds_sum",
            &labels,
        )
        .expect("sum");
    let total: f64 = intervals.iter().sum();
    assert!((sum - total).abs() < 1e-3, "{sum} against {intervals:?}");
}

pub async fn scrape(http: &reqwest::Client, addr: impl Base) -> Scrape {
    let response = http.get(addr.url("/metrics")).send().await.expect("scrape");
    let code = response.status().as_u16();
    let body = response.text().await.expect("body");
    assert_eq!(code, 200, "{body}");
    Scrape(body)
}

/// Scrapes `addr` until `check` holds, or fails with the last scrape.
pub async fn until(
    http: &reqwest::Client,
    addr: impl Base,
    what: &str,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    until_within(PATIENCE, http, addr, what, check).await
}

/// [`until`], waiting at most `patience`.
pub async fn until_within(
    patience: Duration,
    http: &reqwest::Client,
    addr: impl Base,
    what: &str,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let start = Instant::now();
    loop {
        let scrape = scrape(http, addr).await;
        if check(&scrape) {
            return scrape;
        }
        assert!(
            start.elapsed() < patience,
            "timed out waiting for {what}; last scrape:\n{}",
            scrape.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of one scrape.
pub struct Scrape(pub String);

impl Scrape {
    /// The value of the series `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                if metric != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                all.then(|| value.parse().ok()).flatten()
            })
    }

    /// The value of `kubevirt_leader_<name>` for virt-operator in `ns`.
    pub fn operator(&self, name: &str, ns: &str) -> Option<f64> {
        self.value(
            &format!("kubevirt_leader_{name}"),
            &[("namespace", ns), ("component", OPERATOR)],
        )
    }

    pub fn present(&self, ns: &str) -> Option<f64> {
        self.operator("present", ns)
    }

    /// The seeded KubeVirt in `ns` is fully seen: a leader, and both pods Ready. The pod and
    /// lease watches are separate streams, so one alone says nothing of the other.
    pub fn settled(&self, ns: &str) -> bool {
        self.present(ns) == Some(1.0) && self.operator("pods_ready", ns) == Some(2.0)
    }

    /// The holder named by `holder_info` for virt-operator in `ns`.
    pub fn holder(&self, ns: &str) -> Option<String> {
        self.holder_of(ns, OPERATOR)
    }

    /// The holder `kubevirt_leader_holder_info` names for `component` in `ns`.
    pub fn holder_of(&self, ns: &str, component: &str) -> Option<String> {
        self.0
            .lines()
            .filter(|l| l.starts_with("kubevirt_leader_holder_info{"))
            .filter(|l| {
                l.contains(&format!("namespace=\"{ns}\""))
                    && l.contains(&format!("component=\"{component}\""))
            })
            .find_map(|l| {
                let start = l.find("holder=\"")? + "holder=\"".len();
                let end = l[start..].find('"')?;
                Some(l[start..start + end].to_owned())
            })
    }

    /// The value of `kubevirt_leader_<name>` for `component` in `ns`.
    pub fn of(&self, name: &str, ns: &str, component: &str) -> Option<f64> {
        self.value(
            &format!("kubevirt_leader_{name}"),
            &[("namespace", ns), ("component", component)],
        )
    }

    /// No per-component series at all.
    pub fn blind(&self) -> bool {
        const PER_COMPONENT: [&str; 8] = [
            "pods",
            "pods_ready",
            "present",
            "holder_info",
            "holder_ready",
            "lease_age_seconds",
            "lease_duration_seconds",
            "lease_transitions",
        ];
        !self.0.lines().any(|l| {
            PER_COMPONENT.iter().any(|n| {
                l.starts_with(&format!("kubevirt_leader_{n}{{"))
                    || l.starts_with(&format!("kubevirt_leader_{n} "))
            })
        })
    }
}

/// A loopback address with nothing listening on it (yet).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Runs `promtool check metrics` over a scrape.
pub fn promtool_check(text: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write");
    drop(stdin);
    child.wait_with_output().expect("promtool output")
}

/// A fresh temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kle-{name}-{}-{}",
        std::process::id(),
        free_addr().port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The exporter binary against a simulated API server, and its kubeconfig.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    _dir: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_binary(sim: &SimServer) -> Binary {
    let dir = temp_dir("bin");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::to_string(&sim.kubeconfig()).expect("a kubeconfig is JSON too"),
    )
    .expect("write");
    let addr = free_addr();
    // Cargo names the binary to integration tests only; the benchmark never starts it here.
    let Some(binary) = option_env!("CARGO_BIN_EXE_kubevirt-leader-exporter") else {
        panic!("start_binary is for integration tests");
    };
    let child = std::process::Command::new(binary)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--listen={addr}"))
        .arg("--auth=none")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start exporter");
    Binary {
        child,
        addr,
        _dir: dir,
    }
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// What a process really runs as, from /proc.
#[derive(Debug)]
pub struct ProcessFacts {
    pub uid: String,
    /// The primary group.
    pub gid: String,
    /// Effective capabilities, in hex.
    pub cap_eff: String,
    pub no_new_privs: String,
    /// 0 none, 1 strict, 2 a filter.
    pub seccomp: String,
    pub root_read_only: bool,
}

pub fn process_facts(pid: u32) -> ProcessFacts {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root_read_only = mountinfo.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.get(4) == Some(&"/")
            && fields
                .get(5)
                .is_some_and(|o| o.split(',').any(|f| f == "ro"))
    });
    ProcessFacts {
        uid: field("Uid"),
        gid: field("Gid"),
        cap_eff: field("CapEff"),
        no_new_privs: field("NoNewPrivs"),
        seccomp: field("Seccomp"),
        root_read_only,
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The folder of a process's cgroup (v1) memory controller.
pub fn memory_cgroup(pid: u32) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })
        .expect("a memory cgroup (v1)");
    PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

/// How long one sample waits for its answer. A scrape that is slow on a loaded machine is
/// still an answer; an exporter that says nothing for this long is not answering.
pub const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

/// `/metrics` from the exporter at `addr`, or `None` while it does not answer.
pub async fn try_scrape(http: &reqwest::Client, addr: impl Base) -> Option<Scrape> {
    let response = http
        .get(addr.url("/metrics"))
        .timeout(ANSWER_PATIENCE)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(Scrape(response.text().await.ok()?))
}

/// Scrapes every 250 ms in the background until finished, keeping what `read` makes of each
/// scrape: it is given when the scrape was sent and the answer (`None`: the exporter did not
/// answer).
pub struct Sampler<T> {
    stop: tokio::sync::watch::Sender<bool>,
    taken: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Sampler<T> {
    pub fn start(
        http: reqwest::Client,
        addr: impl Base,
        read: impl Fn(Instant, Option<Scrape>) -> T + Send + Sync + 'static,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (count, taken) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !*stopped.borrow_and_update() {
                let sent = Instant::now();
                let scrape = try_scrape(&http, addr).await;
                samples.push(read(sent, scrape));
                count.send_replace(samples.len());
                let _ = tokio::time::timeout(Duration::from_millis(250), stopped.changed()).await;
            }
            samples
        });
        Self { stop, taken, task }
    }

    /// Waits until `n` more samples have been taken: a window measured in samples, which a
    /// slow machine stretches instead of thinning.
    pub async fn more(&mut self, n: usize) {
        let target = *self.taken.borrow_and_update() + n;
        self.taken
            .wait_for(|taken| *taken >= target)
            .await
            .expect("sampler");
    }

    /// Stops after the sample in progress, if any.
    pub async fn finish(self) -> Vec<T> {
        let _ = self.stop.send(true);
        self.task.await.expect("sampler")
    }
}

/// What one sample said of a component's leader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reading {
    /// The exporter did not answer.
    Unanswered,
    /// It answered without the series: it is blind, or has not listed yet.
    NoSeries,
    /// `kubevirt_leader_present` had this value.
    Present(f64),
}

impl Reading {
    pub fn of(scrape: Option<&Scrape>, present: impl Fn(&Scrape) -> Option<f64>) -> Self {
        match scrape {
            None => Reading::Unanswered,
            Some(s) => present(s).map_or(Reading::NoSeries, Reading::Present),
        }
    }
}

/// Every one of at least `min` samples was answered and read a live leader: what the
/// exporter says while it keeps running and a leader hands over. `reading` gives what a
/// sample said.
pub fn assert_always_led<S: std::fmt::Debug>(
    samples: &[S],
    reading: impl Fn(&S) -> Reading,
    min: usize,
    what: &str,
) {
    assert!(
        samples.len() >= min,
        "{what}: {} samples, fewer than {min}",
        samples.len()
    );
    let wrong: Vec<&S> = samples
        .iter()
        .filter(|s| reading(s) != Reading::Present(1.0))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} samples did not read a live leader, first: {:?}",
        wrong.len(),
        samples.len(),
        wrong.first()
    );
}

/// Written past the test harness's capture, for the figures a run reports.
pub fn report(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Seconds since the epoch, with their fraction.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// `/status.json` from the exporter at `addr`.
pub async fn status_json(http: &reqwest::Client, addr: impl Base) -> serde_json::Value {
    http.get(addr.url("/status.json"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON")
}

/// The entry of `component` in `ns` in a `/status.json`, if there is one.
pub fn find_namespace_status<'a>(
    status: &'a serde_json::Value,
    component: &str,
    ns: &str,
) -> Option<&'a serde_json::Value> {
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["component"] == component)
        .flat_map(|c| c["namespaces"].as_array().into_iter().flatten())
        .find(|n| n["namespace"] == ns)
}

/// The entry of `component` in `ns` in a `/status.json`.
pub fn namespace_status<'a>(
    status: &'a serde_json::Value,
    component: &str,
    ns: &str,
) -> &'a serde_json::Value {
    find_namespace_status(status, component, ns)
        .unwrap_or_else(|| panic!("no {component} in {ns}: {status:#}"))
}

/// The kinds of the events of `component` in `ns`, oldest first.
pub fn event_kinds(status: &serde_json::Value, component: &str, ns: &str) -> Vec<String> {
    namespace_status(status, component, ns)["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// `kubectl kustomize dir` (relative to the repository, or absolute): the objects it
/// renders, in order.
pub fn kustomize(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .current_dir(repo())
        .output()
        .expect("kubectl must be installed");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(&String::from_utf8_lossy(&out.stdout))
            .expect("valid YAML documents");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// [`kustomize`], with the objects also written to `file` as one stream that `kubectl
/// apply -f`, `get -f` and `delete -f` take (each a JSON document, which is YAML).
pub fn kustomize_to(dir: &std::path::Path, file: &std::path::Path) -> Vec<serde_json::Value> {
    let docs = kustomize(dir);
    let stream: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).expect("JSON")))
        .collect();
    std::fs::write(file, stream).expect("write the rendered objects");
    docs
}

/// How many of `samples`, each sent at `sent(sample)`, were sent between `from` and `to`.
pub fn sent_between<S>(
    samples: &[S],
    sent: impl Fn(&S) -> Instant,
    from: Instant,
    to: Instant,
) -> usize {
    samples
        .iter()
        .filter(|s| (from..=to).contains(&sent(s)))
        .count()
}
