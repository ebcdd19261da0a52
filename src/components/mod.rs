//! The components the exporter watches: what one is (its pods and the Lease its leader
//! holds), the component file and its validation, and how presets and the file combine.

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use serde::Deserialize;

mod presets;

pub use presets::Preset;

/// What is wrong with the components asked for.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is not valid: {error}")]
    Parse {
        path: PathBuf,
        error: Box<serde_saphyr::Error>,
    },
    #[error("component {component:?}: {message}")]
    Component { component: String, message: String },
    #[error("config lists no components")]
    NoComponents,
}

/// A leader-elected workload: its pods and the Lease its leader holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub name: String,
    pub selector: Selector,
    pub lease: String,
    pub origin: Origin,
}

/// Where a component came from, which decides how it is shown and whether it can go away
/// while the exporter runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// A preset or the component file: watched from start to exit.
    #[default]
    Configured,
    /// Found at run time from its Lease, and forgotten when the Lease goes. `None`: the
    /// Lease's holder resolved to no workload, as a Lease left behind by an uninstalled
    /// operator does.
    Discovered { workload: Option<Workload> },
}

/// The workload whose pods hold a discovered Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet, or "static pods".
    pub kind: String,
    pub name: String,
    /// Where it runs, when that is not the Lease's namespace (cert-manager keeps its Lease
    /// in kube-system): its pods are watched there, and judged with the Lease.
    pub namespace: Option<String>,
}

impl Component {
    /// A component found from its Lease in a namespace: named after the Lease, its pods those
    /// `selector` picks of `workload`'s, or none for an abandoned Lease.
    pub fn discovered(lease: &str, found: Option<(Workload, Selector)>) -> Self {
        let (workload, selector) = match found {
            Some((workload, selector)) => (Some(workload), selector),
            None => (None, Selector::default()),
        };
        Self {
            name: lease.to_owned(),
            selector,
            lease: lease.to_owned(),
            origin: Origin::Discovered { workload },
        }
    }

    /// The label selector in the form the API server takes.
    pub fn label_selector(&self) -> String {
        self.selector.to_string()
    }

    /// Whether it has pods to watch. An empty selector would watch every pod in scope: a
    /// configured component never has one, an abandoned Lease has no pods to select.
    pub fn watches_pods(&self) -> bool {
        !self.selector.selects_all()
    }

    pub fn is_discovered(&self) -> bool {
        matches!(self.origin, Origin::Discovered { .. })
    }

    /// Where its pods are, when not in the namespace of its Lease.
    pub fn pods_elsewhere(&self) -> Option<&str> {
        match &self.origin {
            Origin::Discovered {
                workload: Some(workload),
            } => workload.namespace.as_deref(),
            _ => None,
        }
    }
}

/// The components watched when neither a preset nor a component file is given: KubeVirt's
/// leader-elected ones. virt-synchronization-controller exists from KubeVirt 1.6 on
/// (decentralized live migration) and simply has no series where it is not deployed.
pub fn default_components() -> Vec<Component> {
    Preset::Kubevirt.components()
}

/// The components of `presets` and then of `file`, each name once: a name in two presets is
/// the same component, a file's name that a preset has too is a mistake.
pub fn combine(presets: &[Preset], file: Vec<Component>) -> Result<Vec<Component>, ComponentError> {
    let mut out: Vec<Component> = Vec::new();
    for preset in presets {
        for component in preset.components() {
            if !out.iter().any(|c| c.name == component.name) {
                out.push(component);
            }
        }
    }
    for component in file {
        if out.iter().any(|c| c.name == component.name) {
            return Err(component_error(
                &component.name,
                "is in a --preset too: rename it, or drop the preset",
            ));
        }
        out.push(component);
    }
    Ok(out)
}

/// The components of `presets` and of the component file at `file`; `kubevirt`'s when
/// neither is given.
pub fn compose(
    presets: &[Preset],
    file: Option<&std::path::Path>,
) -> Result<Vec<Component>, ComponentError> {
    let listed = match file {
        Some(path) => load_components(path)?,
        None => Vec::new(),
    };
    match (file, presets.is_empty()) {
        (None, true) => combine(&[Preset::Kubevirt], listed),
        _ => combine(presets, listed),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentFile {
    components: Vec<ComponentEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ComponentEntry {
    name: String,
    pod_selector: LabelSelector,
    lease: String,
}

/// Reads and validates a component file.
pub fn load_components(path: &std::path::Path) -> Result<Vec<Component>, ComponentError> {
    let text = std::fs::read_to_string(path).map_err(|error| ComponentError::Read {
        path: path.into(),
        error,
    })?;
    parse_components(&text).map_err(|e| match e {
        ComponentError::Parse { error, .. } => ComponentError::Parse {
            path: path.into(),
            error,
        },
        other => other,
    })
}

/// Parses and validates the YAML text of a component file.
pub fn parse_components(text: &str) -> Result<Vec<Component>, ComponentError> {
    let file: ComponentFile =
        serde_saphyr::from_str(text).map_err(|error| ComponentError::Parse {
            path: PathBuf::new(),
            error: Box::new(error),
        })?;
    if file.components.is_empty() {
        return Err(ComponentError::NoComponents);
    }
    let mut seen = BTreeMap::new();
    let mut out = Vec::with_capacity(file.components.len());
    for entry in file.components {
        let component = validate_entry(entry)?;
        if seen.insert(component.name.clone(), ()).is_some() {
            return Err(component_error(&component.name, "listed twice"));
        }
        out.push(component);
    }
    Ok(out)
}

fn component_error(component: &str, message: impl Into<String>) -> ComponentError {
    ComponentError::Component {
        component: component.into(),
        message: message.into(),
    }
}

fn validate_entry(entry: ComponentEntry) -> Result<Component, ComponentError> {
    let name = entry.name;
    if !is_label_value(&name) || name.is_empty() {
        return Err(component_error(
            &name,
            "name must be a non-empty label value",
        ));
    }
    if !is_dns_subdomain(&entry.lease) {
        return Err(component_error(
            &name,
            format!("lease {:?} is not a valid object name", entry.lease),
        ));
    }
    check_label_selector(&entry.pod_selector).map_err(|m| component_error(&name, m))?;
    let selector = Selector::try_from(entry.pod_selector)
        .map_err(|e| component_error(&name, format!("podSelector: {e}")))?;
    if selector.selects_all() {
        return Err(component_error(
            &name,
            "podSelector is empty and would select every pod",
        ));
    }
    Ok(Component {
        name,
        selector,
        lease: entry.lease,
        origin: Origin::Configured,
    })
}

/// The operators a LabelSelector expression may use.
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

fn check_label_selector(selector: &LabelSelector) -> Result<(), String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        check_key(key)?;
        if !is_label_value(value) {
            return Err(format!("podSelector: {value:?} is not a valid label value"));
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        check_key(&expr.key)?;
        if !OPERATORS.contains(&expr.operator.as_str()) {
            return Err(format!(
                "podSelector: operator {:?} of key {:?} is not one of {}",
                expr.operator,
                expr.key,
                OPERATORS.join(", ")
            ));
        }
        for value in expr.values.iter().flatten() {
            if !is_label_value(value) {
                return Err(format!("podSelector: {value:?} is not a valid label value"));
            }
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns_subdomain);
    if prefix_ok && !name.is_empty() && is_label_value(name) {
        Ok(())
    } else {
        Err(format!("podSelector: {key:?} is not a valid label key"))
    }
}

/// A label value: at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 label, as namespace names are.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&s.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A DNS-1123 subdomain, as most object names are.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_file() {
        let text = r#"
components:
  - name: virt-operator
    podSelector:
      matchLabels: {kubevirt.io: virt-operator}
    lease: virt-operator
  - name: cdi
    podSelector:
      matchExpressions:
        - {key: app, operator: In, values: [cdi-deployment]}
    lease: cdi-controller-leader-election-helper
"#;
        let c = parse_components(text).expect("valid");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].label_selector(), "app in (cdi-deployment)");
        assert_eq!(c[1].lease, "cdi-controller-leader-election-helper");
    }

    #[test]
    fn bad_component_files() {
        let cases = [
            ("components: []", "no components"),
            ("components: [{name: a, lease: a}]", "missing field"),
            ("nope: 1", "unknown field"),
            (
                "components: [{name: a, lease: a, podSelector: {}}]",
                "every pod",
            ),
            (
                "components: [{name: a, lease: 'Bad Name', podSelector: {matchLabels: {a: b}}}]",
                "lease",
            ),
            (
                "components: [{name: a, lease: a, podSelector: {matchLabels: {'bad key!': b}}}]",
                "label key",
            ),
            (
                "components: [{name: a, lease: a, podSelector: {matchLabels: {a: 'b c'}}}]",
                "label value",
            ),
            (
                "components: [{name: a, lease: a, podSelector: {matchExpressions: [{key: a, operator: Sideways}]}}]",
                "operator \"Sideways\" of key \"a\" is not one of In, NotIn, Exists, DoesNotExist",
            ),
            (
                "components: [{name: a, lease: a, podSelector: {matchLabels: {a: b}}}, {name: a, lease: b, podSelector: {matchLabels: {a: b}}}]",
                "twice",
            ),
        ];
        for (text, want) in cases {
            let err = parse_components(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_discovered_component_is_named_after_its_lease() {
        let workload = Workload {
            kind: "StatefulSet".into(),
            name: "db".into(),
            namespace: None,
        };
        let selector = Selector::from_iter([("app", "db")]);
        let c = Component::discovered("db-leader", Some((workload.clone(), selector)));
        assert_eq!(
            (c.name.as_str(), c.lease.as_str()),
            ("db-leader", "db-leader")
        );
        assert_eq!(
            c.origin,
            Origin::Discovered {
                workload: Some(workload)
            }
        );
        assert!(c.is_discovered() && c.watches_pods());
        let abandoned = Component::discovered("gone", None);
        assert!(abandoned.is_discovered() && !abandoned.watches_pods());
        assert!(
            default_components()
                .iter()
                .all(|c| c.origin == Origin::Configured && c.watches_pods())
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_components(std::path::Path::new("/nonexistent/components.yaml"))
            .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/components.yaml"));
    }
}
