//! Extend jobs end to end against the simulator: chains run parents first and keep
//! the stitched videos, matrices of extends, a failed parent blocks its children
//! until `--retry-failed`, a parent in doubt leaves them waiting, an edited parent
//! runs its children again (an unchanged one never), and `--limit` never lets a
//! child jump ahead of its parent.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;
use veo_batch::sim::{Endpoint, FaultRate, SAMPLE_MP4, SimConfig, stitched_mp4};

use crate::harness::{Harness, fast_sim, stderr};

const CHAIN: &str = "\
name: spot
jobs:
  - id: hero
    prompt: A trail runner crests a ridge at sunrise
  - id: hero-part-2
    extend: hero
    prompt: She sprints down the far slope into the valley
  - id: hero-part-3
    extend: hero-part-2
    prompt: She stops at a lake and looks back at the ridge
  - id: other
    prompt: A lighthouse at dusk
    model: veo3_lite
";

/// The simulator's request log, one JSON object per line.
fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the request log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a request log line"))
        .collect()
}

fn created<'a>(log: &'a [Value], endpoint: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|l| l["endpoint"] == endpoint && l["task_created"] == true)
        .collect()
}

fn logged_sim(seed: u64, dir: &Path) -> SimConfig {
    SimConfig {
        seed,
        request_log: Some(dir.join("requests.jsonl")),
        ..fast_sim()
    }
}

fn task(h: &Harness, id: &str) -> String {
    h.results().records[id]
        .task_id
        .clone()
        .unwrap_or_else(|| panic!("{id} has a task"))
}

#[test]
fn a_chain_of_three_runs_parents_first_and_keeps_the_stitched_videos() {
    let logs = tempfile::tempdir().expect("temp dir");
    let h = Harness::new(logged_sim(1, logs.path()));
    let m = h.write("m.yaml", CHAIN);
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let r = h.results();
    let rec = |id: &str| &r.records[id];
    for id in ["hero", "hero-part-2", "hero-part-3", "other"] {
        assert_eq!(rec(id).state(), State::Succeeded, "{id}");
        assert_eq!(rec(id).attempts, 1, "{id}");
    }
    // Each extend records the job and the task it continued.
    assert_eq!(rec("hero-part-2").extends, "hero");
    assert_eq!(rec("hero-part-2").parent_task_id, rec("hero").task_id);
    assert_eq!(
        rec("hero-part-3").parent_task_id,
        rec("hero-part-2").task_id
    );
    assert_eq!(rec("hero-part-3").generation_type, "EXTEND");
    assert_eq!(rec("hero").parent_task_id, None);

    // The kept files: the base video, and for each extend its stitched whole (the
    // simulator's fullResultUrls file), never the new segment alone.
    let read = |name: &str| std::fs::read(h.path("videos").join(name)).expect("a video");
    assert_eq!(read("hero.mp4"), SAMPLE_MP4);
    for id in ["hero-part-2", "hero-part-3"] {
        let kept = read(&format!("{id}.mp4"));
        let task = rec(id).task_id.clone().expect("task");
        assert_eq!(kept, stitched_mp4(&task), "{id}");
        assert!(kept.len() > SAMPLE_MP4.len());
        assert!(rec(id).video_urls[0].ends_with(&format!("{task}-full.mp4")));
    }

    // The log: two generations and two extends, each created once, each extend
    // sent with its parent's task, after that task's video was ready.
    let log = log_lines(&logs.path().join("requests.jsonl"));
    assert_eq!(created(&log, "generate").len(), 2);
    let extends = created(&log, "extend");
    assert_eq!(extends.len(), 2);
    for (child, parent) in [("hero-part-2", "hero"), ("hero-part-3", "hero-part-2")] {
        let parent_task = rec(parent).task_id.clone().expect("task");
        let call = extends
            .iter()
            .find(|l| l["task_id"] == rec(child).task_id.as_deref().unwrap_or_default())
            .unwrap_or_else(|| panic!("the extend of {child}"));
        assert_eq!(call["extends"], parent_task.as_str());
        let ready = log
            .iter()
            .find(|l| l["task_created"] == true && l["task_id"] == parent_task.as_str())
            .and_then(|l| l["ready_at"].as_str())
            .expect("the parent's creation is logged");
        assert!(
            call["ts"].as_str().unwrap_or_default() >= ready,
            "{child} was sent at {} before its parent was ready at {ready}",
            call["ts"]
        );
    }
    // Charged at the extend prices: fast 60 + two fast extends at 60 + lite 15.
    let stats = h.stats();
    assert!(
        (1_000_000.0 - stats.credits - 195.0).abs() < 1e-9,
        "{}",
        stats.credits
    );

    // Status shows every job done.
    let status = h.status(&["results.csv", "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["tally"]["succeeded"], 4);
    assert_eq!(v["tally"]["blocked"], 0);
}

#[test]
fn a_matrix_of_extends_continues_each_matching_video() {
    let h = Harness::new(fast_sim());
    let m = h.write(
        "m.yaml",
        "jobs:\n  - id: hero-{colour}\n    prompt: a {colour} jacket on a ridge\n    \
         matrix:\n      colour: [red, blue, green]\n  \
         - id: hero-{colour}-part-2\n    extend: hero-{colour}\n    \
         prompt: the {colour} jacket runs on\n    matrix:\n      colour: [red, blue, green]\n",
    );
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = h.results();
    for colour in ["red", "blue", "green"] {
        let parent = &r.records[&format!("hero-{colour}")];
        let child = &r.records[&format!("hero-{colour}-part-2")];
        assert_eq!(child.state(), State::Succeeded);
        assert_eq!(child.parent_task_id, parent.task_id, "{colour}");
        assert_eq!(child.extends, format!("hero-{colour}"));
    }
    assert_eq!(h.stats().requests.get("extend"), Some(&3));
}

#[test]
fn a_failed_parent_blocks_its_children_until_retry_failed_unblocks_them() {
    // The same seed: the second simulator knows the first one's tasks.
    let failing = Harness::new(SimConfig {
        seed: 9,
        faults: veo_batch::sim::Faults {
            generation_failure: 1.0,
            ..Default::default()
        },
        ..fast_sim()
    });
    let m = failing.write("m.yaml", CHAIN);
    let out = failing.run(&m, &[]);
    let text = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::JobsFailed)),
        "{text}"
    );
    let r = failing.results();
    assert_eq!(r.records["hero"].state(), State::Failed);
    let part2 = &r.records["hero-part-2"];
    let part3 = &r.records["hero-part-3"];
    assert_eq!(part2.state(), State::Blocked);
    assert_eq!(part3.state(), State::Blocked);
    let why2 = part2.error_message.clone().unwrap_or_default();
    let why3 = part3.error_message.clone().unwrap_or_default();
    assert!(
        why2.starts_with("the job it extends, \"hero\", failed: "),
        "{why2}"
    );
    assert!(
        why3.starts_with("the job it extends, \"hero-part-2\", is blocked: the job it extends, \"hero\", failed: "),
        "{why3}"
    );
    assert_eq!(part2.task_id, None);
    assert_eq!(part2.attempts, 0, "nothing was sent for it");
    assert_eq!(failing.stats().requests.get("extend"), None);
    assert!(
        text.contains("blocked (1 job): the job it extends, \"hero\", failed: "),
        "{text}"
    );
    assert!(text.contains("  blocked              2"), "{text}");

    // `status` says the same, from the file alone.
    let status = failing.status(&["results.csv", "--json"]);
    assert_eq!(status.status.code(), Some(i32::from(Exit::JobsFailed)));
    let v: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["tally"]["blocked"], 2);
    assert_eq!(v["blocked"][0]["job_id"], "hero-part-2");
    let states: Vec<&str> = v["job_states"]
        .as_array()
        .expect("job states")
        .iter()
        .map(|j| j["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["failed", "blocked", "blocked", "failed"]);

    // Run again: nothing is sent, the children are still blocked.
    let again = failing.run(&m, &[]);
    assert_eq!(again.status.code(), Some(i32::from(Exit::JobsFailed)));
    assert_eq!(failing.stats().requests.get("extend"), None);

    // --retry-failed, on a service that no longer fails: the parent, then its children.
    let working = Harness::new(SimConfig {
        seed: 9,
        ..fast_sim()
    });
    let out = working
        .run_cmd_at(&m, &failing.path("results.csv"), &failing.path("videos"))
        .args(["--rate", "1000/1s", "--retry-failed"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = failing.results();
    for id in ["hero", "hero-part-2", "hero-part-3", "other"] {
        assert_eq!(r.records[id].state(), State::Succeeded, "{id}");
    }
    assert_eq!(
        r.records["hero-part-2"].parent_task_id,
        r.records["hero"].task_id
    );
    assert_eq!(r.records["hero-part-2"].error_message, None);
    assert_eq!(working.stats().requests.get("extend"), Some(&2));
}

#[test]
fn a_parent_in_doubt_leaves_its_children_waiting() {
    let dropping = Harness::new(SimConfig {
        seed: 4,
        faults: veo_batch::sim::Faults {
            drop_after: 1.0,
            ..Default::default()
        },
        ..fast_sim()
    });
    let m = dropping.write("m.yaml", CHAIN);
    let out = dropping.run(&m, &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    let r = dropping.results();
    assert_eq!(r.records["hero"].state(), State::InDoubt);
    for id in ["hero-part-2", "hero-part-3"] {
        assert!(
            r.records
                .get(id)
                .is_none_or(|rec| rec.state() == State::Pending),
            "{id}: {:?}",
            r.records.get(id)
        );
    }
    assert_eq!(dropping.stats().requests.get("extend"), None);
    let status = dropping.status(&["m.yaml", "--results", "results.csv", "--json"]);
    assert_eq!(status.status.code(), Some(i32::from(Exit::NotFinished)));
    let v: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["tally"]["in_doubt"], 2, "hero and other");
    assert_eq!(v["tally"]["not_started"], 2, "the children wait");

    // Sent again on the user's word, the parent's video comes and its children follow.
    let working = Harness::new(SimConfig {
        seed: 4,
        ..fast_sim()
    });
    let out = working
        .run_cmd_at(&m, &dropping.path("results.csv"), &dropping.path("videos"))
        .args(["--rate", "1000/1s", "--resubmit-in-doubt"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(working.stats().requests.get("extend"), Some(&2));
}

#[test]
fn an_edited_parent_runs_its_children_again_and_an_unchanged_one_never() {
    let h = Harness::new(fast_sim());
    let m = h.write("m.yaml", CHAIN);
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first: Vec<String> = ["hero", "hero-part-2", "hero-part-3", "other"]
        .iter()
        .map(|id| task(&h, id))
        .collect();
    let created = h.stats().tasks_created;

    // Unchanged: nothing is sent again.
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, created);

    // The parent edited: it is generated again, and both extends after it. Sent and
    // not waited for, its children are no longer done, from the file alone.
    h.write(
        "m.yaml",
        &CHAIN.replace("crests a ridge at sunrise", "crests a ridge at dusk"),
    );
    let out = h.run(&m, &["--no-wait"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    let status = h.status(&["results.csv", "--json"]);
    assert_eq!(status.status.code(), Some(i32::from(Exit::NotFinished)));
    let v: Value = serde_json::from_slice(&status.stdout).expect("json");
    let states: Vec<&str> = v["job_states"]
        .as_array()
        .expect("job states")
        .iter()
        .map(|j| j["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        states,
        ["running", "not_started", "not_started", "succeeded"]
    );
    let r = h.results();
    assert!(
        r.records["hero-part-2"]
            .superseded_tasks
            .contains(&first[1])
    );
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, created + 3);
    let r = h.results();
    for (i, id) in ["hero", "hero-part-2", "hero-part-3"].iter().enumerate() {
        let rec = &r.records[*id];
        assert_ne!(rec.task_id.as_deref(), Some(first[i].as_str()), "{id}");
        assert_eq!(
            rec.superseded_tasks,
            [first[i].clone()],
            "{id}: once, {rec:?}"
        );
        assert_eq!(rec.state(), State::Succeeded);
    }
    assert_eq!(
        r.records["other"].task_id.as_deref(),
        Some(first[3].as_str())
    );
    assert_eq!(
        r.records["hero-part-3"].parent_task_id,
        r.records["hero-part-2"].task_id
    );
    // The superseded stitched videos are kept aside, never overwritten.
    let aside = std::fs::read_dir(h.path("videos").join("superseded"))
        .expect("superseded videos")
        .count();
    assert_eq!(aside, 3);

    // Only the last extend edited: only it runs again.
    let created = h.stats().tasks_created;
    h.write(
        "m.yaml",
        &CHAIN
            .replace("crests a ridge at sunrise", "crests a ridge at dusk")
            .replace("looks back at the ridge", "waves at the camera"),
    );
    let out = h.run(&m, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, created + 1);
}

#[test]
fn limit_never_lets_a_child_jump_ahead_of_its_parent() {
    let h = Harness::new(fast_sim());
    // The child is written first: `--limit 1` picks it, and it waits.
    let m = h.write(
        "m.yaml",
        "jobs:\n  - id: next\n    extend: base\n    prompt: on\n  - id: base\n    prompt: x\n",
    );
    let out = h.run(&m, &["--limit", "1"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().tasks_created, 0, "nothing jumped the order");

    // `--limit 2`: both, the parent first.
    let out = h.run(&m, &["--limit", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = h.results();
    assert_eq!(r.records["next"].parent_task_id, r.records["base"].task_id);

    // In a chain, the first two to send are the parent and its child.
    let h = Harness::new(fast_sim());
    let m = h.write("m.yaml", CHAIN);
    let out = h.run(&m, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    let r = h.results();
    assert_eq!(r.records["hero-part-2"].state(), State::Succeeded);
    assert!(!r.records.contains_key("hero-part-3"));
    assert_eq!(h.stats().requests.get("extend"), Some(&1));
    // --max-credits counts an extend like any job: 60 for the next one.
    let out = h.run(&m, &["--max-credits", "150"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Budget)),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        h.stats().requests.get("extend"),
        Some(&1),
        "120 spent, 60 more passes 150"
    );
}

#[test]
fn a_parent_still_running_at_the_end_leaves_its_children_not_started() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(30), Duration::from_secs(30)),
        ..fast_sim()
    });
    let m = h.write("m.yaml", CHAIN);
    let out = h.run(&m, &["--no-wait"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().requests.get("extend"), None);
    let r = h.results();
    assert_eq!(r.records["hero"].state(), State::Submitted);
}

#[test]
fn extend_calls_meet_the_faults_of_generate_and_are_retried() {
    let h = Harness::new(SimConfig {
        seed: 12,
        faults: veo_batch::sim::Faults {
            http_500: FaultRate::only(Endpoint::Extend, 0.4),
            http_429: FaultRate::only(Endpoint::Extend, 0.2),
            ..Default::default()
        },
        ..fast_sim()
    });
    let m = h.write("m.yaml", CHAIN);
    // What is retried is the point, not how long the waits are.
    let code = h.run_quick_retries(&m, &[]);
    assert_eq!(code, 0, "{}", h.run_log());
    let stats = h.stats();
    let refused = stats.requests.get("extend").copied().unwrap_or(0) - 2;
    assert!(refused > 0, "the faults were drawn: {stats:?}");
    // Refused calls made no task: one task per extend, whatever the retries.
    assert!(
        stats.tasks_by_fingerprint.values().all(|n| *n == 1),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_created, 4);
    let r = h.results();
    let attempts: u32 = ["hero-part-2", "hero-part-3"]
        .iter()
        .map(|id| r.records[*id].attempts)
        .sum();
    assert_eq!(
        u64::from(attempts),
        2 + refused,
        "every refused call was retried"
    );
}

#[test]
fn an_extend_in_doubt_is_sent_again_only_when_asked() {
    // The parent made on a calm service; its extend's connection dropped after the
    // task was made; sent again with --resubmit-in-doubt. The same seed throughout:
    // each simulator knows the others' tasks.
    let calm = |faults| SimConfig {
        seed: 21,
        faults,
        ..fast_sim()
    };
    let first = Harness::new(calm(veo_batch::sim::Faults::default()));
    let m = first.write("m.yaml", CHAIN);
    let (results, videos) = (first.path("results.csv"), first.path("videos"));
    let out = first.run(&m, &["--limit", "1"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    assert_eq!(first.results().records["hero"].state(), State::Succeeded);

    let dropping = Harness::new(calm(veo_batch::sim::Faults {
        drop_after: 1.0,
        ..Default::default()
    }));
    let run = |h: &Harness, extra: &[&str]| {
        h.run_cmd_at(&m, &results, &videos)
            .args(["--rate", "1000/1s"])
            .args(extra)
            .output()
            .expect("runs")
    };
    let out = run(&dropping, &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    let r = first.results();
    let part2 = &r.records["hero-part-2"];
    assert_eq!(part2.state(), State::InDoubt);
    assert_eq!(part2.parent_task_id, r.records["hero"].task_id);
    assert!(
        !r.records.contains_key("hero-part-3"),
        "it waits for its parent"
    );
    assert_eq!(
        dropping.stats().tasks_created,
        2,
        "the extend and other: made, unanswered"
    );

    // Without the flag, nothing is sent again.
    let again = Harness::new(calm(veo_batch::sim::Faults::default()));
    let out = run(&again, &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    assert_eq!(again.stats().requests.get("extend"), None);
    let out = run(&again, &["--resubmit-in-doubt"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = first.results();
    assert_eq!(r.records["hero-part-3"].state(), State::Succeeded);
    assert_eq!(r.records["hero-part-2"].superseded_tasks, ["(in doubt)"]);
    assert_eq!(again.stats().requests.get("extend"), Some(&2));
}
