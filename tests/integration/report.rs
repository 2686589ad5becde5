//! `veo-batch report` and the page `run` leaves: written, named, found; and the page
//! in a real headless Chromium, opened from disk: its videos play, failures say why,
//! hostile text runs nothing, and nothing leaves the machine.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use veo_batch::checkpoint::{HEADER, Record, State};
use veo_batch::exit::Exit;
use veo_batch::sim::SAMPLE_MP4;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

fn bin() -> Command {
    crate::harness::veo_batch()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_leaves_the_page_and_report_writes_it_again() {
    let mut config = fast_sim();
    config.faults.generation_failure = 0.5;
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(6));
    let out = h.run(&manifest, &[]);
    let page = h.path("results.html");
    assert!(
        stderr(&out).contains(&format!("  report:  {}\n", page.display())),
        "{}",
        stderr(&out)
    );
    let html = std::fs::read_to_string(&page).expect("run wrote the page");
    let cards = cards_in(&html);
    assert_eq!(cards.len(), 6);
    let failed = h
        .results()
        .records
        .values()
        .filter(|r| r.state == Some(State::Failed))
        .count();
    assert_eq!(cards.iter().filter(|c| c.0 == "failed").count(), failed);
    assert_eq!(
        cards.iter().filter(|c| !c.1.is_empty()).count(),
        6 - failed,
        "a player per succeeded job"
    );

    // From the results file alone, elsewhere: the path on stdout, videos found.
    std::fs::remove_file(&page).unwrap();
    let o = bin()
        .current_dir(h.path(""))
        .args(["report", "results.csv"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_eq!(stdout(&o), "results.html\n");
    let cards = cards_in(&std::fs::read_to_string(&page).unwrap());
    assert!(
        cards
            .iter()
            .any(|c| c.1.iter().any(|v| v.starts_with("videos/job-"))),
        "{cards:?}"
    );

    // From the manifest, to a page of its own: links relative to where it is.
    let o = bin()
        .current_dir(h.path(""))
        .args(["report", "m.yaml", "--results", "results.csv", "--out"])
        .arg("pages/review.html")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "pages/review.html\n", "{}", stderr(&o));
    let cards = cards_in(&std::fs::read_to_string(h.path("pages/review.html")).unwrap());
    assert!(
        cards
            .iter()
            .any(|c| c.1.iter().any(|v| v.starts_with("../videos/job-"))),
        "{cards:?}"
    );
    assert_eq!(cards.len(), 6);
}

/// The cards of a page, read from its data block as its script reads them: each
/// card's state and the URLs of its videos.
fn cards_in(html: &str) -> Vec<(String, Vec<String>)> {
    let open = "<script type=\"application/json\" id=\"data\">";
    let start = html.find(open).expect("a data block") + open.len();
    let end = start + html[start..].find("</script>").expect("the block ends");
    let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => data["dict"][n.as_u64().unwrap() as usize]
            .as_str()
            .unwrap()
            .to_owned(),
        other => other.as_str().unwrap().to_owned(),
    };
    data["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let look = c[1].as_u64().unwrap() as usize;
            let state = data["looks"][look][0].as_str().unwrap().to_owned();
            let videos = c[4]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| text(&v[0]) + &text(&v[1]))
                .collect();
            (state, videos)
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn a_run_that_changes_nothing_writes_nothing() {
    use std::os::unix::fs::MetadataExt as _;
    let h = Harness::new(fast_sim());
    let manifest = h.write("m.yaml", &text_jobs(4));
    let first = h.run(&manifest, &[]);
    assert_eq!(
        first.status.code(),
        Some(Exit::Ok as i32),
        "{}",
        stderr(&first)
    );
    // Every write of either file renames a new one into place: a new inode, and
    // the bytes could differ (the page says when it was made).
    let seen = |name: &str| {
        let path = h.path(name);
        (
            std::fs::metadata(&path).unwrap().ino(),
            std::fs::read(&path).unwrap(),
        )
    };
    let (results, page) = (seen("results.csv"), seen("results.html"));
    let calls = h.stats().generate_calls;
    let again = h.run(&manifest, &[]);
    assert_eq!(
        again.status.code(),
        Some(Exit::Ok as i32),
        "{}",
        stderr(&again)
    );
    assert_eq!(h.stats().generate_calls, calls, "nothing was sent again");
    assert!(
        seen("results.csv") == results,
        "the results file was written again"
    );
    assert!(seen("results.html") == page, "the page was written again");
    assert!(
        stderr(&again).contains(&format!(
            "  report:  {}\n",
            h.path("results.html").display()
        )),
        "the summary still names the page: {}",
        stderr(&again)
    );
}

#[test]
fn a_page_that_cannot_be_written_fails_nothing() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("m.yaml", &text_jobs(2));
    // A folder where the page would go.
    std::fs::create_dir(h.path("results.html")).unwrap();
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("warning: the report page was not written: failed to write the report page"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("  report:  "));
}

#[test]
fn report_without_results_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "name: b\njobs:\n  - id: a\n    prompt: x\n",
    )
    .unwrap();
    let o = bin()
        .current_dir(dir.path())
        .args(["report", "m.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(Exit::Usage as i32));
    assert_eq!(
        stderr(&o),
        "error: no results file at `results/b.csv`: nothing has run yet (or pass --results)\n"
    );
    assert!(!dir.path().join("results").exists(), "no page, no folder");
}

// ---------------------------------------------------------------------------------
// In a real browser.

/// A Chromium to drive, or why there is none. `.ci/run` installs Debian's.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VEO_BATCH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `extra` flags, stdout to `out`; killed with
/// its whole process group if it takes longer than a minute.
fn headless(chromium: &Path, profile: &Path, url: &str, extra: &[String], out: &Path) {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(File::create(out).unwrap())
    .stderr(Stdio::null());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took more than a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A listener on 127.0.0.1 that counts the connections made to it, closing each
/// at once (a browser waiting for an answer would wait out its time budget).
struct Trap {
    port: u16,
    knocks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn new() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let knocks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s) = (knocks.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        k.fetch_add(1, Ordering::Relaxed);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Trap {
            port,
            knocks,
            stop,
            thread: Some(thread),
        }
    }

    fn knocks(&self) -> usize {
        self.knocks.load(Ordering::Relaxed)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_page_in_a_browser_plays_its_videos_and_runs_nothing_it_is_given() {
    let Some(chromium) = chromium() else {
        assert!(
            !crate::harness::under_ci(),
            "CI is set and no Chromium is on PATH: the browser test must run (.ci/run installs it: apt-get install chromium)"
        );
        eprintln!(
            "skipping the browser test: no chromium on PATH (apt-get install chromium, or set VEO_BATCH_CHROMIUM)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Anything the page asked of the network would knock here.
    let trap = Trap::new();
    let port = trap.port;
    let hostile = format!(
        "<img src=\"http://127.0.0.1:{port}/img\" onerror=\"document.title='pwned'\">\
         <script>document.title='pwned';fetch('http://127.0.0.1:{port}/script')</script>"
    );
    let yaml = format!(
        r#"name: browser-check
jobs:
  - id: hero
    prompt: A runner at sunrise
    upgrade: 1080p
    keep_original: true
  - id: plain
    prompt: A shoe on wet slate
    imageUrls: [https://assets.example.com/first.png]
  - id: hostile
    prompt: {hostile:?}
  - id: refused
    prompt: Something the service refuses
  - id: moved
    prompt: Its file is gone
  - id: doubt
    prompt: No answer came
"#
    );
    std::fs::write(root.join("m.yaml"), yaml).unwrap();
    let m = veo_batch::manifest::load(&root.join("m.yaml")).unwrap();
    std::fs::create_dir_all(root.join("videos")).unwrap();
    std::fs::create_dir_all(root.join("results")).unwrap();
    let mut rows = Vec::new();
    for job in &m.jobs {
        let mut r = Record {
            job_id: job.id.clone(),
            state: Some(State::Succeeded),
            task_id: Some(format!("task-{}", job.id)),
            attempts: 1,
            model: job.request.model.as_str().into(),
            aspect_ratio: job.request.aspect_ratio.as_str().into(),
            generation_type: job.request.generation_type.as_str().into(),
            prompt: job.request.prompt.clone(),
            fingerprint: job.fingerprint.clone(),
            video_urls: vec![format!("https://files.example.com/{}.mp4", job.id)],
            video_paths: vec![format!("videos/{}.mp4", job.id)],
            submitted_at: Some("2026-03-01T10:00:00Z".into()),
            finished_at: Some("2026-03-01T10:03:00Z".into()),
            updated_at: "2026-03-01T10:03:00Z".into(),
            ..Record::default()
        };
        match job.id.as_str() {
            "hero" => {
                r.upgrade_urls = vec!["https://files.example.com/hero-1080p.mp4".into()];
                r.video_paths.push("videos/hero-1080p.mp4".into());
            }
            "refused" => {
                r.state = Some(State::Failed);
                r.video_urls.clear();
                r.video_paths.clear();
                r.error_code = Some(400);
                r.error_message = Some("content policy violation <b>not bold</b>".into());
            }
            "doubt" => {
                r.state = Some(State::InDoubt);
                r.task_id = None;
                r.video_urls.clear();
                r.video_paths.clear();
                r.error_message = Some("no answer within 60s".into());
            }
            _ => {}
        }
        for p in &r.video_paths {
            if job.id != "moved" {
                std::fs::write(root.join(p), SAMPLE_MP4).unwrap();
            }
        }
        rows.push(r);
    }
    let mut w = csv::Writer::from_path(root.join("results/r.csv")).unwrap();
    w.write_record(HEADER).unwrap();
    for r in &rows {
        w.write_record(r.cells()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let o = bin()
        .current_dir(root)
        .args(["report", "m.yaml", "--results", "results/r.csv"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "results/r.html\n", "{}", stderr(&o));
    let page = root.join("results/r.html");

    // The DOM once the page's script has run and the videos near the screen loaded
    // (a tall window puts every card near it).
    let dom_path = root.join("dom.html");
    let netlog = root.join("net.json");
    headless(
        &chromium,
        &root.join("profile-dom"),
        &file_url(&page),
        &[
            "--virtual-time-budget=10000".into(),
            "--window-size=1280,8000".into(),
            format!("--log-net-log={}", netlog.display()),
            "--dump-dom".into(),
        ],
        &dom_path,
    );
    let dom = std::fs::read_to_string(&dom_path).unwrap();
    assert!(dom.contains("<article"), "chromium dumped the page: {dom}");
    let card = |id: &str| -> String {
        dom.split("<article")
            .find(|c| c.contains(&format!("<h2 class=\"id\">{id}</h2>")))
            .unwrap_or_else(|| panic!("no card for {id}"))
            .to_owned()
    };
    // The page's own script ran (its hash is in the CSP): the controls are shown.
    assert!(
        dom.contains("<nav id=\"controls\" class=\"controls\" aria-label=\"Filter and sort\">")
    );
    for id in ["hero", "plain", "hostile"] {
        let c = card(id);
        assert_eq!(c.matches("<video").count(), 1, "{id}: {c}");
        assert!(
            c.contains("data-media=\"ok\""),
            "{id}'s video resolves: {c}"
        );
    }
    assert!(
        card("hero").contains("src=\"../videos/hero-1080p.mp4\""),
        "the upgrade plays first"
    );
    assert!(
        card("moved").contains("data-media=\"missing\""),
        "a missing file is seen"
    );
    let refused = card("refused");
    assert!(refused.contains("data-state=\"failed\""));
    assert!(refused.contains("400: content policy violation &lt;b&gt;not bold&lt;/b&gt;"));
    assert!(card("doubt").contains("no answer within 60s"));
    // The hostile prompt is text: shown, never run, never fetched.
    let hostile_card = card("hostile");
    assert!(
        hostile_card.contains("&lt;script&gt;document.title='pwned'"),
        "{hostile_card}"
    );
    assert!(!hostile_card.contains("<img") && !hostile_card.contains("<script"));
    assert!(dom.contains("<title>browser-check · veo-batch report</title>"));
    assert!(!dom.contains("pwned</title>"));
    assert_eq!(trap.knocks(), 0, "the page sent a request to the trap");
    let net = std::fs::read_to_string(&netlog).unwrap_or_default();
    for host in ["example.com", &format!("127.0.0.1:{port}")] {
        assert!(!net.contains(host), "the page asked {host} for something");
    }

    // The trap does catch a page that reaches out, so its silence above means something.
    let control = root.join("control.html");
    std::fs::write(
        &control,
        format!("<img src=\"http://127.0.0.1:{port}/control\">"),
    )
    .unwrap();
    headless(
        &chromium,
        &root.join("profile-control"),
        &file_url(&control),
        &["--virtual-time-budget=3000".into(), "--dump-dom".into()],
        &root.join("control-dom.html"),
    );
    assert!(trap.knocks() > 0, "the control page reached the trap");

    let shot = root.join("gallery.png");
    headless(
        &chromium,
        &root.join("profile-shot"),
        &file_url(&page),
        // Real time, not virtual: decoding a video's first frame takes no virtual time.
        &[
            "--timeout=3000".into(),
            "--window-size=1280,1600".into(),
            format!("--screenshot={}", shot.display()),
        ],
        &root.join("shot.log"),
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    // The temp dir goes with the test; VEO_BATCH_SCREENSHOT_DIR keeps a copy.
    if let Some(keep) = std::env::var_os("VEO_BATCH_SCREENSHOT_DIR") {
        let to = Path::new(&keep).join("report-browser-test.png");
        std::fs::copy(&shot, &to).unwrap();
        eprintln!("screenshot: {}", to.display());
    }
}
