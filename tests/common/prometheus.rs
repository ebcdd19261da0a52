//! A real Prometheus server on loopback, and its HTTP API.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::free_addr;

/// A Prometheus server on loopback, killed when dropped.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates the shipped rule file.
    pub fn start(target: &str) -> Self {
        let rules =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules/kubevirt-leader.rules.yml");
        Self::start_with(
            &format!("static_configs: [{{targets: ['{target}']}}]"),
            &rules,
            None,
        )
    }

    /// Scrapes the targets `discovery` names (a scrape config's service discovery, as YAML
    /// flow) every second, evaluates `rules`, and sends alerts to `alertmanager`.
    pub fn start_with(discovery: &str, rules: &Path, alertmanager: Option<SocketAddr>) -> Self {
        let alerting = alertmanager
            .map(|am| {
                format!(
                    "alerting: {{alertmanagers: [{{static_configs: [{{targets: ['{am}']}}]}}]}}\n"
                )
            })
            .unwrap_or_default();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             {alerting}\
             scrape_configs:\n\
             - job_name: kubevirt-leader-exporter\n\
             \x20 honor_labels: true\n\
             \x20 {discovery}\n",
            rules.display()
        );
        Self::from_config(&config)
    }

    /// Runs with the whole `config` (YAML or JSON).
    pub fn from_config(config: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kle-prometheus-{}-{}",
            std::process::id(),
            free_addr().port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let listen = free_addr();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (Debian package `prometheus`)");
        Self {
            child,
            url: format!("http://{listen}"),
            dir,
        }
    }

    pub async fn api(
        &self,
        http: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> Option<Value> {
        let response = http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The value of an instant query with a single result.
    pub async fn value(&self, http: &reqwest::Client, query: &str) -> Option<f64> {
        let data = self.api(http, "/api/v1/query", &[("query", query)]).await?;
        let result = data["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    pub async fn alert_state(
        &self,
        http: &reqwest::Client,
        name: &str,
        namespace: &str,
    ) -> Option<String> {
        let data = self.api(http, "/api/v1/alerts", &[]).await?;
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"]["namespace"] == namespace)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }
}

pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Prometheus {
    /// [`Prometheus::from_config`] with `args` added to the command line (say
    /// `--web.enable-remote-write-receiver`); its log is kept for [`Prometheus::log`].
    pub fn from_config_with_args(config: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kle-prometheus-{}-{}",
            std::process::id(),
            free_addr().port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let listen = free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus must be installed (Debian package `prometheus`)");
        Self {
            child,
            url: format!("http://{listen}"),
            dir,
        }
    }

    /// The log of a server started by [`Prometheus::from_config_with_args`]; empty otherwise.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Every alert, pending or firing, as `/api/v1/alerts` lists it.
    pub async fn alerts(&self, http: &reqwest::Client) -> Option<Vec<Value>> {
        let data = self.api(http, "/api/v1/alerts", &[]).await?;
        data["alerts"].as_array().cloned()
    }

    /// The values `label` takes in the series that `selector` selects, sorted.
    pub async fn label_values(
        &self,
        http: &reqwest::Client,
        label: &str,
        selector: &str,
    ) -> Option<Vec<String>> {
        let data = self
            .api(
                http,
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", selector)],
            )
            .await?;
        let mut values: Vec<String> = data
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        values.sort();
        Some(values)
    }
}

/// The shipped rules, written to `dir`, with every `for:` divided by `divisor`: alert tests
/// take minutes instead of hours, with expressions, labels and annotations untouched.
pub fn shortened_rules(dir: &Path, divisor: u64) -> PathBuf {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/rules/kubevirt-leader.rules.yml"
    ))
    .expect("rules");
    let mut changed = 0;
    let text: Vec<String> = shipped
        .lines()
        .map(|line| {
            let Some((indent, value)) = line.split_once("for: ") else {
                return line.to_owned();
            };
            if !indent.trim().is_empty() {
                return line.to_owned();
            }
            let seconds = humantime::parse_duration(value.trim())
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .as_secs();
            changed += 1;
            format!("{indent}for: {}s", seconds / divisor)
        })
        .collect();
    assert!(changed >= 4, "the rule file's `for:` lines were not found");
    let path = dir.join("kubevirt-leader.rules.yml");
    std::fs::write(&path, text.join("\n")).expect("write rules");
    path
}
