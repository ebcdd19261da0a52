//! The exporter against a simulated KubeVirt control plane in the same process, narrated so
//! a person can follow `/metrics`. Two virt-operator pods elect a leader as client-go does:
//! the leader dies and the standby takes over without the exporter ever reporting "no
//! leader"; later lease updates are rejected while the pods stay Ready, and the exporter
//! reports the lost leader that NoLeadingVirtOperator exists for.
//!
//!     cargo run --example demo [-- EXPORTER FLAGS]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use k8s_openapi::api::coordination::v1::Lease;
use kubevirt_leader_exporter::{
    DEFAULT_LOG_FILTER, Exporter, client_from_kubeconfig,
    config::{Args, Auth, Settings},
    init_logging,
    targets::Targets,
};
use kubevirt_leader_sim::{SimServer, Store, lease, pod};
use tokio::signal::unix::{SignalKind, signal};

const NAMESPACE: &str = "kubevirt";
const COMPONENT: &str = "virt-operator";
const PODS: [&str; 2] = [
    "virt-operator-7c9f5d4b8-a1b2c",
    "virt-operator-7c9f5d4b8-x9y8z",
];
/// KubeVirt's own leader election: a 15 s lease, renewed every 2 s, a renew deadline of 10 s;
/// a standby looks every 2 s plus up to 120 % jitter.
const LEASE_SECONDS: i32 = 15;
const RETRY: Duration = Duration::from_secs(2);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How long each act lasts: a leader renewing, then the leader dead until the standby has
/// taken over, then lease updates rejected.
const LEADING: Duration = Duration::from_secs(40);
const REJECTED: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(250);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    // The demo serves made-up data: on this machine only, unless asked otherwise.
    if matches.value_source("listen") == Some(ValueSource::DefaultValue) {
        args.listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    }
    init_logging(args.log_format, DEFAULT_LOG_FILTER);
    let mut settings = Settings::from_args(&args).context("invalid configuration")?;
    // It simulates virt-operator alone: the other built-in components would only be warned
    // about as missing. A component file given on the command line is watched as it is.
    if args.scope.config.is_none() {
        settings.components.retain(|c| c.name == COMPONENT);
    }
    // The simulated API server reviews no tokens: the demo is open to whoever runs it, on
    // loopback unless --listen says otherwise.
    settings.auth = Auth::None;
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let store = Store::default();
    let server = SimServer::start(store.clone())
        .await
        .context("starting the simulated API server")?;
    seed(&store);
    let client = client_from_kubeconfig(server.kubeconfig()).await?;
    let exporter = Exporter::start(&settings, client, shutdown).await?;
    print(&format!(
        "Simulated Kubernetes API server: {}\nMetrics:     http://{addr}/metrics\nStatus page: http://{addr}/\n\
         Watch kubevirt_leader_present{{namespace=\"{NAMESPACE}\",component=\"{COMPONENT}\"}}. The story \
         repeats until Ctrl-C.\n",
        server.url(),
        addr = browsable(exporter.addr)
    ));
    let story = Story {
        store,
        targets: exporter.targets.clone(),
        limit: Duration::from_secs(LEASE_SECONDS.unsigned_abs().into()) + settings.lease_grace,
        start: Instant::now(),
        reported: None,
    };
    let story = tokio::spawn(story.play());
    let result = exporter.wait().await;
    story.abort();
    server.stop().await;
    result?;
    Ok(())
}

/// An address a browser on this machine can open: `0.0.0.0` and `::` are not.
fn browsable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

fn seed(store: &Store) {
    for name in PODS {
        store.apply(pod(NAMESPACE, name, &[("kubevirt.io", COMPONENT)], true));
    }
    store.apply(lease(NAMESPACE, COMPONENT, PODS[0], LEASE_SECONDS));
}

/// Writes to stdout. A reader that went away (a closed pipe) must not stop the demo, so
/// write errors are ignored where `println!` would panic.
fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// A standby candidate, as client-go's elector behaves: it looks at the lease every retry
/// period plus jitter, and takes it over once its own look has seen the record unchanged for
/// the lease duration.
struct Standby {
    observed: Option<(String, Instant)>,
    next_look: Instant,
}

impl Standby {
    fn new(now: Instant) -> Self {
        Self {
            observed: None,
            next_look: now,
        }
    }

    /// Looks at the lease when due; true when it took the lease over as `name`. While
    /// `writes_allowed` is false its update is rejected and it keeps waiting.
    fn look(&mut self, store: &Store, name: &str, now: Instant, writes_allowed: bool) -> bool {
        if now < self.next_look {
            return false;
        }
        self.next_look = now + RETRY.mul_f64(1.0 + 1.2 * random_fraction());
        let record = store
            .get::<Lease>(NAMESPACE, COMPONENT)
            .and_then(|l| serde_json::to_string(&l.spec).ok())
            .unwrap_or_default();
        match &self.observed {
            Some((seen, at)) if *seen == record => {
                let expired = now.duration_since(*at)
                    >= Duration::from_secs(LEASE_SECONDS.unsigned_abs().into());
                expired && writes_allowed && store.take_lease(NAMESPACE, COMPONENT, name)
            }
            _ => {
                self.observed = Some((record, now));
                false
            }
        }
    }
}

/// A number in [0, 1) that differs between calls, for the standby's jitter.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The scenario, and what the exporter last said about it.
struct Story {
    store: Store,
    targets: Arc<Targets>,
    /// The lease duration plus the exporter's grace.
    limit: Duration,
    start: Instant,
    reported: Option<(bool, String)>,
}

impl Story {
    fn say(&self, text: &str) {
        print(&format!("[{:>4}s] {text}", self.start.elapsed().as_secs()));
    }

    /// Plays rounds: the leader renews, then dies without releasing the lease and the
    /// standby takes over; the new leader renews, then its lease updates are rejected while
    /// both pods stay Ready, until they are allowed again and the other pod takes the lease.
    async fn play(mut self) {
        let mut leader = 0;
        self.say(&format!(
            "{} holds the lease and renews it every 2s; {} stands by and looks every 2 to 4.4s",
            PODS[0], PODS[1]
        ));
        loop {
            self.renew_for(LEADING).await;
            leader = 1 - leader;
            self.die_and_take_over(PODS[leader]).await;
            self.renew_for(LEADING).await;
            leader = 1 - leader;
            self.reject_updates(PODS[leader]).await;
            self.say("the story starts over");
        }
    }

    /// Narrates and waits a tick.
    async fn tick(&mut self) {
        self.report();
        tokio::time::sleep(TICK).await;
    }

    async fn renew_for(&mut self, length: Duration) {
        let act = Instant::now();
        let mut renewed = act;
        self.store.renew_lease(NAMESPACE, COMPONENT);
        while act.elapsed() < length {
            if renewed.elapsed() >= RETRY {
                renewed = Instant::now();
                self.store.renew_lease(NAMESPACE, COMPONENT);
            }
            self.tick().await;
        }
    }

    async fn die_and_take_over(&mut self, standby: &str) {
        let died = Instant::now();
        self.say(&format!(
            "the leader dies without releasing the lease (its name stays in it); {standby} takes \
             over 15 to 23.8s after the last renewal, within the exporter's limit of {:.0}s \
             (lease duration + grace): kubevirt_leader_present stays 1",
            self.limit.as_secs_f64()
        ));
        let mut candidate = Standby::new(died);
        while !candidate.look(&self.store, standby, Instant::now(), true) {
            self.tick().await;
        }
        self.say(&format!(
            "{standby} took the lease over {:.1}s after the leader died, and renews it",
            died.elapsed().as_secs_f64()
        ));
    }

    async fn reject_updates(&mut self, standby: &str) {
        self.say(&format!(
            "lease updates are now rejected (an admission webhook, or lost RBAC) while both pods \
             stay Ready: the leader gives up after its {}s renew deadline and nobody can take \
             over; the exporter reports no leader after {:.0}s. In a cluster, that 0 with \
             Ready pods for 10 minutes is what fires NoLeadingVirtOperator (this act lasts 1)",
            RENEW_DEADLINE.as_secs(),
            self.limit.as_secs_f64()
        ));
        let act = Instant::now();
        let mut candidate = Standby::new(act);
        while act.elapsed() < REJECTED {
            candidate.look(&self.store, standby, Instant::now(), false);
            self.tick().await;
        }
        self.say("lease updates are allowed again");
        while !candidate.look(&self.store, standby, Instant::now(), true) {
            self.tick().await;
        }
        self.say(&format!("{standby} takes the lease and renews it"));
    }

    /// Prints what the exporter now says about virt-operator, when it changed.
    fn report(&mut self) {
        let snapshot = self.targets.snapshot(Instant::now());
        let seen = snapshot
            .targets
            .iter()
            .filter(|t| t.component == COMPONENT)
            .flat_map(|t| t.verdicts.iter().flatten())
            .find(|(ns, v)| ns == NAMESPACE && v.is_known());
        let Some((_, v)) = seen else { return };
        let state = (v.present, v.holder.clone().unwrap_or_default());
        if self.reported.as_ref() != Some(&state) {
            self.say(&format!(
                "exporter: kubevirt_leader_present = {}, holder {} ({})",
                u8::from(v.present),
                state.1,
                v.reason
            ));
            self.reported = Some(state);
        }
    }
}
