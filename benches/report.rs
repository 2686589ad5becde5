//! What a data team touches around a large finished batch, at 10,000, 100,000 and
//! 1,000,000 jobs: the report page (what `run` spends writing it at the end, what
//! a run that changed nothing spends finding that out, its size), and, each in its
//! own `veo-batch` process measured by `/usr/bin/time` (wall time, peak RSS):
//! `status`, `status --json`, `report` (written, then unchanged), a fresh run of the
//! whole batch against `veo-batch simulate` (its peak memory with the review page;
//! `REPORT_BENCH_FRESH=0` leaves it out) and a resume with nothing left to do.
//! With `REPORT_BENCH_CHROMIUM=PATH`, also how long headless
//! Chromium takes to show the page's first cards, and to filter, search and sort.
//!
//! Run: `cargo bench --bench report` (`REPORT_BENCH_JOBS=10000,100000` by default;
//! `REPORT_BENCH_JOBS=1000000` for the largest). `REPORT_BENCH_DIR` puts the batch
//! under another folder (`/dev/shm`: no disk).

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
    // The videos are there (empty files), as after a finished run: a resume finds
    // nothing to download, and checks every one of them.
    let videos = dir.join("videos/batch");
    std::fs::create_dir_all(&videos).unwrap_or_else(|e| fail("mkdir", e));
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
                std::fs::write(videos.join(format!("{}.mp4", job.id)), b"")
                    .unwrap_or_else(|e| fail("video", e));
                // Relative to the results file's folder, as a run records it.
                vec![format!("../videos/batch/{}.mp4", job.id)]
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

/// The page's own timings in Chromium (ms from navigation): parsed
/// (DOMContentLoaded), its first cards drawn, and a filter, a search and a sort. A copy of the
/// page gets a probe script, and loses its CSP, which would block the probe; the
/// DOM dump's own time (seconds for 10 MB) is not counted.
fn open_in_chromium(chromium: &Path, page: &Path, dir: &Path) -> Result<String, String> {
    let html = std::fs::read_to_string(page).map_err(|e| e.to_string())?;
    let csp = html
        .find("<meta http-equiv=\"Content-Security-Policy\"")
        .ok_or("no CSP")?;
    let csp_end = csp + html[csp..].find('>').ok_or("no CSP end")? + 1;
    // At the load event (the page's script has drawn the first cards): the time so
    // far with the layout done, then one filter, one search and one sort, each timed
    // with the layout it causes (read back at once). All of it in the load handler:
    // headless Chromium dumps the DOM right after it, and its virtual time (which
    // would let later timers run) stops the clock.
    let probe = "<script>addEventListener('load',()=>{\
        const n=performance.getEntriesByType('navigation')[0];\
        void document.body.offsetHeight;\
        const drawn=performance.now();\
        const cards=document.querySelectorAll('article').length;\
        const time=(f)=>{const t=performance.now();f();void document.body.offsetHeight;return Math.round(performance.now()-t);};\
        const failed=time(()=>document.querySelector('[data-filter=failed]').click());\
        const all=time(()=>document.querySelector('[data-filter=all]').click());\
        const s=document.getElementById('search');\
        const search=time(()=>{s.value='job-000077';s.dispatchEvent(new Event('input'));});\
        const found=document.querySelectorAll('article').length;\
        time(()=>{s.value='';s.dispatchEvent(new Event('input'));});\
        const o=document.getElementById('sort');\
        const sort=time(()=>{o.value='new';o.dispatchEvent(new Event('change'));});\
        document.body.setAttribute('data-probe','parsed '+Math.round(n.domContentLoadedEventEnd)+\
        ' ms, first '+cards+' cards drawn and laid out at '+Math.round(drawn)+' ms; filter '+failed+\
        ' ms, all again '+all+' ms, search '+search+' ms ('+found+' found), sort '+sort+' ms');});</script></body>";
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

/// Runs `veo-batch ARGS` in `dir` under `/usr/bin/time`: its wall time and peak
/// RSS, or why not.
fn measured(dir: &Path, args: &[&str]) -> String {
    measured_with(dir, args, &[])
}

/// [`measured`], with the environment variables `env` set.
fn measured_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(env!("CARGO_BIN_EXE_veo-batch"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return format!("/usr/bin/time: {e}"),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    let mut figures = last.split_whitespace();
    match (
        figures.next().and_then(|s| s.parse::<f64>().ok()),
        figures.next().and_then(|s| s.parse::<f64>().ok()),
    ) {
        (Some(secs), Some(kb)) => format!(
            "{:.0} ms, peak RSS {:.1} MiB (exit {})",
            secs * 1e3,
            kb / 1024.0,
            out.status.code().unwrap_or(-1)
        ),
        _ => format!("no figures: {err}"),
    }
}

/// A fresh run of the manifest at `manifest` (copied into its own folder under
/// `dir`) against `veo-batch simulate` in its own process, time-scaled, with no
/// rate limits: the run's wall time and peak RSS, review page included.
fn fresh_run(dir: &Path, manifest: &Path) -> String {
    use std::io::BufRead as _;
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap_or_else(|e| fail("mkdir", e));
    std::fs::copy(manifest, fresh.join("batch.csv")).unwrap_or_else(|e| fail("copy", e));
    let mut sim = Command::new(env!("CARGO_BIN_EXE_veo-batch"))
        .args(["simulate", "--port", "0", "--time-scale", "0.001"])
        .args([
            "--rate",
            "none",
            "--poll-rate",
            "none",
            "--credits",
            "1000000000",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail("simulate", e));
    let mut line = String::new();
    if let Some(out) = sim.stdout.take() {
        let mut out = std::io::BufReader::new(out);
        let _ = out.read_line(&mut line);
        // Whatever else it prints is read, so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    let figure = measured_with(
        &fresh,
        &[
            "run",
            "batch.csv",
            "--api-base",
            &url,
            "--rate",
            "100000/1s",
            "--poll-rate",
            "100000/1s",
            "--poll-interval",
            "50ms",
            "--yes",
            "-q",
        ],
        &[("KIE_API_KEY", "sim-key")],
    );
    let _ = sim.kill();
    let _ = sim.wait();
    let _ = std::fs::remove_dir_all(&fresh);
    figure
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let sizes: Vec<usize> = std::env::var("REPORT_BENCH_JOBS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let base = std::env::var_os("REPORT_BENCH_DIR");
    for n in sizes {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        }
        .unwrap_or_else(|e| fail("temp dir", e));
        batch(dir.path(), n);
        let manifest = dir.path().join("batch.csv");
        let results = dir.path().join("results/batch.csv");
        let results_bytes = std::fs::metadata(&results).map_or(0, |m| m.len());
        println!(
            "{n} jobs: results file {:.1} MB",
            results_bytes as f64 / 1e6
        );

        // The page: written once, then found unchanged (what every later run does).
        let start = Instant::now();
        let page =
            veo_batch::report::after_run(&manifest, &results).unwrap_or_else(|e| fail("report", e));
        let written = start.elapsed();
        let mut unchanged = Duration::MAX;
        for _ in 0..2 {
            let start = Instant::now();
            veo_batch::report::after_run(&manifest, &results).unwrap_or_else(|e| fail("report", e));
            unchanged = unchanged.min(start.elapsed());
        }
        let bytes = std::fs::metadata(&page)
            .unwrap_or_else(|e| fail("page", e))
            .len();
        println!(
            "  page (manifest and results read, in process): written {:.0} ms ({:.1} µs/job), unchanged {:.0} ms; {:.1} MB, {} bytes/job",
            written.as_secs_f64() * 1e3,
            written.as_secs_f64() * 1e6 / n as f64,
            unchanged.as_secs_f64() * 1e3,
            bytes as f64 / 1e6,
            bytes / n as u64
        );
        if let Some(chromium) = std::env::var_os("REPORT_BENCH_CHROMIUM") {
            match open_in_chromium(Path::new(&chromium), &page, dir.path()) {
                Ok(probe) => println!("  opened in headless Chromium: {probe}"),
                Err(e) => println!("  chromium: {e}"),
            }
        }

        // Each command in its own process, as a person or a cron job runs it.
        let d = dir.path();
        println!(
            "  status results/batch.csv: {}",
            measured(d, &["status", "results/batch.csv"])
        );
        println!(
            "  status batch.csv (with the manifest): {}",
            measured(d, &["status", "batch.csv"])
        );
        println!(
            "  status --json results/batch.csv: {}",
            measured(d, &["status", "--json", "results/batch.csv"])
        );
        std::fs::remove_file(&page).unwrap_or_else(|e| fail("remove page", e));
        println!(
            "  report batch.csv (written): {}",
            measured(d, &["report", "batch.csv"])
        );
        println!(
            "  report batch.csv (unchanged): {}",
            measured(d, &["report", "batch.csv"])
        );
        if std::env::var_os("REPORT_BENCH_FRESH").is_none_or(|v| v != "0") {
            println!(
                "  run batch.csv, fresh, against `veo-batch simulate` (time scale 0.001, no rate limits): {}",
                fresh_run(d, &manifest)
            );
        }
        let before = (mtime(&results), mtime(&page));
        let resume = measured(d, &["run", "batch.csv", "--simulate", "--yes"]);
        let wrote = before != (mtime(&results), mtime(&page));
        println!(
            "  run batch.csv --simulate, nothing left to do: {resume}; {}",
            if wrote {
                "results file or page written"
            } else {
                "wrote neither the results file nor the page"
            }
        );
    }
}
