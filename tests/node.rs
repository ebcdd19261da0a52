//! The shipped installs on a real single-node Kubernetes (`install-assets DIR --node`: etcd,
//! kube-apiserver, controller manager, scheduler, a kubelet with containerd and runc): the
//! image as the Dockerfile ships it, the manifests as shipped plus one overlay for what this
//! node needs, and KubeVirt's leaders as real Deployments of client-go electors. Every
//! assertion about leaders reads `/metrics` over HTTP. One node per machine, so the scenarios
//! run in order in one test. Needs root and the image's static build
//! (`target/x86_64-unknown-linux-musl/release/kubevirt-leader-exporter`, built by
//! `scripts/test`); under CI a missing piece is a failure, not a skip.

mod common;
mod envtest;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Base, Https, Reading, Sampler, Scrape};
use serde_json::Value;
use tokio::task::JoinHandle;

const IMAGE: &str = "localhost/kubevirt-leader-exporter:node-test";
const ELECTOR_IMAGE: &str = "localhost/leader-elector:node-test";
/// Where the Dockerfile's last stage puts the binary, and its entrypoint.
const IMAGE_BINARY: &str = "/usr/local/bin/kubevirt-leader-exporter";
const EXPORTER_NS: &str = "kubevirt-leader-exporter";
const EXPORTER: &str = "kubevirt-leader-exporter";
const NS: &str = "kubevirt";
const OPERATOR: &str = "virt-operator";
/// The exporter's container port, on the node's (host) network.
const METRICS: &str = "127.0.0.1:8080";
/// Rollouts, takeovers and kubelet restarts on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(180);
/// The installs the node runs, as `deploy/` ships them.
const INSTALLS: [&str; 3] = ["deploy/plain", "deploy/scoped/kubevirt", "deploy"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Written past the test harness's capture, for the figures a run reports.
fn report(text: &str) {
    common::report(&format!("node: {text}"));
}

/// The one overlay the node tests add to a shipped install: host networking (the node's CNI
/// is loopback only), the imported image that cannot be pulled, the API server's address
/// (no kube-proxy routes the Service IP), and, because two host-network pods cannot share
/// the metrics port, a rollout that stops the old pod before it starts the new one.
fn overlay(base: &str, api_port: u16, extra: &str) -> String {
    format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../{base}
patches:
  - target:
      kind: Deployment
      name: {EXPORTER}
    patch: |-
      - op: add
        path: /spec/template/spec/hostNetwork
        value: true
      - op: replace
        path: /spec/template/spec/containers/0/image
        value: {IMAGE}
      - op: add
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value:
          name: KUBERNETES_SERVICE_HOST
          value: "127.0.0.1"
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value:
          name: KUBERNETES_SERVICE_PORT
          value: "{api_port}"
      - op: add
        path: /spec/strategy
        value:
          type: RollingUpdate
          rollingUpdate:
            maxSurge: 0
            maxUnavailable: 1
{extra}"#
    )
}

use common::kustomize;

/// Renders `base` with the node overlay into `target/node-test/<use>-<base>/`; the rendered
/// file and its objects.
fn render_for_node(base: &str, api_port: u16, usage: &str) -> (PathBuf, Vec<Value>) {
    render_for_node_with(base, api_port, usage, "")
}

/// [`render_for_node`], with `extra` JSON patch operations on the Deployment.
fn render_for_node_with(
    base: &str,
    api_port: u16,
    usage: &str,
    extra: &str,
) -> (PathBuf, Vec<Value>) {
    let dir = repo()
        .join("target/node-test")
        .join(format!("{usage}-{}", base.replace('/', "-")));
    std::fs::create_dir_all(&dir).expect("overlay dir");
    std::fs::write(
        dir.join("kustomization.yaml"),
        overlay(base, api_port, extra),
    )
    .expect("write");
    let file = dir.join("rendered.yaml");
    let docs = common::kustomize_to(&dir, &file);
    (file, docs)
}

#[test]
fn the_node_overlay_changes_only_what_the_node_needs() {
    for base in INSTALLS {
        let shipped = kustomize(&repo().join(base));
        let (_, mut node) = render_for_node(base, 6443, "check");
        assert_eq!(shipped.len(), node.len(), "{base}");
        let deployment = node
            .iter_mut()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let spec = deployment["spec"].as_object_mut().expect("spec");
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 0);
        spec.remove("strategy");
        let pod = spec["template"]["spec"].as_object_mut().expect("pod spec");
        assert_eq!(pod.remove("hostNetwork"), Some(Value::Bool(true)));
        let container = pod["containers"][0].as_object_mut().expect("container");
        assert_eq!(container["image"], IMAGE);
        assert_eq!(container["imagePullPolicy"], "Never");
        let shipped_deployment = shipped
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        // The API server's address comes after what the shipped manifest sets (the pod's
        // name, namespace and UID, which the exporter publishes its certificate for).
        let shipped_env = &shipped_deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let env = container["env"].as_array_mut().expect("env");
        let added: Vec<Value> = env.split_off(env.len() - 2);
        let added: Vec<&str> = added.iter().filter_map(|e| e["name"].as_str()).collect();
        assert_eq!(
            added,
            ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]
        );
        assert_eq!(&container["env"], shipped_env, "{base}");
        container.remove("imagePullPolicy");
        container.insert(
            "image".into(),
            shipped_deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone(),
        );
        assert_eq!(
            shipped, node,
            "{base}: the overlay changed more than it says"
        );
    }
}

/// The Dockerfile's last stage: where it copies the binary, its user and its entrypoint.
fn dockerfile_last_stage() -> (String, String, Vec<String>) {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let last = text
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage Dockerfile");
    let directive = |name: &str| {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in the last stage"))
            .trim()
            .to_owned()
    };
    let copy = directive("COPY");
    let dest = copy
        .split_whitespace()
        .last()
        .expect("COPY names a destination")
        .to_owned();
    let entrypoint = serde_json::from_str(&directive("ENTRYPOINT")).expect("exec-form JSON");
    (dest, directive("USER"), entrypoint)
}

#[test]
fn the_node_image_is_the_dockerfile_image() {
    let (dest, user, entrypoint) = dockerfile_last_stage();
    assert_eq!(dest, IMAGE_BINARY);
    assert_eq!(entrypoint, [IMAGE_BINARY]);
    // The packed image carries no user: the manifest's must be the Dockerfile's, and the
    // kubelet enforces it (checked from /proc on the node).
    let shipped = kustomize(&repo().join("deploy"));
    let deployment = shipped
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let context = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(
        user,
        format!("{}:{}", context["runAsUser"], context["runAsGroup"])
    );
}

/// A docker archive of one file at `path` in an otherwise empty root, with that file as its
/// entrypoint, packed by the node's own `mkimage.py`.
fn pack(assets: &Path, out: &Path, tag: &str, binary: &Path, path: &str) {
    let root = out.with_extension("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    let target = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("a folder")).expect("rootfs");
    std::fs::copy(binary, &target).expect("copy binary");
    let status = Command::new("python3")
        .arg(assets.join("node/mkimage.py"))
        .arg(out)
        .arg(tag)
        .arg(&root)
        .arg(serde_json::to_string(&[path]).expect("JSON"))
        .stdout(Stdio::null())
        .status()
        .expect("python3");
    assert!(status.success(), "mkimage.py {tag}");
}

/// A running single-node cluster, stopped by `down.sh` when dropped.
struct Node {
    assets: PathBuf,
    run: PathBuf,
    kubeconfig: PathBuf,
    api_port: u16,
    ctr_sock: String,
}

impl Node {
    fn up(assets: &Path, images: &[PathBuf]) -> Self {
        let run = repo().join("target/node-test/run");
        if run.join("pids").exists() {
            let _ = Command::new(assets.join("node/down.sh")).arg(&run).status();
        }
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).expect("run dir");
        let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
        let log = run.with_extension("log");
        let started = Instant::now();
        let out = Command::new(assets.join("node/up.sh"))
            .arg(&run)
            .env("NODE_IMAGES", names.join(" "))
            // The node shares its disk with the build, which can fill it past the kubelet's
            // default thresholds: it would then taint itself with disk pressure and collect
            // the imported images, which nothing can pull again. Disk pressure is the
            // kubelet's business, not what these tests look at.
            .env(
                "KUBELET_EXTRA_FLAGS",
                "--eviction-hard=memory.available<100Mi,nodefs.available<1%,imagefs.available<1% \
                 --image-gc-high-threshold=100 --image-gc-low-threshold=99",
            )
            .stderr(std::fs::File::create(&log).expect("log"))
            .output()
            .expect("up.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let node_env = std::fs::read_to_string(run.join("env")).unwrap_or_default();
        let var = |name: &str| {
            node_env
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let node = Self {
            assets: assets.to_owned(),
            run: run.clone(),
            kubeconfig: PathBuf::from(stdout.lines().last().unwrap_or_default()),
            api_port: var("API_PORT").and_then(|p| p.parse().ok()).unwrap_or(0),
            ctr_sock: var("CTR_SOCK").unwrap_or_default(),
        };
        assert!(
            out.status.success() && node.kubeconfig.is_file(),
            "up.sh failed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        report(&format!(
            "node Ready {:.0}s after up.sh started",
            started.elapsed().as_secs_f64()
        ));
        node
    }

    async fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .await
            .expect("kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// kubectl, which must succeed; its stdout and stderr.
    async fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args).await;
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = tokio::process::Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(&all)
            .output()
            .await
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    async fn rollout(&self, ns: &str, deployment: &str) {
        let args = [
            "-n",
            ns,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=180s",
        ];
        let (ok, out) = self.kubectl(&args).await;
        if !ok {
            panic!(
                "kubectl {}: {out}\n{}",
                args.join(" "),
                self.why_not_ready(ns).await
            );
        }
    }

    /// What a person would look at when pods do not become Ready: the node's conditions and
    /// taints, the pods and their events, the host's free space and the kubelet's last words.
    async fn why_not_ready(&self, ns: &str) -> String {
        let mut text = String::new();
        for args in [
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*].status.conditions[*]}{.type}={.status} {.message}{\"\\n\"}{end}{.items[*].spec.taints}",
            ][..],
            &["get", "pods", "-A", "-o", "wide"],
            &["-n", ns, "describe", "pods"],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ] {
            let (_, out) = self.kubectl(args).await;
            text.push_str(&format!("--- kubectl {}\n{out}\n", args.join(" ")));
        }
        let df = Command::new("df").args(["-h"]).arg(&self.run).output();
        if let Ok(df) = df {
            text.push_str(&format!(
                "--- df -h\n{}\n",
                String::from_utf8_lossy(&df.stdout)
            ));
        }
        let kubelet =
            std::fs::read_to_string(self.run.join("logs/kubelet.log")).unwrap_or_default();
        let tail: Vec<&str> = kubelet.lines().rev().take(60).collect();
        text.push_str("--- kubelet.log, last lines\n");
        for line in tail.into_iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The pods of `ns` that `selector` picks, as the API server has them.
    async fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        let list = self.json(&["-n", ns, "get", "pods", "-l", selector]).await;
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// `ctr` against the node's containerd, in the kubelet's namespace.
    fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .args(["--address", &self.ctr_sock, "-n", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host PID of a running container, from its `containerd://` ID.
    fn container_pid(&self, container_id: &str) -> u32 {
        let id = container_id.trim_start_matches("containerd://");
        self.ctr(&["tasks", "ls"])
            .lines()
            .find_map(|l| {
                let mut fields = l.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no running task {id}"))
    }

    /// Kills a container's process with SIGKILL through containerd, as an OOM kill or a
    /// crash would end it; the kubelet restarts it.
    fn kill_container(&self, container_id: &str) {
        let id = container_id.trim_start_matches("containerd://");
        self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(self.assets.join("node/down.sh"))
            .arg(&self.run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The first container's ID and restart count of `pod`, once it runs.
fn container(pod: &Value) -> Option<(String, u64)> {
    let status = &pod["status"]["containerStatuses"][0];
    status["state"]["running"].as_object()?;
    Some((
        status["containerID"].as_str()?.to_owned(),
        status["restartCount"].as_u64()?,
    ))
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `/metrics` from the exporter on the node, or `None` while it does not answer.
async fn try_scrape(http: &reqwest::Client) -> Option<Scrape> {
    common::try_scrape(http, exporter()).await
}

/// The exporter on the node: HTTPS, as every shipped install serves.
fn exporter() -> Https {
    Https(METRICS.parse().expect("an address"))
}

/// A token for the ServiceAccount the install's reader binding names (created if need be):
/// what the install's Prometheus scrapes with.
async fn reader_token(node: &Node) -> String {
    let binding = node
        .json(&[
            "get",
            "clusterrolebinding",
            "kubevirt-leader-exporter-metrics-reader",
        ])
        .await;
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount", "{binding}");
    let ns = subject["namespace"].as_str().expect("namespace");
    let name = subject["name"].as_str().expect("name");
    let _ = node.kubectl(&["create", "namespace", ns]).await;
    let _ = node
        .kubectl(&["-n", ns, "create", "serviceaccount", name])
        .await;
    let token = node
        .must(&["-n", ns, "create", "token", name, "--duration=2h"])
        .await;
    token.trim().to_owned()
}

/// Scrapes with the install's reader token, as its Prometheus does.
async fn reader(node: &Node) -> (reqwest::Client, String) {
    let token = reader_token(node).await;
    (common::unverified_https(Some(&token)), token)
}

/// Scrapes until `check` holds.
async fn until(http: &reqwest::Client, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        if let Some(s) = try_scrape(http).await
            && check(&s)
        {
            return s;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one scrape said about virt-operator in `kubevirt`; `None`s when the exporter did not
/// answer or had no series.
#[derive(Debug)]
struct Sample {
    /// When the scrape was sent.
    at: Instant,
    /// When its answer, or the lack of one, was known.
    done: Instant,
    reading: Reading,
    holder: Option<String>,
    holder_ready: Option<f64>,
    pods_ready: Option<f64>,
}

/// Scrapes every 250 ms in the background until finished.
fn sampler(http: &reqwest::Client) -> Sampler<Sample> {
    Sampler::start(http.clone(), exporter(), |at, s| {
        let op = |name: &str| s.as_ref().and_then(|s| s.operator(name, NS));
        Sample {
            at,
            done: Instant::now(),
            reading: Reading::of(s.as_ref(), |s| s.present(NS)),
            holder: s.as_ref().and_then(|s| s.holder(NS)),
            holder_ready: op("holder_ready"),
            pods_ready: op("pods_ready"),
        }
    })
}

/// Every sample, at least `min`, was answered and read a live leader: the exporter keeps
/// running while virt-operator's pods come and go.
fn always_led(samples: &[Sample], min: usize, what: &str) {
    common::assert_always_led(samples, |s| s.reading, min, what);
}

/// How many samples were sent between `from` and `to`.
fn sent_between(samples: &[Sample], from: Instant, to: Instant) -> usize {
    common::sent_between(samples, |s| s.at, from, to)
}

/// The samples around each holder change, in a line each, for the report.
fn holder_changes(samples: &[Sample]) -> Vec<String> {
    let start = samples.first().map(|s| s.at);
    samples
        .windows(2)
        .filter(|w| w[0].holder != w[1].holder && w[1].holder.is_some())
        .map(|w| {
            let t = |s: &Sample| start.map_or(0.0, |t0| s.at.duration_since(t0).as_secs_f64());
            format!(
                "{:.2}s {:?} -> {:.2}s {:?} ({:?}, holder_ready {:?}, pods_ready {:?})",
                t(&w[0]),
                w[0].holder,
                t(&w[1]),
                w[1].holder,
                w[1].reading,
                w[1].holder_ready,
                w[1].pods_ready
            )
        })
        .collect()
}

/// Applies `tests/fixtures/node/<name>` with the node's API server port filled in.
async fn apply_fixture(node: &Node, name: &str) {
    let fixture = std::fs::read_to_string(repo().join("tests/fixtures/node").join(name))
        .expect("fixture")
        .replace("${API_PORT}", &node.api_port.to_string());
    let file = node.run.join(name);
    std::fs::write(&file, fixture).expect("write");
    node.must(&["apply", "-f", file.to_str().expect("UTF-8")])
        .await;
}

/// Applies the KubeVirt fixture and waits for both of its Deployments.
async fn install_kubevirt(node: &Node) {
    apply_fixture(node, "kubevirt.yaml").await;
    node.rollout(NS, "virt-operator").await;
    node.rollout(NS, "virt-controller").await;
}

/// Applies an install with the node overlay and waits until its pod is Ready.
async fn install(node: &Node, base: &str) -> PathBuf {
    let (file, _) = render_for_node(base, node.api_port, "node");
    node.must(&["apply", "-f", file.to_str().expect("UTF-8")])
        .await;
    node.rollout(EXPORTER_NS, EXPORTER).await;
    file
}

/// Removes an install as docs/deploying.md says, waits until it is gone, and finds nothing
/// left of what it created: the Roles and bindings in other namespaces included.
async fn uninstall(node: &Node, file: &Path) {
    let file = file.to_str().expect("UTF-8");
    node.must(&["delete", "-f", file, "--wait=true", "--timeout=180s"])
        .await;
    let left = node
        .must(&["get", "-f", file, "--ignore-not-found", "-o", "name"])
        .await;
    assert!(left.trim().is_empty(), "left after removal: {left}");
}

fn root() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return true;
    }
    envtest::not_run("the node tests need root for kubelet, containerd and runc");
    false
}

/// The node's assets: the envtest folder laid out with `--node`.
fn node_assets() -> Option<PathBuf> {
    let assets = envtest::elector_assets()?;
    if assets.join("node/up.sh").is_file() {
        return Some(assets);
    }
    envtest::not_run(&format!(
        "{} has no node/ (install-assets DIR --node lays it out)",
        assets.display()
    ));
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_installs_on_a_real_node() {
    let Some(assets) = node_assets() else { return };
    let Some(binary) = envtest::static_binary("x86_64-unknown-linux-musl") else {
        return;
    };
    if !root() {
        return;
    }
    let images = repo().join("target/node-test/images");
    std::fs::create_dir_all(&images).expect("images dir");
    let exporter_tar = images.join("exporter.tar");
    let elector_tar = images.join("elector.tar");
    pack(&assets, &exporter_tar, IMAGE, &binary, IMAGE_BINARY);
    pack(
        &assets,
        &elector_tar,
        ELECTOR_IMAGE,
        &assets.join("leader-elector"),
        "/leader-elector",
    );
    let node = Node::up(&assets, &[exporter_tar, elector_tar]);
    let (ok, out) = node.kubectl(&["apply", "-f", envtest::OPERATOR_CRDS]).await;
    assert!(ok, "{out}");
    node.must(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ])
    .await;
    install_kubevirt(&node).await;

    // Each install as shipped runs and judges the real electors, read with the token of the
    // Prometheus its reader binding names; the default one stays.
    for base in &INSTALLS[..2] {
        let file = install(&node, base).await;
        let (http, _) = reader(&node).await;
        until(&http, &format!("{base}: a leader"), |s| {
            s.present(NS) == Some(1.0) && s.operator("pods_ready", NS) == Some(2.0)
        })
        .await;
        uninstall(&node, &file).await;
    }
    openshift_install_runs_as_restricted_v2_assigns(&node).await;
    install(&node, INSTALLS[2]).await;
    let (http, token) = reader(&node).await;
    until(&http, "a leader", |s| s.present(NS) == Some(1.0)).await;
    let anyone = common::unverified_https(None);
    let refused = anyone.get(exporter().url("/metrics")).send().await;
    assert_eq!(refused.map(|r| r.status().as_u16()).ok(), Some(401));
    status_through_kubectl(&node, &token, 0, "leader").await;

    runs_as_the_manifest_asks(&node).await;
    let (prometheus, discovery) = discovering_prometheus(&node, &token);
    scraped_through_the_service(&node, &prometheus, &http).await;
    let started = common::unix_now();
    rolling_restarts_never_read_no_leader(&node, &http).await;
    a_deleted_then_killed_leader_never_reads_no_leader(&node, &http).await;
    the_exporter_restarts_without_a_false_zero(&node, &http).await;
    nothing_fired(&node, &prometheus, &http, started).await;
    discovery.abort();
    no_pods_no_leader(&node, &http, &token).await;
    diagnose_names_what_the_node_did(&node).await;
}

/// Where OpenShift's service CA would issue the exporter's serving certificate for.
const SERVICE_DNS: &str = "kubevirt-leader-exporter.kubevirt-leader-exporter.svc";
/// A UID from an OpenShift namespace's range, as restricted-v2 assigns it.
const OPENSHIFT_UID: &str = "1000650000";

/// The OpenShift install as OpenShift runs it: restricted-v2 gives the pod a UID from the
/// namespace's range and an fsGroup, and the primary group is 0 (the image's passwd file does
/// not know the UID); the service CA's certificate is mounted from its Secret. It becomes
/// Ready through the kubelet's probes, serves that certificate, and answers Prometheus.
async fn openshift_install_runs_as_restricted_v2_assigns(node: &Node) {
    let base = "deploy/scoped/openshift-cnv";
    let assigned = format!(
        r#"      - op: add
        path: /spec/template/spec/securityContext/fsGroup
        value: {OPENSHIFT_UID}
      - op: add
        path: /spec/template/spec/containers/0/securityContext/runAsUser
        value: {OPENSHIFT_UID}
"#
    );
    let (file, _) = render_for_node_with(base, node.api_port, "node", &assigned);
    for ns in [EXPORTER_NS, "openshift-cnv", "openshift-monitoring"] {
        let _ = node.kubectl(&["create", "namespace", ns]).await;
    }
    // What OpenShift's service CA does for the Service's annotation.
    let (ca, issuer) = envtest::new_ca("openshift-service-serving-signer");
    let mut params = rcgen::CertificateParams::new(vec![SERVICE_DNS.to_owned()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("serving certificate");
    let tls = node.run.join("service-ca");
    std::fs::create_dir_all(&tls).expect("dir");
    std::fs::write(tls.join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(tls.join("tls.key"), key.serialize_pem()).expect("write");
    let path = |name: &str| tls.join(name).to_str().expect("UTF-8").to_owned();
    node.must(&[
        "-n",
        EXPORTER_NS,
        "create",
        "secret",
        "tls",
        "kubevirt-leader-exporter-tls",
        &format!("--cert={}", path("tls.crt")),
        &format!("--key={}", path("tls.key")),
    ])
    .await;
    node.must(&["apply", "-f", file.to_str().expect("UTF-8")])
        .await;
    node.rollout(EXPORTER_NS, EXPORTER).await;

    let pods = exporter_pods(node).await;
    assert_eq!(pods.len(), 1);
    assert!(is_ready(&pods[0]), "{:#}", pods[0]);
    let (id, _) = container(&pods[0]).expect("running");
    let facts = common::process_facts(node.container_pid(&id));
    assert_eq!(
        (facts.uid.as_str(), facts.gid.as_str()),
        (OPENSHIFT_UID, "0"),
        "{facts:?}"
    );
    // Prometheus verifies the service CA's certificate under the Service's name.
    let token = reader_token(node).await;
    let verified = common::verifying_https(&ca, None)
        .resolve(SERVICE_DNS, METRICS.parse().expect("addr"))
        .build()
        .expect("client");
    let response = verified
        .get(format!("https://{SERVICE_DNS}:8080/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("a verified scrape");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("kubevirt_leader_exporter_build_info"),
        "{body}"
    );
    uninstall(node, &file).await;
}

/// The exporter's pods, as the API server has them.
async fn exporter_pods(node: &Node) -> Vec<Value> {
    node.pods(
        EXPORTER_NS,
        "app.kubernetes.io/name=kubevirt-leader-exporter",
    )
    .await
}

/// Scenario 1: the kubelet's probes make it Ready, and runc enforces what the manifest asks.
async fn runs_as_the_manifest_asks(node: &Node) {
    let pods = exporter_pods(node).await;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert!(is_ready(pod), "{pod:#}");
    let (id, _) = container(pod).expect("running");
    let pid = node.container_pid(&id);
    let facts = common::process_facts(pid);
    assert_eq!(facts.uid, "65532", "{facts:?}");
    assert_eq!(facts.cap_eff, "0000000000000000", "{facts:?}");
    assert_eq!(facts.no_new_privs, "1", "{facts:?}");
    assert_eq!(facts.seccomp, "2", "a seccomp filter: {facts:?}");
    assert!(facts.root_read_only, "{facts:?}");
    let cgroup = common::memory_cgroup(pid);
    let limit: u64 = read_number(&cgroup.join("memory.limit_in_bytes"));
    assert_eq!(limit, 64 * 1024 * 1024, "the manifest's 64Mi limit");
    let usage: u64 = read_number(&cgroup.join("memory.usage_in_bytes"));
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap_or_default();
    let ready_at = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default();
    report(&format!(
        "exporter: RSS {} KiB, cgroup memory {} KiB of {} KiB; container started {started}, \
         Ready {ready_at} (the kubelet's times, to the second)",
        common::rss_kib(pid),
        usage / 1024,
        limit / 1024
    ));
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

/// The pod named `holder`, its container's ID and restarts.
async fn holder_pod(node: &Node, http: &reqwest::Client) -> (String, String, u64) {
    let s = until(http, "a holder", |s| s.present(NS) == Some(1.0)).await;
    let holder = s.holder(NS).expect("a holder");
    let pods = node.pods(NS, "kubevirt.io=virt-operator").await;
    let pod = pods
        .iter()
        .find(|p| name(p) == holder)
        .unwrap_or_else(|| panic!("the holder {holder} is not a pod"));
    let (id, restarts) = container(pod).expect("running");
    (holder, id, restarts)
}

/// Scenario 2: three real rolling restarts of virt-operator. The kubelet stops each old
/// leader with SIGTERM and its grace period; it exits without releasing the lease and a
/// standby takes over.
async fn rolling_restarts_never_read_no_leader(node: &Node, http: &reqwest::Client) {
    let sampler = sampler(http);
    let mut holders = Vec::new();
    let mut windows = Vec::new();
    for _ in 0..3 {
        let (before, _, _) = holder_pod(node, http).await;
        let restarted = Instant::now();
        node.must(&["-n", NS, "rollout", "restart", "deployment/virt-operator"])
            .await;
        node.rollout(NS, OPERATOR).await;
        // The new leader is one of the new pods, and the exporter follows it.
        let s = until(http, "a new leader", |s| {
            s.present(NS) == Some(1.0) && s.holder(NS).is_some_and(|h| h != before)
        })
        .await;
        windows.push((restarted, Instant::now()));
        let pods = node.pods(NS, "kubevirt.io=virt-operator").await;
        let holder = s.holder(NS).expect("holder");
        let ready = pods.iter().any(|p| name(p) == holder && is_ready(p));
        assert_eq!(
            s.operator("holder_ready", NS),
            Some(f64::from(u8::from(ready)))
        );
        holders.push(holder);
    }
    let samples = sampler.finish().await;
    // A takeover of an unreleased lease takes the lease duration (15 s) at least: each was
    // watched all through.
    for (i, (from, to)) in windows.iter().enumerate() {
        let seen = sent_between(&samples, *from, *to);
        assert!(seen >= 10, "rolling restart {}: only {seen} samples", i + 1);
    }
    always_led(&samples, 30, "rolling restarts");
    report(&format!(
        "3 rolling restarts, {} samples, holders {holders:?}; around each change:\n  {}",
        samples.len(),
        holder_changes(&samples).join("\n  ")
    ));
    // Nobody released the lease: every holder change was a takeover of a named holder.
    let status = common::status_json(http, exporter()).await;
    let kinds = story(&status);
    assert!(!kinds.contains(&"released".to_owned()), "{kinds:?}");
}

/// The kinds of the events of virt-operator in `kubevirt`, oldest first.
fn story(status: &Value) -> Vec<String> {
    common::event_kinds(status, OPERATOR, NS)
}

/// Scenario 3: the leader's pod deleted (graceful), then the new leader's process killed
/// with SIGKILL through containerd: the kubelet restarts it.
async fn a_deleted_then_killed_leader_never_reads_no_leader(node: &Node, http: &reqwest::Client) {
    let sampler = sampler(http);
    let (deleted, _, _) = holder_pod(node, http).await;
    let deleting = Instant::now();
    node.must(&["-n", NS, "delete", "pod", &deleted, "--wait=true"])
        .await;
    until(http, "a leader after the deletion", |s| {
        s.present(NS) == Some(1.0) && s.holder(NS).is_some_and(|h| h != deleted)
    })
    .await;
    let taken_over = Instant::now();
    let (killed, id, restarts) = holder_pod(node, http).await;
    node.kill_container(&id);
    // The kubelet starts the container again.
    let start = Instant::now();
    loop {
        let pods = node.pods(NS, "kubevirt.io=virt-operator").await;
        if pods
            .iter()
            .any(|p| name(p) == killed && container(p).is_some_and(|(_, r)| r > restarts))
        {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{killed} was not restarted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until(http, "a leader after the kill", |s| {
        s.present(NS) == Some(1.0) && s.operator("pods_ready", NS) == Some(2.0)
    })
    .await;
    let samples = sampler.finish().await;
    let seen = sent_between(&samples, deleting, taken_over);
    assert!(
        seen >= 10,
        "only {seen} samples while the deleted leader's lease ran out"
    );
    always_led(&samples, seen, "a deleted, then a killed leader");
    let status = common::status_json(http, exporter()).await;
    assert!(
        story(&status).contains(&"holder_restarted".to_owned()),
        "{status:#}"
    );
    report(&format!(
        "deleted {deleted}, killed {killed}: story {:?}; around each change:\n  {}",
        story(&status),
        holder_changes(&samples).join("\n  ")
    ));
}

/// Scenario 4: the exporter's own rollout, then a crash of its container. While it is down
/// its series are absent; whenever it answers, it is right.
async fn the_exporter_restarts_without_a_false_zero(node: &Node, http: &reqwest::Client) {
    // A few samples of the steady state before, between and after the restarts.
    let mut sampler = sampler(http);
    sampler.more(4).await;
    let rolling = Instant::now();
    node.must(&[
        "-n",
        EXPORTER_NS,
        "rollout",
        "restart",
        &format!("deployment/{EXPORTER}"),
    ])
    .await;
    node.rollout(EXPORTER_NS, EXPORTER).await;
    until(http, "the exporter back", |s| s.present(NS) == Some(1.0)).await;
    let rolled = Instant::now();
    sampler.more(4).await;
    let pods = exporter_pods(node).await;
    assert_eq!(pods.len(), 1);
    let (id, restarts) = container(&pods[0]).expect("running");
    let killing = Instant::now();
    node.kill_container(&id);
    let start = Instant::now();
    loop {
        let pods = exporter_pods(node).await;
        if pods
            .iter()
            .any(|p| is_ready(p) && container(p).is_some_and(|(_, r)| r > restarts))
        {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the exporter was not restarted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until(http, "the exporter back after the crash", |s| {
        s.present(NS) == Some(1.0)
    })
    .await;
    let back = Instant::now();
    sampler.more(4).await;
    let samples = sampler.finish().await;
    // Gaps (no answer, or no series before the first list) are allowed only in a sample
    // that was under way while the exporter was being replaced or restarted; every other
    // sample was answered and read a live leader, and none ever read "no leader".
    let restarting = |s: &Sample| {
        [(rolling, rolled), (killing, back)]
            .iter()
            .any(|(from, to)| s.done >= *from && s.at <= *to)
    };
    let wrong: Vec<&Sample> = samples
        .iter()
        .filter(|s| match s.reading {
            Reading::Present(v) => v != 1.0,
            Reading::Unanswered | Reading::NoSeries => !restarting(s),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the exporter's restarts: {} of {} samples wrong, first: {:?}",
        wrong.len(),
        samples.len(),
        wrong.first()
    );
    let steady = samples.iter().filter(|s| !restarting(s)).count();
    assert!(steady >= 10, "only {steady} samples outside the restarts");
    let gone = samples
        .iter()
        .filter(|s| s.reading != Reading::Present(1.0))
        .count();
    assert!(gone > 0, "the exporter was never seen down");
    report(&format!(
        "exporter rollout and crash: {gone} of {} samples without series, none said 0",
        samples.len()
    ));
}

/// Scenario 5: virt-operator scaled to 0 has no leader once its lease has run out.
async fn no_pods_no_leader(node: &Node, http: &reqwest::Client, token: &str) {
    node.must(&[
        "-n",
        NS,
        "scale",
        "deployment/virt-operator",
        "--replicas=0",
    ])
    .await;
    let s = until(http, "no leader", |s| s.present(NS) == Some(0.0)).await;
    assert_eq!(s.operator("pods", NS), Some(0.0));
    status_through_kubectl(node, token, 1, "NO LEADER").await;
    let age = s.operator("lease_age_seconds", NS).expect("age");
    assert!(
        age > 25.0,
        "no leader at lease age {age}s, before 15s + 10s"
    );
    node.must(&[
        "-n",
        NS,
        "scale",
        "deployment/virt-operator",
        "--replicas=2",
    ])
    .await;
    node.rollout(NS, OPERATOR).await;
    until(http, "a leader again", |s| s.present(NS) == Some(1.0)).await;
}

/// `kubectl kubevirt-leader status` as an on-call person runs it: a real kubectl finds the
/// plugin on the PATH, which reaches the exporter's pod through a port-forward (the API
/// server and the kubelet) and shows it a token: the reader's, or the kubeconfig's own. The
/// exporter refuses a bad one, and the plugin says how to get a good one.
async fn status_through_kubectl(node: &Node, token: &str, exit: i32, state: &str) {
    let plugin = common::workspace_binary("kubectl-kubevirt_leader");
    let path = format!(
        "{}:{}",
        plugin.parent().expect("folder").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run_with = |kubeconfig: PathBuf, args: Vec<String>| {
        let path = path.clone();
        async move {
            tokio::process::Command::new("kubectl")
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .env("PATH", path)
                .output()
                .await
                .expect("kubectl")
        }
    };
    let run = |args: Vec<String>| run_with(node.kubeconfig.clone(), args);
    let token_arg = format!("--token={token}");
    let out = run(vec!["kubevirt-leader".into(), "status".into(), token_arg]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("virt-operator ") && l.contains(NS))
        .unwrap_or_else(|| {
            panic!(
                "no virt-operator row: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(line.contains(state), "{line}");
    assert_eq!(out.status.code(), Some(exit), "{text}");
    report(&format!("kubectl kubevirt-leader status:\n{text}"));
    // Without --token the kubeconfig's own token goes along, once the exporter has shown
    // the certificate its pod published: the node's admin may read.
    published_is_served(node).await;
    let own = run(vec!["kubevirt-leader".into(), "status".into()]).await;
    assert_eq!(
        own.status.code(),
        Some(exit),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    // A kubeconfig whose user gets its token from an exec plugin, as on EKS, GKE or AKS.
    let exec = exec_kubeconfig(node);
    let from_exec = run_with(exec, vec!["kubevirt-leader".into(), "status".into()]).await;
    assert_eq!(
        from_exec.status.code(),
        Some(exit),
        "{}",
        String::from_utf8_lossy(&from_exec.stderr)
    );
    let refused = run(vec![
        "kubevirt-leader".into(),
        "status".into(),
        "--token=not-a-token".into(),
    ])
    .await;
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401") && said.contains("--token"), "{said}");
}

/// The Ready exporter pod's ConfigMap, owned by the pod, holds the certificate the exporter
/// serves on the node (within moments of a start: it publishes as it starts).
async fn published_is_served(node: &Node) {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let start = Instant::now();
    loop {
        let pods = exporter_pods(node).await;
        let pod = pods
            .iter()
            .find(|p| is_ready(p))
            .expect("a Ready exporter pod");
        let (_, map) = node
            .kubectl(&[
                "-n",
                EXPORTER_NS,
                "get",
                "configmap",
                &name(pod),
                "-o",
                "json",
            ])
            .await;
        let map: Value = serde_json::from_str(&map).unwrap_or_default();
        let owner = &map["metadata"]["ownerReferences"][0];
        let pem = map["data"]["tls.crt"].as_str().unwrap_or_default();
        let published: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .filter_map(Result::ok)
                .collect();
        let config = kubevirt_leader_exporter::tls::unverified_client_config(None).expect("TLS");
        let stream = tokio::net::TcpStream::connect(METRICS)
            .await
            .expect("connect");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").expect("name"), stream)
            .await
            .expect("handshake");
        let served = tls.get_ref().1.peer_certificates().unwrap_or_default();
        if owner["kind"] == "Pod"
            && owner["uid"] == pod["metadata"]["uid"]
            && !published.is_empty()
            && published.first() == served.first()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}'s ConfigMap does not hold the certificate it serves: {map:#}",
            name(pod)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node's admin kubeconfig with its token handed out by an exec credential plugin.
fn exec_kubeconfig(node: &Node) -> PathBuf {
    let text = std::fs::read_to_string(&node.kubeconfig).expect("kubeconfig");
    let config: Value = serde_saphyr::from_str(&text).expect("YAML");
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .expect("the admin's token");
    let credential = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": { "token": token },
    });
    let mut config = config.clone();
    config["users"][0]["user"] = serde_json::json!({
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "echo",
            "args": [credential.to_string()],
            "interactiveMode": "Never",
        }
    });
    let path = node.run.join("exec.kubeconfig");
    std::fs::write(&path, config.to_string()).expect("write");
    path
}

/// A real Prometheus running the example scrape job of `docs/examples/prometheus` as users
/// merge it, relabelling, HTTPS and token and all, with the shipped rules. Debian's Prometheus is built without
/// Kubernetes service discovery, so the job's `kubernetes_sd_configs` (role `endpoints`) is
/// replaced by a file of the targets and `__meta_kubernetes_*` labels that discovery derives
/// from the exporter's Service, which the returned task keeps current.
fn discovering_prometheus(
    node: &Node,
    token: &str,
) -> (common::prometheus::Prometheus, JoinHandle<()>) {
    let example = std::fs::read_to_string(repo().join("docs/examples/prometheus/prometheus.yml"))
        .expect("example");
    let mut config: Value = serde_saphyr::from_str(&example).expect("YAML");
    let dir = node.run.join("prometheus");
    std::fs::create_dir_all(&dir).expect("dir");
    let targets = dir.join("targets.json");
    config["global"] = serde_json::json!({"scrape_interval": "1s", "evaluation_interval": "1s"});
    config["rule_files"] =
        serde_json::json!([repo().join("deploy/rules/kubevirt-leader.rules.yml")]);
    let job = config["scrape_configs"][0]
        .as_object_mut()
        .expect("a scrape job");
    job.insert("scrape_interval".into(), "1s".into());
    let discovery = job
        .remove("kubernetes_sd_configs")
        .expect("the example discovers the exporter through Kubernetes");
    assert_eq!(discovery[0]["role"], "endpoints");
    let namespaces = discovery[0]["namespaces"]["names"].clone();
    assert_eq!(namespaces, serde_json::json!([EXPORTER_NS]));
    job.insert(
        "file_sd_configs".into(),
        serde_json::json!([{"files": [targets]}]),
    );
    // The example reads the token of the pod Prometheus runs in; here it runs on the host.
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).expect("token");
    assert!(
        job["authorization"]["credentials_file"].is_string(),
        "the example scrapes with a token: {}",
        job["authorization"]
    );
    job["authorization"]["credentials_file"] = token_file.display().to_string().into();
    let prometheus =
        common::prometheus::Prometheus::from_config(&serde_json::to_string(&config).expect("JSON"));
    let kubeconfig = node.kubeconfig.clone();
    let discovery = tokio::spawn(async move {
        loop {
            write_targets(&kubeconfig, &targets).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (prometheus, discovery)
}

/// kubectl's JSON for `args`, or `None` when it fails.
async fn kubectl_json(kubeconfig: &Path, args: &[&str]) -> Option<Value> {
    let out = tokio::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .args(["-o", "json"])
        .output()
        .await
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Writes the targets Kubernetes discovery (role `endpoints`) finds for the exporter's
/// Service, with the labels it sets: the Ready pods its selector picks, at their IP and the
/// container port its named `targetPort` resolves to. The endpoints controller does the same,
/// but the API server refuses Endpoints at loopback addresses, which is all this node's
/// host-network pods have.
async fn write_targets(kubeconfig: &Path, file: &Path) {
    let ns = ["-n", EXPORTER_NS];
    let Some(service) = kubectl_json(
        kubeconfig,
        &[&ns[..], &["get", "service", EXPORTER]].concat(),
    )
    .await
    else {
        return;
    };
    let selector: Vec<String> = service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let Some(pods) = kubectl_json(
        kubeconfig,
        &[&ns[..], &["get", "pods", "-l", &selector.join(",")]].concat(),
    )
    .await
    else {
        return;
    };
    let mut groups = Vec::new();
    for pod in pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_ready(p))
    {
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let target = &port["targetPort"];
            let number = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == *target || p["containerPort"] == *target)
                .map(|p| p["containerPort"].clone());
            let (Some(number), Some(ip)) = (number, pod["status"]["podIP"].as_str()) else {
                continue;
            };
            groups.push(serde_json::json!({
                "targets": [format!("{ip}:{number}")],
                "labels": {
                    "__meta_kubernetes_namespace": EXPORTER_NS,
                    "__meta_kubernetes_service_name": service["metadata"]["name"],
                    "__meta_kubernetes_endpoint_port_name": port["name"],
                    "__meta_kubernetes_pod_name": pod["metadata"]["name"],
                },
            }));
        }
    }
    let tmp = file.with_extension("new");
    if std::fs::write(&tmp, serde_json::to_string(&groups).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
}

/// Prometheus has found the exporter through its Service's endpoints and scraped it.
async fn scraped_through_the_service(
    node: &Node,
    prometheus: &common::prometheus::Prometheus,
    http: &reqwest::Client,
) {
    let query = "kubevirt_leader_present{namespace=\"kubevirt\",component=\"virt-operator\",\
                 job=\"kubevirt-leader-exporter\",pod=~\"kubevirt-leader-exporter-.+\"}";
    let start = Instant::now();
    while prometheus.value(http, query).await != Some(1.0) {
        if start.elapsed() > Duration::from_secs(60) {
            let targets = prometheus.api(http, "/api/v1/targets", &[]).await;
            let file = std::fs::read_to_string(node.run.join("prometheus/targets.json"));
            let endpoints = node
                .kubectl(&["-n", EXPORTER_NS, "get", "endpoints", "-o", "yaml"])
                .await;
            panic!(
                "Prometheus did not scrape the exporter it should find: {targets:#?}\n\
                 targets file: {file:?}\nendpoints: {endpoints:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Scenario 7: Prometheus found the exporter through the Service, scraped it and evaluated
/// the shipped rules; no leader or exporter alert fired while the leaders and the exporter
/// restarted.
async fn nothing_fired(
    node: &Node,
    prometheus: &common::prometheus::Prometheus,
    http: &reqwest::Client,
    since: f64,
) {
    scraped_through_the_service(node, prometheus, http).await;
    let rules = prometheus
        .api(http, "/api/v1/rules", &[])
        .await
        .expect("rules");
    let evaluated: Vec<&Value> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(!evaluated.is_empty());
    assert!(
        evaluated.iter().all(|r| r["health"] == "ok"),
        "{evaluated:#?}"
    );
    // The scenarios hand virt-operator's lease over four times within minutes: more than
    // the three an hour that KubevirtLeadershipFlapping allows, and it says so. Nothing else
    // fires.
    let fired = alerts_since(prometheus, http, "alertstate=\"firing\"", since).await;
    let names: Vec<(&str, &str, &str)> = fired
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let label = |name: &str| a["metric"][name].as_str().unwrap_or_default();
            (label("alertname"), label("namespace"), label("component"))
        })
        .collect();
    assert_eq!(
        names,
        [("KubevirtLeadershipFlapping", NS, OPERATOR)],
        "{fired:#}"
    );
    // Not even pending: no scrape said "no leader".
    let pending = alerts_since(prometheus, http, "alertname=~\"NoLeading.*\"", since).await;
    assert_eq!(pending, serde_json::json!([]), "{pending:#}");
}

/// The ALERTS series that `selector` picks, at any moment since `since` (UNIX seconds).
async fn alerts_since(
    prometheus: &common::prometheus::Prometheus,
    http: &reqwest::Client,
    selector: &str,
    since: f64,
) -> Value {
    let window = (common::unix_now() - since).ceil();
    let query = format!("max_over_time(ALERTS{{{selector}}}[{window}s])");
    let data = prometheus
        .api(http, "/api/v1/query", &[("query", &query)])
        .await
        .expect("query");
    data["result"].clone()
}

/// Scenario 6: `diagnose`, run as on-call people run it, names a real OOM kill and a real
/// crash loop, with the logs read through the API server from the kubelet.
async fn diagnose_names_what_the_node_did(node: &Node) {
    const BROKEN: &str = "kubevirt-broken";
    apply_fixture(node, "broken.yaml").await;
    let start = Instant::now();
    loop {
        let pods = node.pods(BROKEN, "kubevirt.io").await;
        let state = |component: &str| {
            pods.iter()
                .find(|p| p["metadata"]["labels"]["kubevirt.io"] == component)
                .map(|p| p["status"]["containerStatuses"][0].clone())
                .unwrap_or_default()
        };
        let oom = state("virt-operator")["lastState"]["terminated"]["reason"] == "OOMKilled";
        let looping = state("virt-controller")["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        if oom && looping {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no OOM kill and crash loop yet: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let out = Command::new(common::workspace_binary("kubectl-kubevirt_leader"))
        .arg(format!("--kubeconfig={}", node.kubeconfig.display()))
        .arg(format!("--namespace={BROKEN}"))
        .args([
            "diagnose",
            "--component=virt-operator,virt-controller",
            "--observe=0s",
            "--output=json",
        ])
        .output()
        .expect("diagnose");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let finding = |component: &str| {
        report["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["facts"]["component"] == component)
            .cloned()
            .unwrap_or_else(|| panic!("no {component} in {report:#}"))
    };
    let said = |finding: &Value| finding["verdict"]["findings"].to_string();
    let operator = finding("virt-operator");
    assert!(said(&operator).contains("OOMKilled"), "{operator:#}");
    let controller = finding("virt-controller");
    assert!(
        said(&controller).contains("CrashLoopBackOff"),
        "{controller:#}"
    );
    // The crashing elector's own words, read from the kubelet.
    let logs = controller["facts"]["logs"][0]["lines"].clone();
    assert_eq!(logs["outcome"], "found", "{controller:#}");
    assert!(
        logs["value"].to_string().contains("renewDeadline"),
        "{controller:#}"
    );
    node.must(&["delete", "namespace", BROKEN, "--wait=false"])
        .await;
}
