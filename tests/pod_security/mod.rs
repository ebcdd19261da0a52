//! The admission rules a pod template must pass, as their sources state them:
//! - the Pod Security Standards' `restricted` profile: the checks of Kubernetes'
//!   pod-security-admission (`k8s.io/pod-security-admission/policy/check_*.go`, the
//!   baseline checks and the restricted ones, as of 1.34) on a pod template, all but
//!   AppArmor's annotations, which a pod template's spec does not carry;
//! - OpenShift's `restricted-v2` SecurityContextConstraints as OpenShift bootstraps it
//!   (openshift/apiserver-library-go, `pkg/securitycontextconstraints/.../bootstrappolicy`):
//!   runAsUser MustRunAsRange (the namespace's `openshift.io/sa.scc.uid-range`),
//!   seLinuxContext MustRunAs (`openshift.io/sa.scc.mcs`), fsGroup MustRunAs
//!   (`openshift.io/sa.scc.supplemental-groups`), supplementalGroups RunAsAny, privilege
//!   escalation refused (and defaulted off), ALL capabilities dropped by the SCC, only
//!   NET_BIND_SERVICE added, seccomp runtime/default, the restricted volume types, no host
//!   access. What the SCC sets itself (the drop, a default) is not refused.
//!
//! Each rule has a case that breaks it, so that a checker that says nothing fails its test.

use std::ops::Range;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EphemeralContainer, HTTPGetAction,
    HostPathVolumeSource, Lifecycle, NFSVolumeSource, PodSpec, Probe, SELinuxOptions,
    SeccompProfile, SecurityContext, Volume,
};

/// One rule a pod breaks.
#[derive(Debug, PartialEq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

fn violation(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        rule,
        detail: detail.into(),
    }
}

/// What the checks need of a container, of every kind: init, regular and ephemeral.
struct Checked<'a> {
    name: &'a str,
    security_context: Option<&'a SecurityContext>,
    ports: Option<&'a Vec<ContainerPort>>,
    probes: Vec<Option<&'a Probe>>,
    lifecycle: Option<&'a Lifecycle>,
}

fn containers(spec: &PodSpec) -> Vec<Checked<'_>> {
    // Container and EphemeralContainer are two types with the same fields.
    macro_rules! checked {
        ($c:expr) => {
            Checked {
                name: &$c.name,
                security_context: $c.security_context.as_ref(),
                ports: $c.ports.as_ref(),
                probes: vec![
                    $c.liveness_probe.as_ref(),
                    $c.readiness_probe.as_ref(),
                    $c.startup_probe.as_ref(),
                ],
                lifecycle: $c.lifecycle.as_ref(),
            }
        };
    }
    let regular = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| checked!(c));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| checked!(c));
    regular.chain(ephemeral).collect()
}

/// Whether a probe or lifecycle handler names a host other than the pod (baseline's
/// hostProbesAndHostLifecycle, 1.34).
fn names_a_host(c: &Checked) -> bool {
    let probes = c.probes.iter().flatten().any(|p| {
        p.http_get.as_ref().is_some_and(|h| h.host.is_some())
            || p.tcp_socket.as_ref().is_some_and(|t| t.host.is_some())
    });
    let handlers = c
        .lifecycle
        .into_iter()
        .flat_map(|l| [l.post_start.as_ref(), l.pre_stop.as_ref()])
        .flatten()
        .any(|h| {
            h.http_get.as_ref().is_some_and(|g| g.host.is_some())
                || h.tcp_socket.as_ref().is_some_and(|t| t.host.is_some())
        });
    probes || handlers
}

/// Volume types the restricted profile and restricted-v2 allow.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn volume_type(v: &Volume) -> String {
    let value = serde_json::to_value(v).expect("volume");
    value
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| *k != "name")
        .cloned()
        .unwrap_or_default()
}

/// Capabilities the baseline profile lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls the baseline profile allows (1.29 and later).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn added(c: &Checked) -> Vec<String> {
    c.security_context
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
}

fn dropped(c: &Checked) -> Vec<String> {
    c.security_context
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.drop.clone())
        .unwrap_or_default()
}

fn seccomp_type(profile: Option<&SeccompProfile>) -> Option<&str> {
    profile.map(|p| p.type_.as_str())
}

fn shares_host_namespaces(spec: &PodSpec) -> bool {
    [spec.host_network, spec.host_pid, spec.host_ipc].contains(&Some(true))
}

fn opens_a_host_port(c: &Checked) -> bool {
    c.ports
        .into_iter()
        .flatten()
        .any(|p| p.host_port.is_some_and(|h| h != 0))
}

/// The SELinux options the pod and each of its containers set.
fn selinux_options(spec: &PodSpec) -> Vec<SELinuxOptions> {
    let pod = spec.security_context.as_ref();
    std::iter::once(pod.and_then(|p| p.se_linux_options.clone()))
        .chain(containers(spec).iter().map(|c| ctx(c).se_linux_options))
        .flatten()
        .collect()
}

/// Each volume whose type is not one of the restricted ones, as `name: type`.
fn unrestricted_volumes(spec: &PodSpec) -> Vec<String> {
    spec.volumes
        .iter()
        .flatten()
        .map(|v| (v, volume_type(v)))
        .filter(|(_, kind)| !RESTRICTED_VOLUMES.contains(&kind.as_str()))
        .map(|(v, kind)| format!("{}: {kind}", v.name))
        .collect()
}

/// The Pod Security Standards' `restricted` profile: the baseline checks and its own.
pub struct Restricted;

impl Restricted {
    pub fn violations(spec: &PodSpec) -> Vec<Violation> {
        let mut out = baseline(spec);
        out.extend(restricted_only(spec));
        out
    }
}

fn ctx(c: &Checked) -> SecurityContext {
    c.security_context.cloned().unwrap_or_default()
}

fn baseline(spec: &PodSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    let all = containers(spec);
    if shares_host_namespaces(spec) {
        out.push(violation(
            "hostNamespaces",
            "hostNetwork, hostPID or hostIPC",
        ));
    }
    if pod.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
        out.push(violation("hostProcess", "pod"));
    }
    if pod.app_armor_profile.as_ref().map(|p| p.type_.as_str()) == Some("Unconfined") {
        out.push(violation("appArmorProfile", "pod"));
    }
    for c in &all {
        let s = ctx(c);
        if s.privileged == Some(true) {
            out.push(violation("privileged", c.name));
        }
        if s.windows_options.and_then(|w| w.host_process) == Some(true) {
            out.push(violation("hostProcess", c.name));
        }
        if added(c)
            .iter()
            .any(|a| !BASELINE_CAPABILITIES.contains(&a.as_str()))
        {
            out.push(violation("capabilities_baseline", c.name));
        }
        if opens_a_host_port(c) {
            out.push(violation("hostPorts", c.name));
        }
        if s.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            out.push(violation("procMount", c.name));
        }
        if s.app_armor_profile.as_ref().map(|p| p.type_.as_str()) == Some("Unconfined") {
            out.push(violation("appArmorProfile", c.name));
        }
        if names_a_host(c) {
            out.push(violation("hostProbesAndHostLifecycle", c.name));
        }
    }
    for o in selinux_options(spec) {
        let type_ok = matches!(
            o.type_.as_deref(),
            None | Some("")
                | Some("container_t")
                | Some("container_init_t")
                | Some("container_kvm_t")
                | Some("container_engine_t")
        );
        if !type_ok || o.user.is_some() || o.role.is_some() {
            out.push(violation("seLinuxOptions", format!("{o:?}")));
        }
    }
    if spec.volumes.iter().flatten().any(|v| v.host_path.is_some()) {
        out.push(violation("hostPathVolumes", "hostPath"));
    }
    if pod
        .sysctls
        .iter()
        .flatten()
        .any(|s| !SAFE_SYSCTLS.contains(&s.name.as_str()))
    {
        out.push(violation("sysctls", "an unsafe sysctl"));
    }
    let unconfined = std::iter::once(pod.seccomp_profile.clone())
        .chain(all.iter().map(|c| ctx(c).seccomp_profile))
        .any(|p| seccomp_type(p.as_ref()) == Some("Unconfined"));
    if unconfined {
        out.push(violation("seccompProfile_baseline", "Unconfined"));
    }
    out
}

fn restricted_only(spec: &PodSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    for volume in unrestricted_volumes(spec) {
        out.push(violation("restrictedVolumes", volume));
    }
    // runAsNonRoot: no level may say false, and where the pod does not say true, every
    // container must.
    if pod.run_as_non_root == Some(false) {
        out.push(violation("runAsNonRoot", "pod"));
    }
    if pod.run_as_user == Some(0) {
        out.push(violation("runAsUser", "pod"));
    }
    let pod_seccomp = seccomp_type(pod.seccomp_profile.as_ref());
    for c in &containers(spec) {
        let s = ctx(c);
        if s.allow_privilege_escalation != Some(false) {
            out.push(violation("allowPrivilegeEscalation", c.name));
        }
        let non_root = match s.run_as_non_root {
            Some(v) => v,
            None => pod.run_as_non_root == Some(true),
        };
        if !non_root {
            out.push(violation("runAsNonRoot", c.name));
        }
        if s.run_as_user == Some(0) {
            out.push(violation("runAsUser", c.name));
        }
        let seccomp = seccomp_type(s.seccomp_profile.as_ref()).or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault") | Some("Localhost")) {
            out.push(violation("seccompProfile_restricted", c.name));
        }
        if !dropped(c).iter().any(|d| d == "ALL")
            || added(c).iter().any(|a| a != "NET_BIND_SERVICE")
        {
            out.push(violation("capabilities_restricted", c.name));
        }
    }
    out
}

fn first(spec: &mut PodSpec) -> &mut Container {
    &mut spec.containers[0]
}

fn container_ctx(spec: &mut PodSpec) -> &mut SecurityContext {
    first(spec)
        .security_context
        .get_or_insert_with(Default::default)
}

fn pod_ctx(spec: &mut PodSpec) -> &mut k8s_openapi::api::core::v1::PodSecurityContext {
    spec.security_context.get_or_insert_with(Default::default)
}

fn add_capability(spec: &mut PodSpec, cap: &str) {
    container_ctx(spec)
        .capabilities
        .get_or_insert_with(Capabilities::default)
        .add
        .get_or_insert_with(Vec::new)
        .push(cap.to_owned());
}

fn host_path_volume(spec: &mut PodSpec) {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "host".into(),
        host_path: Some(HostPathVolumeSource {
            path: "/".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
}

type Break = fn(&mut PodSpec);

/// Each rule of the restricted profile, and a change to a passing pod that breaks it.
pub const RESTRICTED_CASES: &[(&str, Break)] = &[
    ("hostNamespaces", |s| s.host_network = Some(true)),
    ("privileged", |s| container_ctx(s).privileged = Some(true)),
    ("hostProcess", |s| {
        container_ctx(s).windows_options = Some(Default::default());
        if let Some(w) = container_ctx(s).windows_options.as_mut() {
            w.host_process = Some(true);
        }
    }),
    ("capabilities_baseline", |s| add_capability(s, "SYS_ADMIN")),
    ("hostPorts", |s| {
        first(s)
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: 9,
                host_port: Some(9),
                ..Default::default()
            })
    }),
    ("procMount", |s| {
        container_ctx(s).proc_mount = Some("Unmasked".into())
    }),
    ("appArmorProfile", |s| {
        container_ctx(s).app_armor_profile = Some(k8s_openapi::api::core::v1::AppArmorProfile {
            type_: "Unconfined".into(),
            ..Default::default()
        })
    }),
    ("seLinuxOptions", |s| {
        pod_ctx(s).se_linux_options = Some(SELinuxOptions {
            type_: Some("spc_t".into()),
            ..Default::default()
        })
    }),
    ("hostPathVolumes", host_path_volume),
    ("sysctls", |s| {
        pod_ctx(s).sysctls = Some(vec![k8s_openapi::api::core::v1::Sysctl {
            name: "kernel.msgmax".into(),
            value: "1".into(),
        }])
    }),
    ("seccompProfile_baseline", |s| {
        container_ctx(s).seccomp_profile = Some(SeccompProfile {
            type_: "Unconfined".into(),
            ..Default::default()
        })
    }),
    // A volume baseline allows and restricted does not.
    ("restrictedVolumes", |s| {
        s.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "share".into(),
            nfs: Some(NFSVolumeSource {
                server: "nfs.example".into(),
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }),
    ("allowPrivilegeEscalation", |s| {
        container_ctx(s).allow_privilege_escalation = None
    }),
    ("runAsNonRoot", |s| {
        container_ctx(s).run_as_non_root = None;
        pod_ctx(s).run_as_non_root = None;
    }),
    // The pod says false while the container says true: a level that says false is refused.
    ("runAsNonRoot", |s| {
        container_ctx(s).run_as_non_root = Some(true);
        pod_ctx(s).run_as_non_root = Some(false);
    }),
    ("runAsUser", |s| container_ctx(s).run_as_user = Some(0)),
    ("runAsUser", |s| pod_ctx(s).run_as_user = Some(0)),
    // Checked in ephemeral containers too, as `kubectl debug` adds them.
    ("allowPrivilegeEscalation", |s| {
        s.ephemeral_containers
            .get_or_insert_with(Vec::new)
            .push(EphemeralContainer {
                name: "debug".into(),
                ..Default::default()
            })
    }),
    ("hostProbesAndHostLifecycle", |s| {
        first(s).liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                host: Some("10.0.0.1".into()),
                port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        })
    }),
    ("hostProcess", |s| {
        pod_ctx(s).windows_options =
            Some(k8s_openapi::api::core::v1::WindowsSecurityContextOptions {
                host_process: Some(true),
                ..Default::default()
            })
    }),
    ("appArmorProfile", |s| {
        pod_ctx(s).app_armor_profile = Some(k8s_openapi::api::core::v1::AppArmorProfile {
            type_: "Unconfined".into(),
            ..Default::default()
        })
    }),
    ("seccompProfile_restricted", |s| {
        container_ctx(s).seccomp_profile = None;
        pod_ctx(s).seccomp_profile = None;
    }),
    ("capabilities_restricted", |s| {
        if let Some(c) = container_ctx(s).capabilities.as_mut() {
            c.drop = None;
        }
    }),
    // A capability baseline allows and restricted does not.
    ("capabilities_restricted", |s| add_capability(s, "CHOWN")),
];

/// OpenShift's `restricted-v2` SCC, in a namespace whose annotations give `uids`
/// (`openshift.io/sa.scc.uid-range`), `groups` (`openshift.io/sa.scc.supplemental-groups`,
/// the fsGroup range) and `mcs` (`openshift.io/sa.scc.mcs`).
pub struct RestrictedV2 {
    pub uids: Range<i64>,
    pub groups: Range<i64>,
    pub mcs: &'static str,
}

impl RestrictedV2 {
    pub fn violations(&self, spec: &PodSpec) -> Vec<Violation> {
        let mut out = Vec::new();
        let pod = spec.security_context.clone().unwrap_or_default();
        let all = containers(spec);
        let in_range = |uid: i64| self.uids.contains(&uid);
        // runAsUser: MustRunAsRange.
        let users = pod
            .run_as_user
            .into_iter()
            .chain(all.iter().filter_map(|c| ctx(c).run_as_user));
        for uid in users {
            if !in_range(uid) {
                out.push(violation("runAsUser", format!("{uid} is not in the range")));
            }
        }
        // fsGroup: MustRunAs, the supplemental groups' range.
        if let Some(gid) = pod.fs_group
            && !self.groups.contains(&gid)
        {
            out.push(violation("fsGroup", format!("{gid} is not in the range")));
        }
        // seLinuxContext: MustRunAs the namespace's level.
        for o in selinux_options(spec) {
            let level_ok = o.level.as_deref().is_none_or(|l| l == self.mcs);
            if !level_ok || o.user.is_some() || o.role.is_some() || o.type_.is_some() {
                out.push(violation("seLinuxContext", format!("{o:?}")));
            }
        }
        if shares_host_namespaces(spec) {
            out.push(violation("host", "hostNetwork, hostPID or hostIPC"));
        }
        for volume in unrestricted_volumes(spec) {
            out.push(violation("volumes", volume));
        }
        for c in &all {
            let s = ctx(c);
            if s.privileged == Some(true) {
                out.push(violation("privileged", c.name));
            }
            // Unset is defaulted to false by the SCC; only asking for it is refused.
            if s.allow_privilege_escalation == Some(true) {
                out.push(violation("allowPrivilegeEscalation", c.name));
            }
            // requiredDropCapabilities: ALL is added to the drop list, not refused.
            if added(c).iter().any(|a| a != "NET_BIND_SERVICE") {
                out.push(violation("allowedCapabilities", c.name));
            }
            if opens_a_host_port(c) {
                out.push(violation("host", c.name));
            }
            let seccomp = seccomp_type(s.seccomp_profile.as_ref())
                .or(seccomp_type(pod.seccomp_profile.as_ref()));
            if seccomp.is_some_and(|t| t != "RuntimeDefault") {
                out.push(violation("seccompProfiles", c.name));
            }
        }
        out
    }
}

/// What restricted-v2 chooses for a pod that leaves it open, and whether the pod sets it:
/// a pod that sets them is admitted only where its values happen to fit the namespace.
pub fn chosen_by_the_platform(spec: &PodSpec) -> Vec<(&'static str, bool)> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let ctxs: Vec<SecurityContext> = containers(spec).iter().map(ctx).collect();
    vec![
        (
            "runAsUser",
            pod.run_as_user.is_some() || ctxs.iter().any(|c| c.run_as_user.is_some()),
        ),
        (
            "runAsGroup",
            pod.run_as_group.is_some() || ctxs.iter().any(|c| c.run_as_group.is_some()),
        ),
        ("fsGroup", pod.fs_group.is_some()),
        (
            "seLinuxOptions",
            pod.se_linux_options.is_some() || ctxs.iter().any(|c| c.se_linux_options.is_some()),
        ),
        (
            "runAsNonRoot unset",
            pod.run_as_non_root != Some(true)
                && ctxs.iter().any(|c| c.run_as_non_root != Some(true)),
        ),
    ]
}

/// Each strategy of restricted-v2, and a change to an admitted pod that breaks it.
pub const RESTRICTED_V2_CASES: &[(&str, Break)] = &[
    // What the OpenShift install asked for before: a fixed UID outside the range.
    ("runAsUser", |s| pod_ctx(s).run_as_user = Some(65532)),
    ("fsGroup", |s| pod_ctx(s).fs_group = Some(65532)),
    ("seLinuxContext", |s| {
        pod_ctx(s).se_linux_options = Some(SELinuxOptions {
            level: Some("s0:c1,c2".into()),
            ..Default::default()
        })
    }),
    ("host", |s| s.host_network = Some(true)),
    ("volumes", host_path_volume),
    ("privileged", |s| container_ctx(s).privileged = Some(true)),
    ("allowPrivilegeEscalation", |s| {
        container_ctx(s).allow_privilege_escalation = Some(true)
    }),
    ("allowedCapabilities", |s| add_capability(s, "NET_RAW")),
    ("seccompProfiles", |s| {
        container_ctx(s).seccomp_profile = Some(SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some("custom.json".into()),
        })
    }),
];
