//! The documentation against the repository: every file the README and `docs/` name exists,
//! every link to a heading finds it, every alert links a runbook that exists and is documented
//! with the expression it has, and every performance figure quoted outside docs/performance.md's
//! measurements is one they record. No network, no tools.

use std::path::{Path, PathBuf};

/// Where this project's files are published; a `runbook_url` under it must name a file here.
const PROJECT_BLOB: &str =
    "https://github.com/kubevirt-leader-exporter/kubevirt-leader-exporter/blob/main/";

/// Top-level folders whose paths the docs quote in backticks and that must exist. Paths under
/// `target/` (made by builds and tests) and anything else are not checked.
const CHECKED_ROOTS: [&str; 9] = [
    "deploy/",
    "docs/",
    "tests/",
    "src/",
    "examples/",
    "scripts/",
    "sim/",
    "benches/",
    "fuzz/",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every Markdown file under docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files
}

/// The text outside fenced code blocks (``` or ~~~), line by line, with each line's number.
/// Commands in code blocks name files that do not exist yet (`my-rules.yml`) or are made by
/// the command, so they are not checked.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match fence {
            Some(f) if trimmed.starts_with(f) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => out.push((i + 1, line)),
        }
    }
    out
}

/// Splits a line into code spans and the text between them: (is code, text).
fn spans(line: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        let ticks = rest[open..].len() - rest[open..].trim_start_matches('`').len();
        let fence = &rest[open..open + ticks];
        let after = &rest[open + ticks..];
        let Some(close) = after.find(fence) else {
            break;
        };
        out.push((false, &rest[..open]));
        out.push((true, after[..close].trim()));
        rest = &after[close + ticks..];
    }
    out.push((false, rest));
    out
}

/// Targets of `[text](target)` and `![alt](target)` in prose (not in code spans).
fn link_targets(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target);
        rest = &after[end..];
    }
    out
}

/// A code span that is a path into the repository: one word, under a checked folder, no
/// placeholder (`<alert>`, `*`, `$VAR`, `{...}`) and no URL.
fn repo_path(code: &str) -> Option<&str> {
    let path = code.split('#').next().unwrap_or(code);
    let plain = !path.is_empty()
        && !path.contains(char::is_whitespace)
        && !path.contains([
            '<', '>', '*', '$', '{', '}', '[', ']', '(', ')', '|', '=', ':',
        ]);
    (plain && CHECKED_ROOTS.iter().any(|root| path.starts_with(root))).then_some(path)
}

/// What a link target names in the repository, relative to the document, or `None` for a
/// URL, a mail address or an anchor in the same page.
fn local_target(target: &str) -> Option<&str> {
    let external = ["http://", "https://", "mailto:"];
    if target.is_empty()
        || target.starts_with('#')
        || external.iter().any(|p| target.starts_with(p))
    {
        return None;
    }
    Some(target.split('#').next().unwrap_or(target))
}

/// The anchor GitHub gives a heading: lowercase, spaces to `-`, punctuation but `-` and `_`
/// dropped; a link's text stands for the link.
fn anchor(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](target)` reads as `text`.
    while let Some(at) = rest.find("](") {
        let end = rest[at..].find(')').map_or(rest.len(), |e| at + e + 1);
        text.push_str(&rest[..at]);
        rest = &rest[end..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks), a repeated one numbered
/// as GitHub numbers it (`x`, `x-1`, `x-2`).
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, line) in prose(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(line[hashes..].trim().trim_end_matches('#'));
        let mut name = base.clone();
        let mut n = 0;
        while out.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        out.push(name);
    }
    out
}

/// Whether `fragment` names a heading of the Markdown file at `path`; files that are not
/// Markdown (or do not exist: the existence check reports those) pass.
fn heading_exists(path: &Path, fragment: &str) -> bool {
    if path.extension().is_none_or(|x| x != "md") || !path.is_file() {
        return true;
    }
    anchors(&read(path)).iter().any(|a| a == fragment)
}

/// Every `page.md#anchor` link and backticked path in README.md and docs/**/*.md, and every
/// `#anchor` link within a page, names a heading of that page.
#[test]
fn links_to_headings_find_them() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let dir = file.parent().expect("a file has a folder");
        for (number, line) in prose(&text) {
            for (code, part) in spans(line) {
                let targets: Vec<(PathBuf, &str)> = if code {
                    repo_path(part)
                        .and_then(|path| Some((repo().join(path), part.split_once('#')?.1)))
                        .into_iter()
                        .collect()
                } else {
                    link_targets(part)
                        .into_iter()
                        .filter(|t| {
                            !["http://", "https://", "mailto:"]
                                .iter()
                                .any(|p| t.starts_with(p))
                        })
                        .filter_map(|t| {
                            let (path, fragment) = t.split_once('#')?;
                            let path = if path.is_empty() {
                                file.clone()
                            } else {
                                dir.join(path)
                            };
                            Some((path, fragment))
                        })
                        .collect()
                };
                for (path, fragment) in targets {
                    checked += 1;
                    if !heading_exists(&path, fragment) {
                        missing.push(format!(
                            "{name}:{number}: #{fragment} in {}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} anchors found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "the docs link headings that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(
        anchor("Status page and `/status.json`"),
        "status-page-and-statusjson"
    );
    assert_eq!(
        anchor("Next to KubeVirt's own alerts"),
        "next-to-kubevirts-own-alerts"
    );
    assert_eq!(
        anchor("Heap per tracked pod, measured again (2026-11-30)"),
        "heap-per-tracked-pod-measured-again-2026-11-30"
    );
    assert_eq!(anchor("The `cluster` label"), "the-cluster-label");
    assert_eq!(
        anchor("See [the runbook](runbooks/X.md)"),
        "see-the-runbook"
    );
    assert_eq!(
        anchor("What it does when things break"),
        "what-it-does-when-things-break"
    );
    assert_eq!(
        anchors("# A\n## B\n```\n# not a heading\n```\n## B\n#nope\n"),
        ["a", "b", "b-1"]
    );
}

/// Every relative link and every backticked repository path in README.md and docs/**/*.md
/// names a file or folder that exists.
#[test]
fn files_the_docs_name_exist() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        let dir = file.parent().expect("a file has a folder");
        for (number, line) in prose(&text) {
            for (code, part) in spans(line) {
                if code {
                    if let Some(path) = repo_path(part) {
                        checked += 1;
                        if !repo().join(path).exists() {
                            missing.push(format!("{name}:{number}: `{part}`"));
                        }
                    }
                    continue;
                }
                for target in link_targets(part) {
                    if let Some(path) = local_target(target) {
                        checked += 1;
                        if !dir.join(path).exists() {
                            missing.push(format!("{name}:{number}: link ({target})"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "the docs name files that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every alert in the shipped rule files, as (file, alert name, runbook_url if any).
fn alerts() -> Vec<(String, String, Option<String>)> {
    let mut files: Vec<PathBuf> = ["deploy/rules", "deploy/prometheus-operator"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).expect("rules folder"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let doc: serde_json::Value = serde_saphyr::from_str(&read(&file)).expect("valid YAML");
        // A plain rule file has `groups`; a PrometheusRule has them under `spec`.
        let groups = doc
            .get("groups")
            .or_else(|| doc.get("spec").and_then(|s| s.get("groups")));
        let Some(groups) = groups.and_then(|g| g.as_array()) else {
            continue;
        };
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        for rule in groups
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
        {
            if let Some(alert) = rule["alert"].as_str() {
                let url = rule["annotations"]["runbook_url"]
                    .as_str()
                    .map(str::to_owned);
                out.push((name.clone(), alert.to_owned(), url));
            }
        }
    }
    out
}

/// Every shipped alert links its own runbook, docs/runbooks/<alert>.md on the project's
/// GitHub, and that file exists; every runbook belongs to an alert.
#[test]
fn every_alert_links_a_runbook_that_exists() {
    let alerts = alerts();
    assert!(alerts.len() >= 7, "{alerts:?}");
    let mut wrong = Vec::new();
    for (file, alert, url) in &alerts {
        let Some(url) = url else {
            wrong.push(format!("{file}: {alert} has no runbook_url"));
            continue;
        };
        let Some(path) = url.strip_prefix(PROJECT_BLOB) else {
            wrong.push(format!(
                "{file}: {alert} links {url}, not this project's GitHub"
            ));
            continue;
        };
        let path = path.split('#').next().unwrap_or(path);
        if !repo().join(path).is_file() {
            wrong.push(format!(
                "{file}: {alert} links {path}, which does not exist"
            ));
        }
        if path != format!("docs/runbooks/{alert}.md") {
            wrong.push(format!("{file}: {alert} links {path}, not its own runbook"));
        }
    }
    for entry in std::fs::read_dir(repo().join("docs/runbooks")).expect("docs/runbooks") {
        let path = entry.expect("directory entry").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if !alerts.iter().any(|(_, alert, _)| alert == stem) {
            wrong.push(format!("{} belongs to no alert", path.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// An expression as the docs compare it: whitespace collapsed, none just inside brackets.
fn normalise(expr: &str) -> String {
    expr.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(" )", ")")
}

/// The cells of a Markdown table row; `\|` is a `|` inside a cell.
fn cells(row: &str) -> Vec<String> {
    row.replace("\\|", "\u{0}")
        .split('|')
        .map(|c| c.trim().replace('\u{0}', "|"))
        .collect()
}

/// Every shipped alert is in the README's table, linked to its runbook, and in docs/alerts.md's
/// table with its `for` (`none` without one) and its expression as the rule file has them.
#[test]
fn every_alert_is_documented_with_its_expression() {
    let readme = read(&repo().join("README.md"));
    let page = read(&repo().join("docs/alerts.md"));
    let rules: serde_json::Value = serde_saphyr::from_str(&read(
        &repo().join("deploy/rules/kubevirt-leader.rules.yml"),
    ))
    .expect("valid YAML");
    let mut wrong = Vec::new();
    let mut seen = 0;
    for rule in rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
    {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        seen += 1;
        if !readme.contains(&format!("| [{alert}](docs/runbooks/{alert}.md) |")) {
            wrong.push(format!("README.md: no row for {alert} linking its runbook"));
        }
        let start = format!("| [{alert}](runbooks/{alert}.md) |");
        let Some(row) = page.lines().find(|l| l.starts_with(&start)) else {
            wrong.push(format!(
                "docs/alerts.md: no row for {alert} linking its runbook"
            ));
            continue;
        };
        // | alert | severity | for | fires when | expression |
        let row = cells(row);
        let want_for = rule["for"].as_str().unwrap_or("none");
        if row.get(3).map(String::as_str) != Some(want_for) {
            wrong.push(format!(
                "docs/alerts.md: {alert} has for {:?}, not {want_for}",
                row.get(3)
            ));
        }
        let want = normalise(rule["expr"].as_str().expect("expr"));
        let got = row.get(5).map(|c| normalise(c.trim_matches('`')));
        if got.as_deref() != Some(want.as_str()) {
            wrong.push(format!(
                "docs/alerts.md: {alert} shows {got:?}, the rule has {want:?}"
            ));
        }
    }
    assert!(seen >= 7, "only {seen} alerts found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn expressions_and_cells_are_read_as_written() {
    assert_eq!(
        normalise("max by (a) (\n  increase(x[10m])\n  - y\n) > 3"),
        "max by (a) (increase(x[10m]) - y) > 3"
    );
    assert_eq!(
        cells("| a | `x{c!~\"p\\|q\"}` |"),
        ["", "a", "`x{c!~\"p|q\"}`", ""]
    );
}

/// Units a quoted figure can carry, each with the form both documents are compared in.
const UNITS: [(&str, &str); 19] = [
    ("GiB", "GiB"),
    ("MiB", "MiB"),
    ("KiB", "KiB"),
    ("MB", "MB"),
    ("KB", "KB"),
    ("bytes", "bytes"),
    ("byte", "bytes"),
    ("ms", "ms"),
    ("µs", "µs"),
    ("ns", "ns"),
    ("s", "s"),
    ("seconds", "s"),
    ("second", "s"),
    ("min", "min"),
    ("minutes", "min"),
    ("minute", "min"),
    ("hours", "h"),
    ("hour", "h"),
    ("requests", "requests"),
];

/// A number as the docs write it (`6.8`, `1,000`, `+41`), normalised; or `None`.
fn number(word: &str) -> Option<String> {
    let digits = word.trim_start_matches('+').replace(',', "");
    let valid = digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !digits.ends_with('.');
    valid.then_some(digits)
}

/// The figures in a text: every number followed by a unit, alone or as part of a range or
/// pair (`7.5 to 7.6 MiB`, `8.2 / 8.3 MiB`), each as "number unit".
fn figures(text: &str) -> Vec<String> {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| "()[]|*;:`'\"".contains(c)))
        .map(|w| w.trim_end_matches([',', '.']))
        .filter(|w| !w.is_empty())
        // `50-minute` is `50 minute`; `2-core` stays one word, as core is no unit.
        .flat_map(|w| match w.split_once('-') {
            Some((n, u)) if number(n).is_some() && UNITS.iter().any(|(x, _)| *x == u) => {
                vec![n, u]
            }
            _ => vec![w],
        })
        .collect();
    let mut out = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if let Some(n) = number(words[i]) {
            pending.push(n);
            // A range or a pair goes on: `to`, `/`, `-`, `and` and another number.
            if i + 2 < words.len()
                && ["to", "/", "-", "–", "and"].contains(&words[i + 1])
                && number(words[i + 2]).is_some()
            {
                i += 2;
                continue;
            }
            // CPU time is written `0.01 CPU s`.
            let cpu = words.get(i + 1) == Some(&"CPU");
            let unit = words.get(i + 1 + usize::from(cpu)).and_then(|w| {
                UNITS
                    .iter()
                    .find(|(u, _)| u == w && (!cpu || *u == "s"))
                    .map(|(_, canonical)| if cpu { "CPU s" } else { *canonical })
            });
            if let Some(unit) = unit {
                out.extend(pending.iter().map(|n| format!("{n} {unit}")));
            }
            pending.clear();
        } else {
            pending.clear();
        }
        i += 1;
    }
    out
}

/// A Markdown section: from its heading line to the next heading of the same or a higher
/// level, or the end.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let level = heading.len() - heading.trim_start_matches('#').len();
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading}"))
        + 1;
    let body = &text[start..];
    let end = body
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let line = &body[i..];
            let hashes = line.len() - line.trim_start_matches('#').len();
            (1..=level).contains(&hashes) && line[hashes..].starts_with(' ')
        })
        .unwrap_or(body.len());
    &body[..end]
}

/// The passages of a text outside code blocks: paragraphs, list items, table rows and
/// headings, each as one string.
fn passages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last = 0;
    for (number, line) in prose(text) {
        let trimmed = line.trim_start();
        let item = trimmed.starts_with("- ")
            || trimmed.starts_with("* ")
            || trimmed.starts_with('|')
            || trimmed.starts_with('#')
            || trimmed
                .split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        let after_row_or_heading = out
            .last()
            .is_some_and(|p| p.starts_with('|') || p.starts_with('#'));
        if trimmed.is_empty() {
            last = 0;
            continue;
        }
        if number != last + 1 || last == 0 || item || after_row_or_heading {
            out.push(String::new());
        }
        let passage = out.last_mut().expect("a passage");
        if !passage.is_empty() {
            passage.push(' ');
        }
        passage.push_str(trimmed);
        last = number;
    }
    out
}

/// Whether a passage cites docs/performance.md: links to it (naming the file in backticks
/// only mentions it).
fn cites_performance(passage: &str) -> bool {
    spans(passage).iter().any(|(code, part)| {
        !code
            && link_targets(part)
                .iter()
                .any(|t| local_target(t).is_some_and(|p| p.ends_with("performance.md")))
    })
}

/// Every performance figure quoted as a summary, in docs/performance.md's "In short" and in
/// every passage of README.md or docs/ that cites docs/performance.md, is one the page's
/// measurements record (the page without its "In short"), where it is said how and when it
/// was measured.
#[test]
fn quoted_performance_figures_are_recorded_in_docs_performance() {
    let page = read(&repo().join("docs/performance.md"));
    let summary = section(&page, "## In short");
    let recorded = figures(&page.replacen(summary, "", 1));
    let mut quoted: Vec<(String, String)> = figures(summary)
        .into_iter()
        .map(|f| ("docs/performance.md, In short".to_owned(), f))
        .collect();
    assert!(quoted.len() >= 5, "too few figures in In short: {quoted:?}");
    for file in markdown_files() {
        if file.ends_with("docs/performance.md") {
            continue;
        }
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        for passage in passages(&read(&file)) {
            if cites_performance(&passage) {
                quoted.extend(figures(&passage).into_iter().map(|f| (name.clone(), f)));
            }
        }
    }
    assert!(
        quoted.iter().any(|(file, _)| file == "README.md"),
        "the README quotes no figure of docs/performance.md: is the scan broken? {quoted:?}"
    );
    let missing: Vec<&(String, String)> = quoted
        .iter()
        .filter(|(_, f)| !recorded.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "figures quoted from docs/performance.md that its measurements do not record: \
         {missing:?}"
    );
}

#[test]
fn passages_and_sections_are_found() {
    let text = "# T\n\nOne\ntwo.\n\n- a\n  b\n- c\n\n| x |\n| y |\n\n```\ncode\n```\nafter\n";
    assert_eq!(
        passages(text),
        ["# T", "One two.", "- a b", "- c", "| x |", "| y |", "after"]
    );
    let page = "# P\n\n## A\n\ntext\n\n### A1\n\nmore\n\n## B\n\nother\n";
    assert_eq!(section(page, "## A"), "## A\n\ntext\n\n### A1\n\nmore\n\n");
    assert!(cites_performance(
        "Figures: [docs/performance.md](performance.md)."
    ));
    assert!(cites_performance(
        "[the figures](../docs/performance.md#figures)"
    ));
    assert!(!cites_performance("checks `docs/performance.md`"));
    assert!(!cites_performance("see [metrics](metrics.md)"));
}

#[test]
fn figures_are_read_as_written() {
    assert_eq!(
        figures("RSS 7.5 to 7.6 MiB, heap 8.2 / 8.3 MiB; 271 bytes (674,734 bytes); +41 KiB"),
        [
            "7.5 MiB",
            "7.6 MiB",
            "8.2 MiB",
            "8.3 MiB",
            "271 bytes",
            "674734 bytes",
            "41 KiB"
        ]
    );
    assert_eq!(
        figures("over 50 minutes, every 5 min, 65 s, a 30-minute run, 0.01 CPU s"),
        ["50 min", "5 min", "65 s", "30 min", "0.01 CPU s"]
    );
    assert!(figures("a 2-core VM, 10 scrapes a second, v1.20.2").is_empty());
}

#[test]
fn backticked_paths_are_told_from_other_code() {
    assert_eq!(
        repo_path("deploy/rbac/clusterrole.yaml"),
        Some("deploy/rbac/clusterrole.yaml")
    );
    assert_eq!(
        repo_path("docs/performance.md#figures"),
        Some("docs/performance.md")
    );
    assert_eq!(repo_path("docs/runbooks/<alert>.md"), None);
    assert_eq!(repo_path("target/tmp/status-page/"), None);
    assert_eq!(repo_path("fuzz/run [SECONDS]"), None);
    assert_eq!(repo_path("kubectl apply -k deploy/"), None);
    assert_eq!(
        spans("a `b` and ``c ` d`` e"),
        [
            (false, "a "),
            (true, "b"),
            (false, " and "),
            (true, "c ` d"),
            (false, " e")
        ]
    );
}
