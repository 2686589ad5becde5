//! The operator's view: `credits`, `status` (text, JSON, failed list), JSON logs,
//! and progress lines off a terminal.

use veo_batch::exit;
use veo_batch::sim::{self, SimConfig};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

#[test]
fn credits_prints_the_balance() {
    let h = Harness::new(SimConfig {
        credits: 1234.0,
        ..fast_sim()
    });
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .env("KIE_API_KEY", sim::DEMO_KEY)
        .args(["credits", "--api-base", &h.sim.base_url()])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(exit::OK as i32), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1234");

    let refused = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .env("KIE_API_KEY", "wrong")
        .args(["credits", "--api-base", &h.sim.base_url()])
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(exit::SERVICE_STOPPED as i32));
}

fn status(h: &Harness, args: &[&str]) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .current_dir(h.dir.path())
        .arg("status")
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn status_reads_the_results_file_alone() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(exit::NOT_FINISHED as i32),
        "{}",
        stderr(&out)
    );

    // From the results file: two failed jobs (the third was never run).
    let text = status(&h, &["results.csv"]);
    assert_eq!(text.status.code(), Some(exit::JOBS_FAILED as i32));
    let shown = String::from_utf8_lossy(&text.stdout)
        .lines()
        .map(|l| match l.splitn(3, ": ").collect::<Vec<_>>()[..] {
            // The simulator's failure messages vary; the shape is what is pinned.
            ["failed", id, _] => format!("failed: {id}: ..."),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!(shown);

    // Through the manifest: the job that never ran counts as not started.
    let json = status(&h, &["b.yaml", "--results", "results.csv", "--json"]);
    assert_eq!(json.status.code(), Some(exit::NOT_FINISHED as i32));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["jobs"], 3);
    assert_eq!(v["tally"]["failed"], 2);
    assert_eq!(v["tally"]["not_started"], 1);
    assert_eq!(v["failed"][0]["job_id"], "job-1");

    let failed = status(&h, &["results.csv", "--failed"]);
    let lines: Vec<String> = String::from_utf8_lossy(&failed.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(lines, ["job-1", "job-2"]);
}

#[test]
fn json_logs_carry_the_job_state_and_attempt() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let out = h.run(&manifest, &["--log-format", "json", "-v"]);
    assert_eq!(out.status.code(), Some(exit::OK as i32), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("every JSON log line parses"))
        .collect();
    let changes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "state change")
        .collect();
    assert!(
        changes.iter().any(|e| e["fields"]["job"] == "job-2"
            && e["fields"]["state"] == "submitted"
            && e["fields"]["attempt"] == 1
            && e["fields"]["task"].as_str().is_some_and(|t| !t.is_empty())),
        "{changes:?}"
    );
    assert!(changes.iter().any(|e| e["fields"]["state"] == "succeeded"));
}

#[test]
fn progress_off_a_terminal_is_plain_lines() {
    let h = Harness::new(SimConfig {
        generation_time: (
            std::time::Duration::from_millis(500),
            std::time::Duration::from_millis(700),
        ),
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(4));
    let out = h.run(&manifest, &["--progress-interval", "50ms"]);
    assert_eq!(out.status.code(), Some(exit::OK as i32), "{}", stderr(&out));
    let err = stderr(&out);
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!progress.is_empty(), "{err}");
    assert!(
        progress.iter().any(|l| l.contains(" running, ")),
        "{progress:?}"
    );
    assert!(
        !err.chars().any(|c| c.is_control() && c != '\n'),
        "no control characters off a terminal"
    );

    let quiet = h.run(&manifest, &["-q"]);
    assert!(!stderr(&quiet).contains("progress: "));
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .args(args)
        .arg("--help")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_texts_are_pinned() {
    let top = help(&[]);
    assert!(
        top.contains("130  interrupted"),
        "the exit codes are in --help"
    );
    insta::assert_snapshot!("help", top);
    insta::assert_snapshot!("run_help", help(&["run"]));
}
