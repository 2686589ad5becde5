//! What bucket output costs, against moto's S3 server on loopback:
//!
//! - a whole run (`veo-batch run` against `veo-batch simulate`, generation
//!   instant, no rate limit) with its results and videos in the bucket, beside the
//!   same batch with both on the local disk: the wall time per job of each, whose
//!   difference is what the bucket adds (lease, rebuild, a log commit after each
//!   group commit, one upload per video, compaction);
//! - a checkpoint commit at 10,000 and 100,000 rows: a commit of the log (one small
//!   create-if-absent object, whatever the batch's size) beside rewriting the whole
//!   results CSV, which is what a commit would cost without the log; and the
//!   compaction that folds the log into the CSV (at a run's end and at intervals).
//!
//! Run: `cargo bench --profile dev --bench bucket` (needs `moto_server`: `pip
//! install 'moto[server]'`; `BUCKET_BENCH_JOBS=200`, `BUCKET_BENCH_ROWS=10000,100000`
//! and `BUCKET_BENCH_COMMITS=50` by default). Loopback moto is not S3: the figures
//! compare the ways, they do not predict a cloud's latency, where a commit is one
//! PUT's round trip.

use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::path::Path as Key;
use object_store::{ObjectStoreExt as _, PutPayload};
use veo_batch::checkpoint::writer::{encode_header, encode_row};
use veo_batch::checkpoint::{Record, State};
use veo_batch::store::lease::Fence;
use veo_batch::store::log::CheckpointLog;
use veo_batch::store::{Bucket, Retries, S3Env};

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what}: {e}")
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto() -> Option<(Moto, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| fail("free port", e))
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!(
            "bucket bench skipped: moto_server is not installed (pip install 'moto[server]')"
        );
        return None;
    };
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            fail("moto", "did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((moto, port))
}

fn record(i: usize, state: State) -> Record {
    Record {
        job_id: format!("job-{i:06}"),
        state: Some(state),
        task_id: Some(format!("veo_task_{i:016x}")),
        attempts: 1,
        model: "veo3_fast".into(),
        generation_type: "TEXT_2_VIDEO".into(),
        aspect_ratio: "16:9".into(),
        prompt: format!("shot {i}: a red kite over a beach at dusk, slow pan"),
        fingerprint: format!("{i:064x}"),
        video_urls: vec![format!("https://files.example.com/{i}.mp4")],
        video_paths: vec![format!("s3://bench/videos/job-{i:06}.mp4")],
        updated_at: "2026-12-07T19:00:00Z".into(),
        ..Record::default()
    }
}

fn csv_of(rows: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 400);
    encode_header(&mut out).unwrap_or_else(|e| fail("encode", e));
    for r in rows {
        encode_row(r, &mut out).unwrap_or_else(|e| fail("encode", e));
    }
    out
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort_unstable();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

async fn bench(bucket: &Bucket, n: usize, commits: usize) {
    let results = Key::from(format!("runs/batch-{n}.csv"));
    // The record of a batch of n jobs, compacted: what a commit is added to.
    let rows: Vec<Record> = (0..n).map(|i| record(i, State::Submitted)).collect();
    let csv = csv_of(&rows);
    bucket
        .store()
        .put(&results, PutPayload::from(csv.clone()))
        .await
        .unwrap_or_else(|e| fail("seed", e));
    let (mut log, rebuilt) =
        CheckpointLog::open(bucket, results.clone(), Fence::open_ended("bench"))
            .await
            .unwrap_or_else(|e| fail("open", e));
    assert_eq!(rebuilt.loaded.records.len(), n);

    let mut log_times = Vec::with_capacity(commits);
    for c in 0..commits {
        let row = record(c % n, State::Succeeded);
        let t = Instant::now();
        log.commit(&[&row])
            .await
            .unwrap_or_else(|e| fail("commit", e));
        log_times.push(t.elapsed());
    }
    let rewrites = commits.min(10);
    let mut rewrite_times = Vec::with_capacity(rewrites);
    let whole = Key::from(format!("runs/rewritten-{n}.csv"));
    for _ in 0..rewrites {
        let t = Instant::now();
        // What a commit costs without a log: encode and PUT the whole CSV.
        let body = csv_of(&rows);
        bucket
            .store()
            .put(&whole, PutPayload::from(body))
            .await
            .unwrap_or_else(|e| fail("rewrite", e));
        rewrite_times.push(t.elapsed());
    }
    let t = Instant::now();
    let compacted = log.compact().await.unwrap_or_else(|e| fail("compact", e));
    let compact = t.elapsed();
    println!(
        "{n:>7} rows ({:.1} MB CSV): log commit median {:.2} ms over {commits} commits; whole-CSV rewrite median {:.1} ms over {rewrites}; compaction of {} commits {:.0} ms",
        csv.len() as f64 / 1e6,
        median_ms(log_times),
        median_ms(rewrite_times),
        compacted.commits,
        compact.as_secs_f64() * 1000.0
    );
}

/// `veo-batch simulate` on a port of its own: generation instant, no rate limit.
fn start_sim() -> (Moto, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veo-batch"))
        .args(["-q", "simulate", "--port", "0", "--credits", "1e12"])
        .args(["--rate", "none", "--generation-time", "0s..0s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail("simulator", e));
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| fail("simulator", "printed no address"))
        .to_owned();
    (Moto(child), url)
}

/// One `veo-batch run` of `manifest` to its end; its wall time.
fn run_batch(
    sim: &str,
    manifest: &Path,
    results: &str,
    videos: &str,
    work: &Path,
    env: &[(&str, &str)],
) -> Duration {
    let t = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_veo-batch"))
        .env_clear()
        .env("KIE_API_KEY", veo_batch::sim::DEMO_KEY)
        .envs(env.iter().copied())
        .current_dir(work)
        .arg("-q")
        .arg("run")
        .arg(manifest)
        .args([
            "--api-base",
            sim,
            "--results",
            results,
            "--videos-dir",
            videos,
        ])
        .args(["--rate", "1000/1s", "--concurrency", "16"])
        .args(["--poll-interval", "50ms", "--poll-rate", "1000/1s"])
        .status()
        .unwrap_or_else(|e| fail("veo-batch run", e));
    assert!(status.success(), "veo-batch run: {status}");
    t.elapsed()
}

/// The same batch with local output and with bucket output, `reps` times each.
fn bench_run(endpoint: &str, jobs: usize, reps: usize) {
    let (_sim, sim) = start_sim();
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));
    let manifest = dir.path().join("batch.yaml");
    let mut text = String::from("name: batch\njobs:\n");
    for i in 0..jobs {
        text.push_str(&format!(
            "  - id: job-{i}\n    prompt: \"bench clip {i}\"\n"
        ));
    }
    std::fs::write(&manifest, text).unwrap_or_else(|e| fail("manifest", e));
    let env = [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let (mut local, mut bucket) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let work = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));
        local.push(run_batch(
            &sim,
            &manifest,
            "results.csv",
            "videos",
            work.path(),
            &[],
        ));
        let work = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));
        bucket.push(run_batch(
            &sim,
            &manifest,
            &format!("s3://bench/run-{rep}/results.csv"),
            &format!("s3://bench/run-{rep}/videos"),
            work.path(),
            &env,
        ));
    }
    let (local, bucket) = (median_ms(local), median_ms(bucket));
    let per = |ms: f64| ms / jobs as f64;
    println!(
        "run of {jobs} jobs, median of {reps}: local output {:.0} ms ({:.2} ms/job); bucket output {:.0} ms ({:.2} ms/job); the bucket adds {:.2} ms per job",
        local,
        per(local),
        bucket,
        per(bucket),
        per(bucket) - per(local)
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BUCKET_BENCH_ROWS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let commits: usize = std::env::var("BUCKET_BENCH_COMMITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let jobs: usize = std::env::var("BUCKET_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let Some((_moto, port)) = start_moto() else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail("runtime", e));
    rt.block_on(async {
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/bench"))
            .send()
            .await
            .unwrap_or_else(|e| fail("create bucket", e));
        assert!(created.status().is_success());
        let env = S3Env::from_lookup(|name| {
            Some(
                match name {
                    "AWS_ACCESS_KEY_ID" => "bench",
                    "AWS_SECRET_ACCESS_KEY" => "bench",
                    "AWS_ENDPOINT_URL" => endpoint.as_str(),
                    "AWS_ALLOW_HTTP" => "true",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        let bucket =
            Bucket::s3("bench", &env, Retries::default()).unwrap_or_else(|e| fail("client", e));
        for n in sizes {
            bench(&bucket, n, commits).await;
        }
    });
    bench_run(&endpoint, jobs, 3);
}
