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
    render(&mut out, &batch_of(f, with_manifest), &place_of(f), MADE).unwrap();
    String::from_utf8(out).unwrap()
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
    let body = between(&html, "<body>", "<script>");
    insta::assert_snapshot!(body);
}

#[test]
fn user_text_shows_as_text_and_runs_nothing() {
    let html = page_of(&fixture(), true);
    assert_eq!(html.matches("<script").count(), 1, "only the page's own");
    assert!(!html.contains("<img"), "no image element from any input");
    assert!(!html.contains("<b>"), "no markup from names or reasons");
    assert!(
        !html.contains("\" onfocus="),
        "no attribute breaks out of its quotes"
    );
    assert!(html.contains("&#60;script&#62;document.title=&#39;pwned&#39;&#60;/script&#62;"));
    assert!(html.contains("content policy: &#60;b&#62;violence&#60;/b&#62;"));
    assert!(html.contains("<h1>review &#60;b&#62;batch&#60;/b&#62;</h1>"));
}

#[test]
fn only_the_pages_own_style_and_script_are_allowed() {
    let html = page_of(&fixture(), true);
    let csp = between(&html, "Content-Security-Policy\" content=\"", "\"");
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    let script = between(&html, "<script>", "</script>");
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
        let hero = between(&html, "id=\"job-1\"", "</article>");
        assert!(
            hero.contains(r#"<figure class="frame" data-src="../videos/hero-4k.mp4""#),
            "the upgrade plays first: {hero}"
        );
        let labels: Vec<&str> = hero
            .split("data-video")
            .skip(1)
            .map(|a| between(a, "\">", "</a>"))
            .collect();
        assert_eq!(labels, ["4k", "original"], "{with_manifest}");
    }
}

#[test]
fn jobs_that_did_not_succeed_say_why() {
    let html = page_of(&fixture(), true);
    let card = |n: usize| between(&html, &format!("id=\"job-{n}\""), "</article>").to_owned();
    assert!(card(2).contains("data-state=\"failed\""));
    assert!(card(2).contains("400: content policy"));
    assert!(card(4).contains("data-state=\"in-doubt\""));
    assert!(card(4).contains("no answer within 60s"));
    assert!(card(5).contains("data-state=\"not-started\""));
    assert!(card(5).contains("Not sent yet"));
    for n in [2, 4, 5] {
        assert!(!card(n).contains("data-src"), "job {n}: no player");
    }
    assert!(html.contains("2 succeeded"));
    // Spent: the 4k job (250 + 120) and two 60-credit tasks; estimated: every job.
    // veo3 at 720p (225) with a 4K upgrade (120), a refused veo3_fast (60) and a
    // veo3_fast job (60): 465 spent of 585.
    assert!(html.contains("spent about 465 credits ($2.33) of 585 credits ($2.93) estimated"));
}

#[test]
fn without_a_manifest_the_results_file_is_enough() {
    let html = page_of(&fixture(), false);
    assert_eq!(
        html.matches("<article").count(),
        4,
        "the jobs that have a record"
    );
    assert!(html.contains("(at the default prices)"));
    assert!(
        !html.contains("<dt>Seed</dt>"),
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
    assert_eq!(view::credits(370.0), "370");
    assert_eq!(view::credits(2.5), "2.50");
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
            render(&mut out, &batch, &place_of(&f), MADE).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render_with(Records::List(&listed)),
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
        render(&mut out, &batch, &place, MADE).unwrap();
        let html = String::from_utf8(out).unwrap();
        let card = |n: usize| between(&html, &format!("id=\"job-{n}\""), "</article>").to_owned();
        assert!(
            card(2).contains("<dt>Continues</dt><dd>base</dd>"),
            "with manifest {with_manifest}: {}",
            card(2)
        );
        assert!(card(2).contains("data-state=\"blocked\""), "{}", card(2));
        assert!(
            !card(1).contains("<dt>Continues</dt>"),
            "the base continues nothing"
        );
    }
}
