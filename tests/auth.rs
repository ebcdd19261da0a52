//! Only readers that RBAC lets in get the exporter's pages: bearer tokens checked with the
//! real API server's TokenReview, client certificates from its client CA, SubjectAccessReviews
//! of the path; what that costs the API server (counted in its audit log) under a flood of
//! made-up tokens; and what a secured exporter answers while the API server is down.

mod common;
mod envtest;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{
    api::{
        core::v1::ConfigMap,
        rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use kubevirt_leader_exporter::{
    client_ca::CLUSTER_CLIENT_CA,
    plugin::status::{Credentials, StatusError, read_status},
};
use reqwest::StatusCode;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use common::temp_dir;
use envtest::{
    ADMIN_TOKEN, ControlPlane, EXPORTER_TOKEN, EXPORTER_USER, ExporterProcess, ServingCert,
};

/// The shipped ClusterRole that lets Prometheus read the exporter.
const READER_ROLE: &str = "deploy/metrics-reader/clusterrole.yaml";
const PROTECTED: [&str; 3] = ["/metrics", "/", "/status.json"];
/// The Prometheus service account the shipped binding names.
const MONITORING: &str = "monitoring";
const PROMETHEUS: &str = "prometheus-k8s";

struct Secured {
    plane: ControlPlane,
    admin: Client,
    exporter: ExporterProcess,
    /// The CA of the exporter's serving certificate.
    serving_ca: String,
    _dir: PathBuf,
}

impl Secured {
    async fn start(assets: &Path, extra: &[&str]) -> Self {
        let plane = ControlPlane::start(assets).await;
        let admin = plane.client(ADMIN_TOKEN).await;
        plane.grant_exporter_rbac(&admin).await;
        if extra.contains(&"--client-ca-from-cluster") {
            read_cluster_client_ca(&admin).await;
        }
        let dir = temp_dir("auth");
        let serving = ServingCert::new(&dir);
        let serving_ca = std::fs::read_to_string(&serving.ca).expect("CA");
        let mut args = serving.exporter_args();
        if !extra.contains(&"--client-ca-from-cluster") {
            args.push(format!("--client-ca-file={}", plane.ca_file().display()));
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let exporter = ExporterProcess::start(&plane.kubeconfig_file(EXPORTER_TOKEN), &args);
        Self {
            plane,
            admin,
            exporter,
            serving_ca,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.exporter.addr)
    }

    fn client(&self) -> reqwest::Client {
        https_client(&self.serving_ca, None)
    }

    /// A ServiceAccount's token, bound to the shipped reader ClusterRole when `bound`.
    async fn reader_token(&self, ns: &str, name: &str, bound: bool) -> String {
        self.plane.service_account(&self.admin, ns, name).await;
        if bound {
            bind_reader(&self.admin, ns, name).await;
        }
        self.plane.token_for(&self.admin, ns, name).await
    }

    /// Creates Prometheus' ServiceAccount, bound to the shipped reader ClusterRole; its UID
    /// and its user name.
    async fn bound_prometheus(&self) -> (String, String) {
        let uid = self
            .plane
            .service_account(&self.admin, MONITORING, PROMETHEUS)
            .await;
        bind_reader(&self.admin, MONITORING, PROMETHEUS).await;
        (
            uid,
            format!("system:serviceaccount:{MONITORING}:{PROMETHEUS}"),
        )
    }

    async fn until_ready(&self) {
        let client = self.client();
        let start = Instant::now();
        loop {
            let status = client
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status());
            if status.as_ref().is_ok_and(|s| *s == StatusCode::OK) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never ready: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Lets the exporter's user read the API server's client CA, through the Role the API server
/// keeps for that, as the openshift-cnv install binds it.
async fn read_cluster_client_ca(admin: &Client) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("exporter-reads-client-ca".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "extension-apiserver-authentication-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: EXPORTER_USER.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), "kube-system")
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
}

/// An HTTPS client that verifies the server with `ca` and presents `identity` (certificate
/// and key PEM) when given.
fn https_client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca.as_bytes()).flatten());
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let (certs, key) = self::identity(cert, key);
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A client certificate chain and key from their PEM text.
fn identity(cert: &str, key: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    (
        certs,
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
    )
}

/// Creates the shipped reader ClusterRole (once) and binds the ServiceAccount `ns/name` to it.
async fn bind_reader(admin: &Client, ns: &str, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(READER_ROLE);
    let text = std::fs::read_to_string(&path).expect("reader role");
    let role: ClusterRole = serde_saphyr::from_str(
        text.split("\n---")
            .find(|d| d.contains("kind: ClusterRole\n"))
            .expect("a ClusterRole"),
    )
    .expect("ClusterRole");
    let role_name = role.metadata.name.clone().expect("name");
    let _ = Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{role_name}-{ns}-{name}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
}

async fn status(client: &reqwest::Client, url: &str, token: Option<&str>) -> StatusCode {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request").status()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
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
        .forge_token(MONITORING, "late", &uid, unix_now() - 3600);
    assert_eq!(
        status(&client, &bed.url("/metrics"), Some(&expired)).await,
        401
    );
    // The same forgery, still valid: proves the API server takes such tokens at all.
    let valid = bed
        .plane
        .forge_token(MONITORING, "late", &uid, unix_now() + 600);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_cached_and_a_flood_of_made_up_tokens_is_bounded() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start(&assets, &[]).await;
    bed.until_ready().await;
    let client = bed.client();
    let token = bed.reader_token(MONITORING, PROMETHEUS, true).await;
    let url = bed.url("/metrics");
    for _ in 0..1000 {
        assert_eq!(status(&client, &url, Some(&token)).await, 200);
    }
    let token_reviews = bed.plane.creates_by(EXPORTER_USER, "tokenreviews");
    let access_reviews = bed.plane.creates_by(EXPORTER_USER, "subjectaccessreviews");
    assert!(
        (1..=2).contains(&token_reviews),
        "{token_reviews} TokenReviews"
    );
    assert!(
        (1..=2).contains(&access_reviews),
        "{access_reviews} SubjectAccessReviews"
    );

    let uid = bed
        .plane
        .service_account(&bed.admin, MONITORING, "expiring")
        .await;
    bind_reader(&bed.admin, MONITORING, "expiring").await;
    let expiring_token = bed
        .plane
        .forge_token(MONITORING, "expiring", &uid, unix_now() + 3);
    assert_eq!(status(&client, &url, Some(&expiring_token)).await, 200);
    let token_reviews = bed.plane.creates_by(EXPORTER_USER, "tokenreviews");

    // 10,000 distinct made-up tokens from 32 connections, while Prometheus keeps scraping.
    let started = Instant::now();
    let flood: Vec<_> = (0..32)
        .map(|worker| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut answers = std::collections::BTreeMap::<u16, usize>::new();
                for i in 0..(10_000 / 32 + 1) {
                    let token = format!("made-up-{worker}-{i}-{}", unix_now());
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
    let elapsed = started.elapsed();
    let scraped = scraper.await.expect("scraper");
    assert!(scraped.iter().all(|c| *c == 200), "{scraped:?}");
    let renewed = expiring.await.expect("expiring scraper");
    assert!(renewed.iter().all(|c| *c == 200), "{renewed:?}");
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "{answers:?}"
    );
    // The default limit: 10 a second after a burst of 10 for tokens never seen, and 5 a
    // second after a burst of 5 for the expiring one, as the API server's audit log counts
    // them; the exporter's own count shows the made-up ones (all refused) alone.
    let seconds = elapsed.as_secs_f64().ceil() as usize;
    let sent = bed.plane.creates_by(EXPORTER_USER, "tokenreviews") - token_reviews;
    assert!(
        sent <= 10 + 10 * seconds + 5 + 5 * seconds,
        "{sent} TokenReviews in {elapsed:?} (answers {answers:?})"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let scrape = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let refused = common::Scrape(scrape)
        .value(
            "kubevirt_leader_exporter_auth_reviews_total",
            &[("kind", "tokenreview"), ("result", "unauthenticated")],
        )
        .expect("a count of refused tokens");
    assert!(
        refused > 0.0 && refused <= (10 + 10 * seconds) as f64,
        "{refused}"
    );
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);
    eprintln!(
        "flood: {} requests in {elapsed:.1?}, answers {answers:?}, {sent} TokenReviews ({:.1}/s)",
        answers.values().sum::<usize>(),
        sent as f64 / elapsed.as_secs_f64()
    );
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
    // A token that expires in 20 s: cached no longer than that.
    let expires = unix_now() + 20;
    let token = bed.plane.forge_token(MONITORING, PROMETHEUS, &uid, expires);
    let other = bed.reader_token(MONITORING, "other", true).await;
    let url = bed.url("/metrics");
    assert_eq!(status(&client, &url, Some(&token)).await, 200);
    let (cert, key) = bed
        .plane
        .client_certificate(&user, "system:serviceaccounts");
    let with_cert = https_client(&bed.serving_ca, Some((&cert, &key)));
    assert_eq!(status(&with_cert, &url, None).await, 200);

    bed.plane.kill_apiserver();
    assert_eq!(status(&client, &url, Some(&token)).await, 200, "cached");
    // A certificate needs no review to authenticate, and its decision is cached.
    assert_eq!(status(&with_cert, &url, None).await, 200);
    assert_eq!(
        status(&client, &url, Some(&other)).await,
        500,
        "never reviewed"
    );
    assert_eq!(status(&client, &url, Some("made-up")).await, 500);
    assert_eq!(
        status(&client, &url, None).await,
        401,
        "no credentials, no API call"
    );
    let mut codes = Vec::new();
    while unix_now() <= expires + 1 {
        codes.push(status(&client, &url, Some(&token)).await.as_u16());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(codes.first(), Some(&200), "{codes:?}");
    assert_eq!(codes.last(), Some(&500), "{codes:?}");
    // Once refused, never let in again while the API server cannot be asked.
    let first_refusal = codes.iter().position(|c| *c == 500).expect("a refusal");
    assert!(
        codes[first_refusal..].iter().all(|c| *c == 500),
        "{codes:?}"
    );
    assert_eq!(status(&client, &bed.url("/livez"), None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_the_api_server_publishes_later_is_trusted_without_a_restart() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start(&assets, &["--client-ca-from-cluster"]).await;
    bed.until_ready().await;
    let (_, user) = bed.bound_prometheus().await;
    let url = bed.url("/metrics");
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

/// The plugin's `status` shows the exporter what the user's kubeconfig holds: here a client
/// certificate, over the connection a port-forward would give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_shows_the_exporter_the_users_client_certificate() {
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = Secured::start(&assets, &[]).await;
    bed.until_ready().await;
    let (_, user) = bed.bound_prometheus().await;
    let addr = bed.exporter.addr;
    let connect = || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| StatusError::Http(e.to_string()))
    };
    let with = |(cert, key): (String, String)| Credentials {
        token: None,
        identity: Some(identity(&cert, &key)),
    };
    let reader = with(
        bed.plane
            .client_certificate(&user, "system:serviceaccounts"),
    );
    let status = read_status(connect, &reader).await.expect("status");
    assert!(status["components"].is_array(), "{status}");

    let someone = with(bed.plane.client_certificate("someone-else", "people"));
    let refused = read_status(connect, &someone).await;
    assert!(
        matches!(refused, Err(StatusError::Forbidden)),
        "{refused:?}"
    );
    let nobody = read_status(connect, &Credentials::default()).await;
    assert!(
        matches!(nobody, Err(StatusError::Unauthorized)),
        "{nobody:?}"
    );
    let (_, issuer) = envtest::new_ca("not the cluster's");
    let foreign = with(envtest::client_certificate_by(&issuer, &user, "people"));
    let refused = read_status(connect, &foreign).await;
    assert!(
        matches!(&refused, Err(StatusError::Http(e)) if e.contains("refused the TLS handshake")),
        "{refused:?}"
    );
}
