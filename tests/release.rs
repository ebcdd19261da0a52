//! `scripts/release` for one architecture, as a release is cut: every file is in SHA256SUMS
//! with its right checksum, the krew manifest passes krew's own validation rules (as
//! krew's `pkg/index/validation` states them) and matches the archives, the archive holds
//! what the manifest installs, the binaries say the version and commit, and each SBOM
//! describes its own binary's dependencies.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const BASE_URL: &str = "https://downloads.example/kubevirt-leader-exporter/v";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The release folder, built once for all the tests here.
fn release() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::temp_dir("release");
        let _ = std::fs::remove_dir_all(&dir);
        let mut release = Command::new(common::repo().join("scripts/release"));
        release
            .arg("--arch=amd64")
            .arg(format!("--base-url={BASE_URL}{VERSION}"))
            .arg(&dir);
        // The static builds scripts/test made are reused, not compiled again.
        common::without_package_env(&mut release);
        run(&mut release);
        dir
    })
}

#[test]
fn every_file_is_in_the_checksums_with_its_own() {
    let dir = release();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    let listed: BTreeMap<String, String> = sums
        .lines()
        .map(|line| {
            let (sum, file) = line.split_once("  ").expect("sha256sum's format");
            (file.to_owned(), sum.to_owned())
        })
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "SHA256SUMS")
        .collect();
    files.sort();
    let exporter = format!("kubevirt-leader-exporter-{VERSION}-linux-amd64");
    let plugin = format!("kubectl-kubevirt_leader-{VERSION}-linux-amd64");
    let mut expected = vec![
        "RELEASE-NOTES.md".to_owned(),
        format!("{exporter}.cdx.json"),
        exporter,
        format!("{plugin}.cdx.json"),
        format!("{plugin}.tar.gz"),
        "kubevirt-leader.yaml".to_owned(),
    ];
    expected.sort();
    assert_eq!(files, expected);
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), files);
    for (file, sum) in &listed {
        assert_eq!(&sha256(&dir.join(file)), sum, "{file}");
    }
    let notes = std::fs::read_to_string(dir.join("RELEASE-NOTES.md")).expect("notes");
    assert!(notes.starts_with(&format!("## {VERSION}")), "{notes}");
    assert_eq!(
        notes.matches("\n## ").count(),
        0,
        "one version's notes only"
    );
}

/// krew's `ValidatePlugin`: the rules a manifest must pass to install, each checked here.
#[test]
fn the_krew_manifest_passes_krews_rules_and_matches_the_archives() {
    let dir = release();
    let text = std::fs::read_to_string(dir.join("kubevirt-leader.yaml")).expect("manifest");
    let manifest: Value = serde_saphyr::from_str(&text).expect("YAML");
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    let name = manifest["metadata"]["name"].as_str().expect("name");
    // IsSafePluginName: `^[\w-]+$`; and kubectl runs `kubectl-<name with _>`.
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{name}"
    );
    assert_eq!(name, "kubevirt-leader");
    let spec = &manifest["spec"];
    let short = spec["shortDescription"].as_str().expect("shortDescription");
    assert!(!short.is_empty() && !short.contains('\n'), "{short:?}");
    assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(
        spec["homepage"]
            .as_str()
            .is_some_and(|h| h.starts_with("https://"))
    );
    // isValidSemver with the leading v krew requires.
    let version = spec["version"].as_str().expect("version");
    assert_eq!(version, format!("v{VERSION}"));
    let numbers: Vec<&str> = version[1..].split('.').collect();
    assert!(
        numbers.len() == 3 && numbers.iter().all(|n| n.parse::<u64>().is_ok()),
        "{version}"
    );
    let platforms = spec["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 1, "one per archive built");
    for platform in platforms {
        let labels = platform["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let mut keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["arch", "os"]);
        assert_eq!(labels["os"], "linux");
        assert_eq!(labels["arch"], "amd64");
        let uri = platform["uri"].as_str().expect("uri");
        let archive = uri
            .strip_prefix(&format!("{BASE_URL}{VERSION}/"))
            .expect("the archive under the base URL");
        let sum = platform["sha256"].as_str().expect("sha256");
        assert!(
            sum.len() == 64 && sum.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{sum}"
        );
        assert_eq!(sum, sha256(&dir.join(archive)), "{archive}");
        let bin = platform["bin"].as_str().expect("bin");
        assert_eq!(bin, format!("kubectl-{}", name.replace('-', "_")));
        let files = platform["files"].as_array().expect("files");
        assert!(!files.is_empty());
        let contents = run(Command::new("tar").arg("-tzf").arg(dir.join(archive)));
        let contents: Vec<&str> = contents
            .lines()
            .map(|l| l.trim_start_matches("./"))
            .collect();
        for file in files {
            let from = file["from"].as_str().expect("from");
            assert!(!from.is_empty() && file["to"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(contents.contains(&from), "{from} not in {contents:?}");
        }
        assert!(contents.contains(&bin), "{bin} not in {contents:?}");
    }
}

/// Whether a 64-bit little-endian ELF file names a program interpreter (`PT_INTERP`), as
/// every dynamically linked program does.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let mut offset = [0; 8];
    offset.copy_from_slice(&elf[0x20..0x28]);
    let table = u64::from_le_bytes(offset) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = table + i * size;
        u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) == 3
    })
}

#[test]
fn the_binaries_say_their_version_and_commit() {
    let dir = release();
    let unpacked = common::temp_dir("release-unpacked");
    std::fs::create_dir_all(&unpacked).expect("dir");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(dir.join(format!(
            "kubectl-kubevirt_leader-{VERSION}-linux-amd64.tar.gz"
        )))
        .arg("-C")
        .arg(&unpacked));
    for file in ["kubectl-kubevirt_leader", "LICENSE", "README.md"] {
        assert!(unpacked.join(file).is_file(), "{file}");
    }
    let plugin = run(Command::new(unpacked.join("kubectl-kubevirt_leader")).arg("--version"));
    assert_eq!(plugin.trim(), format!("kubectl kubevirt-leader {VERSION}"));

    let exporter = dir.join(format!("kubevirt-leader-exporter-{VERSION}-linux-amd64"));
    let version = run(Command::new(&exporter).arg("--version"));
    assert!(version.contains(VERSION), "{version}");
    // build_info's commit label.
    let commit = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(common::repo()));
    let binary = std::fs::read(&exporter).expect("binary");
    let commit = commit.trim().as_bytes();
    assert!(
        binary.windows(commit.len()).any(|w| w == commit),
        "the commit is not in the exporter"
    );
    // Static: no program interpreter, no libc to find on distroless/static.
    assert!(!has_interpreter(&binary), "a dynamically linked exporter");
    let plugin = std::fs::read(unpacked.join("kubectl-kubevirt_leader")).expect("plugin");
    assert!(!has_interpreter(&plugin), "a dynamically linked plugin");
    let _ = std::fs::remove_dir_all(unpacked);
}

/// Each SBOM is of its own package, as built: the plugin's names the port-forwarding
/// (websocket) crates only it uses, the exporter's does not, and neither names a path of
/// the machine that built them.
#[test]
fn each_sbom_lists_its_own_binarys_dependencies() {
    let dir = release();
    let here = common::repo().display().to_string();
    let mut names = Vec::new();
    for (file, package) in [
        (
            format!("kubevirt-leader-exporter-{VERSION}-linux-amd64.cdx.json"),
            "kubevirt-leader-exporter",
        ),
        (
            format!("kubectl-kubevirt_leader-{VERSION}-linux-amd64.cdx.json"),
            "kubectl-kubevirt-leader",
        ),
    ] {
        let text = std::fs::read_to_string(dir.join(&file)).expect("SBOM");
        assert!(!text.contains(&here), "{file} names {here}");
        let bom: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["metadata"]["component"]["name"], package, "{file}");
        assert!(bom.get("serialNumber").is_none(), "a random serial number");
        let components: Vec<String> = bom["components"]
            .as_array()
            .expect("components")
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        for shared in ["kube-client", "rustls", "tokio"] {
            assert!(components.iter().any(|c| c == shared), "{file}: {shared}");
        }
        names.push(components.iter().any(|c| c == "tokio-tungstenite"));
    }
    assert_eq!(names, [false, true], "websockets in the plugin's only");
}
