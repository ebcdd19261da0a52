//! The binary itself: bad configuration stops it at start-up with a clear message, and it
//! shuts down cleanly on SIGTERM.

mod bad_input;

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_kubevirt-leader-exporter");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_non_zero_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("kle-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad_selector = dir.join("bad-selector.yaml");
    std::fs::write(
        &bad_selector,
        "components: [{name: x, lease: x, podSelector: {matchLabels: {'no spaces allowed': y}}}]",
    )
    .expect("write");
    let not_yaml = dir.join("not-yaml.yaml");
    std::fs::write(&not_yaml, "components: [").expect("write");
    let bad_operator = dir.join("bad-operator.yaml");
    std::fs::write(
        &bad_operator,
        "components: [{name: x, lease: x, podSelector: {matchExpressions: [{key: app, operator: Equals, values: [x]}]}}]",
    )
    .expect("write");
    let cases: [(&[&str], &str); 10] = [
        (
            &["--kubeconfig", "/nonexistent/kubeconfig"],
            "No such file or directory",
        ),
        (
            &["--config", "/nonexistent/components.yaml"],
            "/nonexistent/components.yaml",
        ),
        (
            &["--config", bad_selector.to_str().expect("utf-8")],
            "label key",
        ),
        (
            &["--config", not_yaml.to_str().expect("utf-8")],
            "not valid",
        ),
        (&["--namespace", "Not_A_Namespace"], "Not_A_Namespace"),
        (&["--listen", "not-an-address"], "not-an-address"),
        (
            &["--config", bad_operator.to_str().expect("utf-8")],
            "operator \"Equals\" of key \"app\" is not one of In, NotIn, Exists, DoesNotExist",
        ),
        // A grace so long that detection is off, a negative one, a wrong unit.
        (&["--lease-grace", "100y"], "at most 5m"),
        (&["--lease-grace", "-5s"], "must not be negative"),
        (&["--lease-grace", "10 parsecs"], "write it as 10s"),
    ];
    for (args, want) in cases {
        let (ok, stderr) = run(args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        // The cause is said once, not again in a "Caused by" list.
        assert_eq!(stderr.matches(want).count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("Caused by"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_names_every_env_var() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run binary");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LISTEN",
        "LOG_FORMAT",
        "KUBECONFIG",
        "CONFIG",
        "NAMESPACES",
        "LEASE_GRACE",
    ] {
        assert!(
            help.contains(&format!("KUBEVIRT_LEADER_EXPORTER_{var}")),
            "{var} missing:\n{help}"
        );
    }
}

/// The demo example, which `cargo test` builds beside the binary.
fn demo_example() -> std::path::PathBuf {
    let path = std::path::Path::new(BIN)
        .parent()
        .expect("the binary's folder")
        .join("examples/demo");
    assert!(
        path.is_file(),
        "{} is missing: run the whole suite with `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// One plain HTTP/1.0 GET; the whole response, or `None` while nothing listens.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn demo_serves_and_stops_on_sigterm() {
    // A reader that went away before the demo said anything: every line it prints goes into
    // a closed pipe, its first ones before it serves a single request.
    let (reader, closed) = std::io::pipe().expect("pipe");
    drop(reader);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let mut child = Command::new(demo_example())
        .args(["--listen", &addr, "--log-format", "json"])
        .stdout(closed)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // The first judgement of what it watches is logged: anything it would warn about
    // comes with it.
    let mut logs = Vec::new();
    while !logs.iter().any(|l: &String| l.contains("leader present")) {
        let line = logged
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}: no first judgement in {logs:#?}"));
        logs.push(line);
    }
    let metrics = http_get(&addr, "/metrics").expect("serving");
    assert!(
        metrics.contains("kubevirt_leader_exporter_build_info"),
        "{metrics}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("demo did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    logs.extend(logged.try_iter());
    assert!(exit.success(), "{exit:?}\n{logs:#?}");
    // It watches only what it simulates: nothing to warn about.
    let warnings: Vec<_> = logs
        .iter()
        .filter(|l| l.contains(r#""level":"WARN""#))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// The count `name{resource="<resource>"}` has in a scrape.
fn counted(metrics: &str, name: &str, resource: &str) -> Option<f64> {
    let series = format!("{name}{{resource=\"{resource}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn unreachable_api_server_is_named_once_and_logged_without_noise() {
    let dir = std::env::temp_dir().join(format!("kle-cli-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    // An API server that is not there: the exporter starts, logs, and keeps retrying.
    let server = "http://127.0.0.1:9";
    let nowhere = kubevirt_leader_sim::kubeconfig_for(server);
    std::fs::write(&kubeconfig, serde_json::to_string(&nowhere).expect("JSON")).expect("write");
    let mut child = Command::new(BIN)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--listen=127.0.0.1:0", "--log-format=text", "--auth=none"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (lines, logged) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // A pod watch and a lease watch per component the exporter watches by default.
    let components = kubevirt_leader_exporter::config::Settings::with_defaults(Duration::ZERO)
        .components
        .len();
    let watches = 2 * components;
    // Generous: how soon a loaded machine starts the binary is not the claim.
    let patience = Duration::from_secs(60);
    let start = Instant::now();
    let warned = |logs: &[String]| logs.iter().filter(|l| l.contains(" WARN ")).count();
    let mut logs: Vec<String> = Vec::new();
    let mut addr = None;
    // Every watch fails at once and says so.
    while addr.is_none() || warned(&logs) < watches {
        let line = logged
            .recv_timeout(patience.saturating_sub(start.elapsed()))
            .unwrap_or_else(|e| panic!("{e}: not {watches} warnings in {logs:#?}"));
        if let Some((_, rest)) = line.split_once("serving /metrics addr=") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        logs.push(line);
    }
    let addr = addr.expect("address");
    // Then every watch retries and fails again, by the schedule, again and again: the
    // exporter's own count of failures reaches three per watch of each resource. Were a
    // failure warned about at each retry, that would make at least three warnings a watch
    // by now, less one for a failure counted but not yet logged.
    let errors = "kubevirt_leader_exporter_watch_errors_total";
    let enough = (3 * components) as f64;
    let mut metrics = String::new();
    while !["pods", "leases"]
        .iter()
        .all(|r| counted(&metrics, errors, r).is_some_and(|n| n >= enough))
    {
        assert!(
            start.elapsed() < patience,
            "fewer than {enough} failures per resource:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
        metrics = http_get(&addr, "/metrics").unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    // The reader ends with the process's stderr: every line is in.
    reader.join().expect("reader");
    logs.extend(logged.try_iter());
    let logs = logs.join("\n");
    let _ = std::fs::remove_dir_all(dir);
    // Text logs written to a pipe carry no colour codes.
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(!logs.contains("ERROR"), "{logs}");
    assert_eq!(logs.matches(server).count(), 1, "{logs}");
    // One warning per watch, not one per retry, saying the real cause.
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), watches, "{logs}");
    assert!(
        warnings.iter().all(|w| w.contains("Connection refused")),
        "{logs}"
    );
}

/// Every flag of the exporter is in the flag tables of docs/configuration.md with its
/// environment variable, and the tables name no flag that does not exist.
#[test]
fn the_docs_document_every_flag() {
    use clap::CommandFactory;
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let documented: Vec<(String, String)> = docs
        .lines()
        // Flag tables: a flag, then its environment variable.
        .filter(|l| l.starts_with("| `--") && l.contains("| `KUBEVIRT_"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((
                cells.get(1)?.trim_matches('`').to_owned(),
                cells.get(2)?.trim_matches('`').to_owned(),
            ))
        })
        .collect();
    let exporter = kubevirt_leader_exporter::config::Args::command();
    let mut flags: Vec<(String, String)> = exporter
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((format!("--{}", a.get_long()?), env))
        })
        .collect();
    flags.sort();
    flags.dedup();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    documented_sorted.dedup();
    assert_eq!(documented_sorted, flags);
    assert_eq!(
        documented.len(),
        documented_sorted.len(),
        "a flag documented twice"
    );
}

/// `scripts/test` on a machine without the tools: it names the exact command and stops
/// before compiling anything; with them, it runs `cargo test --locked` and its arguments.
#[test]
fn the_test_script_names_what_is_missing_or_runs_cargo_test() {
    let dir = std::env::temp_dir().join(format!("kle-test-script-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("temp dir");
    // A PATH with a shell and the few commands the script uses, and no apt-get.
    for tool in ["bash", "dirname", "id", "sort", "uname", "tr", "grep"] {
        let real = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("bash");
        let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
        let _ = std::os::unix::fs::symlink(real, bin.join(tool));
    }
    let ran = dir.join("cargo-ran");
    let fake = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    };
    fake("cargo", &format!("echo \"$@\" >> {}", ran.display()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test");
    let run_with = |args: &[&str]| {
        Command::new(script)
            .args(args)
            .env_clear()
            .env("PATH", &bin)
            .output()
            .expect("run scripts/test")
    };
    let run = || run_with(&["--test", "cli"]);

    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "sudo apt-get install -y --no-install-recommends chromium gcc-aarch64-linux-gnu \
             kubernetes-client libc6-dev-arm64-cross musl-tools prometheus \
             prometheus-alertmanager qemu-user-static"
        ),
        "{stderr}"
    );
    assert!(!ran.exists(), "cargo ran without the tools");

    for tool in [
        "promtool",
        "prometheus",
        "prometheus-alertmanager",
        "amtool",
        "kubectl",
        "chromium",
        "musl-gcc",
        "aarch64-linux-gnu-gcc",
        "qemu-aarch64-static",
    ] {
        fake(tool, "exit 0");
    }
    // Both static targets installed already.
    fake(
        "rustup",
        "echo x86_64-unknown-linux-musl; echo aarch64-unknown-linux-musl",
    );
    // What cargo was asked to do, the script having succeeded.
    let cargo_ran = |args: &[&str]| {
        let _ = std::fs::remove_file(&ran);
        let out = run_with(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&ran).expect("cargo ran")
    };
    // A chosen test may run another crate's binary, which only the whole suite builds.
    assert_eq!(
        cargo_ran(&["--test", "cli"]),
        "build --locked --bins\ntest --locked --test cli\n"
    );
    // The whole suite first builds the image's static binaries for the node and arch tests
    // and runs the fuzz targets' seeds, a workspace of their own.
    assert_eq!(
        cargo_ran(&[]),
        "build --release --locked --target x86_64-unknown-linux-musl -p kubevirt-leader-exporter \
         --bin kubevirt-leader-exporter\n\
         build --release --locked --target aarch64-unknown-linux-musl -p kubevirt-leader-exporter \
         --bin kubevirt-leader-exporter\ntest --locked --manifest-path fuzz/Cargo.toml\n\
         test --locked\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One row of docs/configuration.md's "Bad input" table: what the user gives, the exit
/// status and the words of the message.
struct BadInput {
    args: Vec<String>,
    exit: i32,
    says: String,
}

/// Every start-up case of the "Bad input" tables: each exits with its status, says its
/// message, and a table shows that message.
#[test]
fn bad_input_gets_the_documented_exit_status_and_message() {
    let dir = std::env::temp_dir().join(format!("kle-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let not_schema = file("not-schema.yaml", "not: [yaml");
    let bad_selector = file(
        "bad-selector.yaml",
        "components: [{name: x, lease: x, podSelector: {matchLabels: {'no spaces': y}}}]",
    );
    let not_yaml = file("not-yaml.yaml", "clusters: [unclosed");
    let no_context = file("no-context.yaml", "apiVersion: v1\nkind: Config\n");
    let good = file(
        "kubeconfig.yaml",
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n",
    );
    let garbage = file("garbage.pem", "garbage");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let kc = format!("--kubeconfig={good}");
    let case = |args: &[&str], exit: i32, says: &str| BadInput {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        exit,
        says: says.to_owned(),
    };
    let cases = [
        case(&["--listen=nowhere"], 2, "invalid socket address syntax"),
        case(&["--lease-grace=-5s"], 2, "must not be negative"),
        case(
            &["--lease-grace=6m"],
            2,
            "at most 5m: a longer grace would hide a dead leader",
        ),
        case(
            &["--pod-check-interval=500ms"],
            2,
            "at least 1s, or 0 to turn the check off",
        ),
        case(&["--log-format=xml"], 2, "[possible values: text, json]"),
        case(
            &["--preset=openshift"],
            2,
            "[possible values: kubevirt, kubevirt-stack, control-plane]",
        ),
        case(
            &["--tls-cert-file=/tls.crt"],
            2,
            "the following required arguments were not provided",
        ),
        case(
            &["--namespace=Bad_NS"],
            1,
            "namespace \"Bad_NS\" is not a valid namespace name",
        ),
        case(
            &["--config=/nonexistent.yaml"],
            1,
            "cannot read config file /nonexistent.yaml",
        ),
        case(&["--config", &not_schema], 1, "expected one of components"),
        case(
            &["--config", &bad_selector],
            1,
            "podSelector: \"no spaces\" is not a valid label key",
        ),
        case(
            &["--kubeconfig=/nonexistent"],
            1,
            "failed to read kubeconfig",
        ),
        case(
            &["--kubeconfig", &not_yaml],
            1,
            "failed to parse kubeconfig YAML",
        ),
        case(
            &["--kubeconfig", &no_context],
            1,
            "failed to determine current context",
        ),
        case(
            &[],
            1,
            "no Kubernetes configuration found (in-cluster, KUBECONFIG or ~/.kube/config)",
        ),
        case(
            &[
                &kc,
                "--tls-cert-file=/nonexistent.crt",
                "--tls-key-file=/nonexistent.key",
            ],
            1,
            "reading /nonexistent.crt",
        ),
        case(
            &[&kc, "--tls-cert-file", &garbage, "--tls-key-file", &garbage],
            1,
            "holds no PEM certificate",
        ),
        case(&[&kc, "--listen", &taken], 1, "cannot listen on"),
        case(&["--auth-reviews-per-second=0"], 2, "0 is not in 1..=1000"),
        case(&["--max-connections=0"], 2, "0 is not in 1..=65536"),
        case(
            &["--max-header-bytes=1024"],
            2,
            "1024 is not in 4096..=1048576",
        ),
        case(&["--write-timeout=500ms"], 2, "between 1s and 5m"),
        case(
            &["--client-ca-file=/ca.crt", "--client-ca-from-cluster"],
            2,
            "cannot be used with",
        ),
        case(
            &["--auth=none", "--client-ca-file=/ca.crt"],
            1,
            "a client CA (--client-ca-file, --client-ca-from-cluster) needs --auth=kubernetes",
        ),
        case(
            &[&kc, "--client-ca-file=/nonexistent-ca.crt"],
            1,
            "reading /nonexistent-ca.crt",
        ),
        case(
            &[&kc, "--client-ca-file", &garbage],
            1,
            "holds no PEM CA certificate",
        ),
        case(
            &["diagnose", "--observe=20s"],
            2,
            "diagnose is not part of the exporter: it is the kubectl plugin",
        ),
    ];
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    for BadInput { args, exit, says } in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let page = "docs/configuration.md";
        bad_input::assert_row(Path::new(BIN), &args, *exit, says, &docs, page);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_grace_too_short_for_a_failover_is_warned_about_at_start() {
    let (_, logs) = run(&[
        "--lease-grace=2s",
        "--log-format=json",
        "--kubeconfig=/nonexistent",
    ]);
    let warning = logs
        .lines()
        .find(|l| l.contains(r#""level":"WARN""#))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(
        warning.contains("--lease-grace 2s is below 8s 800ms") && warning.contains("no leader"),
        "{warning}"
    );
    let (_, logs) = run(&["--log-format=json", "--kubeconfig=/nonexistent"]);
    assert!(!logs.contains("WARN"), "{logs}");
}

/// A reader that goes away (`| head`) is no reason to panic.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let mut child = Command::new(BIN)
        .args(["--kubeconfig=/nonexistent"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take());
    assert_eq!(child.wait().expect("exit").code(), Some(1));
}
