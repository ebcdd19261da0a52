//! The exporter end to end: the simulated API server feeds it through the real kube client,
//! and every assertion reads `/metrics` over HTTP.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kubevirt_leader_sim::{Kind, SimServer, Store, lease, pod};

#[tokio::test]
async fn reports_a_live_leader() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let s = bed.until("leader present", |s| s.settled(NS)).await;
    assert_eq!(s.operator("pods", NS), Some(2.0));
    assert_eq!(s.operator("pods_ready", NS), Some(2.0));
    assert_eq!(s.holder(NS).as_deref(), Some(POD_A));
    assert_eq!(
        s.operator("lease_duration_seconds", NS),
        Some(f64::from(LEASE_SECONDS))
    );
    assert_eq!(s.operator("lease_transitions", NS), Some(0.0));
    let age = s.operator("lease_age_seconds", NS).expect("age");
    assert!((0.0..10.0).contains(&age), "{age}");
    assert_eq!(
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "pods")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value("kubevirt_leader_exporter_build_info", &[]),
        Some(1.0)
    );
    assert!(s.value("process_resident_memory_bytes", &[]).is_some());
    // virt-controller is not installed here: no per-namespace series for it, so no false
    // "no leader"; only the count of namespaces it was found in, which is 0.
    let controller =
        s.0.lines()
            .filter(|l| !l.starts_with('#') && l.contains("component=\"virt-controller\""))
            .collect::<Vec<_>>();
    assert_eq!(
        controller,
        ["kubevirt_leader_namespaces{component=\"virt-controller\"} 0"]
    );
}

#[tokio::test]
async fn ready_count_follows_readiness() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("2 ready", |s| s.operator("pods_ready", NS) == Some(2.0))
        .await;
    bed.store.set_pod_ready(NS, POD_B, false);
    let s = bed
        .until("1 ready", |s| s.operator("pods_ready", NS) == Some(1.0))
        .await;
    assert_eq!(s.operator("pods", NS), Some(2.0));
    bed.store.update::<Pod>(NS, POD_B, |p| p.status = None);
    bed.until("still 1 ready without status", |s| {
        s.operator("pods_ready", NS) == Some(1.0)
    })
    .await;
    bed.store.set_pod_ready(NS, POD_B, true);
    bed.until("2 ready again", |s| {
        s.operator("pods_ready", NS) == Some(2.0)
    })
    .await;
    // A pod being deleted is neither counted nor Ready.
    bed.store.update::<Pod>(NS, POD_B, |p| {
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()))
    });
    let s = bed
        .until("terminating pod dropped", |s| {
            s.operator("pods", NS) == Some(1.0)
        })
        .await;
    assert_eq!(s.operator("pods_ready", NS), Some(1.0));
    // A pod whose labels stop matching leaves the selection.
    bed.store
        .update::<Pod>(NS, POD_A, |p| p.metadata.labels = None);
    bed.until("unlabelled pod dropped", |s| {
        s.operator("pods", NS) == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn present_follows_renewals_and_drops_when_they_stop() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("leader present", |s| s.settled(NS)).await;
    // Renewing well within the lease duration keeps the leader present on every scrape,
    // across more than two lease durations.
    for _ in 0..12 {
        bed.store.renew_lease(NS, OPERATOR);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(bed.scrape().await.present(NS), Some(1.0));
    }
    // The leader hangs: its name stays in the lease and its pod stays Ready.
    let s = bed
        .until("leader lost", |s| s.present(NS) == Some(0.0))
        .await;
    assert_eq!(s.holder(NS).as_deref(), Some(POD_A));
    assert_eq!(s.operator("pods_ready", NS), Some(2.0));
    let age = s.operator("lease_age_seconds", NS).expect("age");
    let limit = f64::from(LEASE_SECONDS) + GRACE.as_secs_f64();
    assert!(age > limit, "reported lost at age {age}, before {limit}s");
    // The other pod takes over.
    bed.store.take_lease(NS, OPERATOR, POD_B);
    let s = bed
        .until("new leader", |s| s.present(NS) == Some(1.0))
        .await;
    assert_eq!(s.holder(NS).as_deref(), Some(POD_B));
    assert_eq!(s.operator("lease_transitions", NS), Some(1.0));
}

#[tokio::test]
async fn holder_readiness_is_reported_apart_from_presence() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    let renewer = spawn_renewer(bed.store.clone());
    bed.until("leader present", |s| {
        s.present(NS) == Some(1.0) && s.operator("holder_ready", NS) == Some(1.0)
    })
    .await;

    // A leader that renews leads, Ready or not.
    bed.store.set_pod_ready(NS, POD_A, false);
    let s = bed
        .until("holder not ready", |s| {
            s.operator("holder_ready", NS) == Some(0.0)
        })
        .await;
    assert_eq!(s.present(NS), Some(1.0));
    bed.store.set_pod_ready(NS, POD_A, true);
    bed.until("holder ready again", |s| {
        s.operator("holder_ready", NS) == Some(1.0)
    })
    .await;

    // The holder's pod is gone but the lease is still renewed: no pod matches the holder.
    bed.store.delete::<Pod>(NS, POD_A);
    let s = bed
        .until("holder pod deleted", |s| {
            s.operator("pods", NS) == Some(1.0)
        })
        .await;
    assert_eq!(s.operator("holder_ready", NS), None);
    assert_eq!(s.present(NS), Some(1.0));
    bed.store.take_lease(NS, OPERATOR, POD_B);
    bed.until("new holder", |s| {
        s.holder(NS).as_deref() == Some(POD_B) && s.operator("holder_ready", NS) == Some(1.0)
    })
    .await;

    bed.store.delete::<Lease>(NS, OPERATOR);
    let s = bed
        .until("lease deleted", |s| s.present(NS) == Some(0.0))
        .await;
    assert_eq!(s.holder(NS), None);
    assert_eq!(s.operator("holder_ready", NS), None);
    assert_eq!(s.operator("lease_age_seconds", NS), None);
    assert_eq!(s.operator("pods_ready", NS), Some(1.0));
    renewer.abort();
}

#[tokio::test]
async fn namespaces_are_kept_apart() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.seed_operator("openshift-cnv");
    let renewer = spawn_renewer(bed.store.clone());
    bed.until("both present", |s| {
        s.present(NS) == Some(1.0) && s.present("openshift-cnv") == Some(1.0)
    })
    .await;
    bed.store.set_pod_ready("openshift-cnv", POD_B, false);
    bed.store.delete::<Lease>("openshift-cnv", OPERATOR);
    let s = bed
        .until("one lost", |s| s.present("openshift-cnv") == Some(0.0))
        .await;
    assert_eq!(s.present(NS), Some(1.0));
    assert_eq!(s.operator("pods_ready", NS), Some(2.0));
    assert_eq!(s.operator("pods_ready", "openshift-cnv"), Some(1.0));
    renewer.abort();
}

#[tokio::test]
async fn cluster_wide_finds_any_namespace_and_namespace_flag_restricts() {
    let wide = Bed::start(settings(&[])).await;
    wide.seed_operator("somewhere-else");
    let s = wide.until("found", |s| s.settled("somewhere-else")).await;
    assert_eq!(s.operator("pods", "somewhere-else"), Some(2.0));

    let narrow = Bed::start(settings(&[NS])).await;
    narrow.seed_operator("somewhere-else");
    narrow.seed_operator(NS);
    let s = narrow.until("kubevirt present", |s| s.settled(NS)).await;
    assert_eq!(s.present("somewhere-else"), None);
    assert_eq!(s.operator("pods", "somewhere-else"), None);
}

#[tokio::test]
async fn pods_without_a_lease_and_a_lease_without_pods() {
    let bed = Bed::start(settings(&[])).await;
    bed.store
        .apply(pod(NS, POD_A, &[("kubevirt.io", OPERATOR)], true));
    bed.store
        .apply(lease("other", OPERATOR, "ghost", LEASE_SECONDS));
    let s = bed
        .until("both seen", |s| {
            s.present(NS).is_some() && s.present("other").is_some()
        })
        .await;
    assert_eq!(s.present(NS), Some(0.0));
    assert_eq!(s.operator("pods_ready", NS), Some(1.0));
    assert_eq!(s.operator("holder_ready", NS), None);
    assert_eq!(s.operator("pods", "other"), Some(0.0));
    assert_eq!(s.holder("other").as_deref(), Some("ghost"));
    assert_eq!(
        s.operator("holder_ready", "other"),
        None,
        "no pod is the ghost"
    );
    // The lease alone decides: the ghost leads until its lease runs out unrenewed.
    let s = bed
        .until("ghost lost", |s| s.present("other") == Some(0.0))
        .await;
    assert_eq!(s.holder("other").as_deref(), Some("ghost"));
}

#[tokio::test]
async fn unreachable_api_is_blind_then_ready_when_it_comes_up() {
    let addr = free_addr();
    let exporter = exporter_for(&format!("http://{addr}"), &settings(&[])).await;
    let store = Store::default();
    let bed = Bed {
        sim: None,
        store: store.clone(),
        exporter,
        http: common::http(),
    };
    bed.seed_operator(NS);
    // Both watches have failed at least once: what follows is the answer of a blind exporter,
    // not of one that has not tried yet.
    let errors = |s: &Scrape, resource| {
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", resource)],
        )
    };
    bed.until("both watches failed", |s| {
        errors(s, "pods") >= Some(1.0) && errors(s, "leases") >= Some(1.0)
    })
    .await;
    let (code, _) = bed.get("/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(bed.get("/livez").await.0, 200);
    let s = bed.scrape().await;
    assert!(s.blind(), "series exported while blind:\n{}", s.0);
    assert_eq!(
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "pods")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.value(
            "kubevirt_leader_exporter_watch_healthy",
            &[("resource", "leases")]
        ),
        Some(0.0)
    );
    assert!(
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "pods")]
        ) >= Some(1.0)
    );

    let sim = SimServer::start_on(addr, store).await.expect("sim server");
    let s = bed.until("leader present", |s| s.settled(NS)).await;
    assert_eq!(s.operator("pods_ready", NS), Some(2.0));
    // Every watch retries on its own backoff schedule: readiness follows the last of them.
    bed.until_ready().await;
    sim.stop().await;
}

#[tokio::test]
async fn http_endpoints() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("leader present", |s| s.settled(NS)).await;
    bed.until_ready().await;
    let (code, page) = bed.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("href=\"/metrics\""));
    assert!(page.contains(POD_A) && page.contains("virt-operator") && page.contains("2 of 2"));
    let response = bed
        .http
        .get(bed.url("/status.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["content-type"], "application/json");
    let status: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(status["components"][0]["namespaces"][0]["holder"], POD_A);
    assert_eq!(bed.get("/nope").await.0, 404);
    let post = bed
        .http
        .post(bed.url("/metrics"))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status().as_u16(), 405);
    let head = bed
        .http
        .head(bed.url("/metrics"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status().as_u16(), 200);
    let response = bed.http.get(bed.url("/metrics")).send().await.expect("get");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
}

#[tokio::test]
async fn scrape_passes_promtool_check_metrics() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    // A holder with characters that must be escaped in a label value.
    bed.store.apply(lease(
        "odd",
        OPERATOR,
        "a \"quoted\\\" holder\nwith é",
        LEASE_SECONDS,
    ));
    let s = bed
        .until("both namespaces", |s| {
            s.present(NS) == Some(1.0) && s.present("odd").is_some()
        })
        .await;
    assert!(
        s.0.contains(r#"holder="a \"quoted\\\" holder\nwith é""#),
        "{}",
        s.0
    );
    let output = promtool_check(&s.0);
    assert!(
        output.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn silent_lease_watch_is_caught_by_a_direct_read() {
    let bed = Bed::start(settings(&[])).await;
    bed.seed_operator(NS);
    bed.until("leader present", |s| s.settled(NS)).await;
    let errors = |s: &Scrape| {
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "leases")],
        )
    };
    assert_eq!(errors(&bed.scrape().await), Some(0.0));
    bed.store.hang_watches(Kind::Lease, true);
    // The leader keeps renewing in the store, but the exporter's watch delivers nothing.
    // Over several lease durations no scrape may say "no leader".
    for _ in 0..30 {
        bed.store.renew_lease(NS, OPERATOR);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = bed.scrape().await;
        assert_ne!(
            s.present(NS),
            Some(0.0),
            "hung watch reported as no leader:\n{}",
            s.0
        );
    }
    // The reads found newer records and restarted the watch, and said so.
    let s = bed.scrape().await;
    assert!(errors(&s) >= Some(1.0), "{}", s.0);
    bed.store.hang_watches(Kind::Lease, false);
    bed.store.renew_lease(NS, OPERATOR);
    bed.until("leader present after the restart", |s| {
        s.present(NS) == Some(1.0)
    })
    .await;
    // A lease that really stops being renewed is still reported dead.
    bed.until("leader lost", |s| s.present(NS) == Some(0.0))
        .await;
}

#[tokio::test]
async fn a_relist_of_many_pods_comes_in_pages_and_misses_none() {
    let settings = settings(&[NS]);
    // One pod watch and one lease watch per component.
    let watches = u32::try_from(settings.components.len() * 2).expect("few");
    let bed = Bed::start(settings).await;
    for i in 0..250 {
        bed.store.apply(pod(
            NS,
            &format!("virt-operator-{i:03}"),
            &[("kubevirt.io", OPERATOR)],
            i % 2 == 0,
        ));
    }
    bed.until("250 pods", |s| s.operator("pods", NS) == Some(250.0))
        .await;
    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    let (pages_before, sent) = (faults.list_pages().len(), faults.objects_sent());
    // Force every watch to list again.
    faults.gone_on_resume(watches);
    faults.close_watches();
    bed.until("relisted", |s| {
        faults.objects_sent() >= sent + 250 && s.operator("pods", NS) == Some(250.0)
    })
    .await;
    let s = bed.scrape().await;
    assert_eq!(s.operator("pods_ready", NS), Some(125.0));
    // Pages of 100: the operator's 250 pods came as 100, 100 and 50, each page asked for
    // with a limit of 100.
    let pod_pages: Vec<_> = faults.list_pages()[pages_before..]
        .iter()
        .filter(|p| p.kind == "Pod" && p.items > 0)
        .map(|p| (p.limit, p.items, p.continued))
        .collect();
    let relist = [
        (Some(100), 100, false),
        (Some(100), 100, true),
        (Some(100), 50, true),
    ];
    assert!(pod_pages.windows(3).any(|w| w == relist), "{pod_pages:?}");
}

#[tokio::test]
async fn virt_synchronization_controller_is_watched_by_default() {
    const SYNC: &str = "virt-synchronization-controller";
    let bed = Bed::start(settings(&[])).await;
    for name in [
        "virt-synchronization-controller-a",
        "virt-synchronization-controller-b",
    ] {
        bed.store
            .apply(pod(NS, name, &[("kubevirt.io", SYNC)], true));
    }
    bed.store.apply(lease(
        NS,
        SYNC,
        "virt-synchronization-controller-b",
        LEASE_SECONDS,
    ));
    let labels = [("namespace", NS), ("component", SYNC)];
    let s = bed
        .until("sync controller leads", |s| {
            s.value("kubevirt_leader_present", &labels) == Some(1.0)
        })
        .await;
    assert_eq!(s.value("kubevirt_leader_pods_ready", &labels), Some(2.0));
    assert_eq!(s.value("kubevirt_leader_holder_ready", &labels), Some(1.0));
    assert_eq!(s.present(NS), None, "no virt-operator here");
}

#[tokio::test]
async fn components_found_nowhere_are_counted_and_named() {
    let bed = Bed::start(settings(&[])).await;
    bed.until_ready().await;
    let namespaces =
        |s: &Scrape, component| s.value("kubevirt_leader_namespaces", &[("component", component)]);
    let s = bed
        .until("found nowhere", |s| namespaces(s, OPERATOR) == Some(0.0))
        .await;
    assert_eq!(namespaces(&s, "virt-controller"), Some(0.0));
    let (_, page) = bed.get("/").await;
    assert!(page.contains("Found in no namespace"), "{page}");
    assert!(page.contains("virt-operator, virt-controller"), "{page}");
    bed.seed_operator(NS);
    bed.seed_operator("openshift-cnv");
    let s = bed
        .until("found", |s| namespaces(s, OPERATOR) == Some(2.0))
        .await;
    assert_eq!(namespaces(&s, "virt-controller"), Some(0.0));
    let (_, page) = bed.get("/").await;
    assert!(!page.contains("virt-operator, "), "{page}");
}

#[tokio::test]
async fn silent_pods_watch_is_caught_by_a_direct_list() {
    let mut settings = settings(&[]);
    settings.pod_check_interval = Duration::from_secs(1);
    let bed = Bed::start(settings).await;
    bed.seed_operator(NS);
    let _renewer = spawn_renewer(bed.store.clone());
    bed.until("leader present", |s| s.settled(NS)).await;
    let errors = |s: &Scrape| {
        s.value(
            "kubevirt_leader_exporter_watch_errors_total",
            &[("resource", "pods")],
        )
    };
    // A quiet, healthy watch is checked and agrees: no restart. Each of the three
    // components' pods watches lists its pods at least twice (the rate is the benchmark's).
    let faults = bed.sim.as_ref().expect("sim").faults.clone();
    let before = faults.list_pages().len();
    let checks = |component: &str| {
        let selector = format!("kubevirt.io={component}");
        faults.list_pages()[before..]
            .iter()
            .filter(|p| p.kind == "Pod" && p.labels.as_deref() == Some(selector.as_str()))
            .count()
    };
    let components = [
        OPERATOR,
        "virt-controller",
        "virt-synchronization-controller",
    ];
    let start = std::time::Instant::now();
    while components.iter().any(|c| checks(c) < 2) {
        assert!(start.elapsed() < PATIENCE, "quiet pods watches not checked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(errors(&bed.scrape().await), Some(0.0));

    bed.store.hang_watches(Kind::Pod, true);
    assert!(bed.store.set_pod_ready(NS, POD_B, false));
    let s = bed
        .until("readiness seen despite the hung watch", |s| {
            s.operator("pods_ready", NS) == Some(1.0)
        })
        .await;
    assert!(errors(&s) >= Some(1.0), "{}", s.0);
    assert_eq!(s.present(NS), Some(1.0));
}
