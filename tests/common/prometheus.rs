//! A real Prometheus server on loopback, and its HTTP API.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{free_addr, unix_now};

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
        let rules = super::repo().join("deploy/rules/kubevirt-leader.rules.yml");
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
        api_at(http, &self.url, path, query).await.ok()
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

pub async fn eventually<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_within(Duration::from_secs(60), what, probe).await
}

/// [`eventually`], waiting at most `patience`. The probe runs at least once, so a budget
/// already spent still passes when what it waits for has happened.
pub async fn eventually_within<T>(
    patience: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < patience,
            "timed out waiting for {what} ({patience:?})"
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
    let shipped =
        std::fs::read_to_string(super::repo().join("deploy/rules/kubevirt-leader.rules.yml"))
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

/// A call to the HTTP API of the Prometheus at `url`: its `data`, or why there is none.
async fn api_at(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Value, String> {
    let response = http
        .get(format!("{url}{path}"))
        .query(query)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(body.to_string())
    }
}

impl Prometheus {
    /// Waits until the server answers `/-/ready`: it has loaded its configuration and
    /// storage and runs its scrapes and rules. How long that takes on a loaded machine is
    /// no part of what a test claims, so the patience is generous; what follows can then
    /// be timed from the configured intervals.
    pub async fn until_ready(&self, http: &reqwest::Client) {
        let start = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "Prometheus at {} never became ready:\n{}",
                self.url,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts asking, about once a second until [`AlertWatch::finish`], for every `ALERTS`
    /// series (pending or firing) that `selector` picks at any moment since now. Each
    /// question covers the whole span since the start, so an alert that came and went
    /// between two questions is still found.
    pub fn watch_alerts(&self, http: &reqwest::Client, selector: &str) -> AlertWatch {
        let (http, url) = (http.clone(), self.url.clone());
        let selector = selector.to_owned();
        let since = unix_now();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut polls = AlertPolls::default();
            loop {
                // The last question is asked after the stop, so that the watch covers
                // everything up to it.
                let last = *stopped.borrow_and_update();
                let at = unix_now();
                let window_ms = (((at - since) * 1000.0).ceil() as u64).max(1);
                let query = format!("max_over_time(ALERTS{{{selector}}}[{window_ms}ms])");
                let time = format!("{at:.3}");
                let asked = api_at(
                    &http,
                    &url,
                    "/api/v1/query",
                    &[("query", &query), ("time", &time)],
                )
                .await;
                match asked.map(|data| data["result"].clone()) {
                    Ok(Value::Array(found)) => {
                        polls.answered += 1;
                        // Each answer covers the whole span: keep a series' first sighting.
                        for series in found {
                            if !polls
                                .seen
                                .iter()
                                .any(|(_, s)| s["metric"] == series["metric"])
                            {
                                polls.seen.push((at - since, series));
                            }
                        }
                    }
                    Ok(other) => polls.unanswered.push(format!("not a vector: {other}")),
                    Err(e) => polls.unanswered.push(e),
                }
                if last {
                    return polls;
                }
                let next = tokio::time::timeout(Duration::from_secs(1), stopped.changed()).await;
                if let Ok(Err(_)) = next {
                    // The watch was dropped: nobody will read the answers.
                    return polls;
                }
            }
        });
        AlertWatch { stop, task }
    }
}

/// Questions about `ALERTS` asked in the background: see [`Prometheus::watch_alerts`].
pub struct AlertWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<AlertPolls>,
}

impl AlertWatch {
    /// Asks once more, covering everything up to now, and stops.
    pub async fn finish(self) -> AlertPolls {
        let _ = self.stop.send(true);
        self.task.await.expect("the ALERTS watch")
    }
}

/// What an [`AlertWatch`] found.
#[derive(Debug, Default)]
pub struct AlertPolls {
    /// Questions Prometheus answered.
    pub answered: usize,
    /// Questions it did not answer, and why.
    pub unanswered: Vec<String>,
    /// Every series an answer held, with how many seconds into the watch it was first
    /// found.
    pub seen: Vec<(f64, Value)>,
}
