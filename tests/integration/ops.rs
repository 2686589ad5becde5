//! The operator's view: `credits`, `status` (text, JSON, failed list), JSON logs,
//! and progress lines off a terminal.

use assert_cmd::assert::OutputAssertExt as _;
use veo_batch::exit::Exit;
use veo_batch::sim::SimConfig;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

#[test]
fn credits_prints_the_balance() {
    let h = Harness::new(SimConfig {
        credits: 1234.0,
        ..fast_sim()
    });
    h.cmd()
        .arg("credits")
        .assert()
        .code(Exit::Ok as i32)
        .stdout("1234\n");
    h.cmd()
        .env("KIE_API_KEY", "wrong")
        .arg("credits")
        .assert()
        .code(Exit::ServiceStopped as i32)
        .stdout("")
        .stderr(
            "error: failed to read the credit balance\n\n\
             Caused by:\n    \
             401: You do not have access permissions (check KIE_API_KEY or --api-key-file)\n",
        );
}

fn status(h: &Harness, args: &[&str]) -> std::process::Output {
    h.status(args)
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
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );

    // From the results file: two failed jobs (the third was never run).
    let text = status(&h, &["results.csv"]);
    assert_eq!(text.status.code(), Some(Exit::JobsFailed as i32));
    let shown = String::from_utf8_lossy(&text.stdout)
        .lines()
        .map(|l| match (l.split_once("): "), l.rfind(": \"")) {
            // The simulator's failure messages vary; the shape is what is pinned.
            (Some((group, _)), Some(ids)) if l.starts_with("failed (") => {
                format!("{group}): ...{}", &l[ids..])
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!(shown);

    // Through the manifest: the job that never ran counts as not started.
    let json = status(&h, &["b.yaml", "--results", "results.csv", "--json"]);
    assert_eq!(json.status.code(), Some(Exit::NotFinished as i32));
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
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
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
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
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

/// `status --json` is a document a script can act on: the tally and every job with
/// its state, task, attempts, error code and message apart, files, credits, times.
#[test]
fn status_json_says_where_every_job_stands() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--limit", "2", "--concurrency", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let json = status(&h, &["b.yaml", "--results", "results.csv", "--json"]);
    assert_eq!(json.status.code(), Some(Exit::NotFinished as i32));
    let mut v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    // What varies from run to run (ids, times, the simulator's drawn messages).
    fn redact(v: &mut serde_json::Value, key: &str) {
        if !v[key].is_null() {
            v[key] = serde_json::Value::String(format!("[{key}]"));
        }
    }
    redact(&mut v, "results");
    for list in ["failed", "download_failed", "in_doubt"] {
        for p in v[list].as_array_mut().into_iter().flatten() {
            redact(p, "reason");
        }
    }
    for job in v["job_states"].as_array_mut().expect("job_states") {
        for key in [
            "task_id",
            "error_code",
            "error_message",
            "submitted_at",
            "finished_at",
            "updated_at",
        ] {
            redact(job, key);
        }
    }
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).expect("JSON"));
}

/// `-q` on a run where every job succeeds prints nothing: cron mails nothing.
#[test]
fn quiet_success_prints_nothing() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let mut cmd = h.run_cmd(&manifest);
    let out = cmd
        .args(["--rate", "1000/1s"])
        .arg("-q")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "nothing on success");
    // A failure still speaks.
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(1));
    let out = h
        .run_cmd(&manifest)
        .args(["-q", "--rate", "1000/1s"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::JobsFailed as i32));
    assert!(stderr(&out).contains("failed (1 job)"), "{}", stderr(&out));
}

/// With `--log-format json` every stderr line is one JSON object: failures carry
/// `code` and `message` apart, and the run ends with one summary event.
#[test]
fn json_logs_are_json_to_the_last_line() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(2));
    let out = h.run(
        &manifest,
        &["--log-format", "json", "--progress-interval", "10ms"],
    );
    assert_eq!(
        out.status.code(),
        Some(Exit::JobsFailed as i32),
        "{}",
        stderr(&out)
    );
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failure = events
        .iter()
        .find(|e| e["fields"]["message"] == "generation failed")
        .expect("a failure event");
    assert!(failure["fields"]["code"].is_i64(), "{failure}");
    assert!(failure["fields"]["error"].is_string(), "{failure}");
    let last = events.last().expect("events");
    assert_eq!(last["fields"]["message"], "run summary", "{last}");
    assert_eq!(last["fields"]["failed"], 2);
    assert_eq!(last["fields"]["exit_code"], Exit::JobsFailed.code());
    // Both jobs failed and the simulator refunded them: they cost nothing.
    assert_eq!(last["fields"]["spent_credits"], 0.0);
}

/// Writing into a pipe whose reader is gone (`| head`) ends quietly with success.
#[test]
fn a_closed_pipe_ends_quietly() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3000));
    let mut child = h
        .run_cmd(&manifest)
        .arg("--dry-run")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // Read one line, then close the pipe, as `head -1` does.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("a line");
    drop(stdout);
    let out = child.wait_with_output().expect("ends");
    assert!(first.contains("\"action\":\"submit\""), "{first}");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
}

/// An error and its cause never print the same text twice.
#[test]
fn an_error_says_its_cause_once() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(1));
    std::fs::create_dir_all(h.path("a-dir")).expect("dir");
    let out = h
        .run_cmd_at(&manifest, &h.path("a-dir"), &h.path("videos"))
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    let said = err.matches("Is a directory").count() + err.matches("is a directory").count();
    assert_eq!(said, 1, "{err}");
}

/// A refused key is said before the summary, and the summary then does not tell
/// the user to run the same command again.
#[test]
fn a_refused_key_is_said_first_and_not_run_again() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h
        .run_cmd(&manifest)
        .env("KIE_API_KEY", "not-the-key")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(Exit::ServiceStopped as i32));
    let err = stderr(&out);
    let refused = err
        .find("error: the service refused the API key")
        .expect(&err);
    let summary = err.find("\nbatch: 3 jobs").expect(&err);
    assert!(refused < summary, "{err}");
    assert!(!err.contains("run the same command again"), "{err}");
    assert_eq!(
        err.matches("KIE_API_KEY").count(),
        2,
        "said once, and in the advice: {err}"
    );
}

/// `-v` shows veo-batch's own debug lines, not the HTTP and TLS libraries'.
#[test]
fn verbose_shows_our_debug_lines_not_the_libraries() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(1));
    let out = h.run(&manifest, &["-v", "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "DEBUG" && e["fields"]["message"] == "state change"),
        "our debug lines show"
    );
    let foreign: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            let target = e["target"].as_str().unwrap_or_default();
            !target.is_empty() && !target.starts_with("veo_batch")
        })
        .collect();
    assert!(foreign.is_empty(), "{foreign:?}");
}
