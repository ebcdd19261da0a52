//! Load: 200 concurrent scrapers against the exporter binary while the API server's store
//! makes 1,600 changes, one round of four every 5 ms. Every response must be whole and
//! well-formed, the final values must match the store, and memory must come back down.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use kubevirt_leader_sim::{SimServer, Store, lease, pod};

const SCRAPERS: usize = 200;
/// Rounds of churn, four changes each.
const ROUNDS: u64 = 400;

/// The text format, line by line: comments, or `name{labels} value` with a number.
fn well_formed(body: &str) -> Result<(), String> {
    if !body.ends_with('\n') || !body.contains("kubevirt_leader_exporter_build_info") {
        return Err("truncated".into());
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line}"))?;
        value
            .parse::<f64>()
            .map_err(|_| format!("bad value: {line}"))?;
        if series.contains('{') != series.ends_with('}') {
            return Err(format!("bad labels: {line}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_scrapers_while_the_store_churns() {
    let store = Store::default();
    let sim = SimServer::start(store.clone()).await.expect("sim");
    for ns in [NS, "openshift-cnv"] {
        store.apply(pod(ns, POD_A, &[("kubevirt.io", OPERATOR)], true));
        store.apply(pod(ns, POD_B, &[("kubevirt.io", OPERATOR)], true));
        store.apply(lease(ns, OPERATOR, POD_A, 15));
    }
    let mut binary = start_binary(&sim);
    let addr = binary.addr;
    let http = common::http();
    wait_serving(&http, addr).await;
    until(&http, addr, "leader present", |s| {
        s.present(NS) == Some(1.0)
    })
    .await;
    let rss_before = rss_kib(binary.child.id());

    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let churn = {
        let (store, stop, changes) = (store.clone(), stop.clone(), changes.clone());
        tokio::spawn(async move {
            let mut ready = true;
            for _ in 0..ROUNDS {
                for ns in [NS, "openshift-cnv"] {
                    store.renew_lease(ns, OPERATOR);
                    store.set_pod_ready(ns, POD_B, ready);
                }
                ready = !ready;
                changes.fetch_add(4, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let start = Instant::now();
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let (http, stop, changes) = (http.clone(), stop.clone(), changes.clone());
            tokio::spawn(async move {
                // Scrapes, and of them those answered while the store was changing.
                let (mut n, mut during) = (0u64, 0u64);
                while n == 0 || !stop.load(Ordering::Relaxed) {
                    let churned = changes.load(Ordering::Relaxed);
                    let response = http
                        .get(format!("http://{addr}/metrics"))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    let body = response.text().await.map_err(|e| e.to_string())?;
                    if status != 200 {
                        return Err(format!("status {status}"));
                    }
                    well_formed(&body)?;
                    n += 1;
                    if changes.load(Ordering::Relaxed) > churned && !stop.load(Ordering::Relaxed) {
                        during += 1;
                    }
                }
                Ok::<_, String>((n, during))
            })
        })
        .collect();
    let (mut scrapes, mut during) = (0, 0);
    for scraper in scrapers {
        let (n, d) = scraper
            .await
            .expect("scraper")
            .expect("every response whole and well-formed");
        scrapes += n;
        during += d;
    }
    churn.await.expect("churn");
    let elapsed = start.elapsed();
    // The scrapes raced the changes, not the quiet after them.
    assert!(during > 0, "no scrape while the store changed");

    // The store's last word: B not Ready in kubevirt, Ready in openshift-cnv.
    store.set_pod_ready(NS, POD_B, false);
    store.set_pod_ready("openshift-cnv", POD_B, true);
    for ns in [NS, "openshift-cnv"] {
        store.renew_lease(ns, OPERATOR);
    }
    let s = until(&http, addr, "final values", |s| {
        s.operator("pods_ready", NS) == Some(1.0)
            && s.operator("pods_ready", "openshift-cnv") == Some(2.0)
    })
    .await;
    assert_eq!(s.present(NS), Some(1.0));
    assert_eq!(s.present("openshift-cnv"), Some(1.0));
    drop(http);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(binary.child.id());
    let changed = changes.load(Ordering::Relaxed);
    eprintln!(
        "load: {scrapes} scrapes by {SCRAPERS} clients in {:.1} s ({:.0}/s), {during} of them \
         while the store changed {changed} times; RSS {rss_before} KiB before, {rss_after} KiB after",
        elapsed.as_secs_f64(),
        scrapes as f64 / elapsed.as_secs_f64()
    );
    // Connections and buffers of 200 clients are gone: memory is back near the start.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    let _ = binary.child.kill();
}
