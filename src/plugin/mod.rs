//! `kubectl kubevirt-leader`, the tools for people, as a kubectl plugin (the binary
//! `kubectl-kubevirt_leader`, named as krew names plugins): `diagnose` looks into a
//! component with the user's own rights, `status` reads what a running exporter sees.

pub mod status;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::{
    config::{ConfigError, DEFAULT_GRACE, Scope, Settings},
    diagnose::DiagnoseArgs,
};

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
    pub scope: Scope,

    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum PluginCommand {
    /// Look into a component without a leader, as the NoLeadingVirtOperator runbook does, and
    /// conclude in plain words. Uses --kubeconfig, --preset, --config and --namespace. Exit
    /// status: 0 when every component found has a live leader, 1 when one has none, 2 when
    /// it could not tell.
    Diagnose(DiagnoseArgs),
    /// What a running exporter sees (its /status.json): components, leaders, lease ages,
    /// recent events. Reached through the API server with a port-forward, with your own
    /// credentials. Exit status as for diagnose.
    Status(status::StatusArgs),
    /// Print the plugin's version.
    Version,
}

impl Cli {
    /// The settings `diagnose` looks with: the components and namespaces of the flags.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut settings = Settings::with_defaults(DEFAULT_GRACE);
        settings.kubeconfig.clone_from(&self.scope.kubeconfig);
        settings.components = self.scope.components()?;
        settings.namespaces = self.scope.namespaces()?;
        Ok(settings)
    }
}

/// How long `status` waits for the exporter's answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
