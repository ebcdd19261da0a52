//! `diagnose --bundle DIR`: everything gathered, as plain files to attach to a bug report.
//! Nothing here asks the API server for anything: the files hold what the look-ups already
//! returned, and no look-up reads Secrets (pod specs name them, never hold their data).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Finding, Report, facts::Lookup, text};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0} is not an empty directory: name a new one, so bundles never mix")]
    NotEmpty(PathBuf),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("turning {0} into YAML: {1}")]
    Yaml(String, String),
}

/// Fails early, before any look-up, when `dir` exists and holds anything.
pub fn check_target(dir: &Path) -> Result<(), BundleError> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    };
    if empty {
        Ok(())
    } else {
        Err(BundleError::NotEmpty(dir.to_owned()))
    }
}

/// Writes the bundle; returns the files written, relative to `dir`, README first.
pub fn write(dir: &Path, report: &Report) -> Result<Vec<String>, BundleError> {
    let mut files = Files {
        dir,
        listed: Vec::new(),
    };
    files.put("report.txt", &text(report), "the report, as printed")?;
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    files.put(
        "report.json",
        &json,
        "the report for scripts (as `diagnose --output json`)",
    )?;
    files.put("version.txt", &version(report), "versions and when")?;
    for finding in &report.components {
        component_files(&mut files, finding)?;
    }
    let readme = readme(report, &files.listed);
    files.put("README.txt", &readme, "this list")?;
    let mut names: Vec<String> = files.listed.into_iter().map(|(name, _)| name).collect();
    names.rotate_right(1);
    Ok(names)
}

fn component_files(files: &mut Files, finding: &Finding) -> Result<(), BundleError> {
    let facts = &finding.facts;
    let base = format!("{}/{}", safe(&facts.namespace), safe(&facts.component));
    let objects = &facts.objects;
    files.yaml(
        &format!("{base}/pods.yaml"),
        &list(&objects.pods),
        "the component's pods",
    )?;
    if let Some(lease) = &objects.lease {
        files.yaml(&format!("{base}/lease.yaml"), lease, "its Lease")?;
    }
    files.yaml(
        &format!("{base}/events.yaml"),
        &list(&objects.events),
        "events about its pods and Lease",
    )?;
    files.yaml(
        &format!("{base}/webhooks.yaml"),
        &list(&objects.webhook_configurations),
        "admission webhook configurations that match leases",
    )?;
    for excerpt in &facts.logs {
        let body = match &excerpt.lines {
            Lookup::Found(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
            Lookup::Unavailable(why) => format!("# no log available: {why}\n"),
            Lookup::Forbidden(why) | Lookup::Failed(why) => format!("# log not read: {why}\n"),
        };
        files.put(
            &format!("{base}/logs/{}.log", safe(&excerpt.pod)),
            &body,
            "its log lines about leader election and rejections",
        )?;
    }
    Ok(())
}

struct Files<'a> {
    dir: &'a Path,
    /// (path relative to `dir`, what it holds)
    listed: Vec<(String, &'static str)>,
}

impl Files<'_> {
    fn put(&mut self, name: &str, body: &str, about: &'static str) -> Result<(), BundleError> {
        let path = self.dir.join(name);
        let write = |path: &Path| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, body)
        };
        write(&path).map_err(|source| BundleError::Write { path, source })?;
        self.listed.push((name.to_owned(), about));
        Ok(())
    }

    fn yaml<T: Serialize>(
        &mut self,
        name: &str,
        value: &T,
        about: &'static str,
    ) -> Result<(), BundleError> {
        let body = serde_saphyr::to_string(value)
            .map_err(|e| BundleError::Yaml(name.to_owned(), e.to_string()))?;
        self.put(name, &body, about)
    }
}

/// A `v1` List, which `kubectl` reads back.
fn list(items: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Names come from the API server and the configuration: keep them to one path segment.
fn safe(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.chars().all(|c| c == '.') {
        cleaned.replace('.', "_")
    } else {
        cleaned
    }
}

fn version(report: &Report) -> String {
    let server = match &report.api_server_version {
        Lookup::Found(version) => version.clone(),
        Lookup::Forbidden(why) | Lookup::Unavailable(why) | Lookup::Failed(why) => {
            format!("unknown ({why})")
        }
    };
    format!(
        "kubevirt-leader-exporter {}\nkube-apiserver {server}\ngathered at {}\n",
        report.exporter_version, report.gathered_at
    )
}

fn readme(report: &Report, listed: &[(String, &'static str)]) -> String {
    let mut out = format!(
        "kubevirt-leader-exporter diagnose, gathered at {}.\n\
         Plain files to attach to a bug report. No Secret was read; pod specs may name\n\
         Secrets and ConfigMaps, and logs may name hosts: look before you share.\n\nFiles:\n",
        report.gathered_at
    );
    for (name, about) in listed {
        out.push_str(&format!("{name}\n    {about}\n"));
    }
    out.push_str("README.txt\n    this list\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(
            safe("virt-operator-6f7d9c5b8-a1b2c"),
            "virt-operator-6f7d9c5b8-a1b2c"
        );
        assert_eq!(safe("../etc/passwd"), ".._etc_passwd");
        assert_eq!(safe(".."), "__");
        assert_eq!(safe("a/b c"), "a_b_c");
    }

    #[test]
    fn a_directory_with_files_is_refused() {
        let dir = std::env::temp_dir().join(format!("kle-bundle-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(check_target(&dir).is_ok(), "a new directory");
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(check_target(&dir).is_ok(), "an empty directory");
        std::fs::write(dir.join("old.txt"), "x").expect("write");
        assert!(matches!(check_target(&dir), Err(BundleError::NotEmpty(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
