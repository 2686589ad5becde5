//! End-to-end benchmarks of the runner: the runner runs in this process, the
//! simulator in a `veo-batch simulate` child process on 127.0.0.1, so the CPU time
//! and peak memory read from /proc/self are the runner's alone.
//!
//! `cargo bench --bench e2e` runs every scenario; `cargo bench --bench e2e -- NAME`
//! runs one (`schedule`, `overhead`, `overhead-nosync`). `VEO_BENCH_JOBS` changes
//! the job count of the overhead scenarios (default 100,000) and
//! `VEO_BENCH_SCHEDULE_JOBS` that of `schedule` (default 2,000); `VEO_BENCH_DIR` puts
//! their results and videos under another folder (`/dev/shm`: no disk).
//! `VEO_BENCH_RUNTIME=multi` runs on tokio's multi-thread runtime instead of the one
//! `run` uses ([`runner::runtime`]), to compare.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veo_batch::api::{ApiKey, Client, ClientConfig};
use veo_batch::manifest::{Job, Origin};
use veo_batch::request::{RawRequest, check};
use veo_batch::runner::retry::RetryPolicy;
use veo_batch::runner::{self, RunConfig, Signals};
use veo_batch::units::Rate;

struct Sim {
    child: Child,
    url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(args: &[&str]) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veo-batch"))
        .args(["-q", "simulate", "--port", "0", "--credits", "1e12"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("address line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the simulator prints its address")
        .to_owned();
    Sim { child, url }
}

fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let raw = RawRequest {
                prompt: Some(format!("benchmark clip number {i}, a slow pan over a city")),
                ..RawRequest::default()
            };
            let request = check(&raw).result.expect("valid request");
            Job {
                id: format!("job-{i}"),
                fingerprint: request.fingerprint(),
                request,
                upgrade: None,
                keep_original: false,
                origin: Origin::default(),
                file_stem: None,
                local_images: Vec::new(),
            }
        })
        .collect()
}

fn config(dir: &Path, jobs: Vec<Job>, rate: Rate, poll: Duration, concurrency: usize) -> RunConfig {
    RunConfig {
        concurrency,
        rate,
        retry: RetryPolicy::DEFAULT.scaled(0.05),
        poll_interval: poll,
        task_timeout: Duration::from_secs(600),
        record_null_grace: Duration::from_secs(60),
        ..RunConfig::with_defaults(jobs, dir.join("results.csv"), dir.join("videos"))
    }
}

fn client(url: &str) -> Client {
    Client::new(ClientConfig::new(url, ApiKey::new("sim-key"))).expect("client")
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Target 1: a 2,000-job run at the service's limit (time-scaled) submits at the
/// allowed rate, draws no 429, and ends near the floor.
fn schedule(rt: &tokio::runtime::Runtime) {
    // At a tenth of real time the limiter's margin is its real-time 1% of the
    // window (10 ms of 1 s); at a twentieth its 10 ms floor would be 2%.
    let scale = 0.1;
    let n: usize = std::env::var("VEO_BENCH_SCHEDULE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("requests.jsonl");
    let sim = start_sim(&[
        "--time-scale",
        "0.1",
        // One fixed generation time, so that the floor is well defined.
        "--generation-time",
        "180s..180s",
        "--request-log",
        log.to_str().expect("utf-8 path"),
    ]);
    let rate = Rate {
        count: 20,
        per: Duration::from_secs(10).mul_f64(scale),
    };
    let cfg = config(
        dir.path(),
        jobs(n),
        rate,
        Duration::from_secs(15).mul_f64(scale),
        8,
    );
    let started = Instant::now();
    let report = rt
        .block_on(runner::run(cfg, client(&sim.url), Signals::default()))
        .expect("run");
    let wall = started.elapsed();
    assert_eq!(report.outcomes.tally.succeeded, n, "every job succeeded");

    let mut first: Option<Duration> = None;
    let mut last = Duration::ZERO;
    let mut created = 0;
    let mut refused = 0;
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("log line");
        if v["endpoint"] != "generate" {
            continue;
        }
        if v["code"] == 429 {
            refused += 1;
        }
        if v["code"] != 200 {
            continue;
        }
        created += 1;
        let ts = humantime::parse_rfc3339(v["ts"].as_str().unwrap_or_default()).expect("ts");
        let t = ts
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch");
        first = Some(first.map_or(t, |f| f.min(t)));
        last = last.max(t);
    }
    let span = last - first.unwrap_or(last);
    let achieved = f64::from(created - 1) / span.as_secs_f64();
    let allowed = rate.per_second();
    let generation = Duration::from_secs(180).mul_f64(scale);
    let floor = Duration::from_secs_f64(n as f64 / allowed) + generation;
    println!(
        "schedule: {n} jobs at {rate} (the service's 20/10s at time scale {scale}): \
         submitted at {achieved:.2}/s of {allowed:.2}/s allowed ({:.1}%), {refused} answers 429, \
         wall {:.2}s vs floor {:.2}s (jobs / rate + generation time): {:+.1}%",
        100.0 * achieved / allowed,
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        100.0 * (wall.as_secs_f64() / floor.as_secs_f64() - 1.0),
    );
}

/// Target 2 and 3: no rate limit, no generation delay: the runner's own cost per
/// job through submit, poll, download and checkpoint, with and without syncing.
fn overhead(rt: &tokio::runtime::Runtime, sync: bool) {
    let n: usize = std::env::var("VEO_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // VEO_BENCH_DIR=/dev/shm keeps the file system's cost of creating 100,000
    // files out of the runner's figures.
    let dir = match std::env::var_os("VEO_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let sim = start_sim(&["--rate", "none", "--generation-time", "0s..0s"]);
    let mut cfg = config(
        dir.path(),
        jobs(n),
        Rate {
            count: 1_000_000,
            per: Duration::from_secs(1),
        },
        Duration::from_millis(1),
        64,
    );
    cfg.sync = sync;
    // Each scenario reports its own peak, not the one an earlier scenario of this
    // process reached (writing 5 to clear_refs resets VmHWM to the current RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = peak_rss_mib();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let report = rt
        .block_on(runner::run(cfg, client(&sim.url), Signals::default()))
        .expect("run");
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let o = &report.outcomes;
    assert_eq!(
        o.tally.succeeded,
        n,
        "every job succeeded: {:?}; failed e.g. {:?}; in doubt e.g. {:?}",
        o.tally,
        o.failed.iter().take(3).collect::<Vec<_>>(),
        o.in_doubt.iter().take(3).collect::<Vec<_>>()
    );
    println!(
        "overhead ({}): {n} jobs in {:.1}s: {:.0} jobs/s, runner CPU {:.0} µs/job, peak RSS {:.0} MiB (before the run: {:.0} MiB)",
        if sync { "rows synced" } else { "no sync" },
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        peak_rss_mib(),
        rss_before,
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    // The runtime `run` uses; VEO_BENCH_RUNTIME=multi compares a multi-thread one.
    let rt = if std::env::var("VEO_BENCH_RUNTIME").as_deref() == Ok("multi") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        runner::runtime()
    }
    .expect("runtime");
    if wanted("schedule") {
        schedule(&rt);
    }
    if wanted("overhead") {
        overhead(&rt, true);
    }
    if wanted("overhead-nosync") {
        overhead(&rt, false);
    }
}
