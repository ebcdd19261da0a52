//! The manifests in deploy/ and docs/examples/: every file parses as what it claims to be,
//! every kustomization renders, the RBAC grants exactly what the exporter uses and lets
//! exactly the install's Prometheus read it, the Deployment matches the binary's flags and
//! endpoints, and every way of scraping it speaks HTTPS with a token.

mod common;
mod envtest;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kubevirt_leader_exporter::{
    client_ca::CLUSTER_CLIENT_CA,
    config::{Args, AuthMode, Preset},
    discovery, http, publish,
    watch::API_ACCESS,
};
use serde::Deserialize;
use serde_json::Value;

const SCOPED: [&str; 2] = ["kubevirt", "openshift-cnv"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The prometheus-operator kinds, by the fields this project uses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    honor_labels: bool,
    scheme: Option<String>,
    bearer_token_file: Option<String>,
    tls_config: Option<TlsConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TlsConfig {
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    ca: Option<SecretOrConfigMap>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretOrConfigMap {
    secret: Option<KeyRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    name: String,
    key: String,
}

/// cert-manager's Certificate, by the fields the example uses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertificateSpec {
    secret_name: String,
    dns_names: Vec<String>,
    usages: Vec<String>,
    issuer_ref: IssuerRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerRef {
    group: String,
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusRuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

fn docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).expect("valid YAML documents");
    docs.into_iter().filter(|v| !v.is_null()).collect()
}

/// Parses one object as the type its kind names; returns the kind.
fn check_object(doc: &Value) -> String {
    let kind = doc["kind"]
        .as_str()
        .expect("every object has a kind")
        .to_owned();
    let v = doc.clone();
    let parsed = match kind.as_str() {
        "Namespace" => serde_json::from_value::<Namespace>(v).map(drop),
        "ServiceAccount" => serde_json::from_value::<ServiceAccount>(v).map(drop),
        "ClusterRole" => serde_json::from_value::<ClusterRole>(v).map(drop),
        "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(v).map(drop),
        "Role" => serde_json::from_value::<Role>(v).map(drop),
        "RoleBinding" => serde_json::from_value::<RoleBinding>(v).map(drop),
        "Deployment" => serde_json::from_value::<Deployment>(v).map(drop),
        "Service" => serde_json::from_value::<Service>(v).map(drop),
        "ServiceMonitor" => {
            serde_json::from_value::<ServiceMonitorSpec>(doc["spec"].clone()).map(drop)
        }
        "PrometheusRule" => {
            serde_json::from_value::<PrometheusRuleSpec>(doc["spec"].clone()).map(drop)
        }
        "ConfigMap" => serde_json::from_value::<ConfigMap>(v).map(drop),
        "NetworkPolicy" => serde_json::from_value::<NetworkPolicy>(v).map(drop),
        "Certificate" => serde_json::from_value::<CertificateSpec>(doc["spec"].clone()).map(drop),
        "Kustomization" | "Component" => Ok(()),
        other => panic!("unexpected kind {other}"),
    };
    parsed.unwrap_or_else(|e| panic!("{kind}: {e}"));
    kind
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_parses_as_its_kind() {
    let mut files = Vec::new();
    yaml_files(&repo("deploy"), &mut files);
    yaml_files(&repo("docs/examples"), &mut files);
    let mut kinds = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for doc in docs(&text) {
            kinds.insert(check_object(&doc));
        }
    }
    for want in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "ConfigMap",
        "Certificate",
    ] {
        assert!(
            kinds.contains(want),
            "no {want} in deploy/ or docs/examples/"
        );
    }
}

fn kustomize(dir: &str) -> Vec<Value> {
    let rendered = common::kustomize(Path::new(dir));
    for doc in &rendered {
        check_object(doc);
    }
    rendered
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    serde_json::from_value(found[0].clone()).expect(kind)
}

/// The one object of `kind` in namespace `ns`.
fn in_namespace<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, ns: &str) -> T {
    let mut found = find(docs, kind);
    found.retain(|d| d["metadata"]["namespace"] == ns);
    assert_eq!(found.len(), 1, "expected one {kind} in {ns}");
    serde_json::from_value(found[0].clone()).expect(kind)
}

type Rules = BTreeSet<(String, String, Vec<String>)>;

/// The rules as (group, resource, verbs); the exporter's roles name no URLs or objects.
fn granted(rules: &[PolicyRule]) -> Rules {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let mut verbs = rule.verbs.clone();
                verbs.sort();
                out.insert((group.clone(), resource.clone(), verbs));
            }
        }
    }
    out
}

fn rules<const N: usize>(table: &[(&str, &str, [&str; N])]) -> Rules {
    table
        .iter()
        .map(|(g, r, v)| {
            // In the order `granted` keeps them.
            let mut verbs: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
            verbs.sort();
            ((*g).to_owned(), (*r).to_owned(), verbs)
        })
        .collect()
}

/// What the exporter needs to check a caller (--auth=kubernetes, the default): who a token
/// is, and what that user may do. Both are cluster-scoped.
const REVIEWS: [(&str, &str, [&str; 1]); 2] = [
    ("authentication.k8s.io", "tokenreviews", ["create"]),
    ("authorization.k8s.io", "subjectaccessreviews", ["create"]),
];

/// What the exporter watches.
fn watched() -> Rules {
    rules(&API_ACCESS)
}

fn reviews() -> Rules {
    rules(&REVIEWS)
}

/// What the exporter writes in its own namespace: the ConfigMap that publishes the
/// certificate it serves.
fn published() -> Rules {
    rules(&publish::API_ACCESS)
}

/// The Role and RoleBinding that let the exporter publish its certificate.
const SERVING_CERT: &str = "kubevirt-leader-exporter-serving-cert";

/// Everything the exporter uses cluster-wide without --discover: what it watches and the
/// reviews it asks for.
fn needed() -> Rules {
    watched().into_iter().chain(reviews()).collect()
}

/// What --discover reads besides: the workloads behind Leases' holders.
fn discovering() -> Rules {
    rules(&discovery::API_ACCESS)
}

/// The ClusterRole that grants [`discovering`].
const DISCOVER: &str = "kubevirt-leader-exporter-discover";

/// The one object of `kind` named `name`.
fn named<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let mut found = find(docs, kind);
    found.retain(|d| d["metadata"]["name"] == name);
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    serde_json::from_value(found[0].clone()).expect(kind)
}

/// The exporter's ServiceAccount, as (namespace, name).
fn exporter_account(docs: &[Value]) -> (String, String) {
    let account: ServiceAccount = one(docs, "ServiceAccount");
    (
        account.metadata.namespace.expect("namespace"),
        account.metadata.name.expect("name"),
    )
}

/// A binding's subjects, as (kind, name, namespace).
fn subjects_of(subjects: Option<&Vec<Subject>>) -> Vec<(String, String, Option<String>)> {
    subjects
        .into_iter()
        .flatten()
        .map(|s| (s.kind.clone(), s.name.clone(), s.namespace.clone()))
        .collect()
}

fn names_account(subjects: Option<&Vec<Subject>>, (ns, name): &(String, String)) -> bool {
    subjects.into_iter().flatten().any(|s| {
        s.kind == "ServiceAccount" && s.name == *name && s.namespace.as_deref() == Some(ns)
    })
}

/// What an install grants the exporter's ServiceAccount, through every binding that names it.
#[derive(Debug, Default, PartialEq)]
struct Rights {
    /// By the namespace they hold in, `None` for cluster-wide.
    granted: BTreeMap<Option<String>, Rules>,
    /// Roles bound that the install does not define (the cluster's own): (namespace, kind,
    /// name).
    outside: BTreeSet<(String, String, String)>,
}

fn exporter_rights(docs: &[Value]) -> Rights {
    let account = exporter_account(docs);
    let mut rights = Rights::default();
    for doc in find(docs, "ClusterRoleBinding") {
        let binding: ClusterRoleBinding = serde_json::from_value(doc.clone()).expect("binding");
        if names_account(binding.subjects.as_ref(), &account) {
            assert_eq!(binding.role_ref.kind, "ClusterRole");
            let role: ClusterRole = named(docs, "ClusterRole", &binding.role_ref.name);
            let rules = granted(role.rules.as_deref().unwrap_or_default());
            rights.granted.entry(None).or_default().extend(rules);
        }
    }
    for doc in find(docs, "RoleBinding") {
        let binding: RoleBinding = serde_json::from_value(doc.clone()).expect("binding");
        if !names_account(binding.subjects.as_ref(), &account) {
            continue;
        }
        let ns = binding.metadata.namespace.clone().expect("namespace");
        let role_ref = &binding.role_ref;
        let defined = find(docs, &role_ref.kind).into_iter().find(|d| {
            d["metadata"]["name"] == role_ref.name.as_str()
                && (role_ref.kind == "ClusterRole" || d["metadata"]["namespace"] == ns.as_str())
        });
        match defined {
            Some(role) => {
                let rules: Vec<PolicyRule> =
                    serde_json::from_value(role["rules"].clone()).expect("rules");
                rights
                    .granted
                    .entry(Some(ns))
                    .or_default()
                    .extend(granted(&rules));
            }
            None => {
                rights
                    .outside
                    .insert((ns, role_ref.kind.clone(), role_ref.name.clone()));
            }
        }
    }
    rights
}

fn container(docs: &[Value]) -> Container {
    let deployment: Deployment = one(docs, "Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    pod.containers.into_iter().next().expect("container")
}

fn pod_spec(docs: &[Value]) -> PodSpec {
    let deployment: Deployment = one(docs, "Deployment");
    deployment.spec.template.spec.expect("pod spec")
}

/// The container's args, parsed by the binary's own flag parser.
fn parsed_args(c: &Container) -> Args {
    let args = c.args.clone().unwrap_or_default();
    Args::try_parse_from(std::iter::once("kubevirt-leader-exporter".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("Deployment args rejected by the binary: {e}"))
}

/// Every install and example, with the ServiceAccount of the Prometheus it lets read the
/// exporter, as (namespace, name).
const INSTALLS: [(&str, (&str, &str)); 7] = [
    ("deploy", ("monitoring", "prometheus-k8s")),
    ("deploy/plain", ("monitoring", "prometheus")),
    ("deploy/scoped/kubevirt", ("monitoring", "prometheus-k8s")),
    (
        "deploy/scoped/openshift-cnv",
        ("openshift-monitoring", "prometheus-k8s"),
    ),
    (
        "deploy/kube-prometheus-stack",
        ("monitoring", "kube-prometheus-stack-prometheus"),
    ),
    (
        "docs/examples/runbook-url",
        ("monitoring", "prometheus-k8s"),
    ),
    (
        "docs/examples/cert-manager",
        ("monitoring", "prometheus-k8s"),
    ),
];

/// The installs that watch the whole cluster, with the ClusterRole of deploy/rbac.
const CLUSTER_WIDE: [&str; 5] = [
    "deploy",
    "deploy/plain",
    "deploy/kube-prometheus-stack",
    "docs/examples/runbook-url",
    "docs/examples/cert-manager",
];

#[test]
fn cluster_wide_install_renders_and_grants_exactly_what_is_watched() {
    // The file the control-plane tests bind the exporter's user to.
    let text = std::fs::read_to_string(repo("deploy/rbac/clusterrole.yaml")).expect("read");
    let role: ClusterRole = serde_saphyr::from_str(&text).expect("ClusterRole");
    assert_eq!(granted(role.rules.as_deref().unwrap_or_default()), needed());
    for dir in CLUSTER_WIDE {
        let docs = kustomize(dir);
        let role: ClusterRole = named(&docs, "ClusterRole", "kubevirt-leader-exporter");
        assert_eq!(
            granted(role.rules.as_deref().unwrap_or_default()),
            needed(),
            "{dir}"
        );
        let binding: ClusterRoleBinding =
            named(&docs, "ClusterRoleBinding", "kubevirt-leader-exporter");
        assert_eq!(binding.role_ref.name, role.metadata.name.expect("name"));
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str()),
            ("ServiceAccount", "kubevirt-leader-exporter")
        );
        // Discovery's reads, in a ClusterRole of their own that goes with --discover.
        let discover: ClusterRole = named(&docs, "ClusterRole", DISCOVER);
        let discover_rules = granted(discover.rules.as_deref().unwrap_or_default());
        assert_eq!(discover_rules, discovering(), "{dir}");
        // Through every binding together: exactly that, cluster-wide, and publishing its
        // certificate in its own namespace; nothing else.
        let (exporter_ns, _) = exporter_account(&docs);
        let cluster_wide = needed().into_iter().chain(discovering()).collect();
        assert_eq!(
            exporter_rights(&docs),
            Rights {
                granted: BTreeMap::from([(None, cluster_wide), (Some(exporter_ns), published())]),
                outside: BTreeSet::new(),
            },
            "{dir}"
        );
        // The Roles: Prometheus's, to discover the exporter, and the exporter's, to publish.
        let mut roles: Vec<&str> = find(&docs, "Role")
            .iter()
            .filter_map(|r| r["metadata"]["name"].as_str())
            .collect();
        roles.sort_unstable();
        assert_eq!(roles, [DISCOVERY, SERVING_CERT], "{dir}");
        let args = parsed_args(&container(&docs));
        assert!(
            args.scope.namespaces.is_empty(),
            "the cluster-wide install must not restrict namespaces"
        );
        assert!(args.discover, "{dir}: the cluster-wide installs discover");
    }
}

#[test]
fn scoped_variants_grant_the_same_rules_in_their_namespace_only() {
    // The companion the scoped variants share: the two reviews, nothing else.
    let auth = kustomize("deploy/auth");
    let companion: ClusterRole = one(&auth, "ClusterRole");
    assert_eq!(
        granted(companion.rules.as_deref().unwrap_or_default()),
        reviews()
    );
    let companion_name = companion.metadata.name.expect("name");
    for ns in SCOPED {
        let docs = kustomize(&format!("deploy/scoped/{ns}"));
        let role: Role = in_namespace(&docs, "Role", ns);
        assert_eq!(
            granted(role.rules.as_deref().unwrap_or_default()),
            watched()
        );
        let binding: RoleBinding = in_namespace(&docs, "RoleBinding", ns);
        assert_eq!(binding.role_ref.kind, "Role");
        let cluster_role: ClusterRole = named(&docs, "ClusterRole", &companion_name);
        assert_eq!(
            granted(cluster_role.rules.as_deref().unwrap_or_default()),
            reviews(),
            "{ns}"
        );
        // Through every binding together: the watch in KubeVirt's namespace, the reviews
        // cluster-wide (a Role cannot grant them), and on OpenShift reading the API
        // server's client CA.
        let (exporter_ns, _) = exporter_account(&docs);
        let mut want = Rights {
            granted: BTreeMap::from([
                (None, reviews()),
                (Some(ns.to_owned()), watched()),
                (Some(exporter_ns), published()),
            ]),
            outside: BTreeSet::new(),
        };
        if ns == "openshift-cnv" {
            want.outside.insert((
                CLUSTER_CLIENT_CA.0.to_owned(),
                "Role".to_owned(),
                "extension-apiserver-authentication-reader".to_owned(),
            ));
        }
        assert_eq!(exporter_rights(&docs), want, "{ns}");
        let args = parsed_args(&container(&docs));
        assert_eq!(args.scope.namespaces, [ns], "{ns}");
        // Discovery would need reads on workloads that the scoped installs do not grant.
        assert!(!args.discover, "{ns}");
        assert!(
            find(&docs, "ClusterRole")
                .iter()
                .all(|r| r["metadata"]["name"] != DISCOVER)
        );
    }
}

/// The paths a caller must be allowed to `get`: everything but the probes.
fn protected_paths() -> BTreeSet<String> {
    [http::METRICS_PATH, "/", http::STATUS_JSON_PATH]
        .map(String::from)
        .into()
}

#[test]
fn every_install_lets_its_prometheus_read_the_protected_paths() {
    for (dir, (prometheus_ns, prometheus)) in INSTALLS {
        let docs = kustomize(dir);
        let reader: ClusterRole = named(
            &docs,
            "ClusterRole",
            "kubevirt-leader-exporter-metrics-reader",
        );
        let rules = reader.rules.expect("rules");
        assert_eq!(rules.len(), 1, "{dir}");
        let rule = &rules[0];
        assert!(
            rule.api_groups.is_none() && rule.resources.is_none() && rule.resource_names.is_none(),
            "{dir}"
        );
        let urls: BTreeSet<String> = rule.non_resource_urls.iter().flatten().cloned().collect();
        assert_eq!(urls, protected_paths(), "{dir}");
        assert_eq!(rule.verbs, ["get"], "{dir}");
        let bindings: Vec<ClusterRoleBinding> = find(&docs, "ClusterRoleBinding")
            .into_iter()
            .map(|d| serde_json::from_value(d.clone()).expect("binding"))
            .filter(|b: &ClusterRoleBinding| {
                b.role_ref.name == reader.metadata.name.as_deref().unwrap_or_default()
            })
            .collect();
        assert_eq!(bindings.len(), 1, "{dir}");
        let subjects = subjects_of(bindings[0].subjects.as_ref());
        assert_eq!(
            subjects,
            [(
                "ServiceAccount".to_owned(),
                prometheus.to_owned(),
                Some(prometheus_ns.to_owned())
            )],
            "{dir}"
        );
        // The exporter itself reads nothing of its own.
        assert!(
            !names_account(bindings[0].subjects.as_ref(), &exporter_account(&docs)),
            "{dir}"
        );
        // The same Prometheus may discover it.
        let discovery: RoleBinding = named(&docs, "RoleBinding", DISCOVERY);
        let discovers = subjects_of(discovery.subjects.as_ref());
        assert_eq!(discovers, subjects, "{dir}");
    }
}

/// The labels of the Prometheus pods each install's NetworkPolicy admits: those the
/// Prometheus Operator gives the pods of a Prometheus object (`app.kubernetes.io/instance` is
/// the object's name: kube-prometheus's and OpenShift's `k8s`, kube-prometheus-stack's
/// `<release>-prometheus`), or the prometheus-community chart's server pods.
fn prometheus_pod_labels(dir: &str) -> BTreeMap<String, String> {
    let instance = match dir {
        "deploy/plain" => None,
        "deploy/kube-prometheus-stack" => Some("kube-prometheus-stack-prometheus"),
        _ => Some("k8s"),
    };
    let mut labels =
        BTreeMap::from([("app.kubernetes.io/name".to_owned(), "prometheus".to_owned())]);
    match instance {
        Some(instance) => labels.insert("app.kubernetes.io/instance".into(), instance.into()),
        None => labels.insert("app.kubernetes.io/component".into(), "server".into()),
    };
    labels
}

/// Admits ingress to the exporter's port from the Prometheus pods in `namespace` only.
fn check_network_policy(docs: &[Value], namespace: &str, dir: &str) {
    let policy: NetworkPolicy = one(docs, "NetworkPolicy");
    let deployment: Deployment = one(docs, "Deployment");
    assert_eq!(policy.metadata.namespace, deployment.metadata.namespace);
    let spec = policy.spec.expect("spec");
    let pod_labels = deployment
        .spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let selects = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert!(
        !selects.is_empty() && selects.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "{dir}: the NetworkPolicy does not select the exporter's pods"
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]), "{dir}");
    let ingress = spec.ingress.expect("ingress rules");
    assert_eq!(ingress.len(), 1, "{dir}");
    let from = ingress[0].from.as_deref().expect("from");
    assert_eq!(from.len(), 1, "{dir}");
    assert!(from[0].ip_block.is_none(), "{dir}");
    let pods = from[0]
        .pod_selector
        .clone()
        .expect("a pod selector: the Prometheus pods, not the whole namespace");
    assert!(pods.match_expressions.is_none(), "{dir}");
    assert_eq!(
        pods.match_labels.unwrap_or_default(),
        prometheus_pod_labels(dir),
        "{dir}"
    );
    let namespaces = from[0]
        .namespace_selector
        .clone()
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert_eq!(
        namespaces,
        BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned()
        )]),
        "{dir}"
    );
    let ports = ingress[0].ports.as_deref().expect("ports");
    assert_eq!(ports.len(), 1, "{dir}");
    let c = container(docs);
    let port = c
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.container_port == i32::from(parsed_args(&c).listen.port()))
        .expect("the listening port")
        .clone();
    assert!(
        ports[0].port == port.name.map(IntOrString::String)
            || ports[0].port == Some(IntOrString::Int(port.container_port)),
        "{dir}: {:?}",
        ports[0].port
    );
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"), "{dir}");
}

#[test]
fn network_policy_admits_only_the_prometheus_pods() {
    for (dir, (prometheus_ns, _)) in INSTALLS {
        check_network_policy(&kustomize(dir), prometheus_ns, dir);
    }
}

#[test]
fn deployment_matches_the_binary() {
    let docs = kustomize("deploy");
    let c = container(&docs);
    let args = parsed_args(&c);
    let port = c
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("port named metrics");
    assert_eq!(port.container_port, i32::from(args.listen.port()));
    for (probe, path) in [
        (&c.liveness_probe, http::LIVEZ_PATH),
        (&c.readiness_probe, http::READYZ_PATH),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("metrics".into()));
        // --auth=kubernetes always serves HTTPS; the kubelet does not verify the certificate.
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    assert_eq!(args.auth, AuthMode::Kubernetes);
    let image = c.image.as_deref().expect("image");
    assert!(
        image
            .rsplit_once(':')
            .is_some_and(|(_, tag)| tag != "latest" && !tag.contains('/')),
        "image must be pinned: {image}"
    );
    let resources = c.resources.expect("resources");
    assert!(
        resources
            .requests
            .is_some_and(|r| r.contains_key("memory") && r.contains_key("cpu"))
    );
    assert!(resources.limits.is_some_and(|l| l.contains_key("memory")));
    let sc = c.security_context.expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert!(sc.run_as_user.is_some_and(|u| u > 0));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".to_owned())
    );

    let service: Service = one(&docs, "Service");
    let sport = &service.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(sport.name.as_deref(), Some("metrics"));
    let monitor = find(&docs, "ServiceMonitor")[0];
    let spec: ServiceMonitorSpec = serde_json::from_value(monitor["spec"].clone()).expect("spec");
    let service_labels = service.metadata.labels.unwrap_or_default();
    let wanted = spec.selector.match_labels.unwrap_or_default();
    assert!(
        !wanted.is_empty() && wanted.iter().all(|(k, v)| service_labels.get(k) == Some(v)),
        "ServiceMonitor does not select the Service"
    );
    assert_eq!(spec.endpoints[0].port, "metrics");
    assert_eq!(spec.endpoints[0].path, http::METRICS_PATH);
    assert!(spec.endpoints[0].honor_labels);
    assert!(!spec.endpoints[0].interval.is_empty());
}

/// Where the container mounts the Secret `secret` read-only, if it does.
fn secret_mount(docs: &[Value], secret: &str) -> Option<PathBuf> {
    let pod = pod_spec(docs);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
        })?
        .name
        .clone();
    let mount = container(docs)
        .volume_mounts
        .into_iter()
        .flatten()
        .find(|m| m.name == volume)?;
    assert_eq!(mount.read_only, Some(true), "{secret} is mounted writable");
    Some(PathBuf::from(mount.mount_path))
}

/// The Secret an install serves its certificate from, if any: OpenShift's service CA or
/// cert-manager writes it.
fn serving_secret(dir: &str, docs: &[Value]) -> Option<String> {
    match dir {
        "deploy/scoped/openshift-cnv" => {
            let service: Service = one(docs, "Service");
            let annotations = service.metadata.annotations.unwrap_or_default();
            Some(
                annotations
                    .get("service.beta.openshift.io/serving-cert-secret-name")
                    .expect("the Service asks the service CA for a certificate")
                    .clone(),
            )
        }
        "docs/examples/cert-manager" => {
            let certificate = find(docs, "Certificate");
            assert_eq!(certificate.len(), 1);
            let spec: CertificateSpec =
                serde_json::from_value(certificate[0]["spec"].clone()).expect("Certificate");
            Some(spec.secret_name)
        }
        _ => None,
    }
}

#[test]
fn every_install_tells_the_exporter_its_pod_and_lets_it_publish_there_only() {
    for (dir, _) in INSTALLS {
        let docs = kustomize(dir);
        // The downward API: the pod's own name, namespace and UID, by the variables the
        // exporter reads.
        let env: BTreeMap<String, Option<String>> = container(&docs)
            .env
            .into_iter()
            .flatten()
            .map(|e| {
                let field = e.value_from.and_then(|v| v.field_ref).map(|f| f.field_path);
                (e.name, field)
            })
            .collect();
        for (name, field) in [
            (publish::POD_NAME_ENV, "metadata.name"),
            (publish::POD_NAMESPACE_ENV, "metadata.namespace"),
            (publish::POD_UID_ENV, "metadata.uid"),
        ] {
            assert_eq!(
                env.get(name),
                Some(&Some(field.to_owned())),
                "{dir}: {name}"
            );
        }
        // The Role to publish it: in the exporter's own namespace, bound to it alone.
        let (exporter_ns, account) = exporter_account(&docs);
        let role: Role = named(&docs, "Role", SERVING_CERT);
        assert_eq!(
            role.metadata.namespace.as_deref(),
            Some(exporter_ns.as_str())
        );
        assert_eq!(
            granted(role.rules.as_deref().unwrap_or_default()),
            published(),
            "{dir}"
        );
        let binding: RoleBinding = named(&docs, "RoleBinding", SERVING_CERT);
        assert_eq!(
            binding.metadata.namespace.as_deref(),
            Some(exporter_ns.as_str())
        );
        assert_eq!(
            (
                binding.role_ref.kind.as_str(),
                binding.role_ref.name.as_str()
            ),
            ("Role", SERVING_CERT)
        );
        let subjects = subjects_of(binding.subjects.as_ref());
        assert_eq!(
            subjects,
            [("ServiceAccount".to_owned(), account, Some(exporter_ns))],
            "{dir}"
        );
    }
}

#[test]
fn every_install_serves_https_and_asks_kubernetes_who_may_read() {
    for (dir, _) in INSTALLS {
        let docs = kustomize(dir);
        let c = container(&docs);
        let args = parsed_args(&c);
        assert_eq!(args.auth, AuthMode::Kubernetes, "{dir}");
        assert!(
            !c.args.iter().flatten().any(|a| a.starts_with("--auth=")
                || a == "--auth"
                || a.starts_with("--auth-token-audiences")),
            "{dir}: the default, kubernetes with the API server's audiences, is meant"
        );
        for probe in [&c.liveness_probe, &c.readiness_probe] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("HTTP probe");
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{dir}");
        }
        match serving_secret(dir, &docs) {
            None => {
                // The self-signed certificate made at start.
                assert!(args.tls_cert_file.is_none() && args.tls_key_file.is_none());
                assert!(pod_spec(&docs).volumes.is_none(), "{dir}");
            }
            Some(secret) => {
                let mount = secret_mount(&docs, &secret)
                    .unwrap_or_else(|| panic!("{dir}: {secret} is not mounted"));
                assert_eq!(args.tls_cert_file, Some(mount.join("tls.crt")), "{dir}");
                assert_eq!(args.tls_key_file, Some(mount.join("tls.key")), "{dir}");
            }
        }
        let from_cluster = dir == "deploy/scoped/openshift-cnv";
        assert_eq!(args.client_ca_from_cluster, from_cluster, "{dir}");
        assert!(args.client_ca_file.is_none(), "{dir}");
        // OpenShift Virtualization runs the whole stack in its namespace; elsewhere KubeVirt's.
        let presets = if from_cluster {
            vec![Preset::KubevirtStack]
        } else {
            Vec::new()
        };
        assert_eq!(args.scope.presets, presets, "{dir}");
    }
}

/// The path where Kubernetes mounts a pod's ServiceAccount token.
const POD_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The name the Service is reached by inside the cluster, which a verifiable certificate
/// carries.
fn service_name(docs: &[Value]) -> String {
    let service: Service = one(docs, "Service");
    format!(
        "{}.{}.svc",
        service.metadata.name.expect("name"),
        service.metadata.namespace.expect("namespace")
    )
}

#[test]
fn service_monitors_scrape_over_https_with_prometheus_token() {
    for (dir, _) in INSTALLS {
        let docs = kustomize(dir);
        let Some(monitor) = find(&docs, "ServiceMonitor").first().copied() else {
            assert_eq!(dir, "deploy/plain");
            continue;
        };
        let spec: ServiceMonitorSpec =
            serde_json::from_value(monitor["spec"].clone()).expect("spec");
        assert_eq!(spec.endpoints.len(), 1, "{dir}");
        let endpoint = &spec.endpoints[0];
        assert!(endpoint.honor_labels, "{dir}");
        assert_eq!(endpoint.scheme.as_deref(), Some("https"), "{dir}");
        assert_eq!(
            endpoint.bearer_token_file.as_deref(),
            Some(POD_TOKEN),
            "{dir}"
        );
        let tls = endpoint.tls_config.as_ref().expect("tlsConfig");
        assert_eq!(
            tls.server_name.as_deref(),
            Some(service_name(&docs).as_str()),
            "{dir}"
        );
        match dir {
            "deploy/scoped/openshift-cnv" => {
                // Verified with OpenShift's service CA, which prometheus-k8s mounts; its own
                // client certificate for mTLS.
                assert_eq!(
                    tls.ca_file.as_deref(),
                    Some("/etc/prometheus/configmaps/serving-certs-ca-bundle/service-ca.crt")
                );
                assert_eq!(
                    tls.cert_file.as_deref(),
                    Some("/etc/prometheus/secrets/metrics-client-certs/tls.crt")
                );
                assert_eq!(
                    tls.key_file.as_deref(),
                    Some("/etc/prometheus/secrets/metrics-client-certs/tls.key")
                );
                assert!(tls.insecure_skip_verify.is_none() && tls.ca.is_none());
            }
            "docs/examples/cert-manager" => {
                // Verified with the CA cert-manager writes beside the certificate.
                let secret = serving_secret(dir, &docs).expect("secret");
                let ca = tls.ca.as_ref().and_then(|c| c.secret.as_ref()).expect("ca");
                assert_eq!(
                    (ca.name.as_str(), ca.key.as_str()),
                    (secret.as_str(), "ca.crt")
                );
                assert!(tls.insecure_skip_verify.is_none() && tls.ca_file.is_none());
                assert!(tls.cert_file.is_none() && tls.key_file.is_none());
            }
            _ => {
                // The self-signed certificate cannot be verified.
                assert_eq!(tls.insecure_skip_verify, Some(true), "{dir}");
                assert!(tls.ca.is_none() && tls.ca_file.is_none(), "{dir}");
                assert!(tls.cert_file.is_none() && tls.key_file.is_none(), "{dir}");
            }
        }
    }
}

#[test]
fn openshift_variant_is_verified_and_verifies_prometheus() {
    let docs = kustomize("deploy/scoped/openshift-cnv");
    let (exporter_ns, _) = exporter_account(&docs);
    // The service CA's certificate covers the name Prometheus verifies.
    let service: Service = one(&docs, "Service");
    assert_eq!(
        service.metadata.name.as_deref(),
        Some("kubevirt-leader-exporter")
    );
    assert_eq!(
        service.metadata.namespace.as_deref(),
        Some(exporter_ns.as_str())
    );
    // The client CA comes from the API server's ConfigMap, which a RoleBinding in its
    // namespace lets the exporter read.
    let (ca_ns, ca_map, _) = CLUSTER_CLIENT_CA;
    let binding: RoleBinding = in_namespace(&docs, "RoleBinding", ca_ns);
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", "extension-apiserver-authentication-reader")
    );
    assert_eq!(ca_map, "extension-apiserver-authentication");
    assert!(names_account(
        binding.subjects.as_ref(),
        &exporter_account(&docs)
    ));
    // A ConfigMap the service CA fills with its bundle, for people who verify the server.
    let bundle: ConfigMap = in_namespace(&docs, "ConfigMap", &exporter_ns);
    let annotations = bundle.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("service.beta.openshift.io/inject-cabundle")
            .map(String::as_str),
        Some("true")
    );
    assert!(bundle.data.is_none(), "the service CA writes the data");
}

#[test]
fn cert_manager_example_issues_the_certificate_prometheus_verifies() {
    let docs = kustomize("docs/examples/cert-manager");
    let certificate = find(&docs, "Certificate")[0];
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    let (exporter_ns, _) = exporter_account(&docs);
    assert_eq!(certificate["metadata"]["namespace"], exporter_ns.as_str());
    let spec: CertificateSpec =
        serde_json::from_value(certificate["spec"].clone()).expect("Certificate");
    let name = service_name(&docs);
    assert_eq!(
        spec.dns_names,
        [name.clone(), format!("{name}.cluster.local")]
    );
    assert_eq!(spec.usages, ["server auth"]);
    assert_eq!(spec.issuer_ref.group, "cert-manager.io");
    assert!(["Issuer", "ClusterIssuer"].contains(&spec.issuer_ref.kind.as_str()));
    assert!(!spec.issuer_ref.name.is_empty());
    // Everything else is the default install's, but for the Deployment's certificate and the
    // ServiceMonitor's verification.
    let mut example = docs.clone();
    example.retain(|d| d["kind"] != "Certificate");
    let mut default = kustomize("deploy");
    for docs in [&mut example, &mut default] {
        docs.retain(|d| d["kind"] != "Deployment" && d["kind"] != "ServiceMonitor");
    }
    assert_eq!(example, default);
}

#[test]
fn prometheus_rule_is_in_the_install() {
    let docs = kustomize("deploy");
    let rule = find(&docs, "PrometheusRule")[0];
    let spec: PrometheusRuleSpec = serde_json::from_value(rule["spec"].clone()).expect("spec");
    let alerts: Vec<&str> = spec
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.alert.as_str()))
        .collect();
    assert!(
        alerts.contains(&"NoLeadingVirtOperator") && alerts.contains(&"KubevirtLeaderExporterDown"),
        "{alerts:?}"
    );
    assert!(spec.groups.iter().all(|g| {
        !g.name.is_empty()
            && g.rules
                .iter()
                .all(|r| !r.expr.is_empty() && !r.labels.is_empty() && !r.annotations.is_empty())
    }));
    assert!(
        spec.groups
            .iter()
            .flat_map(|g| &g.rules)
            .any(|r| r.for_.as_deref() == Some("10m"))
    );
}

#[test]
fn runbook_url_can_be_changed_with_kustomize() {
    let docs = kustomize("docs/examples/runbook-url");
    let rule = find(&docs, "PrometheusRule");
    let alerts: Vec<&serde_json::Value> = rule[0]["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert!(!alerts.is_empty());
    // Every alert's link is replaced, each by its own page.
    for alert in &alerts {
        let name = alert["alert"].as_str().expect("alert name");
        assert_eq!(
            alert["annotations"]["runbook_url"],
            format!("https://wiki.example.com/runbooks/{name}").as_str(),
            "{name}"
        );
    }
    for alert in &alerts[..2] {
        let kubevirt = alert["annotations"]["kubevirt_runbook_url"]
            .as_str()
            .expect("KubeVirt's runbook is still linked");
        assert!(kubevirt.starts_with("https://kubevirt.io/monitoring/runbooks/NoLeadingVirt"));
    }
}

/// The Prometheus Operator's kinds, which a cluster without its CRDs rejects.
const OPERATOR_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

/// The Role and RoleBinding that let an install's Prometheus discover the exporter.
const DISCOVERY: &str = "kubevirt-leader-exporter-discovery";

#[test]
fn plain_install_needs_no_prometheus_operator_and_invites_no_annotation_job() {
    let docs = kustomize("deploy/plain");
    for kind in OPERATOR_KINDS {
        assert!(find(&docs, kind).is_empty(), "{kind} in deploy/plain");
    }
    let role: ClusterRole = named(&docs, "ClusterRole", "kubevirt-leader-exporter");
    assert_eq!(granted(role.rules.as_deref().unwrap_or_default()), needed());
    // The prometheus-community chart's annotation job sends no token and verifies the
    // certificate: a Service that invited it would keep a target down for ever beside the
    // documented job's.
    let service: Service = one(&docs, "Service");
    let annotations = service.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.starts_with("prometheus.io/")),
        "{annotations:?}"
    );
    // Everything else is the cluster-wide install's, but for whom the metrics reader and the
    // discovery Role are bound to (a placeholder here;
    // every_install_lets_its_prometheus_read_the_protected_paths checks both) and which
    // Prometheus pods the NetworkPolicy admits (network_policy_admits_only_the_prometheus_pods).
    let mut operator = kustomize("deploy");
    operator.retain(|d| !OPERATOR_KINDS.iter().any(|k| d["kind"] == *k));
    let mut plain = docs;
    for docs in [&mut plain, &mut operator] {
        for doc in docs.iter_mut() {
            let name = &doc["metadata"]["name"];
            if (doc["kind"] == "ClusterRoleBinding"
                && name == "kubevirt-leader-exporter-metrics-reader")
                || (doc["kind"] == "RoleBinding" && name == DISCOVERY)
            {
                doc["subjects"] = Value::Null;
            }
            if doc["kind"] == "NetworkPolicy" {
                doc["spec"]["ingress"][0]["from"][0]["podSelector"] = Value::Null;
            }
        }
    }
    assert_eq!(plain, operator);
}

#[test]
fn rules_config_map_carries_the_rule_file_unchanged() {
    let docs = kustomize("deploy/rules");
    let map: ConfigMap = one(&docs, "ConfigMap");
    assert_eq!(map.metadata.name.as_deref(), Some("kubevirt-leader-rules"));
    // No namespace of its own: it goes where Prometheus runs (`kubectl apply -n ...`).
    assert_eq!(map.metadata.namespace, None);
    let file =
        std::fs::read_to_string(repo("deploy/rules/kubevirt-leader.rules.yml")).expect("read");
    let data = map.data.unwrap_or_default();
    assert_eq!(data.get("kubevirt-leader.rules.yml"), Some(&file));
}

#[test]
fn prometheus_example_scrapes_the_shipped_service_and_loads_the_rules() {
    let text =
        std::fs::read_to_string(repo("docs/examples/prometheus/prometheus.yml")).expect("read");
    let config: Value = serde_saphyr::from_str(&text).expect("YAML");
    let job = &config["scrape_configs"][0];
    assert_eq!(job["honor_labels"], true);
    let docs = kustomize("deploy/plain");
    // HTTPS, with Prometheus's own token; the self-signed certificate cannot be verified.
    assert_eq!(job["scheme"], "https");
    assert_eq!(job["authorization"]["credentials_file"], POD_TOKEN);
    assert_eq!(
        job["tls_config"]["server_name"],
        service_name(&docs).as_str()
    );
    assert_eq!(job["tls_config"]["insecure_skip_verify"], true);
    let service: Service = one(&docs, "Service");
    let namespace = service.metadata.namespace.expect("namespace");
    assert_eq!(
        job["kubernetes_sd_configs"][0]["namespaces"]["names"][0],
        namespace.as_str()
    );
    let keep = &job["relabel_configs"][0];
    assert_eq!(keep["action"], "keep");
    let port = &service.spec.expect("spec").ports.expect("ports")[0];
    let want = format!(
        "{};{}",
        service.metadata.name.expect("name"),
        port.name.as_deref().expect("port name")
    );
    assert_eq!(keep["regex"], want.as_str());
    // The rule file glob matches the ConfigMap's key once mounted.
    let glob = config["rule_files"][0].as_str().expect("rule_files");
    let (_, pattern) = glob.rsplit_once('/').expect("a directory");
    let suffix = pattern.strip_prefix('*').expect("a glob");
    assert!("kubevirt-leader.rules.yml".ends_with(suffix), "{glob}");
}

/// `promtool check config` accepts the example job, once what only exists in a pod is
/// replaced: the token file and the mounted rules by real files, and Kubernetes discovery,
/// which Debian's Prometheus is built without, by a static target.
#[test]
fn prometheus_example_passes_promtool() {
    let text =
        std::fs::read_to_string(repo("docs/examples/prometheus/prometheus.yml")).expect("read");
    let mut config: Value = serde_saphyr::from_str(&text).expect("YAML");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prometheus-example");
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("token");
    std::fs::write(&token, "not-a-token").expect("token");
    config["rule_files"] = serde_json::json!([repo("deploy/rules/kubevirt-leader.rules.yml")]);
    let job = config["scrape_configs"][0]
        .as_object_mut()
        .expect("a scrape job");
    job.remove("kubernetes_sd_configs")
        .expect("Kubernetes discovery");
    job.insert(
        "static_configs".into(),
        serde_json::json!([{"targets": ["exporter:8080"]}]),
    );
    job["authorization"]["credentials_file"] = token.display().to_string().into();
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, serde_json::to_string(&config).expect("JSON")).expect("write");
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output()
        .expect("promtool must be installed (Debian package `prometheus`)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn only_the_openshift_variant_joins_platform_monitoring() {
    let label = "openshift.io/cluster-monitoring";
    for dir in ["deploy", "deploy/plain", "deploy/scoped/kubevirt"] {
        let ns: Namespace = one(&kustomize(dir), "Namespace");
        assert!(
            !ns.metadata.labels.unwrap_or_default().contains_key(label),
            "{dir}"
        );
    }
    let docs = kustomize("deploy/scoped/openshift-cnv");
    let ns: Namespace = one(&docs, "Namespace");
    let exporter_ns = ns.metadata.name.clone().expect("name");
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get(label)
            .map(String::as_str),
        Some("true")
    );
    let role: Role = named(&docs, "Role", DISCOVERY);
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(exporter_ns.as_str())
    );
    let granted = granted(role.rules.as_deref().unwrap_or_default());
    for resource in ["services", "endpoints", "pods"] {
        let read = ["get", "list", "watch"].map(String::from).to_vec();
        assert!(
            granted.contains(&(String::new(), resource.into(), read)),
            "{resource}"
        );
    }
    let binding: RoleBinding = named(&docs, "RoleBinding", DISCOVERY);
    assert_eq!(binding.role_ref.name, role.metadata.name.expect("name"));
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        (
            "ServiceAccount",
            "prometheus-k8s",
            Some("openshift-monitoring")
        )
    );
}

#[test]
fn kube_prometheus_stack_install_labels_what_its_prometheus_selects() {
    let docs = kustomize("deploy/kube-prometheus-stack");
    for kind in OPERATOR_KINDS {
        let object = find(&docs, kind)[0];
        assert_eq!(
            object["metadata"]["labels"]["release"], "kube-prometheus-stack",
            "{kind}"
        );
    }
    let deployment = find(&docs, "Deployment")[0];
    assert!(deployment["metadata"]["labels"].get("release").is_none());
}

#[tokio::test]
async fn every_install_applies_to_a_real_api_server() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = envtest::ControlPlane::start(&assets).await;
    let kubectl = |args: &[&str]| plane.admin_kubectl(args);
    for ns in ["kubevirt", "openshift-cnv", "monitoring"] {
        let (ok, out) = kubectl(&["create", "namespace", ns]);
        assert!(ok, "{out}");
    }
    // Without the Prometheus Operator: the plain install and the rules go in...
    let (ok, out) = kubectl(&["apply", "-k", "deploy/plain"]);
    assert!(ok, "deploy/plain: {out}");
    let (ok, out) = kubectl(&["apply", "-n", "monitoring", "-k", "deploy/rules"]);
    assert!(ok, "deploy/rules: {out}");
    let (ok, out) = kubectl(&[
        "get",
        "-n",
        "kubevirt-leader-exporter",
        "deployment/kubevirt-leader-exporter",
        "service/kubevirt-leader-exporter",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "-n",
        "monitoring",
        "configmap/kubevirt-leader-rules",
        "-o",
        "jsonpath={.data.kubevirt-leader\\.rules\\.yml}",
    ]);
    let file =
        std::fs::read_to_string(repo("deploy/rules/kubevirt-leader.rules.yml")).expect("read");
    assert!(ok && out == file, "{out}");
    // The API server's RBAC gives the exporter its reviews and the install's Prometheus
    // (the placeholder of deploy/plain) the protected paths, and nobody else.
    let can = |who: &str, verb: &str, what: &str| {
        let (ok, out) = kubectl(&["auth", "can-i", verb, what, &format!("--as={who}")]);
        assert!(ok || out.trim() == "no", "{out}");
        ok
    };
    let exporter = "system:serviceaccount:kubevirt-leader-exporter:kubevirt-leader-exporter";
    for review in [
        "tokenreviews.authentication.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(can(exporter, "create", review), "{review}");
    }
    assert!(!can(exporter, "get", http::METRICS_PATH));
    // It publishes its certificate in its own namespace, and may do nothing else with
    // ConfigMaps anywhere.
    let can_in = |who: &str, verb: &str, what: &str, ns: &str| {
        let (ok, out) = kubectl(&[
            "auth",
            "can-i",
            verb,
            what,
            "-n",
            ns,
            &format!("--as={who}"),
        ]);
        assert!(ok || out.trim() == "no", "{out}");
        ok
    };
    for verb in ["get", "create", "update"] {
        assert!(
            can_in(exporter, verb, "configmaps", "kubevirt-leader-exporter"),
            "{verb}"
        );
        assert!(!can_in(exporter, verb, "configmaps", "kubevirt"), "{verb}");
    }
    for verb in ["list", "watch", "delete", "patch"] {
        assert!(
            !can_in(exporter, verb, "configmaps", "kubevirt-leader-exporter"),
            "{verb}"
        );
    }
    let prometheus = "system:serviceaccount:monitoring:prometheus";
    for path in protected_paths() {
        assert!(can(prometheus, "get", &path), "{path}");
        assert!(!can("someone-else", "get", &path), "{path}");
    }
    assert!(!can(prometheus, "get", "/debug"));
    // ...while the default install stops at the operator's kinds, which is why the plain one
    // exists.
    let (ok, out) = kubectl(&["apply", "-k", "deploy"]);
    assert!(!ok && out.contains("ServiceMonitor"), "{out}");

    plane.install_operator_crds();
    let crd = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cert-manager-certificate-crd.yaml");
    std::fs::write(&crd, CERTIFICATE_CRD).expect("write");
    let (ok, out) = kubectl(&["apply", "-f", &crd.display().to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/certificates.cert-manager.io",
    ]);
    assert!(ok, "{out}");
    for (dir, _) in INSTALLS {
        let (ok, out) = kubectl(&["apply", "-k", dir]);
        assert!(ok, "{dir}: {out}");
    }
    let (ok, out) = kubectl(&[
        "get",
        "-n",
        "kubevirt-leader-exporter",
        "servicemonitor/kubevirt-leader-exporter",
        "prometheusrule/kubevirt-leader-exporter",
        "rolebinding/kubevirt-leader-exporter-discovery",
        "networkpolicy/kubevirt-leader-exporter",
        "configmap/kubevirt-leader-exporter-service-ca",
        "certificate/kubevirt-leader-exporter",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "clusterrole/kubevirt-leader-exporter-auth",
        "clusterrole/kubevirt-leader-exporter-metrics-reader",
        "clusterrolebinding/kubevirt-leader-exporter-metrics-reader",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "get",
        "-n",
        CLUSTER_CLIENT_CA.0,
        "rolebinding/kubevirt-leader-exporter-client-ca",
        "role/extension-apiserver-authentication-reader",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
}

/// A minimal definition of cert-manager's Certificate: enough for the API server to accept
/// the example's object, as on a cluster where cert-manager is installed.
const CERTIFICATE_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  versions:
    - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;
