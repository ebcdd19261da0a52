//! `kubectl kubevirt-leader status`: the exporter's `/status.json`, fetched through a
//! port-forward to one of its pods (the API server checks the user's right to forward), with
//! the user's own bearer token for the exporter's own authorization, printed for a terminal.

use std::fmt::Write as _;

use clap::ValueEnum;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::STATUS_JSON_PATH;

#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// Namespace the exporter runs in.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_STATUS_EXPORTER_NAMESPACE",
        default_value = "kubevirt-leader-exporter"
    )]
    pub exporter_namespace: String,

    /// Label selector of the exporter's pods.
    #[arg(
        long,
        env = "KUBEVIRT_LEADER_STATUS_EXPORTER_SELECTOR",
        default_value = "app.kubernetes.io/name=kubevirt-leader-exporter"
    )]
    pub exporter_selector: String,

    /// Bearer token to show the exporter, for an account bound to
    /// kubevirt-leader-exporter-metrics-reader (`$(kubectl create token <sa> -n <ns>)`).
    /// Default: the kubeconfig's own token, if it has one.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// `text` for people, `json` for the exporter's /status.json as it is.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Events to show per component and namespace, newest first.
    #[arg(long, env = "KUBEVIRT_LEADER_STATUS_EVENTS", default_value_t = 5)]
    pub events: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no running exporter pod in namespace {namespace} with labels {selector}")]
    NoExporter { namespace: String, selector: String },
    #[error("listing the exporter's pods: {0}")]
    List(#[source] kube::Error),
    #[error("port-forward to {pod}: {error}")]
    PortForward {
        pod: String,
        #[source]
        error: kube::Error,
    },
    #[error("talking to the exporter through the port-forward: {0}")]
    Http(String),
    #[error(
        "the exporter wants credentials (401): pass --token with the token of an account bound \
         to the ClusterRole kubevirt-leader-exporter-metrics-reader, e.g. \
         --token \"$(kubectl create token <serviceaccount> -n <namespace>)\""
    )]
    Unauthorized,
    #[error(
        "the exporter refused this user (403): bind it to the ClusterRole \
         kubevirt-leader-exporter-metrics-reader"
    )]
    Forbidden,
    #[error("the exporter answered {code}: {body}")]
    Answer { code: StatusCode, body: String },
    #[error("the exporter's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no answer from the exporter within {0:?}")]
    Timeout(std::time::Duration),
}

/// The token from the kubeconfig's user, if it authenticates with one (a file's or its own;
/// credentials from exec plugins are not seen here: use --token).
pub fn kubeconfig_token(config: &kube::Config) -> Option<String> {
    use secrecy::ExposeSecret;
    let auth = &config.auth_info;
    if let Some(token) = &auth.token {
        return Some(token.expose_secret().to_owned());
    }
    let file = auth.token_file.as_ref()?;
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// One Ready exporter pod and the port its `metrics` container port has.
async fn exporter_pod(client: &Client, args: &StatusArgs) -> Result<(String, u16), StatusError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &args.exporter_namespace);
    let pods = api
        .list(&ListParams::default().labels(&args.exporter_selector))
        .await
        .map_err(StatusError::List)?;
    let ready = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pod = pods
        .items
        .iter()
        .find(|p| ready(p))
        .ok_or_else(|| StatusError::NoExporter {
            namespace: args.exporter_namespace.clone(),
            selector: args.exporter_selector.clone(),
        })?;
    let port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(8080);
    Ok((pod.name_any(), port))
}

/// The exporter's `/status.json`, and the pod it came from.
pub async fn fetch(
    client: &Client,
    args: &StatusArgs,
    token: Option<&str>,
) -> Result<(String, Value), StatusError> {
    let (pod, port) = exporter_pod(client, args).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &args.exporter_namespace);
    let forward = |pod: String| {
        let api = api.clone();
        async move {
            let mut forwarder =
                api.portforward(&pod, &[port])
                    .await
                    .map_err(|error| StatusError::PortForward {
                        pod: pod.clone(),
                        error,
                    })?;
            forwarder
                .take_stream(port)
                .ok_or_else(|| StatusError::Http("the port-forward gave no stream".into()))
        }
    };
    // The shipped installs serve HTTPS; one with --auth=none may serve plain HTTP.
    let tls =
        crate::tls::unverified_client_config().map_err(|e| StatusError::Http(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls_pki_types::ServerName::try_from("localhost")
        .map_err(|e| StatusError::Http(e.to_string()))?;
    let answer = match connector.connect(name, forward(pod.clone()).await?).await {
        Ok(tls) => get(tls, token).await?,
        Err(_) => get(forward(pod.clone()).await?, None).await?,
    };
    Ok((pod, answer))
}

/// GET /status.json over `stream`.
async fn get<S>(stream: S, token: Option<&str>) -> Result<Value, StatusError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| StatusError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let mut request = Request::get(STATUS_JSON_PATH).header(hyper::header::HOST, "localhost");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| StatusError::Http(e.to_string()))?;
    let response = tokio::time::timeout(super::STATUS_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StatusError::Timeout(super::STATUS_TIMEOUT))?
        .map_err(http)?;
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    match code {
        StatusCode::OK => Ok(serde_json::from_slice(&body)?),
        StatusCode::UNAUTHORIZED => Err(StatusError::Unauthorized),
        StatusCode::FORBIDDEN => Err(StatusError::Forbidden),
        code => Err(StatusError::Answer {
            code,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        }),
    }
}

/// 0 when every namespace of every component has a leader, 1 when one has none, 2 when the
/// exporter cannot tell for one (blind, checking, not ready) or found none at all.
pub fn exit_code(status: &Value) -> u8 {
    let states: Vec<&str> = namespaces(status)
        .filter_map(|(_, ns)| ns["state"].as_str())
        .collect();
    if states.contains(&"no_leader") {
        1
    } else if states.is_empty() || status["ready"] != true || states.iter().any(|s| *s != "leader")
    {
        2
    } else {
        0
    }
}

/// Each (component, namespace) entry.
fn namespaces(status: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |n| (c, n))
        })
}

/// A table for a terminal, then the latest events of each lease.
pub fn render(pod: &str, status: &Value, events: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "exporter {pod} (version {}), {}, at {}",
        text(&status["exporter_version"]),
        if status["ready"] == true {
            "ready"
        } else {
            "NOT READY: still listing"
        },
        text(&status["generated_at"]),
    );
    let mut rows = vec![
        [
            "COMPONENT",
            "NAMESPACE",
            "STATE",
            "HOLDER",
            "HOLDER POD",
            "LEASE AGE",
            "STANDBYS",
        ]
        .map(str::to_owned),
    ];
    for (component, ns) in namespaces(status) {
        rows.push(row(component, ns));
    }
    for component in status["components"].as_array().into_iter().flatten() {
        if component["found_in"] == 0 {
            let name = text(&component["component"]);
            rows.push([
                name,
                "(none found)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    out.push_str(&table(&rows));
    for component in status["components"].as_array().into_iter().flatten() {
        if component["pods_watch_healthy"] == false || component["leases_watch_healthy"] == false {
            let _ = writeln!(
                out,
                "BLIND: the exporter cannot watch {} of {} ({}): what it shows is the story so far",
                if component["pods_watch_healthy"] == false {
                    "pods"
                } else {
                    "leases"
                },
                text(&component["component"]),
                text(&component["scope"]),
            );
        }
    }
    for (component, ns) in namespaces(status) {
        recent_events(&mut out, component, ns, events);
    }
    out
}

fn row(component: &Value, ns: &Value) -> [String; 7] {
    let state = match ns["state"].as_str() {
        Some("leader") => "leader".to_owned(),
        Some("no_leader") => "NO LEADER".to_owned(),
        Some(other) => other.to_owned(),
        None => "?".to_owned(),
    };
    let holder_pod = match ns["holder_ready"].as_bool() {
        Some(true) => "Ready",
        Some(false) => "NOT Ready",
        None if ns["holder"].is_null() => "-",
        None => "no such pod",
    };
    let age = match (
        ns["lease"]["age_seconds"].as_f64(),
        ns["lease"]["limit_seconds"].as_f64(),
    ) {
        (Some(age), Some(limit)) => format!("{age:.1}s of {limit:.0}s"),
        (Some(age), None) => format!("{age:.1}s"),
        _ => "-".to_owned(),
    };
    let standbys = match ns["standbys"].as_u64() {
        Some(0) => "none".to_owned(),
        Some(n) => n.to_string(),
        None => "-".to_owned(),
    };
    [
        text(&component["component"]),
        text(&ns["namespace"]),
        state,
        text(&ns["holder"]),
        holder_pod.to_owned(),
        age,
        standbys,
    ]
}

fn recent_events(out: &mut String, component: &Value, ns: &Value, events: usize) {
    let all = ns["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if all.is_empty() || events == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\n{} in {}, latest events:",
        text(&component["component"]),
        text(&ns["namespace"])
    );
    for event in all.iter().rev().take(events) {
        let mut line = format!("  {}  {}", text(&event["at"]), text(&event["kind"]));
        if !event["holder"].is_null() {
            let _ = write!(line, " {}", text(&event["holder"]));
        }
        if !event["previous"].is_null() {
            let _ = write!(line, " (was {})", text(&event["previous"]));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// A JSON value as plain text; `-` for null.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[[String; 7]]) -> String {
    let mut widths = [0; 7];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, ready: bool) -> Value {
        serde_json::json!({
            "schema": 1, "exporter_version": "0.1.0", "generated_at": "2026-11-30T07:00:00Z",
            "ready": ready,
            "components": [{
                "component": "virt-operator", "scope": "all namespaces",
                "pods_watch_healthy": true, "leases_watch_healthy": true, "found_in": 1,
                "namespaces": [{
                    "namespace": "kubevirt", "state": state, "holder": "virt-operator-a",
                    "holder_ready": true, "standbys": 1,
                    "lease": {"age_seconds": 1.5, "limit_seconds": 25.0},
                    "events": [
                        {"at": "2026-11-30T06:00:00Z", "kind": "seen", "holder": "virt-operator-b"},
                        {"at": "2026-11-30T06:30:00Z", "kind": "changed", "holder": "virt-operator-a",
                         "previous": "virt-operator-b"}
                    ]
                }]
            }, {
                "component": "virt-controller", "scope": "all namespaces",
                "pods_watch_healthy": true, "leases_watch_healthy": false, "found_in": 0,
                "namespaces": []
            }]
        })
    }

    #[test]
    fn the_table_names_each_leader_and_what_happened() {
        let text = render("kle-abc", &status("leader", true), 1);
        assert!(
            text.contains("exporter kle-abc (version 0.1.0), ready"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("virt-operator "))
            .expect("a row");
        for cell in [
            "kubevirt",
            "leader",
            "virt-operator-a",
            "Ready",
            "1.5s of 25s",
            "1",
        ] {
            assert!(line.contains(cell), "{cell} missing from {line:?}");
        }
        assert!(text.contains("virt-controller  (none found)"), "{text}");
        assert!(text.contains("BLIND: the exporter cannot watch leases of virt-controller"));
        assert!(
            text.contains("changed virt-operator-a (was virt-operator-b)"),
            "{text}"
        );
        assert!(
            !text.contains("seen virt-operator-b"),
            "only the newest event: {text}"
        );
    }

    #[test]
    fn the_exit_status_says_leader_none_or_cannot_tell() {
        assert_eq!(exit_code(&status("leader", true)), 0);
        assert_eq!(exit_code(&status("no_leader", true)), 1);
        assert_eq!(exit_code(&status("blind", true)), 2);
        assert_eq!(exit_code(&status("leader", false)), 2);
        assert_eq!(
            exit_code(&serde_json::json!({"ready": true, "components": []})),
            2
        );
        let odd = serde_json::json!({"components": "nope"});
        assert_eq!(exit_code(&odd), 2);
        assert!(!render("p", &odd, 3).is_empty());
    }
}
