//! The documentation against the repository: every file the README and `docs/` name exists,
//! every link to a heading finds it, every alert links a runbook that exists and is documented
//! with the expression it has, and every measured figure the docs quote is recorded in
//! docs/performance.md next to what it measures. No network, no tools.

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
    // A manifest may hold several documents (`---`), only some of them rules.
    let documents = files.into_iter().flat_map(|file| {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_str_multiple(&read(&file)).expect("valid YAML");
        docs.into_iter().map(move |doc| (file.clone(), doc))
    });
    for (file, doc) in documents {
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

/// What a figure counts, by its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `6.8 MiB`, `213 bytes`.
    Size,
    /// `1.8 s`, `0.01 CPU s`.
    Duration,
    /// `114,771 req/s`: a scrape throughput.
    Throughput,
    /// `10.9/s`, `10 scrapes a second`.
    Rate,
    /// A bare `0.88`: exporter against floor.
    Ratio,
    /// `36 %`.
    Percent,
    /// `0 of 97`, `96/96`.
    Tally,
    /// `3 requests`.
    Requests,
}

/// A figure: its number and unit as both documents are compared in, and what it counts.
#[derive(Clone, Debug, PartialEq)]
struct Figure {
    text: String,
    kind: Kind,
}

impl Figure {
    /// Sizes, throughputs, ratios and tallies are never settings: a page that quotes one
    /// quotes a measurement. Durations, other rates, percentages and request counts are as
    /// often settings (`10 s` of grace, `5 a second`, `0-100 %` of jitter).
    fn always_measured(&self) -> bool {
        matches!(
            self.kind,
            Kind::Size | Kind::Throughput | Kind::Ratio | Kind::Tally
        )
    }
}

/// Units a figure can carry: as written, the form both documents are compared in, the kind.
const UNITS: [(&str, &str, Kind); 23] = [
    ("GiB", "GiB", Kind::Size),
    ("MiB", "MiB", Kind::Size),
    ("KiB", "KiB", Kind::Size),
    ("GB", "GB", Kind::Size),
    ("MB", "MB", Kind::Size),
    ("KB", "KB", Kind::Size),
    ("bytes", "bytes", Kind::Size),
    ("byte", "bytes", Kind::Size),
    ("ms", "ms", Kind::Duration),
    ("µs", "µs", Kind::Duration),
    ("ns", "ns", Kind::Duration),
    ("s", "s", Kind::Duration),
    ("seconds", "s", Kind::Duration),
    ("second", "s", Kind::Duration),
    ("min", "min", Kind::Duration),
    ("minutes", "min", Kind::Duration),
    ("minute", "min", Kind::Duration),
    ("hours", "h", Kind::Duration),
    ("hour", "h", Kind::Duration),
    ("requests", "requests", Kind::Requests),
    ("req/s", "/s", Kind::Throughput),
    ("/s", "/s", Kind::Rate),
    ("%", "%", Kind::Percent),
];

/// A unit as written: its canonical form and kind, or `None`.
fn unit(word: &str) -> Option<(&'static str, Kind)> {
    UNITS
        .iter()
        .find(|(u, _, _)| *u == word)
        .map(|(_, canonical, kind)| (*canonical, *kind))
}

/// Words that join two numbers into a range or a pair: `7.5 to 7.6 MiB`, `8.2 / 8.3 MiB`,
/// `0.64 and 0.66`, `11 → 9.2 MiB`.
const CONNECTORS: [&str; 6] = ["to", "/", "-", "–", "and", "→"];

/// A number as the docs write it (`6.8`, `1,000`, `+41`), normalised; or `None`.
fn number(word: &str) -> Option<String> {
    let digits = word.trim_start_matches('+').replace(',', "");
    let valid = digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !digits.ends_with('.');
    valid.then_some(digits)
}

fn integer(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_digit())
}

/// A ratio is written `0.` and digits: `0.88`. Versions (`1.20.2`) and counts are not.
fn ratio(number: &str) -> bool {
    number.strip_prefix("0.").is_some_and(integer)
}

/// The words of a text as figures are read from them: punctuation around them dropped,
/// `50-minute` as `50 minute`, `0.88-0.96` and `0-100` as ranges, `96/96` as `96 of 96`,
/// `10.9/s` as `10.9 /s`, `36%` as `36 %`.
fn figure_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let word = word.trim_matches(|c: char| "()[]|*;:`'\",.!?".contains(c));
        if word.is_empty() {
            continue;
        }
        if let Some(n) = word.strip_suffix('%').filter(|n| number(n).is_some()) {
            out.extend([n.to_owned(), "%".to_owned()]);
        } else if let Some(n) = word.strip_suffix("/s").filter(|n| number(n).is_some()) {
            out.extend([n.to_owned(), "/s".to_owned()]);
        } else if let Some((a, b)) = word
            .split_once('/')
            .filter(|(a, b)| integer(&a.replace(',', "")) && integer(&b.replace(',', "")))
        {
            out.extend([a.to_owned(), "of".to_owned(), b.to_owned()]);
        } else if let Some((n, rest)) = word.split_once(['-', '–']).filter(|(n, rest)| {
            number(n).is_some() && (unit(rest).is_some() || number(rest).is_some())
        }) {
            // `50-minute` is `50 minute`; `2-core` stays one word, as core is no unit.
            if unit(rest).is_some() {
                out.extend([n.to_owned(), rest.to_owned()]);
            } else {
                out.extend([n.to_owned(), "-".to_owned(), rest.to_owned()]);
            }
        } else {
            out.push(word.to_owned());
        }
    }
    out
}

/// The figures in a text: every number with a unit, alone or in a range or pair (`7.5 to
/// 7.6 MiB`, `8.2 / 8.3 MiB`), each as "number unit"; CPU time (`0.01 CPU s`); a tally
/// (`0 of 97`, `96/96`, as "0 of 97"); a rate (`10.9/s`, `10 scrapes a second`, `94,000
/// requests per second`, as "10 /s"); and a bare ratio (`0.88`).
fn figures(text: &str) -> Vec<Figure> {
    let words = figure_words(text);
    let word = |i: usize| words.get(i).map(String::as_str);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let Some(first) = number(&words[i]) else {
            i += 1;
            continue;
        };
        let mut run = vec![first];
        let mut next = i + 1;
        while let Some(n) = word(next + 1)
            .filter(|_| word(next).is_some_and(|c| CONNECTORS.contains(&c)))
            .and_then(number)
        {
            run.push(n);
            next += 2;
        }
        let each = |unit: &str, kind: Kind| {
            run.iter()
                .map(|n| Figure {
                    text: format!("{n} {unit}"),
                    kind,
                })
                .collect::<Vec<_>>()
        };
        // `0 of 97 scrapes`, but not `5 of 10 minutes`.
        if let [n] = run.as_slice()
            && word(next) == Some("of")
            && let Some(m) = word(next + 1).and_then(number)
            && integer(n)
            && integer(&m)
            && word(next + 2).and_then(unit).is_none()
        {
            out.push(Figure {
                text: format!("{n} of {m}"),
                kind: Kind::Tally,
            });
            i = next + 2;
            continue;
        }
        // `10 scrapes a second`, `5 a second`, `94,000 requests per second`: up to three
        // words before, none a number or another unit.
        let rate = (next..next + 4).find(|&k| {
            matches!(word(k), Some("a" | "per"))
                && word(k + 1) == Some("second")
                && (next..k).all(|j| {
                    number(&words[j]).is_none()
                        && unit(&words[j]).is_none_or(|(_, kind)| kind == Kind::Requests)
                })
        });
        if let Some(k) = rate {
            out.extend(each("/s", Kind::Rate));
            i = k + 2;
        } else if word(next) == Some("CPU") && word(next + 1) == Some("s") {
            out.extend(each("CPU s", Kind::Duration));
            i = next + 2;
        } else if let Some((unit, kind)) = word(next).and_then(unit) {
            out.extend(each(unit, kind));
            i = next + 1;
        } else {
            out.extend(run.iter().filter(|n| ratio(n)).map(|n| Figure {
                text: n.clone(),
                kind: Kind::Ratio,
            }));
            i = next;
        }
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
/// headings, each as one string with the number of its first line.
fn passages(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
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
            .is_some_and(|(_, p)| p.starts_with('|') || p.starts_with('#'));
        if trimmed.is_empty() {
            last = 0;
            continue;
        }
        if number != last + 1 || last == 0 || item || after_row_or_heading {
            out.push((number, String::new()));
        }
        let (_, passage) = out.last_mut().expect("a passage");
        if !passage.is_empty() {
            passage.push(' ');
        }
        passage.push_str(trimmed);
        last = number;
    }
    out
}

/// Where a link to docs/performance.md stood, in a passage's plain text.
const CITES: char = '\u{1}';

/// A passage as the figure check reads it: a link as its text, followed by [`CITES`] when
/// it links docs/performance.md (naming the file in backticks only mentions it); the digits
/// in code spans as `#`, so that flags, ports and versions are no figures; emphasis and
/// escapes dropped.
fn plain(passage: &str) -> String {
    let mut linked = String::new();
    let mut rest = passage;
    while let Some(at) = rest.find("](") {
        let Some(open) = rest[..at].rfind('[') else {
            linked.push_str(&rest[..at + 2]);
            rest = &rest[at + 2..];
            continue;
        };
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        linked.push_str(rest[..open].strip_suffix('!').unwrap_or(&rest[..open]));
        linked.push_str(&rest[open + 1..at]);
        if local_target(target).is_some_and(|p| p.ends_with("performance.md")) {
            linked.push(CITES);
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    linked.push_str(rest);
    let mut out = String::new();
    for (code, part) in spans(&linked) {
        if code {
            out.extend(
                part.chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c }),
            );
        } else {
            out.push_str(part);
        }
    }
    out.replace(['*', '\\'], "")
}

/// The sentences of a plain text: each ends at `.`, `?` or `!` before a space or the end,
/// outside parentheses.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '.' | '?' | '!'
                if depth == 0 && chars.peek().is_none_or(|(_, n)| n.is_whitespace()) =>
            {
                out.push(&text[start..=i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A sentence's units: the sentence without its asides, then each aside in parentheses
/// (with any parentheses inside it).
fn units(sentence: &str) -> Vec<String> {
    let mut main = String::new();
    let mut asides = Vec::new();
    let mut aside = String::new();
    let mut depth = 0usize;
    for c in sentence.chars() {
        match c {
            '(' => {
                if depth > 0 {
                    aside.push(c);
                }
                depth += 1;
            }
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    asides.push(std::mem::take(&mut aside));
                    main.push(' ');
                } else {
                    aside.push(c);
                }
            }
            _ if depth > 0 => aside.push(c),
            _ => main.push(c),
        }
    }
    if !aside.is_empty() {
        asides.push(aside);
    }
    std::iter::once(main).chain(asides).collect()
}

/// The clauses of a unit: split at `,`, `;` and `:` before a space, at `—` and at table
/// cells' `|`. A clause is what a figure in it is said to measure.
fn clauses(unit: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = unit.chars().peekable();
    while let Some(c) = chars.next() {
        let ends = match c {
            '|' | '—' => true,
            ',' | ';' | ':' => chars.peek().is_none_or(|n| n.is_whitespace()),
            _ => false,
        };
        if ends {
            out.push(String::new());
        } else if let Some(clause) = out.last_mut() {
            clause.push(c);
        }
    }
    out.into_iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Phrases that mark what a unit quotes as measured, whatever its figures' units.
const MARKERS: &[&str] = &[
    "measured",
    "in one run",
    "across runs",
    "between runs",
    "cores",
    "p50",
    "p99",
];

/// Whether a unit says it quotes a measurement: a phrase of [`MARKERS`], as whole words.
fn marked(unit: &str) -> bool {
    let words: Vec<String> = unit
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let words = format!(" {} ", words.join(" "));
    MARKERS.iter().any(|m| words.contains(&format!(" {m} ")))
}

/// Words that say nothing about what a figure measures: grammar, numbers in words, hedges,
/// verbs that only introduce a figure (`take`), and `measured`. Units are left out as well.
const STOP_WORDS: &str = "\
    a about after again against all also an and any are around as at be been before \
    between both but by can did do does during each eight every few five for four from \
    had has have how if in into is it its itself just least less many may measure \
    measured measures more most much nearly nine no not of on once one only or other \
    over own per plus roughly same seven six so some such take takes ten than that the \
    their them themselves then there these they this those three times to took two up \
    was what";

/// A word's stem, so that `scrapes`, `scraper` and `scrape`, or `restarted` and `restarts`,
/// compare equal: a plural `s`, then `ing`, `ed` or `er`, then a final `e` dropped.
fn stem(word: &str) -> String {
    let mut w = word.to_owned();
    if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
        w.pop();
    }
    for suffix in ["ing", "ed"] {
        if w.len() >= suffix.len() + 3 && w.ends_with(suffix) {
            w.truncate(w.len() - suffix.len());
            break;
        }
    }
    if w.len() >= 5 && w.ends_with("er") {
        w.truncate(w.len() - 2);
    }
    if w.len() > 3 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// The words of a text that say what it measures, as stems: no stop word, no unit, no
/// number; `resident` is `RSS`, `kube-apiserver` the API server.
fn key_words(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for word in text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’') {
        let word = word.trim_matches(['\'', '’']).to_lowercase();
        let word = word
            .strip_suffix("'s")
            .or_else(|| word.strip_suffix("’s"))
            .unwrap_or(&word);
        if word.len() < 2
            || !word.chars().any(char::is_alphabetic)
            || STOP_WORDS.split_whitespace().any(|w| w == word)
            || UNITS.iter().any(|(u, _, _)| u.eq_ignore_ascii_case(word))
        {
            continue;
        }
        let synonyms: &[&str] = match word {
            "resident" => &["rss"],
            "apiserver" => &["api", "server"],
            word => &[word],
        };
        out.extend(synonyms.iter().map(|w| stem(w)));
    }
    out
}

/// The bare integers of a text that are no figure's number, such as status codes
/// (`answered 429`) and core counts (`on 2 cores`): they qualify what is measured, so a
/// record must hold every one its quote holds.
fn bare_numbers(text: &str) -> std::collections::BTreeSet<String> {
    let numbers: Vec<String> = figures(text)
        .iter()
        .flat_map(|f| f.text.split(' ').filter_map(number).collect::<Vec<_>>())
        .collect();
    figure_words(text)
        .iter()
        .filter_map(|w| number(w))
        .filter(|n| integer(n) && !numbers.contains(n))
        .collect()
}

/// A figure docs/performance.md records, with the words that say what it measures.
#[derive(Debug)]
struct Record {
    figure: String,
    words: std::collections::BTreeSet<String>,
    numbers: std::collections::BTreeSet<String>,
    context: String,
}

/// Every figure of a text, each with the words that say what it measures: in a table, those
/// of its row and of the table's header row; in prose, those of its clause and of the
/// clauses of its sentence that hold no figure (what the sentence is about: "On the real
/// node, with two pods: RSS 7,564 KiB, 6,520 KiB alone"), not those of a clause that holds
/// another figure ("RSS 7.5 MiB, live heap 0.52 MiB" does not record a heap of 7.5 MiB).
fn records(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut header: Option<String> = None;
    for (_, passage) in passages(text) {
        let plain = plain(&passage);
        if !passage.starts_with('|') {
            header = None;
            for sentence in sentences(&plain) {
                let parts = clauses(sentence);
                let shared: Vec<&String> = parts.iter().filter(|c| figures(c).is_empty()).collect();
                for clause in &parts {
                    let mut words = key_words(clause);
                    let mut numbers = bare_numbers(clause);
                    for c in &shared {
                        words.extend(key_words(c));
                        numbers.extend(bare_numbers(c));
                    }
                    out.extend(figures(clause).into_iter().map(|f| Record {
                        figure: f.text,
                        words: words.clone(),
                        numbers: numbers.clone(),
                        context: sentence.to_owned(),
                    }));
                }
            }
            continue;
        }
        if passage.chars().all(|c| "|-: ".contains(c)) {
            continue;
        }
        let context = match &header {
            Some(header) => format!("{plain} {header}"),
            None => {
                header = Some(plain.clone());
                plain.clone()
            }
        };
        out.extend(figures(&plain).into_iter().map(|f| Record {
            figure: f.text,
            words: key_words(&context),
            numbers: bare_numbers(&context),
            context: plain.clone(),
        }));
    }
    out
}

/// A figure a page quotes as measured, with the words of the clause that says what it
/// measures (of its unit, or its sentence, when the clause has none).
#[derive(Debug)]
struct Quote {
    line: usize,
    figure: String,
    words: std::collections::BTreeSet<String>,
    numbers: std::collections::BTreeSet<String>,
    clause: String,
}

/// The figures a text quotes as measured: all of them when `every` (a summary of
/// measurements), else those of a sentence that links docs/performance.md, those of a unit
/// (a sentence without its asides, or an aside) with a phrase of [`MARKERS`], and sizes,
/// throughputs, ratios and tallies wherever they stand.
fn quotes(text: &str, every: bool) -> Vec<Quote> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (start, passage) in passages(text) {
        let plain = plain(&passage);
        for sentence in sentences(&plain) {
            let cites = sentence.contains(CITES);
            for unit in units(sentence) {
                let measured = every || cites || marked(&unit);
                for clause in clauses(&unit) {
                    for figure in figures(&clause) {
                        if !measured && !figure.always_measured() {
                            continue;
                        }
                        let words = [clause.as_str(), unit.as_str(), sentence]
                            .into_iter()
                            .map(key_words)
                            .find(|w| !w.is_empty())
                            .unwrap_or_default();
                        out.push(Quote {
                            line: line_of(&lines, start, &figure.text),
                            figure: figure.text,
                            words,
                            numbers: bare_numbers(&clause),
                            clause: clause.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The line, from a passage's first on, where a figure's (last) number is written, or the
/// passage's first line.
fn line_of(lines: &[&str], start: usize, figure: &str) -> usize {
    let number = figure
        .split(' ')
        .rfind(|w| number(w).is_some())
        .unwrap_or(figure);
    let written = |line: &str| {
        let line = line.replace(',', "");
        line.match_indices(number).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + number.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    (start..start + 40)
        .find(|&n| lines.get(n - 1).is_some_and(|l| written(l)))
        .unwrap_or(start)
}

/// Whether a record stands next to what a quote says it measures: it shares at least half
/// of the quote's key words, and at least two when the quote has two or more, and holds
/// every bare number the quote's clause holds.
fn beside(quote: &Quote, record: &Record) -> bool {
    let shared = quote.words.intersection(&record.words).count();
    let wanted = quote.words.len().div_ceil(2).max(quote.words.len().min(2));
    record.figure == quote.figure && shared >= wanted && quote.numbers.is_subset(&record.numbers)
}

/// Every measured figure the docs quote is recorded in docs/performance.md next to what it
/// measures.
///
/// Quoted, and so checked: every figure of docs/performance.md's "In short", and in
/// README.md, CHANGELOG.md and every other page of docs/:
/// - every figure of a sentence that links docs/performance.md;
/// - every figure of a unit (a sentence without its asides in parentheses, or one such
///   aside) that says it measures: `measured`, `in one run`, `across runs`, `between runs`,
///   `cores` (`on 2 cores`), `p50`, `p99`;
/// - wherever they stand, the figures that are never settings: sizes (`6.8 MiB`, `213
///   bytes`, `6 GB`), throughputs (`114,771 req/s`), bare ratios (`0.88`) and tallies (`0 of
///   97`, `96/96`).
///
/// Durations, other rates (`5 a second`), percentages and request counts anywhere else are
/// taken as facts of configuration (`10 s` of grace, `--auth-reviews-per-second` 10, `0-100
/// %` of jitter) and not checked; a page that quotes such a figure as a measurement says so
/// with one of the phrases above or a link. Code spans hold no figures.
///
/// Recorded: the same figure stands in docs/performance.md outside "In short" next to the
/// same measure. What a quote measures is the key words of its clause (the text between `,`,
/// `;`, `:`, `—` and `|`; the unit's or the sentence's words when the clause has none): its
/// words but grammar, numbers in words, units, `take` and `measured`, compared by stem,
/// `resident` as `RSS`. What a record measures is the key words of its table row and the
/// table's header row, or in prose those of its clause and of the clauses of its sentence
/// that hold no other figure. The record must share at least half of the quote's key words,
/// and at least two when the quote has two or more, and hold every bare integer of the
/// quote's clause that is no figure (`429` in "answered 429"). So "6,520 KiB resident" needs
/// `RSS` beside `6,520 KiB`, and "0 of 97 scrapes during a 10-second flood of made-up tokens"
/// two of `scrape`, `flood`, `made`, `token` beside `0 of 97`.
#[test]
fn measured_figures_are_recorded_in_docs_performance_next_to_what_they_measure() {
    let page = read(&repo().join("docs/performance.md"));
    let summary = section(&page, "## In short");
    let offset = page[..page.find(summary).expect("the summary")]
        .matches('\n')
        .count();
    let recorded = records(&page.replacen(summary, "", 1));
    let mut quoted: Vec<(String, Quote)> = quotes(summary, true)
        .into_iter()
        .map(|mut q| {
            q.line += offset;
            ("docs/performance.md".to_owned(), q)
        })
        .collect();
    assert!(quoted.len() >= 5, "too few figures in In short: {quoted:?}");
    let mut pages = markdown_files();
    pages.push(repo().join("CHANGELOG.md"));
    for file in pages {
        if file.ends_with("docs/performance.md") {
            continue;
        }
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        quoted.extend(
            quotes(&read(&file), false)
                .into_iter()
                .map(|q| (name.clone(), q)),
        );
    }
    for page in ["README.md", "docs/metrics.md", "docs/testing.md"] {
        assert!(
            quoted.iter().any(|(file, _)| file == page),
            "{page} quotes no measured figure: is the scan broken? {quoted:?}"
        );
    }
    let mut wrong = Vec::new();
    for (file, quote) in &quoted {
        let words: Vec<&str> = quote.words.iter().map(String::as_str).collect();
        let at = format!(
            "{file}:{}: {} in \"{}\" (key words: {})",
            quote.line,
            quote.figure,
            quote.clause,
            words.join(", ")
        );
        let same: Vec<&Record> = recorded
            .iter()
            .filter(|r| r.figure == quote.figure)
            .collect();
        if same.is_empty() {
            wrong.push(format!("{at}: recorded nowhere"));
        } else if !same.iter().any(|r| beside(quote, r)) {
            let others: Vec<String> = same
                .iter()
                .map(|r| format!("\"{}\"", r.context.chars().take(120).collect::<String>()))
                .collect();
            wrong.push(format!(
                "{at}: recorded only beside other measures: {}",
                others.join("; ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "measured figures that docs/performance.md does not record next to what they \
         measure:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn passages_and_sections_are_found() {
    let text = "# T\n\nOne\ntwo.\n\n- a\n  b\n- c\n\n| x |\n| y |\n\n```\ncode\n```\nafter\n";
    assert_eq!(
        passages(text),
        [
            (1, "# T".to_owned()),
            (3, "One two.".to_owned()),
            (6, "- a b".to_owned()),
            (8, "- c".to_owned()),
            (10, "| x |".to_owned()),
            (11, "| y |".to_owned()),
            (16, "after".to_owned())
        ]
    );
    let page = "# P\n\n## A\n\ntext\n\n### A1\n\nmore\n\n## B\n\nother\n";
    assert_eq!(section(page, "## A"), "## A\n\ntext\n\n### A1\n\nmore\n\n");
}

#[test]
fn passages_are_read_as_plain_sentences_units_and_clauses() {
    assert!(plain("Figures: [docs/performance.md](performance.md).").contains(CITES));
    assert!(plain("[the figures](../docs/performance.md#figures)").contains(CITES));
    assert!(!plain("checks `docs/performance.md`").contains(CITES));
    assert!(!plain("see [metrics](metrics.md)").contains(CITES));
    assert_eq!(
        plain("**6.8 MiB** ([why](a.md#x)), `--observe 20s`, `0.1.0`"),
        "6.8 MiB (why), --observe ##s, #.#.#"
    );
    assert_eq!(
        sentences("It took 1.8 s. Then (really. twice) 2 s! Done"),
        ["It took 1.8 s.", "Then (really. twice) 2 s!", "Done"]
    );
    assert_eq!(
        units("gets 429 (measured: 0 of 97 (all)) until it ends"),
        ["gets 429   until it ends", "measured: 0 of 97 (all)"]
    );
    assert_eq!(
        clauses("| x | 6.8 MiB on disk, 6,520 KiB resident; at 0.4 s: then — 2 s"),
        [
            "x",
            "6.8 MiB on disk",
            "6,520 KiB resident",
            "at 0.4 s",
            "then",
            "2 s"
        ]
    );
    assert!(marked("Measured against a real kube-apiserver"));
    assert!(marked("means of 6.009 s and 2.007 s in one run"));
    assert!(marked("compiles for about 6.5 minutes on 2 cores"));
    assert!(!marked(
        "kubevirt-leader-exporter measures the time between renewals"
    ));
    assert!(!marked("a lease of 15 s and a grace of 10 s"));
}

#[test]
fn figures_are_read_as_written() {
    let texts = |text: &str| -> Vec<String> { figures(text).into_iter().map(|f| f.text).collect() };
    assert_eq!(
        texts("RSS 7.5 to 7.6 MiB, heap 8.2 / 8.3 MiB; 271 bytes (674,734 bytes); +41 KiB, 6 GB"),
        [
            "7.5 MiB",
            "7.6 MiB",
            "8.2 MiB",
            "8.3 MiB",
            "271 bytes",
            "674734 bytes",
            "41 KiB",
            "6 GB"
        ]
    );
    assert_eq!(
        texts("over 50 minutes, every 5 min, 65 s, a 30-minute run, 0.01 CPU s, 3 requests"),
        [
            "50 min",
            "5 min",
            "65 s",
            "30 min",
            "0.01 CPU s",
            "3 requests"
        ]
    );
    assert_eq!(
        texts("0 of 97 scrapes, 96/96 answered 200, 114,771 / 130,070 req/s = 0.88"),
        ["0 of 97", "96 of 96", "114771 /s", "130070 /s", "0.88"]
    );
    assert_eq!(
        texts("109 = 10.9/s, 10 scrapes a second, 20,000 made-up tokens a second"),
        ["10.9 /s", "10 /s", "20000 /s"]
    );
    assert_eq!(
        texts("between 94,000 and 143,000 requests per second, 0.15 → 0.71–0.89, 36 %, 0-100 %"),
        [
            "94000 /s",
            "143000 /s",
            "0.15",
            "0.71",
            "0.89",
            "36 %",
            "0 %",
            "100 %"
        ]
    );
    assert!(
        texts("a 2-core VM, v1.20.2, Rust 1.95.0, 2026-11-30, 15/10/2 s, status 0/1/2, 3 of those")
            .is_empty()
    );
    let kinds: Vec<bool> = figures("6.8 MiB, 10 s, 0.88, 0 of 97, 5 a second, 1,000 req/s, 36 %")
        .iter()
        .map(Figure::always_measured)
        .collect();
    assert_eq!(kinds, [true, false, true, true, false, true, false]);
}

#[test]
fn a_figure_is_recorded_only_next_to_what_it_measures() {
    let page = "| binary | on disk |\n|---|---|\n| exporter alone | 7,099,720 bytes (6.8 MiB) |\n\n\
                On the real node, the RSS with two pods: 7,564 KiB, 6,520 KiB alone. A scraper \
                checks `/metrics` 10 times a second.\n";
    let recorded = records(page);
    let checks = |quoting: &str| -> Vec<bool> {
        quotes(quoting, true)
            .iter()
            .map(|q| recorded.iter().any(|r| beside(q, r)))
            .collect()
    };
    assert_eq!(checks("6.8 MiB on disk, 6,520 KiB resident"), [true, true]);
    assert_eq!(
        checks("6.8 MiB resident, 6,520 KiB on disk"),
        [false, false]
    );
    assert_eq!(checks("6,420 KiB resident"), [false]);
    assert_eq!(checks("checking 10 scrapes a second"), [true]);
    assert_eq!(checks("10 made-up tokens a second"), [false]);
    let recorded = records("For 70 minutes: RSS 7.5 to 7.7 MiB, live heap 0.52 to 0.63 MiB.\n");
    let checks = |quoting: &str| -> Vec<bool> {
        quotes(quoting, true)
            .iter()
            .map(|q| recorded.iter().any(|r| beside(q, r)))
            .collect()
    };
    assert_eq!(checks("RSS 7.7 MiB, heap 0.63 MiB"), [true, true]);
    assert_eq!(checks("RSS 0.63 MiB, heap 7.7 MiB"), [false, false]);
    let recorded =
        records("| scraper | value |\n|---|---|\n| cached token, flood | 97/97 answered 200 |\n");
    let checks = |quoting: &str| -> Vec<bool> {
        quotes(quoting, true)
            .iter()
            .map(|q| recorded.iter().any(|r| beside(q, r)))
            .collect()
    };
    assert_eq!(
        checks("97/97 scrapes answered 200 during the flood"),
        [true]
    );
    assert_eq!(
        checks("97/97 scrapes answered 429 during the flood"),
        [false]
    );
    assert_eq!(
        bare_numbers("97/97 answered 429 in 8 s on 2 cores, 1,000 pods"),
        ["1000", "2", "429"].map(str::to_owned).into()
    );
    // Only what is said to be measured is quoted from pages other than the summary.
    let quoted =
        |text: &str| -> Vec<String> { quotes(text, false).into_iter().map(|q| q.figure).collect() };
    assert_eq!(
        quoted("A grace of 10 s (5 a second, 2 at once). It takes 6.8 MiB."),
        ["6.8 MiB"]
    );
    assert_eq!(
        quoted("It gets 429 (measured: 0 of 97 scrapes in a 10-second flood). Lease 15 s."),
        ["0 of 97", "10 s"]
    );
    assert_eq!(
        quoted("Back in 1.8 s, see [Performance](performance.md). Lease 15 s."),
        ["1.8 s"]
    );
    assert_eq!(
        key_words("the tests' own kube-apiserver restarted; scrapes resident"),
        ["api", "kub", "restart", "rss", "scrap", "serv", "test"]
            .map(str::to_owned)
            .into()
    );
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
