//! `kubectl kubevirt-leader`: the kubectl plugin for people on call. kubectl finds it on the
//! PATH by its name, `kubectl-kubevirt_leader`.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use kubectl_kubevirt_leader::{
    cli::{Cli, PluginCommand},
    diagnose::{self, DiagnoseArgs, Output, bundle},
    render,
    status::{self, StatusArgs},
};
use kubevirt_leader_exporter::{client_for, error_chain, log_filter};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

/// A report goes to stdout: only warnings and errors go to the log.
const LOG_FILTER: &str = "warn,kube_client::client::builder=off";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (filter, warning) = log_filter(LOG_FILTER);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let outcome = match &cli.command {
        PluginCommand::Version => {
            write_out(&format!(
                "kubectl-kubevirt_leader {}\n",
                env!("CARGO_PKG_VERSION")
            ));
            return ExitCode::SUCCESS;
        }
        PluginCommand::Diagnose(args) => run_diagnose(&cli, args).await,
        PluginCommand::Status(args) => run_status(&cli, args).await,
    };
    outcome.unwrap_or_else(|error| {
        // print! and eprintln! panic when the reader has gone (`| head`).
        let _ = writeln!(std::io::stderr(), "Error: {}", error_chain(error.as_ref()));
        ExitCode::from(2)
    })
}

async fn run_diagnose(cli: &Cli, args: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let scope = cli.look.scope().context("invalid configuration")?;
    if let Some(dir) = &args.bundle {
        bundle::check_target(dir)?;
    }
    let client = client_for(cli.kube.config().await?)?;
    let report = diagnose::run(&client, &scope, args).await;
    match args.output {
        Output::Text => write_out(&diagnose::text(&report)),
        Output::Json => write_out(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
    }
    if let Some(dir) = &args.bundle {
        let files = bundle::write(dir, &report).context("writing the bundle")?;
        let _ = writeln!(
            std::io::stderr(),
            "bundle: {} files in {}",
            files.len(),
            dir.display()
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}

async fn run_status(cli: &Cli, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let config = cli.kube.config().await?;
    let credentials = status::Credentials::of(&config, args.token.clone()).await?;
    let client = client_for(config)?;
    let (pod, answer) = status::fetch(&client, args, &credentials).await?;
    if args.output == status::Output::Json {
        // As it is, even when this plugin cannot read it: then the exit status says so.
        write_out(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
        return Ok(ExitCode::from(
            render::read(&answer).map_or(2, |status| render::exit_code(&status)),
        ));
    }
    let status = render::read(&answer)?;
    write_out(&render::render(&pod, &status, args.events));
    Ok(ExitCode::from(render::exit_code(&status)))
}

fn write_out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}
