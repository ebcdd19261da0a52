//! The plugin's flags: kubectl's own for the cluster ([`KubeArgs`]), the components to look
//! at, and one subcommand per tool. None reads the exporter's environment variables: a
//! shell that has them set for a local exporter must not change what the plugin looks at.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kubevirt_leader_exporter::{
    components::{Component, Preset, compose},
    config::{ConfigError, namespaces},
};

use crate::{diagnose::DiagnoseArgs, kubeconfig::KubeArgs, status::StatusArgs};

/// Tells whether the leader-elected components of KubeVirt, its stack and the control plane
/// have a live leader, from your own machine with your own kubeconfig.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "kubectl kubevirt-leader",
    bin_name = "kubectl kubevirt-leader",
    version
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub look: LookArgs,

    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Which components to look for, and where.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LookArgs {
    /// YAML component file (as the exporter's --config), besides the components of --preset.
    /// Default: none.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Built-in components (repeat, or separate with commas): `kubevirt`, `kubevirt-stack`
    /// or `control-plane`, as the exporter's --preset. Default: `kubevirt`, unless --config
    /// is given.
    #[arg(long = "preset", value_enum, value_delimiter = ',', global = true)]
    pub presets: Vec<Preset>,

    /// Namespace the components run in (repeat, or separate with commas). Default: every
    /// namespace, whatever the kubeconfig context's namespace: KubeVirt runs in `kubevirt`
    /// upstream and `openshift-cnv` on OpenShift, and the plugin finds it in either.
    #[arg(short = 'n', long = "namespace", value_delimiter = ',', global = true)]
    pub namespaces: Vec<String>,
}

/// The components and namespaces `diagnose` looks at.
#[derive(Clone, Debug)]
pub struct Scope {
    pub components: Vec<Component>,
    /// Empty for every namespace.
    pub namespaces: Vec<String>,
}

impl LookArgs {
    pub fn scope(&self) -> Result<Scope, ConfigError> {
        Ok(Scope {
            components: compose(&self.presets, self.config.as_deref())?,
            namespaces: namespaces(&self.namespaces)?,
        })
    }
}

#[derive(Clone, Debug, Subcommand)]
pub enum PluginCommand {
    /// Look into a component without a leader, as the NoLeadingVirtOperator runbook does, and
    /// conclude in plain words. Uses --preset, --config and --namespace. Exit status: 0 when
    /// every component found has a live leader, 1 when one has none, 2 when it could not
    /// tell.
    Diagnose(DiagnoseArgs),
    /// What a running exporter sees (its /status.json): components, leaders, lease ages,
    /// recent events. Reached through the API server with a port-forward, with your own
    /// credentials. Exit status as for diagnose.
    Status(StatusArgs),
    /// Print the plugin's version.
    Version,
}
