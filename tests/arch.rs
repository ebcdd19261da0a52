//! The static exporter of another architecture than the build machine's: the arm64 binary
//! `scripts/build-static arm64` makes (as the Dockerfile does for `--platform linux/arm64`),
//! run under `qemu-aarch64-static` (Debian's qemu-user-static) against a real kube-apiserver,
//! judging a real client-go elector.

mod common;
mod envtest;

use std::path::{Path, PathBuf};

use envtest::{EXPORTER_TOKEN, ExporterProcess};

const TRIPLE: &str = "aarch64-unknown-linux-musl";
const QEMU: &str = "qemu-aarch64-static";
/// ELF's `e_machine` for AArch64.
const EM_AARCH64: u16 = 183;

/// The ELF header's machine, and whether the binary asks for no interpreter (static).
fn elf_machine(binary: &Path) -> u16 {
    let bytes = std::fs::read(binary).expect("read the binary");
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is no ELF file",
        binary.display()
    );
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn on_path(command: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(command))
            .find(|path| path.is_file())
    })
}

/// A one-line script that runs `binary` under qemu with the arguments it gets, for the
/// harness that starts an exporter binary.
fn under_qemu(qemu: &Path, binary: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("kle-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("kubevirt-leader-exporter");
    let text = format!(
        "#!/bin/sh\nexec {} {} \"$@\"\n",
        qemu.display(),
        binary.display()
    );
    std::fs::write(&script, text).expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm64_static_exporter_judges_a_real_elector() {
    if envtest::assets().is_none() {
        return;
    }
    let Some(binary) = envtest::static_binary(TRIPLE) else {
        return;
    };
    assert_eq!(elf_machine(&binary), EM_AARCH64, "{}", binary.display());
    let Some(qemu) = on_path(QEMU) else {
        envtest::not_run(&format!(
            "{QEMU} is missing (Debian's qemu-user-static; scripts/test installs it)"
        ));
        return;
    };
    let Some((plane, admin, cluster)) = envtest::api_server(&["kubevirt"]).await else {
        return;
    };
    plane.grant_exporter_rbac(&admin).await;
    plane.grant_elector_rbac(&admin, "kubevirt").await;
    for pod in ["virt-operator-a", "virt-operator-b"] {
        cluster.pod("kubevirt", pod, true).await;
    }
    let elector = plane.elector("kubevirt", "virt-operator", "virt-operator-a", &[]);
    elector.until_leading().await;

    let exporter = ExporterProcess::spawn(
        &under_qemu(&qemu, &binary),
        &plane.kubeconfig_file(EXPORTER_TOKEN),
        &["--auth=none"],
    );
    let http = common::http();
    let operator = [("component", "virt-operator"), ("namespace", "kubevirt")];
    let scrape = common::until(&http, exporter.addr, "the arm64 exporter judging", |s| {
        s.value("kubevirt_leader_present", &operator) == Some(1.0)
            && s.value("kubevirt_leader_holder_ready", &operator) == Some(1.0)
    })
    .await;
    assert_eq!(
        scrape.value("kubevirt_leader_pods_ready", &operator),
        Some(2.0)
    );
    assert_eq!(
        scrape.value(
            "kubevirt_leader_exporter_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}

/// The Dockerfile builds on the build machine's platform with the script the tests run, for
/// the platform asked for, and the build context holds what the script needs.
#[test]
fn the_dockerfile_cross_compiles_with_the_tested_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let build_stage = lines
        .iter()
        .find(|l| l.starts_with("FROM "))
        .expect("a FROM");
    assert!(
        build_stage.starts_with("FROM --platform=$BUILDPLATFORM ")
            && build_stage.ends_with(" AS build"),
        "{build_stage}"
    );
    assert!(lines.contains(&"ARG TARGETARCH"), "{text}");
    assert!(
        lines.contains(
            &"RUN KUBEVIRT_LEADER_EXPORTER_COMMIT=\"$COMMIT\" scripts/build-static \"$TARGETARCH\" /out"
        ),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("COPY --from=build /out/kubevirt-leader-exporter ")),
        "{text}"
    );
    // Docker's platform names are the ones the script takes.
    let script = std::fs::read_to_string(root.join("scripts/build-static")).expect("script");
    for arch in ["amd64 | x86_64)", "arm64 | aarch64)"] {
        assert!(script.contains(arch), "{arch}");
    }
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    // The workspace's members: cargo reads them all, whichever package it builds.
    for needed in [
        "scripts",
        "src",
        "sim",
        "plugin",
        "benches",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        assert!(
            !ignored
                .lines()
                .any(|l| l.trim_end_matches('/') == needed || l.starts_with(&format!("{needed}/"))),
            "{needed} left out of the build context"
        );
    }
}
