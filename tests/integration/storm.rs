//! Storms: the run under many SIGKILLs in a row, and under every fault the
//! simulator can throw at once. The results file, the simulator's counters and its
//! request log are the proof that nothing is lost and nothing is paid twice except
//! jobs recorded in doubt. Each storm prints its seed and figures; set
//! `VEO_STORM_SEED` to replay one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use veo_batch::api::{ApiKey, Client, ClientConfig, TaskState};
use veo_batch::checkpoint::{Loaded, Record, State};
use veo_batch::exit::Exit;
use veo_batch::sim::{self, FaultRate, Maintenance, SAMPLE_MP4, SimConfig};

use crate::harness::{Harness, Round, fast_sim, run_then_kill, text_jobs};

/// The storm's seed: `VEO_STORM_SEED` when set, else a fixed one, so CI replays
/// the same kill schedule and fault draws (timing still varies).
fn storm_seed(name: &str) -> u64 {
    let seed = std::env::var("VEO_STORM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x5702_3d11);
    eprintln!("{name}: seed {seed} (replay with VEO_STORM_SEED={seed})");
    seed
}

/// `veo-batch run` against the harness's simulator, like `Harness::run_cmd` but
/// with this storm's polling, rate and timeout, and stderr to `log`.
fn storm_cmd(h: &Harness, manifest: &Path, flags: &[&str], log: &Path) -> Command {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the run log");
    let mut cmd = h.cmd();
    cmd.arg("run")
        .arg(manifest)
        .args(["--api-base", &h.sim.base_url()])
        .arg("--results")
        .arg(h.path("results.csv"))
        .arg("--videos-dir")
        .arg(h.path("videos"))
        .args(["--poll-rate", "1000/1s"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(stderr);
    cmd
}

/// Waits for `child` at most `limit`; a run that outlives it is a hang.
fn wait_bounded(child: &mut std::process::Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for veo-batch") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: veo-batch still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One round of every storm's kill loop ([`run_then_kill`]) on the storm's command.
fn storm_round(h: &Harness, manifest: &Path, flags: &[&str], log: &Path, after: Duration) -> Round {
    run_then_kill(
        &mut storm_cmd(h, manifest, flags, log),
        after,
        &h.path("results.csv"),
    )
}

/// Runs to the end, bounded in time; the exit code.
fn run_bounded(h: &Harness, manifest: &Path, flags: &[&str], log: &Path, limit: Duration) -> i32 {
    let mut child = storm_cmd(h, manifest, flags, log)
        .spawn()
        .expect("spawn veo-batch");
    let status = wait_bounded(&mut child, limit, "run");
    status.code().unwrap_or(-1)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One line of the simulator's request log.
#[derive(Debug, serde::Deserialize)]
struct LogLine {
    endpoint: String,
    fingerprint: Option<String>,
    code: Option<i64>,
    task_created: bool,
    dropped: bool,
}

fn request_log(path: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .expect("read the request log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a request log line"))
        .collect()
}

/// What the simulator itself says each task ended as, asked through record-info.
fn sim_outcomes(h: &Harness, task_ids: &[String]) -> HashMap<String, TaskState> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(ClientConfig::new(
        h.sim.base_url(),
        ApiKey::new(sim::DEMO_KEY),
    ))
    .expect("client");
    rt.block_on(async {
        let mut out = HashMap::new();
        for id in task_ids {
            // The simulator may be told to fail calls: ask until it answers.
            let mut tries = 0;
            let state = loop {
                match client.record_info(id).await {
                    Ok(state) => break state,
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => panic!("record-info for {id} keeps failing: {e}"),
                }
            };
            out.insert(id.clone(), state);
        }
        out
    })
}

/// Counts `records` the way the summary should: (succeeded, failed, in doubt,
/// running, not started, not downloaded).
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    succeeded: usize,
    failed: usize,
    in_doubt: usize,
    running: usize,
    not_started: usize,
    not_downloaded: usize,
}

fn counts(loaded: &Loaded) -> Counts {
    let mut c = Counts::default();
    for r in loaded.records.values() {
        match (r.state(), r.task_id.is_some()) {
            (State::Pending, _) => c.not_started += 1,
            (State::Blocked, _) => panic!("{}: blocked, in a batch without extends", r.job_id),
            (State::Submitting | State::Submitted, true) => c.running += 1,
            (State::Submitting | State::Submitted | State::InDoubt, _) => c.in_doubt += 1,
            (State::Failed, _) => c.failed += 1,
            (State::Succeeded, _) if r.video_paths.is_empty() => c.not_downloaded += 1,
            (State::Succeeded, _) => c.succeeded += 1,
        }
    }
    c
}

fn expected_exit(c: &Counts) -> i32 {
    if c.in_doubt + c.running + c.not_started > 0 {
        i32::from(Exit::NotFinished)
    } else if c.failed + c.not_downloaded > 0 {
        i32::from(Exit::JobsFailed)
    } else {
        i32::from(Exit::Ok)
    }
}

fn ids_in(loaded: &Loaded, state: State) -> BTreeSet<String> {
    loaded
        .records
        .values()
        .filter(|r| r.state() == state)
        .map(|r| r.job_id.clone())
        .collect()
}

/// Every succeeded job's file is the simulator's MP4, and nothing half-written
/// (`.part`) or unexpected is left in the videos directory.
fn check_videos(h: &Harness, loaded: &Loaded) {
    let mut expected = BTreeSet::new();
    for r in loaded.records.values() {
        if r.state() == State::Succeeded {
            assert_eq!(r.video_paths.len(), 1, "{}: {:?}", r.job_id, r.video_paths);
            let bytes = std::fs::read(&r.video_paths[0]).expect("video file");
            assert_eq!(bytes, SAMPLE_MP4, "{}: the whole file", r.job_id);
            expected.insert(PathBuf::from(&r.video_paths[0]));
        } else {
            assert!(r.video_paths.is_empty(), "{}", r.job_id);
        }
    }
    let found: BTreeSet<PathBuf> = match std::fs::read_dir(h.path("videos")) {
        Ok(dir) => dir.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => BTreeSet::new(),
    };
    assert_eq!(
        found, expected,
        "the videos directory holds exactly the succeeded jobs' files"
    );
}

/// The results file is compact (one row per job) and `status`, in text and JSON,
/// says what the file says, with the exit code the tally calls for.
fn check_status_agrees(h: &Harness, jobs: usize) -> Counts {
    let results = h.path("results.csv");
    let loaded = h.results();
    assert!(!loaded.torn);
    assert_eq!(loaded.rows, jobs, "one row per job after a run that ended");
    assert_eq!(loaded.records.len(), jobs);
    assert!(!loaded.needs_compaction());
    let raw_rows = csv::Reader::from_path(&results)
        .expect("open results")
        .records()
        .count();
    assert_eq!(raw_rows, jobs, "the file itself has one data row per job");
    let want = counts(&loaded);

    let status = |json: bool| {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"));
        cmd.env_clear()
            .env("NO_COLOR", "1")
            .current_dir(h.dir.path())
            .arg("status")
            .arg(&results);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("status runs")
    };

    let out = status(true);
    assert_eq!(out.status.code(), Some(expected_exit(&want)));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let n = |k: &str| usize::try_from(v["tally"][k].as_u64().expect(k)).expect("count");
    let got = Counts {
        succeeded: n("succeeded"),
        failed: n("failed"),
        in_doubt: n("in_doubt"),
        running: n("running"),
        not_started: n("not_started"),
        not_downloaded: n("not_downloaded"),
    };
    assert_eq!(got, want, "status --json tally");
    assert_eq!(v["jobs"].as_u64(), Some(jobs as u64));
    let listed = |k: &str| -> BTreeSet<String> {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|p| p["job_id"].as_str().expect("job_id").to_owned())
            .collect()
    };
    assert_eq!(listed("failed"), ids_in(&loaded, State::Failed));
    let doubt: BTreeSet<String> = loaded
        .records
        .values()
        .filter(|r| {
            matches!(r.state(), State::InDoubt)
                || (matches!(r.state(), State::Submitting | State::Submitted)
                    && r.task_id.is_none())
        })
        .map(|r| r.job_id.clone())
        .collect();
    assert_eq!(listed("in_doubt"), doubt);

    let out = status(false);
    assert_eq!(out.status.code(), Some(expected_exit(&want)));
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.ends_with(&format!(": {jobs} jobs")), "{text}");
    let row = |label: &str| -> usize {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix("  ")?.strip_prefix(label)?;
                rest.trim().parse().ok()
            })
            .unwrap_or(0)
    };
    let got_text = Counts {
        succeeded: row("succeeded"),
        failed: row("failed"),
        in_doubt: row("in doubt"),
        running: row("running"),
        not_started: row("not started"),
        not_downloaded: row("not downloaded"),
    };
    assert_eq!(got_text, want, "status text table:\n{text}");
    want
}

/// Where the jobs stood at one kill.
#[derive(Debug, Default)]
struct AtKill {
    not_sent: usize,
    submitting: usize,
    polling: usize,
    downloading: usize,
    done: usize,
}

fn at_kill(jobs: usize, loaded: &Loaded) -> AtKill {
    let mut k = AtKill::default();
    for r in loaded.records.values() {
        match r.state() {
            State::Pending | State::Blocked => k.not_sent += 1,
            State::Submitting if r.task_id.is_none() => k.submitting += 1,
            State::InDoubt => {}
            State::Submitting | State::Submitted => k.polling += 1,
            State::Succeeded if r.video_paths.is_empty() => k.downloading += 1,
            State::Succeeded | State::Failed => k.done += 1,
        }
    }
    k.not_sent += jobs - loaded.records.len();
    k
}

/// SIGKILL at seeded random moments, at least 20 times, resuming after each: the
/// results file loads after every kill, every job ends succeeded or failed where
/// the simulator failed it, and only jobs recorded in doubt (each one in flight at a
/// kill) ever created a second task.
#[cfg(unix)]
#[test]
fn kill_storm() {
    const JOBS: usize = 150;
    const MIN_KILLS: usize = 20;
    const MIN_LATE_KILLS: usize = 3;
    const MAX_KILLS: usize = 80;
    let seed = storm_seed("kill storm");
    let logs = tempfile::tempdir().expect("temp dir");
    let request_log_path = logs.path().join("requests.jsonl");
    let mut config = SimConfig {
        generation_time: (Duration::from_millis(500), Duration::from_millis(1500)),
        seed,
        request_log: Some(request_log_path.clone()),
        ..fast_sim()
    };
    config.faults.generation_failure = 0.05;
    let h = Harness::new(config);
    let manifest = h.write("storm.yaml", &text_jobs(JOBS));
    let run_log = logs.path().join("runs.log");
    // 25 submissions a second: the submit phase spans many kills, and polls and
    // downloads of earlier jobs go on beside it.
    let flags = [
        "--rate",
        "25/1s",
        "--concurrency",
        "16",
        "--poll-interval",
        "150ms",
        "--request-timeout",
        "5s",
    ];

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut in_flight_at_kill: BTreeSet<String> = BTreeSet::new();
    let (mut kills, mut late_kills, mut torn) = (0, 0, 0);
    let mut totals = AtKill::default();
    let (mut mid_submit, mut mid_download) = (0, 0);
    let mut first_task: BTreeMap<String, String> = BTreeMap::new();
    let mut ended_jobs: BTreeSet<String> = BTreeSet::new();
    let started = Instant::now();
    let finished_alone = loop {
        // Once everything is sent, the tail (polls, downloads) is short: kill
        // sooner so that kills land in it too.
        let delay = if late_kills > 0 {
            Duration::from_millis(rng.u64(30..400))
        } else {
            Duration::from_millis(rng.u64(100..1200))
        };
        let loaded = match storm_round(&h, &manifest, &flags, &run_log, delay) {
            Round::Ended(status) => break Some(status),
            Round::Killed(loaded) => loaded,
        };
        kills += 1;
        torn += usize::from(loaded.torn);
        let k = at_kill(JOBS, &loaded);
        // Jobs left submitting by an earlier kill are in doubt and wait for
        // --resubmit-in-doubt: the submit phase is over when nothing else is left.
        if k.not_sent == 0 {
            late_kills += 1;
        }
        mid_download += usize::from(k.downloading > 0);
        totals.not_sent += k.not_sent;
        totals.submitting += k.submitting;
        totals.polling += k.polling;
        totals.downloading += k.downloading;
        totals.done += k.done;
        let mut caught = false;
        for r in loaded.records.values() {
            // A recorded task is the job's for good: never replaced, never lost.
            if let Some(task) = &r.task_id {
                let first = first_task
                    .entry(r.job_id.clone())
                    .or_insert_with(|| task.clone());
                assert_eq!(first, task, "after kill {kills}: {} changed task", r.job_id);
            } else {
                assert!(
                    !first_task.contains_key(&r.job_id),
                    "after kill {kills}: {} lost its task",
                    r.job_id
                );
            }
            if matches!(r.state(), State::Succeeded | State::Failed) {
                ended_jobs.insert(r.job_id.clone());
            } else {
                assert!(
                    !ended_jobs.contains(&r.job_id),
                    "after kill {kills}: {} went back from its end to {}",
                    r.job_id,
                    r.state()
                );
            }
            let doubt = r.state() == State::InDoubt
                || (matches!(r.state(), State::Submitting | State::Submitted)
                    && r.task_id.is_none());
            if doubt {
                caught |= in_flight_at_kill.insert(r.job_id.clone());
            }
        }
        mid_submit += usize::from(caught);
        if (kills >= MIN_KILLS && late_kills >= MIN_LATE_KILLS) || kills >= MAX_KILLS {
            break None;
        }
    };
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills: the run finished too soon"
    );
    assert!(
        late_kills >= 1,
        "no kill landed after the submit phase: {kills} kills"
    );
    let storm_time = started.elapsed();
    if let Some(status) = finished_alone {
        // It finished between kills: it must have exited like a finished run would.
        assert!(
            matches!(
                status.code(),
                Some(c) if c == i32::from(Exit::Ok)
                    || c == i32::from(Exit::JobsFailed)
                    || c == i32::from(Exit::NotFinished)
            ),
            "{status:?}\n{}",
            tail(&run_log)
        );
    }

    // Resume without --resubmit-in-doubt: everything ends but the in-doubt jobs.
    let code = run_bounded(&h, &manifest, &flags, &run_log, Duration::from_secs(120));
    let loaded = h.results();
    let after_resume = counts(&loaded);
    assert_eq!(code, expected_exit(&after_resume), "{}", tail(&run_log));
    assert_eq!(after_resume.running + after_resume.not_started, 0);
    assert_eq!(after_resume.not_downloaded, 0, "{}", tail(&run_log));
    let in_doubt: BTreeSet<String> = ids_in(&loaded, State::InDoubt)
        .into_iter()
        .chain(
            loaded
                .records
                .values()
                .filter(|r| r.task_id.is_none() && r.state() == State::Submitting)
                .map(|r| r.job_id.clone()),
        )
        .collect();
    assert_eq!(in_doubt.len(), after_resume.in_doubt);
    for id in &in_doubt {
        assert!(
            in_flight_at_kill.contains(id),
            "{id} is in doubt but was never in flight at a kill"
        );
    }
    let tasks_before_resend = h.stats().tasks_created;

    // Then with it: every job ends.
    let code = run_bounded(
        &h,
        &manifest,
        &[&flags[..], &["--resubmit-in-doubt"]].concat(),
        &run_log,
        Duration::from_secs(120),
    );
    let loaded = h.results();
    let end = counts(&loaded);
    assert_eq!(
        end.succeeded + end.failed,
        JOBS,
        "{end:?}\n{}",
        tail(&run_log)
    );
    assert_eq!(code, expected_exit(&end));

    // Failed exactly where the simulator failed the job's task.
    let task_ids: Vec<String> = loaded
        .records
        .values()
        .map(|r| r.task_id.clone().expect("every ended job has its task"))
        .collect();
    let truth = sim_outcomes(&h, &task_ids);
    for r in loaded.records.values() {
        let task = r.task_id.as_deref().unwrap_or_default();
        if let Some(first) = first_task.get(&r.job_id) {
            assert_eq!(
                first, task,
                "{}: the task seen at a kill is the one kept",
                r.job_id
            );
        }
        match (&truth[task], r.state()) {
            (TaskState::Succeeded { .. }, State::Succeeded) => {}
            (TaskState::Failed { error_message, .. }, State::Failed) => {
                assert_eq!(r.error_message, error_message.clone(), "{}", r.job_id);
            }
            (t, s) => panic!("{}: recorded {s}, the simulator says {t:?}", r.job_id),
        }
    }
    check_videos(&h, &loaded);
    assert!(
        !h.path("results.csv.tmp").exists(),
        "no rewrite left its temporary file"
    );

    // Tasks: one per job, a second only for jobs recorded in doubt.
    let stats = h.stats();
    let by_fp: BTreeMap<&str, &Record> = loaded
        .records
        .values()
        .map(|r| (r.fingerprint.as_str(), r))
        .collect();
    assert_eq!(
        stats.tasks_by_fingerprint.len(),
        JOBS,
        "every job has a task"
    );
    let mut duplicates = 0;
    for (fp, n) in &stats.tasks_by_fingerprint {
        let r = by_fp[fp.as_str()];
        if *n > 1 {
            duplicates += 1;
            assert!(
                in_doubt.contains(&r.job_id) && *n == 2,
                "job {} created {n} tasks without being recorded in doubt",
                r.job_id
            );
        }
    }
    // The request log agrees with the counters: tasks per fingerprint.
    let log = request_log(&request_log_path);
    let mut created: BTreeMap<String, u32> = BTreeMap::new();
    for l in log
        .iter()
        .filter(|l| l.endpoint == "generate" && l.task_created)
    {
        *created
            .entry(l.fingerprint.clone().expect("fingerprint"))
            .or_default() += 1;
    }
    assert_eq!(created, stats.tasks_by_fingerprint);
    check_status_agrees(&h, JOBS);

    let n = kills.max(1);
    eprintln!(
        "kill storm: {JOBS} jobs, {kills} kills over {:.1}s ({late_kills} after the submit phase, {torn} left a torn row); \
         {mid_submit} caught a submission in flight, {mid_download} a download; \
         jobs per kill on average: {} not sent, {:.1} submitting or in doubt, {} polling, {:.1} downloading, {} done",
        storm_time.as_secs_f64(),
        totals.not_sent / n,
        totals.submitting as f64 / n as f64,
        totals.polling / n,
        totals.downloading as f64 / n as f64,
        totals.done / n,
    );
    eprintln!(
        "kill storm: {} tasks ({} before resending in-doubt jobs), {} jobs in flight at a kill, {} recorded in doubt, {} duplicate tasks (all in doubt), {} failed by the simulator, {} succeeded",
        stats.tasks_created,
        tasks_before_resend,
        in_flight_at_kill.len(),
        in_doubt.len(),
        duplicates,
        end.failed,
        end.succeeded,
    );
}

/// `flags` with the storm's own [`storm_cmd`] adds, for a run driven in process.
fn with_storm_flags<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    [&["--poll-rate", "1000/1s"][..], flags].concat()
}

/// Every fault at once: 500s, a maintenance window, a rate limit at half the
/// runner's, dropped connections before and after a task exists, answers slower
/// than the timeout, failed generations. Every job ends or is in doubt, retries
/// stay within --max-attempts, no job creates two tasks, and the in-doubt jobs are
/// exactly those whose connection dropped or whose task's answer never arrived.
#[test]
fn fault_storm() {
    const JOBS: usize = 100;
    const MAX_ATTEMPTS: u32 = 4;
    let seed = storm_seed("fault storm");
    let logs = tempfile::tempdir().expect("temp dir");
    let request_log_path = logs.path().join("requests.jsonl");
    let mut config = SimConfig {
        generation_time: (Duration::from_millis(300), Duration::from_millis(900)),
        seed,
        request_log: Some(request_log_path.clone()),
        // Half the runner's --rate 80/1s.
        rate: Some("40/1s".parse().expect("rate")),
        ..fast_sim()
    };
    config.faults.http_500 = FaultRate::everywhere(0.3);
    config.faults.maintenance = Some(Maintenance {
        start: Duration::from_millis(600),
        duration: Duration::from_millis(800),
    });
    // The window's 455s say how long it has left (1 s): the runner's 30 s floor for
    // a 455 sent without one is the retry policy's unit test, not this storm's
    // subject, which is every fault meeting every other.
    config.faults.maintenance_retry_after = true;
    config.faults.drop_before = 0.05;
    config.faults.drop_after = 0.05;
    config.faults.slow = 0.02;
    config.faults.slow_delay = Duration::from_millis(2500);
    config.faults.generation_failure = 0.10;
    let h = Harness::new(config);
    let manifest = h.write("faults.yaml", &text_jobs(JOBS));
    let run_log = h.path("run.log");
    let max_attempts = MAX_ATTEMPTS.to_string();
    let flags = [
        "--rate",
        "80/1s",
        "--max-attempts",
        &max_attempts,
        "--request-timeout",
        "1s",
        "--poll-interval",
        "50ms",
    ];
    let started = Instant::now();
    // No process is killed here: the run is driven in process, its retry delays a
    // tenth of the real ones (0.2 s doubling) and the 455's Retry-After as sent.
    let code = h.run_quick_retries(&manifest, &with_storm_flags(&flags));
    let took = started.elapsed();

    let loaded = h.results();
    let c = counts(&loaded);
    assert_eq!(
        c.succeeded + c.failed + c.in_doubt,
        JOBS,
        "every job ended or is in doubt: {c:?}\n{}",
        tail(&run_log)
    );
    assert_eq!(code, expected_exit(&c), "{c:?}\n{}", tail(&run_log));
    for r in loaded.records.values() {
        assert!(
            r.attempts <= MAX_ATTEMPTS,
            "{} took {} attempts",
            r.job_id,
            r.attempts
        );
    }

    let log = request_log(&request_log_path);
    let stats = h.stats();
    let mut generate_calls: BTreeMap<&str, u32> = BTreeMap::new();
    let mut lost: BTreeSet<&str> = BTreeSet::new();
    let (mut dropped_before, mut dropped_after) = (0, 0);
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for l in &log {
        let key = match l.code {
            Some(code) => format!("{} {code}", l.endpoint),
            None => format!("{} dropped", l.endpoint),
        };
        *codes.entry(key).or_default() += 1;
        if l.endpoint != "generate" {
            continue;
        }
        let fp = l
            .fingerprint
            .as_deref()
            .expect("generate is logged with its fingerprint");
        *generate_calls.entry(fp).or_default() += 1;
        if l.dropped {
            lost.insert(fp);
            if l.task_created {
                dropped_after += 1;
            } else {
                dropped_before += 1;
            }
        }
    }
    for (fp, n) in &generate_calls {
        assert!(*n <= MAX_ATTEMPTS, "{fp}: {n} generate calls");
    }
    assert!(
        stats.tasks_by_fingerprint.values().all(|n| *n == 1),
        "one run never sends a job again once a task may exist: {:?}",
        stats.tasks_by_fingerprint
    );

    // In doubt exactly when the connection dropped, or the task's answer came too
    // late to be read (slow answers past --request-timeout).
    let mut slow = 0;
    let mut gave_up = 0;
    let mut sim_failed = 0;
    let task_ids: Vec<String> = loaded
        .records
        .values()
        .filter_map(|r| r.task_id.clone())
        .collect();
    let truth = sim_outcomes(&h, &task_ids);
    for r in loaded.records.values() {
        let fp = r.fingerprint.as_str();
        // A task exists that the results file does not know: its answer came
        // too late (the simulator may not even log it: the client hung up).
        let unread = stats.tasks_by_fingerprint.contains_key(fp) && r.task_id.is_none();
        let doubt = lost.contains(fp) || unread;
        assert_eq!(
            r.state() == State::InDoubt,
            doubt,
            "{}: state {}, dropped {}, unread answer {unread}",
            r.job_id,
            r.state(),
            lost.contains(fp)
        );
        if unread && !lost.contains(fp) {
            slow += 1;
        }
        match r.state() {
            State::Failed => match r.task_id.as_deref() {
                Some(task) => {
                    assert!(
                        matches!(truth[task], TaskState::Failed { .. }),
                        "{}: failed, but the simulator says {:?}",
                        r.job_id,
                        truth[task]
                    );
                    sim_failed += 1;
                }
                None => {
                    assert_eq!(
                        r.attempts, MAX_ATTEMPTS,
                        "{}: failed without a task",
                        r.job_id
                    );
                    gave_up += 1;
                }
            },
            State::Succeeded => {
                let task = r.task_id.as_deref().expect("a succeeded job has its task");
                assert!(matches!(truth[task], TaskState::Succeeded { .. }));
            }
            _ => {}
        }
    }
    check_videos(&h, &loaded);
    assert!(
        stats.codes.get(&455).copied().unwrap_or(0) > 0,
        "the window was hit"
    );
    assert!(stats.codes.get(&500).copied().unwrap_or(0) > 0);
    check_status_agrees(&h, JOBS);
    eprintln!(
        "fault storm: {JOBS} jobs in {:.1}s, exit {code}: {} succeeded, {} failed ({sim_failed} by the simulator, {gave_up} gave up after {MAX_ATTEMPTS} attempts), {} in doubt ({} dropped: {dropped_before} before the task existed, {dropped_after} after; {slow} answered too late); {} generate calls, {} tasks",
        took.as_secs_f64(),
        c.succeeded,
        c.failed,
        c.in_doubt,
        c.in_doubt - slow,
        stats.generate_calls,
        stats.tasks_created,
    );
    eprintln!("fault storm: answers {codes:?}");

    // A second run, still in the storm, sends the in-doubt jobs again on request:
    // attempts and generate calls stay within --max-attempts per run, and only
    // those jobs may now have a second task.
    let was_in_doubt = ids_in(&loaded, State::InDoubt);
    let code = h.run_quick_retries(
        &manifest,
        &with_storm_flags(&[&flags[..], &["--resubmit-in-doubt"]].concat()),
    );
    let loaded = h.results();
    let c2 = counts(&loaded);
    assert_eq!(c2.succeeded + c2.failed + c2.in_doubt, JOBS, "{c2:?}");
    assert_eq!(code, expected_exit(&c2), "{c2:?}\n{}", tail(&run_log));
    for r in loaded.records.values() {
        assert!(
            r.attempts <= 2 * MAX_ATTEMPTS,
            "{}: {}",
            r.job_id,
            r.attempts
        );
        if !was_in_doubt.contains(&r.job_id) {
            assert!(
                r.state() != State::InDoubt,
                "{}: in doubt, but not sent in the second run",
                r.job_id
            );
        }
    }
    let mut calls: BTreeMap<String, u32> = BTreeMap::new();
    for l in request_log(&request_log_path) {
        if l.endpoint == "generate" {
            *calls
                .entry(l.fingerprint.expect("fingerprint"))
                .or_default() += 1;
        }
    }
    assert!(calls.values().all(|n| *n <= 2 * MAX_ATTEMPTS), "{calls:?}");
    let by_fp: BTreeMap<&str, &str> = loaded
        .records
        .values()
        .map(|r| (r.fingerprint.as_str(), r.job_id.as_str()))
        .collect();
    let stats = h.stats();
    let mut duplicates = 0;
    for (fp, n) in &stats.tasks_by_fingerprint {
        if *n > 1 {
            duplicates += 1;
            assert!(
                *n == 2 && was_in_doubt.contains(by_fp[fp.as_str()]),
                "{}: {n} tasks",
                by_fp[fp.as_str()]
            );
        }
    }
    check_videos(&h, &loaded);
    check_status_agrees(&h, JOBS);
    eprintln!(
        "fault storm, second run with --resubmit-in-doubt: exit {code}: {} succeeded, {} failed, {} in doubt; {duplicates} jobs paid twice (all were in doubt)",
        c2.succeeded, c2.failed, c2.in_doubt,
    );
}

/// A small storm of both kinds (kills and faults), then the results file is
/// compact and `status` (text and JSON) agrees with it.
#[cfg(unix)]
#[test]
fn status_agrees_with_the_results_after_a_storm() {
    const JOBS: usize = 40;
    let seed = storm_seed("status storm");
    let logs = tempfile::tempdir().expect("temp dir");
    let request_log_path = logs.path().join("requests.jsonl");
    let mut config = SimConfig {
        generation_time: (Duration::from_millis(200), Duration::from_millis(600)),
        seed,
        request_log: Some(request_log_path.clone()),
        ..fast_sim()
    };
    config.faults.generation_failure = 0.2;
    config.faults.drop_after = 0.1;
    config.faults.http_500 = FaultRate::everywhere(0.2);
    let h = Harness::new(config);
    let manifest = h.write("s.yaml", &text_jobs(JOBS));
    let run_log = logs.path().join("run.log");
    let flags = [
        "--rate",
        "40/1s",
        "--poll-interval",
        "50ms",
        "--max-attempts",
        "3",
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    // Jobs caught mid-submission by a kill; a job waiting to retry after a 500
    // is recorded pending, so a kill then must not put it in doubt.
    let mut in_flight_at_kill = BTreeSet::new();
    for _ in 0..6 {
        let after = Duration::from_millis(rng.u64(100..700));
        if let Round::Killed(loaded) = storm_round(&h, &manifest, &flags, &run_log, after) {
            for r in loaded.records.values() {
                if r.state() == State::Submitting && r.task_id.is_none() {
                    in_flight_at_kill.insert(r.job_id.clone());
                }
            }
        }
    }
    let code = run_bounded(&h, &manifest, &flags, &run_log, Duration::from_secs(90));
    let c = check_status_agrees(&h, JOBS);
    assert_eq!(code, expected_exit(&c));
    assert_eq!(c.succeeded + c.failed + c.in_doubt, JOBS, "{c:?}");
    assert!(c.failed > 0 && c.succeeded > 0, "a mixed ending: {c:?}");
    // Without --resubmit-in-doubt nothing is ever sent twice, kills or drops.
    let stats = h.stats();
    assert!(
        stats.tasks_by_fingerprint.values().all(|n| *n == 1),
        "{:?}",
        stats.tasks_by_fingerprint
    );
    // In doubt only where a kill caught the submission or the connection dropped.
    let dropped: BTreeSet<String> = request_log(&request_log_path)
        .into_iter()
        .filter(|l| l.endpoint == "generate" && l.dropped)
        .filter_map(|l| l.fingerprint)
        .collect();
    let loaded = h.results();
    for r in loaded.records.values() {
        let doubt = r.task_id.is_none()
            && matches!(
                r.state(),
                State::InDoubt | State::Submitting | State::Submitted
            );
        if doubt {
            assert!(
                in_flight_at_kill.contains(&r.job_id) || dropped.contains(&r.fingerprint),
                "{} is in doubt, but no kill caught it and no connection dropped",
                r.job_id
            );
        }
    }
    eprintln!(
        "status storm: {c:?}; {} caught mid-submission by a kill, {} dropped",
        in_flight_at_kill.len(),
        dropped.len()
    );
}

/// Kills while 4K upgrades are being asked for: the service charges an upgrade on
/// the first ask, so asking again after a kill must not pay for it twice.
#[cfg(unix)]
#[test]
fn kills_during_upgrades_pay_each_upgrade_once() {
    const JOBS: usize = 40;
    let seed = storm_seed("upgrade storm");
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_millis(300), Duration::from_millis(900)),
        upgrade_4k_time: (Duration::from_millis(500), Duration::from_millis(1500)),
        seed,
        ..fast_sim()
    });
    let mut text = String::from("name: up\ndefaults:\n  upgrade: 4k\njobs:\n");
    for i in 1..=JOBS {
        text.push_str(&format!(
            "  - id: job-{i}\n    prompt: \"clip {i} in 4k\"\n"
        ));
    }
    let manifest = h.write("up.yaml", &text);
    let logs = tempfile::tempdir().expect("temp dir");
    let run_log = logs.path().join("run.log");
    let flags = ["--rate", "40/1s", "--poll-interval", "100ms"];
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut kills, mut mid_upgrade) = (0, 0);
    for _ in 0..12 {
        let after = Duration::from_millis(rng.u64(100..600));
        let Round::Killed(loaded) = storm_round(&h, &manifest, &flags, &run_log, after) else {
            break;
        };
        kills += 1;
        let upgrading = loaded
            .records
            .values()
            .any(|r| r.state() == State::Succeeded && r.upgrade_urls.is_empty());
        mid_upgrade += usize::from(upgrading);
    }
    let code = run_bounded(
        &h,
        &manifest,
        &[&flags[..], &["--resubmit-in-doubt"]].concat(),
        &run_log,
        Duration::from_secs(60),
    );
    assert_eq!(code, i32::from(Exit::Ok), "{}", tail(&run_log));
    let loaded = h.results();
    for r in loaded.records.values() {
        assert_eq!(r.state(), State::Succeeded);
        assert_eq!(r.upgrade_urls.len(), 1, "{}", r.job_id);
        assert!(r.video_paths[0].ends_with(&format!("{}-4k.mp4", r.job_id)));
    }
    assert!(kills >= 3, "only {kills} kills");
    let stats = h.stats();
    let prices = SimConfig::default().prices;
    let generation = prices
        .generation(
            veo_batch::request::Model::Veo3Fast,
            veo_batch::request::Resolution::Hd720,
        )
        .unwrap();
    let spent = SimConfig::default().credits - stats.credits;
    // Every task's generation, and one 4K upgrade per job: a task created by an
    // in-doubt resend is upgraded only if its job records it, never both.
    let want = generation * stats.tasks_created as f64 + prices.upgrade_4k * JOBS as f64;
    assert!(
        (spent - want).abs() < 1e-6,
        "spent {spent}, expected {want} for {} tasks and {JOBS} upgrades",
        stats.tasks_created
    );
    eprintln!(
        "upgrade storm: {JOBS} 4K jobs, {kills} kills ({mid_upgrade} while an upgrade was pending), {} tasks, {spent} credits spent: each generation and each upgrade paid once",
        stats.tasks_created
    );
}

/// SIGKILLs at random points of a batch of extend chains (a generation, then two
/// continuations), resuming after each: a child is sent only once its parent's
/// video is made, with that video's task; the simulator's log proves each job's
/// task (generation or extend) was created once, but for jobs recorded in doubt at
/// a kill, which are counted; a failed parent blocks its descendants; and every
/// extend keeps its stitched video.
#[cfg(unix)]
#[test]
fn kill_storm_on_extend_chains() {
    const CHAINS: usize = 30;
    const PARTS: usize = 3;
    const JOBS: usize = CHAINS * PARTS;
    const MIN_KILLS: usize = 12;
    const MAX_KILLS: usize = 60;
    let seed = storm_seed("extend storm");
    let logs = tempfile::tempdir().expect("temp dir");
    let request_log_path = logs.path().join("requests.jsonl");
    let mut config = SimConfig {
        generation_time: (Duration::from_millis(300), Duration::from_millis(1000)),
        seed,
        request_log: Some(request_log_path.clone()),
        ..fast_sim()
    };
    config.faults.generation_failure = 0.05;
    // A third of the answers come late (the task exists meanwhile, for generate
    // and extend): kills then catch submissions in flight, which end in doubt.
    config.faults.slow = 0.3;
    config.faults.slow_delay = Duration::from_millis(200);
    let h = Harness::new(config);
    let mut text = String::from("name: chains\njobs:\n");
    let mut job_of_prompt: BTreeMap<String, String> = BTreeMap::new();
    for c in 1..=CHAINS {
        for p in 1..=PARTS {
            let id = format!("chain-{c}-part-{p}");
            let prompt = format!("chain {c}, shot {p} of the spot");
            text.push_str(&format!("  - id: {id}\n    prompt: \"{prompt}\"\n"));
            if p > 1 {
                text.push_str(&format!("    extend: chain-{c}-part-{}\n", p - 1));
            }
            job_of_prompt.insert(prompt, id);
        }
    }
    let manifest = h.write("chains.yaml", &text);
    let run_log = logs.path().join("runs.log");
    let flags = [
        "--rate",
        "20/1s",
        "--concurrency",
        "12",
        "--poll-interval",
        "50ms",
        "--request-timeout",
        "5s",
    ];

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut in_flight_at_kill: BTreeSet<String> = BTreeSet::new();
    let mut kills = 0;
    let mut chained_at_kill = 0;
    let mut first_task: BTreeMap<String, String> = BTreeMap::new();
    while kills < MAX_KILLS {
        let after = Duration::from_millis(rng.u64(40..450));
        let Round::Killed(loaded) = storm_round(&h, &manifest, &flags, &run_log, after) else {
            break;
        };
        kills += 1;
        let mut extending = false;
        for r in loaded.records.values() {
            if let Some(task) = &r.task_id {
                let first = first_task
                    .entry(r.job_id.clone())
                    .or_insert_with(|| task.clone());
                assert_eq!(first, task, "after kill {kills}: {} changed task", r.job_id);
            }
            // A child sent names its parent's task, which its parent's row holds.
            if let Some(parent_task) = &r.parent_task_id {
                let parent = &loaded.records[&r.extends];
                assert_eq!(
                    parent.task_id.as_ref(),
                    Some(parent_task),
                    "after kill {kills}: {} continues a task its parent does not hold",
                    r.job_id
                );
                assert_eq!(parent.state(), State::Succeeded, "{}", r.job_id);
                extending |= r.state() != State::Succeeded;
            }
            let doubt = r.state() == State::InDoubt
                || (matches!(r.state(), State::Submitting | State::Submitted)
                    && r.task_id.is_none());
            if doubt {
                in_flight_at_kill.insert(r.job_id.clone());
            }
        }
        chained_at_kill += usize::from(extending);
        if kills >= MIN_KILLS && chained_at_kill >= 3 {
            break;
        }
    }
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills: the run finished too soon"
    );
    assert!(
        chained_at_kill > 0,
        "no kill landed while an extend was in flight: {kills} kills"
    );

    // Resume, then send the in-doubt jobs again: every job ends.
    run_bounded(&h, &manifest, &flags, &run_log, Duration::from_secs(120));
    let code = run_bounded(
        &h,
        &manifest,
        &[&flags[..], &["--resubmit-in-doubt"]].concat(),
        &run_log,
        Duration::from_secs(120),
    );
    let loaded = h.results();
    assert_eq!(loaded.records.len(), JOBS);
    let (mut succeeded, mut failed, mut blocked) = (0, 0, 0);
    for r in loaded.records.values() {
        match r.state() {
            State::Succeeded => succeeded += 1,
            State::Failed => failed += 1,
            State::Blocked => {
                blocked += 1;
                let parent = &loaded.records[&r.extends];
                assert!(
                    matches!(parent.state(), State::Failed | State::Blocked),
                    "{} is blocked by {} which is {}",
                    r.job_id,
                    parent.job_id,
                    parent.state()
                );
                assert_eq!(r.task_id, None, "{}", r.job_id);
            }
            s => panic!("{} ended {s}\n{}", r.job_id, tail(&run_log)),
        }
    }
    let expected = if failed + blocked > 0 {
        Exit::JobsFailed
    } else {
        Exit::Ok
    };
    assert_eq!(code, i32::from(expected), "{}", tail(&run_log));
    // Every extend that succeeded continued its parent's video as it stands, and
    // kept the stitched whole.
    for r in loaded.records.values() {
        if r.extends.is_empty() || r.state() != State::Succeeded {
            continue;
        }
        let parent = &loaded.records[&r.extends];
        assert_eq!(r.parent_task_id, parent.task_id, "{}", r.job_id);
        let task = r.task_id.as_deref().expect("task");
        let kept = std::fs::read(&r.video_paths[0]).expect("the kept video");
        assert_eq!(kept, sim::stitched_mp4(task), "{}", r.job_id);
    }

    // The log: tasks per job, two only for jobs recorded in doubt at a kill.
    let log: Vec<serde_json::Value> = std::fs::read_to_string(&request_log_path)
        .expect("request log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line"))
        .collect();
    let mut created: BTreeMap<&str, u32> = BTreeMap::new();
    let mut extends_created = 0;
    for l in &log {
        if l["task_created"] != true {
            continue;
        }
        let prompt = l["prompt"].as_str().expect("a prompt");
        let job = job_of_prompt[prompt].as_str();
        *created.entry(job).or_default() += 1;
        if l["endpoint"] == "extend" {
            extends_created += 1;
            // Sent with a task the simulator made and finished with success.
            let parent_task = l["extends"].as_str().expect("the extended task");
            assert!(
                log.iter().any(|p| p["task_created"] == true
                    && p["task_id"] == parent_task
                    && p["prompt"].as_str().map(|q| job_of_prompt[q].as_str())
                        == Some(loaded.records[job].extends.as_str())),
                "{job} extended {parent_task}, not a task of its parent"
            );
        }
    }
    let stats = h.stats();
    assert_eq!(
        u64::from(created.values().sum::<u32>()),
        stats.tasks_created,
        "the log names every task the simulator created"
    );
    let (mut twice, mut extends_twice) = (0, 0);
    for (job, n) in &created {
        if *n > 1 {
            twice += 1;
            extends_twice += usize::from(!loaded.records[*job].extends.is_empty());
            assert!(
                in_flight_at_kill.contains(*job) && *n == 2,
                "{job} created {n} tasks without being recorded in doubt"
            );
        }
    }
    for r in loaded.records.values() {
        let n = created.get(r.job_id.as_str()).copied().unwrap_or(0);
        match r.state() {
            State::Blocked => assert_eq!(n, 0, "{} is blocked and was sent", r.job_id),
            _ => assert!(n >= 1, "{} ended {} without a task", r.job_id, r.state()),
        }
    }
    eprintln!(
        "extend storm: {CHAINS} chains of {PARTS} ({JOBS} jobs), {kills} kills ({chained_at_kill} with an extend in flight); \
         {} tasks ({extends_created} extends), {} jobs in flight at a kill, {twice} with a second task \
         ({extends_twice} of them extends; all were in doubt); {succeeded} succeeded, {failed} failed, {blocked} blocked",
        stats.tasks_created,
        in_flight_at_kill.len(),
    );
}
