use std::{
    future::Future,
    io::{IsTerminal, Write},
    process::ExitCode,
};

use anyhow::Context;
use clap::Parser;
use kubevirt_leader_exporter::{
    DEFAULT_LOG_FILTER, Exporter, client,
    config::{Args, Command, LogFormat, Settings},
    diagnose::{self, DiagnoseArgs, Output, bundle},
    error_chain, heap,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

// Counts the live heap for `kubevirt_leader_exporter_heap_bytes`.
#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator;

// Two workers are plenty for a handful of watches and scrapes, and keep the footprint the
// same on a 2-core and a 96-core node.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Diagnose(diagnose)) = &args.command {
        init_tracing(args.log_format, DIAGNOSE_LOG_FILTER);
        return match run_diagnose(&args, diagnose).await {
            Ok(code) => code,
            Err(error) => {
                say_error(error.as_ref());
                ExitCode::from(2)
            }
        };
    }
    init_tracing(args.log_format, DEFAULT_LOG_FILTER);
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say_error(error.as_ref());
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let settings = Settings::from_args(args).context("invalid configuration")?;
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let client = client(settings.kubeconfig.as_deref()).await?;
    let exporter = Exporter::start(&settings, client, shutdown_signal()?).await?;
    exporter.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `diagnose` prints a report: only warnings and errors go to the log.
const DIAGNOSE_LOG_FILTER: &str = "warn,kube_client::client::builder=off";

async fn run_diagnose(args: &Args, diagnose: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args).context("invalid configuration")?;
    if let Some(dir) = &diagnose.bundle {
        bundle::check_target(dir)?;
    }
    let client = client(settings.kubeconfig.as_deref()).await?;
    let report = diagnose::run(&client, &settings, diagnose).await;
    match diagnose.output {
        Output::Text => write_out(&diagnose::text(&report)),
        Output::Json => write_out(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
    }
    if let Some(dir) = &diagnose.bundle {
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

/// print! and eprintln! panic when the reader has gone (`| head`): a closed pipe is not
/// worth a panic.
fn say_error(error: &(dyn std::error::Error + 'static)) {
    let _ = writeln!(std::io::stderr(), "Error: {}", error_chain(error));
}

fn write_out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour codes only for a person at a terminal, never in a log file or pipeline.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Listens for SIGTERM and SIGINT from now on; the returned future completes on the first.
/// A second signal exits at once, for when a graceful stop hangs.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down; a second signal exits at once");
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!("second signal, exiting now");
            std::process::exit(130);
        });
    })
}
