//! A real control plane for tests: etcd and kube-apiserver from an envtest-style assets
//! folder (`KUBEBUILDER_ASSETS`), on free loopback ports with a temporary data dir, generated
//! TLS material and a token file. Everything it starts is stopped when it is dropped.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Container, Namespace, Pod, PodSpec, ServiceAccount},
        rbac::v1::{
            ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
        },
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    config::Kubeconfig,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;

use crate::common::free_addr;

/// Minimal CRDs of the Prometheus Operator's kinds, relative to the repository.
pub const OPERATOR_CRDS: &str = "tests/fixtures/operator-crds.yaml";

pub const ADMIN_TOKEN: &str = "admin-token";
pub const EXPORTER_TOKEN: &str = "exporter-token";
/// The exporter's user: it gets only the ClusterRole shipped in deploy/.
pub const EXPORTER_USER: &str = "kubevirt-leader-exporter";
pub const ELECTOR_TOKEN: &str = "elector-token";
/// A person with full rights, apart from the admin the tests act as, so that the audit log
/// tells their requests apart.
pub const SUPPORT_TOKEN: &str = "support-token";
pub const SUPPORT_USER: &str = "support-engineer";
/// The user the leader electors run as: it may get, create and update leases, as KubeVirt's
/// service accounts may.
pub const ELECTOR_USER: &str = "virt-operator-elector";

/// The assets folder, or `None` when the tests cannot run here. Under CI missing assets
/// are a failure.
pub fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty());
    if dir.is_none() {
        not_run("KUBEBUILDER_ASSETS is not set");
    }
    dir.map(PathBuf::from)
}

/// [`assets`] that also hold `leader-elector` (from `../shared/k8s`; `setup-envtest` does not
/// provide it).
pub fn elector_assets() -> Option<PathBuf> {
    let dir = assets()?;
    if dir.join("leader-elector").is_file() {
        return Some(dir);
    }
    not_run(&format!("{} has no leader-elector", dir.display()));
    None
}

pub fn not_run(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}, and CI must run the control-plane tests");
    }
    // Written past the test harness's capture, so it shows in a passing run; once for the
    // whole file.
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "control-plane tests NOT RUN: {why}; set KUBEBUILDER_ASSETS to a folder with etcd, \
             kube-apiserver and leader-elector (`../shared/k8s/install-assets target/k8s-assets`)"
        );
    });
}
/// The static exporter for `triple` that the image ships, built by `scripts/build-static`
/// from the sources as they are: a binary older than any of them would test another
/// exporter than the one in the tree.
pub fn static_binary(triple: &str) -> Option<PathBuf> {
    let path = crate::common::repo()
        .join("target")
        .join(triple)
        .join("release/kubevirt-leader-exporter");
    if path.is_file() {
        let built = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("the binary's mtime");
        // Cargo's dep-info beside the binary lists every source file it was built from.
        let deps = std::fs::read_to_string(path.with_extension("d")).expect("dep-info");
        let sources: Vec<PathBuf> = deps
            .split_once(": ")
            .map(|(_, files)| files.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default();
        assert!(!sources.is_empty(), "no sources in the dep-info:\n{deps}");
        // A source that is gone counts as changed.
        let newer: Vec<&PathBuf> = sources
            .iter()
            .filter(|f| {
                std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .map_or(true, |m| m > built)
            })
            .collect();
        assert!(
            newer.is_empty(),
            "{} is older than {newer:?}: build it again (scripts/test does)",
            path.display()
        );
        return Some(path);
    }
    not_run(&format!(
        "{} is missing (scripts/test builds it: scripts/build-static {})",
        path.display(),
        triple.split('-').next().unwrap_or(triple)
    ));
    None
}

/// The (major, minor) version `kube-apiserver --version` prints ("Kubernetes v1.20.2").
pub fn apiserver_version(binary: &Path) -> (u32, u32) {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text)
        .unwrap_or_else(|| panic!("{} --version printed {text:?}", binary.display()))
}

pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.trim_end_matches('+').parse().ok()?;
    Some((major, minor))
}

/// A child process killed and reaped when dropped.
pub struct Process(pub Child);

impl Process {
    /// Sends `signal` (STOP, CONT, TERM, KILL, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct ControlPlane {
    dir: PathBuf,
    assets: PathBuf,
    etcd: Process,
    apiserver: Option<Process>,
    pub etcd_url: String,
    pub api_addr: SocketAddr,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.apiserver.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to `path` whole: a process reading the file at that moment (an elector
/// starting while the next one's kubeconfig is written) sees the old or the new text, never
/// an empty file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", free_addr().port()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The parameters of the test CA: the same each time, so that its key alone can sign more
/// certificates later.
fn ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
}

/// A CA (serving and client certificates), a serving certificate for 127.0.0.1 signed by
/// it, and a service-account key.
fn write_tls(dir: &Path) {
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params().self_signed(&ca_key).expect("CA cert");
    write(&dir.join("ca.key"), &ca_key.serialize_pem());
    let issuer = Issuer::new(ca_params(), ca_key);
    let serving_key = KeyPair::generate().expect("serving key");
    let serving = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("serving params")
        .signed_by(&serving_key, &issuer)
        .expect("serving cert");
    let sa_key = KeyPair::generate().expect("service account key");
    write(&dir.join("ca.crt"), &ca.pem());
    write(&dir.join("serving.crt"), &serving.pem());
    write(&dir.join("serving.key"), &serving_key.serialize_pem());
    write(&dir.join("sa.key"), &sa_key.serialize_pem());
    write(&dir.join("sa.pub"), &sa_key.public_key_pem());
    write(
        &dir.join("tokens.csv"),
        &format!(
            "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{EXPORTER_TOKEN},{EXPORTER_USER},exporter-uid\n\
             {ELECTOR_TOKEN},{ELECTOR_USER},elector-uid\n\
             {SUPPORT_TOKEN},{SUPPORT_USER},support-uid,\"system:masters\"\n"
        ),
    );
    // Every request's metadata goes to the audit log, for tests of what a client asked for.
    write(
        &dir.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
    );
}

impl ControlPlane {
    pub async fn start(assets: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kle-envtest-{}-{}",
            std::process::id(),
            free_addr().port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_tls(&dir);
        let (client, peer) = (free_addr(), free_addr());
        let etcd_url = format!("http://{client}");
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster=default=http://{peer}"))
            // kube-apiserver compacts etcd only from its second 5-minute tick on; one that is
            // restarted every 5 minutes never does, and under churn etcd reaches its space
            // quota and refuses every write. etcd compacts by itself here.
            .args([
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=5m",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let mut plane = Self {
            dir,
            assets: assets.to_owned(),
            etcd: Process(etcd),
            apiserver: None,
            etcd_url,
            api_addr: free_addr(),
        };
        plane.start_apiserver().await;
        plane
    }

    fn apiserver_command(&self) -> Command {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let binary = self.assets.join("kube-apiserver");
        let mut cmd = Command::new(&binary);
        // The insecure port is off by default from 1.20 on and the flag is gone from 1.24.
        if apiserver_version(&binary) < (1, 24) {
            cmd.arg("--insecure-port=0");
        }
        cmd.args([
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.api_addr.port()),
            format!("--cert-dir={}", d("certs")),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--audit-policy-file={}", d("audit-policy.yaml")),
            format!("--audit-log-path={}", d("audit.log")),
        ])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(self.dir.join("apiserver.log"))
                .map_or(Stdio::null(), Stdio::from),
        );
        cmd
    }

    /// kubectl as the cluster's admin, in the repository; `(succeeded, stdout + stderr)`.
    pub fn admin_kubectl(&self, args: &[&str]) -> (bool, String) {
        // A fresh discovery cache per call, so kinds defined a moment ago are found.
        let cache = self
            .dir
            .join(format!("kubectl-cache-{}", free_addr().port()));
        let out = Command::new("kubectl")
            .arg(format!(
                "--kubeconfig={}",
                self.kubeconfig_file(ADMIN_TOKEN).display()
            ))
            .arg(format!("--cache-dir={}", cache.display()))
            .args(args)
            .current_dir(crate::common::repo())
            .output()
            .expect("kubectl must be installed");
        let _ = std::fs::remove_dir_all(cache);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The cluster's admin, with namespace `ns` holding KubeVirt's operator `pods` (Ready),
    /// the exporter's user bound to the shipped ClusterRole, and the electors' rights on
    /// leases in `ns`.
    pub async fn kubevirt(&self, ns: &str, pods: &[&str]) -> Cluster {
        let admin = self.client(ADMIN_TOKEN).await;
        self.grant_exporter_rbac(&admin).await;
        let cluster = Cluster { client: admin };
        cluster.namespace(ns).await;
        self.grant_elector_rbac(&cluster.client, ns).await;
        for name in pods {
            cluster
                .pod_with(ns, name, &[("kubevirt.io", "virt-operator")], false)
                .await;
        }
        cluster
    }

    /// Applies the Prometheus Operator's minimal CRDs and waits until they are served.
    pub fn install_operator_crds(&self) {
        let (ok, out) = self.admin_kubectl(&["apply", "-f", OPERATOR_CRDS]);
        assert!(ok, "{out}");
        let (ok, out) = self.admin_kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ]);
        assert!(ok, "{out}");
    }

    /// The audit log's events so far: what each user asked for.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Replaces the audit policy with `policy` (YAML) and restarts kube-apiserver, which reads
    /// it only at start; etcd keeps the data and the audit log goes on in the same file.
    pub async fn restart_with_audit_policy(&mut self, policy: &str) {
        write(&self.dir.join("audit-policy.yaml"), policy);
        self.kill_apiserver();
        self.start_apiserver().await;
    }

    /// Starts kube-apiserver and waits until it answers `/readyz`.
    pub async fn start_apiserver(&mut self) {
        let child = self
            .apiserver_command()
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(Process(child));
        let admin = self.client(ADMIN_TOKEN).await;
        let start = Instant::now();
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if admin
                .request_text(request)
                .await
                .is_ok_and(|body| body.trim() == "ok")
            {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            let exited = self
                .apiserver
                .as_mut()
                .and_then(|p| p.0.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "kube-apiserver exited ({exited:?}):\n{tail}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready:\n{tail}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills kube-apiserver; etcd keeps the data.
    pub fn kill_apiserver(&mut self) {
        self.apiserver.take();
    }

    /// The CA that signed the API server's serving certificate; it also verifies client
    /// certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate and key (PEM) for `user` in `group`, signed by the CA the API
    /// server verifies client certificates with.
    pub fn client_certificate(&self, user: &str, group: &str) -> (String, String) {
        self.client_certificate_for(&[
            (rcgen::DnType::CommonName, user),
            (rcgen::DnType::OrganizationName, group),
        ])
    }

    /// A client certificate and key (PEM) whose subject is `subject`, in that order, signed
    /// by the CA the API server verifies client certificates with.
    pub fn client_certificate_for(&self, subject: &[(rcgen::DnType, &str)]) -> (String, String) {
        let ca_key = std::fs::read_to_string(self.dir.join("ca.key")).expect("CA key");
        let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&ca_key).expect("CA key"));
        client_certificate_named(&issuer, subject)
    }

    /// Creates the ServiceAccount `ns/name` (and `ns`); returns its UID.
    pub async fn service_account(&self, admin: &Client, ns: &str, name: &str) -> String {
        let _ = Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await;
        let account = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("create ServiceAccount");
        account.metadata.uid.expect("uid")
    }

    /// A token for the ServiceAccount `ns/name`, as `kubectl create token` gets one.
    pub async fn token_for(&self, admin: &Client, ns: &str, name: &str) -> String {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("TokenRequest")
            .status
            .and_then(|s| s.token)
            .expect("token")
    }

    /// A service-account token as the API server issues them, signed with its key, for the
    /// ServiceAccount `ns/name` with `uid`, expiring at `exp` (seconds since the epoch). The
    /// API server accepts it up to a minute past `exp` (its clock-skew leeway).
    pub fn forge_token(&self, ns: &str, name: &str, uid: &str, exp: u64) -> String {
        use base64::Engine;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let issuer = "https://kubernetes.default.svc";
        let claims = json!({
            "iss": issuer, "aud": [issuer], "exp": exp, "iat": exp - 600, "nbf": exp - 600,
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
        });
        let signing_input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let pem = std::fs::read_to_string(self.dir.join("sa.key")).expect("sa.key");
        let der = KeyPair::from_pem(&pem).expect("sa.key").serialize_der();
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .expect("P-256 key");
        let signature = key.sign(&rng, signing_input.as_bytes()).expect("sign");
        format!("{signing_input}.{}", b64(signature.as_ref()))
    }

    /// The shipped install's way in for Prometheus: the reader ClusterRole and its binding
    /// from deploy/metrics-reader, the ServiceAccount they name, and a token for it in a file
    /// under `dir`, as Prometheus reads its own.
    pub async fn prometheus_token_file(&self, admin: &Client, dir: &Path) -> PathBuf {
        let (ok, out) = self.admin_kubectl(&["apply", "-k", "deploy/metrics-reader"]);
        assert!(ok, "{out}");
        self.service_account(admin, "monitoring", "prometheus-k8s")
            .await;
        let token = self.token_for(admin, "monitoring", "prometheus-k8s").await;
        let path = dir.join("prometheus-token");
        write(&path, &token);
        path
    }

    /// Audit events of `user` creating `resource` (tokenreviews, subjectaccessreviews).
    pub fn creates_by(&self, user: &str, resource: &str) -> usize {
        self.audit_events()
            .iter()
            .filter(|e| {
                e["verb"] == "create"
                    && e["user"]["username"] == user
                    && e["objectRef"]["resource"] == resource
                    && e["stage"] == "ResponseComplete"
            })
            .count()
    }

    /// A kubeconfig for the user with `token`.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: envtest\n\
             clusters: [{{name: envtest, cluster: {{server: 'https://{}', certificate-authority: '{}'}}}}]\n\
             users: [{{name: user, user: {{token: '{token}'}}}}]\n\
             contexts: [{{name: envtest, context: {{cluster: envtest, user: user}}}}]\n",
            self.api_addr,
            self.dir.join("ca.crt").display()
        )
    }

    pub fn kubeconfig_file(&self, token: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{token}"));
        write(&path, &self.kubeconfig_yaml(token));
        path
    }

    /// The kubeconfig of user `on-call`, bound (`on-call-diagnose`) to the shipped
    /// ClusterRole of the kubectl plugin's diagnose and nothing else.
    pub async fn on_call(&self, admin: &Client) -> PathBuf {
        let path = crate::common::repo().join("deploy/diagnose/clusterrole.yaml");
        let role: ClusterRole =
            serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("role");
        grant_cluster_role(admin, &role, "on-call-diagnose", "on-call").await;
        self.kubeconfig_file_as("on-call")
    }

    /// A kubeconfig for the admin acting as `user` (impersonation), e.g. a service account.
    pub fn kubeconfig_file_as(&self, user: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("kubeconfig-as-{}", user.replace(':', "-")));
        let yaml = self
            .kubeconfig_yaml(ADMIN_TOKEN)
            .replace("{token: '", &format!("{{as: '{user}', token: '"));
        write(&path, &yaml);
        path
    }

    pub async fn client(&self, token: &str) -> Client {
        let kubeconfig: Kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig_yaml(token)).expect("kubeconfig");
        kubevirt_leader_exporter::client_from_kubeconfig(kubeconfig)
            .await
            .expect("client")
    }

    /// Binds the exporter's user to the ClusterRole from deploy/rbac/clusterrole.yaml, as shipped.
    pub async fn grant_exporter_rbac(&self, admin: &Client) {
        self.grant_exporter_cluster_role(admin, "deploy/rbac/clusterrole.yaml")
            .await;
    }

    /// Binds the exporter's user to the ClusterRole in the file at `path` (from the
    /// repository's root), as shipped.
    pub async fn grant_exporter_cluster_role(&self, admin: &Client, path: &str) {
        let path = crate::common::repo().join(path);
        let text = std::fs::read_to_string(path).expect("read");
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_str_multiple(&text).expect("YAML documents");
        let role = docs
            .into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("a ClusterRole");
        let role: ClusterRole = serde_json::from_value(role).expect("ClusterRole");
        let name = role.metadata.name.clone().expect("name");
        grant_cluster_role(admin, &role, &name, EXPORTER_USER).await;
    }

    /// Lets the electors' user get, create and update leases in `ns`.
    pub async fn grant_elector_rbac(&self, admin: &Client, ns: &str) {
        let role = Role {
            metadata: ObjectMeta {
                name: Some("leader-election".into()),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                verbs: ["get", "create", "update"].map(String::from).to_vec(),
                ..Default::default()
            }]),
        };
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &role)
            .await
            .expect("create Role");
        self.bind_elector(admin, ns).await;
    }

    /// Binds the electors' user to its Role in `ns` (again).
    pub async fn bind_elector(&self, admin: &Client, ns: &str) {
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("leader-election".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: "leader-election".into(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: ELECTOR_USER.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                ..Default::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");
    }

    /// Takes the electors' rights on leases in `ns` away, as a lost RBAC binding (or an
    /// admission webhook rejecting lease updates) does.
    pub async fn unbind_elector(&self, admin: &Client, ns: &str) {
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .delete("leader-election", &DeleteParams::default())
            .await
            .expect("delete RoleBinding");
    }

    /// Starts a real client-go leader elector (`leader-elector` from the assets folder) as
    /// `identity`, contending for `lease` in `ns` with KubeVirt's timings.
    pub fn elector(&self, ns: &str, lease: &str, identity: &str, extra: &[&str]) -> Elector {
        let kubeconfig = self.kubeconfig_file(ELECTOR_TOKEN);
        self.elector_with(&kubeconfig, ns, lease, identity, extra)
    }

    /// An elector that talks to the API server with `kubeconfig`.
    pub fn elector_with(
        &self,
        kubeconfig: &Path,
        ns: &str,
        lease: &str,
        identity: &str,
        extra: &[&str],
    ) -> Elector {
        let log = self.dir.join(format!(
            "elector-{ns}-{identity}-{}.log",
            free_addr().port()
        ));
        let child = Command::new(self.assets.join("leader-elector"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                format!("--namespace={ns}"),
                format!("--lease-name={lease}"),
                format!("--identity={identity}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("elector log"))
            .spawn()
            .expect("start leader-elector (is it in KUBEBUILDER_ASSETS?)");
        Elector {
            process: Process(child),
            log,
            identity: identity.to_owned(),
        }
    }

    /// The current etcd revision, through etcd's JSON gateway.
    pub async fn etcd_revision(&self) -> i64 {
        let body = self
            .etcd_call("/v3/kv/range", json!({"key": "L3JlZ2lzdHJ5", "limit": 1}))
            .await;
        body["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("revision")
    }

    /// Compacts etcd's history up to the current revision.
    pub async fn compact_etcd(&self) -> i64 {
        let revision = self.etcd_revision().await;
        self.etcd_call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        )
        .await;
        revision
    }

    async fn etcd_call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = crate::common::http()
            .post(format!("{}{path}", self.etcd_url))
            .json(&body)
            .send()
            .await
            .expect("etcd request");
        assert!(
            response.status().is_success(),
            "etcd {path}: {}",
            response.status()
        );
        response.json().await.expect("etcd JSON")
    }
}

/// A running client-go leader elector.
pub struct Elector {
    pub process: Process,
    pub log: PathBuf,
    pub identity: String,
}

impl Elector {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn started_leading(&self) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.ends_with(": started leading"))
    }

    /// Waits until this elector holds the lease.
    pub async fn until_leading(&self) {
        let start = Instant::now();
        while !self.started_leading() {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{} never started leading:\n{}",
                self.identity,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (STOP, CONT, TERM, KILL) to the elector.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.0.try_wait().ok().flatten()
    }
}

/// The exporter's binary, for integration tests of any crate of the workspace (the benchmark
/// uses [`ExporterProcess::spawn`]).
pub fn exporter_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_kubevirt-leader-exporter") {
        Some(binary) => PathBuf::from(binary),
        None => crate::common::workspace_binary("kubevirt-leader-exporter"),
    }
}

/// The exporter binary, run as its unprivileged user, with its logs collected.
pub struct ExporterProcess {
    pub process: Process,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ExporterProcess {
    pub fn start(kubeconfig: &Path, extra: &[&str]) -> Self {
        Self::spawn(&exporter_binary(), kubeconfig, extra)
    }

    /// [`ExporterProcess::start`] with environment variables `env` set, as a pod's manifest
    /// sets them (the downward API's pod name, namespace and UID).
    pub fn start_with_env(kubeconfig: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with_env(&exporter_binary(), kubeconfig, extra, env)
    }

    /// [`ExporterProcess::start`] for the binary at `binary`.
    /// Listens on a free port unless `extra` has a `--listen`, without authentication unless
    /// `extra` has an `--auth`.
    pub fn spawn(binary: &Path, kubeconfig: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_env(binary, kubeconfig, extra, &[])
    }

    /// [`ExporterProcess::spawn`] with environment variables `env` set.
    pub fn spawn_with_env(
        binary: &Path,
        kubeconfig: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let has = |flag: &str| extra.iter().any(|a| a.starts_with(flag));
        let listen = (!has("--listen=")).then_some("--listen=127.0.0.1:0");
        let auth = (!has("--auth=")).then_some("--auth=none");
        let mut child = Command::new(binary)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(listen)
            .args(auth)
            .arg("--log-format=json")
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start exporter");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = serving_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                // The reader thread has the whole log once the process is gone.
                std::thread::sleep(Duration::from_millis(200));
                let log = logs.lock().expect("logs").join("\n");
                panic!("the exporter never logged its address ({e}):\n{log}")
            });
        Self {
            process: Process(child),
            addr,
            logs,
        }
    }

    pub fn log_lines(&self, containing: &[&str]) -> Vec<String> {
        let logs = self.logs.lock().expect("logs");
        logs.iter()
            .filter(|l| containing.iter().all(|c| l.contains(c)))
            .cloned()
            .collect()
    }

    pub fn process_alive(&mut self) -> bool {
        self.process.0.try_wait().is_ok_and(|exit| exit.is_none())
    }

    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }
}

/// A new CA named `name`: its certificate (PEM) and what signs with it.
pub fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = ca_params();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = params.self_signed(&key).expect("CA");
    (ca.pem(), Issuer::new(params, key))
}

/// A client certificate and key (PEM) for `user` in `group`, signed by `issuer`.
pub fn client_certificate_by(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    group: &str,
) -> (String, String) {
    client_certificate_named(
        issuer,
        &[
            (rcgen::DnType::CommonName, user),
            (rcgen::DnType::OrganizationName, group),
        ],
    )
}

/// A client certificate and key (PEM) whose subject is `subject`, signed by `issuer`.
pub fn client_certificate_named(
    issuer: &Issuer<'_, KeyPair>,
    subject: &[(rcgen::DnType, &str)],
) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (kind, value) in subject {
        params.distinguished_name.push(kind.clone(), *value);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("client cert");
    (cert.pem(), key.serialize_pem())
}

/// TLS files for a secured exporter on loopback: a CA and a certificate for 127.0.0.1 it
/// signed.
pub struct ServingCert {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServingCert {
    pub fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params().self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let files = Self {
            ca: dir.join("serving-ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        write(&files.ca, &ca.pem());
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }

    /// The exporter's flags to serve with these files, with Kubernetes authentication.
    pub fn exporter_args(&self) -> Vec<String> {
        vec![
            "--auth=kubernetes".into(),
            format!("--tls-cert-file={}", self.cert.display()),
            format!("--tls-key-file={}", self.key.display()),
        ]
    }

    /// The lines of a Prometheus scrape job (YAML flow, one per line) that scrape the
    /// exporter as the shipped installs do: HTTPS, verified with the CA, with a token file.
    pub fn scrape_settings(&self, token_file: &Path) -> String {
        format!(
            "scheme: https\n  authorization: {{credentials_file: '{}'}}\n  \
             tls_config: {{ca_file: '{}', server_name: '127.0.0.1'}}",
            token_file.display(),
            self.ca.display()
        )
    }
}

fn serving_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value["fields"]["message"] == "serving /metrics").then_some(())?;
    value["fields"]["addr"].as_str()?.parse().ok()
}

/// A real API server, its admin's client, and namespaces `namespaces` made there.
pub async fn api_server(namespaces: &[&str]) -> Option<(ControlPlane, Client, Cluster)> {
    let assets = assets()?;
    let plane = ControlPlane::start(&assets).await;
    let admin = plane.client(ADMIN_TOKEN).await;
    let cluster = Cluster {
        client: admin.clone(),
    };
    for ns in namespaces {
        cluster.namespace(ns).await;
    }
    Some((plane, admin, cluster))
}

/// Objects as KubeVirt and the kubelet would write them, through the admin client.
pub struct Cluster {
    pub client: Client,
}

impl Cluster {
    pub async fn namespace(&self, name: &str) {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    /// A virt-operator pod, Ready when `ready`.
    pub async fn pod(&self, ns: &str, name: &str, ready: bool) {
        self.pod_with(ns, name, &[("kubevirt.io", "virt-operator")], false)
            .await;
        if !ready {
            self.set_ready(ns, name, false).await;
        }
    }

    /// A Ready pod with `labels`; with `finalizer`, deleting it leaves it terminating until
    /// [`Cluster::release_pod`], as a pod whose containers are still shutting down.
    pub async fn pod_with(&self, ns: &str, name: &str, labels: &[(&str, &str)], finalizer: bool) {
        let mut pod = Self::pod_object(name, labels);
        pod.metadata.finalizers = finalizer.then(|| vec!["kubevirt.io/test-shutdown".into()]);
        self.create_ready(ns, pod).await;
    }

    /// A Ready static pod as the kubelet mirrors it: `name` on `node`, on the host network.
    pub async fn static_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)], node: &str) {
        let mut pod = Self::pod_object(name, labels);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.into());
            spec.host_network = Some(true);
        }
        self.create_ready(ns, pod).await;
    }

    /// A pod `name` with `labels` and one container.
    fn pod_object(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("registry.example/leader:latest".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates `pod` in `ns` and marks it Ready.
    async fn create_ready(&self, ns: &str, pod: Pod) {
        let name = pod.metadata.name.clone().expect("a name");
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.set_ready(ns, &name, true).await;
    }

    /// Removes the pod's finalizers, so that a terminating pod goes away.
    pub async fn release_pod(&self, ns: &str, name: &str) {
        let patch = json!({"metadata": {"finalizers": null}});
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("remove finalizers");
    }

    /// The spec of lease `name` in `ns`, as stored.
    pub async fn lease_spec(&self, ns: &str, name: &str) -> LeaseSpec {
        Api::<Lease>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .expect("get lease")
            .spec
            .unwrap_or_default()
    }

    /// Patches the pod's status as the kubelet would.
    pub async fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}});
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch pod status");
    }

    pub async fn delete_pod(&self, ns: &str, name: &str) {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }

    /// The virt-operator Lease, held by `holder`.
    pub async fn lease(&self, ns: &str, holder: &str, duration_seconds: i32) {
        let lease = kubevirt_leader_sim::lease(ns, "virt-operator", holder, duration_seconds);
        Api::<Lease>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &lease)
            .await
            .expect("create lease");
    }

    /// The holder renews, or `holder` takes the lease over (transitions + 1).
    pub async fn write_lease(&self, ns: &str, holder: &str) -> kube::Result<Lease> {
        let api = Api::<Lease>::namespaced(self.client.clone(), ns);
        let mut lease = api.get("virt-operator").await?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let now = MicroTime(Timestamp::now());
        if spec.holder_identity.as_deref() != Some(holder) {
            spec.holder_identity = Some(holder.into());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        api.replace("virt-operator", &PostParams::default(), &lease)
            .await
    }

    /// Renews the lease as `holder` every 2 s, as KubeVirt's leader does, until aborted.
    /// Failed renewals (the API server is down) are retried on the next tick.
    pub fn renew_every_2s(&self, ns: &str, holder: &str) -> tokio::task::JoinHandle<()> {
        let (cluster, ns, holder) = (
            Cluster {
                client: self.client.clone(),
            },
            ns.to_owned(),
            holder.to_owned(),
        );
        tokio::spawn(async move {
            loop {
                let _ = cluster.write_lease(&ns, &holder).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    }
}

/// The shipped ClusterRole that lets Prometheus read the exporter.
pub const READER_ROLE: &str = "deploy/metrics-reader/clusterrole.yaml";
/// The Prometheus service account the shipped binding names.
pub const MONITORING: &str = "monitoring";
pub const PROMETHEUS: &str = "prometheus-k8s";

/// The exporter binary as the shipped installs run it, on a real API server: HTTPS with a
/// CA-signed certificate for 127.0.0.1, `--auth=kubernetes`, its user bound to the shipped
/// ClusterRole, and client certificates from the API server's client CA.
pub struct Secured {
    pub plane: ControlPlane,
    pub admin: Client,
    pub exporter: ExporterProcess,
    /// The CA of the exporter's serving certificate.
    pub serving_ca: String,
    _dir: PathBuf,
}

impl Secured {
    pub async fn start(assets: &Path, extra: &[&str]) -> Self {
        Self::start_with(assets, extra, None).await
    }

    /// [`Secured::start`], with the API server auditing as `audit_policy` says.
    pub async fn start_audited(assets: &Path, extra: &[&str], audit_policy: &str) -> Self {
        Self::start_with(assets, extra, Some(audit_policy)).await
    }

    async fn start_with(assets: &Path, extra: &[&str], audit_policy: Option<&str>) -> Self {
        let mut plane = ControlPlane::start(assets).await;
        if let Some(policy) = audit_policy {
            plane.restart_with_audit_policy(policy).await;
        }
        let admin = plane.client(ADMIN_TOKEN).await;
        plane.grant_exporter_rbac(&admin).await;
        if extra.contains(&"--client-ca-from-cluster") {
            read_cluster_client_ca(&admin).await;
        }
        let dir = crate::common::temp_dir("secured");
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

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.exporter.addr)
    }

    pub fn client(&self) -> reqwest::Client {
        https_client(&self.serving_ca, None)
    }

    /// A ServiceAccount's token, bound to the shipped reader ClusterRole when `bound`.
    pub async fn reader_token(&self, ns: &str, name: &str, bound: bool) -> String {
        self.plane.service_account(&self.admin, ns, name).await;
        if bound {
            bind_reader(&self.admin, ns, name).await;
        }
        self.plane.token_for(&self.admin, ns, name).await
    }

    /// Creates Prometheus' ServiceAccount, bound to the shipped reader ClusterRole; its UID
    /// and its user name.
    pub async fn bound_prometheus(&self) -> (String, String) {
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

    pub async fn until_ready(&self) {
        let client = self.client();
        let start = Instant::now();
        loop {
            let status = client
                .get(self.url("/readyz"))
                .send()
                .await
                .map(|r| r.status());
            if status.as_ref().is_ok_and(|s| *s == reqwest::StatusCode::OK) {
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
pub async fn read_cluster_client_ca(admin: &Client) {
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
pub fn https_client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    crate::common::verifying_https(ca, identity)
        .build()
        .expect("client")
}

/// Creates the shipped reader ClusterRole (once) and binds the ServiceAccount `ns/name` to it.
pub async fn bind_reader(admin: &Client, ns: &str, name: &str) {
    let path = crate::common::repo().join(READER_ROLE);
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

/// Creates the ClusterRole `role` and binds it, as `binding`, to the user `user`.
pub async fn grant_cluster_role(admin: &Client, role: &ClusterRole, binding: &str, user: &str) {
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), role)
        .await
        .expect("create ClusterRole");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.metadata.name.clone().expect("the role's name"),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
}
