//! The HTTP endpoints: /metrics, /livez, /readyz and a status page for people.

use std::{
    fmt::Write,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    metrics::Metrics,
    targets::{Snapshot, Targets},
};

pub const METRICS_PATH: &str = "/metrics";
pub const LIVEZ_PATH: &str = "/livez";
pub const READYZ_PATH: &str = "/readyz";

/// How long a client may take to send a request's headers, so that slow or idle clients
/// cannot hold connections forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub targets: Arc<Targets>,
    pub metrics: Arc<Metrics>,
}

/// The exporter's routes. Methods other than GET and HEAD get 405, unknown paths 404.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route(METRICS_PATH, get(metrics))
        .route(LIVEZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .with_state(state)
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown` completes;
/// then stops accepting and waits for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, app, watcher).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, app, watcher).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve_connection<S>(stream: S, app: Router, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.targets.snapshot(Instant::now()).listed() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first list of pods and leases\n",
        )
            .into_response()
    }
}

async fn status_page(State(state): State<AppState>) -> Html<String> {
    Html(render_status(&state.targets.snapshot(Instant::now())))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A table per namespace and component: holder and its pod's readiness, whether the leader
/// is present and why, lease age and ready pods.
fn render_status(snapshot: &Snapshot) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kubevirt-leader-exporter</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style></head><body>\
         <h1>kubevirt-leader-exporter</h1><p><a href=\"/metrics\">/metrics</a></p>\
         <table><tr><th>namespace</th><th>component</th><th>holder</th><th>holder pod Ready</th><th>leader present</th>\
         <th>why</th><th>lease age</th><th>ready pods</th></tr>",
    );
    for target in &snapshot.targets {
        let component = escape(&target.component);
        let Some(verdicts) = &target.verdicts else {
            let scope = escape(&target.scope);
            let _ = write!(
                page,
                "<tr><td>{scope}</td><td>{component}</td><td colspan=\"6\">unknown: the watches have not synced or are failing</td></tr>"
            );
            continue;
        };
        for (ns, v) in verdicts {
            let age = v.lease.as_ref().map_or_else(
                || "-".to_owned(),
                |l| format!("{:.1}s", l.age.as_secs_f64()),
            );
            let present = match (v.is_known(), v.present) {
                (false, _) => "checking",
                (true, true) => "yes",
                (true, false) => "no",
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{component}</td><td>{}</td><td>{}</td><td>{present}</td><td>{}</td><td>{age}</td><td>{}/{}</td></tr>",
                escape(ns),
                escape(v.holder.as_deref().unwrap_or("-")),
                match v.holder_ready {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "no such pod",
                },
                escape(&v.reason.to_string()),
                v.pods_ready,
                v.pods,
            );
        }
    }
    page.push_str("</table>");
    let nowhere: Vec<&str> = snapshot
        .namespaces_found()
        .into_iter()
        .filter(|(_, found)| *found == Some(0))
        .map(|(component, _)| component)
        .collect();
    if !nowhere.is_empty() {
        let _ = write!(
            page,
            "<p><b>Found in no namespace:</b> {}. Check --namespace, the component's pod \
             selector and Lease name, and the exporter's RBAC, or install KubeVirt.</p>",
            escape(&nowhere.join(", "))
        );
    }
    page.push_str("</body></html>\n");
    page
}
