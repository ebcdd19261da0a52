//! The benchmark: builds the release binary, runs it against the simulated API server and
//! prints one table of footprint, scrape throughput (against a static floor), change-to-metric
//! latency, idle cost and start-up time. With `KUBEBUILDER_ASSETS` (as for the control-plane
//! tests) it then runs the binary against a real kube-apiserver and etcd, and counts the heap
//! an extra tracked pod costs the exporter, in this process with a counting allocator, and
//! what `--auth=kubernetes` costs: RSS, scrape throughput over HTTPS with a cached token
//! against a floor that serves TLS too, and the TokenReviews a flood of made-up tokens
//! causes.
//!
//!     cargo run --release --example bench
//!
//! Needs `wrk` (Debian package `wrk`) as the load generator. `BENCH_ONLY=presets` measures only
//! what the presets cost, `BENCH_ONLY=connections` only the secured exporter's scrape
//! throughput and its memory under a flood of connections. `BENCH_TARGET=x86_64-unknown-linux-musl`
//! measures the static binary the Dockerfile ships instead of the host's glibc build;
//! `BENCH_BINARY=PATH` a binary built otherwise, such as one with symbols for `perf record`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/discovery.rs"]
mod discovery;
#[path = "../tests/envtest/mod.rs"]
mod envtest;
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use envtest::{
    ADMIN_TOKEN, Cluster, ControlPlane, EXPORTER_TOKEN, EXPORTER_USER, ExporterProcess, ServingCert,
};
use kubevirt_leader_exporter::{
    Exporter,
    config::{Preset, Settings},
    heap, http,
    metrics::PREFIX,
    tls,
};
use kubevirt_leader_sim::{SimServer, Store, lease, pod};

// The exporter's own counting allocator, as in the binary: the heap an extra tracked pod
// costs is read off the live heap rather than guessed from RSS.
#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator(std::alloc::System);

const NS: &str = "kubevirt";
const OPERATOR: &str = "virt-operator";
const PODS: [&str; 2] = ["virt-operator-a", "virt-operator-b"];
/// A little over a minute: each quiet pods watch is checked once a minute by default, so the
/// window holds exactly one check of each.
const IDLE: Duration = Duration::from_secs(65);
/// The exporter's watches with the built-in components: pods and leases of each of three.
const WATCHES: u64 = 6;
const CHANGES: usize = 1000;
const EXTRA_MATCHING: usize = 998;
const NON_MATCHING: usize = 10_000;
const WRK_SECONDS: u32 = 10;
const WRK_CONNECTIONS: u32 = 64;
/// The flood of made-up bearer tokens: how long, and from how many tasks at once.
const FLOOD: Duration = Duration::from_secs(10);
const FLOOD_TASKS: usize = 32;
/// How often the well-behaved scrapers scrape during the flood.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);
/// `--auth-reviews-per-second`'s default: the rate, and the burst, of reviews.
const REVIEWS_PER_SECOND: f64 = 10.0;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("floor") {
        let tls = args.get(4).zip(args.get(5));
        return floor(&args[2], Path::new(&args[3]), tls);
    }
    // reqwest is built without a crypto provider and will not build even a plain-HTTP client
    // without a process default: the one the exporter uses.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider is already installed"))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run())
}

/// The floor: a minimal axum server returning a static body, in a process of its own like
/// the exporter. With a certificate and key it serves HTTPS through the library's own TLS
/// server, so that the secured exporter is compared with the same handshakes and record
/// layer, not with another TLS stack.
fn floor(addr: &str, body: &Path, tls: Option<(&String, &String)>) -> anyhow::Result<()> {
    let body: &'static str = std::fs::read_to_string(body)?.leak();
    let addr: SocketAddr = addr.parse()?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let app =
            axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        match tls {
            None => axum::serve(listener, app).await?,
            Some((cert, key)) => {
                let cert = tls::ReloadingCert::new(Path::new(cert), Path::new(key))?;
                let config = tls::server_config(Arc::new(cert), None)?;
                let limits = http::Limits::DEFAULT;
                http::serve(listener, app, Some(config), limits, std::future::pending()).await;
            }
        }
        Ok(())
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// User plus system CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Wrk {
    rps: f64,
    p50: String,
    p99: String,
}

/// Loads `url` with wrk, sending `token` as bearer token when given (wrk does not verify
/// HTTPS servers).
fn wrk(url: &str, token: Option<&str>) -> anyhow::Result<Wrk> {
    let header = token.map(|t| ["-H".to_owned(), format!("Authorization: Bearer {t}")]);
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
        ])
        .args(header.iter().flatten())
        .arg(url)
        .output()
        .context("wrk is needed: apt-get install wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("wrk printed no {prefix}: {text}"))
    };
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors: {text}");
    }
    Ok(Wrk {
        rps: field("Requests/sec:")?.parse()?,
        p50: field("50%")?,
        p99: field("99%")?,
    })
}

/// The rows of one exporter against its floor, named `ours` and `floor`.
fn print_scrape_rows((ours_name, floor_name): (&str, &str), bytes: usize, ours: &Wrk, base: &Wrk) {
    println!(
        "| /metrics, {ours_name} ({bytes} bytes) | {:.0} req/s, p50 {}, p99 {} | |",
        ours.rps, ours.p50, ours.p99
    );
    println!(
        "| /metrics, {floor_name} (static body, same size) | {:.0} req/s, p50 {}, p99 {} | |",
        base.rps, base.p50, base.p99
    );
    println!(
        "| scrape throughput, {ours_name} / {floor_name} | {:.2} | ≥ 0.7 |",
        ours.rps / base.rps
    );
}

/// Loads `metrics`, then the floor serving the same body; returns the body and both loads.
/// `secured` (certificate, token): both serve HTTPS with that certificate, and wrk sends the
/// token; `http` must then trust the certificate and send the token itself.
async fn against_the_floor(
    http: &reqwest::Client,
    metrics: &str,
    dir: &Path,
    secured: Option<(&ServingCert, &str)>,
) -> anyhow::Result<(String, Wrk, Wrk)> {
    let (status, body) = get(http, metrics).await?;
    if status != 200 {
        bail!("{metrics} answered {status}: {body}");
    }
    let body_file = dir.join("body.txt");
    std::fs::write(&body_file, &body)?;
    let ours = wrk(metrics, secured.map(|(_, token)| token))?;
    let floor_addr = free_addr()?;
    let mut floor = Command::new(std::env::current_exe()?);
    floor.args([
        "floor",
        &floor_addr.to_string(),
        &body_file.display().to_string(),
    ]);
    if let Some((cert, _)) = secured {
        floor.args([&cert.cert, &cert.key]);
    }
    let _floor = Killed(floor.spawn()?);
    let scheme = if secured.is_some() { "https" } else { "http" };
    let floor_url = format!("{scheme}://{floor_addr}/metrics");
    wait_for(http, &floor_url, |_| true).await?;
    let base = wrk(&floor_url, None)?;
    Ok((body, ours, base))
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let r = http.get(url).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = get(http, url).await
            && check(&body)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("timed out waiting on {url}");
        }
        tokio::task::yield_now().await;
    }
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn run() -> anyhow::Result<()> {
    let binary = support::build_release()?;
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty());
    // `BENCH_ONLY=presets` measures what the presets cost, and nothing else.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "presets") {
        let assets = assets.context("the presets are measured on a real kube-apiserver")?;
        return presets_only(&binary, Path::new(&assets)).await;
    }
    // `BENCH_ONLY=connections` measures the secured exporter under a flood of connections.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "connections") {
        let assets = assets.context("the flood is measured on a real kube-apiserver")?;
        return connections_only(&binary, Path::new(&assets)).await;
    }
    // `BENCH_ONLY=discovery` measures what --discover costs, with 1,000 nodes.
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "discovery") {
        let assets = assets.context("discovery is measured on a real kube-apiserver")?;
        return discovery_only(&binary, Path::new(&assets)).await;
    }
    against_the_simulated_api_server(&binary).await?;
    match assets {
        Some(assets) => against_a_real_api_server(&binary, Path::new(&assets)).await,
        None => {
            eprintln!("KUBEBUILDER_ASSETS is not set: no run against a real kube-apiserver");
            Ok(())
        }
    }
}

async fn presets_only(binary: &Path, assets: &Path) -> anyhow::Result<()> {
    let plane = ControlPlane::start(assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    let cluster = Cluster { client: admin };
    let kubeconfig = plane.kubeconfig_file(EXPORTER_TOKEN);
    stack_cost(binary, &plane, &cluster, &kubeconfig).await
}

/// What --discover costs against the default install's exporter, in a cluster of
/// [`discovery::NODES`] node Leases and [`discovery::ELECTIONS`] leader elections; then how
/// soon an election that starts while it runs has its first series.
async fn discovery_only(binary: &Path, assets: &Path) -> anyhow::Result<()> {
    use discovery::{ELECTIONS, NODES};
    let plane = ControlPlane::start(assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    plane
        .grant_exporter_cluster_role(&admin, "deploy/discover-leaders/clusterrole.yaml")
        .await;
    let kubeconfig = plane.kubeconfig_file(EXPORTER_TOKEN);
    eprintln!("{NODES} node Leases, {ELECTIONS} elections...");
    discovery::populate(&admin).await?;
    for i in 0..ELECTIONS {
        discovery::start_election(&admin, i).await?;
    }
    let _renewing = discovery::renew_all(&admin, ELECTIONS);
    println!();
    println!(
        "Discovery against a real kube-apiserver: {NODES} node Leases renewed every 10 s, \
         {ELECTIONS} leader Leases renewed every 2 s (a Deployment of two Ready pods each); \
         release binary, --auth=none"
    );
    println!();
    println!(
        "| exporter | watches opened | events/s reaching it | API requests in {} s idle | RSS {} s after start | heap | series |",
        IDLE.as_secs(),
        SETTLE.as_secs()
    );
    println!("|---|---|---|---|---|---|---|");
    let mut costs = Vec::new();
    for (name, args) in [("default", &[][..]), ("`--discover`", &["--discover"][..])] {
        let cost = exporter_cost(binary, &plane, &kubeconfig, args).await?;
        println!(
            "| {name} | {} | {:.1} | {} | {} | {:.0} KiB | {} |",
            cost.watches,
            cost.events_per_second,
            cost.idle_requests,
            mib(cost.rss),
            cost.heap_bytes / 1024.0,
            cost.series
        );
        costs.push(cost);
    }
    let per = |f: fn(&Cost) -> f64| (f(&costs[1]) - f(&costs[0])) / ELECTIONS as f64;
    println!(
        "| per discovered component | {:.0} | | | {:.1} KiB | {:.1} KiB | |",
        per(|c| c.watches as f64),
        per(|c| c.rss as f64),
        per(|c| c.heap_bytes) / 1024.0
    );
    first_series(binary, &kubeconfig, &admin).await
}

/// Elections started while a discovering exporter runs: the time from creating each Lease
/// to its first series.
async fn first_series(
    binary: &Path,
    kubeconfig: &Path,
    admin: &kube::Client,
) -> anyhow::Result<()> {
    const NEW: usize = 10;
    let started = Instant::now();
    let exporter =
        ExporterProcess::spawn(binary, kubeconfig, &["--discover", "--max-discovered=200"]);
    let http = reqwest::Client::new();
    let metrics = format!("http://{}/metrics", exporter.addr);
    let all = |body: &str| {
        body.lines()
            .filter(|l| {
                l.starts_with("kubevirt_leader_present{") && l.contains("discovered=\"true\"")
            })
            .count()
    };
    wait_for(&http, &metrics, |body| all(body) >= discovery::ELECTIONS).await?;
    let to_all = started.elapsed();
    let mut took = Vec::new();
    for i in discovery::ELECTIONS..discovery::ELECTIONS + NEW {
        let (ns, name) = discovery::election(i);
        let want = [
            format!("component=\"{name}\""),
            format!("namespace=\"{ns}\""),
            "discovered=\"true\"".to_owned(),
        ];
        discovery::start_election(admin, i).await?;
        let lease_at = Instant::now();
        wait_for(&http, &metrics, |body| {
            body.lines().any(|l| {
                l.starts_with("kubevirt_leader_present{")
                    && l.ends_with(" 1")
                    && want.iter().all(|w| l.contains(w.as_str()))
            })
        })
        .await?;
        took.push(lease_at.elapsed());
    }
    took.sort();
    println!();
    println!(
        "| start to all {} elections judged | {:.2} s |",
        discovery::ELECTIONS,
        to_all.as_secs_f64()
    );
    println!(
        "| new Lease to its first series ({NEW} elections started while running) | median {:.0} ms, max {:.0} ms |",
        percentile(&took, 0.5).as_secs_f64() * 1000.0,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The secured exporter's scrape throughput against the TLS floor, then its resident memory
/// under the flood of connections the test `tests/connections.rs` sends
/// ([`common::flood`]), and whether the probe and a scraper were answered meanwhile.
async fn connections_only(binary: &Path, assets: &Path) -> anyhow::Result<()> {
    use common::flood::{FLOOD_HEAD_BYTES, FLOODERS, Flood, PIPELINED, STALLERS};
    let plane = ControlPlane::start(assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    let cluster = Cluster { client: admin };
    let kubeconfig = plane.kubeconfig_file(EXPORTER_TOKEN);
    let dir = std::env::temp_dir().join(format!("kle-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert = ServingCert::new(&dir);
    plane.prometheus_token_file(&cluster.client, &dir).await;
    let args = cert.exporter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let exporter = ExporterProcess::spawn(binary, &kubeconfig, &args);
    let pid = exporter.process.0.id();
    let base = format!("https://{}", exporter.addr);
    let metrics = format!("{base}/metrics");
    let (scraper, token) = fresh_scraper(&plane, &cluster, &cert).await?;
    wait_for(&scraper, &format!("{base}/readyz"), |_| true).await?;
    expect_status(&scraper, &metrics, 200).await?;
    eprintln!("secured exporter against the TLS floor...");
    let (body, ours, floor) =
        against_the_floor(&scraper, &metrics, &dir, Some((&cert, &token))).await?;
    tokio::time::sleep(SETTLE.saturating_sub(started.elapsed())).await;

    eprintln!("{FLOODERS} oversized heads and {STALLERS} clients that stop reading...");
    let ca = std::fs::read_to_string(&cert.ca)?;
    // A new connection for every request, as the kubelet's probes make.
    let fresh = common::verifying_https(&ca, None)
        .pool_max_idle_per_host(0)
        .build()?;
    let hold = http::Limits::DEFAULT.write_timeout + Duration::from_secs(5);
    let flood = common::flood::flood(exporter.addr, pid, &base, fresh, &token, hold).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = support::rss_kib(pid)?;
    let answered = |samples: &[common::flood::Sample]| {
        let ok = samples.iter().filter(|s| s.1 == Ok(200)).count();
        format!(
            "{ok}/{} answered 200, slowest {:.1?}",
            samples.len(),
            Flood::slowest(samples)
        )
    };
    println!();
    println!(
        "Under a flood of connections (real kube-apiserver, --auth=kubernetes, default limits), release binary:"
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    print_scrape_rows(("secured exporter", "TLS floor"), body.len(), &ours, &floor);
    println!("| RSS before the flood | {} | |", mib(flood.rss_before));
    println!(
        "| peak RSS (VmHWM): {FLOODERS} TLS connections sending {FLOOD_HEAD_BYTES} bytes of headers each, {STALLERS} asking for the status page {PIPELINED} times and reading nothing | {} | ≤ 32 MiB |",
        mib(flood.peak)
    );
    println!("| RSS 5 s after the flood | {} | |", mib(rss_after));
    println!(
        "| oversized heads answered 431 | {}/{FLOODERS} in {:.1} s | all |",
        flood.refused_heads(),
        flood.heads_took.as_secs_f64()
    );
    println!(
        "| clients that stopped reading, cut off | {}/{STALLERS} | all |",
        flood.cut_off
    );
    println!(
        "| scrapes with a bound token during the flood ({:.1} s), each on a new connection | {} | all 200 |",
        flood.took.as_secs_f64(),
        answered(&flood.scrapes)
    );
    println!(
        "| `/livez` during the flood, each on a new connection | {} | all 200 |",
        answered(&flood.probes)
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

async fn against_the_simulated_api_server(binary: &Path) -> anyhow::Result<()> {
    let store = Store::default();
    let sim = SimServer::start(store.clone()).await?;
    for name in PODS {
        store.apply(pod(NS, name, &[("kubevirt.io", OPERATOR)], true));
    }
    store.apply(lease(NS, OPERATOR, PODS[0], 15));
    let renewer = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                store.renew_lease(NS, OPERATOR);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let dir = std::env::temp_dir().join(format!("kle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_json::to_string(&sim.kubeconfig())?)?;
    let addr = free_addr()?;
    let metrics = format!("http://{addr}/metrics");
    let http = reqwest::Client::new();

    // Start to ready.
    let started = Instant::now();
    let exporter = Killed(
        Command::new(binary)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--listen={addr}"))
            // Plain HTTP and open paths, as these rows have always measured: the cost of
            // authentication is measured against the real API server below.
            .arg("--auth=none")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let pid = exporter.0.id();
    loop {
        if let Ok((200, _)) = get(&http, &format!("http://{addr}/readyz")).await {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the exporter never became ready");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start_to_ready = started.elapsed();
    let rss_start = support::rss_kib(pid)?;

    // Idle: only the leader's renewals, as in a quiet cluster. /readyz turns 200 when every
    // list has completed, a moment before the watches that follow the lists reach the
    // server: wait for those, or they would be counted as idle traffic.
    let opening = sim.faults.requests();
    let expected = 2 * WATCHES;
    let waited = Instant::now();
    while sim.faults.requests() < expected {
        if waited.elapsed() > Duration::from_secs(10) {
            bail!("{opening} requests at ready, never the {expected} lists and watches");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("idle for {} s...", IDLE.as_secs());
    let (requests_before, cpu_before) = (sim.faults.requests(), cpu_seconds(pid)?);
    tokio::time::sleep(IDLE).await;
    let idle_requests = sim.faults.requests() - requests_before;
    let idle_cpu = cpu_seconds(pid)? - cpu_before;
    let rss_idle = support::rss_kib(pid)?;

    // Scrape throughput against the floor.
    eprintln!("scrape load, exporter and floor...");
    let (body, ours, base) = against_the_floor(&http, &metrics, &dir, None).await?;

    // Change to metric.
    eprintln!("{CHANGES} changes...");
    let mut delays = Vec::with_capacity(CHANGES);
    let ready_series =
        format!("kubevirt_leader_pods_ready{{component=\"{OPERATOR}\",namespace=\"{NS}\"}}");
    for i in 0..CHANGES {
        let t0 = Instant::now();
        if i % 2 == 0 {
            let holder = PODS[(i / 2 + 1) % 2];
            store.take_lease(NS, OPERATOR, holder);
            let want = format!("holder=\"{holder}\"");
            wait_for(&http, &metrics, |b| b.contains(&want)).await?;
        } else {
            let ready = (i / 2) % 2 == 1;
            store.set_pod_ready(NS, PODS[1], ready);
            let want = if ready { 2.0 } else { 1.0 };
            wait_for(&http, &metrics, |b| value(b, &ready_series) == Some(want)).await?;
        }
        delays.push(t0.elapsed());
    }
    delays.sort();

    // Scale: 1,000 matching pods, 10,000 others in the same namespace.
    eprintln!("adding {EXTRA_MATCHING} matching and {NON_MATCHING} non-matching pods...");
    let sent_before = sim.faults.objects_sent();
    for i in 0..EXTRA_MATCHING {
        store.apply(pod(
            NS,
            &format!("virt-operator-extra-{i:04}"),
            &[("kubevirt.io", OPERATOR)],
            true,
        ));
    }
    for i in 0..NON_MATCHING {
        store.apply(pod(NS, &format!("other-{i:05}"), &[("app", "other")], true));
    }
    let pods_series =
        format!("kubevirt_leader_pods{{component=\"{OPERATOR}\",namespace=\"{NS}\"}}");
    let total = (EXTRA_MATCHING + PODS.len()) as f64;
    wait_for(&http, &metrics, |b| value(b, &pods_series) == Some(total)).await?;
    let sent_for_scale = sim.faults.objects_sent() - sent_before;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_scaled = support::rss_kib(pid)?;
    let per_pod = (rss_scaled.saturating_sub(rss_idle) * 1024) as f64 / EXTRA_MATCHING as f64;
    // A full re-list of everything, as after a restart of the watches.
    sim.faults.gone_on_resume(6);
    sim.faults.close_watches();
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_for(&http, &metrics, |b| value(b, &pods_series) == Some(total)).await?;
    let rss_relisted = support::rss_kib(pid)?;
    let per_pod_relisted =
        (rss_relisted.saturating_sub(rss_idle) * 1024) as f64 / EXTRA_MATCHING as f64;
    renewer.abort();

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let binary_size = std::fs::metadata(binary)?.len();
    println!(
        "kubevirt-leader-exporter benchmark: release binary ({:.1} MiB), {cpu}, {} cores",
        binary_size as f64 / 1048576.0,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| RSS after start, 2 pods | {} | ≤ 10 MiB |",
        mib(rss_start)
    );
    println!(
        "| RSS after {} s, 2 pods | {} | ≤ 10 MiB |",
        IDLE.as_secs(),
        mib(rss_idle)
    );
    println!(
        "| RSS with {} matching + {NON_MATCHING} non-matching pods | {} | |",
        EXTRA_MATCHING + 2,
        mib(rss_scaled)
    );
    println!("| memory per extra tracked pod | {per_pod:.0} bytes | ≤ 1 KiB |");
    println!(
        "| RSS after a full re-list of them | {} ({per_pod_relisted:.0} bytes per extra pod) | |",
        mib(rss_relisted)
    );
    println!(
        "| objects the API server sent while {EXTRA_MATCHING} matching and {NON_MATCHING} non-matching pods were added | {sent_for_scale} | no non-matching pod |"
    );
    print_scrape_rows(("exporter", "floor"), body.len(), &ours, &base);
    println!(
        "| change to metric over {CHANGES} changes (holder, readiness) | p50 {:.2} ms, p99 {:.2} ms | p99 ≤ 50 ms |",
        percentile(&delays, 0.5).as_secs_f64() * 1000.0,
        percentile(&delays, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| idle {} s (leader renewing every 2 s): API requests, CPU | {idle_requests} requests, {idle_cpu:.2} CPU s | the open watches, and one list per quiet pods watch per minute (3) |",
        IDLE.as_secs()
    );
    println!(
        "| start to /readyz 200 | {:.0} ms | ≤ 500 ms |",
        start_to_ready.as_secs_f64() * 1000.0
    );
    println!(
        "\n(load: wrk -t2 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s; the simulated API server runs in the benchmark's process)"
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// How long the exporter runs against the real API server before its RSS is read.
const SETTLE: Duration = Duration::from_secs(30);

/// The release binary against a real kube-apiserver and etcd, as a user bound to the shipped
/// ClusterRole: RSS with KubeVirt's two operator pods, and scrape throughput against the
/// floor, without authentication and then with it. Then the exporter's library in this
/// process, counting the heap that 998 more tracked pods cost it.
async fn against_a_real_api_server(binary: &Path, assets: &Path) -> anyhow::Result<()> {
    let plane = ControlPlane::start(assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    let cluster = Cluster { client: admin };
    cluster.namespace(NS).await;
    for name in PODS {
        cluster.pod(NS, name, true).await;
    }
    cluster.lease(NS, PODS[0], 15).await;
    let renewer = cluster.renew_every_2s(NS, PODS[0]);
    let kubeconfig = plane.kubeconfig_file(EXPORTER_TOKEN);

    eprintln!(
        "real kube-apiserver: {} s with two pods...",
        SETTLE.as_secs()
    );
    let exporter = ExporterProcess::spawn(binary, &kubeconfig, &[]);
    let pid = exporter.process.0.id();
    tokio::time::sleep(SETTLE).await;
    let rss = support::rss_kib(pid)?;
    let metrics = format!("http://{}/metrics", exporter.addr);
    let http = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("kle-bench-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (body, ours, base) = against_the_floor(&http, &metrics, &dir, None).await?;
    drop(exporter);

    eprintln!(
        "real kube-apiserver, --auth=kubernetes: {} s, scrape load, flood of made-up tokens...",
        SETTLE.as_secs()
    );
    let secured = secured_exporter(binary, &plane, &cluster, &kubeconfig, &dir).await?;

    eprintln!("heap per tracked pod, {EXTRA_MATCHING} more pods...");
    let (per_pod, live_two, live_many) = heap_per_pod(&plane, &cluster, &http).await?;
    renewer.abort();
    println!();
    println!("Against a real kube-apiserver (v1.20, etcd), release binary:");
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| RSS {} s after start, KubeVirt's two operator pods (--auth=none) | {} | ≤ 8 MiB |",
        SETTLE.as_secs(),
        mib(rss)
    );
    println!(
        "| RSS {} s after start with --auth=kubernetes (HTTPS, token cached: 5 scrapes first), same two pods | {} | compare with the row above |",
        SETTLE.as_secs(),
        mib(secured.rss)
    );
    print_scrape_rows(("exporter", "floor"), body.len(), &ours, &base);
    print_scrape_rows(
        ("secured exporter", "TLS floor"),
        secured.bytes,
        &secured.ours,
        &secured.base,
    );
    println!(
        "| scrape throughput, secured exporter / exporter with --auth=none | {:.2} | |",
        secured.ours.rps / ours.rps
    );
    print_flood_rows(&secured.flood);
    println!(
        "| RSS after the flood, --auth=kubernetes | {} | |",
        mib(secured.rss_after_flood)
    );
    println!(
        "| exporter heap (in-process), 2 pods → {} pods | {} → {} bytes | |",
        EXTRA_MATCHING + 2,
        live_two,
        live_many
    );
    println!("| heap per extra tracked pod | {per_pod:.0} bytes | ≤ 1 KiB |");
    println!(
        "\n(secured: --auth=kubernetes with a CA-signed certificate for 127.0.0.1, scraped as Prometheus does, with a ServiceAccount token bound to deploy/metrics-reader; TLS floor: the same certificate through the library's http::serve)"
    );
    let _ = std::fs::remove_dir_all(dir);

    eprintln!("presets: every component of the stack and the control plane, with electors...");
    stack_cost(binary, &plane, &cluster, &kubeconfig).await
}

/// Where the presets' components run in the stack benchmark.
const STACK_NS: &str = "openshift-cnv";

/// What the presets cost against the default: watches opened, API requests while idle, RSS
/// and the size of /metrics, with every component of `kubevirt-stack` and `control-plane`
/// running (two pods each, a real elector holding each Lease).
async fn stack_cost(
    binary: &Path,
    plane: &ControlPlane,
    cluster: &Cluster,
    kubeconfig: &Path,
) -> anyhow::Result<()> {
    cluster.namespace(STACK_NS).await;
    plane.grant_elector_rbac(&cluster.client, STACK_NS).await;
    let mut components = Preset::KubevirtStack.components();
    components.extend(Preset::ControlPlane.components());
    let mut electors = Vec::new();
    for component in &components {
        let labels: Vec<(String, String)> = component
            .label_selector()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for i in 0..2 {
            let pod = format!("{}-{i}", component.name);
            cluster.pod_with(STACK_NS, &pod, &labels, false).await;
        }
        let holder = format!("{}-0", component.name);
        electors.push(plane.elector(STACK_NS, &component.lease, &holder, &[]));
    }
    for elector in &electors {
        elector.until_leading().await;
    }
    println!();
    println!(
        "Presets against a real kube-apiserver: {} components, two pods and a real elector each, \
         in {STACK_NS}; release binary, --auth=none",
        components.len()
    );
    println!();
    println!(
        "| exporter | watches opened | API requests in {} s idle | RSS {} s after start | /metrics |",
        IDLE.as_secs(),
        SETTLE.as_secs()
    );
    println!("|---|---|---|---|---|");
    for (name, args) in [
        ("default (`kubevirt`)", &[][..]),
        (
            "`--preset=kubevirt-stack,control-plane`",
            &["--preset=kubevirt-stack,control-plane"][..],
        ),
    ] {
        let cost = exporter_cost(binary, plane, kubeconfig, args).await?;
        println!(
            "| {name} | {} | {} | {} | {} bytes, {} series |",
            cost.watches,
            cost.idle_requests,
            mib(cost.rss),
            cost.metrics_bytes,
            cost.series
        );
    }
    Ok(())
}

struct Cost {
    watches: usize,
    idle_requests: usize,
    rss: u64,
    metrics_bytes: usize,
    series: usize,
    /// Objects its watches delivered per second, over the idle window.
    events_per_second: f64,
    /// Its live heap at the end of the idle window.
    heap_bytes: f64,
}

/// The objects the exporter's watches have delivered, all resources together.
fn watch_events(body: &str) -> f64 {
    ["pods", "leases"]
        .iter()
        .filter_map(|r| {
            let series = format!("{PREFIX}_exporter_watch_events_total{{resource=\"{r}\"}}");
            value(body, &series)
        })
        .sum()
}

/// Starts the exporter with `args`, and measures it as [`stack_cost`] says.
async fn exporter_cost(
    binary: &Path,
    plane: &ControlPlane,
    kubeconfig: &Path,
    args: &[&str],
) -> anyhow::Result<Cost> {
    let by_exporter = |verb: &str| {
        plane
            .audit_events()
            .iter()
            .filter(|e| {
                e["user"]["username"] == EXPORTER_USER
                    && e["verb"] == verb
                    && e["stage"] == "ResponseComplete"
            })
            .count()
    };
    let requests = || by_exporter("list") + by_exporter("get");
    // The audit log records a watch only when it ends: the API server's own gauge of open
    // watches counts them (the benchmark itself opens none).
    let admin = plane.client(ADMIN_TOKEN).await;
    let watches_before = open_watches(&admin).await?;
    let exporter = ExporterProcess::spawn(binary, kubeconfig, args);
    let http = reqwest::Client::new();
    let metrics = format!("http://{}/metrics", exporter.addr);
    wait_for(&http, &format!("http://{}/readyz", exporter.addr), |_| true).await?;
    tokio::time::sleep(SETTLE).await;
    let rss = support::rss_kib(exporter.process.0.id())?;
    let watches = open_watches(&admin).await?.saturating_sub(watches_before);
    let idle_from = requests();
    let (_, before) = get(&http, &metrics).await?;
    tokio::time::sleep(IDLE).await;
    let idle_requests = requests() - idle_from;
    let (_, body) = get(&http, &metrics).await?;
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    let events = watch_events(&body) - watch_events(&before);
    let heap_bytes = value(&body, &format!("{PREFIX}_exporter_heap_bytes")).unwrap_or(f64::NAN);
    Ok(Cost {
        watches,
        idle_requests,
        rss,
        metrics_bytes: body.len(),
        series,
        events_per_second: events / IDLE.as_secs_f64(),
        heap_bytes,
    })
}

/// The watches of pods and Leases open on the API server, by its gauge of long-running
/// requests (`apiserver_longrunning_gauge` up to 1.22, `apiserver_longrunning_requests`
/// since). A watch of one Lease by name counts there as verb GET, so every verb counts: only
/// watches are long-running requests on these resources.
async fn open_watches(admin: &kube::Client) -> anyhow::Result<usize> {
    let request = ::http::Request::get("/metrics").body(Vec::new())?;
    let text = admin.request_text(request).await?;
    let open: f64 = text
        .lines()
        .filter(|l| {
            (l.starts_with("apiserver_longrunning_gauge{")
                || l.starts_with("apiserver_longrunning_requests{"))
                && (l.contains("resource=\"pods\"") || l.contains("resource=\"leases\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Ok(open as usize)
}

/// What the exporter with `--auth=kubernetes` measured.
struct Secured {
    rss: u64,
    bytes: usize,
    ours: Wrk,
    base: Wrk,
    flood: Flood,
    rss_after_flood: u64,
}

/// The release binary again, now with `--auth=kubernetes` and a certificate for 127.0.0.1,
/// scraped with a token of Prometheus's ServiceAccount: RSS, scrape throughput against a TLS
/// floor, and a flood of made-up tokens.
async fn secured_exporter(
    binary: &Path,
    plane: &ControlPlane,
    cluster: &Cluster,
    kubeconfig: &Path,
    dir: &Path,
) -> anyhow::Result<Secured> {
    let cert = ServingCert::new(dir);
    let token_file = plane.prometheus_token_file(&cluster.client, dir).await;
    let token = std::fs::read_to_string(token_file)?;
    let args = cert.exporter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let exporter = ExporterProcess::spawn(binary, kubeconfig, &args);
    let pid = exporter.process.0.id();
    let metrics = format!("https://{}/metrics", exporter.addr);
    let anonymous = https_client(&cert, None)?;
    wait_for(
        &anonymous,
        &format!("https://{}/readyz", exporter.addr),
        |_| true,
    )
    .await?;
    // RSS is read with a token and a decision in the caches, as under Prometheus; the
    // first of these scrapes sends the TokenReview and the SubjectAccessReview.
    let scraper = https_client(&cert, Some(&token))?;
    for _ in 0..5 {
        expect_status(&scraper, &metrics, 200).await?;
    }
    expect_status(&anonymous, &metrics, 401).await?;
    tokio::time::sleep(SETTLE.saturating_sub(started.elapsed())).await;
    let rss = support::rss_kib(pid)?;

    // A token of its own for each load: a TokenReview is cached for a minute from the token's
    // first use, and a load outliving it would measure the review (and its limits) instead.
    let (scraper, token) = fresh_scraper(plane, cluster, &cert).await?;
    expect_status(&scraper, &metrics, 200).await?;
    expect_status(&anonymous, &metrics, 401).await?;
    let (body, ours, base) =
        against_the_floor(&scraper, &metrics, dir, Some((&cert, &token))).await?;

    let (cached, _) = fresh_scraper(plane, cluster, &cert).await?;
    expect_status(&cached, &metrics, 200).await?;
    let (uncached, _) = fresh_scraper(plane, cluster, &cert).await?;
    let flood = flood(plane, &cert, &metrics, cached, uncached).await?;
    let rss_after_flood = support::rss_kib(pid)?;
    Ok(Secured {
        rss,
        bytes: body.len(),
        ours,
        base,
        flood,
        rss_after_flood,
    })
}

/// An HTTPS client that verifies the server with `cert`'s CA and sends `token`, when given,
/// as bearer token, as Prometheus scrapes the shipped installs.
fn https_client(cert: &ServingCert, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&cert.ca)? {
        roots.add(ca?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse()?,
        );
    }
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// A client with a new token of Prometheus's ServiceAccount, not yet seen by the exporter.
async fn fresh_scraper(
    plane: &ControlPlane,
    cluster: &Cluster,
    cert: &ServingCert,
) -> anyhow::Result<(reqwest::Client, String)> {
    let token = plane
        .token_for(&cluster.client, "monitoring", "prometheus-k8s")
        .await;
    Ok((https_client(cert, Some(&token))?, token))
}

async fn expect_status(http: &reqwest::Client, url: &str, want: u16) -> anyhow::Result<()> {
    let (status, body) = get(http, url).await?;
    if status != want {
        bail!("{url} answered {status}, not {want}: {body}");
    }
    Ok(())
}

/// What a flood of made-up tokens did.
struct Flood {
    elapsed: Duration,
    /// The flood's answers by status code; 0 for requests that got none.
    answers: BTreeMap<u16, u64>,
    /// TokenReviews the audit log recorded from the exporter's user during the flood.
    token_reviews: usize,
    /// The exporter's own count of TokenReviews: (sent, throttled) during the flood.
    counted: (f64, f64),
    /// (time into the flood, status, latency) of each scrape with a cached token, and with a
    /// token first used during the flood.
    cached: Vec<(Duration, u16, Duration)>,
    uncached: Vec<(Duration, u16, Duration)>,
}

/// For [`FLOOD`], [`FLOOD_TASKS`] tasks each send requests with a new made-up token, as a
/// scanner guessing tokens would; meanwhile `cached` (a token the exporter has reviewed) and
/// `uncached` (a valid token it has not seen, as when a cached one expires) scrape every
/// [`SCRAPE_EVERY`].
async fn flood(
    plane: &ControlPlane,
    cert: &ServingCert,
    metrics: &str,
    cached: reqwest::Client,
    uncached: reqwest::Client,
) -> anyhow::Result<Flood> {
    let anonymous = https_client(cert, None)?;
    let reviews_before = plane.creates_by(EXPORTER_USER, "tokenreviews");
    let counted_before = review_counts(&cached, metrics).await?;
    let start = Instant::now();
    let until = start + FLOOD;
    let tasks: Vec<_> = (0..FLOOD_TASKS)
        .map(|task| {
            let (http, url) = (anonymous.clone(), metrics.to_owned());
            tokio::spawn(made_up_tokens(http, url, task, until))
        })
        .collect();
    let cached_scrapes = tokio::spawn(scrape_every(cached.clone(), metrics.to_owned(), until));
    let uncached_scrapes = tokio::spawn(scrape_every(uncached, metrics.to_owned(), until));
    let mut answers = BTreeMap::new();
    for task in tasks {
        for (status, n) in task.await? {
            *answers.entry(status).or_default() += n;
        }
    }
    let elapsed = start.elapsed();
    let (cached_scrapes, uncached_scrapes) = (cached_scrapes.await?, uncached_scrapes.await?);
    // The API server writes an audit event as each review completes: a moment for the last.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let token_reviews = plane.creates_by(EXPORTER_USER, "tokenreviews") - reviews_before;
    let counted_after = review_counts(&cached, metrics).await?;
    Ok(Flood {
        elapsed,
        answers,
        token_reviews,
        counted: (
            counted_after.0 - counted_before.0,
            counted_after.1 - counted_before.1,
        ),
        cached: cached_scrapes,
        uncached: uncached_scrapes,
    })
}

/// Requests with a new made-up token each until `until`; the answers by status code.
async fn made_up_tokens(
    http: reqwest::Client,
    url: String,
    task: usize,
    until: Instant,
) -> BTreeMap<u16, u64> {
    let mut answers = BTreeMap::new();
    for i in 0.. {
        if Instant::now() >= until {
            break;
        }
        let sent = http
            .get(&url)
            .bearer_auth(format!("made-up-{task}-{i}"))
            .send()
            .await;
        // The body is read so that the connection goes back to the pool.
        let status = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map_or(0, |_| status)
            }
            Err(_) => 0,
        };
        *answers.entry(status).or_default() += 1;
    }
    answers
}

/// Scrapes every [`SCRAPE_EVERY`] until `until`: (time since the start, status, latency).
async fn scrape_every(
    http: reqwest::Client,
    url: String,
    until: Instant,
) -> Vec<(Duration, u16, Duration)> {
    let start = Instant::now();
    let mut scrapes = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        let status = get(&http, &url).await.map_or(0, |(status, _)| status);
        scrapes.push((sent - start, status, sent.elapsed()));
        tokio::time::sleep(SCRAPE_EVERY).await;
    }
    scrapes
}

/// The exporter's TokenReview counters: (sent, throttled).
async fn review_counts(http: &reqwest::Client, metrics: &str) -> anyhow::Result<(f64, f64)> {
    let (_, body) = get(http, metrics).await?;
    let series = |result: &str| {
        let name = format!(
            "{PREFIX}_exporter_auth_reviews_total{{kind=\"tokenreview\",result=\"{result}\"}}"
        );
        value(&body, &name).unwrap_or(0.0)
    };
    let sent = ["authenticated", "unauthenticated", "error"]
        .into_iter()
        .map(series)
        .sum();
    Ok((sent, series("throttled")))
}

fn print_flood_rows(flood: &Flood) {
    let secs = flood.elapsed.as_secs_f64();
    let requests: u64 = flood.answers.values().sum();
    println!(
        "| flood: {FLOOD_TASKS} tasks, a new made-up bearer token per request, {secs:.1} s | {requests} requests, {:.0} req/s | |",
        requests as f64 / secs
    );
    let answers: Vec<String> = flood
        .answers
        .iter()
        .map(|(status, n)| match status {
            0 => format!("no answer: {n}"),
            _ => format!("{status}: {n}"),
        })
        .collect();
    println!(
        "| flood answers | {} | 401 and 429 only |",
        answers.join(", ")
    );
    // The bucket is full when the flood starts: one burst, then the rate.
    let bound = REVIEWS_PER_SECOND * (1.0 + secs);
    println!(
        "| TokenReviews during the flood (audit log, user {EXPORTER_USER}) | {} = {:.1}/s (exporter's counter: {} sent, {} throttled) | ≤ {bound:.0}: 10/s after a burst of 10 |",
        flood.token_reviews,
        flood.token_reviews as f64 / secs,
        flood.counted.0,
        flood.counted.1
    );
    let ok = |scrapes: &[(Duration, u16, Duration)]| {
        scrapes
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .count()
    };
    let slowest = flood.cached.iter().map(|s| s.2).max().unwrap_or_default();
    println!(
        "| scraper with a cached token, every {} ms during the flood | {}/{} answered 200, slowest {:.1} ms | all 200 |",
        SCRAPE_EVERY.as_millis(),
        ok(&flood.cached),
        flood.cached.len(),
        slowest.as_secs_f64() * 1000.0
    );
    let first = flood.uncached.iter().find(|s| s.1 == 200);
    let statuses: BTreeMap<u16, usize> = flood.uncached.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.1).or_default() += 1;
        m
    });
    println!(
        "| scraper with a valid token not yet cached (as when its cache entry expires), every {} ms during the flood | {}/{} answered 200 ({statuses:?}), first 200 {} | |",
        SCRAPE_EVERY.as_millis(),
        ok(&flood.uncached),
        flood.uncached.len(),
        first.map_or("never".to_owned(), |s| format!(
            "{:.1} s into the flood",
            s.0.as_secs_f64()
        ))
    );
}

/// The exporter's library in this process against the real API server: live heap with two
/// pods, then with 998 more, once each list has settled. Returns (bytes per extra pod, live
/// bytes before, live bytes after).
async fn heap_per_pod(
    plane: &ControlPlane,
    cluster: &Cluster,
    http: &reqwest::Client,
) -> anyhow::Result<(f64, u64, u64)> {
    let client = plane.client(EXPORTER_TOKEN).await;
    let mut settings = Settings::with_defaults(Duration::from_secs(10));
    settings.namespaces = vec![NS.into()];
    let exporter = Exporter::start(&settings, client, std::future::pending()).await?;
    let metrics = format!("http://{}/metrics", exporter.addr);
    let pods_series =
        format!("kubevirt_leader_pods{{component=\"{OPERATOR}\",namespace=\"{NS}\"}}");
    wait_for(http, &metrics, |b| value(b, &pods_series) == Some(2.0)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = heap::live_bytes().context("the counting allocator is installed")?;
    for i in 0..EXTRA_MATCHING {
        cluster
            .pod(NS, &format!("virt-operator-6f7d9c5b8-{i:05}"), true)
            .await;
    }
    let total = (EXTRA_MATCHING + PODS.len()) as f64;
    wait_for(http, &metrics, |b| value(b, &pods_series) == Some(total)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = heap::live_bytes().context("the counting allocator is installed")?;
    drop(exporter);
    let per_pod = (after as f64 - before as f64) / EXTRA_MATCHING as f64;
    Ok((per_pod, before, after))
}
