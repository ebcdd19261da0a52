//! What the fuzz targets share: the exporter's state for its built-in components, fed as
//! the watches feed it, and every way it is read (a scrape, the status page and its JSON).

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use kubevirt_leader_exporter::{
    config::Settings,
    metrics::Metrics,
    page, status,
    targets::{Target, Targets},
};

pub struct Bed {
    pub targets: Arc<Targets>,
    pub metrics: Arc<Metrics>,
}

/// One exporter state for the whole run: inputs replace what the previous one left.
pub fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let targets = Arc::new(Targets::new(&Settings::with_defaults(Duration::from_secs(10))));
        let metrics = Arc::new(Metrics::new(targets.clone()).expect("metrics register"));
        Bed { targets, metrics }
    })
}

impl Bed {
    /// The virt-operator target, cluster-wide.
    pub fn target(&self) -> &Arc<Target> {
        &self.targets.handles()[0]
    }

    /// Reads everything the exporter serves, now and an hour from now.
    pub fn read_all(&self) {
        let _ = self.metrics.render();
        let now = Instant::now();
        for at in [now, now + Duration::from_secs(3600)] {
            let _ = self.targets.snapshot(at);
            let status = status::status(
                &self.targets.status(at),
                at,
                SystemTime::now(),
                self.targets.grace(),
            );
            let _ = page::render(&status);
            let _ = serde_json::to_vec(&status);
        }
    }
}
