//! The Prometheus registry. The per-component series come from one snapshot of the targets
//! per scrape, judged at scrape time, so a lease that silently stops being renewed shows
//! without any new event, and concurrent scrapes never see each other's half-written values.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;

use prometheus::{
    Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::{
    heap,
    history::{LeaseStats, RENEWAL_BUCKETS},
    judge::Verdict,
    targets::{Snapshot, Targets},
    watch::Watched,
};

/// The commit the binary was built from, as the release script and the Dockerfile pass it
/// (`KUBEVIRT_LEADER_EXPORTER_COMMIT` at build time); `unknown` for a plain `cargo build`.
pub const COMMIT: &str = match option_env!("KUBEVIRT_LEADER_EXPORTER_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Prefix of every series the exporter serves.
pub const PREFIX: &str = "kubevirt_leader";

/// Pod names are DNS subdomains (at most 253 characters); a longer holder cannot name a pod,
/// and an unbounded label value would bloat every scrape.
const MAX_HOLDER_LEN: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metrics: {0}")]
    Register(#[from] prometheus::Error),
}

/// How long a rendered body is served again while no target has changed. Every watch event,
/// every lease deadline and every target discovered, replaced or forgotten changes the
/// targets, so leader state is exact at every scrape; within this window only continuously
/// moving values (lease age, process CPU time, request, review and refusal counters) can
/// lag, and a burst of scrapes costs one rendering instead of one each.
const REUSE_FOR: Duration = Duration::from_secs(1);

struct Rendered {
    generation: u64,
    at: Instant,
    body: Bytes,
}

/// The registry and the metrics updated outside of scrapes.
pub struct Metrics {
    registry: Registry,
    watch_errors: IntCounterVec,
    watch_events: IntCounterVec,
    http_requests: IntCounterVec,
    auth_reviews: IntCounterVec,
    targets: Arc<Targets>,
    last: RwLock<Option<Rendered>>,
}

impl Metrics {
    /// Registers every metric once.
    pub fn new(targets: Arc<Targets>) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let watch_errors = IntCounterVec::new(
            Opts::new(
                format!("{PREFIX}_exporter_watch_errors_total"),
                "Watch errors seen, by resource.",
            ),
            &["resource"],
        )?;
        let watch_events = IntCounterVec::new(
            Opts::new(
                format!("{PREFIX}_exporter_watch_events_total"),
                "Objects the API server sent on the exporter's watches (and the lists that start \
                 them), by resource: what watching costs.",
            ),
            &["resource"],
        )?;
        for watched in Watched::ALL {
            watch_errors.with_label_values(&[watched.as_str()]);
            watch_events.with_label_values(&[watched.as_str()]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_exporter_build_info"),
                "Always 1; names the exporter's version and the commit it was built from.",
            ),
            &["version", "commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
            .set(1);
        let http_requests = IntCounterVec::new(
            Opts::new(
                format!("{PREFIX}_exporter_http_requests_total"),
                "HTTP requests answered, by path (`other` for unknown ones) and status code; \
                 401 and 403 are refused scrapers.",
            ),
            &["path", "code"],
        )?;
        let auth_reviews = IntCounterVec::new(
            Opts::new(
                format!("{PREFIX}_exporter_auth_reviews_total"),
                "TokenReviews and SubjectAccessReviews, by kind and result (authenticated, \
                 unauthenticated, allowed, denied, error, or throttled when not sent).",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(watch_errors.clone()))?;
        registry.register(Box::new(watch_events.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(auth_reviews.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(LeaderCollector::new(targets.clone())?))?;
        register_process_collector(&registry)?;
        registry.register(Box::new(HeapCollector::new()?))?;
        Ok(Self {
            registry,
            watch_errors,
            watch_events,
            http_requests,
            auth_reviews,
            targets,
            last: RwLock::new(None),
        })
    }

    /// Counts one answered request; `path` must be one of a fixed set.
    pub fn http_request(&self, path: &str, code: &str) {
        self.http_requests.with_label_values(&[path, code]).inc();
    }

    /// The counters the authentication gate updates.
    pub fn auth_metrics(&self) -> crate::auth::AuthMetrics {
        crate::auth::AuthMetrics {
            reviews: self.auth_reviews.clone(),
        }
    }

    pub fn watch_error(&self, watched: Watched) {
        self.watch_errors
            .with_label_values(&[watched.as_str()])
            .inc();
    }

    /// Counts `event` of a watch of `watched` when it carries an object: the start and
    /// end of a list carry none.
    pub fn watch_event<K>(&self, watched: Watched, event: &kube::runtime::watcher::Event<K>) {
        use kube::runtime::watcher::Event;
        if matches!(
            event,
            Event::Apply(_) | Event::InitApply(_) | Event::Delete(_)
        ) {
            self.watch_events
                .with_label_values(&[watched.as_str()])
                .inc();
        }
    }

    /// The text exposition of every metric, rendered again when a target has changed or
    /// the last rendering is older than [`REUSE_FOR`].
    pub fn render(&self) -> Result<Bytes, MetricsError> {
        let generation = self.targets.generation();
        if let Some(last) = self
            .last
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && last.generation == generation
            && last.at.elapsed() < REUSE_FOR
        {
            return Ok(last.body.clone());
        }
        let at = Instant::now();
        let mut buf = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        let body = Bytes::from(buf);
        *self.last.write().unwrap_or_else(PoisonError::into_inner) = Some(Rendered {
            generation,
            at,
            body: body.clone(),
        });
        Ok(body)
    }
}

#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) -> Result<(), prometheus::Error> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_: &Registry) -> Result<(), prometheus::Error> {
    Ok(())
}

/// The live heap, read at scrape time; no series when the binary does not count its heap.
struct HeapCollector {
    live: Desc,
}

impl HeapCollector {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            live: desc(
                "exporter_heap_bytes",
                "Bytes the exporter has allocated and not yet freed. Resident memory also holds \
                 what the allocator keeps for reuse; a leak shows here.",
                &[],
            )?,
        })
    }
}

impl Collector for HeapCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.live]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(live) = heap::live_bytes() else {
            return Vec::new();
        };
        let mut family = family_of(&self.live);
        family.mut_metric().push(gauge(&[], live as f64));
        vec![family]
    }
}

/// One per-scrape series family.
struct Family {
    desc: Desc,
    extract: fn(&Verdict) -> Option<f64>,
}

/// Builds the per-component and watch health series from a snapshot at scrape time.
struct LeaderCollector {
    targets: Arc<Targets>,
    families: Vec<Family>,
    holder: Desc,
    namespaces: Desc,
    watch_healthy: Desc,
    renewal_interval: Desc,
    changes: Desc,
    holder_since: Desc,
    refused: Desc,
}

fn desc(name: &str, help: &str, labels: &[&str]) -> Result<Desc, prometheus::Error> {
    Desc::new(
        format!("{PREFIX}_{name}"),
        help.into(),
        labels.iter().map(|l| (*l).to_owned()).collect(),
        HashMap::new(),
    )
}

impl LeaderCollector {
    fn new(targets: Arc<Targets>) -> Result<Self, prometheus::Error> {
        let nc = &["namespace", "component"];
        let family = |name, help, extract| {
            Ok::<_, prometheus::Error>(Family {
                desc: desc(name, help, nc)?,
                extract,
            })
        };
        let families = vec![
            family("pods", "Matching pods not being deleted.", |v| {
                Some(v.pods.into())
            })?,
            family("pods_ready", "Matching pods that are Ready.", |v| {
                Some(v.pods_ready.into())
            })?,
            family(
                "present",
                "1 when a live leader holds the lease (by the lease alone), else 0.",
                |v| Some(if v.present { 1.0 } else { 0.0 }),
            )?,
            family(
                "holder_ready",
                "1 when the lease holder is a Ready pod of the component, 0 when its pod is not \
                 Ready or is being deleted; absent when no pod matches the holder.",
                |v| v.holder_ready.map(|r| if r { 1.0 } else { 0.0 }),
            )?,
            family(
                "lease_age_seconds",
                "Seconds since the exporter last saw the lease record change.",
                |v| v.lease.as_ref().map(|l| l.age.as_secs_f64()),
            )?,
            family("lease_duration_seconds", "The lease's own duration.", |v| {
                v.lease
                    .as_ref()
                    .and_then(|l| l.duration)
                    .map(|d| d.as_secs_f64())
            })?,
            family("lease_transitions", "The lease's leaseTransitions.", |v| {
                v.lease.as_ref().and_then(|l| l.transitions).map(f64::from)
            })?,
        ];
        Ok(Self {
            targets,
            families,
            holder: desc(
                "holder_info",
                "1, naming the current lease holder.",
                &["namespace", "component", "holder"],
            )?,
            namespaces: desc(
                "namespaces",
                "Namespaces where the component has pods or its Lease; 0 means found nowhere.",
                &["component"],
            )?,
            watch_healthy: desc(
                "exporter_watch_healthy",
                "1 while every watch of the resource is working, else 0.",
                &["resource"],
            )?,
            renewal_interval: desc(
                "lease_renewal_interval_seconds",
                "Time between successive changes of the lease record by the same holder, by \
                 the exporter's clock; intervals across a spell in which the watch failed are \
                 not counted.",
                nc,
            )?,
            changes: desc(
                "changes_total",
                "Lease holder changes the exporter has seen, to and from no holder included.",
                nc,
            )?,
            holder_since: desc(
                "holder_since_seconds",
                "How long the current holder has held the lease, by the exporter's clock since \
                 it saw the change (or since it started).",
                nc,
            )?,
            refused: desc(
                "exporter_discovery_refused_total",
                "Discovered components not watched because as many as allowed were watched \
                 already.",
                &[],
            )?,
        })
    }

    fn refused(&self) -> MetricFamily {
        let mut family = family_of(&self.refused);
        family.set_field_type(MetricType::COUNTER);
        let refused = self.targets.refused() as f64;
        family.mut_metric().push(counter(&[], refused));
        family
    }

    fn watch_health(&self, snapshot: &Snapshot) -> MetricFamily {
        let mut family = family_of(&self.watch_healthy);
        for (watched, ok) in [
            (Watched::Pods, snapshot.pods_healthy()),
            (Watched::Leases, snapshot.leases_healthy()),
        ] {
            let value = if ok { 1.0 } else { 0.0 };
            family
                .mut_metric()
                .push(gauge(&[("resource", watched.as_str())], value));
        }
        family
    }
}

fn family_of(desc: &Desc) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(MetricType::GAUGE);
    family
}

/// A gauge sample; `labels` must be sorted by name.
fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut metric = Metric::from_gauge(g);
    metric.set_label(label_pairs(labels));
    metric
}

fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut metric = Metric::from_label(label_pairs(labels));
    metric.set_counter(c);
    metric
}

fn histogram(labels: &[(&str, &str)], stats: &LeaseStats) -> Metric {
    let counts = &stats.renewals;
    let buckets = RENEWAL_BUCKETS
        .iter()
        .zip(counts.buckets)
        .map(|(bound, count)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound);
            bucket.set_cumulative_count(count);
            bucket
        })
        .collect();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(counts.count);
    h.set_sample_sum(counts.sum);
    let mut metric = Metric::from_label(label_pairs(labels));
    metric.set_histogram(h);
    metric
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

/// A per-component series' labels, sorted by name. A discovered component's carry
/// `discovered="true"`; a configured one's are exactly what they always were.
fn component_labels<'a>(
    component: &'a str,
    discovered: bool,
    namespace: Option<&'a str>,
    holder: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("component", component)];
    if discovered {
        labels.push(("discovered", "true"));
    }
    labels.extend(holder.map(|h| ("holder", h)));
    labels.extend(namespace.map(|ns| ("namespace", ns)));
    labels
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Collector for LeaderCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs: Vec<&Desc> = self.families.iter().map(|f| &f.desc).collect();
        descs.extend([
            &self.holder,
            &self.namespaces,
            &self.watch_healthy,
            &self.renewal_interval,
            &self.changes,
            &self.holder_since,
            &self.refused,
        ]);
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.targets.snapshot(Instant::now());
        let mut families: Vec<MetricFamily> =
            self.families.iter().map(|f| family_of(&f.desc)).collect();
        let mut holders = family_of(&self.holder);
        let mut renewals = family_of(&self.renewal_interval);
        renewals.set_field_type(MetricType::HISTOGRAM);
        let mut changes = family_of(&self.changes);
        changes.set_field_type(MetricType::COUNTER);
        let mut held = family_of(&self.holder_since);
        for target in &snapshot.targets {
            let component = target.component.as_str();
            let discovered = target.discovered();
            let known = target
                .verdicts
                .iter()
                .flatten()
                .filter(|(_, v)| v.is_known());
            for (ns, verdict) in known {
                let labels = component_labels(component, discovered, Some(ns), None);
                for (family, out) in self.families.iter().zip(families.iter_mut()) {
                    if let Some(value) = (family.extract)(verdict) {
                        out.mut_metric().push(gauge(&labels, value));
                    }
                }
                if let Some(holder) = &verdict.holder {
                    let holder = truncate(holder, MAX_HOLDER_LEN);
                    let labels = component_labels(component, discovered, Some(ns), Some(holder));
                    holders.mut_metric().push(gauge(&labels, 1.0));
                }
                if let Some(stats) = target.stats.get(ns) {
                    renewals.mut_metric().push(histogram(&labels, stats));
                    changes
                        .mut_metric()
                        .push(counter(&labels, stats.changes as f64));
                    if verdict.holder.is_some() {
                        let since = stats.holder_since.as_secs_f64();
                        held.mut_metric().push(gauge(&labels, since));
                    }
                }
            }
        }
        families.extend([holders, renewals, changes, held]);
        let mut namespaces = family_of(&self.namespaces);
        for found in snapshot.found() {
            if let Some(count) = found.namespaces {
                let labels = component_labels(found.component, found.discovered, None, None);
                namespaces.mut_metric().push(gauge(&labels, count as f64));
            }
        }
        families.push(namespaces);
        families.push(self.watch_health(&snapshot));
        families.push(self.refused());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendering_is_reused_until_the_cache_changes() {
        let settings = crate::config::Settings::with_defaults(std::time::Duration::from_secs(5));
        let targets = Arc::new(Targets::new(&settings));
        let metrics = Metrics::new(targets.clone()).expect("metrics");
        let first = metrics.render().expect("render");
        assert!(
            std::str::from_utf8(&first)
                .expect("UTF-8")
                .contains("kubevirt_leader_exporter_build_info")
        );
        assert_eq!(metrics.render().expect("render").as_ptr(), first.as_ptr());
        targets.handles()[0].pods_failed();
        assert_ne!(metrics.render().expect("render").as_ptr(), first.as_ptr());
    }

    #[test]
    fn no_heap_series_without_the_counting_allocator() {
        let settings = crate::config::Settings::with_defaults(std::time::Duration::from_secs(5));
        let metrics = Metrics::new(Arc::new(Targets::new(&settings))).expect("metrics");
        let body = metrics.render().expect("render");
        let body = std::str::from_utf8(&body).expect("UTF-8");
        assert!(body.contains("kubevirt_leader_exporter_build_info"));
        assert!(!body.contains("heap_bytes"), "{body}");
    }

    #[test]
    fn only_discovered_series_say_so() {
        use crate::{
            leases::LeaseChange,
            pods::{PodChange, PodName},
        };
        let settings = crate::config::Settings::with_defaults(std::time::Duration::from_secs(5));
        let targets = Arc::new(Targets::new(&settings));
        let metrics = Metrics::new(targets.clone()).expect("metrics");
        let discovered = targets
            .discover(
                crate::components::Component::discovered("x-lock", None),
                "ns".into(),
            )
            .expect("new");
        let now = Instant::now();
        for target in targets.all() {
            target.apply_pods(PodChange::ListStarted);
            target.apply_pods(PodChange::ListDone);
            target.apply_leases(LeaseChange::ListStarted, now);
            target.apply_leases(LeaseChange::ListDone, now);
        }
        let record = crate::judge::LeaseRecord {
            holder: Some("gone-pod".into()),
            duration_seconds: Some(15),
            has_spec: true,
            ..Default::default()
        };
        discovered.apply_leases(LeaseChange::Applied("ns".into(), record), now);
        targets.handles()[0].apply_pods(PodChange::Applied(
            PodName {
                namespace: "kubevirt".into(),
                name: "a".into(),
            },
            crate::judge::PodInfo::default(),
        ));
        let body = metrics.render().expect("render");
        let body = std::str::from_utf8(&body).expect("UTF-8");
        for line in [
            "kubevirt_leader_present{component=\"x-lock\",discovered=\"true\",namespace=\"ns\"} 1",
            "kubevirt_leader_holder_info{component=\"x-lock\",discovered=\"true\",holder=\"gone-pod\",namespace=\"ns\"} 1",
            "kubevirt_leader_namespaces{component=\"x-lock\",discovered=\"true\"} 1",
            "kubevirt_leader_pods{component=\"virt-operator\",namespace=\"kubevirt\"} 1",
            "kubevirt_leader_namespaces{component=\"virt-operator\"} 1",
            "kubevirt_leader_exporter_discovery_refused_total 0",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
        }
        let virt = body.lines().filter(|l| l.contains("virt-operator"));
        assert!(virt.clone().count() > 0);
        assert!(virt.clone().all(|l| !l.contains("discovered")), "{body}");
        targets.forget("ns", "x-lock");
        let body = metrics.render().expect("render");
        assert!(
            !std::str::from_utf8(&body)
                .expect("UTF-8")
                .contains("x-lock")
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
