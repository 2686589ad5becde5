//! Keys and accounts: a key file or `KIE_API_KEYS` with several keys, the
//! simulator's accounts over HTTP (a task answers only to its own account, a
//! capped key answers 433), a client calling with a chosen key, and the results
//! file naming the account and key id that made each task, never the key.

use std::time::Duration;

use serde_json::json;
use veo_batch::api::{ApiKey, Client, ClientConfig, ErrorClass, KeyId, KeyRing, TaskState};
use veo_batch::exit::Exit;
use veo_batch::sim::{self, SimConfig, SimKey};
use veo_batch::units::Rate;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

const KEY_A: &str = "acme-a-secret-0001";
const KEY_A2: &str = "acme-a-secret-0002";
const KEY_B: &str = "acme-b-secret-0001";

/// `run` of `manifest` with the keys of the file `keys` alone (no `KIE_API_KEY`).
fn pooled_run(
    h: &Harness,
    manifest: &std::path::Path,
    keys: &std::path::Path,
) -> std::process::Command {
    let mut cmd = h.run_cmd(manifest);
    cmd.env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(keys);
    cmd
}

fn pool_sim() -> SimConfig {
    SimConfig {
        keys: vec![
            SimKey::new("acme-a", KEY_A),
            SimKey::new("acme-a", KEY_A2).capped(1),
            SimKey::new("acme-b", KEY_B),
        ],
        ..fast_sim()
    }
}

fn id(key: &str) -> String {
    KeyId::of(&ApiKey::new(key)).to_string()
}

/// Every file the run left in the temp directory, and its stderr and stdout:
/// none may hold a key.
fn assert_no_key_anywhere(h: &Harness, outputs: &[&std::process::Output], keys: &[&str]) {
    let mut texts: Vec<String> = outputs
        .iter()
        .flat_map(|o| [stderr(o), String::from_utf8_lossy(&o.stdout).into_owned()])
        .collect();
    for entry in walk(h.dir.path()) {
        // The key files themselves.
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("keys"))
        {
            continue;
        }
        texts
            .push(String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned());
    }
    for text in &texts {
        for key in keys {
            assert!(!text.contains(key), "a key leaked into: {text}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_labelled_key_file_records_its_account_and_key_id_in_every_row() {
    let h = Harness::new(pool_sim());
    let keys = h.write("keys", &format!("# the team's key\nacme-b  {KEY_B}\n"));
    let manifest = h.write("b.yaml", &text_jobs(3));
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "1000/1s"]);
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let results = h.results();
    assert_eq!(results.records.len(), 3);
    for r in results.records.values() {
        assert_eq!(r.account, "acme-b", "{}", r.job_id);
        assert_eq!(r.key_id, id(KEY_B), "{}", r.job_id);
    }
    let stats = h.stats();
    assert_eq!(stats.tasks_by_account.get("acme-b"), Some(&3));
    assert_eq!(stats.tasks_by_account.get(""), None);
    let header = std::fs::read_to_string(h.path("results.csv")).unwrap();
    assert!(
        header.lines().next().unwrap().ends_with(",account,key_id"),
        "{header}"
    );
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_A2, KEY_B]);
}

#[test]
fn the_single_key_of_kie_api_key_is_the_unnamed_account() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(1));
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let r = &h.results().records["job-1"];
    assert_eq!(r.account, "");
    assert_eq!(r.key_id, id(sim::DEMO_KEY));
}

#[test]
fn kie_api_keys_with_one_key_runs_and_with_kie_api_key_too_is_refused() {
    let h = Harness::new(pool_sim());
    let manifest = h.write("b.yaml", &text_jobs(1));
    let mut cmd = h.run_cmd(&manifest);
    cmd.env_remove("KIE_API_KEY")
        .env("KIE_API_KEYS", format!("acme-a {KEY_A},"))
        .args(["--rate", "1000/1s"]);
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(h.results().records["job-1"].account, "acme-a");

    let mut both = h.run_cmd(&manifest);
    both.env("KIE_API_KEYS", KEY_A);
    let out = both.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Usage as i32));
    assert!(
        stderr(&out).contains("both KIE_API_KEY and KIE_API_KEYS are set"),
        "{}",
        stderr(&out)
    );
}

/// Two accounts of 20 generations per window each, and a run at that rate per
/// account: a simulator whose windows are short, so the batch needs a second one.
fn two_accounts(window: Duration) -> SimConfig {
    SimConfig {
        keys: vec![SimKey::new("acme-a", KEY_A), SimKey::new("acme-b", KEY_B)],
        rate: Some(Rate {
            count: 20,
            per: window,
        }),
        ..fast_sim()
    }
}

/// The request log's lines that created a task, in the order they were written.
fn created_tasks(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["task_created"] == true)
        .map(|v| v["task_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sixty_jobs_over_two_accounts_use_both_windows_and_every_call_goes_with_the_tasks_account() {
    let h0 = tempfile::tempdir().unwrap();
    let log = h0.path().join("requests.jsonl");
    let h = Harness::new(SimConfig {
        request_log: Some(log.clone()),
        upgrade_1080p_time: (Duration::from_millis(20), Duration::from_millis(50)),
        // Result URLs expire at once: every file comes through download-url.
        url_ttl: Some(Duration::from_millis(1)),
        ..two_accounts(Duration::from_secs(3))
    });
    let keys = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let manifest = h.write(
        "b.yaml",
        &format!("{}defaults:\n  upgrade: 1080p\n", text_jobs(60)),
    );
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "20/3s", "-v"]);
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let stats = h.stats();
    assert_eq!(stats.answered_429, 0, "{:?}", stats.codes);
    assert_eq!(stats.tasks_created, 60);
    // Every status check, upgrade and download link named a task of the key's own
    // account: another account's key would have been answered "record is null".
    assert_eq!(stats.foreign_task_calls, 0);
    let results = h.results();
    assert_eq!(results.records.len(), 60);
    let mut account_of = std::collections::HashMap::new();
    let mut tasks = std::collections::HashSet::new();
    for r in results.records.values() {
        assert_eq!(
            r.state(),
            veo_batch::checkpoint::State::Succeeded,
            "{}",
            r.job_id
        );
        let task = r.task_id.clone().unwrap();
        let key = match r.account.as_str() {
            "acme-a" => KEY_A,
            "acme-b" => KEY_B,
            other => panic!("account {other:?} of {}", r.job_id),
        };
        assert_eq!(r.key_id, id(key), "{}", r.job_id);
        // Each row's video is its own task's file.
        assert!(
            r.video_urls.iter().all(|u| u.contains(&task)),
            "{}: {:?}",
            r.job_id,
            r.video_urls
        );
        assert!(
            r.video_paths
                .iter()
                .all(|p| std::path::Path::new(p).exists()),
            "{}: {:?}",
            r.job_id,
            r.video_paths
        );
        assert!(tasks.insert(task.clone()), "task {task} twice");
        account_of.insert(task, r.account.clone());
    }
    // Both accounts' windows were used from the start: the first 40 tasks are 20
    // of each (one account alone would have had to wait a window after 20).
    let created = created_tasks(&log);
    assert_eq!(created.len(), 60);
    let first: Vec<&str> = created[..40]
        .iter()
        .map(|t| account_of[t].as_str())
        .collect();
    assert_eq!(
        first.iter().filter(|a| **a == "acme-a").count(),
        20,
        "{first:?}"
    );
    assert_eq!(
        first.iter().filter(|a| **a == "acme-b").count(),
        20,
        "{first:?}"
    );
    let by_account = &stats.tasks_by_account;
    assert_eq!(by_account["acme-a"] + by_account["acme-b"], 60);
    assert!(
        by_account["acme-a"].abs_diff(by_account["acme-b"]) <= 4,
        "{by_account:?}"
    );
    // Each account checked, upgraded and linked its own tasks.
    for account in ["acme-a", "acme-b"] {
        let calls = &stats.requests_by_account[account];
        assert!(
            calls.get("record-info").copied().unwrap_or(0) >= by_account[account],
            "{calls:?}"
        );
        assert!(
            calls.get("get-1080p-video").copied().unwrap_or(0) >= by_account[account],
            "{calls:?}"
        );
        assert!(
            calls.get("download-url").copied().unwrap_or(0) >= by_account[account],
            "{calls:?}"
        );
    }
    assert_eq!(
        stats.requests_by_account.get(""),
        None,
        "the unnamed account was never used"
    );
    let status = h.status(&["--json", "results.csv"]);
    assert_no_key_anywhere(&h, &[&out, &status], &[KEY_A, KEY_B]);
}

#[test]
fn a_capped_key_rests_after_its_433_while_the_other_keys_go_on() {
    let h = Harness::new(SimConfig {
        keys: vec![
            SimKey::new("acme-a", KEY_A2).capped(2),
            SimKey::new("acme-a", KEY_A),
            SimKey::new("acme-b", KEY_B),
        ],
        ..fast_sim()
    });
    // The capped key first: the pool sends with it until it answers 433.
    let keys = h.write(
        "keys",
        &format!("acme-a {KEY_A2}\nacme-a {KEY_A}\nacme-b {KEY_B}\n"),
    );
    let manifest = h.write("b.yaml", &text_jobs(12));
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "1000/1s", "--concurrency", "1"]);
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("key {}: 433", id(KEY_A2))),
        "the 433 is said by key id: {err}"
    );
    let stats = h.stats();
    // Asked once past its cap, then rested for the run.
    assert_eq!(stats.answered_433, 1, "{:?}", stats.codes);
    assert_eq!(stats.tasks_created, 12);
    let results = h.results();
    let by_key = |key: &str| {
        results
            .records
            .values()
            .filter(|r| r.key_id == id(key))
            .count()
    };
    assert_eq!(by_key(KEY_A2), 2);
    assert_eq!(by_key(KEY_A2) + by_key(KEY_A) + by_key(KEY_B), 12);
    assert!(by_key(KEY_A) > 0 && by_key(KEY_B) > 0);
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == veo_batch::checkpoint::State::Succeeded)
    );
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_A2, KEY_B]);
}

#[test]
fn the_run_stops_only_when_no_key_of_any_account_can_send_and_says_why_per_key() {
    let h = Harness::new(SimConfig {
        keys: vec![SimKey::new("acme-b", KEY_B).capped(1)],
        ..fast_sim()
    });
    // acme-a's key is not one the service knows (401); acme-b's is capped at one.
    let keys = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let manifest = h.write("b.yaml", &text_jobs(4));
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "1000/1s", "--concurrency", "1"]);
    let out = cmd.output().expect("runs");
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{err}"
    );
    let expected = format!(
        "no key of any account can send: acme-a/{}: refused (401); acme-b/{}: past its usage cap (433), rested until the next run",
        id(KEY_A),
        id(KEY_B)
    );
    assert!(err.contains(&expected), "{expected}\nin\n{err}");
    let results = h.results();
    let made: Vec<_> = results
        .records
        .values()
        .filter(|r| r.task_id.is_some())
        .collect();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].account, "acme-b");
    // The job with a task still finished: out of keys is out of money, not of access.
    assert_eq!(made[0].state(), veo_batch::checkpoint::State::Succeeded);
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_B]);
}

#[test]
fn a_task_whose_account_has_no_key_today_is_left_as_it_is_and_said() {
    let h = Harness::new(two_accounts(Duration::from_secs(10)));
    let both = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let only_a = h.write("keys-a", &format!("acme-a {KEY_A}\n"));
    let manifest = h.write("b.yaml", &text_jobs(6));
    let run = |keys: &std::path::Path, extra: &[&str]| {
        let mut cmd = pooled_run(&h, &manifest, keys);
        cmd.args(["--rate", "1000/1s"]).args(extra);
        cmd.output().expect("runs")
    };
    let first = run(&both, &["--no-wait"]);
    assert!(first.status.code().is_some(), "{}", stderr(&first));
    let on_b: Vec<String> = h
        .results()
        .records
        .values()
        .filter(|r| r.account == "acme-b")
        .map(|r| r.job_id.clone())
        .collect();
    assert_eq!(on_b.len(), 3, "the pool spread the sends");
    let second = run(&only_a, &[]);
    let err = stderr(&second);
    for job in &on_b {
        let r = &h.results().records[job];
        assert_eq!(r.state(), veo_batch::checkpoint::State::Submitted, "{job}");
        assert!(
            err.contains(&format!(
                "job {job:?}, task {}: its account `acme-b` (key id {}) has no usable key",
                r.task_id.as_deref().unwrap(),
                id(KEY_B)
            )),
            "{err}"
        );
    }
    // Nothing was sent again for them, and no other account asked about them.
    assert_eq!(h.stats().tasks_created, 6);
    assert_eq!(h.stats().foreign_task_calls, 0);
    let third = run(&both, &[]);
    assert_eq!(
        third.status.code(),
        Some(Exit::Ok as i32),
        "{}",
        stderr(&third)
    );
    assert_eq!(h.stats().tasks_created, 6);
    assert!(
        h.results()
            .records
            .values()
            .all(|r| r.state() == veo_batch::checkpoint::State::Succeeded)
    );
    assert_no_key_anywhere(&h, &[&first, &second, &third], &[KEY_A, KEY_B]);
}

#[test]
fn a_bad_key_file_is_refused_with_every_bad_line_and_no_key() {
    let h = Harness::new(pool_sim());
    let keys = h.write(
        "keys",
        &format!("acme-a {KEY_A}\nacme-a {KEY_A2} {KEY_B}\n\nbad/name {KEY_B}\nacme-b {KEY_A}\n"),
    );
    let manifest = h.write("b.yaml", &text_jobs(1));
    let out = pooled_run(&h, &manifest, &keys).output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Usage as i32));
    let err = stderr(&out);
    let file = format!("api key file `{}`", keys.display());
    for expected in [
        format!("{file} line 2: 3 fields where `KEY` or `ACCOUNT KEY` was expected"),
        format!("{file} line 4: the account name must be at most 64 letters"),
        format!(
            "{file} line 5: the same key as line 1 (key id {})",
            id(KEY_A)
        ),
    ] {
        assert!(err.contains(&expected), "{expected}\nin\n{err}");
    }
    assert_eq!(h.stats().generate_calls, 0);
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_A2, KEY_B]);
}

/// Over HTTP: a client calling with one account's key makes a task that the
/// other account's key cannot see, poll, upgrade, extend or link to; the
/// capped key of an account answers 433 (classed as out of credits) while its
/// account's other key and the other account go on.
#[tokio::test]
async fn a_client_with_a_chosen_key_calls_as_that_account() {
    let handle = sim::start(
        SimConfig {
            record_lag: Duration::ZERO,
            upgrade_1080p_time: (Duration::from_millis(10), Duration::from_millis(10)),
            ..pool_sim()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ring = KeyRing::parse(
        &format!("acme-a {KEY_A}\nacme-a {KEY_A2}\nacme-b {KEY_B}"),
        "keys",
        "line",
        false,
    )
    .unwrap();
    let base = Client::new(ClientConfig::new(
        handle.base_url(),
        ApiKey::new(sim::DEMO_KEY),
    ))
    .unwrap();
    let [a, a2, b] = [0, 1, 2].map(|i| base.with_key(&ring.keys()[i]).unwrap());
    assert_eq!(b.account(), "acme-b");

    let body = json!({ "prompt": "a fox", "model": "veo3_fast" });
    let task = b.generate(&body).await.unwrap();
    let done = loop {
        match b.record_info(&task).await.unwrap() {
            TaskState::Succeeded { result_urls, .. } => break result_urls,
            TaskState::Generating => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("{other:?}"),
        }
    };
    for client in [&a, &a2, &base] {
        let e = client.record_info(&task).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Failed, "{e}");
        assert!(e.message.contains("record is null"), "{e}");
        assert!(client.get_1080p(&task, 0).await.is_err());
        assert!(client.download_url(&done[0]).await.is_err());
        let extend = json!({ "taskId": task, "prompt": "on", "model": "fast" });
        let e = client.extend(&extend).await.unwrap_err();
        assert!(e.message.contains("record is null"), "{e}");
    }
    assert!(b.download_url(&done[0]).await.is_ok());

    // acme-a's second key is capped at one task.
    a2.generate(&body).await.unwrap();
    let e = a2.generate(&body).await.unwrap_err();
    assert_eq!((e.code, e.class), (Some(433), ErrorClass::Credits), "{e}");
    a.generate(&body).await.unwrap();
    b.generate(&body).await.unwrap();
    let stats = handle.stats();
    assert_eq!(stats.tasks_by_account.get("acme-a"), Some(&2));
    assert_eq!(stats.tasks_by_account.get("acme-b"), Some(&2));
    assert_eq!(stats.answered_433, 1);
    handle.shutdown().await;
}

/// A key past its cap (433) stops the run (exit 3, as out of credits) and the
/// refused job's row names no account or key: it has no task for them to own.
#[test]
fn a_refused_send_leaves_no_account_on_the_row() {
    let h = Harness::new(pool_sim());
    let keys = h.write("keys", &format!("acme-a {KEY_A2}\n"));
    let manifest = h.write("b.yaml", &text_jobs(2));
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "1000/1s", "--concurrency", "1"]);
    let out = cmd.output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("433"), "{}", stderr(&out));
    let results = h.results();
    let (made, refused): (Vec<_>, Vec<_>) =
        results.records.values().partition(|r| r.task_id.is_some());
    assert_eq!((made.len(), refused.len()), (1, 1));
    assert_eq!(made[0].account, "acme-a");
    assert_eq!(made[0].key_id, id(KEY_A2));
    assert_eq!(
        (refused[0].account.as_str(), refused[0].key_id.as_str()),
        ("", "")
    );
    assert_eq!(h.stats().answered_433, 1);
    assert_no_key_anywhere(&h, &[&out], &[KEY_A2]);
}

/// An extend continues a task of one account: it goes with a key of that
/// account, whichever account the pool would pick for a new job, in the run that
/// made the parent and in a run resumed after it.
#[test]
fn an_extend_goes_with_a_key_of_its_parents_account() {
    let h = Harness::new(SimConfig {
        record_lag: Duration::ZERO,
        ..two_accounts(Duration::from_secs(10))
    });
    let keys = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let mut manifest = String::from("jobs:\n");
    for i in 1..=4 {
        manifest.push_str(&format!(
            "  - id: p{i}\n    prompt: a ridge {i}\n  - id: p{i}-2\n    extend: p{i}\n    prompt: on {i}\n  - id: p{i}-3\n    extend: p{i}-2\n    prompt: on and on {i}\n"
        ));
    }
    let m = h.write("m.yaml", &manifest);
    let mut cmd = pooled_run(&h, &m, &keys);
    cmd.args(["--rate", "1000/1s"]);
    let out = cmd.output().expect("runs");
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let r = h.results();
    let mut used = std::collections::BTreeSet::new();
    for i in 1..=4 {
        let parent = &r.records[&format!("p{i}")];
        used.insert(parent.account.clone());
        for child in [format!("p{i}-2"), format!("p{i}-3")] {
            let c = &r.records[&child];
            assert_eq!(
                c.state(),
                veo_batch::checkpoint::State::Succeeded,
                "{child}"
            );
            assert_eq!(c.account, parent.account, "{child}");
        }
    }
    assert_eq!(used.len(), 2, "both accounts made parents: {used:?}");
    assert_eq!(h.stats().foreign_task_calls, 0);
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_B]);
}

/// With tasks of two accounts, `status` (text and `--json`), the run's summary,
/// its JSON summary event and the review page count jobs by account, and
/// `credits` prints each account's balance; one account's output has no such
/// lines (the snapshots of `status` and the summary pin that).
#[test]
fn counts_by_account_show_in_status_the_summary_the_page_and_credits() {
    let h = Harness::new(SimConfig {
        // Even balances: the pool alternates (the one with more left goes first).
        account_credits: vec![("acme-a".to_owned(), 5000.0), ("acme-b".to_owned(), 5000.0)],
        ..two_accounts(Duration::from_secs(10))
    });
    let keys = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let manifest = h.write("b.yaml", &text_jobs(6));
    let mut cmd = pooled_run(&h, &manifest, &keys);
    cmd.args(["--rate", "1000/1s"]);
    let out = cmd.output().expect("runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{err}");
    let by = h.stats().tasks_by_account;
    assert_eq!(by.len(), 2, "{by:?}\n{err}");
    let line = |account: &str| format!("  {account}: {} succeeded", by[account]);
    for account in ["acme-a", "acme-b"] {
        assert!(err.contains(&line(account)), "{}\nin\n{err}", line(account));
    }
    // Each account's fall, and their sum as the run's measured spend.
    let fell = |account: &str, start: f64| {
        let end = h.stats().credits_by_account[account];
        format!(
            "    {account}: fell by {}",
            veo_batch::cost::Credits(start - end)
        )
    };
    assert!(err.contains(&fell("acme-a", 5000.0)), "{err}");
    assert!(err.contains(&fell("acme-b", 5000.0)), "{err}");

    let status = h.status(&["results.csv"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("by account:\n"), "{text}");
    for account in ["acme-a", "acme-b"] {
        assert!(text.contains(&line(account)), "{text}");
    }
    let json = h.status(&["--json", "results.csv"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for account in ["acme-a", "acme-b"] {
        assert_eq!(v["by_account"][account]["succeeded"], by[account], "{v}");
    }

    let mut logged = h.run_cmd(&manifest);
    logged
        .env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(&keys)
        .args(["--log-format", "json", "--retry-failed"]);
    let logged = logged.output().expect("runs");
    let event = stderr(&logged)
        .lines()
        .find(|l| l.contains("run summary"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .expect("a run summary event");
    let counted: serde_json::Value =
        serde_json::from_str(event["fields"]["by_account"].as_str().unwrap()).unwrap();
    assert_eq!(counted["acme-b"]["succeeded"], by["acme-b"], "{event}");

    let page = walk(h.dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
        .expect("a report page");
    let html = std::fs::read_to_string(page).unwrap();
    assert!(
        html.contains(&format!(
            "<dt>Account acme-a</dt><dd>{} succeeded</dd>",
            by["acme-a"]
        )),
        "the page counts by account"
    );

    let credits = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .args(["credits", "--api-base", &h.sim.base_url(), "--api-key-file"])
        .arg(&keys)
        .output()
        .expect("credits runs");
    let balances = h.stats().credits_by_account;
    assert_eq!(
        String::from_utf8_lossy(&credits.stdout),
        format!(
            "acme-a {}\nacme-b {}\ntotal {}\n",
            balances["acme-a"],
            balances["acme-b"],
            balances["acme-a"] + balances["acme-b"]
        ),
        "{}",
        stderr(&credits)
    );
    assert_no_key_anywhere(
        &h,
        &[&out, &status, &json, &logged, &credits],
        &[KEY_A, KEY_B],
    );
}
