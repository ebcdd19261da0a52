//! What the benchmark and the soak share: the release build, and reading a process's
//! memory.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// The build target `BENCH_TARGET` names, if any; the host's otherwise.
pub fn bench_target() -> Option<String> {
    std::env::var("BENCH_TARGET").ok().filter(|t| !t.is_empty())
}

/// Builds the release binary for the host, or for `BENCH_TARGET` when it is set.
pub fn build_release() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = bench_target();
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "kubevirt-leader-exporter",
        "--bin",
        "kubevirt-leader-exporter",
    ]);
    // `cargo run` hands this package's variables to the benchmark. Passed on, they would look
    // like a changed environment to build scripts that watch them (ring's watches
    // CARGO_PKG_NAME), and the nested build would compile ring and all above it again.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| {
            k.starts_with("CARGO_PKG_")
                || matches!(
                    k,
                    "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_PRIMARY_PACKAGE"
                )
        }) {
            build.env_remove(key);
        }
    }
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    if let Some(target) = &target {
        build.args(["--target", target]);
        dir.push(target);
    }
    if !build.status()?.success() {
        bail!("release build failed");
    }
    Ok(dir.join("release/kubevirt-leader-exporter"))
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}
