//! Who may read the exporter: Kubernetes authentication (a bearer token checked with a
//! TokenReview, or a client certificate verified during the TLS handshake) and authorization
//! (a SubjectAccessReview of the request's path), answered and cached as controller-runtime's
//! secure metrics server does, with a bound on what made-up credentials cost the API server.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use prometheus::IntCounterVec;
use tokio::sync::{OnceCell, Semaphore};

/// How long an authenticated token is trusted without asking again (controller-runtime's
/// token cache), never beyond the token's own expiry.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an allowed request's decision is kept (controller-runtime's authorization cache).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied request's decision, or a refused token, is kept: short, so that a new
/// RoleBinding works soon.
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries each cache holds at most: Prometheus replicas and a few people need a handful.
pub const CACHE_ENTRIES: usize = 1024;
/// How long a credential that was let in counts as known: its reviews come from the known
/// budget for this long after its last allowed request, longer than any scrape interval.
pub const KNOWN_TTL: Duration = Duration::from_secs(3600);
/// Reviews waiting for the API server at once; more are refused rather than queued.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// Reviews a second, and at once, for credentials let in before whose cache entry ran out:
/// a budget of their own, which other credentials never reach, so that a flood cannot
/// lock Prometheus out when its entry expires.
pub const KNOWN_REVIEWS_PER_SECOND: u32 = 5;
pub const MAX_KNOWN_REVIEWS_IN_FLIGHT: usize = 2;
/// How long a review may take before the request gets 500.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// How long answers are kept, and how many of each kind: controller-runtime's lifetimes by
/// default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// An authenticated token, never beyond its own expiry.
    pub token_ttl: Duration,
    /// An allowed decision.
    pub allowed_ttl: Duration,
    /// A denied decision or a refused token.
    pub denied_ttl: Duration,
    /// Entries each cache holds at most.
    pub entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            token_ttl: TOKEN_TTL,
            allowed_ttl: ALLOWED_TTL,
            denied_ttl: DENIED_TTL,
            entries: CACHE_ENTRIES,
        }
    }
}

/// A user as Kubernetes authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The user a verified client certificate names: the subject's CN is the user name and its
/// O fields are the groups, as the API server reads client certificates. With several CNs
/// the last one counts, as Go's `pkix.Name` (and so the API server) reads them. `None` when
/// the certificate has no CN or an empty one, which the API server refuses too.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().last()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    Some(User {
        name: name.to_owned(),
        groups,
        ..User::default()
    })
}

/// The user of the connection's client certificate, if it presented one; put in every
/// request's extensions by the server.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Arc<User>>);

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No credentials, or credentials the API server did not accept: 401.
    Unauthenticated,
    /// Authenticated, but RBAC does not allow this path: 403.
    Forbidden,
    /// The limit on reviews is reached: 429, try again.
    Busy,
    /// The API server could not be asked: 500, and nothing is cached. What went wrong is
    /// logged, never told to the caller.
    Failed,
}

/// A map whose entries expire, bounded in size: when full, expired entries go first, then
/// those that would expire soonest.
#[derive(Debug)]
pub struct Cache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.get_until(key, now).map(|(value, _)| value)
    }

    /// The value and when it expires.
    pub fn get_until(&self, key: &K, now: Instant) -> Option<(V, Instant)> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .cloned()
    }

    pub fn insert(&mut self, key: K, value: V, expires: Instant, now: Instant) {
        if expires <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, e)| *e > now);
            while self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, e))| *e)
                    .map(|(k, _)| k.clone());
                match soonest {
                    Some(k) => self.entries.remove(&k),
                    None => break,
                };
            }
        }
        self.entries.insert(key, (value, expires));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A token bucket: `per_second` reviews a second on average, at most that many in a burst.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_second: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            tokens: per_second,
            last: now,
        }
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// When a service-account token (a JWT) says it expires, from its `exp` claim; `None` for
/// tokens that are not JWTs or carry no expiry. The API server has already checked the
/// signature: this only keeps the cache from outliving the token.
pub fn token_expiry(token: &str) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<u64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(claims.exp?))
}

/// Until when a token authenticated now may be cached: the settings' token lifetime, or
/// less when the token expires sooner.
pub fn token_cached_until(
    token: &str,
    now: Instant,
    wall: SystemTime,
    settings: &CacheSettings,
) -> Instant {
    let ttl = match token_expiry(token) {
        Some(expiry) => expiry
            .duration_since(wall)
            .unwrap_or(Duration::ZERO)
            .min(settings.token_ttl),
        None => settings.token_ttl,
    };
    now + ttl
}

type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// What identifies an authorization decision: the whole user, the path and the verb. Hashed
/// part by part, so that a request allocates nothing for it.
fn decision_key(user: &User, path: &str, verb: &str) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(bytes);
    };
    part(user.name.as_bytes());
    part(user.uid.as_bytes());
    part(path.as_bytes());
    part(verb.as_bytes());
    part(&(user.groups.len() as u64).to_be_bytes());
    for group in &user.groups {
        part(group.as_bytes());
    }
    for (key, values) in &user.extra {
        part(key.as_bytes());
        part(&(values.len() as u64).to_be_bytes());
        for value in values {
            part(value.as_bytes());
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Counters of what the gate did, registered with the exporter's metrics.
#[derive(Clone)]
pub struct AuthMetrics {
    /// Reviews sent, by `kind` (tokenreview, subjectaccessreview) and `result`.
    pub reviews: IntCounterVec,
}

/// The verb every request is authorized for: only GET and HEAD get this far (the router
/// answers anything else with 405), and reading is `get` whether or not the body is wanted.
pub const VERB: &str = "get";

/// Checks every request to a protected path. Owns its caches and limits.
pub struct Gate {
    /// Tells this gate's [`ADMITTED`] from another's.
    id: u64,
    client: Client,
    audiences: Vec<String>,
    settings: CacheSettings,
    /// Tokens the API server accepted, and those it refused, kept apart: refusals can never
    /// evict an accepted token. Likewise allowed and denied decisions.
    accepted: Mutex<Cache<Digest, Arc<User>>>,
    refused: Mutex<Cache<Digest, ()>>,
    allowed: Mutex<Cache<Digest, ()>>,
    denied: Mutex<Cache<Digest, ()>>,
    /// Credentials let in before: a token's digest, or a certificate user's decision. Only
    /// an allowed request adds one, so only they are reviewed from the known budget.
    known: Mutex<Cache<Digest, ()>>,
    token_reviews: Flights<Result<Option<Arc<User>>, ReviewError>>,
    access_reviews: Flights<Result<bool, ReviewError>>,
    /// For credentials not let in before.
    new_budget: Budget,
    /// For credentials let in before whose cache entry ran out.
    known_budget: Budget,
    metrics: AuthMetrics,
}

/// Reviews allowed: so many a second, so many at once.
struct Budget {
    rate: Mutex<RateLimit>,
    in_flight: Semaphore,
}

impl Budget {
    fn new(per_second: u32, at_once: usize) -> Self {
        Self {
            rate: Mutex::new(RateLimit::new(per_second, Instant::now())),
            in_flight: Semaphore::new(at_once),
        }
    }
}

/// Reviews under way, by key: a request whose key is already being reviewed waits for that
/// review's answer instead of sending one of its own.
struct Flights<T> {
    under_way: Mutex<HashMap<Digest, Arc<OnceCell<T>>>>,
}

impl<T: Clone> Flights<T> {
    fn new() -> Self {
        Self {
            under_way: Mutex::new(HashMap::new()),
        }
    }

    /// The answer of the review of `key` under way, or of `review` when none is. Should the
    /// request running the review go away, one of those waiting runs its own.
    async fn join<F, Fut>(&self, key: Digest, review: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = Arc::clone(lock(&self.under_way).entry(key).or_default());
        let seat = Seat {
            flights: self,
            key,
            cell: Some(cell),
        };
        match &seat.cell {
            Some(cell) => cell.get_or_init(review).await.clone(),
            None => review().await,
        }
    }

    fn len(&self) -> usize {
        lock(&self.under_way).len()
    }
}

/// One request's place in a review under way: the last to leave, answered or cancelled,
/// removes the review, so that the next request asks afresh.
struct Seat<'a, T> {
    flights: &'a Flights<T>,
    key: Digest,
    cell: Option<Arc<OnceCell<T>>>,
}

impl<T> Drop for Seat<'_, T> {
    fn drop(&mut self) {
        let mut under_way = lock(&self.flights.under_way);
        // Let go while the lock is held, so that the count below is exact.
        drop(self.cell.take());
        if under_way
            .get(&self.key)
            .is_some_and(|cell| Arc::strong_count(cell) == 1)
        {
            under_way.remove(&self.key);
        }
    }
}

/// Why a review could not be had.
#[derive(Clone, Debug)]
enum ReviewError {
    Busy,
    Failed,
}

impl From<ReviewError> for Decision {
    fn from(error: ReviewError) -> Self {
        match error {
            ReviewError::Busy => Decision::Busy,
            ReviewError::Failed => Decision::Failed,
        }
    }
}

/// What a TokenReview's answer says of the token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    Accepted(User),
    /// Refused, and worth remembering as refused.
    Refused,
    /// Refused with an error: not remembered, as client-go's authenticators do not cache
    /// errors. The API server sets one on nearly every refusal ("invalid bearer token"),
    /// so these are the usual case; the review budget bounds what they cost.
    Error(String),
}

/// Reads a TokenReview's answer. A token accepted for none of the `audiences` asked for is
/// refused, as client-go checks them: an API server that does not know about audiences
/// would otherwise accept any of its own tokens.
pub fn token_verdict(status: TokenReviewStatus, audiences: &[String]) -> TokenVerdict {
    let refusal = || match status.error.as_deref().filter(|e| !e.is_empty()) {
        Some(error) => TokenVerdict::Error(error.to_owned()),
        None => TokenVerdict::Refused,
    };
    if status.authenticated != Some(true) {
        return refusal();
    }
    let answered = status.audiences.as_deref().unwrap_or_default();
    if !audiences.is_empty() && !audiences.iter().any(|a| answered.contains(a)) {
        return TokenVerdict::Refused;
    }
    let Some(info) = status.user.clone() else {
        return refusal();
    };
    let user = User {
        name: info.username.unwrap_or_default(),
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
        extra: info.extra.unwrap_or_default(),
    };
    if user.name.is_empty() {
        return refusal();
    }
    TokenVerdict::Accepted(user)
}

/// What a request shows to be let in: the verified client certificate's user, or a bearer
/// token with its digest, taken once per request.
enum Credential<'a> {
    Certificate(&'a Arc<User>),
    Token(&'a str, Digest),
}

impl Credential<'_> {
    /// What the known credentials hold of it: a token's digest; a certificate is its user,
    /// so its decision is what is known of it.
    fn known_as(&self, decision: Digest) -> Digest {
        match self {
            Credential::Certificate(_) => decision,
            Credential::Token(_, digest) => *digest,
        }
    }
}

/// How long a worker thread takes a token it let in at its word (see [`Admitted`]): short,
/// so that what the caches say of the token, and of its being known, stays current.
const ADMITTED_FOR: Duration = Duration::from_secs(1);

/// What a worker thread let in last: a client that sends one token for one path many times
/// a second (a load test, or a flood from someone holding a valid token) then costs the
/// token's digest and a comparison per request, not the decision's digest and three locks.
/// A Prometheus scraping every 30 s finds it gone and is answered from the caches. It keeps
/// the digest, never the token, and for no longer than the cache entries it came from.
struct Admitted {
    gate: u64,
    digest: Digest,
    path: Box<str>,
    until: Instant,
}

thread_local! {
    static ADMITTED: RefCell<Option<Admitted>> = const { RefCell::new(None) };
}

impl Admitted {
    fn holds(gate: u64, digest: &Digest, path: &str, now: Instant) -> bool {
        ADMITTED.with_borrow(|last| {
            last.as_ref().is_some_and(|a| {
                a.gate == gate && a.digest == *digest && *a.path == *path && now < a.until
            })
        })
    }

    fn keep(gate: u64, digest: Digest, path: &str, until: Instant) {
        ADMITTED.set(Some(Admitted {
            gate,
            digest,
            path: path.into(),
            until,
        }));
    }
}

impl Gate {
    pub fn new(
        client: Client,
        audiences: Vec<String>,
        reviews_per_second: u32,
        settings: CacheSettings,
        metrics: AuthMetrics,
    ) -> Self {
        let entries = settings.entries;
        static GATES: AtomicU64 = AtomicU64::new(0);
        Self {
            id: GATES.fetch_add(1, Ordering::Relaxed),
            client,
            audiences,
            accepted: Mutex::new(Cache::new(entries)),
            refused: Mutex::new(Cache::new(entries)),
            allowed: Mutex::new(Cache::new(entries)),
            denied: Mutex::new(Cache::new(entries)),
            known: Mutex::new(Cache::new(entries)),
            settings,
            token_reviews: Flights::new(),
            access_reviews: Flights::new(),
            new_budget: Budget::new(reviews_per_second, MAX_REVIEWS_IN_FLIGHT),
            known_budget: Budget::new(KNOWN_REVIEWS_PER_SECOND, MAX_KNOWN_REVIEWS_IN_FLIGHT),
            metrics,
        }
    }

    /// Decides whether the bearer `token` (from the Authorization header) or the verified
    /// client certificate's user may get the `path`. A request without either costs no API
    /// call.
    pub async fn decide(
        &self,
        token: Option<&str>,
        peer: Option<&Arc<User>>,
        path: &str,
    ) -> Decision {
        let credential = match (peer, token) {
            (Some(user), _) => Credential::Certificate(user),
            (None, Some(token)) if !token.is_empty() => {
                Credential::Token(token, sha256(&[token.as_bytes()]))
            }
            _ => return Decision::Unauthenticated,
        };
        if let Some(decision) = self.decide_from_cache(&credential, path) {
            return decision;
        }
        // A review's future is kilobytes: boxed, so that the cached path, which a
        // scraper takes on every request, does not move it around.
        Box::pin(self.decide_by_review(&credential, path)).await
    }

    /// The decision when the caches hold it: what nearly every request gets, without
    /// awaiting anything.
    fn decide_from_cache(&self, credential: &Credential<'_>, path: &str) -> Option<Decision> {
        let now = Instant::now();
        let (user, token) = match *credential {
            Credential::Certificate(user) => (Arc::clone(user), None),
            Credential::Token(_, digest) => {
                if Admitted::holds(self.id, &digest, path, now) {
                    return Some(Decision::Allowed);
                }
                match self.cached_token(&digest, now)? {
                    Some((user, until)) => (user, Some((digest, until))),
                    None => return Some(Decision::Unauthenticated),
                }
            }
        };
        let key = decision_key(&user, path, VERB);
        let (allowed, decision_until) = self.cached_decision(&key, now)?;
        if !allowed {
            return Some(Decision::Forbidden);
        }
        self.remember(credential.known_as(key));
        if let Some((digest, token_until)) = token {
            let until = token_until.min(decision_until).min(now + ADMITTED_FOR);
            Admitted::keep(self.id, digest, path, until);
        }
        Some(Decision::Allowed)
    }

    async fn decide_by_review(&self, credential: &Credential<'_>, path: &str) -> Decision {
        let user = match *credential {
            Credential::Certificate(user) => Arc::clone(user),
            Credential::Token(token, digest) => match self.authenticate(token, digest).await {
                Ok(Some(user)) => user,
                Ok(None) => return Decision::Unauthenticated,
                Err(error) => return error.into(),
            },
        };
        let key = decision_key(&user, path, VERB);
        let known_as = credential.known_as(key);
        match self.authorize(&user, path, key, known_as).await {
            Ok(true) => {
                self.remember(known_as);
                Decision::Allowed
            }
            Ok(false) => Decision::Forbidden,
            Err(error) => error.into(),
        }
    }

    /// Counts `credential` as let in, for the reviews' budget (see `known`).
    fn remember(&self, credential: Digest) {
        let now = Instant::now();
        lock(&self.known).insert(credential, (), now + KNOWN_TTL, now);
    }

    /// Reviews waiting for the API server or for another request's review, for tests.
    pub fn reviews_under_way(&self) -> usize {
        self.token_reviews.len() + self.access_reviews.len()
    }

    fn is_known(&self, credential: &Digest) -> bool {
        lock(&self.known).get(credential, Instant::now()).is_some()
    }

    /// The cached verdict on a token: its user and until when, or refused.
    fn cached_token(&self, digest: &Digest, now: Instant) -> Option<Option<(Arc<User>, Instant)>> {
        if let Some(accepted) = lock(&self.accepted).get_until(digest, now) {
            return Some(Some(accepted));
        }
        lock(&self.refused).get(digest, now).map(|()| None)
    }

    /// The cached decision, and until when.
    fn cached_decision(&self, key: &Digest, now: Instant) -> Option<(bool, Instant)> {
        if let Some(((), until)) = lock(&self.allowed).get_until(key, now) {
            return Some((true, until));
        }
        lock(&self.denied)
            .get_until(key, now)
            .map(|((), until)| (false, until))
    }

    async fn authenticate(
        &self,
        token: &str,
        digest: Digest,
    ) -> Result<Option<Arc<User>>, ReviewError> {
        if let Some(cached) = self.cached_token(&digest, Instant::now()) {
            return Ok(cached.map(|(user, _)| user));
        }
        self.token_reviews
            .join(digest, || self.review_token(token, digest))
            .await
    }

    async fn review_token(
        &self,
        token: &str,
        digest: Digest,
    ) -> Result<Option<Arc<User>>, ReviewError> {
        // The review that ran before this one may have just answered.
        if let Some(cached) = self.cached_token(&digest, Instant::now()) {
            return Ok(cached.map(|(user, _)| user));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let known = self.is_known(&digest);
        let answer = self.review("tokenreview", api, review, known).await?;
        let verdict = token_verdict(answer.status.unwrap_or_default(), &self.audiences);
        let now = Instant::now();
        match verdict {
            TokenVerdict::Accepted(user) => {
                self.count("tokenreview", "authenticated");
                let user = Arc::new(user);
                let until = token_cached_until(token, now, SystemTime::now(), &self.settings);
                lock(&self.accepted).insert(digest, Arc::clone(&user), until, now);
                Ok(Some(user))
            }
            TokenVerdict::Refused => {
                self.count("tokenreview", "unauthenticated");
                let until = now + self.settings.denied_ttl;
                lock(&self.refused).insert(digest, (), until, now);
                Ok(None)
            }
            TokenVerdict::Error(error) => {
                self.count("tokenreview", "unauthenticated");
                tracing::debug!(%error, "token refused");
                Ok(None)
            }
        }
    }

    async fn authorize(
        &self,
        user: &User,
        path: &str,
        key: Digest,
        credential: Digest,
    ) -> Result<bool, ReviewError> {
        if let Some((allowed, _)) = self.cached_decision(&key, Instant::now()) {
            return Ok(allowed);
        }
        self.access_reviews
            .join(key, || self.review_access(user, path, key, credential))
            .await
    }

    async fn review_access(
        &self,
        user: &User,
        path: &str,
        key: Digest,
        credential: Digest,
    ) -> Result<bool, ReviewError> {
        if let Some((allowed, _)) = self.cached_decision(&key, Instant::now()) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(VERB.to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api = Api::<SubjectAccessReview>::all(self.client.clone());
        let known = self.is_known(&credential);
        let answer = self
            .review("subjectaccessreview", api, review, known)
            .await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let now = Instant::now();
        if allowed {
            self.count("subjectaccessreview", "allowed");
            let until = now + self.settings.allowed_ttl;
            lock(&self.allowed).insert(key, (), until, now);
        } else {
            self.count("subjectaccessreview", "denied");
            let until = now + self.settings.denied_ttl;
            lock(&self.denied).insert(key, (), until, now);
        }
        Ok(allowed)
    }

    /// Sends one review within the limits of its budget: refused at once, not queued,
    /// beyond them.
    async fn review<K>(
        &self,
        kind: &str,
        api: Api<K>,
        review: K,
        known: bool,
    ) -> Result<K, ReviewError>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let budget = if known {
            &self.known_budget
        } else {
            &self.new_budget
        };
        let Ok(_permit) = budget.in_flight.try_acquire() else {
            self.count(kind, "throttled");
            return Err(ReviewError::Busy);
        };
        if !lock(&budget.rate).try_take(Instant::now()) {
            self.count(kind, "throttled");
            return Err(ReviewError::Busy);
        }
        let params = PostParams::default();
        let sent = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&params, &review));
        match sent.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.count(kind, "error");
                tracing::warn!(%error, kind, "review failed");
                Err(ReviewError::Failed)
            }
            Err(_) => {
                self.count(kind, "error");
                tracing::warn!(kind, "review timed out");
                Err(ReviewError::Failed)
            }
        }
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics
            .reviews
            .with_label_values(&[kind, result])
            .inc();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bearer token of the Authorization header, if it has one, in ASCII as
/// `HeaderValue::to_str` requires, but checked a word at a time: `to_str` checks the
/// kilobyte a token is one byte at a time, on every request.
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    if !value.is_ascii() {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why the gate refuses `request`, as the answer to send; `None` lets it in. The future
/// holds the credentials and the path, not the request, whose body is not `Sync`.
pub fn refusal<'a>(
    gate: &'a Gate,
    request: &'a Request,
) -> impl Future<Output = Option<Response>> + Send + 'a {
    let token = bearer_token(request);
    let peer = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|p| p.0.as_ref());
    let path = request.uri().path();
    async move { answer(gate.decide(token, peer, path).await) }
}

fn answer(decision: Decision) -> Option<Response> {
    let refusal = match decision {
        Decision::Allowed => return None,
        Decision::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "Unauthorized: send a Kubernetes bearer token or a client certificate\n",
        )
            .into_response(),
        Decision::Forbidden => (
            StatusCode::FORBIDDEN,
            "Forbidden: RBAC does not allow this user to get this path\n",
        )
            .into_response(),
        Decision::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            "Too many new credentials to review: try again\n",
        )
            .into_response(),
        // What went wrong is in the exporter's log: the caller is not authenticated yet.
        Decision::Failed => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error: the Kubernetes API server could not check the credentials\n",
        )
            .into_response(),
    };
    Some(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    #[test]
    fn a_token_is_cached_no_longer_than_it_lives() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let settings = CacheSettings::default();
        let until = |token: &str| token_cached_until(token, now, wall, &settings);
        let soon = jwt(r#"{"exp":1000020}"#);
        assert_eq!(until(&soon), now + Duration::from_secs(20));
        let later = jwt(r#"{"exp":2000000}"#);
        assert_eq!(until(&later), now + TOKEN_TTL);
        let expired = jwt(r#"{"exp":999000}"#);
        assert_eq!(until(&expired), now);
        assert_eq!(until("opaque"), now + TOKEN_TTL);
        assert_eq!(until("a.!!!.c"), now + TOKEN_TTL);
        let short = CacheSettings {
            token_ttl: Duration::from_secs(5),
            ..CacheSettings::default()
        };
        assert_eq!(
            token_cached_until(&later, now, wall, &short),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let now = Instant::now();
        let mut cache = Cache::new(3);
        cache.insert(1, "a", now + Duration::from_secs(10), now);
        assert_eq!(cache.get(&1, now), Some("a"));
        assert_eq!(cache.get(&1, now + Duration::from_secs(10)), None);
        cache.insert(2, "b", now, now);
        assert_eq!(
            cache.get(&2, now),
            None,
            "an entry already expired is not kept"
        );
        cache.insert(2, "b", now + Duration::from_secs(5), now);
        cache.insert(3, "c", now + Duration::from_secs(20), now);
        cache.insert(4, "d", now + Duration::from_secs(30), now);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&2, now), None, "the soonest to expire made room");
        assert_eq!(cache.get(&4, now), Some("d"));
        let later = now + Duration::from_secs(25);
        cache.insert(5, "e", later + Duration::from_secs(1), later);
        assert_eq!(cache.get(&1, later), None);
        assert_eq!(cache.get(&4, later), Some("d"));
        assert_eq!(cache.get(&5, later), Some("e"));
    }

    #[test]
    fn a_thread_takes_only_the_same_token_for_the_same_path_of_the_same_gate_at_its_word() {
        let now = Instant::now();
        let (token, other) = (sha256(&[b"token"]), sha256(&[b"other"]));
        Admitted::keep(1, token, "/metrics", now + ADMITTED_FOR);
        assert!(Admitted::holds(1, &token, "/metrics", now));
        assert!(!Admitted::holds(2, &token, "/metrics", now), "another gate");
        assert!(
            !Admitted::holds(1, &other, "/metrics", now),
            "another token"
        );
        assert!(!Admitted::holds(1, &token, "/", now), "another path");
        let later = now + ADMITTED_FOR;
        assert!(!Admitted::holds(1, &token, "/metrics", later), "expired");
        // Another thread has its own.
        std::thread::spawn(move || assert!(!Admitted::holds(1, &token, "/metrics", now)))
            .join()
            .expect("the other thread");
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_its_rate() {
        let now = Instant::now();
        let mut limit = RateLimit::new(5, now);
        let burst = (0..20).filter(|_| limit.try_take(now)).count();
        assert_eq!(burst, 5);
        assert!(!limit.try_take(now + Duration::from_millis(100)));
        assert!(limit.try_take(now + Duration::from_millis(300)));
        let next_second = now + Duration::from_millis(1300);
        let refilled = (0..20).filter(|_| limit.try_take(next_second)).count();
        assert_eq!(refilled, 5, "never more than one second's worth");
    }

    #[test]
    fn decisions_differ_by_every_part_of_the_user() {
        let user = User {
            name: "u".into(),
            groups: vec!["g".into()],
            ..User::default()
        };
        let base = decision_key(&user, "/metrics", "get");
        assert_ne!(base, decision_key(&user, "/", "get"));
        assert_ne!(base, decision_key(&user, "/metrics", "post"));
        let other_group = User {
            groups: vec!["h".into()],
            ..user.clone()
        };
        assert_ne!(base, decision_key(&other_group, "/metrics", "get"));
        let mut extra = user.clone();
        extra.extra.insert("scopes".into(), vec!["x".into()]);
        assert_ne!(base, decision_key(&extra, "/metrics", "get"));
        assert_eq!(base, decision_key(&user.clone(), "/metrics", "get"));
    }

    #[test]
    fn only_bearer_tokens_are_taken() {
        let with = |value: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, value)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearer")), None);
        // Not ASCII, as HeaderValue::to_str would have it: no token, not one trimmed of its
        // no-break space.
        let mut request = with("Bearer abc");
        let value = HeaderValue::from_bytes("Bearer abc\u{a0}".as_bytes()).expect("obs-text");
        request.headers_mut().insert(header::AUTHORIZATION, value);
        assert_eq!(bearer_token(&request), None);
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:serviceaccount:mon:prom");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "readers");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let user = certificate_user(cert.der()).expect("a user");
        assert_eq!(user.name, "system:serviceaccount:mon:prom");
        assert_eq!(user.groups, ["readers"]);
        assert_eq!(certificate_user(b"not a certificate"), None);
    }

    fn certificate_named(parts: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        // rcgen keeps one value per attribute type: build the subject by hand for repeats.
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in parts {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_certificate_without_a_common_name_names_nobody() {
        use rcgen::DnType::{CommonName, OrganizationName};
        let masters = certificate_named(&[(OrganizationName, "system:masters")]);
        assert_eq!(certificate_user(&masters), None);
        let empty = certificate_named(&[(CommonName, ""), (OrganizationName, "system:masters")]);
        assert_eq!(certificate_user(&empty), None);
    }

    #[test]
    fn of_several_common_names_the_last_counts_as_for_the_api_server() {
        use rcgen::DnType::{CommonName, CustomDnType, OrganizationName};
        // The CN's OID under another name, so that rcgen writes a second CN.
        let also_common_name = CustomDnType(vec![2, 5, 4, 3]);
        let der = certificate_named(&[
            (CommonName, "first"),
            (OrganizationName, "readers"),
            (also_common_name, "last"),
        ]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(cert.subject().iter_common_name().count(), 2, "two CNs");
        let user = certificate_user(&der).expect("a user");
        assert_eq!(user.name, "last");
        assert_eq!(user.groups, ["readers"]);
    }

    fn status(authenticated: bool, audiences: &[&str], error: Option<&str>) -> TokenReviewStatus {
        use k8s_openapi::api::authentication::v1::UserInfo;
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            error: error.map(str::to_owned),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:mon:prom".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                ..UserInfo::default()
            }),
        }
    }

    #[test]
    fn a_token_review_is_read_as_client_go_reads_it() {
        let accepted = token_verdict(status(true, &["api"], None), &[]);
        assert!(matches!(accepted, TokenVerdict::Accepted(ref u) if u.groups.len() == 1));
        let wanted = ["exporter".to_owned()];
        assert!(matches!(
            token_verdict(status(true, &["exporter", "api"], None), &wanted),
            TokenVerdict::Accepted(_)
        ));
        assert_eq!(
            token_verdict(status(true, &["api"], None), &wanted),
            TokenVerdict::Refused,
            "accepted for another audience only"
        );
        assert_eq!(
            token_verdict(status(true, &[], None), &wanted),
            TokenVerdict::Refused,
            "an API server that does not speak of audiences"
        );
        assert_eq!(
            token_verdict(status(false, &[], None), &[]),
            TokenVerdict::Refused
        );
        assert_eq!(
            token_verdict(status(false, &[], Some("invalid bearer token")), &[]),
            TokenVerdict::Error("invalid bearer token".into()),
        );
        let mut nameless = status(true, &[], None);
        nameless.user = None;
        assert_eq!(token_verdict(nameless, &[]), TokenVerdict::Refused);
        assert_eq!(
            token_verdict(TokenReviewStatus::default(), &[]),
            TokenVerdict::Refused
        );
    }

    #[tokio::test]
    async fn requests_for_one_key_share_one_review() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let flights = Flights::<u32>::new();
        let runs = AtomicUsize::new(0);
        let (open, gate) = tokio::sync::watch::channel(false);
        let review = || {
            let mut gate = gate.clone();
            let runs = &runs;
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                7
            }
        };
        let waiting = futures::future::join_all((0..10).map(|_| flights.join([1; 32], review)));
        let opener = async {
            // Let every request join before the review answers.
            while flights.len() == 0 || runs.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            open.send_replace(true);
        };
        let (answers, ()) = tokio::join!(waiting, opener);
        assert_eq!(answers, vec![7; 10]);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one review for ten requests"
        );
        assert_eq!(flights.len(), 0, "nothing left under way");
        assert_eq!(
            flights.join([1; 32], || async { 8 }).await,
            8,
            "asked afresh"
        );
    }

    #[tokio::test]
    async fn when_the_request_reviewing_goes_away_another_reviews() {
        let flights = Flights::<u32>::new();
        let pending = flights.join([2; 32], futures::future::pending::<u32>);
        // Polled once, so that it runs the review, then dropped as a client that went away.
        assert!(futures::poll!(Box::pin(pending)).is_pending());
        assert_eq!(flights.len(), 0, "a review nobody waits for is gone");
        let first = flights.join([2; 32], futures::future::pending::<u32>);
        let mut first = Box::pin(first);
        assert!(futures::poll!(first.as_mut()).is_pending());
        let second = flights.join([2; 32], || async { 9 });
        drop(first);
        assert_eq!(second.await, 9, "the one left ran its own review");
        assert_eq!(flights.len(), 0);
    }
}
