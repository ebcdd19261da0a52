//! A row of a "Bad input" table, run: the binary given what the user gives stops with the
//! row's exit status and says the row's words, and the table shows them. Shared by the
//! exporter's (docs/configuration.md) and the kubectl plugin's (docs/diagnose.md) tests.

use std::{path::Path, process::Command};

/// Runs `binary` with `args` and nothing of this environment but a `HOME` without a
/// kubeconfig; asserts `exit` and `says`, no panic, and the row `| exit | `says`` in `docs`
/// (`page`, for the message).
pub fn assert_row(binary: &Path, args: &[&str], exit: i32, says: &str, docs: &str, page: &str) {
    let out = Command::new(binary)
        .args(args)
        .env_clear()
        .env("HOME", "/nonexistent")
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let row = format!("| {exit} | `{says}`");
    assert!(docs.contains(&row), "{page}'s bad-input table has no {row}");
}
