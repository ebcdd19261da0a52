//! The simulated API server's HTTP side: list, get and watch of pods and leases, speaking
//! the protocol as kube-rs and client-go use it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use futures::stream;
use serde::Deserialize;
use tokio::sync::{broadcast::error::RecvError, mpsc, watch};

use super::{
    faults::{Faults, ListPage},
    selector::{Filter, parse_fields, parse_labels},
    store::{Change, Kind, Store},
};

#[derive(Clone)]
struct Shared {
    store: Store,
    faults: Arc<Faults>,
    bookmark_interval: Duration,
    /// Turns true when the server stops, to end open watch streams.
    stopping: watch::Receiver<bool>,
}

/// Builds the router for `store`, misbehaving as `faults` say. Watch streams end when
/// `stopping` turns true.
pub fn router(
    store: Store,
    faults: Arc<Faults>,
    bookmark_interval: Duration,
    stopping: watch::Receiver<bool>,
) -> Router {
    let core = "/api/v1";
    let coord = "/apis/coordination.k8s.io/v1";
    Router::new()
        .route(
            &format!("{core}/pods"),
            get(|s, q| collection(s, Kind::Pod, None, q)),
        )
        .route(
            &format!("{core}/namespaces/{{ns}}/pods"),
            get(|s, Path(ns): Path<String>, q| collection(s, Kind::Pod, Some(ns), q)),
        )
        .route(
            &format!("{core}/namespaces/{{ns}}/pods/{{name}}"),
            get(|s, Path(p): Path<(String, String)>| single(s, Kind::Pod, p)),
        )
        .route(
            &format!("{core}/namespaces/{{ns}}/pods/{{name}}/log"),
            get(|s, Path(p): Path<(String, String)>, q| log(s, p, q)),
        )
        .route(
            &format!("{coord}/leases"),
            get(|s, q| collection(s, Kind::Lease, None, q)),
        )
        .route(
            &format!("{coord}/namespaces/{{ns}}/leases"),
            get(|s, Path(ns): Path<String>, q| collection(s, Kind::Lease, Some(ns), q)),
        )
        .route(
            &format!("{coord}/namespaces/{{ns}}/leases/{{name}}"),
            get(|s, Path(p): Path<(String, String)>| single(s, Kind::Lease, p)),
        )
        .layer(middleware::from_fn_with_state(
            faults.clone(),
            super::faults::middleware,
        ))
        .with_state(Shared {
            store,
            faults,
            bookmark_interval,
            stopping,
        })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    label_selector: Option<String>,
    field_selector: Option<String>,
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<u64>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

fn is_true(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

async fn collection(
    State(shared): State<Shared>,
    kind: Kind,
    namespace: Option<String>,
    Query(params): Query<Params>,
) -> Response {
    let filter = match filter(namespace, &params) {
        Ok(f) => f,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    if is_true(&params.watch) {
        watch(shared, kind, filter, &params)
    } else {
        list(&shared, kind, &filter, &params)
    }
}

fn filter(namespace: Option<String>, params: &Params) -> Result<Filter, String> {
    Ok(Filter {
        namespace,
        labels: parse_labels(params.label_selector.as_deref().unwrap_or(""))?,
        fields: parse_fields(params.field_selector.as_deref().unwrap_or(""))?,
    })
}

fn json(code: StatusCode, body: String) -> Response {
    let mut response = (code, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    json(code, status_json(code.as_u16(), reason, message))
}

pub(super) fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
    .to_string()
}

/// A list, in pages of `limit` when asked. The continue token is the namespace/name of the
/// last object sent; pages are not one snapshot, which clients tolerate.
fn list(shared: &Shared, kind: Kind, filter: &Filter, params: &Params) -> Response {
    let after = params
        .continue_token
        .as_deref()
        .and_then(|t| t.split_once('/'));
    let (rv, mut items) = shared.store.list(kind, |o| {
        filter.matches(o) && after.is_none_or(|a| (o.namespace.as_str(), o.name.as_str()) > a)
    });
    let mut next = String::new();
    if let Some(limit) = params.limit.filter(|l| *l > 0 && *l < items.len()) {
        items.truncate(limit);
        if let Some(last) = items.last() {
            next = format!("{}/{}", last.namespace, last.name);
        }
    }
    shared.faults.count_sent(items.len());
    shared.faults.record_page(ListPage {
        kind: kind.name(),
        labels: params.label_selector.clone(),
        limit: params.limit,
        items: items.len(),
        continued: after.is_some(),
    });
    let mut body = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}","continue":{}}},"items":["#,
        kind.name(),
        kind.api_version(),
        serde_json::Value::from(next)
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item.json);
    }
    body.push_str("]}");
    json(StatusCode::OK, body)
}

async fn single(
    State(shared): State<Shared>,
    kind: Kind,
    (namespace, name): (String, String),
) -> Response {
    match shared.store.get_stored(kind, &namespace, &name) {
        Some(o) => {
            shared.faults.count_sent(1);
            json(StatusCode::OK, o.json.to_string())
        }
        None => {
            let what = format!("{}s {name:?} not found", kind.name().to_lowercase());
            status(StatusCode::NOT_FOUND, "NotFound", &what)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParams {
    tail_lines: Option<usize>,
}

/// A pod's log, its last `tailLines` lines when asked; 400 without one, as the real API
/// server answers for a pod that never ran on a node.
async fn log(
    State(shared): State<Shared>,
    (namespace, name): (String, String),
    Query(params): Query<LogParams>,
) -> Response {
    let Some(log) = shared.store.log(&namespace, &name) else {
        let what = format!("pod {name:?} has no log");
        return status(StatusCode::BAD_REQUEST, "BadRequest", &what);
    };
    let lines: Vec<&str> = log.lines().collect();
    let keep = params.tail_lines.unwrap_or(lines.len()).min(lines.len());
    let mut body = lines[lines.len() - keep..].join("\n");
    body.push('\n');
    (StatusCode::OK, body).into_response()
}

fn event_line(event_type: &str, object: &str) -> String {
    format!("{{\"type\":\"{event_type}\",\"object\":{object}}}\n")
}

/// What a watch with `filter` sends for `change`, if anything.
fn translate(change: &Change, kind: Kind, filter: &Filter) -> Option<String> {
    let object = &change.object;
    if object.kind != kind {
        return None;
    }
    let now = filter.matches(object);
    let before = change
        .old_labels
        .as_ref()
        .map(|l| filter.matches_labels(object, l));
    let event_type = match (change.event_type, before, now) {
        ("DELETED", _, true) => "DELETED",
        ("MODIFIED", Some(true), true) => "MODIFIED",
        ("MODIFIED", Some(true), false) => "DELETED",
        (_, Some(false) | None, true) => "ADDED",
        _ => return None,
    };
    Some(event_line(event_type, &object.json))
}

fn bookmark(kind: Kind, rv: u64) -> String {
    let object = format!(
        r#"{{"kind":"{}","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}"}}}}"#,
        kind.name(),
        kind.api_version()
    );
    event_line("BOOKMARK", &object)
}

fn watch(shared: Shared, kind: Kind, filter: Filter, params: &Params) -> Response {
    let from = match params.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid resourceVersion",
                );
            }
        },
    };
    let (tx, rx) = mpsc::channel::<String>(64);
    let injected_gone = from.is_some() && shared.faults.take_gone_resume();
    match shared.store.watch_from(kind, from).and_then(|start| {
        if injected_gone {
            Err(start.rv)
        } else {
            Ok(start)
        }
    }) {
        Err(oldest) => {
            let message = format!("too old resource version: {} ({oldest})", from.unwrap_or(0));
            let line = event_line("ERROR", &status_json(410, "Expired", &message));
            let _ = tx.try_send(line);
        }
        Ok(start) => {
            let stream = WatchStream {
                kind,
                filter,
                bookmarks: is_true(&params.allow_watch_bookmarks)
                    .then_some(shared.bookmark_interval),
                timeout: Duration::from_secs(params.timeout_seconds.unwrap_or(1800)),
                tx,
                stopping: shared.stopping.clone(),
                closer: shared.faults.watch_closer(),
                faults: shared.faults.clone(),
                store: shared.store.clone(),
            };
            tokio::spawn(stream.run(start));
        }
    }
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct WatchStream {
    kind: Kind,
    filter: Filter,
    bookmarks: Option<Duration>,
    timeout: Duration,
    tx: mpsc::Sender<String>,
    stopping: watch::Receiver<bool>,
    closer: watch::Receiver<u64>,
    faults: Arc<Faults>,
    store: Store,
}

impl WatchStream {
    async fn run(self, start: super::store::WatchStart) {
        let mut rv = start.rv;
        let mut stopping = self.stopping.clone();
        let mut closer = self.closer.clone();
        if *stopping.borrow_and_update() {
            return;
        }
        let mut receiver = start.receiver;
        for change in &start.backlog {
            if !self.send(change).await {
                return;
            }
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.bookmarks.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        // Once hung, a stream stays open and silent for good, as a stuck connection does.
        let mut silent = false;
        loop {
            silent = silent || self.store.watches_hung(self.kind);
            tokio::select! {
                // Asked again on arrival: an event that arrives after the switch stays unsent.
                received = receiver.recv() => match received {
                    Ok(_) if silent || self.store.watches_hung(self.kind) => silent = true,
                    Ok(change) if change.rv <= rv => {}
                    Ok(change) => {
                        rv = change.rv;
                        if !self.send(&change).await {
                            return;
                        }
                    }
                    // A client too slow to keep up is cut off, as the real server does;
                    // it resumes from its last version.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks.is_some() && !silent => {
                    if self.tx.send(bookmark(self.kind, rv)).await.is_err() {
                        return;
                    }
                }
                () = &mut deadline => return,
                () = self.tx.closed() => return,
                _ = stopping.changed() => return,
                _ = closer.changed() => return,
            }
        }
    }

    async fn send(&self, change: &Change) -> bool {
        match translate(change, self.kind, &self.filter) {
            Some(line) => {
                self.faults.count_sent(1);
                self.tx.send(line).await.is_ok()
            }
            None => true,
        }
    }
}

/// A running simulated API server on loopback.
pub struct SimServer {
    pub addr: SocketAddr,
    pub store: Store,
    pub faults: Arc<Faults>,
    stopping: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Serves `store` on a free loopback port.
    pub async fn start(store: Store) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), store).await
    }

    /// Serves `store` on `addr`.
    pub async fn start_on(addr: SocketAddr, store: Store) -> std::io::Result<Self> {
        Self::serve(addr, store, Arc::default()).await
    }

    async fn serve(addr: SocketAddr, store: Store, faults: Arc<Faults>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stopping, mut stopped) = watch::channel(false);
        let app = router(
            store.clone(),
            faults.clone(),
            Duration::from_secs(5),
            stopped.clone(),
        );
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "simulated API server stopped");
            }
        });
        Ok(Self {
            addr,
            store,
            faults,
            stopping,
            task,
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that points a kube client at this server.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kubeconfig_for(&self.url())
    }

    /// Stops serving: open watch streams end and connections close. Until a new server
    /// listens on the address, connections are refused.
    pub async fn stop(self) -> (SocketAddr, Store, Arc<Faults>) {
        let _ = self.stopping.send(true);
        let _ = self.task.await;
        (self.addr, self.store, self.faults)
    }

    /// Stops and starts again on the same address with the same store and switches, as an
    /// API server restart does.
    pub async fn restart(self, down_for: Duration) -> std::io::Result<Self> {
        let (addr, store, faults) = self.stop().await;
        tokio::time::sleep(down_for).await;
        Self::serve(addr, store, faults).await
    }
}

/// A kubeconfig with one cluster, user and context for `url`.
pub fn kubeconfig_for(url: &str) -> kube::config::Kubeconfig {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: sim\n\
         clusters: [{{name: sim, cluster: {{server: '{url}'}}}}]\n\
         users: [{{name: sim, user: {{}}}}]\n\
         contexts: [{{name: sim, context: {{cluster: sim, user: sim}}}}]\n"
    );
    kube::config::Kubeconfig::from_yaml(&yaml).unwrap_or_default()
}
