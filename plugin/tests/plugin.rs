//! The kubectl plugin as people run it: a real `kubectl` finds `kubectl-kubevirt_leader` on
//! the PATH and hands it the command line (`kubectl kubevirt-leader ...`), with the user's
//! kubeconfig from KUBECONFIG, against a real kube-apiserver. `status` through a port-forward
//! needs a kubelet: tests/node.rs runs it on a real node.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/envtest/mod.rs"]
mod envtest;

use std::{path::Path, process::Command};

use envtest::{ADMIN_TOKEN, ControlPlane, elector_assets};
use serde_json::Value;

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";

/// `kubectl` with the plugin's folder first on the PATH, as the user with `kubeconfig`.
fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> std::process::Output {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-kubevirt_leader"));
    let dir = plugin.parent().expect("the plugin's folder");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("kubectl");
    command.args(args).env("PATH", path);
    match kubeconfig {
        Some(file) => command.env("KUBECONFIG", file),
        None => command.env_remove("KUBECONFIG"),
    };
    command.output().expect("kubectl must be installed")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn kubectl_finds_the_plugin_and_it_says_what_it_is() {
    let list = kubectl(None, &["plugin", "list"]);
    assert!(
        text(&list).contains("kubectl-kubevirt_leader"),
        "{}",
        text(&list)
    );
    let help = kubectl(None, &["kubevirt-leader", "--help"]);
    assert!(help.status.success(), "{}", text(&help));
    let help = text(&help);
    for command in ["diagnose", "status", "version"] {
        assert!(help.contains(command), "{help}");
    }
    assert!(help.contains("Usage: kubectl kubevirt-leader"), "{help}");
    let version = kubectl(None, &["kubevirt-leader", "version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kubectl-kubevirt_leader {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_exporter_has_no_diagnose_and_names_the_plugin() {
    let out = Command::new(envtest::exporter_binary())
        .args(["diagnose", "--component=virt-operator"])
        .output()
        .expect("run the exporter");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("kubectl kubevirt-leader diagnose"),
        "{}",
        text(&out)
    );
    let help = Command::new(envtest::exporter_binary())
        .arg("--help")
        .output()
        .expect("run the exporter");
    assert!(!text(&help).contains("diagnose"), "{}", text(&help));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_kubevirt_leader_diagnose_judges_a_real_leader_with_the_users_kubeconfig() {
    let Some(assets) = elector_assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let cluster = plane.kubevirt(NS, &[A]).await;
    let elector = plane.elector(NS, "virt-operator", A, &[]);
    elector.until_leading().await;
    let kubeconfig = plane.kubeconfig_file(ADMIN_TOKEN);
    let out = kubectl(
        Some(&kubeconfig),
        &[
            "kubevirt-leader",
            "diagnose",
            "--component=virt-operator",
            "--observe=3s",
            "--output=json",
        ],
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let finding = &report["components"][0];
    assert_eq!(finding["facts"]["component"], "virt-operator", "{report:#}");
    assert_eq!(finding["verdict"]["health"], "leader", "{report:#}");

    // `status` finds no exporter here, and says where it looked.
    let out = kubectl(Some(&kubeconfig), &["kubevirt-leader", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no running exporter pod in namespace kubevirt-leader-exporter"),
        "{}",
        text(&out)
    );
    drop(cluster);
}

/// The namespace and Deployment of the shipped installs.
const EXPORTER_NS: &str = "kubevirt-leader-exporter";

/// A certificate for `names` and its key, as DER and as PEM.
struct Cert {
    der: rustls::pki_types::CertificateDer<'static>,
    pem: String,
    key_pem: String,
}

fn certificate(names: &[&str]) -> Cert {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
    Cert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The exporter's end of a port-forward, in memory: HTTPS with `cert`, recording the
/// Authorization header of every request, and answering 401 to a request without one.
#[derive(Clone)]
struct RecordingExporter {
    config: std::sync::Arc<rustls::ServerConfig>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl RecordingExporter {
    fn new(cert: &Cert) -> Self {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .expect("server config");
        Self {
            config: std::sync::Arc::new(config),
            seen: std::sync::Arc::default(),
        }
    }

    /// A new connection to it, as the port-forward hands the plugin one.
    async fn connect(
        &self,
    ) -> Result<tokio::io::DuplexStream, kubectl_kubevirt_leader::status::StatusError> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let this = self.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(this.config.clone());
            let Ok(tls) = acceptor.accept(server).await else {
                return;
            };
            let seen = this.seen.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let header = request
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let known = header.is_some();
                seen.lock().expect("seen").push(header);
                async move {
                    let (code, body) = if known {
                        (200, r#"{"ready": true, "components": []}"#)
                    } else {
                        (401, "Unauthorized")
                    };
                    hyper::Response::builder()
                        .status(code)
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
        Ok(client)
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().expect("seen").clone()
    }
}

/// A kube configuration whose user has the bearer token `token`, as the API server accepts
/// it.
async fn kubeconfig_with_token(token: &str) -> kube::Config {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
         users: [{{name: u, user: {{token: '{token}'}}}}]\n"
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config")
}

#[tokio::test]
async fn an_endpoint_that_has_not_proven_it_is_the_exporter_gets_no_kubeconfig_token() {
    use kubectl_kubevirt_leader::status;
    let served = certificate(&["localhost"]);
    let exporter = RecordingExporter::new(&served);
    let config = kubeconfig_with_token("the-admins-own").await;
    let credentials = status::Credentials::of(&config, None)
        .await
        .expect("credentials");
    // Its certificate is published nowhere: whatever answers gets no token the API server
    // would accept, and the refusal says why none was sent.
    let nothing = status::Proof::default();
    let answer = status::read_status(|| exporter.connect(), &credentials, &nothing).await;
    assert_eq!(exporter.seen(), [None], "{answer:?}");
    let said = answer.expect_err("401").to_string();
    assert!(
        said.contains("401")
            && said.contains("kubeconfig's token was not sent")
            && said.contains("--token"),
        "{said}"
    );
    // Nor when the exporter published another certificate than the one shown.
    let other = certificate(&["localhost"]);
    let elsewhere = status::Proof::pinned(vec![other.der.clone()]);
    let answer = status::read_status(|| exporter.connect(), &credentials, &elsewhere).await;
    assert_eq!(exporter.seen(), [None, None], "{answer:?}");
    // The certificate the exporter published: the kubeconfig's token goes along.
    let published = status::Proof::pinned(vec![served.der.clone()]);
    let answer = status::read_status(|| exporter.connect(), &credentials, &published).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(
        exporter.seen().last(),
        Some(&Some("Bearer the-admins-own".to_owned()))
    );
    // A token given with --token goes where the user sends it, proven or not.
    let given = status::Credentials::of(&config, Some("given".into()))
        .await
        .expect("credentials");
    let answer = status::read_status(|| exporter.connect(), &given, &nothing).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(
        exporter.seen().last(),
        Some(&Some("Bearer given".to_owned()))
    );
}

#[tokio::test]
async fn an_exporter_certificate_from_a_trusted_ca_for_the_service_name_proves_it() {
    use kubectl_kubevirt_leader::status;
    let service = "kubevirt-leader-exporter.kubevirt-leader-exporter.svc";
    let (ca, issuer) = envtest::new_ca("cluster-services");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![service.to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    let served = Cert {
        der: leaf.der().clone(),
        pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    };
    let exporter = RecordingExporter::new(&served);
    let dir = common::temp_dir("exporter-ca");
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca).expect("write");
    let config = kubeconfig_with_token("the-admins-own").await;
    let credentials = status::Credentials::of(&config, None)
        .await
        .expect("credentials");
    let trusted = status::Proof::default()
        .or_ca_file(&ca_file, service)
        .expect("CA");
    let answer = status::read_status(|| exporter.connect(), &credentials, &trusted).await;
    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(exporter.seen(), [Some("Bearer the-admins-own".to_owned())]);
    // The same CA for another name: not the exporter's Service.
    let elsewhere = status::Proof::default()
        .or_ca_file(&ca_file, "someone-else.kubevirt-leader-exporter.svc")
        .expect("CA");
    let answer = status::read_status(|| exporter.connect(), &credentials, &elsewhere).await;
    assert_eq!(exporter.seen().last(), Some(&None), "{answer:?}");
    let said = answer.expect_err("401").to_string();
    assert!(said.contains("--exporter-ca-file"), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The certificate chain an HTTPS server at `addr` shows in a handshake.
async fn served_chain(
    addr: std::net::SocketAddr,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let config = kubevirt_leader_exporter::tls::unverified_client_config(None).expect("TLS");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")
        .to_vec()
}

/// The certificates in ConfigMap `name`'s `tls.crt`, once it exists.
async fn published(
    client: &kube::Client,
    name: &str,
) -> Option<(
    k8s_openapi::api::core::v1::ConfigMap,
    Vec<rustls::pki_types::CertificateDer<'static>>,
)> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), EXPORTER_NS);
    let map = api.get_opt(name).await.expect("get ConfigMap")?;
    let pem = map.data.as_ref()?.get("tls.crt")?.clone();
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    Some((map, certs))
}

/// Waits until ConfigMap `name` holds `cert` first, or fails saying what it held.
async fn until_published(
    client: &kube::Client,
    name: &str,
    cert: &rustls::pki_types::CertificateDer<'static>,
    what: &str,
) -> k8s_openapi::api::core::v1::ConfigMap {
    let start = std::time::Instant::now();
    loop {
        let found = published(client, name).await;
        if let Some((map, certs)) = &found
            && certs.first() == Some(cert)
        {
            return map.clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{what}: ConfigMap {EXPORTER_NS}/{name} never held the served certificate: {:?}",
            found.map(|(map, _)| map)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Writes `text` to `path` as a Secret volume swaps files in: a whole new file.
fn swap_in(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_publishes_the_certificate_it_serves_and_its_rotations() {
    use kubectl_kubevirt_leader::status;
    use kubevirt_leader_exporter::publish;
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    plane.grant_exporter_rbac(&admin).await;
    let cluster = envtest::Cluster {
        client: admin.clone(),
    };
    cluster.namespace(EXPORTER_NS).await;
    // The exporter's rights in its own namespace, as every install binds them to it.
    bind_shipped_role_to_exporter(&plane);
    let pod_name = "kubevirt-leader-exporter-5d8f9c7b6-x2x4q";
    cluster
        .pod_with(
            EXPORTER_NS,
            pod_name,
            &[("app.kubernetes.io/name", "kubevirt-leader-exporter")],
            false,
        )
        .await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(admin.clone(), EXPORTER_NS);
    let uid = pods
        .get(pod_name)
        .await
        .expect("pod")
        .metadata
        .uid
        .expect("uid");

    let dir = common::temp_dir("publish");
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    let first = certificate(&["127.0.0.1"]);
    swap_in(&key_file, &first.key_pem);
    swap_in(&cert_file, &first.pem);
    let (cert_arg, key_arg) = (
        format!("--tls-cert-file={}", cert_file.display()),
        format!("--tls-key-file={}", key_file.display()),
    );
    // As deploy/core's Deployment hands the pod its name, namespace and UID.
    let exporter = envtest::ExporterProcess::start_with_env(
        &plane.kubeconfig_file(envtest::EXPORTER_TOKEN),
        &["--auth=kubernetes", &cert_arg, &key_arg],
        &[
            (publish::POD_NAME_ENV, pod_name),
            (publish::POD_NAMESPACE_ENV, EXPORTER_NS),
            (publish::POD_UID_ENV, &uid),
        ],
    );
    common::install_crypto();
    let served = served_chain(exporter.addr).await;
    assert_eq!(served[0], first.der);
    let map = until_published(&admin, pod_name, &served[0], "at start").await;
    // Owned by the pod, so that Kubernetes removes it with the pod, and never holding up
    // the pod's deletion.
    let owners = map.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{map:?}");
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Pod", pod_name, uid.as_str())
    );
    assert_ne!(owners[0].block_owner_deletion, Some(true));
    let labels = map.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("kubevirt-leader-exporter"),
        "{map:?}"
    );

    // cert-manager or the service CA rotates the files: the new certificate is published
    // without anyone having connected since.
    let next = certificate(&["127.0.0.1"]);
    swap_in(&key_file, &next.key_pem);
    swap_in(&cert_file, &next.pem);
    until_published(&admin, pod_name, &next.der, "after the rotation").await;
    let served = served_chain(exporter.addr).await;
    assert_eq!(served[0], next.der);

    // What the plugin makes of it, through the API server: the certificate the pod
    // published proves the endpoint; a ConfigMap of another pod's (by UID) proves nothing.
    let pod = status::ExporterPod {
        name: pod_name.into(),
        uid: uid.clone(),
        port: 8080,
    };
    let proof = status::Proof::published(&admin, EXPORTER_NS, &pod);
    assert_eq!(proof.check(&served).await, Ok(()));
    let stale = certificate(&["127.0.0.1"]);
    let shown = proof.check(&[stale.der]).await;
    assert!(
        shown
            .as_ref()
            .is_err_and(|why| why.contains("another certificate")),
        "{shown:?}"
    );
    let impostor = status::ExporterPod {
        uid: "00000000-0000-0000-0000-000000000000".into(),
        ..pod
    };
    let proof = status::Proof::published(&admin, EXPORTER_NS, &impostor);
    let shown = proof.check(&served).await;
    assert!(
        shown.as_ref().is_err_and(|why| why.contains("is not pod")),
        "{shown:?}"
    );
    drop(exporter);
    let _ = std::fs::remove_dir_all(dir);
}

/// Binds the exporter's user to the Role every install grants it in its own namespace.
fn bind_shipped_role_to_exporter(plane: &ControlPlane) {
    let (ok, out) = plane.admin_kubectl(&["apply", "-f", "deploy/serving-cert/role.yaml"]);
    assert!(ok, "{out}");
    let (ok, out) = plane.admin_kubectl(&[
        "-n",
        EXPORTER_NS,
        "create",
        "rolebinding",
        "exporter-user-serving-cert",
        "--role=kubevirt-leader-exporter-serving-cert",
        &format!("--user={}", envtest::EXPORTER_USER),
    ]);
    assert!(ok, "{out}");
}

/// The shipped Deployment's selector and its pods' labels.
const EXPORTER_LABELS: [(&str, &str); 1] = [("app.kubernetes.io/name", "kubevirt-leader-exporter")];

fn labels(extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    EXPORTER_LABELS
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A controller owner reference to `kind` `name` with `uid`.
fn controller_ref(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod template with the exporter's labels and its `metrics` port.
fn exporter_template(extra: &[(&str, &str)]) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodTemplateSpec};
    PodTemplateSpec {
        metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: Some(labels(extra)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "exporter".into(),
                image: Some("registry.example/kubevirt-leader-exporter:0.2.0".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("metrics".into()),
                    container_port: 8443,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// Creates pod `name` with the exporter's labels, controlled by `owner` if given, Ready.
async fn exporter_like_pod(
    cluster: &envtest::Cluster,
    name: &str,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> String {
    use k8s_openapi::api::core::v1::Pod;
    let template = exporter_template(&[("pod-template-hash", "5d8f9c7b6")]);
    let mut metadata = template.metadata.expect("metadata");
    metadata.name = Some(name.into());
    metadata.owner_references = owner.map(|o| vec![o]);
    let pod = Pod {
        metadata,
        spec: template.spec,
        ..Default::default()
    };
    let api: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), EXPORTER_NS);
    let created = api
        .create(&Default::default(), &pod)
        .await
        .expect("create pod");
    cluster.set_ready(EXPORTER_NS, name, true).await;
    created.metadata.uid.expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_only_a_pod_of_the_exporters_own_deployment() {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use kubectl_kubevirt_leader::status;
    let Some(assets) = envtest::assets() else {
        return;
    };
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    let cluster = envtest::Cluster {
        client: admin.clone(),
    };
    cluster.namespace(EXPORTER_NS).await;
    let selector = LabelSelector {
        match_labels: Some(labels(&[])),
        ..Default::default()
    };
    // The Deployment, and the ReplicaSet its controller would make (this API server runs
    // without controllers, and without a kubelet: the tests say what they would).
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(admin.clone(), EXPORTER_NS);
    let deployment = deployments
        .create(
            &Default::default(),
            &Deployment {
                metadata: ObjectMeta {
                    name: Some("kubevirt-leader-exporter".into()),
                    labels: Some(labels(&[])),
                    ..Default::default()
                },
                spec: DeploymentSpec {
                    selector: selector.clone(),
                    template: exporter_template(&[]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create Deployment");
    let deployment_uid = deployment.metadata.uid.expect("uid");
    let replica_sets: kube::Api<ReplicaSet> = kube::Api::namespaced(admin.clone(), EXPORTER_NS);
    let replica_set = |name: &str, owner: Option<_>| ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("pod-template-hash", "5d8f9c7b6")])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            selector: selector.clone(),
            template: Some(exporter_template(&[("pod-template-hash", "5d8f9c7b6")])),
            ..Default::default()
        },
        ..Default::default()
    };
    let own_rs = replica_sets
        .create(
            &Default::default(),
            &replica_set(
                "kubevirt-leader-exporter-5d8f9c7b6",
                Some(controller_ref(
                    "apps/v1",
                    "Deployment",
                    "kubevirt-leader-exporter",
                    &deployment_uid,
                )),
            ),
        )
        .await
        .expect("create ReplicaSet");
    let own_rs_uid = own_rs.metadata.uid.expect("uid");
    // A ReplicaSet of nobody's, with the same labels.
    let stray_rs = replica_sets
        .create(
            &Default::default(),
            &replica_set("kubevirt-leader-exporter-stray", None),
        )
        .await
        .expect("create ReplicaSet");
    let stray_rs_uid = stray_rs.metadata.uid.expect("uid");

    // Ready pods with the exporter's labels, none of them the Deployment's own; their names
    // sort before the real one's, so that the API server lists them first.
    exporter_like_pod(&cluster, "kubevirt-leader-exporter-0-no-owner", None).await;
    exporter_like_pod(
        &cluster,
        "kubevirt-leader-exporter-1-owner-by-name-only",
        Some(controller_ref(
            "apps/v1",
            "ReplicaSet",
            "kubevirt-leader-exporter-5d8f9c7b6",
            "00000000-0000-0000-0000-000000000000",
        )),
    )
    .await;
    exporter_like_pod(
        &cluster,
        "kubevirt-leader-exporter-2-stray-replicaset",
        Some(controller_ref(
            "apps/v1",
            "ReplicaSet",
            "kubevirt-leader-exporter-stray",
            &stray_rs_uid,
        )),
    )
    .await;
    exporter_like_pod(
        &cluster,
        "kubevirt-leader-exporter-3-the-deployment-directly",
        Some(controller_ref(
            "apps/v1",
            "Deployment",
            "kubevirt-leader-exporter",
            &deployment_uid,
        )),
    )
    .await;
    // The real one, not Ready yet: no pod is chosen at all.
    let real = "kubevirt-leader-exporter-5d8f9c7b6-x2x4q";
    let real_uid = exporter_like_pod(
        &cluster,
        real,
        Some(controller_ref(
            "apps/v1",
            "ReplicaSet",
            "kubevirt-leader-exporter-5d8f9c7b6",
            &own_rs_uid,
        )),
    )
    .await;
    cluster.set_ready(EXPORTER_NS, real, false).await;
    let choice = status::exporter_pod(&admin, EXPORTER_NS, "kubevirt-leader-exporter").await;
    assert!(
        matches!(choice, Err(status::StatusError::NoExporter { .. })),
        "{choice:?}"
    );
    cluster.set_ready(EXPORTER_NS, real, true).await;
    let choice = status::exporter_pod(&admin, EXPORTER_NS, "kubevirt-leader-exporter")
        .await
        .expect("the Deployment's pod");
    assert_eq!(
        choice,
        status::ExporterPod {
            name: real.into(),
            uid: real_uid,
            port: 8443,
        }
    );
    // Another Deployment's name finds nothing, and says so.
    let missing = status::exporter_pod(&admin, EXPORTER_NS, "someone-else").await;
    let said = missing.expect_err("no such Deployment").to_string();
    assert!(said.contains("Deployment someone-else"), "{said}");
}

/// The plugin's `status` shows the exporter what the user's kubeconfig holds: here a client
/// certificate, over the connection a port-forward would give it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_shows_the_exporter_the_users_client_certificate() {
    use kubectl_kubevirt_leader::status;
    let Some(assets) = envtest::assets() else {
        return;
    };
    let bed = envtest::Secured::start(&assets, &[]).await;
    bed.until_ready().await;
    let (_, user) = bed.bound_prometheus().await;
    let addr = bed.exporter.addr;
    let connect = || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| status::StatusError::Http(e.to_string()))
    };
    let with = |(cert, key): (String, String)| status::Credentials {
        identity: Some(common::identity(&cert, &key)),
        ..status::Credentials::default()
    };
    // Nothing proves the exporter here: a client certificate, whose signature in the
    // handshake cannot be replayed, is presented all the same.
    let unproven = status::Proof::default();
    let reader = with(
        bed.plane
            .client_certificate(&user, "system:serviceaccounts"),
    );
    let status = status::read_status(connect, &reader, &unproven)
        .await
        .expect("status");
    assert!(status["components"].is_array(), "{status}");

    let someone = with(bed.plane.client_certificate("someone-else", "people"));
    let refused = status::read_status(connect, &someone, &unproven).await;
    assert!(
        matches!(refused, Err(status::StatusError::Forbidden)),
        "{refused:?}"
    );
    let nobody = status::read_status(connect, &status::Credentials::default(), &unproven).await;
    assert!(
        matches!(nobody, Err(status::StatusError::Unauthorized)),
        "{nobody:?}"
    );
    let (_, issuer) = envtest::new_ca("not the cluster's");
    let foreign = with(envtest::client_certificate_by(&issuer, &user, "people"));
    let refused = status::read_status(connect, &foreign, &unproven).await;
    assert!(
        matches!(&refused, Err(status::StatusError::Http(e)) if e.contains("refused the TLS handshake")),
        "{refused:?}"
    );
}
