//! Switches that make the simulated API server misbehave the way real ones do, and counters
//! of what it served, for tests and benchmarks.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::watch;

/// One page of a list as the server saw it: what the client asked for and what it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// `Pod` or `Lease`.
    pub kind: &'static str,
    /// The label selector the client sent.
    pub labels: Option<String>,
    /// The `limit` the client sent.
    pub limit: Option<usize>,
    pub items: usize,
    /// Whether it continued an earlier page.
    pub continued: bool,
}

#[derive(Default)]
struct Switches {
    /// Status and Retry-After for the next `count` requests.
    failing: Option<(u32, StatusCode, Option<u64>)>,
    /// Watches resuming from a resource version get 410 Gone, this many more times.
    gone_resumes: u32,
    delay: Duration,
}

/// Shared by the server's handlers; survives restarts of the listener.
pub struct Faults {
    switches: Mutex<Switches>,
    requests: AtomicU64,
    /// Per path, without the query.
    requests_by_path: Mutex<BTreeMap<String, u64>>,
    objects_sent: AtomicU64,
    list_pages: Mutex<Vec<ListPage>>,
    /// Bumped to end every open watch stream.
    close_watches: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            switches: Mutex::default(),
            requests: AtomicU64::new(0),
            requests_by_path: Mutex::default(),
            objects_sent: AtomicU64::new(0),
            list_pages: Mutex::default(),
            close_watches: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Switches> {
        self.switches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the next `count` requests with 500 Internal Server Error.
    pub fn fail_next(&self, count: u32) {
        self.lock().failing = Some((count, StatusCode::INTERNAL_SERVER_ERROR, None));
    }

    /// Answers the next `count` requests with 429 Too Many Requests and `Retry-After`.
    pub fn throttle_next(&self, count: u32, retry_after_secs: u64) {
        self.lock().failing = Some((count, StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs)));
    }

    /// The next `count` watches that resume from a resource version get 410 Gone.
    pub fn gone_on_resume(&self, count: u32) {
        self.lock().gone_resumes = count;
    }

    /// Turns every switch off.
    pub fn heal(&self) {
        *self.lock() = Switches::default();
    }

    /// Delays every response by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Ends every open watch stream, as a load balancer dropping connections does.
    pub fn close_watches(&self) {
        self.close_watches.send_modify(|n| *n += 1);
    }

    pub fn watch_closer(&self) -> watch::Receiver<u64> {
        self.close_watches.subscribe()
    }

    /// Requests served since start, faults included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests served since start whose path starts with `prefix`, faults included: the
    /// requests of the watches of one namespace, say.
    pub fn requests_under(&self, prefix: &str) -> u64 {
        self.requests_by_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, count)| count)
            .sum()
    }

    /// Objects sent to clients in lists, watch events and reads.
    pub fn objects_sent(&self) -> u64 {
        self.objects_sent.load(Ordering::Relaxed)
    }

    /// Every list page served since start, in order.
    pub fn list_pages(&self) -> Vec<ListPage> {
        self.list_pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn record_page(&self, page: ListPage) {
        self.list_pages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(page);
    }

    pub(crate) fn count_sent(&self, objects: usize) {
        self.objects_sent
            .fetch_add(objects as u64, Ordering::Relaxed);
    }

    pub(crate) fn take_gone_resume(&self) -> bool {
        let mut s = self.lock();
        let gone = s.gone_resumes > 0;
        s.gone_resumes = s.gone_resumes.saturating_sub(1);
        gone
    }

    fn take_failure(&self) -> Option<(StatusCode, Option<u64>)> {
        let mut s = self.lock();
        let (count, status, retry) = s.failing.as_mut()?;
        let out = (*status, *retry);
        *count -= 1;
        if *count == 0 {
            s.failing = None;
        }
        Some(out)
    }
}

/// Counts every request, then delays or fails it as the switches say.
pub async fn middleware(
    State(faults): State<std::sync::Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    faults.requests.fetch_add(1, Ordering::Relaxed);
    *faults
        .requests_by_path
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(request.uri().path().to_owned())
        .or_default() += 1;
    let delay = faults.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((status, retry)) = faults.take_failure() {
        let body = super::server::status_json(status.as_u16(), "InternalError", "injected fault");
        let mut response = (status, body).into_response();
        if let Some(secs) = retry
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    next.run(request).await
}
