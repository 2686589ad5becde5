//! End-to-end benchmarks of the runner: the runner runs in this process, the
//! simulator in a `veo-batch simulate` child process on 127.0.0.1, so the CPU time
//! and peak memory read from /proc/self are the runner's alone.
//!
//! `cargo bench --bench e2e` runs every scenario; `cargo bench --bench e2e -- NAME`
//! runs those whose name contains NAME (`schedule`, `schedule-polls`,
//! `schedule-polls-by-kind`, `schedule-accounts` (the same jobs over a pool of
//! 1, 2 and 4 accounts; `VEO_BENCH_ACCOUNTS_JOBS`, default 240), `overhead`, `overhead-nosync`, `overhead-csv`: the
//! jobs read from a CSV manifest inside the measurement). `VEO_BENCH_JOBS`
//! changes the job count of the overhead scenarios (default 100,000) and
//! `VEO_BENCH_SCHEDULE_JOBS` that of the schedule ones (default 2,000);
//! `VEO_BENCH_DIR` puts their results and videos under another folder (`/dev/shm`:
//! no disk); `VEO_BENCH_NO_DOWNLOAD=1` runs the overhead scenarios without
//! downloading the videos. `VEO_BENCH_KEEP_LOG=<folder>` keeps the simulator's request log of each
//! schedule scenario there (`<scenario>.jsonl`), to look into its timeline.
//! `VEO_BENCH_RUNTIME=multi` runs on tokio's multi-thread runtime instead of the one
//! `run` uses ([`runner::runtime`]), to compare. `VEO_BENCH_POLL=fixed` makes the
//! schedule-polls scenarios check every task every poll interval, instead of when
//! tasks of its kind were seen to finish, to compare.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veo_batch::api::{ApiKey, Client, ClientConfig, KeyRing};
use veo_batch::manifest::{Job, Origin};
use veo_batch::request::{RawRequest, check};
use veo_batch::retry::RetryPolicy;
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
                extend: None,
            }
        })
        .collect()
}

/// The kinds of task the polls scenarios mix, one job in four of each: model and
/// resolution, and the generation time the simulator gives each kind in
/// `schedule-polls-by-kind` (all within the service's typical 1–5 minutes).
const KINDS: [(&str, &str, &str); 4] = [
    ("veo3_fast", "720p", "60s..75s"),
    ("veo3_fast", "1080p", "100s..125s"),
    ("veo3", "720p", "180s..225s"),
    ("veo3", "1080p", "240s..300s"),
];

fn mixed_jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let (model, resolution, _) = KINDS[i % KINDS.len()];
            let raw = RawRequest {
                prompt: Some(format!("benchmark clip number {i}, a slow pan over a city")),
                model: Some(model.to_owned()),
                resolution: Some(resolution.to_owned()),
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
                extend: None,
            }
        })
        .collect()
}

/// A run's settings; status checks at most `poll_rate`, at least `poll_min` apart.
fn config(dir: &Path, jobs: Vec<Job>, rate: Rate, poll: Duration, concurrency: usize) -> RunConfig {
    RunConfig {
        concurrency,
        rate,
        retry: RetryPolicy::DEFAULT.scaled(0.05),
        poll_interval: poll,
        // Unpaced unless a scenario says otherwise.
        poll_rate: Rate {
            count: 1_000_000,
            per: Duration::from_secs(1),
        },
        poll_min: Duration::ZERO,
        task_timeout: Duration::from_secs(600),
        record_null_grace: Duration::from_secs(60),
        ..RunConfig::with_defaults(jobs, dir.join("results.csv"), dir.join("videos"))
    }
}

fn client(url: &str) -> Client {
    Client::new(ClientConfig::new(url, ApiKey::new("sim-key"))).expect("client")
}

/// Copies a scenario's request log to `VEO_BENCH_KEEP_LOG`, when set.
fn keep_log(log: &Path, scenario: &str) {
    if let Some(dir) = std::env::var_os("VEO_BENCH_KEEP_LOG") {
        let to = Path::new(&dir).join(format!("{scenario}.jsonl"));
        if let Err(e) = std::fs::copy(log, &to) {
            eprintln!("could not keep the request log at {}: {e}", to.display());
        }
    }
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    cpu_time_of("self")
}

/// User plus system CPU time of process `pid` (`self` for this one).
fn cpu_time_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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
        // Status checks unlimited, as before the service's limit on them was
        // modelled: the schedule-polls scenarios add it.
        "--poll-rate",
        "none",
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
    keep_log(&log, "schedule");

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

/// The same batch over a pool of 1, 2 and 4 accounts, each with the service's
/// window (time-scaled): throughput should grow with the accounts, since the
/// limits are each account's.
fn schedule_accounts(rt: &tokio::runtime::Runtime) {
    let scale = 0.1;
    let n: usize = std::env::var("VEO_BENCH_ACCOUNTS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240);
    let rate = Rate {
        count: 20,
        per: Duration::from_secs(10).mul_f64(scale),
    };
    let generation = Duration::from_secs(30).mul_f64(scale);
    let mut one = None;
    for accounts in [1usize, 2, 4] {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("requests.jsonl");
        let text: String = (0..accounts)
            .map(|a| format!("bench-{a} bench-key-{a}\n"))
            .collect();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, &text).expect("key file");
        let sim = start_sim(&[
            "--time-scale",
            "0.1",
            "--generation-time",
            "30s..30s",
            "--poll-rate",
            "none",
            "--key-file",
            keys.to_str().expect("utf-8 path"),
            "--request-log",
            log.to_str().expect("utf-8 path"),
        ]);
        let ring = KeyRing::parse(&text, "keys", "line", false).expect("keys");
        let cfg = config(
            dir.path(),
            jobs(n),
            rate,
            Duration::from_secs(15).mul_f64(scale),
            8 * accounts,
        );
        let started = Instant::now();
        let report = rt
            .block_on(async {
                let prepared = runner::prepare(cfg)?;
                runner::execute_pooled(prepared, client(&sim.url), &ring, Signals::default()).await
            })
            .expect("run");
        let wall = started.elapsed();
        assert_eq!(report.outcomes.tally.succeeded, n, "every job succeeded");
        keep_log(&log, &format!("schedule-accounts-{accounts}"));
        // The submissions' pace, from the simulator's log: tasks made per second
        // from the first to one window after the last (the last window's sends
        // leave together).
        let (mut created, mut refused) = (0usize, 0usize);
        let (mut first, mut last): (Option<std::time::SystemTime>, Option<std::time::SystemTime>) =
            (None, None);
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("log line");
            if v["code"] == 429 {
                refused += 1;
            }
            if v["endpoint"] != "generate" || v["code"] != 200 {
                continue;
            }
            created += 1;
            let at = ts(&v, "ts").expect("ts");
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        let span = last
            .zip(first)
            .and_then(|(l, f)| l.duration_since(f).ok())
            .unwrap_or_default();
        let submitted_per_second = created as f64 / (span + rate.per).as_secs_f64();
        // The last window's sends leave at once: the floor is one window per full
        // window of sends before it, then one generation.
        let windows = (n as f64 / (f64::from(rate.count) * accounts as f64)).ceil() - 1.0;
        let floor = rate.per.mul_f64(windows) + generation;
        let base = *one.get_or_insert(wall);
        println!(
            "schedule-accounts: {n} jobs over {accounts} account(s) at {rate} each: \
             submitted at {submitted_per_second:.1}/s of {:.1}/s allowed, {refused} answers 429; \
             wall {:.2}s ({:.2}x the time of one account) vs floor {:.2}s: {:+.1}%",
            rate.per_second() * accounts as f64,
            wall.as_secs_f64(),
            wall.as_secs_f64() / base.as_secs_f64(),
            floor.as_secs_f64(),
            100.0 * (wall.as_secs_f64() / floor.as_secs_f64() - 1.0),
        );
    }
}

/// What the request log of a run says about its status checks and downloads.
#[derive(Debug, Default)]
struct Polls {
    created: usize,
    refused_generate: usize,
    /// record-info calls, and those answered 429.
    checks: usize,
    refused_checks: usize,
    /// Per video: from ready to the first request of its file, and its generation time.
    delays: Vec<(Duration, Duration)>,
    /// Span of the successful generate calls.
    submit_span: Duration,
}

fn ts(v: &serde_json::Value, field: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(v[field].as_str()?).ok()
}

fn read_log(log: &Path) -> Polls {
    use std::collections::HashMap;
    let mut p = Polls::default();
    // task id -> (created, ready)
    let mut tasks: HashMap<String, (std::time::SystemTime, std::time::SystemTime)> = HashMap::new();
    let mut fetched: HashMap<String, std::time::SystemTime> = HashMap::new();
    let (mut first, mut last) = (None, None);
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("log line");
        let at = ts(&v, "ts").expect("ts");
        let task = v["task_id"].as_str().unwrap_or_default().to_owned();
        match (v["endpoint"].as_str(), v["code"].as_i64()) {
            (Some("generate"), Some(429)) => p.refused_generate += 1,
            (Some("generate"), Some(200)) => {
                p.created += 1;
                first = Some(first.map_or(at, |f: std::time::SystemTime| f.min(at)));
                last = Some(last.map_or(at, |l: std::time::SystemTime| l.max(at)));
                tasks.insert(task, (at, ts(&v, "ready_at").expect("ready_at")));
            }
            (Some("record-info"), code) => {
                p.checks += 1;
                p.refused_checks += usize::from(code == Some(429));
            }
            (Some("files"), Some(200)) => {
                fetched.entry(task).or_insert(at);
            }
            _ => {}
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        p.submit_span = l.duration_since(f).unwrap_or_default();
    }
    for (task, (created, ready)) in &tasks {
        if let Some(got) = fetched.get(task) {
            p.delays.push((
                got.duration_since(*ready).unwrap_or_default(),
                ready.duration_since(*created).unwrap_or_default(),
            ));
        }
    }
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Target 6: the service's limits on generate (20 per 10 s) and on status checks
/// (10 per second), generations of 1–5 minutes, so that about 360 tasks run at
/// once (time-scaled to a tenth): submissions keep the rate, no 429, few checks per
/// video, and a video downloaded soon after it is ready. `by_kind`: each kind of
/// task (model and resolution) has its own narrower range within 1–5 minutes, which
/// the run's schedule can learn; otherwise every task draws from 1–5 minutes.
fn schedule_polls(rt: &tokio::runtime::Runtime, by_kind: bool) {
    let scale = 0.1;
    let n: usize = std::env::var("VEO_BENCH_SCHEDULE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("requests.jsonl");
    let mut args = vec![
        "--time-scale".to_owned(),
        "0.1".to_owned(),
        "--generation-time".to_owned(),
        "60s..300s".to_owned(),
        "--poll-rate".to_owned(),
        "10/1s".to_owned(),
        "--request-log".to_owned(),
        log.to_str().expect("utf-8 path").to_owned(),
    ];
    if by_kind {
        for (model, resolution, span) in KINDS {
            args.push(format!("--generation-time-for={model}:{resolution}={span}"));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sim = start_sim(&args);
    let rate = Rate {
        count: 20,
        per: Duration::from_secs(10).mul_f64(scale),
    };
    let concurrency = std::env::var("VEO_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut cfg = config(
        dir.path(),
        mixed_jobs(n),
        rate,
        Duration::from_secs(15).mul_f64(scale),
        concurrency,
    );
    // The run's defaults, time-scaled as `run --simulate` scales them.
    cfg.poll_rate = Rate {
        count: 8,
        per: Duration::from_secs(1).mul_f64(scale),
    };
    cfg.poll_min = Duration::from_secs(2).mul_f64(scale);
    let fixed = std::env::var("VEO_BENCH_POLL").as_deref() == Ok("fixed");
    cfg.learn_schedule = !fixed;
    let started = Instant::now();
    let report = rt
        .block_on(runner::run(cfg, client(&sim.url), Signals::default()))
        .expect("run");
    let wall = started.elapsed();
    assert_eq!(report.outcomes.tally.succeeded, n, "every job succeeded");
    keep_log(
        &log,
        if by_kind {
            "schedule-polls-by-kind"
        } else {
            "schedule-polls"
        },
    );
    let p = read_log(&log);
    let achieved = (p.created as f64 - 1.0) / p.submit_span.as_secs_f64();
    let allowed = rate.per_second();
    let delays: Vec<f64> = p.delays.iter().map(|(d, _)| d.as_secs_f64()).collect();
    let shares: Vec<f64> = p
        .delays
        .iter()
        .map(|(d, g)| d.as_secs_f64() / g.as_secs_f64().max(1e-9))
        .collect();
    println!(
        "schedule-polls{}{}: {n} jobs, generations {} (time scale {scale}), checks at most 10/s \
         at the service and 8/s in the run: submitted at {achieved:.2}/s of {allowed:.2}/s \
         allowed ({:.1}%), {} answers 429 on generate, {} on checks; {:.2} checks per video; \
         ready to download: median {:.2}s ({:.2}s unscaled), median {:.1}% of the video's \
         generation time; wall {:.1}s",
        if by_kind { "-by-kind" } else { "" },
        if fixed {
            " (fixed: every poll interval)"
        } else {
            ""
        },
        if by_kind {
            "by kind within 60-300s"
        } else {
            "60-300s"
        },
        100.0 * achieved / allowed,
        p.refused_generate,
        p.refused_checks,
        p.checks as f64 / p.created.max(1) as f64,
        median(delays.clone()),
        median(delays) / scale,
        100.0 * median(shares),
        wall.as_secs_f64(),
    );
}

/// Writes a CSV manifest of `n` jobs like [`jobs`] to `path`, row by row.
fn write_csv(path: &Path, n: usize) {
    use std::io::Write as _;
    let file = std::fs::File::create(path).expect("create manifest");
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "id,prompt").expect("write manifest");
    for i in 0..n {
        writeln!(
            out,
            "job-{i},\"benchmark clip number {i}, a slow pan over a city\""
        )
        .expect("write manifest");
    }
    out.flush().expect("write manifest");
}

/// Target 2 and 3: no rate limit, no generation delay: the runner's own cost per
/// job through submit, poll, download and checkpoint, with and without syncing.
/// `csv`: the jobs come from a CSV manifest read inside the measurement (as `run`
/// reads one), so that the peak memory is the whole run's, start-up included.
fn overhead(rt: &tokio::runtime::Runtime, sync: bool, csv: bool) {
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
    let sim = start_sim(&[
        "--rate",
        "none",
        "--poll-rate",
        "none",
        "--generation-time",
        "0s..0s",
    ]);
    let manifest = dir.path().join("batch.csv");
    let built = if csv {
        write_csv(&manifest, n);
        Vec::new()
    } else {
        jobs(n)
    };
    let settings = |jobs: Vec<Job>| {
        let mut cfg = config(
            dir.path(),
            jobs,
            Rate {
                count: 1_000_000,
                per: Duration::from_secs(1),
            },
            Duration::from_millis(1),
            64,
        );
        cfg.sync = sync;
        // Without the videos: what is left when the file system's cost of a
        // folder of 100,000 files is taken out.
        if std::env::var_os("VEO_BENCH_NO_DOWNLOAD").is_some() {
            cfg.resume.download = false;
        }
        cfg
    };
    // Each scenario reports its own peak, not the one an earlier scenario of this
    // process reached (writing 5 to clear_refs resets VmHWM to the current RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = peak_rss_mib();
    let sim_pid = sim.child.id().to_string();
    let sim_cpu_before = cpu_time_of(&sim_pid);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let cfg = if csv {
        settings(
            veo_batch::manifest::load(&manifest)
                .expect("manifest loads")
                .jobs,
        )
    } else {
        settings(built)
    };
    let report = rt
        .block_on(runner::run(cfg, client(&sim.url), Signals::default()))
        .expect("run");
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let sim_cpu = cpu_time_of(&sim_pid).saturating_sub(sim_cpu_before);
    let o = &report.outcomes;
    assert_eq!(
        o.tally.succeeded,
        n,
        "every job succeeded: {:?}; failed e.g. {:?}; in doubt e.g. {:?}",
        o.tally,
        o.failed.iter().take(3).collect::<Vec<_>>(),
        o.in_doubt.iter().take(3).collect::<Vec<_>>()
    );
    let peak = peak_rss_mib();
    println!(
        "overhead ({}{}): {n} jobs in {:.1}s: {:.0} jobs/s, runner CPU {:.0} µs/job, peak RSS {:.0} MiB (before the run: {:.0} MiB; {:.0} bytes per job above it); simulator CPU {:.0} µs/job",
        if sync { "rows synced" } else { "no sync" },
        if csv {
            ", CSV manifest read in the run"
        } else {
            ""
        },
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        peak,
        rss_before,
        (peak - rss_before) * 1024.0 * 1024.0 / n as f64,
        sim_cpu.as_secs_f64() * 1e6 / n as f64,
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
    if wanted("schedule-accounts") {
        schedule_accounts(&rt);
    }
    if wanted("schedule-polls") {
        schedule_polls(&rt, false);
    }
    if wanted("schedule-polls-by-kind") {
        schedule_polls(&rt, true);
    }
    if wanted("overhead") {
        overhead(&rt, true, false);
    }
    if wanted("overhead-nosync") {
        overhead(&rt, false, false);
    }
    if wanted("overhead-csv") {
        overhead(&rt, true, true);
    }
}
