//! The HTTP endpoints: /metrics, /livez, /readyz and a status page for people.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
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
    auth::{self, Gate, PeerCertificate},
    metrics::Metrics,
    page,
    status::{self, Status},
    targets::Targets,
};

pub const METRICS_PATH: &str = "/metrics";
pub const LIVEZ_PATH: &str = "/livez";
pub const READYZ_PATH: &str = "/readyz";
pub const STATUS_JSON_PATH: &str = "/status.json";

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
    /// `None`: every path is open.
    pub gate: Option<Arc<Gate>>,
}

/// The paths requests are counted by; anything else counts as `other`.
const COUNTED_PATHS: [&str; 5] = ["/", STATUS_JSON_PATH, METRICS_PATH, LIVEZ_PATH, READYZ_PATH];

/// The exporter's routes. Methods other than GET and HEAD get 405, unknown paths 404. With a
/// gate, everything but the probes needs credentials; the probes must answer the kubelet,
/// which sends none.
pub fn router(state: AppState) -> Router {
    let mut protected = Router::new()
        .route("/", get(status_page))
        .route(STATUS_JSON_PATH, get(status_json))
        .route(METRICS_PATH, get(metrics));
    if let Some(gate) = state.gate.clone() {
        protected = protected.route_layer(middleware::from_fn_with_state(gate, auth::require));
    }
    Router::new()
        .merge(protected)
        .route(LIVEZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .layer(middleware::from_fn(only_reads))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Answers every method but GET and HEAD with 405 before anything else looks at the
/// request: a made-up method must not cost a review of its credentials.
async fn only_reads(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        "Method Not Allowed: every page is read with GET\n",
    )
        .into_response()
}

async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let path = COUNTED_PATHS
        .into_iter()
        .find(|p| *p == path)
        .unwrap_or("other");
    let response = next.run(request).await;
    metrics.http_request(path, response.status().as_str());
    response
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
                return serve_connection(stream, app, watcher, PeerCertificate(None)).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let peer = peer_certificate(&tls);
                    serve_connection(tls, app, watcher, peer).await
                }
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves the requests of one connection already accepted, as [`serve`] does with each of
/// its own; for callers that bring their own transport.
pub async fn serve_stream<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Kept until the connection ends: a dropped one would end keep-alive at once.
    let graceful = GracefulShutdown::new();
    serve_connection(stream, app, graceful.watcher(), PeerCertificate(None)).await;
    drop(graceful);
}

/// The user of the client certificate the handshake verified, if the client sent one.
fn peer_certificate<S>(tls: &tokio_rustls::server::TlsStream<S>) -> PeerCertificate {
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    PeerCertificate(
        leaf.and_then(|der| auth::certificate_user(der))
            .map(Arc::new),
    )
}

async fn serve_connection<S>(stream: S, app: Router, watcher: Watcher, peer: PeerCertificate)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    // Inserting allocates the request's extension map: only for a certificate's user.
    let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        if peer.0.is_some() {
            request.extensions_mut().insert(peer.clone());
        }
        request
    });
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
    Html(page::render(&read_status(&state.targets)))
}

async fn status_json(State(state): State<AppState>) -> Response {
    match serde_json::to_vec_pretty(&read_status(&state.targets)) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn read_status(targets: &Targets) -> Status {
    let now = Instant::now();
    status::status(
        &targets.status(now),
        now,
        SystemTime::now(),
        targets.grace(),
    )
}
