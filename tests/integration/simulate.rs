//! `run --simulate`: the embedded simulator across the runs of one batch, which
//! must resume exactly like runs against the service.

use std::path::Path;
use std::process::Output;

use veo_batch::checkpoint::{self, State};
use veo_batch::exit::Exit;

fn simulate(dir: &Path, extra: &[&str]) -> Output {
    crate::harness::veo_batch()
        .current_dir(dir)
        .args(["-q", "run", "batch.csv", "--simulate", "--yes"])
        .args(["--results", "results.csv", "--videos-dir", "videos"])
        .args(extra)
        .output()
        .expect("veo-batch runs")
}

/// Every `run --simulate` starts its own simulator, which must
/// know the tasks of the run before it (not answer "record is null") and never
/// hand out their ids again (two jobs sharing a task, both "succeeded").
#[test]
fn a_resumed_simulate_run_finds_its_tasks_and_never_reuses_their_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut csv = String::from("id,prompt\n");
    for i in 1..=8 {
        csv.push_str(&format!("job-{i},a quiet harbour at dawn take {i}\n"));
    }
    std::fs::write(dir.path().join("batch.csv"), csv).expect("manifest");

    // Half the jobs submitted, none waited for: an interrupted run.
    let first = simulate(dir.path(), &["--no-wait", "--limit", "4"]);
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        first.status.code(),
        Some(Exit::NotFinished.into()),
        "{}",
        stderr(&first)
    );
    let second = simulate(dir.path(), &[]);
    assert_eq!(
        second.status.code(),
        Some(Exit::Ok.into()),
        "{}",
        stderr(&second)
    );

    let results = checkpoint::load(&dir.path().join("results.csv"))
        .expect("results load")
        .expect("results exist");
    assert_eq!(results.records.len(), 8);
    let mut tasks: Vec<&str> = Vec::new();
    for r in results.records.values() {
        assert_eq!(r.state, Some(State::Succeeded), "{r:?}");
        assert_eq!(r.attempts, 1, "submitted once: {r:?}");
        assert!(
            !r.error_message
                .as_deref()
                .unwrap_or("")
                .contains("record is null"),
            "{r:?}"
        );
        assert_eq!(r.video_paths.len(), 1, "{r:?}");
        tasks.push(r.task_id.as_deref().expect("a task id"));
    }
    tasks.sort_unstable();
    tasks.dedup();
    assert_eq!(tasks.len(), 8, "every job has a task of its own: {tasks:?}");
}
