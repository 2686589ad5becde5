//! Start-up of a resumed run: loading a 100,000-row results file, and everything
//! `run` does before its first request (manifest, results file, plan) for a
//! 100,000-job CSV manifest whose every job is recorded: one step after the other,
//! and as `run` does it (manifest and results file read on two threads at once).
//!
//! Run: `cargo bench --bench startup -- --sample-size 10`.
//!
//! `STARTUP_INPUTS=<folder>` writes the inputs there and keeps them, so that one
//! start-up can be profiled on its own (`perf stat`, `perf record`, callgrind): the
//! bench binary with `STARTUP_CHILD=par` (or `seq`) and
//! `STARTUP_MANIFEST=<folder>/big.csv STARTUP_RESULTS=<folder>/results.csv` runs as
//! the fresh-process child, once. `STARTUP_CHILD=phases` runs the three steps one
//! after another and prints the CPU time of each (from /proc, so that other
//! processes on a shared machine do not count).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Bencher, Criterion, Throughput, criterion_group};
use veo_batch::checkpoint::writer::rewrite;
use veo_batch::checkpoint::{self, Record, State};
use veo_batch::commands::run as app;
use veo_batch::manifest::{self, Manifest};
use veo_batch::runner::{self, RunConfig};

const JOBS: usize = 100_000;

fn write_manifest(path: &Path) {
    let mut s = String::with_capacity(JOBS * 80);
    s.push_str("id,prompt,aspect_ratio,seeds\n");
    for i in 0..JOBS {
        let ratio = if i % 2 == 0 { "16:9" } else { "9:16" };
        let _ = writeln!(
            s,
            "row-{i:06},\"shot {i}, a red kite over a beach\",{ratio},{}",
            10_000 + i % 90_000
        );
    }
    std::fs::write(path, s).expect("write manifest");
}

/// A results file recording every job of `m`, `rows_per_job` rows each (the last
/// one submitted), as a killed run leaves it.
fn write_results(path: &Path, m: &Manifest, rows_per_job: usize) {
    let mut rows = Vec::with_capacity(m.jobs.len() * rows_per_job);
    for round in 0..rows_per_job {
        for j in &m.jobs {
            let last = round + 1 == rows_per_job;
            rows.push(Record {
                job_id: j.id.clone(),
                state: Some(if last {
                    State::Submitted
                } else {
                    State::Submitting
                }),
                task_id: last.then(|| format!("veo_task_{}", j.fingerprint)),
                attempts: 1,
                model: j.request.model.as_str().into(),
                generation_type: j.request.generation_type.as_str().into(),
                aspect_ratio: j.request.aspect_ratio.as_str().into(),
                prompt: j.request.prompt.clone(),
                fingerprint: j.fingerprint.clone(),
                submitted_at: Some("2026-11-23T10:00:00Z".into()),
                updated_at: "2026-11-23T10:00:00Z".into(),
                ..Record::default()
            });
        }
    }
    rewrite(path, &rows).expect("write results");
}

/// The run's settings as `run` makes them: the manifest's jobs move in (no copy).
fn config(m: Manifest, results: &Path) -> RunConfig {
    RunConfig::with_defaults(m.jobs, results.to_owned(), results.with_file_name("videos"))
}

/// Times `f` as a fresh process would run it. What `f` returns is dropped outside the
/// timing (a run holds its jobs and records to its end), and so is the allocator's
/// tidying of the 100,000 freed blocks (glibc merges them at the next large request,
/// which would otherwise land in the next timed call: a fresh process has none).
fn fresh<T>(b: &mut Bencher<'_>, mut f: impl FnMut() -> T) {
    b.iter_custom(|iters| {
        let mut timed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let out = black_box(f());
            timed += start.elapsed();
            drop(out);
            drop(black_box(Vec::<u8>::with_capacity(64 * 1024)));
        }
        timed
    });
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kept = std::env::var_os("STARTUP_INPUTS").map(std::path::PathBuf::from);
    let dir_path = kept.as_deref().unwrap_or(dir.path());
    if let Some(kept) = &kept {
        std::fs::create_dir_all(kept).expect("inputs folder");
    }
    let manifest_path = dir_path.join("big.csv");
    write_manifest(&manifest_path);
    let m = manifest::load(&manifest_path).expect("valid manifest");
    let results = dir_path.join("results.csv");
    write_results(&results, &m, 1);
    let history = dir_path.join("history.csv");
    write_results(&history, &m, 5);

    let mut g = c.benchmark_group("startup");
    g.throughput(Throughput::Elements(JOBS as u64));
    g.bench_function("load results, 100k rows", |b| {
        // Sized for the manifest's jobs, as `run` loads it.
        fresh(b, || {
            checkpoint::load_listed(&results, JOBS).expect("loads")
        });
    });
    g.bench_function("load results, 100k jobs x 5 rows", |b| {
        fresh(b, || {
            checkpoint::load_listed(&history, JOBS).expect("loads")
        });
    });
    g.bench_function(
        "manifest + results + plan, 100k jobs (time to first request)",
        |b| {
            fresh(b, || {
                let m = manifest::load(&manifest_path).expect("valid manifest");
                runner::prepare(config(m, &results)).expect("prepares")
            });
        },
    );
    g.bench_function(
        "manifest || results, then plan, 100k jobs (run's start-up, two threads)",
        |b| {
            fresh(b, || {
                let (m, preloaded) = app::load_for_run(&manifest_path, Some(&results));
                let m = m.expect("valid manifest");
                runner::prepare_from(config(m, &results), preloaded).expect("prepares")
            });
        },
    );
    // In a fresh process, as `run` starts: nothing allocated or paged in before.
    for (name, mode) in [
        ("fresh process: manifest + results + plan, 100k jobs", "seq"),
        (
            "fresh process: manifest || results, then plan, 100k jobs",
            "par",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let exe = std::env::current_exe().expect("own path");
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let status = std::process::Command::new(&exe)
                        .env(CHILD, mode)
                        .env("STARTUP_MANIFEST", &manifest_path)
                        .env("STARTUP_RESULTS", &results)
                        .status()
                        .expect("child runs");
                    timed += start.elapsed();
                    assert!(status.success());
                }
                timed
            });
        });
    }
    g.finish();
}

/// Set in a child of this bench: run the start-up once, in the given mode, and exit.
const CHILD: &str = "STARTUP_CHILD";

fn child(mode: &str) {
    let var = |k: &str| std::path::PathBuf::from(std::env::var_os(k).expect(k));
    let (manifest_path, results) = (var("STARTUP_MANIFEST"), var("STARTUP_RESULTS"));
    if mode == "phases" {
        // Each step on its own, one after another: the CPU time it took (from
        // /proc, so that other processes on the machine do not count), on stderr.
        let cpu_ms = || {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
            let ns: f64 = stat
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            ns / 1e6
        };
        let t = cpu_ms();
        let m = manifest::load(&manifest_path).expect("valid manifest");
        let t1 = cpu_ms();
        let preloaded = checkpoint::preload(&results);
        let t2 = cpu_ms();
        let prepared = runner::prepare_from(config(m, &results), Some(preloaded));
        let t3 = cpu_ms();
        assert_eq!(prepared.expect("prepares").plan.len(), JOBS);
        eprintln!(
            "cpu: manifest {:.1} ms, results {:.1} ms, plan {:.1} ms",
            t1 - t,
            t2 - t1,
            t3 - t2
        );
        std::process::exit(0);
    }
    let prepared = if mode == "par" {
        let (m, preloaded) = app::load_for_run(&manifest_path, Some(&results));
        runner::prepare_from(config(m.expect("valid manifest"), &results), preloaded)
    } else {
        let m = manifest::load(&manifest_path).expect("valid manifest");
        runner::prepare(config(m, &results))
    };
    let prepared = prepared.expect("prepares");
    assert_eq!(prepared.plan.len(), JOBS);
    // As a run holds them to its end: the process exits without freeing them.
    std::process::exit(0);
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var(CHILD) {
        Ok(mode) => child(&mode),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
