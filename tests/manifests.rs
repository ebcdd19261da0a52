//! The manifests in deploy/: every file parses as what it claims to be, every kustomization
//! renders, the RBAC grants exactly what the exporter uses, and the Deployment matches the
//! binary's flags and endpoints.

mod common;
mod envtest;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use kubevirt_leader_exporter::{config::Args, http, watch::API_ACCESS};
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
        "Kustomization" => Ok(()),
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
    ] {
        assert!(kinds.contains(want), "no {want} in deploy/");
    }
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl must be installed");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = docs(&String::from_utf8_lossy(&out.stdout));
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

/// The rules as (group, resource, verbs), which must be exactly what the exporter uses.
fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String, Vec<String>)> {
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

fn needed() -> BTreeSet<(String, String, Vec<String>)> {
    API_ACCESS
        .iter()
        .map(|(g, r, v)| {
            (
                (*g).to_owned(),
                (*r).to_owned(),
                v.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

fn container(docs: &[Value]) -> Container {
    let deployment: Deployment = one(docs, "Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    pod.containers.into_iter().next().expect("container")
}

/// The container's args, parsed by the binary's own flag parser.
fn parsed_args(c: &Container) -> Args {
    let args = c.args.clone().unwrap_or_default();
    Args::try_parse_from(std::iter::once("kubevirt-leader-exporter".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("Deployment args rejected by the binary: {e}"))
}

#[test]
fn cluster_wide_install_renders_and_grants_exactly_what_is_watched() {
    let docs = kustomize("deploy");
    let role: ClusterRole = one(&docs, "ClusterRole");
    assert_eq!(granted(role.rules.as_deref().unwrap_or_default()), needed());
    let binding: ClusterRoleBinding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.expect("name"));
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "kubevirt-leader-exporter")
    );
    assert!(find(&docs, "Role").is_empty());
    let args = parsed_args(&container(&docs));
    assert!(
        args.namespaces.is_empty(),
        "the cluster-wide install must not restrict namespaces"
    );
}

#[test]
fn scoped_variants_grant_the_same_rules_in_their_namespace_only() {
    for ns in SCOPED {
        let docs = kustomize(&format!("deploy/scoped/{ns}"));
        assert!(
            find(&docs, "ClusterRole").is_empty() && find(&docs, "ClusterRoleBinding").is_empty()
        );
        let role: Role = in_namespace(&docs, "Role", ns);
        assert_eq!(granted(role.rules.as_deref().unwrap_or_default()), needed());
        let binding: RoleBinding = in_namespace(&docs, "RoleBinding", ns);
        assert_eq!(binding.role_ref.kind, "Role");
        let args = parsed_args(&container(&docs));
        assert_eq!(args.namespaces, [ns], "{ns}");
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
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
        );
    }
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

#[test]
fn plain_install_needs_no_prometheus_operator_and_is_scraped_by_annotation() {
    let docs = kustomize("deploy/plain");
    for kind in OPERATOR_KINDS {
        assert!(find(&docs, kind).is_empty(), "{kind} in deploy/plain");
    }
    let role: ClusterRole = one(&docs, "ClusterRole");
    assert_eq!(granted(role.rules.as_deref().unwrap_or_default()), needed());
    let args = parsed_args(&container(&docs));
    let service: Service = one(&docs, "Service");
    let annotations = service.metadata.annotations.unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    assert_eq!(annotation("prometheus.io/scrape"), Some("true"));
    assert_eq!(
        annotation("prometheus.io/port"),
        Some(args.listen.port().to_string().as_str())
    );
    assert_eq!(annotation("prometheus.io/path"), Some(http::METRICS_PATH));
    // Everything else is the cluster-wide install's.
    let mut operator = kustomize("deploy");
    operator.retain(|d| !OPERATOR_KINDS.iter().any(|k| d["kind"] == *k));
    let mut plain = docs;
    for doc in &mut plain {
        if let Some(meta) = doc["metadata"].as_object_mut() {
            meta.remove("annotations");
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
    let role: Role = in_namespace(&docs, "Role", &exporter_ns);
    let granted = granted(role.rules.as_deref().unwrap_or_default());
    for resource in ["services", "endpoints", "pods"] {
        let read = ["get", "list", "watch"].map(String::from).to_vec();
        assert!(
            granted.contains(&(String::new(), resource.into(), read)),
            "{resource}"
        );
    }
    let binding: RoleBinding = in_namespace(&docs, "RoleBinding", &exporter_ns);
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
fn kube_prometheus_stack_example_labels_what_its_prometheus_selects() {
    let docs = kustomize("docs/examples/kube-prometheus-stack");
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
    // ...while the default install stops at the operator's kinds, which is why the plain one
    // exists.
    let (ok, out) = kubectl(&["apply", "-k", "deploy"]);
    assert!(!ok && out.contains("ServiceMonitor"), "{out}");

    plane.install_operator_crds();
    for dir in [
        "deploy",
        "deploy/scoped/kubevirt",
        "deploy/scoped/openshift-cnv",
        "docs/examples/kube-prometheus-stack",
        "docs/examples/runbook-url",
    ] {
        let (ok, out) = kubectl(&["apply", "-k", dir]);
        assert!(ok, "{dir}: {out}");
    }
    let (ok, out) = kubectl(&[
        "get",
        "-n",
        "kubevirt-leader-exporter",
        "servicemonitor/kubevirt-leader-exporter",
        "prometheusrule/kubevirt-leader-exporter",
        "rolebinding/prometheus-k8s",
        "-o",
        "name",
    ]);
    assert!(ok, "{out}");
}
