//! The leader-elected components the exporter knows by name, in presets: KubeVirt's own, the
//! rest of the virtualization stack KubeVirt users run, and the control plane. Each entry
//! says where its facts come from; every one of them elects with client-go's Lease lock in
//! its pod's namespace, lease 15 s, renew deadline 10 s, retry period 2 s, and names its
//! holder after the pod's hostname: the pod's name, or for a host-network static pod the
//! node's hostname (see `PodInfo::is_named_by`). The controller-runtime managers among them
//! (CDI, HCO, SSP, the hostpath provisioner operator, aaq-operator, virt-template, IPAM)
//! append `_<uuid>` and keep controller-runtime's default timings; none releases on exit.
//! cluster-network-addons-operator and kubemacpool no longer elect a leader.

use clap::ValueEnum;
use kube::core::Selector;

use super::{Component, Origin};

/// A named set of components, for `--preset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Preset {
    /// virt-operator, virt-controller, virt-synchronization-controller.
    Kubevirt,
    /// KubeVirt and the rest of the virtualization stack: CDI, HCO, SSP, the hostpath
    /// provisioner operator, AAQ, virt-template and the IPAM controller.
    KubevirtStack,
    /// kube-scheduler and kube-controller-manager, in kube-system.
    ControlPlane,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubevirt => "kubevirt",
            Self::KubevirtStack => "kubevirt-stack",
            Self::ControlPlane => "control-plane",
        }
    }

    pub fn components(self) -> Vec<Component> {
        let entries: &[Entry] = match self {
            Self::Kubevirt => &KUBEVIRT,
            Self::KubevirtStack => &STACK,
            Self::ControlPlane => &CONTROL_PLANE,
        };
        let mut out: Vec<Component> = match self {
            Self::KubevirtStack => Self::Kubevirt.components(),
            _ => Vec::new(),
        };
        out.extend(entries.iter().map(Entry::component));
        out
    }
}

/// One component: its name (a label value on every series), the labels its pods carry, and
/// its Lease's name.
struct Entry {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    lease: &'static str,
}

impl Entry {
    fn component(&self) -> Component {
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Component {
            name: self.name.into(),
            selector: Selector::from_iter(labels),
            lease: self.lease.into(),
            origin: Origin::Configured,
        }
    }
}

/// kubevirt/kubevirt: `pkg/virt-controller/leaderelectionconfig/config.go` (Lease lock
/// named after the component, identity = hostname, 15 s / 10 s / 2 s, no release),
/// `pkg/virt-operator/resource/generate/components/deployments.go` (pods labelled
/// `kubevirt.io=<name>`); virt-synchronization-controller from KubeVirt 1.6 on
/// (`cmd/synchronization-controller/`).
const KUBEVIRT: [Entry; 3] = [
    Entry {
        name: "virt-operator",
        labels: &[("kubevirt.io", "virt-operator")],
        lease: "virt-operator",
    },
    Entry {
        name: "virt-controller",
        labels: &[("kubevirt.io", "virt-controller")],
        lease: "virt-controller",
    },
    Entry {
        name: "virt-synchronization-controller",
        labels: &[("kubevirt.io", "virt-synchronization-controller")],
        lease: "virt-synchronization-controller",
    },
];

const STACK: [Entry; 10] = [
    // kubevirt/containerized-data-importer `cmd/cdi-controller/controller.go` (lock
    // `cdi-controller-leader-election-helper`, controller-runtime identity
    // `<hostname>_<uuid>`); `pkg/operator/resources/namespaced/controller.go` (Deployment
    // cdi-deployment, pods labelled `cdi.kubevirt.io=cdi-deployment`).
    Entry {
        name: "cdi-deployment",
        labels: &[("cdi.kubevirt.io", "cdi-deployment")],
        lease: "cdi-controller-leader-election-helper",
    },
    // Same repository, `cmd/cdi-operator/operator.go`; pods labelled `name=cdi-operator`
    // (and `cdi.kubevirt.io=cdi-operator`), one replica: no standby.
    Entry {
        name: "cdi-operator",
        labels: &[("name", "cdi-operator")],
        lease: "cdi-operator-leader-election-helper",
    },
    // kubevirt/hyperconverged-cluster-operator `cmd/hyperconverged-cluster-operator/main.go`
    // (controller-runtime manager, lock `hyperconverged-cluster-operator-lock`),
    // `deploy/operator.yaml` (pods labelled `name=hyperconverged-cluster-operator`, one
    // replica).
    Entry {
        name: "hyperconverged-cluster-operator",
        labels: &[("name", "hyperconverged-cluster-operator")],
        lease: "hyperconverged-cluster-operator-lock",
    },
    // Same repository, `cmd/hyperconverged-cluster-webhook/main.go`.
    Entry {
        name: "hyperconverged-cluster-webhook",
        labels: &[("name", "hyperconverged-cluster-webhook")],
        lease: "hyperconverged-cluster-webhook-lock",
    },
    // kubevirt/ssp-operator `main.go` (controller-runtime, LeaderElectionID
    // `734f7229.kubevirt.io`), `config/manager/manager.template.yaml` (pods labelled
    // `control-plane=ssp-operator`, one replica).
    Entry {
        name: "ssp-operator",
        labels: &[("control-plane", "ssp-operator")],
        lease: "734f7229.kubevirt.io",
    },
    // kubevirt/hostpath-provisioner-operator `cmd/manager/main.go`.
    Entry {
        name: "hostpath-provisioner-operator",
        labels: &[("name", "hostpath-provisioner-operator")],
        lease: "hostpath-provisioner-operator-lock",
    },
    // kubevirt/application-aware-quota `cmd/aaq-operator/aaq-operator.go`.
    Entry {
        name: "aaq-operator",
        labels: &[("aaq.kubevirt.io", "aaq-operator")],
        lease: "aaq-operator-leader-election-helper",
    },
    // Same repository, `pkg/aaq-controller/application.go` (Lease `aaq-controller`) and
    // `pkg/aaq-controller/leaderelectionconfig/config.go` (KubeVirt's settings: identity =
    // hostname); two replicas.
    Entry {
        name: "aaq-controller",
        labels: &[("aaq.kubevirt.io", "aaq-controller")],
        lease: "aaq-controller",
    },
    // kubevirt/virt-template `cmd/main.go` (controller-runtime, LeaderElectionID
    // `61e1d0f4.kubevirt.io`), one replica; `control-plane=controller-manager` tells its pods
    // from virt-template-apiserver's, which share the name label.
    Entry {
        name: "virt-template-controller",
        labels: &[
            ("app.kubernetes.io/name", "virt-template"),
            ("control-plane", "controller-manager"),
        ],
        lease: "61e1d0f4.kubevirt.io",
    },
    // kubevirt/ipam-extensions `cmd/main.go` (controller-runtime, LeaderElectionID
    // `71d89df3`), two replicas.
    Entry {
        name: "kubevirt-ipam-controller",
        labels: &[("app", "ipam-virt-workloads")],
        lease: "71d89df3",
    },
];

/// kubernetes/kubernetes: `cmd/kube-scheduler/app/options/options.go` and
/// `cmd/kube-controller-manager/app/controllermanager.go` (Lease lock in kube-system named
/// after the component, identity `<hostname>_<uuid>`, 15 s / 10 s / 2 s); kube-scheduler
/// releases the lease on a clean exit (`ReleaseOnCancel`), kube-controller-manager does
/// not. kubeadm runs both as static pods `<component>-<node>` on the host network,
/// labelled `component=<component>` (`cmd/kubeadm/app/phases/controlplane/manifests.go`).
const CONTROL_PLANE: [Entry; 2] = [
    Entry {
        name: "kube-scheduler",
        labels: &[("component", "kube-scheduler")],
        lease: "kube-scheduler",
    },
    Entry {
        name: "kube-controller-manager",
        labels: &[("component", "kube-controller-manager")],
        lease: "kube-controller-manager",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_distinct_names_and_leases() {
        let stack = Preset::KubevirtStack.components();
        assert_eq!(stack.len(), 13);
        let kubevirt = Preset::Kubevirt.components();
        assert!(kubevirt.iter().all(|c| stack.contains(c)));
        let mut all = stack;
        all.extend(Preset::ControlPlane.components());
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        let mut leases: Vec<&str> = all.iter().map(|c| c.lease.as_str()).collect();
        leases.sort_unstable();
        leases.dedup();
        assert_eq!(leases.len(), all.len());
    }
}
