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
    config::Settings,
    judge::{LeaseRecord, LeaseState, PodInfo, judge},
    metrics::Metrics,
    objects::Change,
    pods::PodName,
    targets::Targets,
};

fn pods(n: usize) -> Vec<PodInfo> {
    (0..n)
        .map(|i| PodInfo {
            name: format!("virt-operator-{i:04}"),
            ready_condition: i % 3 != 0,
            ..PodInfo::default()
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
    let lease = LeaseState::new(record(), now);
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

/// Targets as after the first lists: every default component, KubeVirt in two namespaces.
fn filled_targets() -> Arc<Targets> {
    let targets = Arc::new(Targets::new(&Settings::with_defaults(Duration::from_secs(
        5,
    ))));
    let now = Instant::now();
    for target in targets.handles() {
        target.apply_pods(Change::ListStarted);
        target.apply_leases(Change::ListStarted, now);
        for ns in ["kubevirt", "openshift-cnv"] {
            for pod in pods(2) {
                let name = PodName {
                    namespace: ns.into(),
                    name: pod.name.clone(),
                };
                target.apply_pods(Change::Listed(name, pod));
            }
            target.apply_leases(Change::Listed(ns.into(), record()), now);
        }
        target.apply_pods(Change::ListDone);
        target.apply_leases(Change::ListDone, now);
    }
    targets
}

fn bench_render(c: &mut Criterion) {
    let metrics = Metrics::new(filled_targets()).expect("metrics");
    c.bench_function("render /metrics (3 components x 2 namespaces)", |b| {
        b.iter(|| black_box(metrics.render().expect("render")))
    });
    // Every update of a target makes the next scrape render afresh: this is the cost of a
    // rendering itself, where the one above is mostly that of serving the last one again.
    let targets = filled_targets();
    let metrics = Metrics::new(targets.clone()).expect("metrics");
    let target = targets.handles()[0].clone();
    c.bench_function(
        "render /metrics after a change (3 components x 2 namespaces)",
        |b| {
            b.iter(|| {
                target.deadline_passed(Instant::now());
                black_box(metrics.render().expect("render"))
            })
        },
    );
}

criterion_group!(benches, bench_judge, bench_render);
criterion_main!(benches);
