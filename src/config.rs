//! Command-line flags and the component file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::auth::CacheSettings;
pub use crate::components::{Component, ComponentError, Preset};
use crate::components::{compose, default_components, is_dns_label};
use crate::http::Limits;
use crate::publish::PodIdentity;

/// Prometheus exporter that tells whether KubeVirt's leader-elected components
/// (virt-operator, virt-controller, virt-synchronization-controller) have a live leader.
#[derive(Clone, Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Address to serve /metrics, /livez, /readyz and the status page on.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_EXPORTER_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// Log format: `text` for people, `json` for log pipelines. Verbosity comes from RUST_LOG.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub scope: Scope,

    /// Extra time, beyond the lease's own duration, before an unrenewed lease counts as dead.
    /// A client-go standby takes an abandoned lease over only after its own look has seen
    /// the record unchanged for the lease duration, and it looks every retry period plus up
    /// to 120 % jitter. The default covers KubeVirt's 2 s retry period twice over
    /// (2 x 2 s x 2.2 = 8.8 s), so a normal failover never reads as "no leader". With other
    /// timings use at least 2 x retry period x 2.2.
    /// At most 5 minutes: a longer grace would hide a dead leader for most of the time the
    /// alert waits.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_LEASE_GRACE", default_value = "10s", value_parser = parse_grace, allow_hyphen_values = true)]
    pub lease_grace: Duration,

    /// When a pods watch has delivered nothing for this long, list the component's pods once
    /// (at most 100) and compare them with what the watch delivered; a difference that a
    /// second list 5 s later confirms means the watch hangs silently, and it starts over.
    /// At most once per this interval per watch, only while it is quiet. 0 turns it off.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_POD_CHECK_INTERVAL", default_value = "1m", value_parser = parse_check_interval)]
    pub pod_check_interval: Duration,

    /// Also find every leader election in the watched namespaces from its Lease, and judge
    /// each as a component named after its Lease, whose pods are those of the workload
    /// (Deployment, StatefulSet, DaemonSet, static pods) its holder belongs to. Node and
    /// kube-apiserver heartbeats are left out. Needs `get` on ReplicaSets, Deployments,
    /// StatefulSets and DaemonSets.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_DISCOVER")]
    pub discover: bool,

    /// With --discover, the most components discovered at once (1 to 1000); beyond it a
    /// Lease is left out, logged and counted in
    /// kubevirt_leader_exporter_discovery_refused_total.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_MAX_DISCOVERED", default_value_t = MAX_DISCOVERED as u32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_discovered: u32,

    /// PEM certificate (chain) to serve HTTPS with; needs --tls-key-file. Reloaded when it
    /// changes on disk. Default: with --auth=kubernetes a self-signed certificate made at
    /// start (encrypted, but clients cannot verify it); with --auth=none plain HTTP.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_EXPORTER_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_EXPORTER_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Who may read /metrics, / and /status.json (/livez and /readyz are always open).
    /// `kubernetes`: a bearer token (checked with a TokenReview) or a client certificate
    /// (see --client-ca-file), then a SubjectAccessReview of the path with verb `get`;
    /// always over HTTPS. `none`: anyone who reaches the port.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH", value_enum, default_value_t = AuthMode::Kubernetes)]
    pub auth: AuthMode,

    /// Audiences a bearer token must be meant for (repeat, or separate with commas). Default:
    /// the API server's own.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_EXPORTER_AUTH_TOKEN_AUDIENCES",
        value_delimiter = ','
    )]
    pub auth_token_audiences: Vec<String>,

    /// PEM CA bundle that client certificates must chain to, read again when the file
    /// changes; the certificate's CN is the user and its O fields are the groups. Default:
    /// client certificates are not asked for.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Take the client CA from the API server's own (`client-ca-file` of the ConfigMap
    /// kube-system/extension-apiserver-authentication), watched so that a rotated CA is
    /// trusted at once; needs the RoleBinding to `extension-apiserver-authentication-reader`.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_EXPORTER_CLIENT_CA_FROM_CLUSTER",
        conflicts_with = "client_ca_file"
    )]
    pub client_ca_from_cluster: bool,

    /// At most this many TokenReviews and SubjectAccessReviews a second (at most 4 at once);
    /// beyond that new credentials get 429 while cached ones keep being answered.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH_REVIEWS_PER_SECOND", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub auth_reviews_per_second: u32,

    /// How long an authenticated token is trusted without a new TokenReview (never beyond
    /// the token's own expiry), from 1s to 1h.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH_TOKEN_CACHE_TTL", default_value = "1m", value_parser = parse_cache_ttl)]
    pub auth_token_cache_ttl: Duration,

    /// How long an allowed SubjectAccessReview is kept, from 1s to 1h: a removed
    /// RoleBinding takes effect within it.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH_ALLOWED_CACHE_TTL", default_value = "5m", value_parser = parse_cache_ttl)]
    pub auth_allowed_cache_ttl: Duration,

    /// How long a denied SubjectAccessReview, or a token refused without an error, is
    /// kept, from 1s to 1h: a new RoleBinding takes effect within it.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH_DENIED_CACHE_TTL", default_value = "30s", value_parser = parse_cache_ttl)]
    pub auth_denied_cache_ttl: Duration,

    /// Entries each of the authentication caches holds at most (accepted tokens, refused
    /// tokens, allowed and denied decisions, callers let in before), from 16 to 1000000.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_AUTH_CACHE_ENTRIES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub auth_cache_entries: u32,

    /// Connections served at once. Further ones wait in the kernel's accept queue until one
    /// ends, and cost no memory meanwhile. Each served one costs at most about 100 KiB.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT.connections as u32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// TLS handshakes in flight at once, among the connections served; the wait for a turn
    /// counts towards the handshake's 10 s timeout.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_MAX_TLS_HANDSHAKES", default_value_t = Limits::DEFAULT.handshakes as u32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_tls_handshakes: u32,

    /// The largest request line and headers, in bytes; a larger request gets 431 and its
    /// connection is closed.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_MAX_HEADER_BYTES", default_value_t = Limits::DEFAULT.header_bytes as u32, value_parser = clap::value_parser!(u32).range(4096..=1_048_576))]
    pub max_header_bytes: u32,

    /// How long a response may wait for the client to read it: a connection whose writes make
    /// no progress for this long is closed.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_write_timeout)]
    pub write_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Kubernetes,
    None,
}

/// Where client certificates are verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCa {
    File(PathBuf),
    Cluster,
}

/// How the endpoints other than /livez and /readyz are protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Kubernetes {
        audiences: Vec<String>,
        client_ca: Option<ClientCa>,
        reviews_per_second: u32,
        cache: CacheSettings,
    },
}

/// What to watch: the cluster, the components and the namespaces.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Scope {
    /// Kubeconfig file to use. Default: in-cluster config, then KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// YAML file listing components to watch, besides those of --preset. Default: none.
    #[arg(long, env = "KUBEVIRT_LEADER_EXPORTER_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Built-in components to watch (repeat, or separate with commas): `kubevirt`
    /// (virt-operator, virt-controller, virt-synchronization-controller), `kubevirt-stack`
    /// (KubeVirt, CDI, HCO, SSP, hostpath-provisioner-operator, AAQ, virt-template, IPAM
    /// controller) or `control-plane` (kube-scheduler, kube-controller-manager). Default:
    /// `kubevirt`, unless --config is given.
    #[arg(
        long = "preset",
        env = "KUBEVIRT_LEADER_EXPORTER_PRESETS",
        value_enum,
        value_delimiter = ',',
        global = true
    )]
    pub presets: Vec<Preset>,

    /// Namespace to watch (repeat, or separate with commas). Default: the whole cluster.
    #[arg(
        long = "namespace",
        env = "KUBEVIRT_LEADER_EXPORTER_NAMESPACES",
        value_delimiter = ',',
        global = true
    )]
    pub namespaces: Vec<String>,
}

impl Scope {
    /// The components of the presets and the component file; `kubevirt` when neither is given.
    pub fn components(&self) -> Result<Vec<Component>, ConfigError> {
        Ok(compose(&self.presets, self.config.as_deref())?)
    }

    /// The namespaces to watch, sorted, each once; empty for the whole cluster.
    pub fn namespaces(&self) -> Result<Vec<String>, ConfigError> {
        namespaces(&self.namespaces)
    }
}

/// `given`, trimmed, sorted and each once, when every one is a valid namespace name; empty
/// means the whole cluster.
pub fn namespaces(given: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut namespaces: Vec<String> = given
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    match namespaces.iter().find(|n| !is_dns_label(n)) {
        Some(bad) => Err(ConfigError::Namespace(bad.clone())),
        None => Ok(namespaces),
    }
}

/// `--lease-grace`'s default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The longest `--lease-grace` accepted.
pub const MAX_GRACE: Duration = Duration::from_secs(300);

/// The shortest `--lease-grace` that covers a client-go failover with KubeVirt's 2 s retry
/// period: a standby looks every retry period plus up to 120 % jitter, and needs two looks
/// (2 x 2 s x 2.2).
pub const MIN_SAFE_GRACE: Duration = Duration::from_millis(8_800);

fn parse_grace(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err("must not be negative".into());
    }
    let grace = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write it as 10s, 1m30s, 500ms, ...)"))?;
    if grace > MAX_GRACE {
        return Err(format!(
            "at most {}: a longer grace would hide a dead leader for most of the 10 minutes \
             the alert waits",
            humantime::format_duration(MAX_GRACE)
        ));
    }
    Ok(grace)
}

/// The longest `--pod-check-interval` accepted: kube's own idle timeout (about 5 minutes)
/// restarts a hung watch by then anyway.
pub const MAX_POD_CHECK_INTERVAL: Duration = Duration::from_secs(300);

fn parse_check_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write it as 1m, 30s, ...; 0 turns the check off)"))?;
    if interval > MAX_POD_CHECK_INTERVAL {
        return Err(format!(
            "at most {}, or 0 to turn the check off",
            humantime::format_duration(MAX_POD_CHECK_INTERVAL)
        ));
    }
    if !interval.is_zero() && interval < Duration::from_secs(1) {
        return Err("at least 1s, or 0 to turn the check off".into());
    }
    Ok(interval)
}

/// The longest lifetime of an authentication cache entry: a revoked credential or a removed
/// RoleBinding must stop working within it.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

fn parse_cache_ttl(text: &str) -> Result<Duration, String> {
    let ttl =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write it as 1m, 30s, ...)"))?;
    if ttl < Duration::from_secs(1) || ttl > MAX_CACHE_TTL {
        return Err(format!(
            "from 1s to {}",
            humantime::format_duration(MAX_CACHE_TTL)
        ));
    }
    Ok(ttl)
}

/// Components discovered at run time watched at once, at most: each costs two watches on the
/// API server and a few series per namespace, and a cluster has a few dozen leader-elected
/// workloads, so reaching this bound means something is creating Leases it should not.
pub const MAX_DISCOVERED: usize = 100;

/// The shortest and longest `--write-timeout` accepted.
pub const WRITE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));

fn parse_write_timeout(text: &str) -> Result<Duration, String> {
    let timeout =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write it as 10s, 1m, ...)"))?;
    let (min, max) = WRITE_TIMEOUT_RANGE;
    if !(min..=max).contains(&timeout) {
        return Err(format!(
            "between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(timeout)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Components(#[from] ComponentError),
    #[error("namespace {0:?} is not a valid namespace name")]
    Namespace(String),
    #[error("{0} needs --auth=kubernetes")]
    NeedsAuth(&'static str),
}

fn auth(args: &Args) -> Result<Auth, ConfigError> {
    let client_ca = match (&args.client_ca_file, args.client_ca_from_cluster) {
        (Some(path), _) => Some(ClientCa::File(path.clone())),
        (None, true) => Some(ClientCa::Cluster),
        (None, false) => None,
    };
    let audiences: Vec<String> = args
        .auth_token_audiences
        .iter()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    match args.auth {
        AuthMode::Kubernetes => Ok(Auth::Kubernetes {
            audiences,
            client_ca,
            reviews_per_second: args.auth_reviews_per_second,
            cache: CacheSettings {
                token_ttl: args.auth_token_cache_ttl,
                allowed_ttl: args.auth_allowed_cache_ttl,
                denied_ttl: args.auth_denied_cache_ttl,
                entries: args.auth_cache_entries as usize,
            },
        }),
        AuthMode::None if client_ca.is_some() => Err(ConfigError::NeedsAuth(
            "a client CA (--client-ca-file, --client-ca-from-cluster)",
        )),
        AuthMode::None if !audiences.is_empty() => {
            Err(ConfigError::NeedsAuth("--auth-token-audiences"))
        }
        AuthMode::None => Ok(Auth::None),
    }
}

/// Validated settings the exporter runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `None`: kube's inference (in-cluster, then KUBECONFIG, then ~/.kube/config).
    pub kubeconfig: Option<PathBuf>,
    pub components: Vec<Component>,
    /// Empty: the whole cluster.
    pub namespaces: Vec<String>,
    pub lease_grace: Duration,
    /// Zero: no check of quiet pods watches.
    pub pod_check_interval: Duration,
    /// Certificate and key files for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: Auth,
    /// The pod to publish the served certificate for (from the downward API's environment
    /// variables); `None` publishes nothing.
    pub publish: Option<PodIdentity>,
    pub limits: Limits,
    /// Whether leader elections are discovered from their Leases.
    pub discover: bool,
    /// The most components discovered at run time watched at once.
    pub max_discovered: usize,
}

impl Settings {
    /// Validates the flags and loads the component file they name.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: args.listen,
            kubeconfig: args.scope.kubeconfig.clone(),
            components: args.scope.components()?,
            namespaces: args.scope.namespaces()?,
            lease_grace: args.lease_grace,
            pod_check_interval: args.pod_check_interval,
            tls: args.tls_cert_file.clone().zip(args.tls_key_file.clone()),
            auth: auth(args)?,
            publish: PodIdentity::from_env(),
            limits: Limits {
                connections: args.max_connections as usize,
                handshakes: args.max_tls_handshakes as usize,
                header_bytes: args.max_header_bytes as usize,
                write_timeout: args.write_timeout,
            },
            discover: args.discover,
            max_discovered: args.max_discovered as usize,
        })
    }

    /// Serves HTTPS: always with authentication, with a generated certificate if need be.
    pub fn https(&self) -> bool {
        self.tls.is_some() || self.auth != Auth::None
    }

    /// What is accepted but probably a mistake, in words for the log at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lease_grace < MIN_SAFE_GRACE {
            out.push(format!(
                "--lease-grace {} is below {} (2 x retry period x 2.2 for KubeVirt's 2s retry \
                 period): a normal failover, where the standby takes over up to 23.8s after the \
                 last renewal, can read as \"no leader\"",
                humantime::format_duration(self.lease_grace),
                humantime::format_duration(MIN_SAFE_GRACE),
            ));
        }
        out
    }

    /// The built-in components across the whole cluster, served on a free loopback port.
    pub fn with_defaults(lease_grace: Duration) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            components: default_components(),
            namespaces: Vec::new(),
            lease_grace,
            pod_check_interval: Duration::from_secs(60),
            tls: None,
            auth: Auth::None,
            publish: None,
            limits: Limits::DEFAULT,
            discover: false,
            max_discovered: MAX_DISCOVERED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            std::iter::once("kubevirt-leader-exporter").chain(extra.iter().copied()),
        )
    }

    #[test]
    fn defaults() {
        let a = args(&[]).expect("parse");
        assert_eq!(a.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(a.lease_grace, Duration::from_secs(10));
        let s = Settings::from_args(&a).expect("settings");
        assert!(s.namespaces.is_empty());
        let names: Vec<_> = s.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "virt-operator",
                "virt-controller",
                "virt-synchronization-controller"
            ]
        );
        assert_eq!(
            s.components[2].label_selector(),
            "kubevirt.io=virt-synchronization-controller"
        );
        assert_eq!(s.components[2].lease, "virt-synchronization-controller");
        assert_eq!(
            s.components[0].label_selector(),
            "kubevirt.io=virt-operator"
        );
        assert_eq!(s.components[0].lease, "virt-operator");
        assert_eq!(s.limits, Limits::DEFAULT);
    }

    fn component_names(extra: &[&str]) -> Result<Vec<String>, ConfigError> {
        let s = Settings::from_args(&args(extra).expect("parse"))?;
        Ok(s.components.into_iter().map(|c| c.name).collect())
    }

    #[test]
    fn presets_and_a_component_file_combine() {
        let dir = std::env::temp_dir().join(format!("kle-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("mine.yaml");
        let mine =
            "components:\n- {name: mine, lease: mine, podSelector: {matchLabels: {app: mine}}}\n";
        std::fs::write(&file, mine).expect("write");
        let config = format!("--config={}", file.display());
        let clash = dir.join("clash.yaml");
        std::fs::write(&clash, mine.replace("name: mine", "name: virt-operator")).expect("write");
        let clashing = format!("--config={}", clash.display());

        assert_eq!(component_names(&[&config]).expect("file alone"), ["mine"]);
        let stack = component_names(&["--preset=kubevirt-stack,control-plane"]).expect("both");
        assert_eq!(stack.len(), 15);
        assert_eq!(
            stack.last().map(String::as_str),
            Some("kube-controller-manager")
        );
        let twice = component_names(&["--preset=kubevirt", "--preset=kubevirt-stack"]);
        assert_eq!(twice.expect("overlapping presets").len(), 13);
        let both = component_names(&["--preset=control-plane", &config]).expect("combined");
        assert_eq!(both, ["kube-scheduler", "kube-controller-manager", "mine"]);
        let error = component_names(&["--preset=kubevirt", &clashing]).expect_err("a clash");
        assert!(
            error.to_string().contains("is in a --preset too"),
            "{error}"
        );
        assert!(args(&["--preset=openshift"]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn namespaces_repeat_and_split() {
        let a = args(&[
            "--namespace",
            "kubevirt",
            "--namespace",
            "openshift-cnv,kubevirt",
        ])
        .expect("parse");
        let s = Settings::from_args(&a).expect("settings");
        assert_eq!(s.namespaces, ["kubevirt", "openshift-cnv"]);
        let a = args(&["--namespace", "Not_Valid"]).expect("parse");
        assert!(matches!(
            Settings::from_args(&a),
            Err(ConfigError::Namespace(_))
        ));
    }

    #[test]
    fn a_grace_too_short_for_a_failover_is_warned_about() {
        let settings = |grace: &str| {
            Settings::from_args(&args(&["--lease-grace", grace]).expect("parse")).expect("valid")
        };
        let warnings = settings("8s").warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("--lease-grace 8s is below 8s 800ms")
                && warnings[0].contains("can read as \"no leader\""),
            "{warnings:?}"
        );
        assert!(settings("8800ms").warnings().is_empty());
        assert!(settings("10s").warnings().is_empty());
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(args(&["--listen", "nowhere"]).is_err());
        assert!(args(&["--lease-grace", "soon"]).is_err());
        for (bad, says) in [
            ("-5s", "negative"),
            ("100y", "at most 5m"),
            ("6m", "at most"),
        ] {
            let err = args(&["--lease-grace", bad]).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(
            args(&["--lease-grace", "5m"]).expect("parse").lease_grace,
            MAX_GRACE
        );
        assert!(args(&["--log-format", "xml"]).is_err());
        assert!(
            args(&["--tls-cert-file", "/tls.crt"]).is_err(),
            "a certificate needs its key"
        );
        assert!(
            args(&["--tls-key-file", "/tls.key"]).is_err(),
            "a key needs its certificate"
        );
        assert_eq!(
            args(&["--lease-grace", "1500ms"])
                .expect("parse")
                .lease_grace,
            Duration::from_millis(1500)
        );
        assert!(
            args(&["demo"]).is_err(),
            "the demo is an example, not a mode"
        );
        for (bad, says) in [
            ("500ms", "at least 1s"),
            ("10m", "at most 5m"),
            ("often", "0 turns"),
        ] {
            let err = args(&["--pod-check-interval", bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let off = args(&["--pod-check-interval", "0"]).expect("parse");
        assert!(off.pod_check_interval.is_zero());
        for (bad, says) in [
            (["--write-timeout", "500ms"], "between 1s and 5m"),
            (["--write-timeout", "slow"], "write it as"),
            (["--max-connections", "0"], "0 is not in 1..=65536"),
            (["--max-tls-handshakes", "0"], "0 is not in 1..=65536"),
            (
                ["--max-header-bytes", "1024"],
                "1024 is not in 4096..=1048576",
            ),
        ] {
            let err = args(&bad).expect_err(bad[1]).to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
