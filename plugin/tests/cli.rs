//! The plugin's command line against its documentation: every flag in docs/diagnose.md's
//! tables with its environment variable (none of them the exporter's), and every bad input
//! with the exit status and message its table gives.

#[path = "../../tests/bad_input/mod.rs"]
mod bad_input;

use std::path::Path;

use clap::CommandFactory;
use kubectl_kubevirt_leader::cli::Cli;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-kubevirt_leader");

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/diagnose.md");
    std::fs::read_to_string(path).expect("docs/diagnose.md")
}

/// (flag, environment variable or `none`) of each row of the flag tables.
fn documented() -> Vec<(String, String)> {
    docs()
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.split('`').nth(1)?.to_owned();
            Some((flag, cells.get(2)?.trim_matches('`').to_owned()))
        })
        .collect()
}

#[test]
fn the_docs_document_every_flag_and_none_is_the_exporters() {
    let cli = Cli::command();
    let mut flags: Vec<(String, String)> = cli
        .get_arguments()
        .chain(cli.get_subcommands().flat_map(|c| c.get_arguments()))
        .filter_map(|a| {
            let env = a
                .get_env()
                .map_or("none".to_owned(), |e| e.to_string_lossy().into_owned());
            Some((format!("--{}", a.get_long()?), env))
        })
        // clap's own.
        .filter(|(flag, _)| flag != "--help" && flag != "--version")
        .collect();
    flags.sort();
    flags.dedup();
    assert!(
        flags
            .iter()
            .all(|(_, env)| !env.starts_with("KUBEVIRT_LEADER_EXPORTER_")),
        "{flags:?}"
    );
    let documented = documented();
    let mut sorted = documented.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, flags);
    assert_eq!(documented.len(), sorted.len(), "a flag documented twice");
}

#[test]
fn bad_input_gets_the_documented_exit_status_and_message() {
    let dir = std::env::temp_dir().join(format!("kkl-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bundle")).expect("temp dir");
    std::fs::write(dir.join("bundle/old-report.txt"), "an earlier bundle").expect("write");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n",
    )
    .expect("write");
    let kc = format!("--kubeconfig={}", kubeconfig.display());
    let bundle = format!("--bundle={}", dir.join("bundle").display());
    let cases: [(&[&str], i32, &str); 5] = [
        (&["diagnose", &bundle], 2, "is not an empty directory"),
        (
            &["diagnose", "--observe=soon"],
            2,
            "invalid value 'soon' for '--observe <OBSERVE>'",
        ),
        (
            &["--request-timeout=soon", "status"],
            2,
            "invalid value 'soon' for '--request-timeout <DURATION>'",
        ),
        (
            &[&kc, "--context=nope", "diagnose"],
            2,
            "failed to load current context: nope",
        ),
        (
            &["diagnose", "--namespace=Not_A_Namespace"],
            2,
            "is not a valid namespace name",
        ),
    ];
    let docs = docs();
    for (args, exit, says) in cases {
        bad_input::assert_row(
            Path::new(PLUGIN),
            args,
            exit,
            says,
            &docs,
            "docs/diagnose.md",
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
