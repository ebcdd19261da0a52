//! Label and field selectors as the API server takes them in query strings.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};

use super::store::Stored;

/// Parses a label selector string (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
pub fn parse_labels(text: &str) -> Result<Selector, String> {
    let mut exprs = Vec::new();
    for term in split_terms(text) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        exprs.push(
            parse_term(term).ok_or_else(|| format!("unable to parse requirement: {term:?}"))?,
        );
    }
    Ok(Selector::from_iter(exprs))
}

fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_term(term: &str) -> Option<Expression> {
    if let Some(key) = term.strip_prefix('!') {
        return Some(Expression::DoesNotExist(key.trim().to_owned()));
    }
    for (op, set) in [(" notin ", false), (" in ", true)] {
        if let Some((key, values)) = term.split_once(op) {
            let values = values.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values = values.split(',').map(|v| v.trim().to_owned()).collect();
            let key = key.trim().to_owned();
            return Some(if set {
                Expression::In(key, values)
            } else {
                Expression::NotIn(key, values)
            });
        }
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Some(Expression::NotEqual(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(Expression::Equal(key.trim().into(), value.trim().into()));
    }
    term.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        .then(|| Expression::Exists(term.to_owned()))
}

/// A field selector over `metadata.name` and `metadata.namespace`, the fields every kind
/// supports.
#[derive(Clone, Debug, Default)]
pub struct Fields(Vec<(String, String, bool)>);

pub fn parse_fields(text: &str) -> Result<Fields, String> {
    let mut terms = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (f, v, true)
        } else {
            return Err(format!("invalid field selector: {term:?}"));
        };
        if !matches!(field, "metadata.name" | "metadata.namespace") {
            return Err(format!("field label not supported: {field}"));
        }
        terms.push((field.to_owned(), value.to_owned(), equal));
    }
    Ok(Fields(terms))
}

impl Fields {
    pub fn matches(&self, object: &Stored) -> bool {
        self.0.iter().all(|(field, value, equal)| {
            let actual = if field == "metadata.name" {
                &object.name
            } else {
                &object.namespace
            };
            (actual == value) == *equal
        })
    }
}

/// Everything a request selects by: namespace, labels and fields.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Fields,
}

impl Filter {
    pub fn matches(&self, object: &Stored) -> bool {
        self.matches_labels(object, &object.labels)
    }

    /// Matches with `labels` standing for the object's labels.
    pub fn matches_labels(&self, object: &Stored, labels: &BTreeMap<String, String>) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == object.namespace)
            && self.fields.matches(object)
            && self.labels.matches(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let s = parse_labels("kubevirt.io=virt-operator,tier in (a, b),!gone,present,x!=y")
            .expect("parse");
        assert!(s.matches(&labels(&[
            ("kubevirt.io", "virt-operator"),
            ("tier", "b"),
            ("present", "")
        ])));
        assert!(!s.matches(&labels(&[
            ("kubevirt.io", "virt-operator"),
            ("tier", "c"),
            ("present", "")
        ])));
        assert!(!s.matches(&labels(&[("kubevirt.io", "virt-operator"), ("tier", "a")])));
        assert!(!s.matches(&labels(&[
            ("kubevirt.io", "virt-operator"),
            ("tier", "a"),
            ("present", ""),
            ("gone", "")
        ])));
        assert!(parse_labels("a in b").is_err());
        assert!(parse_labels("").expect("empty").selects_all());
    }

    #[test]
    fn field_selectors() {
        let object = Stored {
            kind: super::super::store::Kind::Lease,
            namespace: "kubevirt".into(),
            name: "virt-operator".into(),
            labels: BTreeMap::new(),
            json: "{}".into(),
        };
        assert!(
            parse_fields("metadata.name=virt-operator")
                .expect("parse")
                .matches(&object)
        );
        assert!(
            !parse_fields("metadata.name=other")
                .expect("parse")
                .matches(&object)
        );
        assert!(
            parse_fields("metadata.namespace!=kube-system")
                .expect("parse")
                .matches(&object)
        );
        assert!(parse_fields("spec.holderIdentity=x").is_err());
    }
}
