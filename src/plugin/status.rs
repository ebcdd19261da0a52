//! `kubectl kubevirt-leader status`: the exporter's `/status.json`, fetched through a
//! port-forward to one of its pods (the API server checks the user's right to forward), with
//! the user's own credentials for the exporter's own authorization, printed for a terminal.

use std::{fmt::Write as _, future::Future};

use clap::ValueEnum;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes, header::AUTHORIZATION};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt, api::ListParams};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
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
    /// Default: the kubeconfig user's own (its token, token file or exec plugin's); a client
    /// certificate from the kubeconfig is presented too.
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
        "the exporter wants credentials (401): it takes bearer tokens, and client certificates \
         only when started with --client-ca-file or --client-ca-from-cluster; pass --token \
         with the token of an account bound to the ClusterRole \
         kubevirt-leader-exporter-metrics-reader, e.g. \
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
    #[error("the kubeconfig's credentials: {0}")]
    Credentials(String),
    #[error("the exporter's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no answer from the exporter within {0:?}")]
    Timeout(std::time::Duration),
}

/// What the plugin shows the exporter: the user's own credentials.
#[derive(Default)]
pub struct Credentials {
    /// A bearer token.
    pub token: Option<String>,
    /// A client certificate chain and its key, presented when the exporter asks for one
    /// (it does with `--client-ca-file` or `--client-ca-from-cluster`).
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Credentials {
    /// `token` if given, else the kubeconfig user's own: its token, token file or exec
    /// plugin's (as EKS, GKE, AKS and OIDC logins give them), and its client certificate.
    pub async fn of(config: &kube::Config, token: Option<String>) -> Result<Self, StatusError> {
        let token = match token {
            Some(token) => Some(token),
            None => kubeconfig_token(config).await?,
        };
        Ok(Self {
            token,
            identity: kubeconfig_identity(&config.auth_info)?,
        })
    }
}

/// The bearer token kube would send the API server for this kubeconfig, taken from the
/// request its own authentication layer prepares (which runs exec plugins and refreshes
/// tokens as kubectl does).
async fn kubeconfig_token(config: &kube::Config) -> Result<Option<String>, StatusError> {
    use kube::client::ConfigExt;
    use tower::{Layer, ServiceExt, service_fn};
    let credentials = |e: &dyn std::fmt::Display| StatusError::Credentials(e.to_string());
    let Some(layer) = config.auth_layer().map_err(|e| credentials(&e))? else {
        return Ok(None);
    };
    // The layer wraps a service that answers HTTP responses: this one answers with the
    // header it was handed.
    let seen = service_fn(|request: Request<Empty<Bytes>>| async move {
        let header = request.headers().get(AUTHORIZATION).cloned();
        Ok::<_, tower::BoxError>(hyper::Response::new(header))
    });
    let header = layer
        .layer(seen)
        .oneshot(Request::new(Empty::new()))
        .await
        .map_err(|e| credentials(&e))?
        .into_body();
    Ok(header.and_then(|value| {
        let value = value.to_str().ok()?;
        value.strip_prefix("Bearer ").map(str::to_owned)
    }))
}

/// The kubeconfig user's client certificate and key, from its data or its files.
fn kubeconfig_identity(
    auth: &kube::config::AuthInfo,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, StatusError> {
    use secrecy::ExposeSecret;
    let cert = pem(
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_deref(),
    )?;
    let key_data = auth.client_key_data.as_ref().map(|k| k.expose_secret());
    let key = pem(key_data, auth.client_key.as_deref())?;
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let bad = |what: &str, e: rustls_pki_types::pem::Error| {
        StatusError::Credentials(format!("the kubeconfig's client {what}: {e}"))
    };
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad("key", e))?;
    Ok(Some((certs, key)))
}

/// PEM from a kubeconfig's base64 `data`, else from the file at `path`.
fn pem(data: Option<&str>, path: Option<&str>) -> Result<Option<Vec<u8>>, StatusError> {
    use base64::Engine;
    if let Some(data) = data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| StatusError::Credentials(format!("the kubeconfig's client data: {e}")))?;
        return Ok(Some(pem));
    }
    let Some(path) = path else { return Ok(None) };
    std::fs::read(path)
        .map(Some)
        .map_err(|e| StatusError::Credentials(format!("reading {path}: {e}")))
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
    credentials: &Credentials,
) -> Result<(String, Value), StatusError> {
    let (pod, port) = exporter_pod(client, args).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &args.exporter_namespace);
    let forward = || {
        let (api, pod) = (api.clone(), pod.clone());
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
    let answer = read_status(forward, credentials).await?;
    Ok((pod, answer))
}

/// GET /status.json over a connection from `connect`: HTTPS, as the shipped installs serve,
/// showing `credentials`; plain HTTP, without them, when the exporter does not speak TLS (as
/// one with `--auth=none` and no certificate).
pub async fn read_status<C, F, S>(
    connect: C,
    credentials: &Credentials,
) -> Result<Value, StatusError>
where
    C: Fn() -> F,
    F: Future<Output = Result<S, StatusError>>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: String| StatusError::Http(e);
    let identity = credentials
        .identity
        .as_ref()
        .map(|(certs, key)| (certs.clone(), key.clone_key()));
    let tls = crate::tls::unverified_client_config(identity).map_err(|e| http(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = ServerName::try_from("localhost").map_err(|e| http(e.to_string()))?;
    match connector.connect(name, connect().await?).await {
        Ok(tls) => get(tls, credentials.token.as_deref()).await,
        Err(error) if tls_alert(&error).is_some() => Err(refused(&error)),
        Err(_) => get(connect().await?, None).await,
    }
}

/// The alert a TLS server sent, if `error` or one of its causes is one: the server spoke TLS
/// and said no (to a client certificate, say).
fn tls_alert(error: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(rustls::Error::AlertReceived(alert)) = cause.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        // An io::Error's source() skips the error it wraps: go inside it instead.
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

fn refused(error: &(dyn std::error::Error + 'static)) -> StatusError {
    StatusError::Http(format!(
        "the exporter refused the TLS handshake ({}): a client certificate it does not trust?",
        tls_alert(error).map_or_else(|| error.to_string(), |a| format!("{a:?}"))
    ))
}

/// GET /status.json over `stream`.
async fn get<S>(stream: S, token: Option<&str>) -> Result<Value, StatusError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| StatusError::Http(crate::error_chain(&e));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get(STATUS_JSON_PATH).header(hyper::header::HOST, "localhost");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| StatusError::Http(e.to_string()))?;
    let response = tokio::time::timeout(super::STATUS_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StatusError::Timeout(super::STATUS_TIMEOUT))?;
    let response = match response {
        Ok(response) => response,
        // The request only knows it was cancelled; the connection knows why. With TLS 1.3 a
        // refused client certificate shows here, after the handshake seemed to succeed.
        Err(error) if tls_alert(&error).is_some() => return Err(refused(&error)),
        Err(error) => {
            return Err(match connection.await {
                Ok(Err(cause)) if tls_alert(&cause).is_some() => refused(&cause),
                Ok(Err(cause)) => http(cause),
                _ => http(error),
            });
        }
    };
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

    /// A kube configuration whose user is `user` (YAML, indented for its place).
    async fn config_with_user(user: &str) -> kube::Config {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             users:\n- name: u\n  user:\n{user}"
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config")
    }

    #[tokio::test]
    async fn the_users_own_token_goes_along_even_from_an_exec_plugin() {
        let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-the-plugin"}}"#;
        let exec = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
             interactiveMode: Never\n      command: echo\n      args: ['{credential}']\n"
        );
        let config = config_with_user(&exec).await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        assert_eq!(credentials.token.as_deref(), Some("from-the-plugin"));
        assert!(credentials.identity.is_none());

        let config = config_with_user("    token: own-token\n").await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        assert_eq!(credentials.token.as_deref(), Some("own-token"));
        let given = Credentials::of(&config, Some("given".into())).await;
        assert_eq!(given.expect("credentials").token.as_deref(), Some("given"));
    }

    #[tokio::test]
    async fn a_client_certificate_in_the_kubeconfig_is_presented() {
        use base64::Engine;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["someone".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let b64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert.pem()),
            b64(key.serialize_pem())
        );
        let config = config_with_user(&user).await;
        let credentials = Credentials::of(&config, None).await.expect("credentials");
        let (certs, _) = credentials.identity.expect("identity");
        assert_eq!(certs, vec![cert.der().clone()]);
        assert!(credentials.token.is_none());
    }

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
