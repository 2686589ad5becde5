//! Keys and accounts: a key file or `KIE_API_KEYS` with several keys, the
//! simulator's accounts over HTTP (a task answers only to its own account, a
//! capped key answers 433), a client calling with a chosen key, and the results
//! file naming the account and key id that made each task, never the key.

use std::time::Duration;

use serde_json::json;
use veo_batch::api::{ApiKey, Client, ClientConfig, ErrorClass, KeyId, KeyRing, TaskState};
use veo_batch::exit::Exit;
use veo_batch::sim::{self, SimConfig, SimKey};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

const KEY_A: &str = "acme-a-secret-0001";
const KEY_A2: &str = "acme-a-secret-0002";
const KEY_B: &str = "acme-b-secret-0001";

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
        if entry.file_name().is_some_and(|n| n == "keys") {
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
    let mut cmd = h.run_cmd(&manifest);
    cmd.env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(&keys)
        .args(["--rate", "1000/1s"]);
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

#[test]
fn several_keys_are_refused_by_run_until_the_pool_is_wired_and_nothing_is_sent() {
    let h = Harness::new(pool_sim());
    let keys = h.write("keys", &format!("acme-a {KEY_A}\nacme-b {KEY_B}\n"));
    let manifest = h.write("b.yaml", &text_jobs(2));
    let mut cmd = h.run_cmd(&manifest);
    cmd.env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(&keys);
    let out = cmd.output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "2 api keys were given (acme-a/{}, acme-b/{})",
            id(KEY_A),
            id(KEY_B)
        )),
        "{err}"
    );
    assert_eq!(h.stats().generate_calls, 0);
    assert_no_key_anywhere(&h, &[&out], &[KEY_A, KEY_B]);
}

#[test]
fn a_bad_key_file_is_refused_with_every_bad_line_and_no_key() {
    let h = Harness::new(pool_sim());
    let keys = h.write(
        "keys",
        &format!("acme-a {KEY_A}\nacme-a {KEY_A2} {KEY_B}\n\nbad/name {KEY_B}\nacme-b {KEY_A}\n"),
    );
    let manifest = h.write("b.yaml", &text_jobs(1));
    let mut cmd = h.run_cmd(&manifest);
    cmd.env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(&keys);
    let out = cmd.output().expect("runs");
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
    let mut cmd = h.run_cmd(&manifest);
    cmd.env_remove("KIE_API_KEY")
        .arg("--api-key-file")
        .arg(&keys)
        .args(["--rate", "1000/1s", "--concurrency", "1"]);
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
