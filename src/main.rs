use std::{future::Future, io::Write, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use kubevirt_leader_exporter::{
    DEFAULT_LOG_FILTER, Exporter, client,
    config::{Args, Settings},
    error_chain, heap, init_logging,
};
use tokio::signal::unix::{SignalKind, signal};

// Counts the live heap for `kubevirt_leader_exporter_heap_bytes`. The static (musl) build,
// the image's, allocates with mimalloc: musl's own malloc serializes the two worker threads
// on one lock and held the static exporter to 0.52 of the floor's scrape rate, where
// mimalloc gives 0.71 (docs/performance.md, "The static build's allocator").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: heap::CountingAllocator<mimalloc::MiMalloc> =
    heap::CountingAllocator(mimalloc::MiMalloc);
#[cfg(not(target_env = "musl"))]
#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator(std::alloc::System);

// Two workers are plenty for a handful of watches and scrapes, and keep the footprint the
// same on a 2-core and a 96-core node.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    return_freed_memory_at_once();
    if std::env::args().nth(1).as_deref() == Some("diagnose") {
        let _ = writeln!(std::io::stderr(), "{DIAGNOSE_MOVED}");
        return ExitCode::from(2);
    }
    let args = Args::parse();
    init_logging(args.log_format, DEFAULT_LOG_FILTER);
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

/// For people and scripts that still run `kubevirt-leader-exporter diagnose`: diagnose is
/// the kubectl plugin's (`kubectl kubevirt-leader diagnose`), built from this repository.
const DIAGNOSE_MOVED: &str = "Error: diagnose is not part of the exporter: it is the kubectl plugin \
    `kubectl kubevirt-leader diagnose` (`kubectl krew install --manifest=kubevirt-leader.yaml` \
    from a release, or `cargo install --locked --path plugin` from a checkout of this \
    repository; see docs/diagnose.md)";

/// mimalloc returns freed pages to the system a second after they were freed, and only when
/// it is next called on that thread: an idle exporter would keep a burst of scrapes' pages
/// for good. At once, instead: the idle RSS stays that of a quiet exporter. mimalloc's own
/// `MIMALLOC_PURGE_DELAY` (or `MIMALLOC_RESET_DELAY`), when set, still decides.
#[cfg(target_env = "musl")]
fn return_freed_memory_at_once() {
    // `mi_option_purge_delay` of mimalloc v3's include/mimalloc.h, which libmimalloc-sys
    // does not name.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // As mimalloc reads its environment: names in any case, the old name too, empty unset.
    let chosen = std::env::vars_os().any(|(name, value)| {
        !value.is_empty()
            && name.to_str().is_some_and(|name| {
                name.eq_ignore_ascii_case("MIMALLOC_PURGE_DELAY")
                    || name.eq_ignore_ascii_case("MIMALLOC_RESET_DELAY")
            })
    });
    if chosen {
        return;
    }
    // SAFETY: options may be set at any time; mimalloc reads this one each time it purges.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}

/// print! and eprintln! panic when the reader has gone (`| head`): a closed pipe is not
/// worth a panic.
fn say_error(error: &(dyn std::error::Error + 'static)) {
    let _ = writeln!(std::io::stderr(), "Error: {}", error_chain(error));
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
