//! Records that never lie: the file under a row is that row's task's video, every
//! paid task stays on record, `--limit` never strands one, `run` and `status` tell
//! one story, and the spending limit holds across runs. Each test names the way a
//! record could lie that it rules out.

use std::time::{Duration, SystemTime};

use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;
use veo_batch::sim::{SAMPLE_MP4, SimConfig};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

fn one_job(prompt: &str) -> String {
    format!("name: b\njobs:\n  - id: a\n    prompt: \"{prompt}\"\n")
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

/// Standard output with every run of spaces made one.
fn words(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Case 1: an edited job's new video replaces the old one under the row, and the
/// old (paid) video is kept in `superseded/`, recorded.
#[test]
fn an_edited_job_gets_its_new_video_and_the_old_one_is_kept_aside() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("first take"));
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let first = h.results().records["a"].clone();
    let video = h.path("videos/a.mp4");
    assert_eq!(first.video_paths, [video.to_string_lossy()]);
    // Mark the first task's video, to tell it from the second's.
    std::fs::write(&video, b"the first task's video").expect("mark");

    h.write("b.yaml", &one_job("second take"));
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let old_task = first.task_id.clone().expect("task");
    assert!(
        stderr(&out).contains(&format!("\"a\" (task {old_task})")),
        "the supersession is announced with the task id: {}",
        stderr(&out)
    );
    let second = h.results().records["a"].clone();
    assert_ne!(second.task_id, first.task_id);
    assert_eq!(second.video_paths, first.video_paths, "same name");
    assert_eq!(
        std::fs::read(&video).expect("video"),
        SAMPLE_MP4,
        "the file under the row is the new task's video"
    );
    assert_eq!(second.superseded_tasks, std::slice::from_ref(&old_task));
    assert_eq!(second.superseded_paths.len(), 1, "{second:?}");
    let kept = &second.superseded_paths[0];
    assert!(kept.contains("superseded"), "{kept}");
    assert!(kept.contains(&old_task), "{kept}");
    assert_eq!(
        std::fs::read(kept).expect("kept video"),
        b"the first task's video"
    );
}

/// Case 1, second form: a file at the job's name that no row records (a results
/// file deleted, videos kept) is not taken for the new task's video.
#[test]
fn a_video_the_results_file_does_not_record_is_kept_aside_not_reused() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("a take"));
    std::fs::create_dir_all(h.path("videos")).expect("dir");
    let stale = h.path("videos/a.mp4");
    std::fs::write(&stale, b"an older batch's video").expect("stale file");
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("age the file");

    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(std::fs::read(&stale).expect("video"), SAMPLE_MP4);
    let r = &h.results().records["a"];
    assert_eq!(r.superseded_paths.len(), 1, "{r:?}");
    assert_eq!(
        std::fs::read(&r.superseded_paths[0]).expect("kept"),
        b"an older batch's video"
    );
}

/// Case 2: two jobs can never name one file.
#[test]
fn an_id_that_is_another_jobs_upgrade_file_is_a_located_manifest_error() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "b.yaml",
        "name: b\njobs:\n  - id: hero\n    prompt: x\n    upgrade: 1080p\n  - id: hero-1080p\n    prompt: y\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Usage as i32), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(":6:")
            && err.contains("job \"hero-1080p\": id: its video file hero-1080p.mp4")
            && err.contains("job \"hero\""),
        "{err}"
    );
    assert_eq!(h.stats().generate_calls, 0, "nothing was sent");
}

/// Case 2, second form: a second result URL and another job's id never meet, and
/// ids that clean to one name are kept apart readably.
#[test]
fn second_urls_and_cleaned_ids_never_share_a_file() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "b.yaml",
        "name: b\njobs:\n  - id: shot\n    prompt: x\n  - id: shot-2\n    prompt: y\n  - id: \"cut-16:9\"\n    prompt: z\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let results = h.results();
    let paths: Vec<&str> = ["shot", "shot-2", "cut-16:9"]
        .iter()
        .map(|id| results.records[*id].video_paths[0].as_str())
        .collect();
    assert!(paths[0].ends_with("/shot.mp4"), "{paths:?}");
    assert!(paths[1].ends_with("/shot-2.mp4"), "{paths:?}");
    assert!(
        paths[2].ends_with("/cut-16_9.mp4"),
        "readable, no hash: {paths:?}"
    );
}

/// Case 3: a task that an edit replaces stays on record, and `attempts` counts
/// every generate call.
#[test]
fn a_superseded_running_task_stays_on_record() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(30), Duration::from_secs(30)),
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &one_job("first take"));
    let out = h.run(&manifest, &["--no-wait"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let first = h.results().records["a"].clone();
    let old_task = first.task_id.clone().expect("task");

    h.write("b.yaml", &one_job("second take"));
    let out = h.run(&manifest, &["--no-wait"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "replaces the submitted task of 1 job (kept on record in superseded_tasks): \"a\" (task {old_task})"
        )),
        "{}",
        stderr(&out)
    );
    let r = h.results().records["a"].clone();
    assert_eq!(r.attempts, 2, "two generate calls were paid");
    assert_eq!(r.superseded_tasks, [old_task]);
    assert_eq!(r.credits, 120.0, "two veo3_fast tasks at 60");
    assert_eq!(h.stats().tasks_created, 2);
}

/// Case 4: `--limit` picks among jobs to send; tasks already paid for are always
/// collected.
#[test]
fn limit_chooses_jobs_to_send_and_collects_every_paid_task() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(5));
    let out = h.run(&manifest, &["--no-wait", "--limit", "3"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().tasks_created, 3);

    let out = h.run(&manifest, &["--limit", "1"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let results = h.results();
    let succeeded: Vec<&str> = results
        .order
        .iter()
        .filter(|id| results.records[*id].state() == State::Succeeded)
        .map(String::as_str)
        .collect();
    assert_eq!(succeeded, ["job-1", "job-2", "job-3", "job-4"]);
    assert_eq!(h.stats().tasks_created, 4, "one new job sent");
    assert!(
        stderr(&out).contains("1 jobs held back") || stderr(&out).contains("1 job held back"),
        "{}",
        stderr(&out)
    );
}

/// Case 5: after a `--no-download` run, `run` and `status` (of the results file and
/// of the manifest) say the same, with the same exit code.
#[test]
fn run_and_status_agree_after_a_no_download_run() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--no-download"]);
    let run_code = code(&out);
    let run_err = stderr(&out);
    assert_eq!(run_code, Some(Exit::NotFinished as i32), "{run_err}");
    assert!(
        run_err.contains("3 videos made and not downloaded yet"),
        "{run_err}"
    );

    for args in [
        vec!["results.csv"],
        vec!["b.yaml", "--results", "results.csv"],
    ] {
        let s = h.status(&args);
        let text = words(&s);
        assert_eq!(code(&s), run_code, "{args:?}: {text}");
        assert!(text.contains("not downloaded 3"), "{args:?}: {text}");
        assert!(!text.contains("no answer was recorded"), "{args:?}: {text}");
    }
    // The next run downloads them.
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(code(&h.status(&["results.csv"])), Some(Exit::Ok as i32));
}

/// Case 5, second form: a job waiting for its 1080p file is running, whether
/// `status` reads the results file alone or with its manifest.
#[test]
fn status_of_the_results_file_knows_a_job_waits_for_its_upgrade() {
    let h = Harness::new(SimConfig {
        upgrade_1080p_time: (Duration::from_secs(60), Duration::from_secs(60)),
        ..fast_sim()
    });
    let manifest = h.write(
        "b.yaml",
        "name: b\njobs:\n  - id: hd\n    prompt: x\n    upgrade: 1080p\n  - id: plain\n    prompt: y\n",
    );
    let out = h.run(&manifest, &["--task-timeout", "1s"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let alone = h.status(&["results.csv"]);
    let with_manifest = h.status(&["b.yaml", "--results", "results.csv"]);
    assert_eq!(code(&alone), Some(Exit::NotFinished as i32));
    // The same counts; with its manifest, status adds what the batch costs.
    let counts = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("credits: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(counts(&alone), counts(&with_manifest));
    assert!(words(&alone).contains("running 1"), "{}", words(&alone));
}

/// Case 5, third form: `status` refuses another manifest's results file as `run`
/// does, with the same exit code.
#[test]
fn status_refuses_another_manifests_results_like_run() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let other = h.write(
        "other.yaml",
        "name: other\njobs:\n  - id: x\n    prompt: y\n",
    );
    let run = h.run(&other, &[]);
    let status = h.status(&["other.yaml", "--results", "results.csv"]);
    assert_eq!(code(&run), Some(Exit::Usage as i32), "{}", stderr(&run));
    assert_eq!(code(&status), code(&run), "{}", stderr(&status));
    assert!(
        stderr(&status).contains("belongs to another manifest"),
        "{}",
        stderr(&status)
    );
}

/// Case 7: `max_credits` caps the batch, not each invocation: what earlier runs
/// spent counts, and the stop says what to raise rather than "run again".
#[test]
fn max_credits_caps_the_batch_across_runs() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(5));
    // The first task of the kind is reserved at the highest price reported for
    // it (168) until the balance tells its price (60): 170 pays for two, not three.
    let cap = ["--max-credits", "170", "--concurrency", "1"];
    let out = h.run(&manifest, &cap);
    assert_eq!(code(&out), Some(Exit::Budget as i32), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, 2);

    let out = h.run(&manifest, &cap);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(Exit::Budget as i32), "{err}");
    assert_eq!(
        h.stats().tasks_created,
        2,
        "the batch has spent 120 of its 170, and a first task is reserved at 168: {err}"
    );
    assert!(err.contains("120 credits spent on it so far"), "{err}");
    assert!(!err.contains("run the same command again to send"), "{err}");
    assert!(err.contains("raise"), "{err}");

    // A per-invocation cap is its own flag.
    let out = h.run(
        &manifest,
        &["--max-run-credits", "170", "--concurrency", "1"],
    );
    assert_eq!(code(&out), Some(Exit::Budget as i32), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, 4);
    let spent: f64 = h.results().records.values().map(|r| r.credits).sum();
    assert_eq!(spent, 240.0);
}

/// The results file records videos relative to its own folder, so the folder can
/// be moved with its videos: a run from the new place finds them all.
#[test]
fn a_results_folder_moved_with_its_videos_still_holds_them() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let out_dir = h.path("out");
    let out = h
        .run_cmd_at(
            &manifest,
            &out_dir.join("results.csv"),
            &out_dir.join("videos"),
        )
        .args(["--rate", "1000/1s"])
        .output()
        .expect("runs");
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let text = std::fs::read_to_string(out_dir.join("results.csv")).expect("results");
    assert!(text.contains(",videos/job-1.mp4,"), "{text}");

    let moved = h.path("moved");
    std::fs::rename(&out_dir, &moved).expect("move the folder");
    let out = h
        .run_cmd_at(&manifest, &moved.join("results.csv"), &moved.join("videos"))
        .output()
        .expect("runs");
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(h.stats().tasks_created, 2, "nothing sent again");
    assert!(
        !moved.join("videos/superseded").exists(),
        "nothing moved aside"
    );
}

/// The results file carries what a data team filters on: seeds, resolution,
/// duration, upgrade, image URLs and what the job cost.
#[test]
fn the_results_file_records_the_inputs_a_data_team_filters_on() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "b.yaml",
        "name: b\njobs:\n  - id: a\n    prompt: x\n    model: veo3_lite\n    resolution: 1080p\n    \
         duration: 6\n    seeds: 12345\n    imageUrls: [\"https://assets.example.com/a.png\"]\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let r = &h.results().records["a"];
    assert_eq!(
        (
            r.seeds.as_str(),
            r.resolution.as_str(),
            r.duration.as_str(),
            r.image_urls.as_slice(),
            r.credits
        ),
        (
            "12345",
            "1080p",
            "6",
            &["https://assets.example.com/a.png".to_owned()][..],
            22.5
        )
    );
}

/// Result URLs that no longer answer (expired, or a simulator's old port after a
/// `--simulate` resume) are asked for again through record-info, once per job, and
/// the paid video is downloaded rather than given up.
#[test]
fn dead_result_urls_are_asked_for_again() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &one_job("a take"));
    let out = h.run(&manifest, &["--no-download"]);
    assert_eq!(
        code(&out),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let results = h.path("results.csv");
    let text = std::fs::read_to_string(&results).expect("results");
    let base = h.sim.base_url();
    assert!(text.contains(&base), "{text}");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(&results, text.replace(&base, "http://127.0.0.1:1")).expect("edit");

    let out = h.run(&manifest, &["--max-attempts", "1"]);
    assert_eq!(code(&out), Some(Exit::Ok as i32), "{}", stderr(&out));
    let r = &h.results().records["a"];
    assert_eq!(std::fs::read(&r.video_paths[0]).expect("video"), SAMPLE_MP4);
    assert!(r.video_urls[0].starts_with(&base), "{:?}", r.video_urls);
}
