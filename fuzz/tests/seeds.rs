//! Every seed of every fuzz target, run through the target's entry point (the `run` its
//! `fuzz_target!` calls) with plain `cargo test`, no fuzzer needed: the targets keep
//! compiling against the exporter's library, no seed panics, and every corpus still reaches
//! the judging function (at least one seed ends with per-component series in `/metrics`;
//! for the watch-stream targets, whose baseline has series anyway, one whose lines changed
//! what is judged), so a target that silently stops before the judge fails here instead of
//! fuzzing nothing.

use std::{fs, path::PathBuf};

type Run = fn(&[u8]) -> bool;

/// Every fuzz target: its name in [`TARGETS`] and a test `corpus::<target>` that replays its
/// seeds through `kubevirt_leader_exporter_fuzz::<target>::run`.
macro_rules! targets {
    ($($target:ident),* $(,)?) => {
        const TARGETS: &[&str] = &[$(stringify!($target)),*];

        mod corpus {
            $(
                #[test]
                fn $target() {
                    super::replay(stringify!($target), kubevirt_leader_exporter_fuzz::$target::run);
                }
            )*
        }
    };
}

targets!(component_file, http_request, lease, pod_event, pod_list);

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names of the files in `dir`, sorted.
fn names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fuzz_dir().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .into_string()
                .expect("a UTF-8 file name")
        })
        .collect();
    names.sort();
    names
}

/// Runs every seed of `target` through `run`; fails on a panic (naming the seed in the
/// test's output) and unless some seed reached the per-component series.
fn replay(target: &str, run: Run) {
    let seeds = names(&format!("seeds/{target}"));
    assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ has no seeds");
    let mut reached = Vec::new();
    for seed in &seeds {
        let path = fuzz_dir().join("seeds").join(target).join(seed);
        let data = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        eprintln!("{target}: seed {seed}");
        if run(&data) {
            reached.push(seed.as_str());
        }
    }
    eprintln!("{target}: {reached:?} of {seeds:?} reached the judging function");
    assert!(
        !reached.is_empty(),
        "no seed of fuzz/seeds/{target}/ reached the judging function (per-component series \
         in /metrics, and for a watch stream a change to what is judged) after any of {seeds:?}"
    );
}

#[test]
fn every_target_is_listed_here_built_and_seeded() {
    let listed: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    let files: Vec<String> = names("fuzz_targets")
        .into_iter()
        .map(|f| f.strip_suffix(".rs").expect("a Rust file").to_owned())
        .collect();
    assert_eq!(files, listed, "fuzz_targets/ and the targets replayed here");
    assert_eq!(
        names("seeds"),
        listed,
        "seeds/ and the targets replayed here"
    );
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    for target in &listed {
        let bin = format!("name = \"{target}\"\npath = \"fuzz_targets/{target}.rs\"");
        assert!(
            manifest.contains(&bin),
            "Cargo.toml has no [[bin]] {target}"
        );
        let source = fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{target}.rs")))
            .expect("the target's source");
        let call = format!("kubevirt_leader_exporter_fuzz::{target}::run(data)");
        assert!(
            source.contains(&call),
            "fuzz_targets/{target}.rs does not call {call}, the entry point replayed here"
        );
    }
}
