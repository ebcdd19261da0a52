//! The installs where people run them, each against its platform's own gatekeepers as the
//! platform's source states them: every install lets its Prometheus (with the grants the
//! platform ships, `tests/fixtures/platforms/`) discover the exporter and read it, on a real
//! kube-apiserver, and its documented removal leaves nothing behind; every pod template meets
//! the Pod Security Standards' `restricted` profile, and the OpenShift one what the
//! `restricted-v2` SCC admits; the README's install table names these installs.

mod common;
mod envtest;
mod pod_security;

use std::path::Path;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::PodSpec};
use serde_json::Value;

use pod_security::{Restricted, RestrictedV2};

const EXPORTER_NS: &str = "kubevirt-leader-exporter";

/// What a platform's own grants already let its Prometheus do in the exporter's namespace.
#[derive(Clone, Copy, PartialEq)]
enum Grants {
    /// `get` on `/metrics` cluster-wide, service discovery only in namespaces of its own.
    Metrics,
    /// That, and discovery of Services, Endpoints and pods everywhere, but not EndpointSlices.
    MetricsAndDiscoveryButSlices,
    /// That, and EndpointSlices too.
    MetricsAndDiscovery,
}

impl Grants {
    fn allow(self, verb_and_what: &(String, String)) -> bool {
        let what = verb_and_what.1.as_str();
        match self {
            Grants::Metrics => what == "/metrics",
            Grants::MetricsAndDiscoveryButSlices => {
                what == "/metrics" || !(what.starts_with('/') || what.starts_with("endpointslices"))
            }
            Grants::MetricsAndDiscovery => !matches!(what, "/" | "/status.json"),
        }
    }
}

/// Which column of the README's install table an install stands in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    ClusterWide,
    KubevirtNamespace,
}

/// A monitoring platform, the install the README sends its users to, and the Prometheus it
/// runs.
struct Platform {
    /// As the README's install table names it.
    name: &'static str,
    install: &'static str,
    scope: Scope,
    /// What the platform's grants allow before the install.
    already: Grants,
    /// Its grants to its Prometheus, in `tests/fixtures/platforms/`.
    grants: &'static str,
    /// The ServiceAccount its Prometheus runs as, (namespace, name).
    prometheus: (&'static str, &'static str),
    /// Whether the install holds the Prometheus Operator's kinds.
    operator: bool,
    /// The edit the install's comments ask for, as a kustomization patch, if any.
    edit: Option<&'static str>,
}

const PLATFORMS: [Platform; 5] = [
    Platform {
        name: "kube-prometheus",
        install: "deploy",
        scope: Scope::ClusterWide,
        already: Grants::Metrics,
        grants: "kube-prometheus.yaml",
        prometheus: ("monitoring", "prometheus-k8s"),
        operator: true,
        edit: None,
    },
    Platform {
        name: "kube-prometheus",
        install: "deploy/scoped/kubevirt",
        scope: Scope::KubevirtNamespace,
        already: Grants::Metrics,
        grants: "kube-prometheus.yaml",
        prometheus: ("monitoring", "prometheus-k8s"),
        operator: true,
        edit: None,
    },
    Platform {
        name: "kube-prometheus-stack",
        install: "deploy/kube-prometheus-stack",
        scope: Scope::ClusterWide,
        already: Grants::MetricsAndDiscoveryButSlices,
        grants: "kube-prometheus-stack.yaml",
        prometheus: ("monitoring", "kube-prometheus-stack-prometheus"),
        operator: true,
        edit: None,
    },
    Platform {
        name: "OpenShift's platform monitoring",
        install: "deploy/scoped/openshift-cnv",
        scope: Scope::KubevirtNamespace,
        already: Grants::Metrics,
        grants: "openshift.yaml",
        prometheus: ("openshift-monitoring", "prometheus-k8s"),
        operator: true,
        edit: None,
    },
    Platform {
        name: "Prometheus without the Operator",
        install: "deploy/plain",
        scope: Scope::ClusterWide,
        already: Grants::MetricsAndDiscovery,
        grants: "prometheus-community.yaml",
        prometheus: ("monitoring", "prometheus-server"),
        operator: false,
        // The placeholder subjects named for the chart's server, as deploy/plain says.
        edit: Some(
            r#"  - target: {kind: ClusterRoleBinding, name: kubevirt-leader-exporter-metrics-reader}
    patch: |-
      - {op: replace, path: /subjects/0/name, value: prometheus-server}
  - target: {kind: RoleBinding, name: kubevirt-leader-exporter-discovery}
    patch: |-
      - {op: replace, path: /subjects/0/name, value: prometheus-server}
"#,
        ),
    },
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pod template of the install's Deployment.
fn pod_spec(install: &str) -> PodSpec {
    let docs = common::kustomize(&repo().join(install));
    let deployment = docs
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let deployment: Deployment = serde_json::from_value(deployment).expect("Deployment");
    deployment.spec.template.spec.expect("a pod template")
}

/// What the platform's Prometheus needs in the exporter's namespace: what its generated
/// service-discovery job lists and watches, and `get` on the protected paths.
fn needed() -> Vec<(String, String)> {
    let mut needed = Vec::new();
    for resource in [
        "services",
        "endpoints",
        "endpointslices.discovery.k8s.io",
        "pods",
    ] {
        for verb in ["get", "list", "watch"] {
            needed.push((verb.to_owned(), resource.to_owned()));
        }
    }
    for path in ["/metrics", "/", "/status.json"] {
        needed.push(("get".to_owned(), path.to_owned()));
    }
    needed
}

/// What of [`needed`] the API server's RBAC refuses `who`, as `kubectl auth can-i` asks it
/// (a SelfSubjectAccessReview as that user).
fn refused(plane: &envtest::ControlPlane, who: &str) -> Vec<(String, String)> {
    needed()
        .into_iter()
        .filter(|(verb, what)| {
            let as_user = format!("--as={who}");
            let mut args = vec!["auth", "can-i", verb.as_str(), what.as_str(), &as_user];
            if !what.starts_with('/') {
                args.extend(["-n", EXPORTER_NS]);
            }
            let (ok, out) = plane.admin_kubectl(&args);
            assert!(ok || out.trim() == "no", "{args:?}: {out}");
            !ok
        })
        .collect()
}

/// The install as its user applies it: the shipped folder, or a kustomization of theirs
/// with the edit its comments ask for.
fn as_applied(platform: &Platform, dir: &Path) -> std::path::PathBuf {
    let Some(edit) = platform.edit else {
        return repo().join(platform.install);
    };
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    // kustomize takes a relative path to another kustomization, never an absolute one: up
    // to the root, then down to the install.
    let up = overlay
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .map(|_| "..")
        .collect::<Vec<_>>()
        .join("/");
    let install = repo().join(platform.install);
    let down = install.strip_prefix("/").expect("an absolute path");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!("resources:\n  - {up}/{}\npatches:\n{edit}", down.display()),
    )
    .expect("write kustomization");
    overlay
}

/// On a real API server with the platform's grants: its Prometheus may do before the install
/// exactly what those grants say, everything it needs after; the documented removal then
/// leaves none of the install's objects.
async fn install_on(platform: &Platform) {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = envtest::ControlPlane::start(&assets).await;
    let kubectl = |args: &[&str]| {
        let (ok, out) = plane.admin_kubectl(args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    for ns in [
        "monitoring",
        "openshift-monitoring",
        "kubevirt",
        "openshift-cnv",
    ] {
        kubectl(&["create", "namespace", ns]);
    }
    let grants = repo()
        .join("tests/fixtures/platforms")
        .join(platform.grants);
    kubectl(&["apply", "-f", grants.to_str().expect("UTF-8")]);
    let (ns, name) = platform.prometheus;
    let prometheus = format!("system:serviceaccount:{ns}:{name}");
    let before = refused(&plane, &prometheus);
    let expected: Vec<(String, String)> = needed()
        .into_iter()
        .filter(|r| !platform.already.allow(r))
        .collect();
    assert_eq!(
        before, expected,
        "{} before the install: refused",
        platform.name
    );

    if platform.operator {
        plane.install_operator_crds();
    }
    let dir = common::temp_dir(&format!("platform-{}", platform.install.replace('/', "-")));
    let applied = as_applied(platform, &dir);
    let rendered = dir.join("rendered.yaml");
    common::kustomize_to(&applied, &rendered);
    let applied = applied.to_str().expect("UTF-8");
    kubectl(&["apply", "-k", applied]);
    let after = refused(&plane, &prometheus);
    assert!(
        after.is_empty(),
        "{} on {}: {prometheus} may not {after:?}",
        platform.install,
        platform.name
    );

    // Uninstall, as docs/deploying.md says: the same kustomization, deleted.
    kubectl(&["delete", "-k", applied, "--wait=false"]);
    let left = kubectl(&[
        "get",
        "-f",
        rendered.to_str().expect("UTF-8"),
        "--ignore-not-found",
        "-o",
        "json",
    ]);
    let left: Vec<Value> = if left.trim().is_empty() {
        Vec::new()
    } else {
        let list: Value = serde_json::from_str(&left).expect("JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    };
    // Namespaces are finalized by the controller manager, which this API server runs
    // without: being deleted is all it can show.
    let kept: Vec<String> = left
        .iter()
        .filter(|o| !(o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_string()))
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
        .collect();
    assert!(kept.is_empty(), "{} left {kept:?}", platform.install);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn kube_prometheus_discovers_and_reads_the_cluster_wide_install() {
    install_on(&PLATFORMS[0]).await;
}

#[tokio::test]
async fn kube_prometheus_discovers_and_reads_the_scoped_install() {
    install_on(&PLATFORMS[1]).await;
}

#[tokio::test]
async fn kube_prometheus_stack_discovers_and_reads_its_install() {
    install_on(&PLATFORMS[2]).await;
}

#[tokio::test]
async fn openshift_monitoring_discovers_and_reads_the_openshift_install() {
    install_on(&PLATFORMS[3]).await;
}

#[tokio::test]
async fn the_prometheus_community_chart_discovers_and_reads_the_plain_install() {
    install_on(&PLATFORMS[4]).await;
}

/// Every shipped install and example with a Deployment.
const ALL_INSTALLS: [&str; 7] = [
    "deploy",
    "deploy/plain",
    "deploy/scoped/kubevirt",
    "deploy/scoped/openshift-cnv",
    "deploy/kube-prometheus-stack",
    "docs/examples/cert-manager",
    "docs/examples/runbook-url",
];

#[test]
fn every_pod_template_meets_the_restricted_profile() {
    for install in ALL_INSTALLS {
        let violations = Restricted::violations(&pod_spec(install));
        assert!(violations.is_empty(), "{install}: {violations:?}");
    }
}

#[test]
fn each_restricted_rule_refuses_what_it_forbids() {
    let base = pod_spec("deploy");
    for (rule, break_it) in pod_security::RESTRICTED_CASES {
        let mut spec = base.clone();
        break_it(&mut spec);
        let violations = Restricted::violations(&spec);
        assert!(
            violations.iter().any(|v| v.rule == *rule),
            "{rule}: not caught, {violations:?}"
        );
    }
}

#[test]
fn every_install_creates_its_namespace_enforcing_restricted() {
    for install in ALL_INSTALLS {
        let docs = common::kustomize(&repo().join(install));
        let ns = docs
            .iter()
            .find(|d| d["kind"] == "Namespace")
            .unwrap_or_else(|| panic!("{install}: no Namespace"));
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{install}"
        );
    }
}

#[test]
fn the_openshift_install_is_admitted_by_restricted_v2() {
    // A namespace as OpenShift annotates it.
    let scc = RestrictedV2 {
        uids: 1_000_650_000..1_000_660_000,
        groups: 1_000_650_000..1_000_660_000,
        mcs: "s0:c26,c5",
    };
    let spec = pod_spec("deploy/scoped/openshift-cnv");
    let violations = scc.violations(&spec);
    assert!(violations.is_empty(), "{violations:?}");
    // It leaves the user, group, fsGroup and SELinux options to the SCC, and says non-root.
    for (what, set) in pod_security::chosen_by_the_platform(&spec) {
        assert!(!set, "the OpenShift install sets {what}");
    }
    for (rule, break_it) in pod_security::RESTRICTED_V2_CASES {
        let mut broken = spec.clone();
        break_it(&mut broken);
        let violations = scc.violations(&broken);
        assert!(
            violations.iter().any(|v| v.rule == *rule),
            "{rule}: not caught, {violations:?}"
        );
    }
}

/// The README's install table: each row's platform and the installs it names, each with its
/// column.
fn readme_installs() -> Vec<(String, Vec<(Scope, String)>)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let table = readme
        .split("## Install")
        .nth(1)
        .expect("an Install section")
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    table
        .iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let columns = [
                (Scope::ClusterWide, cells[2]),
                (Scope::KubevirtNamespace, cells[3]),
            ];
            let installs = columns
                .into_iter()
                .flat_map(|(scope, cell)| {
                    cell.split('`').filter_map(move |part| {
                        part.strip_prefix("kubectl apply -k ")
                            .map(|dir| (scope, dir.trim_end_matches('/').to_owned()))
                    })
                })
                .collect();
            // The platform's name, before what the row says of it in parentheses.
            let name = cells[1].split(" (").next().unwrap_or_default();
            (name.to_owned(), installs)
        })
        .collect()
}

#[test]
fn the_readme_sends_each_platform_to_the_installs_tested_for_it() {
    let rows = readme_installs();
    for p in &PLATFORMS {
        let row = rows
            .iter()
            .find(|(name, _)| name == p.name)
            .unwrap_or_else(|| panic!("no README row for {}: {rows:?}", p.name));
        assert!(
            row.1.contains(&(p.scope, p.install.to_owned())),
            "{}: the README names {:?}, not {} as {:?}",
            p.name,
            row.1,
            p.install,
            p.scope
        );
    }
    for (name, installs) in &rows {
        assert!(!installs.is_empty(), "{name}: no install");
        for (scope, install) in installs {
            assert!(
                PLATFORMS
                    .iter()
                    .any(|p| p.name == name && p.install == install && p.scope == *scope),
                "{name}: {install} ({scope:?}) is not tested for that platform"
            );
        }
    }
}
