//! `kubevirt-leader-exporter diagnose`: the NoLeadingVirtOperator runbook's look-ups, run by a
//! person with their own kubeconfig. For each leader-elected component it finds KubeVirt's
//! namespaces, gathers the pods, the lease (watched for a while), the service accounts'
//! rights on leases, admission webhooks on leases and events, and concludes in plain words.
//! It only reads, except for SubjectAccessReviews, which change nothing.

pub mod bundle;
pub mod discovered;
pub mod facts;
pub mod verdict;

use std::{collections::BTreeSet, fmt::Write, path::PathBuf, time::Duration};

use clap::ValueEnum;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use kubevirt_leader_exporter::components::Component;

use crate::cli::Scope;
use facts::{Facts, Lookup};
use verdict::{Health, Verdict};

#[derive(Clone, Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// Only this component (repeat, or separate with commas). Default: every configured one.
    /// A name no preset or component file has is looked up as the exporter's --discover
    /// finds components: the leader-election Leases of that name, and the workload their
    /// holder belongs to.
    #[arg(
        long = "component",
        env = "KUBEVIRT_LEADER_DIAGNOSE_COMPONENTS",
        value_delimiter = ','
    )]
    pub components: Vec<String>,

    /// How long to watch each lease for a renewal, by this process's own clock; 0 judges by
    /// the API server's clock alone.
    #[arg(long, env = "KUBEVIRT_LEADER_DIAGNOSE_OBSERVE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub observe: Duration,

    /// `text` for people, `json` for scripts.
    #[arg(long, env = "KUBEVIRT_LEADER_DIAGNOSE_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Also write everything gathered (pods, lease, events and webhook configurations as
    /// YAML, log excerpts, the report, versions) as plain files to this new or empty
    /// directory, to attach to a bug report. Default: no bundle.
    #[arg(long, env = "KUBEVIRT_LEADER_DIAGNOSE_BUNDLE", value_name = "DIR")]
    pub bundle: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub exporter_version: &'static str,
    /// The API server's `gitVersion`.
    pub api_server_version: Lookup<String>,
    /// When the look-ups started, UTC.
    pub gathered_at: String,
    /// Namespaces of KubeVirt custom resources (empty without KubeVirt's CRD).
    pub kubevirt_namespaces: Lookup<Vec<String>>,
    pub components: Vec<Finding>,
    /// Components found in no namespace.
    pub not_found: Vec<String>,
    /// Look-ups that failed before any namespace was known, and what that leaves unchecked.
    pub unchecked: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub facts: Facts,
    pub verdict: Verdict,
}

impl Report {
    /// 0 when every component found has a live leader, 1 when one has none, 2 when it could
    /// not tell (a look-up that decides failed, or nothing was found at all).
    pub fn exit_code(&self) -> u8 {
        let healths: Vec<Health> = self.components.iter().map(|c| c.verdict.health).collect();
        if healths.contains(&Health::NoLeader) {
            1
        } else if healths.is_empty() || healths.contains(&Health::Unknown) {
            2
        } else {
            0
        }
    }
}

/// Where to look for `component`: namespaces with its pods, and KubeVirt's namespaces where
/// its lease exists (or, for virt-operator, always: KubeVirt's manager runs there).
async fn namespaces_of(
    client: &Client,
    component: &Component,
    kubevirt: &[String],
    pods: &[k8s_openapi::api::core::v1::Pod],
    only: &[String],
) -> BTreeSet<String> {
    let mut found: BTreeSet<String> = pods.iter().filter_map(|p| p.namespace()).collect();
    for ns in kubevirt {
        let api: Api<Lease> = Api::namespaced(client.clone(), ns);
        let has_lease = matches!(api.get_opt(&component.lease).await, Ok(Some(_)));
        if has_lease || component.name == "virt-operator" {
            found.insert(ns.clone());
        }
    }
    found.retain(|ns| only.is_empty() || only.contains(ns));
    found
}

/// Runs every look-up and judges every component found.
pub async fn run(client: &Client, scope: &Scope, args: &DiagnoseArgs) -> Report {
    let gathered_at = k8s_openapi::jiff::Timestamp::now().to_string();
    let api_server_version = facts::api_server_version(client).await;
    let kubevirt_namespaces = facts::kubevirt_namespaces(client).await;
    let webhooks = facts::lease_webhooks(client).await;
    let kubevirt = kubevirt_namespaces.found().cloned().unwrap_or_default();
    let mut components = Vec::new();
    let mut not_found = Vec::new();
    let mut unchecked = Vec::new();
    let chosen = scope
        .components
        .iter()
        .filter(|c| args.components.is_empty() || args.components.contains(&c.name));
    for component in chosen {
        let selector = component.label_selector();
        let pods = match facts::pods(client, &selector, &scope.namespaces).await {
            Lookup::Found(pods) => Some(pods),
            Lookup::Forbidden(why) | Lookup::Unavailable(why) | Lookup::Failed(why) => {
                unchecked.push(format!(
                    "{}'s pods ({selector}) could not be listed, so only namespaces with its \
                     Lease were looked at: {why}",
                    component.name
                ));
                None
            }
        };
        let all_pods = pods.as_deref().unwrap_or_default();
        let namespaces =
            namespaces_of(client, component, &kubevirt, all_pods, &scope.namespaces).await;
        if namespaces.is_empty() {
            not_found.push(component.name.clone());
        }
        for ns in namespaces {
            let here: Vec<_> = all_pods
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
                .cloned()
                .collect();
            let listed = pods.is_some().then_some(here.as_slice());
            let facts =
                facts::gather(client, component, &ns, listed, &webhooks, args.observe).await;
            let verdict = verdict::verdict(&facts);
            components.push(Finding { facts, verdict });
        }
    }
    let unknown = args
        .components
        .iter()
        .filter(|name| !scope.components.iter().any(|c| c.name == **name));
    for name in unknown {
        match discovered::elections(client, name, &scope.namespaces).await {
            Ok(elections) if elections.is_empty() => not_found.push(name.clone()),
            Ok(elections) => {
                for elected in elections {
                    unchecked.extend(elected.unchecked.iter().cloned());
                    components.push(judge_elected(client, &elected, &webhooks, args.observe).await);
                }
            }
            Err(error) => unchecked.push(format!(
                "the Leases named {name} could not be listed: {}",
                kubevirt_leader_exporter::error_chain(&error)
            )),
        }
    }
    Report {
        exporter_version: env!("CARGO_PKG_VERSION"),
        api_server_version,
        gathered_at,
        kubevirt_namespaces,
        components,
        not_found,
        unchecked,
    }
}

/// Gathers and judges a component found from its Lease.
async fn judge_elected(
    client: &Client,
    elected: &discovered::Elected,
    webhooks: &facts::LeaseWebhooks,
    observe: Duration,
) -> Finding {
    let (component, ns) = (&elected.component, &elected.namespace);
    let pods = elected.pods.as_deref();
    let facts = facts::gather(client, component, ns, pods, webhooks, observe).await;
    let verdict = verdict::verdict(&facts);
    Finding { facts, verdict }
}

/// The report for people.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for Finding { facts, verdict } in &report.components {
        let state = match verdict.health {
            Health::Leader => "LEADER",
            Health::NoLeader => "NO LEADER",
            Health::Unknown => "UNKNOWN",
        };
        let _ = writeln!(out, "{} in {}: {state}", facts.component, facts.namespace);
        for finding in &verdict.findings {
            let _ = writeln!(out, "  - {finding}");
        }
        let _ = writeln!(out, "  next: {}", verdict.next_step);
        for pod in &facts.pods {
            let _ = writeln!(
                out,
                "  pod {}: {}, {}{}, {} restarts, node {}",
                pod.name,
                pod.phase.as_deref().unwrap_or("unknown phase"),
                if pod.ready { "Ready" } else { "not Ready" },
                if pod.deleting { ", being deleted" } else { "" },
                pod.restarts,
                pod.node.as_deref().unwrap_or("-"),
            );
        }
        if let Lookup::Found(Some(lease)) = &facts.lease {
            let _ = writeln!(
                out,
                "  lease {}: holder {}, renewed {}, duration {}, transitions {}",
                facts.lease_name,
                lease.holder.as_deref().unwrap_or("none"),
                lease.renewed_seconds_ago_by_server.map_or_else(
                    || "at an unknown time".to_owned(),
                    |s| format!("{s:.0}s ago by the API server's clock")
                ),
                lease
                    .duration_seconds
                    .map_or_else(|| "none".to_owned(), |d| format!("{d}s")),
                lease
                    .transitions
                    .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
            );
        }
        for excerpt in &facts.logs {
            match &excerpt.lines {
                Lookup::Found(lines) => {
                    for line in lines.iter().rev().take(5).rev() {
                        let _ = writeln!(out, "  log {}: {}", excerpt.pod, line.trim());
                    }
                }
                Lookup::Unavailable(why) => {
                    let _ = writeln!(out, "  log {}: none available ({why})", excerpt.pod);
                }
                Lookup::Forbidden(why) | Lookup::Failed(why) => {
                    let _ = writeln!(out, "  log {}: not read ({why})", excerpt.pod);
                }
            }
        }
        for what in &verdict.unchecked {
            let _ = writeln!(out, "  not checked: {what}");
        }
    }
    if let Lookup::Forbidden(why) | Lookup::Failed(why) | Lookup::Unavailable(why) =
        &report.kubevirt_namespaces
    {
        let _ = writeln!(out, "KubeVirt custom resources could not be listed: {why}");
    }
    for what in &report.unchecked {
        let _ = writeln!(out, "not checked: {what}");
    }
    if !report.not_found.is_empty() {
        let _ = writeln!(
            out,
            "not found in any namespace: {}",
            report.not_found.join(", ")
        );
    }
    out
}
