//! What an operator reads: JSON logs to the last line (errors included), `-q` that
//! is silent on success and speaks on any other end, the cron recipe, closed pipes,
//! exit codes and the messages that tell what to do next.

use std::io::BufRead as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use veo_batch::checkpoint::{ErrorKind, State};
use veo_batch::exit::Exit;
use veo_batch::sim::{self, Endpoint, FaultRate, SimConfig};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// Every stderr line of `out` as a JSON object; fails on the first that is not one.
fn events(out: &Output) -> Vec<serde_json::Value> {
    stderr(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn errors(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["level"] == "ERROR").collect()
}

/// `veo-batch ARGS` in the harness's folder, with a cleared environment.
fn veo(h: &Harness, args: &[&str]) -> Command {
    let mut cmd = crate::harness::veo_batch();
    cmd.current_dir(h.dir.path()).args(args);
    cmd
}

/// Waits until the results file records a submitted task, within 20 s.
fn wait_for_a_task(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let submitted = veo_batch::checkpoint::load(&h.path("results.csv"))
            .ok()
            .flatten()
            .is_some_and(|l| l.records.values().any(|r| r.state() == State::Submitted));
        if submitted {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no task was submitted within 20 s");
}

/// Under `--log-format json` an error that ends a command is an ERROR event like
/// any other line: a manifest's problems (each located), no key, a lock clash, a
/// refused key and the spending limit.
#[cfg(unix)]
#[test]
fn json_logs_carry_every_error_as_an_event() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(3), Duration::from_secs(4)),
        ..fast_sim()
    });
    // A manifest with two problems: two located events and the closing one.
    let bad = h.write(
        "bad.yaml",
        "name: b\njobs:\n  - id: a\n    prompt: \"\"\n  - id: b\n    prompt: x\n    model: veo9\n",
    );
    let out = h.run(&bad, &["--log-format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Usage)),
        "{}",
        stderr(&out)
    );
    let ev = events(&out);
    let errs = errors(&ev);
    assert_eq!(errs.len(), 3, "{ev:?}");
    assert!(
        errs[0]["fields"]["location"]
            .as_str()
            .unwrap_or_default()
            .contains("bad.yaml:"),
        "{ev:?}"
    );
    assert!(
        errs[2]["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was sent"),
        "{ev:?}"
    );

    // No key.
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h
        .run_cmd(&manifest)
        .env_remove("KIE_API_KEY")
        .args(["--log-format", "json"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Usage)),
        "{}",
        stderr(&out)
    );
    let ev = events(&out);
    assert_eq!(errors(&ev).len(), 1, "{ev:?}");
    assert!(stderr(&out).contains("KIE_API_KEY"), "{}", stderr(&out));

    // A lock clash, while another run holds the results file.
    let mut holder = h
        .run_cmd(&manifest)
        .args(["--rate", "1000/1s"])
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_for_a_task(&h);
    let out = h.run(&manifest, &["--log-format", "json"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Locked)),
        "{}",
        stderr(&out)
    );
    assert_eq!(errors(&events(&out)).len(), 1, "{}", stderr(&out));

    // A refused key: an ERROR event of its own, then the summary.
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h
        .run_cmd(&manifest)
        .env("KIE_API_KEY", "not-the-key")
        .args(["--log-format", "json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(i32::from(Exit::ServiceStopped)));
    let ev = events(&out);
    let errs = errors(&ev);
    assert_eq!(errs.len(), 1, "{ev:?}");
    assert_eq!(errs[0]["fields"]["stopped"], "key_refused", "{ev:?}");
    assert!(!stderr(&out).contains("not-the-key"), "the key never shows");

    // The spending limit.
    let out = h.run(&manifest, &["--log-format", "json", "--max-credits", "100"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Budget)),
        "{}",
        stderr(&out)
    );
    let ev = events(&out);
    let errs = errors(&ev);
    assert_eq!(errs.len(), 1, "{ev:?}");
    assert_eq!(errs[0]["fields"]["stopped"], "spending_limit", "{ev:?}");
}

/// `-q`: nothing on success, but a run that ends otherwise prints why and the
/// short summary, in text and in JSON logs.
#[test]
fn quiet_speaks_on_every_end_but_success() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(3));
    // JSON: the stop as an ERROR event and the summary as a WARN event.
    for (extra, exit) in [
        (&["--max-credits", "100"][..], Exit::Budget),
        (&[][..], Exit::ServiceStopped),
    ] {
        let key = if exit == Exit::ServiceStopped {
            "not-the-key"
        } else {
            sim::DEMO_KEY
        };
        let out = h
            .run_cmd(&manifest)
            .env("KIE_API_KEY", key)
            .args(["-q", "--log-format", "json", "--rate", "1000/1s"])
            .args(extra)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(i32::from(exit)), "{}", stderr(&out));
        let ev = events(&out);
        assert_eq!(errors(&ev).len(), 1, "{ev:?}");
        let last = ev.last().expect("a summary");
        assert_eq!(last["fields"]["message"], "run summary", "{ev:?}");
        assert_eq!(last["level"], "WARN", "{ev:?}");
        assert_eq!(last["fields"]["exit_code"], exit.code());
    }
    // Text: the error first, then the heading and the tally; not the spend lines.
    let out = h
        .run_cmd(&manifest)
        .env("KIE_API_KEY", "not-the-key")
        .args(["-q"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(i32::from(Exit::ServiceStopped)));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: the service refused the API key"),
        "{err}"
    );
    assert!(err.contains("batch: 3 jobs"), "{err}");
    assert!(err.contains("  not started "), "{err}");
    assert!(!err.contains("spent about"), "{err}");
}

/// The cron lines of the documentation, run as cron would: a submit with
/// `--no-wait`, a collect while the submit's tasks run, a collect while another
/// run holds the results file, and a collect that finishes. All print nothing and
/// alert on nothing.
#[cfg(unix)]
#[test]
fn the_cron_recipe_prints_nothing() {
    let doc = include_str!("../../docs/operating.md");
    let block = doc
        .split("```sh\n# crontab")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the doc has the crontab block");
    // Each entry without its five schedule fields and its `cd`.
    let lines: Vec<String> = block
        .lines()
        // The rest of the `# crontab` comment.
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let command = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            command
                .split_once("&& ")
                .map_or(command.clone(), |(_, rest)| rest.to_owned())
        })
        .collect();
    assert_eq!(lines.len(), 2, "{block}");
    let (submit, collect) = (&lines[0], &lines[1]);

    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(2), Duration::from_secs(3)),
        ..fast_sim()
    });
    std::fs::create_dir_all(h.path("manifests")).expect("dir");
    let campaign = |n: usize| {
        let mut m = String::from("name: campaign\nrun:\n  poll_interval: 50ms\n");
        m.push_str(text_jobs(n).trim_start_matches("name: batch\n"));
        h.write("manifests/campaign.yaml", &m)
    };
    let manifest = campaign(3);
    let bin = assert_cmd::cargo::cargo_bin!("veo-batch");
    let path = format!(
        "{}:/usr/bin:/bin",
        bin.parent().expect("the binary's folder").display()
    );
    let cron = |line: &str| {
        Command::new("sh")
            .arg("-c")
            // `alert` as a mail would: on stderr.
            .arg(format!("alert() {{ echo \"ALERT: $*\" >&2; }}\n{line}"))
            .env_clear()
            .env("PATH", &path)
            .env("KIE_API_KEY", sim::DEMO_KEY)
            .env("KIE_API_BASE", h.sim.base_url())
            .current_dir(h.dir.path())
            .output()
            .expect("sh runs")
    };
    let silent = |what: &str, out: &Output| {
        assert_eq!(
            (
                stderr(out).as_str(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            ("", ""),
            "{what} printed something"
        );
    };
    // The hourly submit: three tasks sent, left running.
    silent("the submit", &cron(submit));
    assert_eq!(h.stats().tasks_created, 3);
    // A collect while another run holds the results file (a long collect still
    // going): quiet, and that run finishes the batch.
    let results = h.path("results/campaign.csv");
    let mut holder = h
        .run_cmd_at(&manifest, &results, &h.path("videos/campaign"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut said = std::io::BufReader::new(holder.stderr.take().expect("stderr"));
    let mut line = String::new();
    // Its first line comes once it holds the lock.
    while said.read_line(&mut line).is_ok_and(|n| n > 0) && !line.contains("to resume") {
        line.clear();
    }
    silent("a collect beside another run", &cron(collect));
    assert!(holder.wait().expect("ends").success());
    // The next hour's job: submitted, then collected to the end, all quiet.
    campaign(4);
    silent("the second submit", &cron(submit));
    silent("the collect", &cron(collect));
    let loaded = veo_batch::checkpoint::load(&results)
        .expect("loads")
        .expect("exists");
    assert_eq!(loaded.records.len(), 4);
    assert!(
        loaded
            .records
            .values()
            .all(|r| r.state() == State::Succeeded && !r.video_paths.is_empty())
    );
    assert_eq!(h.stats().tasks_created, 4, "nothing sent twice");
}

/// `status --json | head -1` and `status --failed | head -1` end with 0, however
/// the timing falls; `status --failed` read whole ends with 0 too (it lists).
#[test]
fn status_into_a_closed_pipe_ends_with_0() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(400));
    let out = h.run(&manifest, &["-q"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::JobsFailed)),
        "{}",
        stderr(&out)
    );
    for flag in ["--json", "--failed"] {
        let mut child = veo(&h, &["status", "results.csv", flag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("a line");
        drop(stdout);
        let out = child.wait_with_output().expect("ends");
        assert!(!first.is_empty());
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{flag}");
    }
    let whole = veo(&h, &["status", "results.csv", "--failed"])
        .output()
        .expect("runs");
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    assert_eq!(String::from_utf8_lossy(&whole.stdout).lines().count(), 400);
    // Each failure is recorded with its kind.
    let results = h.results();
    assert!(
        results
            .records
            .values()
            .all(|r| r.error_kind == Some(ErrorKind::GenerationFailed)
                || r.error_kind == Some(ErrorKind::ContentPolicy)),
        "{:?}",
        results.records.values().next()
    );
}

/// `-v` says why a request is retried: which request and what answered.
#[test]
fn verbose_says_why_a_request_is_retried() {
    let mut config = fast_sim();
    config.faults.http_500 = FaultRate::only(Endpoint::RecordInfo, 0.5);
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("retrying record-info: 500"))
        .unwrap_or_else(|| panic!("no retry reason: {err}"));
    assert!(line.contains("job="), "{line}");
}

/// The spending limit is named as it was set: `validate` compares the estimate
/// with it up front, and the exit-6 message names the manifest's key.
#[test]
fn the_spending_limit_is_named_where_it_was_set() {
    let h = Harness::new(fast_sim());
    let mut text = String::from("name: batch\nrun:\n  max_credits: 100\n");
    text.push_str(text_jobs(3).trim_start_matches("name: batch\n"));
    let manifest = h.write("b.yaml", &text);
    let out = veo(&h, &["validate", "b.yaml"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    let second = said.lines().nth(1).unwrap_or_default();
    assert_eq!(
        second,
        "spending limit: the manifest's max_credits 100 (the batch's spend, earlier runs' included) \
         is below the estimate (180 credits): a run stops submitting before passing it (exit 6), with jobs left unsent",
        "{said}"
    );
    let out = veo(
        &h,
        &[
            "validate",
            "b.yaml",
            "--max-credits",
            "500",
            "--max-run-credits",
            "60",
        ],
    )
    .output()
    .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("spending limit: --max-credits 500 (the batch's spend, earlier runs' included) keeps the estimate (180 credits)\n"), "{said}");
    assert!(
        said.contains(
            "spending limit: --max-run-credits 60 (each run's spend) is below the estimate"
        ),
        "{said}"
    );

    let out = h.run(&manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::Budget)),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("would take the batch past the manifest's max_credits 100"),
        "{err}"
    );
    assert!(!err.contains("--max-credits 100"), "{err}");
}

/// `--limit N` ends by saying that the same command sends the next N.
#[test]
fn limit_says_how_to_send_the_next_n() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(5));
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::NotFinished)),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("3 jobs not started: run the same command again to send the next 2 (--limit 2 sends 2 a run), or leave out --limit to send all 3"),
        "{err}"
    );
    assert!(err.contains("3 jobs held back by --limit"), "{err}");
    // Fewer left than the limit: the same command sends them all.
    let out = h.run(&manifest, &["--limit", "2"]);
    let err = stderr(&out);
    assert!(
        err.contains("1 job not started: run the same command again to send it\n"),
        "{err}"
    );
}

/// `status` on a results file that is not there says so.
#[test]
fn status_of_a_missing_results_file_says_so() {
    let h = Harness::new(fast_sim());
    let out = veo(&h, &["status", "results/none.csv"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(i32::from(Exit::Usage)));
    assert_eq!(
        stderr(&out),
        "error: no results file at `results/none.csv`: nothing has run with it yet (and no CSV manifest is there either)\n"
    );
}

/// SIGTERM (a service manager's stop) is not told to press Ctrl-C.
#[cfg(unix)]
#[test]
fn sigterm_does_not_say_press_ctrl_c() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(2), Duration::from_secs(3)),
        ..fast_sim()
    });
    let manifest = h.write("b.yaml", &text_jobs(3));
    let child = h
        .run_cmd(&manifest)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_a_task(&h);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let out = child.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(i32::from(Exit::Interrupted)));
    let err = stderr(&out);
    assert!(
        err.contains("stopping (SIGTERM): no new submissions"),
        "{err}"
    );
    assert!(!err.contains("Ctrl-C"), "{err}");
}

/// `--retry-failed` says once, in one line, which failed tasks it replaces, and
/// never that their (absent) videos were kept.
#[test]
fn retry_failed_announces_its_replacements_in_one_line() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(4));
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(i32::from(Exit::JobsFailed)));
    let out = h.run(&manifest, &["--retry-failed"]);
    let err = stderr(&out);
    let announced: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("a new task replaces"))
        .map(|l| l.trim_start().trim_start_matches("WARN "))
        .collect();
    assert_eq!(announced.len(), 1, "{err}");
    let before = h.results();
    let line = announced[0];
    assert!(
        line.starts_with(
            "--retry-failed: a new task replaces the failed task of 4 jobs (kept on record in superseded_tasks): \"job-1\" (task "
        ),
        "{err}"
    );
    for r in before.records.values() {
        let task = r
            .superseded_tasks
            .first()
            .expect("the failed task on record");
        assert!(
            line.contains(&format!("{:?} (task {task})", r.job_id)),
            "{line}"
        );
    }
    assert!(
        err.contains("  4 tasks superseded (listed in the results file's superseded_tasks)\n"),
        "{err}"
    );
    assert!(!err.contains("superseded/"), "{err}");
}

/// A download that fails is recorded as such in `error_kind`, and the summary
/// groups the jobs under one reason.
#[test]
fn download_failures_share_one_group_and_their_kind() {
    let mut config = fast_sim();
    config.faults.http_500 = FaultRate::only(Endpoint::Files, 1.0);
    config
        .faults
        .http_500
        .per_endpoint
        .insert(Endpoint::DownloadUrl, 1.0);
    let h = Harness::new(config);
    let manifest = h.write("b.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--max-attempts", "1"]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(Exit::JobsFailed)),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    let groups: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("download failed ("))
        .collect();
    assert_eq!(groups.len(), 1, "{err}");
    assert!(groups[0].starts_with("download failed (3 jobs): "), "{err}");
    let results = h.results();
    assert!(
        results
            .records
            .values()
            .all(|r| r.error_kind == Some(ErrorKind::Download))
    );
}
