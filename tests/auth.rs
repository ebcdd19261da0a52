//! Only readers that RBAC lets in get the exporter's pages: bearer tokens checked with the
//! real API server's TokenReview, client certificates from its client CA, SubjectAccessReviews
//! of the path; what that costs the API server (counted in its audit log) under a flood of
//! made-up tokens; and what a secured exporter answers while the API server is down.

mod common;
mod envtest;

use std::{
    collections::HashMap,
    ops::RangeInclusive,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    api::core::v1::{ConfigMap, ResourceQuota, ResourceQuotaSpec},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use kubevirt_leader_exporter::{
    auth::{ALLOWED_TTL, KNOWN_REVIEWS_PER_SECOND, TOKEN_TTL},
    client_ca::CLUSTER_CLIENT_CA,
};
use reqwest::StatusCode;
use serde_json::json;

use common::temp_dir;
use envtest::{
    ControlPlane, EXPORTER_USER, ExporterProcess, MONITORING, PROMETHEUS, Secured, ServingCert,
    bind_reader, https_client,
};

const PROTECTED: [&str; 3] = ["/metrics", "/", "/status.json"];
/// Reviews a second for credentials never accepted before: `--auth-reviews-per-second`'s
/// default, also their burst.
const NEW_REVIEWS_PER_SECOND: f64 = 10.0;
/// How far the test's wall clock may be from when the exporter's cache entries run out: they
/// are kept by the monotonic clock, from the wall-clock expiry of the token.
const CLOCK_SLACK: f64 = 0.5;
/// How the flood's made-up tokens begin.
const MADE_UP: &str = "made-up-";
/// TokenReviews audited with their request, so that the audit log tells which token each one
/// reviewed; everything else with its metadata only.
const AUDIT_REVIEWED_TOKENS: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Request
  resources: [{group: authentication.k8s.io, resources: [tokenreviews]}]
- level: Metadata
";

/// TokenReviews and SubjectAccessReviews audited with their request, so that the audit log
/// tells whose credentials each one reviewed; everything else with its metadata only.
const AUDIT_REVIEWS: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Request
  resources:
  - {group: authentication.k8s.io, resources: [tokenreviews]}
  - {group: authorization.k8s.io, resources: [subjectaccessreviews]}
- level: Metadata
";

/// Who the API server itself takes a client certificate with `subject` for (its
/// SelfSubjectReview); `None` when it takes it for nobody.
async fn api_server_user(
    plane: &ControlPlane,
    subject: &[(rcgen::DnType, &str)],
) -> Option<String> {
    use base64::Engine;
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let (cert, key) = plane.client_certificate_for(subject);
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let yaml = plane.kubeconfig_yaml("unused").replace(
        "{token: 'unused'}",
        &format!(
            "{{client-certificate-data: '{}', client-key-data: '{}'}}",
            b64(&cert),
            b64(&key)
        ),
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let client = kubevirt_leader_exporter::client_from_kubeconfig(kubeconfig)
        .await
        .expect("client");
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    // Where RBAC does not let the user ask, the refusal names whom it refused.
    let user = match review {
        Ok(review) => review.status?.user_info?.username?,
        Err(kube::Error::Api(status)) if status.code == 401 => return None,
        Err(kube::Error::Api(status)) if status.code == 403 => status
            .message
            .split_once("User \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(user, _)| user.to_owned())
            .unwrap_or_else(|| panic!("whom? {}", status.message)),
        Err(error) => panic!("SelfSubjectReview: {error}"),
    };
    (user != "system:anonymous").then_some(user)
}

async fn status(client: &reqwest::Client, url: &str, token: Option<&str>) -> StatusCode {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request").status()
}

/// How many TokenReviews the exporter sent for each token, as the API server's audit log
/// records them (its policy must record their request: [`AUDIT_REVIEWED_TOKENS`]).
fn reviewed_tokens(plane: &ControlPlane) -> HashMap<String, usize> {
    let mut reviewed = HashMap::new();
    for event in plane.audit_events() {
        if event["verb"] == "create"
            && event["user"]["username"] == EXPORTER_USER
            && event["objectRef"]["resource"] == "tokenreviews"
            && event["stage"] == "ResponseComplete"
        {
            let token = event["requestObject"]["spec"]["token"]
                .as_str()
                .unwrap_or_else(|| panic!("the audit log does not record the token: {event}"));
            *reviewed.entry(token.to_owned()).or_default() += 1;
        }
    }
    reviewed
}

/// The SubjectAccessReviews the exporter sent, as (user, path, verb), as the API server's
/// audit log records them (its policy must record their request: [`AUDIT_REVIEWS`]).
fn reviewed_access(plane: &ControlPlane) -> Vec<(String, String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    plane
        .audit_events()
        .iter()
        .filter(|e| {
            e["verb"] == "create"
                && e["user"]["username"] == EXPORTER_USER
                && e["objectRef"]["resource"] == "subjectaccessreviews"
                && e["stage"] == "ResponseComplete"
        })
        .map(|e| {
            let spec = &e["requestObject"]["spec"];
            assert!(
                spec.is_object(),
                "the audit log does not record the review: {e}"
            );
            let attributes = &spec["nonResourceAttributes"];
            (
                text(&spec["user"]),
                text(&attributes["path"]),
                text(&attributes["verb"]),
            )
        })
        .collect()
}

/// The reviews of one credential that requests made one after the other for `elapsed` cost
/// when its answer is cached for `ttl`: one, and one more for each time the entry ran out.
fn reviews_while_cached(elapsed: Duration, ttl: Duration) -> RangeInclusive<usize> {
    1..=1 + (elapsed.as_secs_f64() / ttl.as_secs_f64()) as usize
}

/// Whole seconds since the epoch, as a JWT's `exp` counts them.
fn unix_seconds() -> u64 {
    common::unix_now() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_readers_that_rbac_lets_in_get_the_pages() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    // Many first-time credentials in a row: more than the default 10 reviews a second.
    let bed = Secured::start(&assets, &["--auth-reviews-per-second=100"]).await;
    bed.until_ready().await;
    let client = bed.client();
    for path in PROTECTED {
        assert_eq!(status(&client, &bed.url(path), None).await, 401, "{path}");
    }
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);
    assert_eq!(status(&client, &bed.url("/readyz"), None).await, 200);

    let prometheus = bed.reader_token(MONITORING, PROMETHEUS, true).await;
    let stranger = bed.reader_token(MONITORING, "stranger", false).await;
    for path in PROTECTED {
        assert_eq!(
            status(&client, &bed.url(path), Some(&prometheus)).await,
            200,
            "{path}"
        );
        assert_eq!(
            status(&client, &bed.url(path), Some(&stranger)).await,
            403,
            "{path}"
        );
        let garbage = status(&client, &bed.url(path), Some("not-a-token")).await;
        assert_eq!(garbage, 401, "{path}");
    }
    // A token the API server signed, for a bound account, but expired an hour ago.
    let uid = bed
        .plane
        .service_account(&bed.admin, MONITORING, "late")
        .await;
    bind_reader(&bed.admin, MONITORING, "late").await;
    let expired = bed
        .plane
        .forge_token(MONITORING, "late", &uid, unix_seconds() - 3600);
    assert_eq!(
        status(&client, &bed.url("/metrics"), Some(&expired)).await,
        401
    );
    // The same forgery, still valid: proves the API server takes such tokens at all.
    let valid = bed
        .plane
        .forge_token(MONITORING, "late", &uid, unix_seconds() + 600);
    assert_eq!(
        status(&client, &bed.url("/metrics"), Some(&valid)).await,
        200
    );

    // Client certificates from the API server's client CA: the CN is the user.
    let user = format!("system:serviceaccount:{MONITORING}:{PROMETHEUS}");
    let (cert, key) = bed
        .plane
        .client_certificate(&user, "system:serviceaccounts");
    let with_cert = https_client(&bed.serving_ca, Some((&cert, &key)));
    for path in PROTECTED {
        assert_eq!(
            status(&with_cert, &bed.url(path), None).await,
            200,
            "{path}"
        );
    }
    let (cert, key) = bed.plane.client_certificate("someone-else", "people");
    let unbound = https_client(&bed.serving_ca, Some((&cert, &key)));
    assert_eq!(status(&unbound, &bed.url("/metrics"), None).await, 403);
    // Read as the API server reads them: no CN is nobody, even in system:masters; of two
    // CNs, the last is the user.
    use rcgen::DnType::{CommonName, CustomDnType, OrganizationName};
    let with_subject = |subject: &[(rcgen::DnType, &str)]| {
        let (cert, key) = bed.plane.client_certificate_for(subject);
        https_client(&bed.serving_ca, Some((&cert, &key)))
    };
    let nameless = [(OrganizationName, "system:masters")];
    assert_eq!(
        status(&with_subject(&nameless), &bed.url("/metrics"), None).await,
        401
    );
    assert_eq!(api_server_user(&bed.plane, &nameless).await, None);
    // The CN's OID under another name, so that rcgen writes a second CN after the first.
    let second_cn = || CustomDnType(vec![2, 5, 4, 3]);
    let last_bound = [(CommonName, "someone-else"), (second_cn(), user.as_str())];
    assert_eq!(
        status(&with_subject(&last_bound), &bed.url("/metrics"), None).await,
        200
    );
    let user_of_last = api_server_user(&bed.plane, &last_bound).await;
    assert_eq!(user_of_last.as_deref(), Some(user.as_str()));
    let first_bound = [(CommonName, user.as_str()), (second_cn(), "someone-else")];
    assert_eq!(
        status(&with_subject(&first_bound), &bed.url("/metrics"), None).await,
        403
    );
    // A certificate from another CA is refused in the handshake.
    let other = ServingCert::new(&temp_dir("auth-other-ca"));
    let cert = std::fs::read_to_string(&other.cert).expect("cert");
    let key = std::fs::read_to_string(&other.key).expect("key");
    let foreign = https_client(&bed.serving_ca, Some((&cert, &key)));
    let refused = foreign.get(bed.url("/metrics")).send().await;
    assert!(refused.is_err(), "{refused:?}");

    // Tokens never travel in plain HTTP: there is no plain HTTP to send them on.
    let plain = common::http()
        .get(format!("http://{}/metrics", bed.exporter.addr))
        .bearer_auth(&prometheus)
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() == 400));

    // A path no route serves is not guarded: 404 without credentials, counted as `other`.
    assert_eq!(status(&client, &bed.url("/nothing-here"), None).await, 404);
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);

    // The refusals are counted by the exporter too, in the next rendering of /metrics
    // (a body is reused for up to a second while no target changes).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = client
        .get(bed.url("/metrics"))
        .bearer_auth(&prometheus)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let scrape = common::Scrape(body);
    let count = |path: &str, code: &str| {
        scrape
            .value(
                "kubevirt_leader_exporter_http_requests_total",
                &[("path", path), ("code", code)],
            )
            .unwrap_or_default()
    };
    assert!(count("/metrics", "401") >= 3.0, "{}", scrape.0);
    assert!(count("/metrics", "403") >= 2.0, "{}", scrape.0);
    assert!(count("/livez", "200") >= 1.0, "{}", scrape.0);
    assert!(count("other", "404") >= 1.0, "{}", scrape.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_cached_and_a_flood_of_made_up_tokens_is_bounded() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start_audited(&assets, &[], AUDIT_REVIEWED_TOKENS).await;
    bed.until_ready().await;
    let client = bed.client();
    let token = bed.reader_token(MONITORING, PROMETHEUS, true).await;
    let url = bed.url("/metrics");
    // 1,000 scrapes cost one review of each kind: the token is then cached for a minute, the
    // decision for five. Only a machine so slow that the scrapes outlast an entry would see
    // one more review of that kind for each time the entry ran out.
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(status(&client, &url, Some(&token)).await, 200);
    }
    let elapsed = started.elapsed();
    let token_reviews = bed.plane.creates_by(EXPORTER_USER, "tokenreviews");
    let access_reviews = bed.plane.creates_by(EXPORTER_USER, "subjectaccessreviews");
    assert!(
        reviews_while_cached(elapsed, TOKEN_TTL).contains(&token_reviews),
        "{token_reviews} TokenReviews for 1,000 scrapes in {elapsed:?}"
    );
    assert!(
        reviews_while_cached(elapsed, ALLOWED_TTL).contains(&access_reviews),
        "{access_reviews} SubjectAccessReviews for 1,000 scrapes in {elapsed:?}"
    );
    eprintln!(
        "cached: 1,000 scrapes in {elapsed:.1?}, {token_reviews} TokenReview, \
         {access_reviews} SubjectAccessReview"
    );

    let uid = bed
        .plane
        .service_account(&bed.admin, MONITORING, "expiring")
        .await;
    bind_reader(&bed.admin, MONITORING, "expiring").await;

    // Credentials accepted before whose cache entry ran out have a budget of their own, and
    // it is bounded too: a token asked for from four connections at once, as fast as they
    // are answered, is reviewed at most KNOWN_REVIEWS_PER_SECOND times a second after a
    // burst of as many; the rest get 429.
    let exp = unix_seconds() + 2;
    let known = bed.plane.forge_token(MONITORING, "expiring", &uid, exp);
    assert_eq!(status(&client, &url, Some(&known)).await, 200);
    // The exporter caches the token until `exp`; the API server takes it for a minute more.
    let ran_out = UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_millis(500);
    while SystemTime::now() < ran_out {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let hammering: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, known) = (client.clone(), url.clone(), known.clone());
            tokio::spawn(async move {
                let mut answers = std::collections::BTreeMap::<u16, usize>::new();
                while started.elapsed() < Duration::from_secs(2) {
                    let code = status(&client, &url, Some(&known)).await.as_u16();
                    *answers.entry(code).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for task in hammering {
        for (code, n) in task.await.expect("hammering task") {
            *answers.entry(code).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Read once the last reviews' audit events are surely written, as below.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Its first review, before its entry ran out, came from the budget of new credentials.
    let reviewed = reviewed_tokens(&bed.plane)[&known] - 1;
    let known_rate = f64::from(KNOWN_REVIEWS_PER_SECOND);
    assert!(
        reviewed as f64 <= known_rate + known_rate * seconds,
        "{reviewed} TokenReviews of one known token in {seconds:.2} s (answers {answers:?})"
    );
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        [200, 429],
        "the budget was reached: {answers:?}"
    );
    eprintln!(
        "known: {} requests in {seconds:.1} s, answers {answers:?}, {reviewed} TokenReviews \
         (the budget allows {:.0})",
        answers.values().sum::<usize>(),
        known_rate + known_rate * seconds
    );

    let expiring_token = bed
        .plane
        .forge_token(MONITORING, "expiring", &uid, unix_seconds() + 3);
    assert_eq!(status(&client, &url, Some(&expiring_token)).await, 200);
    let before = reviewed_tokens(&bed.plane);

    // 10,000 distinct made-up tokens from 32 connections, while Prometheus keeps scraping.
    let started = Instant::now();
    let flood: Vec<_> = (0..32)
        .map(|worker| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut answers = std::collections::BTreeMap::<u16, usize>::new();
                for i in 0..(10_000 / 32 + 1) {
                    let token = format!("{MADE_UP}{worker}-{i}-{}", unix_seconds());
                    let code = status(&client, &url, Some(&token)).await.as_u16();
                    *answers.entry(code).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    let scraper = {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..50 {
                codes.push(status(&client, &url, Some(&token)).await.as_u16());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            codes
        })
    };
    // A token accepted before the flood whose cache entry runs out during it (it expires
    // in 3 s; the API server takes it for a minute more): its review has a budget the
    // made-up tokens never reach.
    let expiring = {
        let (client, url) = (client.clone(), url.clone());
        let token = expiring_token.clone();
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..16 {
                codes.push(status(&client, &url, Some(&token)).await.as_u16());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            codes
        })
    };
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for worker in flood {
        for (code, n) in worker.await.expect("flood worker") {
            *answers.entry(code).or_default() += n;
        }
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    let scraped = scraper.await.expect("scraper");
    let renewed = expiring.await.expect("expiring scraper");
    let elapsed = started.elapsed();
    assert!(scraped.iter().all(|c| *c == 200), "{scraped:?}");
    assert!(renewed.iter().all(|c| *c == 200), "{renewed:?}");
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "{answers:?}"
    );
    // Each budget on its own, as the API server's audit log counts the reviews by token.
    // Made-up tokens get the default 10 a second after a burst of 10, while they are sent.
    // The two known ones (Prometheus', if its minute ran out, and the expiring one) get 5 a
    // second after a burst of 5, and the expiring one was reviewed again once its entry ran
    // out.
    let seconds = elapsed.as_secs_f64();
    // Read once the last reviews' audit events are surely written: no review is sent after
    // the last request was answered.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = reviewed_tokens(&bed.plane);
    let during = |token: &str| {
        after.get(token).copied().unwrap_or_default()
            - before.get(token).copied().unwrap_or_default()
    };
    let made_up: usize = after
        .iter()
        .filter(|(token, _)| token.starts_with(MADE_UP))
        .map(|(_, n)| n)
        .sum();
    let (prometheus, renewals) = (during(&token), during(&expiring_token));
    assert!(
        made_up as f64 <= NEW_REVIEWS_PER_SECOND + NEW_REVIEWS_PER_SECOND * flood_seconds,
        "{made_up} TokenReviews of made-up tokens in {flood_seconds:.2} s (answers {answers:?})"
    );
    assert!(made_up > 0, "no made-up token was reviewed: {answers:?}");
    assert!(
        (prometheus + renewals) as f64 <= known_rate + known_rate * seconds,
        "{prometheus} TokenReviews of Prometheus' token and {renewals} of the expiring one \
         in {elapsed:?}"
    );
    assert!(renewals >= 1, "the expiring token was never reviewed again");
    let scrape = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    // The exporter's own count of refused tokens (only made-up ones are refused here): no
    // more than the API server saw.
    let refused = common::Scrape(scrape)
        .value(
            "kubevirt_leader_exporter_auth_reviews_total",
            &[("kind", "tokenreview"), ("result", "unauthenticated")],
        )
        .expect("a count of refused tokens");
    assert!(refused > 0.0 && refused <= made_up as f64, "{refused}");
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);
    eprintln!(
        "flood: {} requests in {flood_seconds:.1} s, answers {answers:?}, {made_up} TokenReviews \
         of made-up tokens (their budget allows {:.0}); in {seconds:.1} s {renewals} of the \
         expiring token and {prometheus} of Prometheus' (their budget allows {:.0})",
        answers.values().sum::<usize>(),
        NEW_REVIEWS_PER_SECOND + NEW_REVIEWS_PER_SECOND * flood_seconds,
        known_rate + known_rate * seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_at_once_share_one_review_and_other_methods_cost_none() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start_audited(&assets, &[], AUDIT_REVIEWS).await;
    bed.until_ready().await;
    let client = bed.client();
    let prometheus = bed.reader_token(MONITORING, PROMETHEUS, true).await;
    let stranger = bed.reader_token(MONITORING, "stranger", false).await;
    // Any method but GET and HEAD is answered before credentials are looked at, with or
    // without them, on every path.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "A1", "A2"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for path in PROTECTED {
            for token in [None, Some(&prometheus), Some(&stranger)] {
                let mut request = client.request(method.clone(), bed.url(path));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let answer = request.send().await.expect("request");
                assert_eq!(answer.status(), 405, "{method} {path}");
                let allow = answer.headers().get("allow").map(|v| v.to_str().ok());
                assert_eq!(allow, Some(Some("GET, HEAD")), "{method} {path}");
            }
        }
    }
    // Read once the last reviews' audit events are surely written.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(bed.plane.creates_by(EXPORTER_USER, "tokenreviews"), 0);
    assert_eq!(
        bed.plane.creates_by(EXPORTER_USER, "subjectaccessreviews"),
        0
    );

    // 16 requests at once, each on a connection of its own opened beforehand, with a token
    // never seen: one review of each kind between them, for the reader and for the stranger.
    for (token, code) in [(&prometheus, 200), (&stranger, 403)] {
        let mut connections = Vec::new();
        for _ in 0..16 {
            let connection = bed.client();
            assert_eq!(status(&connection, &bed.url("/livez"), None).await, 200);
            connections.push(connection);
        }
        let url = bed.url("/metrics");
        let answers = futures::future::join_all(
            connections
                .iter()
                .map(|connection| status(connection, &url, Some(token))),
        )
        .await;
        assert!(answers.iter().all(|a| *a == code), "{answers:?}");
        let head = client.head(&url).bearer_auth(token).send().await;
        assert_eq!(
            head.expect("HEAD").status(),
            code,
            "HEAD is reviewed as GET"
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = reviewed_tokens(&bed.plane);
    assert_eq!(tokens.get(&prometheus), Some(&1), "{:?}", tokens.values());
    assert_eq!(tokens.get(&stranger), Some(&1), "{:?}", tokens.values());
    let access = reviewed_access(&bed.plane);
    assert_eq!(access.len(), 2, "{access:?}");
    assert!(
        access
            .iter()
            .all(|(_, path, verb)| path == "/metrics" && verb == "get")
    );
}

/// A flood of made-up tokens, of valid tokens RBAC does not let in (more than the caches
/// hold) and of made-up methods, for two minutes, while two Prometheus scrape at their
/// usual intervals with their cache entries running out between scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_flood_never_locks_out_scrapers_whose_entries_run_out_between_scrapes() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    const ENTRIES: usize = 16;
    // Lifetimes shorter than the scrape intervals, so that every scrape needs reviews anew;
    // caches small enough for the flood to fill them many times over.
    let args = [
        &format!("--auth-cache-entries={ENTRIES}") as &str,
        "--auth-token-cache-ttl=20s",
        "--auth-allowed-cache-ttl=20s",
        "--auth-denied-cache-ttl=5s",
    ];
    let bed = Secured::start_audited(&assets, &args, AUDIT_REVIEWS).await;
    bed.until_ready().await;
    let client = bed.client();
    let url = bed.url("/metrics");
    let every_30s = bed.reader_token(MONITORING, "prometheus-30s", true).await;
    let every_minute = bed.reader_token(MONITORING, "prometheus-1m", true).await;
    let mut strangers = Vec::new();
    for i in 0..24 {
        let name = format!("stranger-{i}");
        strangers.push(bed.reader_token(MONITORING, &name, false).await);
        strangers.push(bed.plane.token_for(&bed.admin, MONITORING, &name).await);
    }
    // Both are let in once before the flood, as a running Prometheus is.
    assert_eq!(status(&client, &url, Some(&every_30s)).await, 200);
    assert_eq!(status(&client, &url, Some(&every_minute)).await, 200);

    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let flooder = |worker: usize, kind: Flood| {
        let (client, bed_url, strangers, stopped) = (
            bed.client(),
            bed.url(""),
            strangers.clone(),
            stopped.clone(),
        );
        tokio::spawn(async move {
            let mut answers = std::collections::BTreeMap::<u16, usize>::new();
            let mut i = 0;
            while !*stopped.borrow() {
                i += 1;
                let stranger = &strangers[(worker * 7 + i) % strangers.len()];
                let path = PROTECTED[i % PROTECTED.len()];
                let request = match kind {
                    Flood::MadeUpTokens => client
                        .get(format!("{bed_url}{path}"))
                        .bearer_auth(format!("{MADE_UP}{worker}-{i}")),
                    Flood::Strangers => {
                        client.get(format!("{bed_url}{path}")).bearer_auth(stranger)
                    }
                    Flood::MadeUpMethods => {
                        let method = reqwest::Method::from_bytes(format!("A{i}").as_bytes())
                            .expect("method");
                        client
                            .request(method, format!("{bed_url}{path}"))
                            .bearer_auth(stranger)
                    }
                };
                let code = request.send().await.map_or(0, |r| r.status().as_u16());
                *answers.entry(code).or_default() += 1;
                // Paced, so that the machine's other tests keep running: still many times
                // what the review budget takes.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        })
    };
    let floods: Vec<_> = [
        (0, Flood::MadeUpTokens),
        (1, Flood::MadeUpTokens),
        (2, Flood::Strangers),
        (3, Flood::Strangers),
        (4, Flood::MadeUpMethods),
    ]
    .into_iter()
    .map(|(worker, kind)| (kind, flooder(worker, kind)))
    .collect();
    let scraper = |token: String, interval: Duration, scrapes: u32| {
        let (client, url) = (bed.client(), url.clone());
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for k in 1..=scrapes {
                tokio::time::sleep_until((started + interval * k).into()).await;
                codes.push(status(&client, &url, Some(&token)).await.as_u16());
            }
            codes
        })
    };
    let scraped_30s = scraper(every_30s.clone(), Duration::from_secs(30), 4);
    let scraped_1m = scraper(every_minute.clone(), Duration::from_secs(60), 2);
    let (scraped_30s, scraped_1m) = (
        scraped_30s.await.expect("scraper"),
        scraped_1m.await.expect("scraper"),
    );
    stop.send_replace(true);
    let mut answers = HashMap::<Flood, std::collections::BTreeMap<u16, usize>>::new();
    for (kind, flood) in floods {
        for (code, n) in flood.await.expect("flood") {
            *answers.entry(kind).or_default().entry(code).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(scraped_30s, [200; 4], "every 30 s: {answers:?}");
    assert_eq!(scraped_1m, [200; 2], "every minute: {answers:?}");
    let codes = |kind: Flood| answers[&kind].keys().copied().collect::<Vec<_>>();
    assert_eq!(codes(Flood::MadeUpTokens), [401, 429], "{answers:?}");
    assert_eq!(codes(Flood::Strangers), [403, 429], "{answers:?}");
    assert_eq!(codes(Flood::MadeUpMethods), [405], "{answers:?}");
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = reviewed_tokens(&bed.plane);
    let access = reviewed_access(&bed.plane);
    let scrapers = [every_30s.as_str(), every_minute.as_str()];
    let scraper_users = ["prometheus-30s", "prometheus-1m"]
        .map(|name| format!("system:serviceaccount:{MONITORING}:{name}"));
    // Each scrape found its entries run out: a review of each kind per scrape, no more.
    assert_eq!(tokens.get(&every_30s), Some(&5), "every 30 s");
    assert_eq!(tokens.get(&every_minute), Some(&3), "every minute");
    let access_of = |user: &str| access.iter().filter(|(u, _, _)| u == user).count();
    assert_eq!(access_of(&scraper_users[0]), 5, "every 30 s");
    assert_eq!(access_of(&scraper_users[1]), 3, "every minute");
    assert!(
        access.iter().all(|(_, _, verb)| verb == "get"),
        "only `get` is reviewed"
    );
    // The flood filled the caches over and over: more strangers' tokens accepted, and more
    // of their decisions denied, than a cache holds.
    let strangers_reviewed = strangers.iter().filter(|t| tokens.contains_key(*t)).count();
    let decisions: std::collections::HashSet<_> = access
        .iter()
        .filter(|(user, _, _)| !scraper_users.contains(user))
        .map(|(user, path, _)| (user, path))
        .collect();
    assert!(
        strangers_reviewed > ENTRIES,
        "{strangers_reviewed} strangers' tokens"
    );
    assert!(decisions.len() > ENTRIES, "{} decisions", decisions.len());
    // Each budget on its own: the scrapers' reviews, and everyone else's.
    let others = tokens
        .iter()
        .filter(|(token, _)| !scrapers.contains(&token.as_str()))
        .map(|(_, n)| n)
        .sum::<usize>()
        + access.len()
        - access_of(&scraper_users[0])
        - access_of(&scraper_users[1]);
    let new_budget = NEW_REVIEWS_PER_SECOND + NEW_REVIEWS_PER_SECOND * seconds;
    assert!(
        others as f64 <= new_budget,
        "{others} reviews of made-up tokens and strangers in {seconds:.0} s"
    );
    eprintln!(
        "long flood: {seconds:.0} s, answers {answers:?}; {others} reviews of made-up tokens \
         and strangers (their budget allows {new_budget:.0}), {strangers_reviewed} strangers' \
         tokens and {} of their decisions reviewed; scrapes every 30 s {scraped_30s:?}, every \
         minute {scraped_1m:?}",
        decisions.len()
    );
}

/// What a flood worker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Flood {
    MadeUpTokens,
    Strangers,
    MadeUpMethods,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_down_cached_readers_get_in_until_their_entry_expires() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    // The client CA read from the API server's own ConfigMap, as on OpenShift.
    let mut bed = Secured::start(&assets, &["--client-ca-from-cluster"]).await;
    bed.until_ready().await;
    let client = bed.client();
    let (uid, user) = bed.bound_prometheus().await;
    let other = bed.reader_token(MONITORING, "other", true).await;
    let url = bed.url("/metrics");
    let (cert, key) = bed
        .plane
        .client_certificate(&user, "system:serviceaccounts");
    let with_cert = https_client(&bed.serving_ca, Some((&cert, &key)));
    assert_eq!(status(&with_cert, &url, None).await, 200);

    // A token that expires soon, cached no longer than it lives: made just before it is
    // used. It proves something only if the first request with the API server down is
    // answered before it expires (a little before, for the exporter's clock); on a machine
    // too slow for that, the API server is started again and the next token lives twice as
    // long.
    let mut lifetime = 10;
    let (token, expires) = loop {
        let expires = unix_seconds() + lifetime;
        let token = bed.plane.forge_token(MONITORING, PROMETHEUS, &uid, expires);
        assert_eq!(status(&client, &url, Some(&token)).await, 200);
        bed.plane.kill_apiserver();
        let cached = status(&client, &url, Some(&token)).await;
        if common::unix_now() < expires as f64 - CLOCK_SLACK {
            assert_eq!(cached, 200, "cached");
            break (token, expires);
        }
        assert!(
            lifetime < TOKEN_TTL.as_secs(),
            "a request with the API server down took longer than the token cache's {TOKEN_TTL:?}"
        );
        eprintln!("the {lifetime} s token expired before it could be tried; again, longer");
        bed.plane.start_apiserver().await;
        lifetime = (lifetime * 2).min(TOKEN_TTL.as_secs());
    };
    // A certificate needs no review to authenticate, and its decision is cached.
    assert_eq!(status(&with_cert, &url, None).await, 200);
    assert_eq!(
        status(&client, &url, Some(&other)).await,
        500,
        "never reviewed"
    );
    assert_eq!(status(&client, &url, Some("made-up")).await, 500);
    // What went wrong stays in the exporter's log: callers not yet authenticated learn
    // nothing of the API server (its address, its errors).
    let answer = client
        .get(&url)
        .bearer_auth("made-up")
        .send()
        .await
        .expect("request");
    let body = answer.text().await.expect("body");
    assert_eq!(
        body,
        "Internal Server Error: the Kubernetes API server could not check the credentials\n"
    );
    assert_eq!(
        status(&client, &url, None).await,
        401,
        "no credentials, no API call"
    );
    // Answered before the token expires: let in; asked for a second after: 500, and once
    // refused, never let in again while the API server cannot be asked.
    let mut answers = Vec::new();
    loop {
        let sent = common::unix_now();
        let code = status(&client, &url, Some(&token)).await.as_u16();
        answers.push((sent, common::unix_now(), code));
        if sent > expires as f64 + 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let codes: Vec<_> = answers.iter().map(|(_, _, code)| *code).collect();
    for (_, answered, code) in &answers {
        if *answered < expires as f64 - CLOCK_SLACK {
            assert_eq!(*code, 200, "answered before the token expired: {codes:?}");
        }
    }
    assert_eq!(
        codes.last(),
        Some(&500),
        "asked for a second after the token expired: {codes:?}"
    );
    let first_refusal = codes.iter().position(|c| *c == 500).expect("a refusal");
    assert!(
        codes[first_refusal..].iter().all(|c| *c == 500),
        "{codes:?}"
    );
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);
}

/// A secured exporter that trusts the API server's client CA from its ConfigMap, ready, with
/// Prometheus' account bound to read it: the bed, that account's user name and `/metrics`.
async fn with_cluster_client_ca() -> Option<(Secured, String, String)> {
    let assets = envtest::assets()?;
    let bed = Secured::start(&assets, &["--client-ca-from-cluster"]).await;
    bed.until_ready().await;
    let (_, user) = bed.bound_prometheus().await;
    let url = bed.url("/metrics");
    Some((bed, user, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_the_api_server_publishes_later_is_trusted_without_a_restart() {
    let Some((bed, user, url)) = with_cluster_client_ca().await else {
        return;
    };
    let (ca, issuer) = envtest::new_ca("next client CA");
    let (cert, key) = envtest::client_certificate_by(&issuer, &user, "system:serviceaccounts");
    let next = https_client(&bed.serving_ca, Some((&cert, &key)));
    let refused = next.get(&url).send().await;
    assert!(
        refused.is_err(),
        "trusted before it is published: {refused:?}"
    );

    // As during a rotation: the ConfigMap holds the old CA and the new one.
    let (namespace, name, key) = CLUSTER_CLIENT_CA;
    let maps: Api<ConfigMap> = Api::namespaced(bed.admin.clone(), namespace);
    let map = maps.get(name).await.expect("client CA ConfigMap");
    let old = map.data.unwrap_or_default().remove(key).expect("client CA");
    let both = format!("{}\n{ca}", old.trim_end());
    let patch = serde_json::json!({ "data": { key: both } });
    maps.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("publish the next CA");

    let start = Instant::now();
    let answer = loop {
        match next.get(&url).send().await {
            Ok(response) => break response.status(),
            Err(error) => assert!(
                start.elapsed() < Duration::from_secs(60),
                "the published CA is never trusted: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answer, 200);
    let (cert, key) = bed
        .plane
        .client_certificate(&user, "system:serviceaccounts");
    let current = https_client(&bed.serving_ca, Some((&cert, &key)));
    assert_eq!(status(&current, &url, None).await, 200, "the old CA still");
}

/// The client CA from the API server's ConfigMap stays in service while the ConfigMap holds
/// no usable CA, and a CA published after that replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_emptied_or_deleted_cluster_client_ca_leaves_the_last_good_one_in_service() {
    let Some((bed, user, url)) = with_cluster_client_ca().await else {
        return;
    };
    let (cert, key) = bed
        .plane
        .client_certificate(&user, "system:serviceaccounts");
    let with_cert = || with_certificate(&bed.serving_ca, (&cert, &key), &url);
    let answer = with_cert().await;
    assert!(matches!(answer, Ok(StatusCode::OK)), "{answer:?}");

    let (namespace, name, ca_key) = CLUSTER_CLIENT_CA;
    let maps: Api<ConfigMap> = Api::namespaced(bed.admin.clone(), namespace);
    let held = |map: &ConfigMap| map.data.as_ref().and_then(|data| data.get(ca_key)).cloned();
    let write = |data: serde_json::Value| {
        let maps = maps.clone();
        async move {
            maps.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "data": data })),
            )
            .await
            .expect("patch the client CA ConfigMap")
        }
    };
    let kept = "keeping the previous client CA";

    // Not PEM. The API server's own controller, which keeps this ConfigMap, cannot read it
    // either and leaves it so.
    let warned = bed.exporter.log_lines(&[kept]).len();
    write(json!({ ca_key: "garbage" })).await;
    logged(&bed.exporter, kept, warned + 1).await;
    let answer = with_cert().await;
    assert!(
        matches!(answer, Ok(StatusCode::OK)),
        "after garbage: {answer:?}"
    );
    let map = maps.get(name).await.expect("ConfigMap");
    assert_eq!(held(&map).as_deref(), Some("garbage"));

    // Emptied. The controller would write its CA back at once; a key it cannot read (its
    // request-header CA, which the exporter does not use) keeps it off the ConfigMap.
    let warned = bed.exporter.log_lines(&[kept]).len();
    write(json!({ ca_key: "", HOLD_OFF_KEY: "garbage" })).await;
    logged(&bed.exporter, kept, warned + 1).await;
    let answer = with_cert().await;
    assert!(
        matches!(answer, Ok(StatusCode::OK)),
        "after emptying: {answer:?}"
    );
    let map = maps.get(name).await.expect("ConfigMap");
    assert_eq!(held(&map).as_deref(), Some(""), "written back");

    // Deleted. The controller would create it again at once: a quota of no ConfigMaps in
    // its namespace keeps it from doing so.
    let quotas: Api<ResourceQuota> = Api::namespaced(bed.admin.clone(), namespace);
    hold_off_configmaps(&quotas, &maps).await;
    maps.delete(name, &DeleteParams::default())
        .await
        .expect("delete the client CA ConfigMap");
    logged(
        &bed.exporter,
        "the ConfigMap is gone; keeping the client CA",
        1,
    )
    .await;
    let answer = with_cert().await;
    assert!(
        matches!(answer, Ok(StatusCode::OK)),
        "after deleting: {answer:?}"
    );
    let gone = maps.get_opt(name).await.expect("get ConfigMap");
    assert!(gone.is_none(), "created again: {gone:?}");
    let loaded = "loaded a new client CA";
    assert_eq!(bed.exporter.log_lines(&[loaded]), Vec::<String>::new());

    // Without the quota, the controller creates the ConfigMap again with its CA. A new CA
    // then replaces that one (the controller kept off as before, or it would add its CA
    // back): certificates from the new CA get in and those from the old one no longer, so
    // the exporter followed the ConfigMap all along.
    quotas
        .delete(QUOTA, &DeleteParams::default())
        .await
        .expect("delete the quota");
    let start = Instant::now();
    while maps.get_opt(name).await.expect("get ConfigMap").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the API server never created {namespace}/{name} again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ca, issuer) = envtest::new_ca("replacing client CA");
    write(json!({ ca_key: ca, HOLD_OFF_KEY: "garbage" })).await;
    let next = envtest::client_certificate_by(&issuer, &user, "system:serviceaccounts");
    let start = Instant::now();
    let answer = loop {
        match with_certificate(&bed.serving_ca, (&next.0, &next.1), &url).await {
            Ok(status) => break status,
            Err(error) => assert!(
                start.elapsed() < Duration::from_secs(60),
                "the new CA is never trusted: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answer, 200);
    let refused = with_cert().await;
    assert!(
        refused.is_err(),
        "the replaced CA is still trusted: {refused:?}"
    );
    let map = maps.get(name).await.expect("ConfigMap");
    assert_eq!(held(&map), Some(ca), "the ConfigMap changed under the test");
}

/// A key of the API server's authentication ConfigMap that the exporter does not read; when
/// it does not parse, the API server's controller of the ConfigMap leaves it alone.
const HOLD_OFF_KEY: &str = "requestheader-client-ca-file";
/// The quota that keeps ConfigMaps from being created in the API server's namespace.
const QUOTA: &str = "no-configmaps";

/// Forbids creating ConfigMaps in `quotas`' namespace with a quota of none. No quota
/// controller runs here, so the test writes the quota's status itself; returns once a
/// ConfigMap created through `maps` is refused.
async fn hold_off_configmaps(quotas: &Api<ResourceQuota>, maps: &Api<ConfigMap>) {
    let quota = ResourceQuota {
        metadata: ObjectMeta {
            name: Some(QUOTA.into()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some([("configmaps".to_owned(), Quantity("0".into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create the quota");
    let status =
        json!({ "status": { "hard": { "configmaps": "0" }, "used": { "configmaps": "0" } } });
    quotas
        .patch_status(QUOTA, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("quota status");
    let probe = ConfigMap {
        metadata: ObjectMeta {
            name: Some("quota-probe".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let start = Instant::now();
    loop {
        match maps.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("quota") => return,
            Ok(_) => {
                maps.delete("quota-probe", &DeleteParams::default())
                    .await
                    .expect("delete the probe");
            }
            Err(error) => panic!("creating a probe ConfigMap: {error}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the quota never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `url` answers on a new connection (the certificate is verified in the handshake)
/// with the client certificate and key `identity`.
async fn with_certificate(
    serving_ca: &str,
    (cert, key): (&str, &str),
    url: &str,
) -> reqwest::Result<StatusCode> {
    let client = https_client(serving_ca, Some((cert, key)));
    client.get(url).send().await.map(|r| r.status())
}

/// Waits until the exporter has logged `message` `times` times.
async fn logged(exporter: &ExporterProcess, message: &str, times: usize) {
    let start = Instant::now();
    while exporter.log_lines(&[message]).len() < times {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the exporter never logged {message:?} {times} times:\n{}",
            exporter.log_lines(&[]).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
