//! `veo-batch run` against the simulator: the happy path, resume after every kind of
//! interruption, the fault classes, and the results file as the proof.

use std::collections::BTreeMap;
use std::time::Duration;

use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;
use veo_batch::sim::{FaultRate, SAMPLE_MP4, SimConfig};

use crate::harness::{Harness, Round, fast_sim, run_then_kill, stderr, text_jobs};

const EVERY_MODE: &str = r#"
name: modes
defaults:
  model: veo3_fast
jobs:
  - id: text
    prompt: "a lighthouse at dusk"
  - id: one-frame
    prompt: "the product turns slowly"
    imageUrls: ["https://assets.example.com/p.png"]
  - id: two-frames
    prompt: "from closed to open"
    imageUrls: ["https://assets.example.com/a.png", "https://assets.example.com/b.png"]
    aspect_ratio: "9:16"
  - id: reference
    prompt: "a cat in the style of the references"
    generationType: REFERENCE_2_VIDEO
    imageUrls: ["https://assets.example.com/r1.png", "https://assets.example.com/r2.png", "https://assets.example.com/r3.png"]
  - id: quality
    prompt: "a slow pan over mountains"
    model: veo3
    seeds: 12345
"#;

fn states(h: &Harness) -> BTreeMap<String, State> {
    h.results()
        .records
        .into_iter()
        .map(|(id, r)| (id, r.state()))
        .collect()
}

#[test]
fn every_mode_runs_to_playable_videos() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("modes.yaml", EVERY_MODE);
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));

    let results = h.results();
    assert_eq!(results.rows, 5, "one row per job after a clean end");
    for id in ["text", "one-frame", "two-frames", "reference", "quality"] {
        let r = &results.records[id];
        assert_eq!(r.state(), State::Succeeded, "{id}");
        assert!(r.task_id.is_some(), "{id}");
        assert_eq!(r.attempts, 1, "{id}");
        assert_eq!(r.video_paths.len(), 1, "{id}");
        let bytes = std::fs::read(&r.video_paths[0]).expect("video file");
        assert_eq!(
            bytes, SAMPLE_MP4,
            "{id}: the downloaded file is the simulator's MP4"
        );
    }
    assert_eq!(
        results.order,
        ["text", "one-frame", "two-frames", "reference", "quality"]
    );
    let stats = h.stats();
    assert_eq!(stats.tasks_created, 5);
    assert!(stats.tasks_by_fingerprint.values().all(|n| *n == 1));

    // A second run finds everything done and sends nothing.
    let again = h.run(&manifest, &[]);
    assert_eq!(again.status.code(), Some(Exit::Ok as i32));
    assert_eq!(h.stats().generate_calls, stats.generate_calls);
}

#[test]
fn no_wait_then_collect() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_millis(400), Duration::from_millis(600)),
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(6));
    let first = h.run(&manifest, &["--no-wait"]);
    assert_eq!(
        first.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&first)
    );
    assert!(states(&h).values().all(|s| *s == State::Submitted));
    assert!(
        stderr(&first).contains("6 jobs still running"),
        "{}",
        stderr(&first)
    );

    let second = h.run(&manifest, &[]);
    assert_eq!(
        second.status.code(),
        Some(Exit::Ok as i32),
        "{}",
        stderr(&second)
    );
    assert!(states(&h).values().all(|s| *s == State::Succeeded));
    assert_eq!(h.stats().tasks_created, 6, "collecting submits nothing new");
}

#[test]
fn a_second_run_on_the_same_results_exits_5() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let _held = veo_batch::checkpoint::writer::lock(&h.path("results.csv")).expect("lock");
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Locked as i32));
    assert!(
        stderr(&out).contains("another run is using results file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().generate_calls, 0);
}

#[test]
fn generation_failures_are_recorded_and_retried_on_request() {
    let mut failing = fast_sim();
    failing.faults.generation_failure = 1.0;
    let h = Harness::new(failing);
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(Exit::JobsFailed as i32),
        "{}",
        stderr(&out)
    );
    let results = h.results();
    for r in results.records.values() {
        assert_eq!(r.state(), State::Failed);
        assert!(r.error_message.is_some());
    }
    assert!(stderr(&out).contains("--retry-failed"));

    // Without the flag, failed jobs stay failed and nothing is sent.
    let calls = h.stats().generate_calls;
    let again = h.run(&manifest, &[]);
    assert_eq!(again.status.code(), Some(Exit::JobsFailed as i32));
    assert_eq!(h.stats().generate_calls, calls);

    // With it, they are sent again (and fail again: the simulator still says so).
    let retried = h.run(&manifest, &["--retry-failed"]);
    assert_eq!(retried.status.code(), Some(Exit::JobsFailed as i32));
    assert_eq!(h.stats().generate_calls, calls + 3);
    assert!(h.results().records.values().all(|r| r.attempts == 2));
}

#[test]
fn a_refused_key_stops_the_run_with_exit_3() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(4));
    let out = h
        .run_cmd(&manifest)
        .env("KIE_API_KEY", "not-the-key")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("KIE_API_KEY"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not-the-key"),
        "the key is never printed"
    );
    let results = h.results();
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == State::Pending),
        "nothing is marked failed"
    );
}

#[test]
fn exhausted_credits_stop_submitting_with_exit_3() {
    let h = Harness::new(SimConfig {
        credits: 130.0,
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(4));
    let out = h.run(&manifest, &["--concurrency", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{}",
        stderr(&out)
    );
    let s = states(&h);
    let succeeded = s.values().filter(|s| **s == State::Succeeded).count();
    assert_eq!(succeeded, 2, "two 60-credit jobs fit in 130 credits: {s:?}");
    assert!(stderr(&out).contains("credits"), "{}", stderr(&out));
}

#[test]
fn rate_limited_answers_are_retried() {
    let mut config = fast_sim();
    config.faults.http_429 = FaultRate::everywhere(0.4);
    config.faults.http_500 = FaultRate::everywhere(0.2);
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(8));
    // What is retried is the point, not how long the waits are.
    let code = h.run_quick_retries(&manifest, &["--max-attempts", "30"]);
    assert_eq!(code, Exit::Ok as i32, "{}", h.run_log());
    let stats = h.stats();
    assert!(
        stats.answered_429 > 0,
        "the simulator did refuse some calls"
    );
    assert_eq!(stats.tasks_created, 8, "each job created exactly one task");
    assert!(stats.tasks_by_fingerprint.values().all(|n| *n == 1));
}

#[test]
fn the_default_rate_draws_no_429() {
    // The service's limit at half of real time: 20 calls per 5 s. 25 jobs fill
    // one window and spill into the next, where a runner that sends more than the
    // window allows is refused.
    let h = Harness::new(SimConfig {
        rate: Some("20/10s".parse().expect("rate")),
        time_scale: 0.5,
        generation_time: (Duration::from_millis(200), Duration::from_millis(400)),
        ..SimConfig::default()
    });
    let manifest = h.write("b.yaml", &text_jobs(25));
    let out = h
        .run_cmd(&manifest)
        .args(["--rate", "20/5s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let stats = h.stats();
    // The margin (1% of the window, 50 ms here) absorbs the delay between a send
    // and its arrival; cores loaded by the other tests may still, rarely, delay one
    // request past it: "almost no 429" is the promise.
    assert!(
        stats.answered_429 <= 1,
        "the runner kept under the limit by itself: {} answers 429",
        stats.answered_429
    );
    assert_eq!(stats.tasks_created, 25);
}

#[test]
fn a_run_resumed_at_once_counts_the_sends_of_the_one_before() {
    // 20 calls per 5 s. The first run fills the window and stops (`--no-wait`);
    // the second, started at once with 20 more jobs, must wait for the window
    // the first one filled, which only its results file tells it about.
    let h = Harness::new(SimConfig {
        rate: Some("20/10s".parse().expect("rate")),
        time_scale: 0.5,
        generation_time: (Duration::from_millis(200), Duration::from_millis(400)),
        ..SimConfig::default()
    });
    let manifest = h.write("b.yaml", &text_jobs(20));
    let run = |extra: &[&str], code: i32| {
        let out = h
            .run_cmd(&manifest)
            .args(["--rate", "20/5s"])
            .args(extra)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    };
    run(&["--no-wait"], Exit::NotFinished as i32);
    assert_eq!(h.stats().tasks_created, 20);
    h.write("b.yaml", &text_jobs(40));
    run(&[], Exit::Ok as i32);
    let stats = h.stats();
    assert_eq!(stats.tasks_created, 40, "each job created exactly one task");
    assert!(
        stats.answered_429 <= 1,
        "the resumed run waited for the window: {} answers 429",
        stats.answered_429
    );
}

#[test]
fn connections_dropped_after_creation_are_in_doubt_and_never_resent() {
    let mut config = fast_sim();
    config.faults.drop_after = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(2));
    let out = h.run(&manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert!(states(&h).values().all(|s| *s == State::InDoubt));
    assert_eq!(
        h.stats().tasks_created,
        2,
        "each request did create its task"
    );
    assert!(stderr(&out).contains("--resubmit-in-doubt"));

    let again = h.run(&manifest, &[]);
    assert_eq!(again.status.code(), Some(Exit::NotFinished as i32));
    assert_eq!(
        h.stats().tasks_created,
        2,
        "in-doubt jobs are not sent again by default"
    );
}

#[test]
fn in_doubt_jobs_are_resent_on_request() {
    let mut config = fast_sim();
    config.faults.drop_after = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(1));
    let first = h.run(&manifest, &[]);
    assert_eq!(first.status.code(), Some(Exit::NotFinished as i32));
    let resent = h.run(&manifest, &["--resubmit-in-doubt"]);
    assert_eq!(resent.status.code(), Some(Exit::NotFinished as i32));
    assert_eq!(
        h.stats().tasks_created,
        2,
        "sent again because the user asked"
    );
    assert_eq!(h.results().records["job-1"].attempts, 2);
}

#[test]
fn an_edited_job_runs_again_and_the_rest_do_not() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    assert_eq!(h.run(&manifest, &[]).status.code(), Some(Exit::Ok as i32));
    let edited = text_jobs(3).replace("clip number 2", "clip number two, in the rain");
    std::fs::write(&manifest, edited).expect("edit manifest");
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(
        h.stats().tasks_created,
        4,
        "only the edited job was sent again"
    );
    assert!(
        stderr(&out).contains("1 resubmitted because the manifest changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        h.results().records["job-2"].prompt,
        "clip number two, in the rain"
    );
}

/// A manifest that drops a job and reorders the rest: the jobs still in it are found
/// by id, not by place, and the dropped job's row is kept after them.
#[test]
fn a_dropped_job_keeps_its_row_and_reordered_jobs_are_not_sent_again() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    assert_eq!(h.run(&manifest, &[]).status.code(), Some(Exit::Ok as i32));
    let before = h.results();
    std::fs::write(
        &manifest,
        "name: batch\njobs:\n  - id: job-3\n    prompt: \"clip number 3\"\n  \
         - id: job-1\n    prompt: \"clip number 1\"\n  - id: job-4\n    prompt: \"a new clip\"\n",
    )
    .expect("edit manifest");
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 jobs in the results file are no longer in the manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().tasks_created, 4, "only the new job was sent");
    let after = h.results();
    assert_eq!(after.order, ["job-3", "job-1", "job-4", "job-2"]);
    for id in ["job-1", "job-2", "job-3"] {
        assert_eq!(after.records[id], before.records[id], "{id} is untouched");
    }
    assert_eq!(after.records["job-4"].state, Some(State::Succeeded));
}

#[test]
fn a_bad_manifest_sends_nothing() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "b.yaml",
        "name: b\njobs:\n  - id: a\n    prompt: x\n    seeds: 5\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("seeds"), "{}", stderr(&out));
    assert_eq!(h.stats().generate_calls, 0);
    assert!(!h.path("results.csv").exists());
}

#[test]
fn a_results_file_of_another_manifest_is_refused() {
    let h = Harness::new(fast_sim());
    let one = h.write("one.yaml", &text_jobs(2));
    assert_eq!(h.run(&one, &[]).status.code(), Some(Exit::Ok as i32));
    let other = h.write(
        "other.yaml",
        "name: other\njobs:\n  - id: x\n    prompt: something else\n",
    );
    let calls = h.stats().generate_calls;
    let out = h.run(&other, &[]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("belongs to another manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().generate_calls, calls);
}

#[cfg(unix)]
#[test]
fn sigint_drains_and_exits_130_then_resumes() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(2), Duration::from_secs(3)),
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(5));
    let mut child = h.run_cmd(&manifest).spawn().expect("spawn");
    // Interrupt once a task exists, so that there is something in flight to drain.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let submitted = veo_batch::checkpoint::load(&h.path("results.csv"))
            .ok()
            .flatten()
            .is_some_and(|l| l.records.values().any(|r| r.state() == State::Submitted));
        if submitted {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(Exit::Interrupted as i32));
    let results = h.results();
    assert!(
        !results.needs_compaction(),
        "a drained run rewrites its results file"
    );
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == State::Submitted)
    );

    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(
        h.stats().tasks_created,
        5,
        "resuming polled, it did not resubmit"
    );
}

/// SIGKILL at seeded random moments, resuming after each: every job ends with one
/// task, except jobs recorded in doubt, which may have two (and are counted).
#[cfg(unix)]
#[test]
fn killed_at_random_moments_resumes_without_paying_twice() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_millis(200), Duration::from_millis(800)),
        ..fast_sim()
    });
    let jobs = 40;
    let manifest = h.write("b.yaml", &text_jobs(jobs));
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut ever_in_doubt = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let mut cmd = h.run_cmd(&manifest);
        cmd.args(["--rate", "40/1s", "--concurrency", "4"])
            .arg("--resubmit-in-doubt")
            .stderr(std::process::Stdio::null());
        let after = Duration::from_millis(rng.u64(50..600));
        if let Round::Killed(loaded) = run_then_kill(&mut cmd, after, &h.path("results.csv")) {
            for (id, r) in &loaded.records {
                let doubt = r.state() == State::InDoubt
                    || (r.state() == State::Submitting && r.task_id.is_none());
                if doubt {
                    ever_in_doubt.insert(id.clone());
                }
            }
        }
    }
    let out = h.run(&manifest, &["--resubmit-in-doubt"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let results = h.results();
    assert_eq!(results.records.len(), jobs);
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == State::Succeeded)
    );

    let stats = h.stats();
    let fingerprint_to_id: BTreeMap<String, String> = results
        .records
        .values()
        .map(|r| (r.fingerprint.clone(), r.job_id.clone()))
        .collect();
    for (fp, n) in &stats.tasks_by_fingerprint {
        let id = &fingerprint_to_id[fp];
        assert!(
            *n == 1 || ever_in_doubt.contains(id),
            "job {id} created {n} tasks without ever being in doubt"
        );
    }
    assert_eq!(stats.tasks_by_fingerprint.len(), jobs);
    eprintln!(
        "kill test: {} tasks for {jobs} jobs; {} jobs were in doubt at a kill",
        stats.tasks_created,
        ever_in_doubt.len()
    );
}

#[test]
fn max_credits_stops_at_the_job_that_would_pass_it() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "b.yaml",
        &format!("prices:\n  veo3_fast: 60\n{}", text_jobs(5)),
    );
    // veo3_fast costs 60, and the first task is reserved at the highest price
    // reported for it (168) until that is learned: 170 credits pay for two jobs,
    // not three.
    let out = h.run(&manifest, &["--max-credits", "170", "--concurrency", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Budget as i32),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--max-credits"), "{}", stderr(&out));
    let s = states(&h);
    let done = s.values().filter(|s| **s == State::Succeeded).count();
    assert_eq!(done, 2, "{s:?}");
    assert_eq!(h.stats().tasks_created, 2);
}

#[test]
fn limit_runs_the_first_outstanding_jobs() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(5));
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let ids: Vec<String> = h.results().order;
    assert_eq!(ids, ["job-1", "job-2"]);
    // The next preview takes the next two.
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(out.status.code(), Some(Exit::NotFinished as i32));
    assert_eq!(h.results().order, ["job-1", "job-2", "job-3", "job-4"]);
}

#[test]
fn sample_draws_a_repeatable_subset() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(10));
    let dry = |seed: &str| {
        let out = h.run(&manifest, &["--sample", "3", "--seed", seed, "--dry-run"]);
        assert_eq!(out.status.code(), Some(Exit::Ok as i32));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let a = dry("7");
    assert_eq!(a.lines().count(), 3);
    assert_eq!(a, dry("7"), "the same seed draws the same jobs");
    assert_eq!(h.stats().generate_calls, 0, "a dry run sends nothing");
}

#[test]
fn dry_run_prints_every_body_and_sends_nothing() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("modes.yaml", EVERY_MODE);
    let out = h
        .run_cmd(&manifest)
        .env_remove("KIE_API_KEY")
        .arg("--dry-run")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[3]["job_id"], "reference");
    assert_eq!(lines[3]["body"]["generationType"], "REFERENCE_2_VIDEO");
    assert_eq!(lines[4]["body"]["model"], "veo3");
    assert_eq!(h.stats().generate_calls, 0);
    assert!(!h.path("videos").exists());
}

#[test]
fn upgrades_download_the_1080p_and_4k_files() {
    let h = Harness::new(SimConfig {
        upgrade_1080p_time: (Duration::from_millis(100), Duration::from_millis(200)),
        upgrade_4k_time: (Duration::from_millis(200), Duration::from_millis(300)),
        ..fast_sim()
    });
    let manifest = h.write(
        "up.yaml",
        r#"
name: up
jobs:
  - id: hd
    prompt: "a 1080p clip"
    upgrade: 1080p
  - id: uhd
    prompt: "a 4k clip, original kept"
    upgrade: 4k
    keep_original: true
"#,
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let results = h.results();
    let hd = &results.records["hd"];
    assert_eq!(hd.upgrade_urls.len(), 1);
    assert_eq!(
        hd.video_paths.len(),
        1,
        "the upgrade replaces the base video"
    );
    assert!(
        hd.video_paths[0].ends_with("hd-1080p.mp4"),
        "{:?}",
        hd.video_paths
    );
    let uhd = &results.records["uhd"];
    assert_eq!(
        uhd.video_paths.len(),
        2,
        "the original is kept beside the 4k file"
    );
    assert!(uhd.video_paths[0].ends_with("uhd.mp4"));
    assert!(uhd.video_paths[1].ends_with("uhd-4k.mp4"));
    for p in hd.video_paths.iter().chain(&uhd.video_paths) {
        assert_eq!(std::fs::read(p).expect("file"), SAMPLE_MP4);
    }
    let stats = h.stats();
    // Generation 60 + 60, 1080p 5, 4K 120: the simulator charged exactly that.
    assert_eq!(stats.credits, SimConfig::default().credits - 245.0);
}

/// The summary after a stop tells what the results file holds. A second Ctrl-C
/// while generate calls are in flight leaves those jobs in doubt with their
/// credits committed: the summary counts them and their credits as `status` does,
/// instead of an empty report.
#[cfg(unix)]
#[test]
fn the_summary_after_a_second_ctrl_c_agrees_with_status() {
    summary_agrees_with_status_after_ctrl_c(2);
}

/// After one Ctrl-C the run drains: the sends in flight end in doubt (their
/// answers never come) and the summary says so as `status` does.
#[cfg(unix)]
#[test]
fn the_summary_after_a_drain_agrees_with_status() {
    summary_agrees_with_status_after_ctrl_c(1);
}

/// Runs six jobs whose generate calls never answer in time, presses Ctrl-C
/// `presses` times once three are being sent, and compares the run's summary with
/// `status --json` on the results file it left.
#[cfg(unix)]
fn summary_agrees_with_status_after_ctrl_c(presses: usize) {
    let h = Harness::new(SimConfig {
        // Every generate call answers only long after its task exists.
        faults: veo_batch::sim::Faults {
            slow: 1.0,
            slow_delay: Duration::from_secs(60),
            ..Default::default()
        },
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(6));
    let child = h
        .run_cmd(&manifest)
        .args([
            "--rate",
            "1000/1s",
            "--concurrency",
            "3",
            "--log-format",
            "json",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let submitting = || {
        veo_batch::checkpoint::load(&h.path("results.csv"))
            .ok()
            .flatten()
            .map_or(0, |l| {
                l.records
                    .values()
                    .filter(|r| r.state() == State::Submitting)
                    .count()
            })
    };
    while submitting() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id().to_string();
    for _ in 0..presses {
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(Exit::Interrupted as i32));
    let err = stderr(&out);
    let summary: serde_json::Value = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["fields"]["message"] == "run summary")
        .unwrap_or_else(|| panic!("no run summary in:\n{err}"));
    let fields = &summary["fields"];

    let results = h.path("results.csv");
    let status = h.status(&[
        "--json",
        manifest.to_str().expect("utf-8"),
        "--results",
        results.to_str().expect("utf-8"),
    ]);
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json prints JSON");
    let in_doubt = status["tally"]["in_doubt"].as_u64().expect("in_doubt");
    assert!(in_doubt >= 3, "the jobs in flight are in doubt: {status}");
    for count in ["in_doubt", "not_started", "succeeded", "failed", "running"] {
        assert_eq!(fields[count], status["tally"][count], "{count}: {fields}");
    }
    assert_eq!(fields["jobs"], status["jobs"], "{fields}");
    let credits = status["credits"].as_f64().expect("credits");
    assert!(credits > 0.0, "{status}");
    assert_eq!(fields["spent_credits"].as_f64(), Some(credits), "{fields}");
    assert_eq!(fields["batch_credits"].as_f64(), Some(credits), "{fields}");
}
