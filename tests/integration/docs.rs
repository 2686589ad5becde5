//! The docs kept true: the exit-code table against `src/exit.rs`, the results-column
//! table against the schema, `$ veo-batch … --help` blocks against the binary, every
//! `--flag` the docs name against the binary's flags, every relative link (and its
//! anchor) resolving, the README short and ARCHITECTURE.md naming every module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use veo_batch::checkpoint::schema::COLUMNS;
use veo_batch::exit::Exit;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, ARCHITECTURE.md, CHANGELOG.md and every page of docs/ (not its
/// subfolders: `docs/pending/` holds fragments on their way into the pages).
fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CHANGELOG.md"]
        .iter()
        .map(|f| root().join(f))
        .collect();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The rows of the first table after the heading `heading` (the header and the
/// `| --- |` line skipped), each split into trimmed cells.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let section = text
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        .1;
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            // `\|` inside a cell is a literal bar, not a cell border.
            l.replace("\\|", "\u{0}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect()
        })
        .collect()
}

/// The names written in backticks in `cell`, in order.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_exit_code_table_matches_src_exit_rs() {
    let page = read(&root().join("docs/running.md"));
    let codes: Vec<u8> = table_after(&page, "## Exit codes")
        .iter()
        .map(|row| row[0].parse().unwrap_or_else(|_| panic!("a code: {row:?}")))
        .collect();
    assert_eq!(codes, Exit::all().map(Exit::code).collect::<Vec<_>>());
}

#[test]
fn the_results_column_table_matches_the_schema() {
    let page = read(&root().join("docs/results-and-status.md"));
    let documented: Vec<String> = table_after(&page, "## The results file")
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .collect();
    let schema: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(documented, schema, "the column table, in file order");
}

/// What `veo-batch ARGS` prints on stdout, with the environment cleared (so the
/// help wraps at clap's default width and shows no variable of this machine).
fn veo_batch(args: &[&str]) -> String {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .args(args)
        .output()
        .expect("veo-batch runs");
    assert_eq!(out.status.code(), Some(0), "veo-batch {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn trimmed(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_owned()
}

#[test]
fn help_blocks_are_what_the_binary_prints() {
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !line.trim_start().starts_with("```") {
                continue;
            }
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim_start().starts_with("```"))
                .collect();
            let Some(command) = block.first().and_then(|l| l.strip_prefix("$ veo-batch ")) else {
                continue;
            };
            let args: Vec<&str> = command.split_whitespace().collect();
            if !matches!(args.last(), Some(&"--help" | &"-h")) {
                continue;
            }
            let shown = trimmed(&block[1..].join("\n"));
            let printed = trimmed(&veo_batch(&args));
            assert_eq!(
                shown,
                printed,
                "{}: the block of `veo-batch {command}` is not what it prints",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "the docs show the help of run, validate and status"
    );
}

/// Every `--flag` in `text`: two dashes after a start or a non-word character, then
/// a lowercase letter.
fn flags_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut flags = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let before_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-');
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if before_ok && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    flags
}

#[test]
fn every_flag_the_docs_name_exists() {
    let mut known = BTreeSet::new();
    for sub in [
        &[][..],
        &["validate"],
        &["run"],
        &["status"],
        &["report"],
        &["credits"],
        &["simulate"],
        &["completions"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        known.extend(flags_in(&veo_batch(&args)));
    }
    // Flags of other tools the docs show: cargo, the test harness, criterion,
    // Chromium, pngquant, docker and the AWS CLI.
    let others = [
        "--rm",
        "--recursive",
        "--release",
        "--profile",
        "--test",
        "--bench",
        "--lib",
        "--nocapture",
        "--format",
        "--report-time",
        "--all",
        "--all-targets",
        "--check",
        "--locked",
        "--path",
        "--sample-size",
        "--headless",
        "--window-size",
        "--screenshot",
    ];
    known.extend(others.iter().map(|f| f.to_string()));
    let mut unknown = BTreeMap::new();
    for file in doc_files() {
        for flag in flags_in(&read(&file)) {
            if !known.contains(&flag) {
                unknown
                    .entry(flag)
                    .or_insert_with(Vec::new)
                    .push(file.display().to_string());
            }
        }
    }
    assert!(known.contains("--resubmit-in-doubt"), "{known:?}");
    assert!(
        unknown.is_empty(),
        "flags no veo-batch command has: {unknown:#?}"
    );
}

/// GitHub's anchor for a heading: lowercase, only letters, digits, spaces, `-` and
/// `_` kept, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (a repeated heading gets `-1`, `-2`).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading.trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links and images in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Code spans hold examples, not links.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a folder").join(path)
            };
            checked += 1;
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if !anchor.is_empty()
                && dest.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&dest)).contains(anchor)
            {
                broken.push(format!("{}: {target}: no such heading", file.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "the docs link to each other ({checked} links)"
    );
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_anchor_rule_is_github_s() {
    assert_eq!(
        slug("The review page: `veo-batch report`"),
        "the-review-page-veo-batch-report"
    );
    assert_eq!(
        slug("Cron: submit every hour, collect later"),
        "cron-submit-every-hour-collect-later"
    );
    assert_eq!(
        slug("A data team's 10,000-row CSV"),
        "a-data-teams-10000-row-csv"
    );
    let twice = anchors("# A\n## Notes\n```\n# not a heading\n```\n## Notes\n");
    assert_eq!(
        twice,
        ["a", "notes", "notes-1"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn the_readme_stays_short() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; the reference goes in docs/"
    );
}

#[test]
fn architecture_names_every_top_level_module() {
    let text = read(&root().join("ARCHITECTURE.md"));
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("src")).expect("src/ is readable") {
        let path = entry.expect("a src/ entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let shown = if path.is_dir() {
            if name == "snapshots" {
                continue;
            }
            format!("`{name}/`")
        } else if name.ends_with(".rs") {
            format!("`{name}`")
        } else {
            continue;
        };
        if !text.contains(&shown) {
            missing.push(shown);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name {missing:?}"
    );
}
