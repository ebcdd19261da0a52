//! The presets against real client-go electors on a real kube-apiserver: every component of
//! the virtualization stack and of the control plane, each with pods labelled as its source
//! labels them and an elector holding its Lease under its own identity shape (the pod's name,
//! `<pod>_<uuid>`, or for a static pod on the host network `<node hostname>_<uuid>`); and
//! kube-scheduler's release on exit, handed over without ever reading "no leader".

mod common;
mod envtest;

use std::time::{Duration, Instant};

use common::{Reading, Scrape, until_within};
use envtest::{Cluster, ControlPlane, EXPORTER_TOKEN, Elector, ExporterProcess, elector_assets};
use serde_json::Value;

/// Where OpenShift Virtualization runs the whole stack.
const STACK_NS: &str = "openshift-cnv";
const CONTROL_NS: &str = "kube-system";
const PATIENCE: Duration = Duration::from_secs(90);

/// How a component's elector names itself.
#[derive(Clone, Copy, Debug)]
enum Identity {
    /// The pod's name (KubeVirt's own, aaq-controller).
    Pod,
    /// `<pod>_<uuid>` (controller-runtime).
    PodUuid,
    /// `<node hostname>_<uuid>`, the hostname in capitals to show that case does not matter
    /// (kube-scheduler, kube-controller-manager as static pods).
    NodeUuid,
}

/// A component as its project deploys it.
struct Fixture {
    component: &'static str,
    ns: &'static str,
    lease: &'static str,
    labels: &'static [(&'static str, &'static str)],
    identity: Identity,
    /// One replica: no standby.
    replicas: usize,
    /// Where upstream states the Lease, the pod labels, the identity and the replicas:
    /// repository, file and what to look for there.
    source: &'static str,
}

const fn fixture(
    component: &'static str,
    ns: &'static str,
    lease: &'static str,
    labels: &'static [(&'static str, &'static str)],
    identity: Identity,
    replicas: usize,
    source: &'static str,
) -> Fixture {
    Fixture {
        component,
        ns,
        lease,
        labels,
        identity,
        replicas,
        source,
    }
}

/// Every component as its own project's source deploys it, written from that source and not
/// from `src/components/presets.rs`, so that a wrong preset fails here. Every one elects in its pod's
/// namespace: for the stack the one namespace OpenShift Virtualization installs it all in.
/// controller-runtime managers name themselves `os.Hostname() + "_" + uuid`
/// (sigs.k8s.io/controller-runtime `pkg/leaderelection/leader_election.go`, as each project
/// vendors it); a pod's hostname is its name.
const FIXTURES: [Fixture; 15] = [
    fixture(
        "virt-operator",
        STACK_NS,
        "virt-operator",
        &[("kubevirt.io", "virt-operator")],
        Identity::Pod,
        2,
        "kubevirt/kubevirt: pkg/virt-operator/application.go (leaseName = VirtOperator \
         \"virt-operator\" in app.operatorNamespace, Identity os.Hostname()); \
         pkg/virt-operator/resource/generate/components/deployments.go NewOperatorDeployment \
         (pod label virtv1.AppLabel \"kubevirt.io\" = \"virt-operator\", Replicas 2)",
    ),
    fixture(
        "virt-controller",
        STACK_NS,
        "virt-controller",
        &[("kubevirt.io", "virt-controller")],
        Identity::Pod,
        2,
        "kubevirt/kubevirt: pkg/virt-controller/leaderelectionconfig/config.go \
         (DefaultLeaseName \"virt-controller\"); pkg/virt-controller/watch/application.go \
         (lock in vca.kubevirtNamespace, Identity vca.host = os.Hostname()); \
         pkg/virt-operator/resource/generate/components/deployments.go NewControllerDeployment \
         via newBaseDeployment/newPodTemplateSpec (pod label kubevirt.io=<deployment name>, \
         Replicas 2)",
    ),
    fixture(
        "virt-synchronization-controller",
        STACK_NS,
        "virt-synchronization-controller",
        &[("kubevirt.io", "virt-synchronization-controller")],
        Identity::Pod,
        2,
        "kubevirt/kubevirt (from v1.6.0): \
         cmd/synchronization-controller/synchronization-controller.go (leaseName \
         \"virt-synchronization-controller\" in app.namespace, Identity os.Hostname()); \
         pkg/virt-operator/resource/generate/components/deployments.go \
         NewSynchronizationControllerDeployment via newBaseDeployment (pod label \
         kubevirt.io=virt-synchronization-controller, Replicas 2)",
    ),
    fixture(
        "cdi-deployment",
        STACK_NS,
        "cdi-controller-leader-election-helper",
        &[("cdi.kubevirt.io", "cdi-deployment")],
        Identity::PodUuid,
        1,
        "kubevirt/containerized-data-importer: cmd/cdi-controller/controller.go \
         (controller-runtime, LeaderElectionID \"cdi-controller-leader-election-helper\", \
         leases, LeaderElectionNamespace its namespace); \
         pkg/operator/resources/namespaced/controller.go createControllerDeployment \
         (Deployment cdi-deployment, pod label cdi.kubevirt.io=cdi-deployment, 1 replica \
         unless the CDI CR's spec.infra sets more)",
    ),
    fixture(
        "cdi-operator",
        STACK_NS,
        "cdi-operator-leader-election-helper",
        &[("name", "cdi-operator")],
        Identity::PodUuid,
        1,
        "kubevirt/containerized-data-importer: cmd/cdi-operator/operator.go \
         (controller-runtime, LeaderElectionID \"cdi-operator-leader-election-helper\", \
         leases); pkg/operator/resources/operator/operator.go createOperatorDeployment \
         (pod label name=cdi-operator, 1 replica; pkg/operator/resources/utils/common.go adds \
         cdi.kubevirt.io=cdi-operator); kubevirt/hyperconverged-cluster-operator: \
         deploy/operator.yaml (Deployment cdi-operator: the same labels, replicas: 1)",
    ),
    fixture(
        "hyperconverged-cluster-operator",
        STACK_NS,
        "hyperconverged-cluster-operator-lock",
        &[("name", "hyperconverged-cluster-operator")],
        Identity::PodUuid,
        1,
        "kubevirt/hyperconverged-cluster-operator: cmd/hyperconverged-cluster-operator/main.go \
         getManagerOptions (controller-runtime, LeaderElectionID \
         \"hyperconverged-cluster-operator-lock\", leases); tools/manifests/manifests.go \
         GetDeploymentSpecOperator and the generated deploy/operator.yaml (pod label \
         name=hyperconverged-cluster-operator, replicas: 1)",
    ),
    fixture(
        "hyperconverged-cluster-webhook",
        STACK_NS,
        "hyperconverged-cluster-webhook-lock",
        &[("name", "hyperconverged-cluster-webhook")],
        Identity::PodUuid,
        1,
        "kubevirt/hyperconverged-cluster-operator: cmd/hyperconverged-cluster-webhook/main.go \
         (controller-runtime, LeaderElectionID \"hyperconverged-cluster-webhook-lock\", \
         leases); tools/manifests/manifests.go GetDeploymentSpecWebhook and the generated \
         deploy/operator.yaml (pod label name=hyperconverged-cluster-webhook, replicas: 1)",
    ),
    fixture(
        "ssp-operator",
        STACK_NS,
        "734f7229.kubevirt.io",
        &[("control-plane", "ssp-operator")],
        Identity::PodUuid,
        1,
        "kubevirt/ssp-operator: main.go (controller-runtime, leaderElectionID \
         \"734f7229.kubevirt.io\", on with --leader-elect); \
         config/manager/manager.template.yaml (pod label control-plane=ssp-operator, \
         replicas: 1, args --leader-elect); kubevirt/hyperconverged-cluster-operator: \
         deploy/operator.yaml (Deployment ssp-operator: the same label, replicas: 1, \
         --leader-elect)",
    ),
    fixture(
        "hostpath-provisioner-operator",
        STACK_NS,
        "hostpath-provisioner-operator-lock",
        &[("name", "hostpath-provisioner-operator")],
        Identity::PodUuid,
        1,
        "kubevirt/hostpath-provisioner-operator: cmd/manager/main.go (controller-runtime, \
         LeaderElectionID \"hostpath-provisioner-operator-lock\", LeaderElectionNamespace its \
         namespace, default lock leases); deploy/operator.yaml (pod label \
         name=hostpath-provisioner-operator, replicas: 1); \
         kubevirt/hyperconverged-cluster-operator: deploy/operator.yaml (the same)",
    ),
    fixture(
        "aaq-operator",
        STACK_NS,
        "aaq-operator-leader-election-helper",
        &[("aaq.kubevirt.io", "aaq-operator")],
        Identity::PodUuid,
        1,
        "kubevirt/application-aware-quota: cmd/aaq-operator/aaq-operator.go \
         (controller-runtime, LeaderElectionID \"aaq-operator-leader-election-helper\", \
         leases); pkg/aaq-operator/resources/operator/operator.go (CreateOperatorDeployment \
         name=aaq-operator, 1 replica) with pkg/util/util.go CreateOperatorDeployment (adds \
         aaq.kubevirt.io=aaq-operator); kubevirt/hyperconverged-cluster-operator: \
         deploy/operator.yaml (Deployment aaq-operator: aaq.kubevirt.io: aaq-operator, \
         replicas: 1)",
    ),
    fixture(
        "aaq-controller",
        STACK_NS,
        "aaq-controller",
        &[("aaq.kubevirt.io", "aaq-controller")],
        Identity::Pod,
        2,
        "kubevirt/application-aware-quota: pkg/aaq-controller/application.go \
         setupLeaderElector (Lease \"aaq-controller\" in mca.aaqNs, Identity mca.host = \
         os.Hostname()); pkg/aaq-controller/leaderelectionconfig/config.go (leases); \
         pkg/aaq-operator/resources/namespaced/controller.go createAAQControllerDeployment \
         (pod label aaq.kubevirt.io=aaq-controller, 2 replicas)",
    ),
    fixture(
        "virt-template-controller",
        STACK_NS,
        "61e1d0f4.kubevirt.io",
        &[
            ("app.kubernetes.io/name", "virt-template"),
            ("control-plane", "controller-manager"),
        ],
        Identity::PodUuid,
        1,
        "kubevirt/virt-template: cmd/main.go (controller-runtime, LeaderElectionID \
         \"61e1d0f4.kubevirt.io\", on with --leader-elect); config/manager/manager.yaml (pod \
         labels control-plane=controller-manager, app.kubernetes.io/name=virt-template, \
         replicas: 1); kubevirt/kubevirt: \
         pkg/virt-operator/resource/generate/components/data/virt-template/\
         install-virt-operator.yaml (Deployment virt-template-controller, the same pod labels, \
         --leader-elect; virt-template-apiserver's pods have control-plane=apiserver) and \
         virttemplate.go updateDeployment (exactly 1 replica)",
    ),
    fixture(
        "kubevirt-ipam-controller",
        STACK_NS,
        "71d89df3",
        &[("app", "ipam-virt-workloads"), ("control-plane", "manager")],
        Identity::PodUuid,
        2,
        "kubevirt/ipam-extensions: cmd/main.go (controller-runtime, LeaderElectionID \
         \"71d89df3\", on with --leader-elect); config/manager/manager.yaml (pod label \
         control-plane=manager, replicas: 2), config/default/kustomization.yaml (adds \
         app=ipam-virt-workloads), dist/install.yaml; \
         kubevirt/cluster-network-addons-operator: \
         data/kubevirt-ipam-controller/001-kubevirtipamcontroller.yaml (the Deployment it \
         installs: the same two labels, replicas: 2, --leader-elect)",
    ),
    // One static pod per control-plane node; two nodes here, which the handover test needs.
    fixture(
        "kube-scheduler",
        CONTROL_NS,
        "kube-scheduler",
        &[("component", "kube-scheduler")],
        Identity::NodeUuid,
        2,
        "kubernetes/kubernetes: cmd/kube-scheduler/app/options/options.go (ResourceName \
         \"kube-scheduler\", ResourceNamespace \"kube-system\", leases; \
         makeLeaderElectionConfig: hostname + \"_\" + uuid, ReleaseOnCancel true); \
         cmd/kubeadm/app/util/staticpod/utils.go ComponentPod (kube-system, labels \
         component=<container name> and tier=control-plane, HostNetwork: the node's \
         hostname) called from cmd/kubeadm/app/phases/controlplane/manifests.go (container \
         kube-scheduler)",
    ),
    fixture(
        "kube-controller-manager",
        CONTROL_NS,
        "kube-controller-manager",
        &[("component", "kube-controller-manager")],
        Identity::NodeUuid,
        2,
        "kubernetes/kubernetes: cmd/kube-controller-manager/app/options/options.go \
         (Generic.LeaderElection.ResourceName \"kube-controller-manager\", ResourceNamespace \
         \"kube-system\"); cmd/kube-controller-manager/app/controllermanager.go (id = \
         hostname + \"_\" + uuid; leaderElectAndRun without ReleaseOnCancel); \
         cmd/kubeadm/app/util/staticpod/utils.go ComponentPod with \
         cmd/kubeadm/app/phases/controlplane/manifests.go (container kube-controller-manager, \
         label component=kube-controller-manager, HostNetwork)",
    ),
];

// Every fixture says where its facts come from, checked as the test binary compiles.
const _: () = {
    let mut i = 0;
    while i < FIXTURES.len() {
        assert!(
            !FIXTURES[i].source.is_empty(),
            "a fixture without its source"
        );
        i += 1;
    }
};

/// A fresh elector identity suffix, as client-go's `uuid.NewUUID()` gives each start.
fn uuid(n: usize) -> String {
    format!("0c7e4ac3-5d6f-4a8b-9c1d-{n:012x}")
}

/// The control-plane node the `i`th static pod runs on.
fn node(i: usize) -> String {
    format!("cp-{i}")
}

impl Fixture {
    /// The pods' names; a static pod is named after its node, as the kubelet mirrors it.
    fn pods(&self) -> Vec<String> {
        (1..=self.replicas)
            .map(|i| match self.identity {
                Identity::NodeUuid => format!("{}-{}", self.component, node(i)),
                _ => format!("{}-6f7d9c5b8-{i:05}", self.component),
            })
            .collect()
    }

    /// What the leader of the first pod writes as holder.
    fn holder(&self) -> String {
        let pod = &self.pods()[0];
        match self.identity {
            Identity::Pod => pod.clone(),
            Identity::PodUuid => format!("{pod}_{}", uuid(1)),
            Identity::NodeUuid => format!("{}_{}", node(1).to_uppercase(), uuid(1)),
        }
    }

    async fn create_pods(&self, cluster: &Cluster) {
        for (i, pod) in self.pods().iter().enumerate() {
            match self.identity {
                Identity::NodeUuid => {
                    cluster
                        .static_pod(self.ns, pod, self.labels, &node(i + 1))
                        .await;
                }
                _ => cluster.pod_with(self.ns, pod, self.labels, false).await,
            }
        }
    }
}

struct Bed {
    plane: ControlPlane,
    cluster: Cluster,
    http: reqwest::Client,
    exporter: ExporterProcess,
}

/// A real control plane with the stack's and the control plane's namespaces, the electors'
/// rights on leases there, and the exporter with `presets`.
async fn setup(presets: &str) -> Option<Bed> {
    let assets = elector_assets()?;
    let plane = ControlPlane::start(&assets).await;
    let cluster = plane.kubevirt(STACK_NS, &[]).await;
    plane.grant_elector_rbac(&cluster.client, CONTROL_NS).await;
    let preset = format!("--preset={presets}");
    let exporter = ExporterProcess::start(&plane.kubeconfig_file(EXPORTER_TOKEN), &[&preset]);
    Some(Bed {
        plane,
        cluster,
        http: common::http(),
        exporter,
    })
}

impl Bed {
    async fn until(&self, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
        until_within(PATIENCE, &self.http, self.exporter.addr, what, check).await
    }

    async fn page(&self) -> String {
        self.http
            .get(format!("http://{}/", self.exporter.addr))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("page text")
    }

    async fn status_json(&self) -> Value {
        common::status_json(&self.http, self.exporter.addr).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_of_the_stack_and_the_control_plane_has_its_leader_found() {
    let Some(bed) = setup("kubevirt-stack,control-plane").await else {
        return;
    };
    let mut electors: Vec<Elector> = Vec::new();
    for f in &FIXTURES {
        f.create_pods(&bed.cluster).await;
        electors.push(bed.plane.elector(f.ns, f.lease, &f.holder(), &[]));
    }
    for elector in &electors {
        elector.until_leading().await;
    }
    let scrape = bed
        .until("every component led by its pod", |s| {
            FIXTURES.iter().all(|f| {
                s.of("present", f.ns, f.component) == Some(1.0)
                    && s.of("holder_ready", f.ns, f.component) == Some(1.0)
                    && s.of("pods_ready", f.ns, f.component) == Some(f.replicas as f64)
            })
        })
        .await;
    for f in &FIXTURES {
        assert_eq!(
            scrape.holder_of(f.ns, f.component),
            Some(f.holder()),
            "{}",
            f.component
        );
    }
    // One replica means no standby, and the status says so.
    let status = bed.status_json().await;
    for f in &FIXTURES {
        let ns = common::namespace_status(&status, f.component, f.ns);
        assert_eq!(ns["standbys"], f.replicas - 1, "{}: {ns:#}", f.component);
    }
    let page = bed.page().await;
    for f in &FIXTURES {
        assert!(
            page.contains(f.component),
            "{} not on the page",
            f.component
        );
    }
    let single = FIXTURES.iter().filter(|f| f.replicas == 1).count();
    assert_eq!(
        page.matches("<dt>standby</dt><dd><b>none</b>").count(),
        single
    );
    let series = scrape
        .0
        .lines()
        .filter(|l| l.starts_with("kubevirt_leader_"))
        .count();
    common::report(&format!(
        "stack and control plane: {} components led, /metrics {} bytes, {series} series",
        FIXTURES.len(),
        scrape.0.len()
    ));
}

/// The kinds of kube-scheduler's events, oldest first.
fn event_kinds(status: &Value) -> Vec<String> {
    common::event_kinds(status, "kube-scheduler", CONTROL_NS)
}

/// `identity` holds kube-scheduler's lease, and both static pods are Ready.
fn scheduler_led_by(s: &Scrape, identity: &str) -> bool {
    s.of("present", CONTROL_NS, "kube-scheduler") == Some(1.0)
        && s.holder_of(CONTROL_NS, "kube-scheduler").as_deref() == Some(identity)
        && s.of("holder_ready", CONTROL_NS, "kube-scheduler") == Some(1.0)
        && s.of("pods_ready", CONTROL_NS, "kube-scheduler") == Some(2.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_scheduler_releases_and_its_standby_takes_over_without_reading_no_leader() {
    let Some(bed) = setup("control-plane").await else {
        return;
    };
    let scheduler = &FIXTURES[13];
    assert_eq!(scheduler.component, "kube-scheduler");
    scheduler.create_pods(&bed.cluster).await;
    // kube-scheduler releases its lease on every clean exit; each start has a new uuid.
    let release = ["--release-on-cancel"];
    let mut starts = 0;
    let mut start_on = |i: usize| {
        starts += 1;
        let identity = format!("{}_{}", node(i), uuid(starts));
        bed.plane
            .elector(CONTROL_NS, scheduler.lease, &identity, &release)
    };
    let mut leader = start_on(1);
    leader.until_leading().await;
    let mut standby = start_on(2);
    let mut standby_node = 2;
    bed.until("cp-1 leads", |s| scheduler_led_by(s, &leader.identity))
        .await;
    let mut sampler = common::Sampler::start(bed.http.clone(), bed.exporter.addr, |_, s| {
        let s = s.as_ref();
        (
            Reading::of(s, |s| s.of("present", CONTROL_NS, "kube-scheduler")),
            s.and_then(|s| s.holder_of(CONTROL_NS, "kube-scheduler")),
        )
    });
    let mut leaders = vec![leader.identity.clone()];
    sampler.more(2).await;
    let started = Instant::now();
    for _ in 0..5 {
        // The standby has looked and seen the leader: it takes the lease at a later look.
        let seen = format!("new leader: {}", leader.identity);
        let looking = Instant::now();
        while !standby.log_text().contains(&seen) {
            assert!(looking.elapsed() < PATIENCE, "{}", standby.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        leader.signal("TERM");
        standby.until_leading().await;
        // The stopped scheduler's node starts it again, as a new standby.
        let node_of_leader = 3 - standby_node;
        leader = std::mem::replace(&mut standby, start_on(node_of_leader));
        standby_node = node_of_leader;
        let holder = leader.identity.clone();
        bed.until("the standby leads", |s| scheduler_led_by(s, &holder))
            .await;
        leaders.push(holder);
        // A sample sent while the new leader holds the lease, before it hands over.
        sampler.more(2).await;
    }
    let samples = sampler.finish().await;
    // The sampler saw each leader, in order, and every sample before, during and after the
    // handovers read a live leader.
    common::assert_always_led(&samples, |s| s.0, leaders.len() * 2, "released handovers");
    let mut seen: Vec<String> = samples.iter().filter_map(|s| s.1.clone()).collect();
    seen.dedup();
    assert_eq!(seen, leaders, "the holders the samples named");
    // Each handover was a release, taken at the standby's next look: the story counts one
    // `released` per handover, and never a lease that ran out.
    let status = bed.status_json().await;
    let kinds = event_kinds(&status);
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("released"), 5, "{kinds:?}");
    assert_eq!(count("lost"), 0, "{kinds:?}");
    let spec = bed.cluster.lease_spec(CONTROL_NS, scheduler.lease).await;
    assert!(spec.lease_transitions >= Some(5), "{spec:?}");
    common::report(&format!(
        "kube-scheduler: 5 released handovers in {:.1}s, {} samples every 250 ms, each read \
         a live leader",
        started.elapsed().as_secs_f64(),
        samples.len()
    ));

    // The last release, with nobody left to take it.
    standby.signal("KILL");
    leader.signal("TERM");
    let s = bed
        .until("no leader after an unanswered release", |s| {
            s.of("present", CONTROL_NS, "kube-scheduler") == Some(0.0)
        })
        .await;
    assert_eq!(s.holder_of(CONTROL_NS, "kube-scheduler"), None);
    let age = s
        .of("lease_age_seconds", CONTROL_NS, "kube-scheduler")
        .expect("age");
    assert!(
        age > 11.0,
        "no leader {age}s after the release, before 1s + 10s"
    );
    // The history has the last release too.
    let status = bed.status_json().await;
    let kinds = event_kinds(&status);
    assert_eq!(
        kinds.iter().filter(|k| *k == "released").count(),
        6,
        "{kinds:?}"
    );
    // The page's first steps name this component's Lease, pods and runbook.
    let page = bed.page().await;
    for step in [
        "kubectl -n kube-system get lease kube-scheduler -o yaml",
        "kubectl -n kube-system get pods -l component=kube-scheduler -o wide",
        "/docs/runbooks/NoLeadingComponent.md",
    ] {
        assert!(page.contains(step), "no {step:?} on the page");
    }
}
