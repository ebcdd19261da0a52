//! The exporter run the way a kubelet runs the shipped Deployment, on a real kube-apiserver
//! with no kubelet: the manifests applied with kubectl, a token for the shipped
//! ServiceAccount from the TokenRequest API, the service-account files mounted at the
//! in-cluster path in a private mount namespace, the image's uid and gid, a read-only root
//! filesystem, no capabilities, and the container's args and env from the rendered manifest.
//! No kubeconfig anywhere. Needs root (mount namespaces, switching user); under CI it fails
//! without it rather than skip.

mod common;
mod envtest;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{Base, Https};
use envtest::{Cluster, ControlPlane, Process};
use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Container, Service, ServiceAccount},
};
use kube::{Api, api::PostParams};
use serde_json::Value;

const NS: &str = "kubevirt";
const A: &str = "virt-operator-6f7d9c5b8-a1b2c";
const B: &str = "virt-operator-6f7d9c5b8-x9y8z";
const EXPORTER_NS: &str = "kubevirt-leader-exporter";
const EXPORTER: &str = "kubevirt-leader-exporter";
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Root, or a line saying these tests did not run (a failure under CI).
fn as_root() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return true;
    }
    envtest::not_run("the pod tests need root for a mount namespace and setpriv");
    false
}

/// The rendered objects of a kustomization, and its Deployment's one container.
fn render(dir: &str) -> (Vec<Value>, Deployment) {
    let docs = common::kustomize(std::path::Path::new(dir));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .cloned()
        .map(|d| serde_json::from_value(d).expect("Deployment"))
        .expect("a Deployment");
    (docs, deployment)
}

fn container(deployment: &Deployment) -> &Container {
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

/// A process started as the kubelet would start the container.
struct PodProcess {
    process: Process,
    log: PathBuf,
    addr: SocketAddr,
}

impl PodProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Mounts the service-account files and a read-only root, drops to the image's user with no
/// capabilities, and runs the command with only the environment given after `env -i`.
const POD_SHELL: &str = r#"set -eu
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$SA_DIR"
cp "$STAGE/token" "$STAGE/ca.crt" "$STAGE/namespace" "$SA_DIR/"
chmod 0644 "$SA_DIR"/*
mount -o remount,ro /run
mount -o remount,bind,ro /
exec setpriv --reuid="$POD_UID" --regid="$POD_GID" --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
"#;

/// Starts the binary with `container`'s args and env, as the shipped ServiceAccount (`token`).
/// Only the listen port differs: a free one instead of the container port, so that tests
/// can run side by side; the probes are sent to it as to the named port.
fn start_pod(plane: &ControlPlane, container: &Container, token: &str, uid: i64) -> PodProcess {
    let stage = common::temp_dir("pod-stage");
    std::fs::write(stage.join("token"), token).expect("token");
    std::fs::copy(plane.ca_file(), stage.join("ca.crt")).expect("CA");
    std::fs::write(stage.join("namespace"), EXPORTER_NS).expect("namespace");
    let port = container
        .ports
        .iter()
        .flatten()
        .next()
        .expect("a port")
        .container_port;
    let addr = common::free_addr();
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|arg| {
            if let Some(listen) = arg.strip_prefix("--listen=") {
                assert!(
                    listen.ends_with(&format!(":{port}")),
                    "{arg} vs port {port}"
                );
                format!("--listen={addr}")
            } else {
                arg.clone()
            }
        })
        .collect();
    let mut env = vec![
        format!("KUBERNETES_SERVICE_HOST={}", plane.api_addr.ip()),
        format!("KUBERNETES_SERVICE_PORT={}", plane.api_addr.port()),
    ];
    for var in container.env.iter().flatten() {
        env.push(format!(
            "{}={}",
            var.name,
            var.value.clone().unwrap_or_default()
        ));
    }
    let log = stage.join("exporter.log");
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            POD_SHELL,
            "pod",
        ])
        .args(["env", "-i"])
        .args(&env)
        .arg(env!("CARGO_BIN_EXE_kubevirt-leader-exporter"))
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("STAGE", &stage)
        .env("SA_DIR", SERVICE_ACCOUNT_DIR)
        .env("POD_UID", uid.to_string())
        .env("POD_GID", uid.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("unshare");
    PodProcess {
        process: Process(child),
        log,
        addr,
    }
}

/// A token for the shipped ServiceAccount, as the kubelet would project it.
async fn service_account_token(cluster: &Cluster) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer: TokenRequest =
        Api::<ServiceAccount>::namespaced(cluster.client.clone(), EXPORTER_NS)
            .create_subresource("token", EXPORTER, &PostParams::default(), &request)
            .await
            .expect("TokenRequest");
    answer.status.and_then(|s| s.token).expect("a token")
}

async fn get(http: &reqwest::Client, addr: SocketAddr, path: &str) -> u16 {
    http.get(Https(addr).url(path))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A client for the secured exporter with the token of the Prometheus the shipped reader
/// binding names, as the shipped ServiceMonitor scrapes.
async fn prometheus_client(plane: &ControlPlane, cluster: &Cluster) -> reqwest::Client {
    plane
        .service_account(&cluster.client, "monitoring", "prometheus-k8s")
        .await;
    let token = plane
        .token_for(&cluster.client, "monitoring", "prometheus-k8s")
        .await;
    common::unverified_https(Some(&token))
}

/// A control plane with KubeVirt's two operator pods in `kubevirt` and the Prometheus
/// Operator's CRDs.
async fn kubevirt_with_operator_crds(assets: &Path) -> (ControlPlane, Cluster) {
    let plane = ControlPlane::start(assets).await;
    let cluster = Cluster {
        client: plane.client(envtest::ADMIN_TOKEN).await,
    };
    cluster.namespace(NS).await;
    for name in [A, B] {
        cluster
            .pod_with(NS, name, &[("kubevirt.io", "virt-operator")], false)
            .await;
    }
    plane.install_operator_crds();
    (plane, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_deployment_runs_as_a_pod() {
    let Some(assets) = envtest::elector_assets() else {
        return;
    };
    if !as_root() {
        return;
    }
    let (plane, cluster) = kubevirt_with_operator_crds(&assets).await;
    plane.grant_elector_rbac(&cluster.client, NS).await;
    let (ok, out) = plane.admin_kubectl(&["apply", "-k", "deploy"]);
    assert!(ok, "{out}");
    let (docs, deployment) = render("deploy");
    let container = container(&deployment);
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let uid = security.run_as_user.expect("runAsUser");

    let elector = plane.elector(NS, "virt-operator", A, &[]);
    elector.until_leading().await;
    let token = service_account_token(&cluster).await;
    let pod = start_pod(&plane, container, &token, uid);
    let http = prometheus_client(&plane, &cluster).await;
    common::wait_serving(&http, Https(pod.addr)).await;

    let facts = common::process_facts(pod.process.0.id());
    assert_eq!(facts.uid, uid.to_string());
    assert_eq!(facts.cap_eff, "0000000000000000");
    assert_eq!(facts.no_new_privs, "1");
    assert!(facts.root_read_only, "/ is writable");
    assert!(
        !Path::new(SERVICE_ACCOUNT_DIR).join("token").exists(),
        "the service-account files leaked out of the mount namespace"
    );

    let scrape = common::until(&http, Https(pod.addr), "the leader", |s| s.settled(NS)).await;
    assert_eq!(scrape.holder(NS).as_deref(), Some(A));
    // Secured as shipped: without credentials only the probes answer.
    let anyone = common::unverified_https(None);
    for path in ["/metrics", "/", "/status.json"] {
        assert_eq!(get(&anyone, pod.addr, path).await, 401, "{path}");
    }

    // The probes as the kubelet sends them: GET over HTTPS, without verifying the
    // certificate and without credentials, on the named port's paths.
    let port_name = container
        .ports
        .iter()
        .flatten()
        .next()
        .and_then(|p| p.name.clone());
    for probe in [&container.liveness_probe, &container.readiness_probe] {
        let get_action = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet");
        assert_eq!(
            serde_json::to_value(&get_action.port).expect("port"),
            serde_json::json!(port_name.clone().expect("named port"))
        );
        assert_eq!(get_action.scheme.as_deref(), Some("HTTPS"));
        let path = get_action.path.as_deref().expect("path");
        assert_eq!(get(&anyone, pod.addr, path).await, 200, "{path}");
    }
    let service: Service = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .map(|d| serde_json::from_value(d.clone()).expect("Service"))
        .expect("a Service");
    let target = &service.spec.expect("spec").ports.expect("ports")[0].target_port;
    assert_eq!(
        serde_json::to_value(target).expect("targetPort"),
        serde_json::json!(port_name.expect("named port"))
    );
    let log = pod.log_text();
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "the manifest asks for JSON logs:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_install_bound_in_the_wrong_namespace_is_blind_not_leaderless() {
    let Some(assets) = envtest::elector_assets() else {
        return;
    };
    if !as_root() {
        return;
    }
    let (plane, cluster) = kubevirt_with_operator_crds(&assets).await;
    cluster.namespace("openshift-cnv").await;
    let (docs, deployment) = render("deploy/scoped/kubevirt");
    let container = container(&deployment);
    assert!(
        container
            .args
            .iter()
            .flatten()
            .any(|a| a == "--namespace=kubevirt")
    );
    // The variant edited for another namespace, but the exporter still watches kubevirt.
    let mut wrong = String::new();
    for mut doc in docs {
        if doc["kind"] == "ServiceMonitor" || doc["kind"] == "PrometheusRule" {
            continue;
        }
        if doc["kind"] == "Role" || doc["kind"] == "RoleBinding" {
            doc["metadata"]["namespace"] = "openshift-cnv".into();
        }
        wrong.push_str("---\n");
        wrong.push_str(&serde_json::to_string(&doc).expect("JSON"));
        wrong.push('\n');
    }
    let file = common::temp_dir("pod-wrong").join("wrong.yaml");
    std::fs::write(&file, wrong).expect("write");
    let (ok, out) = plane.admin_kubectl(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{out}");

    let token = service_account_token(&cluster).await;
    let uid = container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .expect("runAsUser");
    let pod = start_pod(&plane, container, &token, uid);
    let http = prometheus_client(&plane, &cluster).await;
    // It serves, is not ready, and says nothing about leaders.
    let start = std::time::Instant::now();
    while !pod.log_text().contains("forbidden") {
        assert!(
            start.elapsed().as_secs() < 60,
            "no forbidden in:\n{}",
            pod.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(get(&http, pod.addr, "/livez").await, 200);
    assert_eq!(get(&http, pod.addr, "/readyz").await, 503);
    let scrape = common::scrape(&http, Https(pod.addr)).await;
    assert!(scrape.blind(), "{}", scrape.0);
    let healthy: Vec<&str> = scrape
        .0
        .lines()
        .filter(|l| l.starts_with("kubevirt_leader_exporter_watch_healthy{"))
        .collect();
    assert!(
        !healthy.is_empty() && healthy.iter().all(|l| l.ends_with(" 0")),
        "{}",
        scrape.0
    );
    let warning = pod
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["level"] == "WARN" && l.to_string().contains("forbidden"))
        .unwrap_or_else(|| panic!("no warning:\n{}", pod.log_text()));
    // It names who was refused and the permission they lack: the verb, the resource and
    // the namespace, as the API server's answer does.
    let error = warning["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("system:serviceaccount:kubevirt-leader-exporter:kubevirt-leader-exporter"),
        "{warning}"
    );
    let lacks_pods = r#"cannot list resource "pods" in API group "" in the namespace "kubevirt""#;
    let lacks_leases = r#"cannot list resource "leases" in API group "coordination.k8s.io" in the namespace "kubevirt""#;
    assert!(
        error.contains(lacks_pods) || error.contains(lacks_leases),
        "{warning}"
    );
}
