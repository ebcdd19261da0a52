//! The HTTP endpoints: /metrics, /livez, /readyz and a status page for people.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{MethodRouter, any, get},
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
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
/// How long a TLS handshake may take, with the wait for its turn.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest buffer hyper accepts.
const MIN_BUF_SIZE: usize = 8192;
/// What the kernel may hold of a connection's unsent answers, for a client that does not
/// read them: left to itself it grows a socket's send buffer up to 4 MiB, which the pod's
/// memory cgroup pays for. The kernel doubles the figure asked for: 64 KiB, plenty where
/// round trips are short.
const SEND_BUFFER: u32 = 32 * 1024;
/// What rustls may hold of a connection's encrypted answers before writes wait: 64 KiB by
/// default, which a client that asks for many pages and reads none fills on every
/// connection.
const TLS_SEND_BUFFER: usize = 16 * 1024;
/// Connections the kernel holds for [`serve`] to accept, as tokio's default listener.
const BACKLOG: u32 = 1024;

/// What the clients together may cost the server, so that a flood of connections cannot
/// take the pod past its memory limit: each bound caps one way a connection holds memory.
/// A connection idle after its response is closed by [`HEADER_TIMEOUT`], as hyper waits for
/// the next request's headers with the same timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. The next ones wait in the kernel's accept queue, where
    /// they cost the exporter nothing, not even their handshake.
    pub connections: usize,
    /// TLS handshakes in flight at once, among those connections.
    pub handshakes: usize,
    /// The largest request head (request line and headers); a larger one gets 431. It also
    /// bounds hyper's buffer, about 400 KiB a connection by default.
    pub header_bytes: usize,
    /// How long a write may make no progress: a peer that stops reading holds its
    /// connection, and the response buffered for it, no longer.
    pub write_timeout: Duration,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        connections: 256,
        handshakes: 32,
        header_bytes: 16 * 1024,
        write_timeout: Duration::from_secs(10),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct AppState {
    pub targets: Arc<Targets>,
    pub metrics: Arc<Metrics>,
    /// `None`: every path is open.
    pub gate: Option<Arc<Gate>>,
}

/// The exporter's routes. Methods other than GET and HEAD get 405, unknown paths 404. With a
/// gate, everything but the probes needs credentials.
pub fn router(state: AppState) -> Router {
    // Shared, so that each request clones one Arc, not three.
    let state = Arc::new(state);
    let door = |path, guarded| Door {
        state: Arc::clone(&state),
        path,
        guarded,
    };
    Router::new()
        .route("/", door("/", true).around(get(status_page)))
        .route(
            STATUS_JSON_PATH,
            door(STATUS_JSON_PATH, true).around(get(status_json)),
        )
        .route(METRICS_PATH, door(METRICS_PATH, true).around(get(metrics)))
        // The probes answer the kubelet, which sends no credentials.
        .route(
            LIVEZ_PATH,
            door(LIVEZ_PATH, false).around(get(|| async { "ok\n" })),
        )
        .route(READYZ_PATH, door(READYZ_PATH, false).around(get(readyz)))
        .fallback(door("other", false).around(any(|| async { StatusCode::NOT_FOUND })))
        .with_state(state)
}

/// What a request goes through before its route's handler: the 405 for other methods, the
/// gate where the route is guarded, and the count by route and status code. One layer on
/// each route, as axum clones a route's layers for every request: one costs the scrape
/// path less than three. Each route says whether it is guarded where it is added.
#[derive(Clone)]
struct Door {
    state: Arc<AppState>,
    /// The route's label in the request count: its path, or `other`.
    path: &'static str,
    guarded: bool,
}

impl Door {
    fn around(self, route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
        route.layer(middleware::from_fn_with_state(self, front_door))
    }
}

async fn front_door(State(door): State<Door>, request: Request, next: Next) -> Response {
    let response = admit(&door, request, next).await;
    door.state
        .metrics
        .http_request(door.path, response.status().as_str());
    response
}

/// Answers every method but GET and HEAD with 405 before anything else looks at the
/// request, as a made-up method must not cost a review of its credentials; then asks the
/// gate, if there is one and the route is guarded.
async fn admit(door: &Door, request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "Method Not Allowed: every page is read with GET\n",
        )
            .into_response();
    }
    if let Some(gate) = door.state.gate.as_ref().filter(|_| door.guarded)
        && let Some(refusal) = auth::refusal(gate, &request).await
    {
        return refusal;
    }
    next.run(request).await
}

/// A listener on `addr` whose connections' send buffers are bounded: accepted sockets
/// inherit the listener's.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener`, over TLS when `tls` is given, within `limits`, until
/// `shutdown` completes; then stops accepting and waits for requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = Arc::new(Semaphore::new(limits.connections));
    let handshakes = Arc::new(Semaphore::new(limits.handshakes));
    tokio::pin!(shutdown);
    loop {
        let (stream, permit) = tokio::select! {
            accepted = accept(&listener, &connections) => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
            () = &mut shutdown => break,
        };
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = WriteTimeout::new(stream, limits.write_timeout);
            let Some(acceptor) = acceptor else {
                let peer = PeerCertificate(None);
                return serve_connection(stream, app, watcher, peer, limits.header_bytes).await;
            };
            let handshake = async {
                let _turn = handshakes.acquire().await;
                acceptor.accept(stream).await
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(mut tls)) => {
                    tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                    let peer = peer_certificate(&tls);
                    serve_connection(tls, app, watcher, peer, limits.header_bytes).await
                }
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The next connection, once one of the `connections` is free. The permit is taken before
/// accepting: connections beyond the limit stay in the kernel's accept queue.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = connections.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(error) => {
            // Out of file descriptors, typically: wait instead of spinning.
            tracing::warn!(%error, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Serves the requests of one connection already accepted, as [`serve`] does with each of
/// its own; for callers that bring their own transport.
pub async fn serve_stream<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Kept until the connection ends: a dropped one would end keep-alive at once.
    let graceful = GracefulShutdown::new();
    let (watcher, peer) = (graceful.watcher(), PeerCertificate(None));
    serve_connection(stream, app, watcher, peer, Limits::DEFAULT.header_bytes).await;
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

async fn serve_connection<S>(
    stream: S,
    app: Router,
    watcher: Watcher,
    peer: PeerCertificate,
    header_bytes: usize,
) where
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
        .max_header_size(header_bytes)
        .max_buf_size(header_bytes.max(MIN_BUF_SIZE))
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A stream whose writes fail once they have made no progress for `timeout`. hyper has no
/// write timeout: a peer that stops reading would hold its connection for ever.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncWrite + Unpin> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn poll_progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(done) = write(Pin::new(&mut self.inner), cx) {
            self.stalled = None;
            return Poll::Ready(done);
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer stopped reading",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_progress(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_progress(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_progress(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_progress(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

async fn status_page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(page::render(&read_status(&state.targets)))
}

async fn status_json(State(state): State<Arc<AppState>>) -> Response {
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
