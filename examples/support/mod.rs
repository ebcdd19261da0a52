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

/// Builds the release binary for the host, or, when `BENCH_TARGET` names a static (musl)
/// target, the image's binary as `scripts/build-static` builds it for the Dockerfile.
/// `BENCH_BINARY` names a binary built otherwise (with symbols, to profile it) instead.
pub fn build_release() -> anyhow::Result<PathBuf> {
    if let Some(binary) = std::env::var_os("BENCH_BINARY").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(binary));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut build = match bench_target() {
        Some(target) => {
            let Some(cpu) = target.strip_suffix("-unknown-linux-musl") else {
                bail!(
                    "BENCH_TARGET={target}: the static builds are x86_64- and aarch64-unknown-linux-musl"
                );
            };
            let mut build = Command::new(root.join("scripts/build-static"));
            build.arg(cpu).stdout(std::process::Stdio::null());
            build
        }
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
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
            build
        }
    };
    crate::common::without_package_env(&mut build);
    if !build.status()?.success() {
        bail!("release build failed");
    }
    let mut dir = root.join("target");
    if let Some(target) = bench_target() {
        dir.push(target);
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
