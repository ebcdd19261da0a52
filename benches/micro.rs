//! Micro-benchmarks of the two things every scrape does: judge each component, and encode
//! the registry.
//!
//!     cargo bench --bench micro

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use kubevirt_leader_exporter::{
    cache::{Cache, Change},
    config::Settings,
    judge::{LeaseRecord, LeaseSeen, PodInfo, judge},
    metrics::Metrics,
};

fn pods(n: usize) -> Vec<PodInfo> {
    (0..n)
        .map(|i| PodInfo {
            name: format!("virt-operator-{i:04}"),
            ready_condition: i % 3 != 0,
            deleting: false,
        })
        .collect()
}

fn record() -> LeaseRecord {
    LeaseRecord {
        holder: Some("virt-operator-0001".into()),
        duration_seconds: Some(15),
        transitions: Some(3),
        renew_time: Some("2026-11-25T10:00:00.000000Z".into()),
        acquire_time: None,
        has_spec: true,
    }
}

fn bench_judge(c: &mut Criterion) {
    let now = Instant::now();
    let lease = LeaseSeen {
        record: record(),
        changed_at: now,
    };
    for n in [2, 1000] {
        let pods = pods(n);
        c.bench_function(&format!("judge/{n} pods"), |b| {
            b.iter(|| {
                judge(
                    black_box(&pods),
                    Some(black_box(&lease)),
                    now,
                    Duration::from_secs(5),
                )
            })
        });
    }
}

/// A cache as after the first lists: two components, KubeVirt in two namespaces.
fn filled_cache() -> Arc<Cache> {
    let cache = Arc::new(Cache::new(&Settings::with_defaults(Duration::from_secs(5))));
    let now = Instant::now();
    for i in 0..cache.len() {
        let mut target = cache.target(i);
        target.apply_pod(Change::Begin);
        target.apply_lease(Change::Begin, now);
        for ns in ["kubevirt", "openshift-cnv"] {
            for pod in pods(2) {
                target.apply_pod(Change::Listed((ns.into(), pod.name.clone()), pod));
            }
            target.apply_lease(Change::Listed((ns.into(), "lease".into()), record()), now);
        }
        target.apply_pod(Change::End);
        target.apply_lease(Change::End, now);
    }
    cache
}

fn bench_render(c: &mut Criterion) {
    let metrics = Metrics::new(filled_cache()).expect("metrics");
    c.bench_function("render /metrics (2 components x 2 namespaces)", |b| {
        b.iter(|| black_box(metrics.render().expect("render")))
    });
}

criterion_group!(benches, bench_judge, bench_render);
criterion_main!(benches);
