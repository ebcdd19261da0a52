//! The soak: the release binary against a real kube-apiserver and etcd under churn, for
//! `SOAK_MINUTES` (default 30). Two real client-go electors hold the virt-operator lease
//! (the leader is killed and replaced every minute, so the holder changes; one that exits on
//! its own is started again, as the kubelet would), both operator pods flip between Ready and
//! not Ready every second, 200 other pods are created and deleted, the API server restarts
//! every 5 minutes, and a scraper reads `/metrics` 10 times a second. Every 10 s it samples
//! the exporter's RSS, live heap (its own `kubevirt_leader_exporter_heap_bytes`), open file
//! descriptors and threads.
//!
//! At the end it prints the figures (RSS and heap slopes after the first 5 minutes, fd and
//! thread ranges, scrapes and wrong scrapes), writes the samples to
//! `target/soak/TARGET/samples.csv` and plots them to `target/soak/TARGET/soak.png` (an SVG
//! rendered by headless Chromium). TARGET is `BENCH_TARGET` (as for the benchmark:
//! `x86_64-unknown-linux-musl` soaks the static binary the Dockerfile ships) or `host`.
//!
//!     KUBEBUILDER_ASSETS=... cargo run --release --example soak
//!
//! A scrape is wrong when it is not a well-formed 200, when it says "no leader" while every
//! watch is healthy, when it names a holder that is neither pod, or when more pods are Ready
//! than exist.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/envtest/mod.rs"]
mod envtest;
#[path = "support/mod.rs"]
mod support;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use common::Scrape;
use envtest::{ControlPlane, EXPORTER_TOKEN, Elector, ExporterProcess};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const NS: &str = "kubevirt";
const PODS: [&str; 2] = [
    "virt-operator-6f7d9c5b8-a1b2c",
    "virt-operator-6f7d9c5b8-x9y8z",
];
const OTHER_PODS: usize = 200;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// RSS before this is start-up and warm-up, left out of the slope.
const WARM_UP: Duration = Duration::from_secs(300);

#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    heap_kib: u64,
    fds: usize,
    threads: usize,
}

#[derive(Default)]
struct Counts {
    scrapes: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
    blind: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let assets = std::env::var_os("KUBEBUILDER_ASSETS")
        .context("KUBEBUILDER_ASSETS must name etcd, kube-apiserver and leader-elector")?;
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .map(|m| m.parse())
        .transpose()
        .context("SOAK_MINUTES")?
        .unwrap_or(30);
    let binary = support::build_release()?;
    let mut plane = ControlPlane::start(Path::new(&assets)).await;
    let admin = plane.kubevirt(NS, &PODS).await.client;
    let mut electors: Vec<Elector> = PODS
        .iter()
        .map(|p| plane.elector(NS, "virt-operator", p, &[]))
        .collect();
    // Scrapes start once there is a leader: before it, "no leader" is the right answer.
    let waiting = Instant::now();
    while !electors.iter().any(Elector::started_leading) {
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(90),
            "no elector leads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exporter = ExporterProcess::spawn(&binary, &plane.kubeconfig_file(EXPORTER_TOKEN), &[]);
    let pid = exporter.process.0.id();
    eprintln!(
        "soak: {minutes} minutes, exporter pid {pid} on {}",
        exporter.addr
    );

    let counts = Arc::new(Counts::default());
    let churn = [
        tokio::spawn(flip_readiness(admin.clone())),
        tokio::spawn(other_pods(admin.clone())),
        tokio::spawn(scrape(exporter.addr, counts.clone())),
    ];
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    let mut next_sample = start;
    let mut next_takeover = start + Duration::from_secs(60);
    let mut next_restart = start + Duration::from_secs(300);
    let mut killed: Option<String> = None;
    let mut holder_changes = 0;
    let mut electors_restarted = 0;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            samples.push(sample(pid, exporter.addr, start).await?);
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_takeover && killed.is_none() {
            killed = kill_leader(&admin, &electors).await;
            next_takeover += Duration::from_secs(60);
        }
        // An elector exits when it loses the lease (an API server restart can outlast the
        // renew deadline); the kubelet would start the container again.
        for elector in electors.iter_mut() {
            if let Some(status) = elector.exited()
                && killed.as_deref() != Some(elector.identity.as_str())
            {
                eprintln!(
                    "soak: elector {} exited ({status}), started again",
                    elector.identity
                );
                electors_restarted += 1;
                *elector = plane.elector(NS, "virt-operator", &elector.identity.clone(), &[]);
            }
        }
        if let Some(dead) = killed.clone()
            && holder(&admin).await.is_some_and(|h| h != dead)
        {
            // The standby leads: the dead pod comes back as the new standby. Back at once, it
            // would still hold the lease under its own name and simply renew it.
            if let Some(elector) = electors.iter_mut().find(|e| e.identity == dead) {
                *elector = plane.elector(NS, "virt-operator", &dead, &[]);
            }
            holder_changes += 1;
            killed = None;
        }
        if now >= next_restart {
            eprintln!(
                "soak: {:.0} s, restarting the API server",
                start.elapsed().as_secs_f64()
            );
            plane.kill_apiserver();
            plane.start_apiserver().await;
            next_restart += Duration::from_secs(300);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in churn {
        task.abort();
    }
    report(&samples, &counts, holder_changes, electors_restarted)
}

/// Both operator pods flip between Ready and not Ready every second, out of step.
async fn flip_readiness(client: Client) {
    let api: Api<Pod> = Api::namespaced(client, NS);
    let mut ready = false;
    loop {
        for (i, name) in PODS.iter().enumerate() {
            let status = if ready == (i == 0) { "True" } else { "False" };
            let patch = json!({"status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": status}]}});
            // The API server restarts now and then: a failed patch is simply the next one.
            let _ = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
        }
        ready = !ready;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// 200 pods the exporter does not watch, created and deleted over and over.
async fn other_pods(client: Client) {
    let api: Api<Pod> = Api::namespaced(client, NS);
    loop {
        for i in 0..OTHER_PODS {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("virt-handler-{i:03}"), "labels": {"kubevirt.io": "virt-handler"}},
                "spec": {"containers": [{"name": "main", "image": "registry.example/handler:latest"}]},
            }))
            .expect("pod");
            let _ = api.create(&PostParams::default(), &pod).await;
        }
        for i in 0..OTHER_PODS {
            let _ = api
                .delete(
                    &format!("virt-handler-{i:03}"),
                    &DeleteParams::default().grace_period(0),
                )
                .await;
        }
    }
}

/// 10 scrapes a second, each checked.
async fn scrape(addr: std::net::SocketAddr, counts: Arc<Counts>) {
    let http = common::http();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        counts.scrapes.fetch_add(1, Ordering::Relaxed);
        let body = match http.get(format!("http://{addr}/metrics")).send().await {
            Ok(r) if r.status() == 200 => r.text().await.ok(),
            _ => None,
        };
        let Some(body) = body else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let scrape = Scrape(body);
        match check(&scrape) {
            Check::Right => {}
            Check::Blind => {
                counts.blind.fetch_add(1, Ordering::Relaxed);
            }
            Check::Wrong(why) => {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: wrong scrape ({why}):\n{}", scrape.0);
            }
        }
    }
}

enum Check {
    Right,
    /// A watch is failing (the API server restarts): the exporter says it cannot see.
    Blind,
    Wrong(String),
}

fn check(scrape: &Scrape) -> Check {
    let healthy = scrape.value(
        "kubevirt_leader_exporter_watch_healthy",
        &[("resource", "pods")],
    ) == Some(1.0)
        && scrape.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")],
        ) == Some(1.0);
    if !healthy {
        return Check::Blind;
    }
    let (present, ready, pods) = (
        scrape.present(NS),
        scrape.operator("pods_ready", NS),
        scrape.operator("pods", NS),
    );
    if present != Some(1.0) {
        return Check::Wrong(format!("present {present:?} while every watch is healthy"));
    }
    if let Some(holder) = scrape.holder(NS)
        && !PODS.contains(&holder.as_str())
    {
        return Check::Wrong(format!("holder {holder}"));
    }
    match (ready, pods) {
        (Some(r), Some(p)) if r <= p && p <= 2.0 => Check::Right,
        _ => Check::Wrong(format!("pods_ready {ready:?} of {pods:?}")),
    }
}

async fn holder(client: &Client) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease = api.get("virt-operator").await.ok()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Kills the elector that holds the lease; returns its identity.
async fn kill_leader(client: &Client, electors: &[Elector]) -> Option<String> {
    let holder = holder(client).await?;
    let elector = electors.iter().find(|e| e.identity == holder)?;
    elector.signal("KILL");
    Some(holder)
}

async fn sample(pid: u32, addr: std::net::SocketAddr, start: Instant) -> anyhow::Result<Sample> {
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    let heap = Scrape(metrics)
        .value("kubevirt_leader_exporter_heap_bytes", &[])
        .context("the exporter counts its heap")?;
    Ok(Sample {
        at: start.elapsed().as_secs_f64(),
        rss_kib: support::rss_kib(pid)?,
        heap_kib: (heap / 1024.0) as u64,
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
    })
}

/// Least-squares slope of `kib` against time, in KiB per hour, after the warm-up.
fn slope(samples: &[Sample], kib: fn(&Sample) -> u64) -> f64 {
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= WARM_UP.as_secs_f64())
        .collect();
    let n = late.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean_t = late.iter().map(|s| s.at).sum::<f64>() / n;
    let mean_r = late.iter().map(|s| kib(s) as f64).sum::<f64>() / n;
    let cov: f64 = late
        .iter()
        .map(|s| (s.at - mean_t) * (kib(s) as f64 - mean_r))
        .sum();
    let var: f64 = late.iter().map(|s| (s.at - mean_t).powi(2)).sum();
    cov / var * 3600.0
}

fn report(
    samples: &[Sample],
    counts: &Counts,
    holder_changes: u32,
    electors_restarted: u32,
) -> anyhow::Result<()> {
    let target = support::bench_target().unwrap_or_else(|| "host".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/soak")
        .join(target);
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("seconds,rss_kib,heap_kib,fds,threads\n");
    for s in samples {
        csv.push_str(&format!(
            "{:.0},{},{},{},{}\n",
            s.at, s.rss_kib, s.heap_kib, s.fds, s.threads
        ));
    }
    std::fs::write(dir.join("samples.csv"), csv)?;
    let (fd_min, fd_max) = range(samples, |s| s.fds as u64);
    let (th_min, th_max) = range(samples, |s| s.threads as u64);
    println!("| soak figure | value |");
    println!("|---|---|");
    println!(
        "| duration | {:.0} min, {} samples |",
        samples.last().map_or(0.0, |s| s.at) / 60.0,
        samples.len()
    );
    print_memory("RSS", samples, |s| s.rss_kib, 1);
    print_memory("live heap", samples, |s| s.heap_kib, 2);
    println!("| holder changes (leader killed, standby took over) | {holder_changes} |");
    println!("| electors that exited on their own and were started again | {electors_restarted} |");
    println!("| open file descriptors | {fd_min} to {fd_max} |");
    println!("| threads | {th_min} to {th_max} |");
    println!(
        "| scrapes | {} ({} wrong, {} blind while the API server restarted, {} failed) |",
        counts.scrapes.load(Ordering::Relaxed),
        counts.wrong.load(Ordering::Relaxed),
        counts.blind.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed)
    );
    plot(samples, &dir)?;
    eprintln!("soak: samples and plot in {}", dir.display());
    Ok(())
}

/// The smallest and largest value of one figure over the samples.
fn range(samples: &[Sample], figure: fn(&Sample) -> u64) -> (u64, u64) {
    let values = samples.iter().map(figure);
    (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
}

/// The range of one memory figure, in MiB to `decimals` places, and its slope.
fn print_memory(name: &str, samples: &[Sample], kib: fn(&Sample) -> u64, decimals: usize) {
    let (min, max) = range(samples, kib);
    println!(
        "| {name} | {:.decimals$} to {:.decimals$} MiB |",
        min as f64 / 1024.0,
        max as f64 / 1024.0
    );
    println!(
        "| {name} slope after {} min | {:+.1} KiB per hour |",
        WARM_UP.as_secs() / 60,
        slope(samples, kib)
    );
}

/// RSS and live heap (MiB), fds and threads against minutes, as an SVG rendered to PNG by Chromium.
fn plot(samples: &[Sample], dir: &Path) -> anyhow::Result<()> {
    let (w, h, left, bottom) = (900.0, 420.0, 60.0, 40.0);
    let t_max = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let y_max = samples
        .iter()
        .map(|s| {
            (s.rss_kib as f64 / 1024.0)
                .max(s.fds as f64)
                .max(s.threads as f64)
        })
        .fold(1.0, f64::max)
        * 1.2;
    let x = |t: f64| left + t / t_max * (w - left - 40.0);
    let y = |v: f64| h - bottom - v / y_max * (h - bottom - 20.0);
    let line = |value: fn(&Sample) -> f64, colour: &str| {
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.at), y(value(s))))
            .collect();
        format!(
            "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>",
            points.join(" ")
        )
    };
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='13'>\
         <rect width='100%' height='100%' fill='white'/>\
         <line x1='{left}' y1='{0}' x2='{1}' y2='{0}' stroke='black'/>\
         <line x1='{left}' y1='20' x2='{left}' y2='{0}' stroke='black'/>",
        h - bottom,
        w - 40.0
    );
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        svg.push_str(&format!(
            "<text x='{}' y='{:.1}' text-anchor='end'>{v:.0}</text>",
            left - 6.0,
            y(v) + 4.0
        ));
        let t = t_max * f64::from(i) / 5.0;
        svg.push_str(&format!(
            "<text x='{:.1}' y='{}' text-anchor='middle'>{:.1} min</text>",
            x(t),
            h - bottom + 18.0,
            t / 60.0
        ));
    }
    svg.push_str(&line(|s| s.rss_kib as f64 / 1024.0, "#1f77b4"));
    svg.push_str(&line(|s| s.heap_kib as f64 / 1024.0, "#9467bd"));
    svg.push_str(&line(|s| s.fds as f64, "#d62728"));
    svg.push_str(&line(|s| s.threads as f64, "#2ca02c"));
    svg.push_str(
        "<text x='80' y='36' fill='#1f77b4'>RSS (MiB)</text>\
         <text x='180' y='36' fill='#9467bd'>live heap (MiB)</text>\
         <text x='320' y='36' fill='#d62728'>open fds</text>\
         <text x='410' y='36' fill='#2ca02c'>threads</text></svg>",
    );
    let svg_path = dir.join("soak.svg");
    std::fs::write(&svg_path, svg)?;
    let status = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            &format!("--screenshot={}", dir.join("soak.png").display()),
            &format!("--window-size={w},{h}"),
            &format!("file://{}", svg_path.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("chromium renders the plot")?;
    anyhow::ensure!(status.success(), "chromium failed to render the plot");
    Ok(())
}
