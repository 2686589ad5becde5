//! The report page of a large batch: what `run` spends writing it at the end, and
//! how its size grows with the jobs. With `REPORT_BENCH_CHROMIUM=PATH`, also how
//! long headless Chromium takes to show, parse and settle the 10,000-job page.
//!
//! Run: `cargo bench --bench report` (`REPORT_BENCH_JOBS=10000,100000` by default).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use veo_batch::checkpoint::{HEADER, Record, State};
use veo_batch::manifest;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what}: {e}")
}

/// A CSV manifest of `n` jobs and the results file of a finished run of it.
fn batch(dir: &Path, n: usize) {
    let mut m = String::with_capacity(n * 80);
    m.push_str("id,prompt,aspect_ratio,seeds\n");
    for i in 0..n {
        let ratio = if i % 2 == 0 { "16:9" } else { "9:16" };
        let _ = writeln!(
            m,
            "job-{i:06},\"shot {i}: a red kite over a beach at dusk, slow pan\",{ratio},{}",
            10_000 + i % 90_000
        );
    }
    let manifest_path = dir.join("batch.csv");
    std::fs::write(&manifest_path, m).unwrap_or_else(|e| fail("write manifest", e));
    let jobs = manifest::load(&manifest_path)
        .unwrap_or_else(|e| fail("load manifest", e))
        .jobs;
    let results = dir.join("results/batch.csv");
    std::fs::create_dir_all(dir.join("results")).unwrap_or_else(|e| fail("mkdir", e));
    let mut w = csv::Writer::from_path(&results).unwrap_or_else(|e| fail("results", e));
    w.write_record(HEADER).unwrap_or_else(|e| fail("write", e));
    for (i, job) in jobs.iter().enumerate() {
        let failed = i % 20 == 7;
        let r = Record {
            job_id: job.id.clone(),
            state: Some(if failed {
                State::Failed
            } else {
                State::Succeeded
            }),
            task_id: Some(format!("veo_task_{i:016x}")),
            attempts: 1,
            model: job.request.model.as_str().into(),
            generation_type: job.request.generation_type.as_str().into(),
            aspect_ratio: job.request.aspect_ratio.as_str().into(),
            prompt: job.request.prompt.clone(),
            fingerprint: job.fingerprint.clone(),
            video_urls: vec![format!("https://files.example.com/{i}.mp4")],
            video_paths: if failed {
                Vec::new()
            } else {
                vec![format!("videos/batch/{}.mp4", job.id)]
            },
            error_code: failed.then_some(400),
            error_message: failed.then(|| "content policy violation".into()),
            submitted_at: Some("2026-03-01T10:00:00Z".into()),
            finished_at: Some("2026-03-01T10:03:00Z".into()),
            updated_at: "2026-03-01T10:03:00Z".into(),
            ..Record::default()
        };
        w.write_record(r.cells())
            .unwrap_or_else(|e| fail("write", e));
    }
    w.flush().unwrap_or_else(|e| fail("flush", e));
}

/// The page's own timings in Chromium (ms from navigation): first paint, parsed
/// (DOMContentLoaded), and settled (its script done, a frame drawn). A copy of the
/// page gets a probe script, and loses its CSP, which would block the probe; the
/// DOM dump's own time (seconds for 10 MB) is not counted.
fn open_in_chromium(chromium: &Path, page: &Path, dir: &Path) -> Result<String, String> {
    let html = std::fs::read_to_string(page).map_err(|e| e.to_string())?;
    let csp = html
        .find("<meta http-equiv=\"Content-Security-Policy\"")
        .ok_or("no CSP")?;
    let csp_end = csp + html[csp..].find('>').ok_or("no CSP end")? + 1;
    let probe = "<script>addEventListener('load',()=>requestAnimationFrame(()=>setTimeout(()=>{\
        const n=performance.getEntriesByType('navigation')[0];\
        const p=performance.getEntriesByType('paint').find(e=>e.name==='first-contentful-paint');\
        document.body.setAttribute('data-probe','first paint '+Math.round(p?p.startTime:-1)+' ms, parsed '+\
        Math.round(n.domContentLoadedEventEnd)+' ms, settled '+Math.round(performance.now())+' ms');},0)));</script></body>";
    let copy = format!("{}{}", &html[..csp], &html[csp_end..]).replace("</body>", probe);
    let probe_page = dir.join("probe.html");
    std::fs::write(&probe_page, copy).map_err(|e| e.to_string())?;
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", probe_page.display()))
        .stderr(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let at = dom.find("data-probe=\"").ok_or("no probe in the DOM")? + "data-probe=\"".len();
    let len = dom[at..].find('"').ok_or("no probe end")?;
    Ok(dom[at..at + len].to_owned())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let sizes: Vec<usize> = std::env::var("REPORT_BENCH_JOBS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for n in sizes {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));
        batch(dir.path(), n);
        let manifest = dir.path().join("batch.csv");
        let results = dir.path().join("results/batch.csv");
        let mut best = Duration::MAX;
        let mut page = None;
        for _ in 0..3 {
            let start = Instant::now();
            page = Some(
                veo_batch::report::after_run(&manifest, &results)
                    .unwrap_or_else(|e| fail("report", e)),
            );
            best = best.min(start.elapsed());
        }
        let Some(page) = page else { return };
        let bytes = std::fs::metadata(&page)
            .unwrap_or_else(|e| fail("page", e))
            .len();
        println!(
            "report page of {n} jobs (manifest and results read again, page written): {:.0} ms, {:.1} µs/job; {:.1} MB, {} bytes/job",
            best.as_secs_f64() * 1e3,
            best.as_secs_f64() * 1e6 / n as f64,
            bytes as f64 / 1e6,
            bytes / n as u64
        );
        if n == 10_000
            && let Some(chromium) = std::env::var_os("REPORT_BENCH_CHROMIUM")
        {
            match open_in_chromium(Path::new(&chromium), &page, dir.path()) {
                Ok(probe) => println!("  opened in headless Chromium: {probe}"),
                Err(e) => println!("  chromium: {e}"),
            }
        }
    }
}
