//! Who may read the exporter: Kubernetes authentication (a bearer token checked with a
//! TokenReview, or a client certificate verified during the TLS handshake) and authorization
//! (a SubjectAccessReview of the request's path), answered and cached as controller-runtime's
//! secure metrics server does, with a bound on what made-up credentials cost the API server.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use prometheus::IntCounterVec;
use tokio::sync::Semaphore;

/// How long an authenticated token is trusted without asking again (controller-runtime's
/// token cache), never beyond the token's own expiry.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an allowed request's decision is kept (controller-runtime's authorization cache).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied request's decision is kept: short, so that a new RoleBinding works soon.
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries each cache holds at most: Prometheus replicas and a few people need a handful.
pub const CACHE_ENTRIES: usize = 1024;
/// Reviews waiting for the API server at once; more are refused rather than queued.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// Reviews a second, and at once, for credentials accepted before whose cache entry ran out:
/// a budget of their own, which made-up credentials never reach, so that a flood cannot
/// lock Prometheus out when its entry expires.
pub const KNOWN_REVIEWS_PER_SECOND: u32 = 5;
pub const MAX_KNOWN_REVIEWS_IN_FLIGHT: usize = 2;
/// How long a review may take before the request gets 500.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// A user as Kubernetes authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The user a verified client certificate names: the subject's CN is the user name and its
/// O fields are the groups, as the API server reads client certificates. `None` when the
/// certificate has no CN.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
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
    /// The API server could not be asked: 500, and nothing is cached.
    Failed(String),
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
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone())
    }

    /// The value even once it has expired, until it is evicted or replaced.
    pub fn get_stale(&self, key: &K) -> Option<V> {
        self.entries.get(key).map(|(value, _)| value.clone())
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

/// Until when a token authenticated now may be cached: [`TOKEN_TTL`], or less when the
/// token expires sooner.
pub fn token_cached_until(token: &str, now: Instant, wall: SystemTime) -> Instant {
    let ttl = match token_expiry(token) {
        Some(expiry) => expiry
            .duration_since(wall)
            .unwrap_or(Duration::ZERO)
            .min(TOKEN_TTL),
        None => TOKEN_TTL,
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

/// Checks every request to a protected path. Owns its caches and limits.
pub struct Gate {
    client: Client,
    audiences: Vec<String>,
    tokens: Mutex<Cache<Digest, Option<Arc<User>>>>,
    decisions: Mutex<Cache<Digest, bool>>,
    /// For credentials never accepted before.
    new: Budget,
    /// For credentials accepted before, whose cache entry ran out.
    known: Budget,
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

/// Why a review could not be had.
enum ReviewError {
    Busy,
    Failed(String),
}

impl From<ReviewError> for Decision {
    fn from(error: ReviewError) -> Self {
        match error {
            ReviewError::Busy => Decision::Busy,
            ReviewError::Failed(why) => Decision::Failed(why),
        }
    }
}

impl Gate {
    pub fn new(
        client: Client,
        audiences: Vec<String>,
        reviews_per_second: u32,
        metrics: AuthMetrics,
    ) -> Self {
        Self {
            client,
            audiences,
            tokens: Mutex::new(Cache::new(CACHE_ENTRIES)),
            decisions: Mutex::new(Cache::new(CACHE_ENTRIES)),
            new: Budget::new(reviews_per_second, MAX_REVIEWS_IN_FLIGHT),
            known: Budget::new(KNOWN_REVIEWS_PER_SECOND, MAX_KNOWN_REVIEWS_IN_FLIGHT),
            metrics,
        }
    }

    /// Decides whether the bearer `token` (from the Authorization header) or the verified
    /// client certificate's user may `verb` the `path`. A request without either costs no
    /// API call.
    pub async fn decide(
        &self,
        token: Option<&str>,
        peer: Option<&Arc<User>>,
        path: &str,
        verb: &str,
    ) -> Decision {
        let user = match (peer, token) {
            (Some(user), _) => Arc::clone(user),
            (None, Some(token)) if !token.is_empty() => match self.authenticate(token).await {
                Ok(Some(user)) => user,
                Ok(None) => return Decision::Unauthenticated,
                Err(error) => return error.into(),
            },
            _ => return Decision::Unauthenticated,
        };
        match self.authorize(&user, path, verb).await {
            Ok(true) => Decision::Allowed,
            Ok(false) => Decision::Forbidden,
            Err(error) => error.into(),
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Option<Arc<User>>, ReviewError> {
        let key = sha256(&[token.as_bytes()]);
        let known = {
            let tokens = lock(&self.tokens);
            if let Some(user) = tokens.get(&key, Instant::now()) {
                return Ok(user);
            }
            matches!(tokens.get_stale(&key), Some(Some(_)))
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let answer = self.review("tokenreview", api, review, known).await?;
        let status = answer.status.unwrap_or_default();
        let user = status
            .user
            .filter(|_| status.authenticated == Some(true))
            .map(|info| User {
                name: info.username.unwrap_or_default(),
                uid: info.uid.unwrap_or_default(),
                groups: info.groups.unwrap_or_default(),
                extra: info.extra.unwrap_or_default(),
            })
            .filter(|user| !user.name.is_empty())
            .map(Arc::new);
        self.count(
            "tokenreview",
            if user.is_some() {
                "authenticated"
            } else {
                "unauthenticated"
            },
        );
        // Refusals are cached as briefly as denials: a scraper with a wrong token costs one
        // review per DENIED_TTL, not one per scrape.
        let now = Instant::now();
        let until = match &user {
            Some(_) => token_cached_until(token, now, SystemTime::now()),
            None => now + DENIED_TTL,
        };
        lock(&self.tokens).insert(key, user.clone(), until, now);
        Ok(user)
    }

    async fn authorize(&self, user: &User, path: &str, verb: &str) -> Result<bool, ReviewError> {
        let key = decision_key(user, path, verb);
        let known = {
            let decisions = lock(&self.decisions);
            if let Some(allowed) = decisions.get(&key, Instant::now()) {
                return Ok(allowed);
            }
            decisions.get_stale(&key) == Some(true)
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api = Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = self
            .review("subjectaccessreview", api, review, known)
            .await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.count(
            "subjectaccessreview",
            if allowed { "allowed" } else { "denied" },
        );
        let now = Instant::now();
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        lock(&self.decisions).insert(key, allowed, now + ttl, now);
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
        let budget = if known { &self.known } else { &self.new };
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
                Err(ReviewError::Failed(error.to_string()))
            }
            Err(_) => {
                self.count(kind, "error");
                tracing::warn!(kind, "review timed out");
                Err(ReviewError::Failed(format!("{kind} timed out")))
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

/// The bearer token of the Authorization header, if it has one.
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The verb a request is authorized for: reading is `get` whether or not the body is wanted.
fn verb(method: &Method) -> std::borrow::Cow<'static, str> {
    if method == Method::GET || method == Method::HEAD {
        "get".into()
    } else {
        method.as_str().to_ascii_lowercase().into()
    }
}

/// Middleware for the protected routes.
pub async fn require(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|p| p.0.clone());
    let decision = gate
        .decide(
            bearer_token(&request),
            peer.as_ref(),
            request.uri().path(),
            &verb(request.method()),
        )
        .await;
    match decision {
        Decision::Allowed => next.run(request).await,
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
        Decision::Failed(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Cannot ask the Kubernetes API server: {why}\n"),
        )
            .into_response(),
    }
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
        let soon = jwt(r#"{"exp":1000020}"#);
        assert_eq!(
            token_cached_until(&soon, now, wall),
            now + Duration::from_secs(20)
        );
        let later = jwt(r#"{"exp":2000000}"#);
        assert_eq!(token_cached_until(&later, now, wall), now + TOKEN_TTL);
        let expired = jwt(r#"{"exp":999000}"#);
        assert_eq!(token_cached_until(&expired, now, wall), now);
        assert_eq!(token_cached_until("opaque", now, wall), now + TOKEN_TTL);
        assert_eq!(token_cached_until("a.!!!.c", now, wall), now + TOKEN_TTL);
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
    fn an_expired_entry_is_still_known_until_evicted() {
        let now = Instant::now();
        let mut cache = Cache::new(2);
        cache.insert(1, true, now + Duration::from_secs(1), now);
        let later = now + Duration::from_secs(2);
        assert_eq!(cache.get(&1, later), None);
        assert_eq!(cache.get_stale(&1), Some(true));
        cache.insert(2, false, later + Duration::from_secs(1), later);
        cache.insert(3, false, later + Duration::from_secs(1), later);
        assert_eq!(
            cache.get_stale(&1),
            None,
            "evicted first when room is needed"
        );
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
        assert_eq!(verb(&Method::HEAD), "get");
        assert_eq!(verb(&Method::POST), "post");
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
}
