use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::*;
use crate::checkpoint::{Record, State};
use crate::manifest::Manifest;
use crate::paths::video_path;

/// A prompt, an id and an error message that would run script if not escaped.
const HOSTILE_ID: &str = "<img src=x onerror=alert(1)>\" onfocus=\"alert(2)";
const HOSTILE_PROMPT: &str =
    "<script>document.title='pwned'</script> & \"quotes\" <img src=x onerror=alert(3)>";
const MADE: &str = "2026-03-01T12:00:00Z";

struct Fixture {
    dir: tempfile::TempDir,
    manifest: Manifest,
    loaded: Loaded,
}

fn manifest(dir: &Path) -> Manifest {
    let yaml = format!(
        r#"name: "review <b>batch</b>"
jobs:
  - id: hero
    model: veo3
    prompt: A runner crests a ridge at sunrise
    seeds: 24681
    upgrade: 4k
    keep_original: true
  - id: refused
    prompt: A forbidden scene
  - id: {HOSTILE_ID:?}
    prompt: {HOSTILE_PROMPT:?}
    imageUrls: [https://assets.example.com/a.png]
    aspect_ratio: "9:16"
  - id: doubt
    prompt: Sent, and no answer came
  - id: waiting
    prompt: Not sent yet
"#
    );
    let path = dir.join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    crate::manifest::load(&path).unwrap()
}

fn record(job: &crate::manifest::Job, state: State) -> Record {
    Record {
        job_id: job.id.clone(),
        state: Some(state),
        attempts: 1,
        model: job.request.model.as_str().into(),
        generation_type: job.request.generation_type.as_str().into(),
        aspect_ratio: job.request.aspect_ratio.as_str().into(),
        prompt: job.request.prompt.clone(),
        fingerprint: job.fingerprint.clone(),
        submitted_at: Some("2026-03-01T10:00:00Z".into()),
        updated_at: "2026-03-01T10:00:01Z".into(),
        ..Record::default()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    let jobs = &manifest.jobs;
    // As run records them: relative to the results file's folder.
    let videos = Path::new("../videos");
    let mut hero = record(&jobs[0], State::Succeeded);
    hero.task_id = Some("task-hero".into());
    hero.video_urls = vec!["https://files.example.com/hero.mp4".into()];
    hero.upgrade_urls = vec!["https://files.example.com/hero-4k.mp4".into()];
    hero.video_paths = vec![
        video_path(videos, "hero", 0, "").display().to_string(),
        video_path(videos, "hero", 0, "-4k").display().to_string(),
    ];
    hero.finished_at = Some("2026-03-01T10:04:12Z".into());
    let mut refused = record(&jobs[1], State::Failed);
    refused.task_id = Some("task-refused".into());
    refused.error_code = Some(400);
    refused.error_message = Some("content policy: <b>violence</b>".into());
    refused.finished_at = Some("2026-03-01T10:01:00Z".into());
    let mut hostile = record(&jobs[2], State::Succeeded);
    hostile.task_id = Some("task-<hostile>".into());
    hostile.video_urls = vec!["https://files.example.com/h.mp4".into()];
    hostile.video_paths = vec![
        video_path(videos, jobs[2].stem(), 0, "")
            .display()
            .to_string(),
    ];
    hostile.finished_at = Some("2026-03-01T10:02:00Z".into());
    let mut doubt = record(&jobs[3], State::InDoubt);
    doubt.error_message = Some("no answer within 60s".into());
    let mut records = HashMap::new();
    let mut order = Vec::new();
    for r in [hero, refused, hostile, doubt] {
        order.push(r.job_id.clone());
        records.insert(r.job_id.clone(), r);
    }
    let loaded = Loaded {
        rows: records.len(),
        records,
        order,
        ..Loaded::default()
    };
    Fixture {
        dir,
        manifest,
        loaded,
    }
}

fn batch_of(f: &Fixture, with_manifest: bool) -> Batch<'_> {
    Batch {
        name: &f.manifest.name,
        jobs: with_manifest.then_some(f.manifest.jobs.as_slice()),
        manifest: with_manifest.then_some(Path::new("m.yaml")),
        records: Records::Table(&f.loaded),
        results: Path::new("results/r.csv"),
        prices: f.manifest.prices,
    }
}

/// As if the page were written to `<dir>/results/r.html` with the run in `<dir>`.
fn place_of(f: &Fixture) -> PageDirs {
    PageDirs {
        page_dir: f.dir.path().join("results"),
        cwd: f.dir.path().to_path_buf(),
        results_dir: f.dir.path().join("results"),
    }
}

fn page_of(f: &Fixture, with_manifest: bool) -> String {
    let mut out = Vec::new();
    render(
        &mut out,
        &batch_of(f, with_manifest),
        &place_of(f),
        MADE,
        "h",
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

/// A card as the page's script reads it from the data block.
#[derive(Debug)]
struct Shown {
    id: String,
    state: String,
    prompt: String,
    note: String,
    /// (URL, label)
    videos: Vec<(String, String)>,
    remote: Vec<String>,
    /// (label, text); a list of links reads `text -> href` per item, joined by ` | `.
    facts: Vec<(String, String)>,
}

impl Shown {
    fn fact(&self, label: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }
}

/// The cards in the page's data block, decoded as `page.js` decodes them.
fn cards_in(html: &str) -> Vec<Shown> {
    let block = between(
        html,
        "<script type=\"application/json\" id=\"data\">",
        "</script>",
    );
    let data: serde_json::Value = serde_json::from_str(block).unwrap();
    let dict: Vec<String> = serde_json::from_value(data["dict"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(data["labels"].clone()).unwrap();
    let looks = data["looks"].as_array().unwrap();
    let text = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::Number(n) => dict[n.as_u64().unwrap() as usize].clone(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => panic!("not a text: {other}"),
        }
    };
    data["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let facts = c[6].as_array().unwrap();
            Shown {
                id: text(&c[0]),
                state: looks[c[1].as_u64().unwrap() as usize][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                prompt: text(&c[2]),
                note: text(&c[3]),
                videos: c[4]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| (format!("{}{}", text(&v[0]), text(&v[1])), text(&v[2])))
                    .collect(),
                remote: c[5].as_array().unwrap().iter().map(&text).collect(),
                facts: facts
                    .chunks(2)
                    .map(|pair| {
                        let label = labels[pair[0].as_u64().unwrap() as usize].clone();
                        let value = match &pair[1] {
                            serde_json::Value::Array(items) => items
                                .iter()
                                .map(|i| format!("{} -> {}", text(&i[0]), i[1]))
                                .collect::<Vec<_>>()
                                .join(" | "),
                            v => text(v),
                        };
                        (label, value)
                    })
                    .collect(),
            }
        })
        .collect()
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let start = s.find(open).map(|i| i + open.len()).unwrap();
    let end = start + s[start..].find(close).unwrap();
    &s[start..end]
}

#[test]
fn a_small_page_renders_as_pinned() {
    let html = page_of(&fixture(), true);
    // The body without the page's script; the style and script are checked apart.
    let body = between(&html, "<body>", "<script");
    insta::assert_snapshot!(body);
    let cards = format!("{:#?}", cards_in(&html));
    insta::assert_snapshot!("a_small_page_cards", cards);
}

#[test]
fn user_text_shows_as_text_and_runs_nothing() {
    let html = page_of(&fixture(), true);
    assert_eq!(
        html.matches("<script").count(),
        2,
        "only the page's own script and its data"
    );
    assert_eq!(
        html.matches("</script").count(),
        2,
        "no text closes the data"
    );
    assert!(!html.contains("<img"), "no image element from any input");
    assert!(!html.contains("<b>"), "no markup from names or reasons");
    let markup = html.replace(
        between(
            &html,
            "<script type=\"application/json\" id=\"data\">",
            "</script>",
        ),
        "",
    );
    assert!(
        !markup.contains("\" onfocus="),
        "no attribute breaks out of its quotes"
    );
    // In the data, the markup characters are JSON escapes; decoded, the texts are whole.
    assert!(html.contains(r"\u003cscript\u003edocument.title='pwned'\u003c/script\u003e"));
    let cards = cards_in(&html);
    assert_eq!(cards[2].id, HOSTILE_ID);
    assert_eq!(cards[2].prompt, HOSTILE_PROMPT);
    assert!(cards[1].note.contains("content policy: <b>violence</b>"));
    assert!(html.contains("<h1>review &#60;b&#62;batch&#60;/b&#62;</h1>"));
    // The script writes texts as text: it never hands one to the HTML parser.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!JS.contains(sink), "{sink}");
    }
}

#[test]
fn only_the_pages_own_style_and_script_are_allowed() {
    let html = page_of(&fixture(), true);
    let csp = between(&html, "Content-Security-Policy\" content=\"", "\"");
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    let script = between(&html, "<script>", "</script>");
    assert!(
        html.contains("<script type=\"application/json\" id=\"data\">"),
        "the data block is data: a browser runs no script type but JavaScript"
    );
    let style = between(&html, "<style>", "</style>");
    assert_eq!(script, JS);
    assert_eq!(style, CSS);
    assert!(csp.starts_with("default-src &#39;none&#39;; "), "{csp}");
    assert!(csp.contains(&format!("script-src &#39;sha256-{}&#39;", hash(JS))));
    assert!(csp.contains(&format!("style-src &#39;sha256-{}&#39;", hash(CSS))));
    // Nothing is loaded from anywhere: no external script, style, font or image.
    for needle in ["<link", "@import", "url(", "<iframe", "<object"] {
        assert!(!html.contains(needle), "{needle}");
    }
    for src in html.split("src=\"").skip(1) {
        let url = &src[..src.find('"').unwrap()];
        assert!(!url.contains(':') && !url.starts_with("//"), "{url}");
    }
}

#[test]
fn files_are_labelled_and_found_relative_to_the_page() {
    let f = fixture();
    for with_manifest in [true, false] {
        let html = page_of(&f, with_manifest);
        let hero = &cards_in(&html)[0];
        assert_eq!(
            hero.videos,
            [
                ("../videos/hero-4k.mp4".to_owned(), "4k".to_owned()),
                ("../videos/hero.mp4".to_owned(), "original".to_owned())
            ],
            "the upgrade plays first ({with_manifest})"
        );
    }
}

#[test]
fn jobs_that_did_not_succeed_say_why() {
    let html = page_of(&fixture(), true);
    let cards = cards_in(&html);
    let card = |n: usize| &cards[n - 1];
    assert_eq!(card(2).state, "failed");
    assert!(card(2).note.contains("400: content policy"));
    assert_eq!(card(4).state, "in-doubt");
    assert!(card(4).note.contains("no answer within 60s"));
    assert_eq!(card(5).state, "not-started");
    assert!(card(5).note.contains("Not sent yet"));
    for n in [2, 4, 5] {
        assert!(card(n).videos.is_empty(), "job {n}: no player");
        assert!(card(n).remote.is_empty(), "job {n}: no result to offer");
    }
    assert!(html.contains("2 succeeded"));
    // The service gives a failed task's credits back: no cost on its card, none in
    // the sum. Spent: veo3 at 720p (225) with a 4K upgrade (120) and a veo3_fast
    // job with a task (60), 405; estimated: every job, 585.
    assert_eq!(
        card(2).fact("Cost"),
        Some("none (the service refunds a failed task)")
    );
    assert!(html.contains("spent about 405 credits ($2.03) of 585 credits ($2.93) estimated"));
}

#[test]
fn without_a_manifest_the_results_file_is_enough() {
    let html = page_of(&fixture(), false);
    let cards = cards_in(&html);
    assert_eq!(cards.len(), 4, "the jobs that have a record");
    assert!(html.contains("(at the default prices)"));
    assert!(
        cards.iter().all(|c| c.fact("Seed").is_none()),
        "the results file has no seed"
    );
}

#[test]
fn the_page_grows_by_the_same_size_per_job() {
    let size = |n: usize| {
        let f = fixture();
        let template = f.loaded.records["refused"].clone();
        let mut records = HashMap::new();
        let mut order = Vec::new();
        for i in 0..n {
            let id = format!("job-{i:06}");
            order.push(id.clone());
            records.insert(
                id.clone(),
                Record {
                    job_id: id,
                    ..template.clone()
                },
            );
        }
        let loaded = Loaded {
            records,
            order,
            ..Loaded::default()
        };
        page_of(&Fixture { loaded, ..f }, false).len()
    };
    // Per job, the same bytes but for the digits of its place (`job-999`, `job-1000`).
    let (one, two, four) = (size(1000), size(2000), size(4000));
    let per_job = |bytes: usize, jobs: usize| bytes as f64 / jobs as f64;
    let (a, b) = (per_job(two - one, 1000), per_job(four - two, 2000));
    assert!((a - b).abs() < 0.01 * a, "{a} vs {b} bytes per job");
}

#[test]
fn times_read_as_people_write_them() {
    assert_eq!(
        view::show_time("2026-03-01T10:04:12Z"),
        "2026-03-01 10:04:12 UTC"
    );
    assert_eq!(
        view::between("2026-03-01T10:00:00Z", "2026-03-01T10:04:12Z").as_deref(),
        Some("4m 12s")
    );
    assert_eq!(view::between("x", "2026-03-01T10:04:12Z"), None);
    // One credit format, the terminal's: `2.5`, never `2.50`.
    assert_eq!(crate::cost::credits(370.0), "370");
    assert_eq!(crate::cost::credits(2.5), "2.5");
}

#[test]
fn a_results_file_read_as_a_list_gives_the_same_page() {
    let f = fixture();
    let path = f.dir.path().join("r.csv");
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(crate::checkpoint::HEADER).unwrap();
    for id in &f.loaded.order {
        w.write_record(f.loaded.records[id].cells()).unwrap();
    }
    w.flush().unwrap();
    let listed = crate::checkpoint::load_listed(&path, 0).unwrap().unwrap();
    for with_manifest in [true, false] {
        let render_with = |records| {
            let batch = Batch {
                records,
                ..batch_of(&f, with_manifest)
            };
            let mut out = Vec::new();
            render(&mut out, &batch, &place_of(&f), MADE, "h").unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render_with(Records::List(&listed)),
            render_with(Records::Table(&f.loaded)),
            "with the manifest: {with_manifest}"
        );
    }
}

/// `report` and the end of a run read each record back from its place as its card
/// is drawn: the page is the one drawn from the records held in memory.
#[test]
fn records_read_back_one_at_a_time_give_the_same_page() {
    let f = fixture();
    let path = f.dir.path().join("r.csv");
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(crate::checkpoint::HEADER).unwrap();
    for id in &f.loaded.order {
        w.write_record(f.loaded.records[id].cells()).unwrap();
    }
    w.flush().unwrap();
    let located = crate::checkpoint::load_located(&path).unwrap().unwrap();
    for with_manifest in [true, false] {
        let render_with = |records| {
            let batch = Batch {
                records,
                ..batch_of(&f, with_manifest)
            };
            let mut out = Vec::new();
            render(&mut out, &batch, &place_of(&f), MADE, "h").unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render_with(Records::Located(&located)),
            render_with(Records::Table(&f.loaded)),
            "with the manifest: {with_manifest}"
        );
    }
}

#[test]
fn a_local_image_is_shown_by_its_path_and_not_linked() {
    let urls = [
        "https://a.example/x.png".to_owned(),
        "shots/a.png".to_owned(),
    ];
    let fact = view::Fact::links("Images", &urls);
    assert_eq!(
        fact.items[0].href.as_deref(),
        Some("https://a.example/x.png")
    );
    assert_eq!(fact.items[1].text, "shots/a.png");
    assert_eq!(
        fact.items[1].href, None,
        "a path is not a link from the page"
    );
}

#[test]
fn an_extend_names_the_job_it_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    std::fs::write(
        &path,
        "jobs:\n  - id: base\n    prompt: A ridge at dawn\n  - id: base-part-2\n    extend: base\n    prompt: Down the far slope\n",
    )
    .unwrap();
    let m = crate::manifest::load(&path).unwrap();
    let mut parent = record(&m.jobs[0], State::Failed);
    parent.error_message = Some("content policy".into());
    let mut child = record(&m.jobs[1], State::Blocked);
    child.extends = "base".into();
    child.error_message = Some("the job it extends, \"base\", failed: content policy".into());
    let mut records = HashMap::new();
    let order = vec!["base".to_owned(), "base-part-2".to_owned()];
    records.insert("base".to_owned(), parent);
    records.insert("base-part-2".to_owned(), child);
    let loaded = Loaded {
        rows: 2,
        records,
        order,
        ..Loaded::default()
    };
    let place = PageDirs {
        page_dir: dir.path().join("results"),
        cwd: dir.path().to_path_buf(),
        results_dir: dir.path().join("results"),
    };
    for with_manifest in [true, false] {
        let batch = Batch {
            name: &m.name,
            jobs: with_manifest.then_some(m.jobs.as_slice()),
            manifest: with_manifest.then_some(Path::new("m.yaml")),
            records: Records::Table(&loaded),
            results: Path::new("results/r.csv"),
            prices: m.prices,
        };
        let mut out = Vec::new();
        render(&mut out, &batch, &place, MADE, "h").unwrap();
        let html = String::from_utf8(out).unwrap();
        let cards = cards_in(&html);
        assert_eq!(
            cards[1].fact("Continues"),
            Some("base"),
            "with manifest {with_manifest}: {:?}",
            cards[1]
        );
        assert_eq!(cards[1].state, "blocked", "{:?}", cards[1]);
        assert_eq!(
            cards[0].fact("Continues"),
            None,
            "the base continues nothing"
        );
        // An extend is its own mode, whatever generation type the request carries.
        assert_eq!(cards[1].fact("Mode"), Some("EXTEND"), "{with_manifest}");
        assert_eq!(
            cards[0].fact("Mode"),
            Some("TEXT_2_VIDEO"),
            "{with_manifest}"
        );
    }
}

/// A manifest and the results file of its run, on disk, as `run` leaves them.
fn on_disk(f: &Fixture) -> (std::path::PathBuf, std::path::PathBuf) {
    let results = f.dir.path().join("results/r.csv");
    std::fs::create_dir_all(results.parent().unwrap()).unwrap();
    let mut w = csv::Writer::from_path(&results).unwrap();
    w.write_record(crate::checkpoint::HEADER).unwrap();
    for id in &f.loaded.order {
        w.write_record(f.loaded.records[id].cells()).unwrap();
    }
    w.flush().unwrap();
    (f.manifest.path.clone(), results)
}

/// Appends `r` to the results file at `path`, as a run records a job's new state.
fn append_row(path: &Path, r: &Record) {
    let file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let mut w = csv::Writer::from_writer(file);
    w.write_record(r.cells()).unwrap();
    w.flush().unwrap();
}

#[test]
fn a_file_veo_batch_did_not_write_is_never_replaced() {
    let f = fixture();
    let (manifest, results) = on_disk(&f);
    let page = page_path(&results);
    let theirs = "<!DOCTYPE html><title>my notes</title><p>hand-written</p>\n";
    std::fs::write(&page, theirs).unwrap();
    let err = format!("{:#}", after_run(&manifest, &results).unwrap_err());
    assert!(
        err.contains("is not a page veo-batch wrote") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&page).unwrap(), theirs);
    // Its own page it replaces.
    std::fs::remove_file(&page).unwrap();
    after_run(&manifest, &results).unwrap();
    let mut extra = f.loaded.records["doubt"].clone();
    extra.error_message = Some("still no answer".into());
    append_row(&results, &extra);
    after_run(&manifest, &results).unwrap();
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("still no answer")
    );
}

#[cfg(unix)]
#[test]
fn a_page_of_the_same_inputs_is_not_written_again() {
    use std::os::unix::fs::MetadataExt as _;
    let f = fixture();
    let (manifest, results) = on_disk(&f);
    let page = after_run(&manifest, &results).unwrap();
    // Every write renames a new file into place: a new inode.
    let inode = || std::fs::metadata(&page).unwrap().ino();
    let first = inode();
    after_run(&manifest, &results).unwrap();
    assert_eq!(inode(), first, "nothing changed: the page stays as it was");
    // The results file changes: the page follows.
    let mut extra = f.loaded.records["doubt"].clone();
    extra.attempts = 2;
    append_row(&results, &extra);
    after_run(&manifest, &results).unwrap();
    assert_ne!(inode(), first, "the results changed: a new page");
}

#[test]
fn a_card_shows_resolution_and_duration_and_the_header_groups_thousands() {
    let f = fixture();
    for with_manifest in [true, false] {
        let mut loaded_f = fixture();
        let hero = loaded_f.loaded.records.get_mut("hero").unwrap();
        hero.resolution = "720p".into();
        hero.duration = "8".into();
        let html = page_of(if with_manifest { &f } else { &loaded_f }, with_manifest);
        let hero = &cards_in(&html)[0];
        assert_eq!(hero.fact("Resolution"), Some("720p"), "{with_manifest}");
        assert_eq!(hero.fact("Duration"), Some("8 s"), "{with_manifest}");
    }
    let mut records = HashMap::new();
    let mut order = Vec::new();
    let template = f.loaded.records["hero"].clone();
    for i in 0..1200 {
        let id = format!("job-{i:05}");
        order.push(id.clone());
        records.insert(
            id.clone(),
            Record {
                job_id: id,
                ..template.clone()
            },
        );
    }
    let loaded = Loaded {
        records,
        order,
        ..Loaded::default()
    };
    let html = page_of(&Fixture { loaded, ..f }, false);
    assert!(html.contains("<li class=\"badge total\">1,200 jobs</li>"));
    assert!(html.contains("1,200 succeeded"));
    // 1,200 jobs of veo3 at 720p with a 4K upgrade, at the default prices.
    assert!(
        html.contains("spent about 414,000 credits ($2,070.00)"),
        "{}",
        between(&html, "<dt>Credits</dt>", "</dd>")
    );
}
