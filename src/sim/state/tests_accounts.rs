//! Accounts in the simulator: each account's rate windows and balance are its
//! own, a key's usage cap rests that key only, and a task is answered for only to
//! a key of the account that made it.

use super::*;
use crate::sim::SimKey;
use crate::units::Rate;

fn sim(config: SimConfig) -> Arc<Sim> {
    Arc::new(Sim::new(
        config,
        "http://sim".into(),
        None,
        CancellationToken::new(),
    ))
}

/// Account "" holds `main` and `main-2`; account `acme-b` holds `b1`.
fn two_accounts(config: SimConfig) -> (Arc<Sim>, [Caller; 3]) {
    let sim = sim(SimConfig {
        api_key: "main".into(),
        keys: vec![SimKey::new("", "main-2"), SimKey::new("acme-b", "b1")],
        ..config
    });
    let caller = |k: &str| sim.caller(Some(&format!("Bearer {k}"))).unwrap();
    let callers = [caller("main"), caller("main-2"), caller("b1")];
    (sim, callers)
}

fn request() -> (GenerateRequest, Value) {
    let body = json!({ "prompt": "x" });
    let raw = crate::request::RawRequest::from_json(&body).unwrap();
    (crate::request::check(&raw).result.unwrap(), body)
}

fn code(a: &Admission) -> i64 {
    match a {
        Admission::Created { .. } => 200,
        Admission::Refused(answer) => answer.code,
        Admission::DropBefore => 0,
    }
}

fn created(a: Admission) -> String {
    match a {
        Admission::Created { task_id, .. } => task_id,
        _ => panic!("no task created"),
    }
}

#[tokio::test(start_paused = true)]
async fn each_account_has_its_own_generate_window_and_keys_of_one_share_it() {
    let (sim, [main, main2, b]) = two_accounts(SimConfig {
        rate: Some(Rate {
            count: 2,
            per: Duration::from_secs(10),
        }),
        ..SimConfig::default()
    });
    let (req, body) = request();
    assert_eq!(code(&sim.admit(main, &req, &body)), 200);
    assert_eq!(code(&sim.admit(main2, &req, &body)), 200);
    // A second key of the same account adds no throughput.
    assert_eq!(code(&sim.admit(main2, &req, &body)), 429);
    assert_eq!(code(&sim.admit(main, &req, &body)), 429);
    // The other account's window is untouched.
    assert_eq!(code(&sim.admit(b, &req, &body)), 200);
    assert_eq!(code(&sim.admit(b, &req, &body)), 200);
    assert_eq!(code(&sim.admit(b, &req, &body)), 429);
    let stats = sim.stats();
    assert_eq!(stats.tasks_by_account[""], 2);
    assert_eq!(stats.tasks_by_account["acme-b"], 2);
}

#[tokio::test(start_paused = true)]
async fn each_account_has_its_own_poll_window() {
    let (sim, [main, main2, b]) = two_accounts(SimConfig {
        poll_rate: Some(Rate {
            count: 3,
            per: Duration::from_secs(1),
        }),
        ..SimConfig::default()
    });
    assert!(sim.admit_poll(main).is_none());
    assert!(sim.admit_poll(main2).is_none());
    assert!(sim.admit_poll(main).is_none());
    assert_eq!(sim.admit_poll(main2).map(|a| a.code), Some(429));
    assert!((0..3).all(|_| sim.admit_poll(b).is_none()));
    assert_eq!(sim.admit_poll(b).map(|a| a.code), Some(429));
}

#[tokio::test(start_paused = true)]
async fn each_account_pays_from_its_own_balance() {
    let (sim, [main, _, b]) = two_accounts(SimConfig {
        rate: None,
        credits: 100.0,
        account_credits: vec![("acme-b".into(), 70.0)],
        ..SimConfig::default()
    });
    let (req, body) = request();
    // veo3_fast at 720p costs 60.
    assert_eq!(code(&sim.admit(b, &req, &body)), 200);
    assert_eq!(code(&sim.admit(b, &req, &body)), 402);
    assert!((sim.credits(b) - 10.0).abs() < 1e-9);
    assert!((sim.credits(main) - 100.0).abs() < 1e-9, "untouched");
    assert_eq!(code(&sim.admit(main, &req, &body)), 200);
    let stats = sim.stats();
    assert!((stats.credits - 50.0).abs() < 1e-9, "{}", stats.credits);
    assert_eq!(stats.credits_by_account["acme-b"], 10.0);
    assert_eq!(stats.credits_by_account[""], 40.0);
}

#[tokio::test(start_paused = true)]
async fn a_capped_key_answers_433_and_only_that_key() {
    let sim = sim(SimConfig {
        api_key: "main".into(),
        keys: vec![SimKey::new("", "main-2").capped(2)],
        rate: None,
        ..SimConfig::default()
    });
    let main = sim.caller(Some("Bearer main")).unwrap();
    let capped = sim.caller(Some("Bearer main-2")).unwrap();
    let (req, body) = request();
    let before = sim.credits(main);
    assert_eq!(code(&sim.admit(capped, &req, &body)), 200);
    assert_eq!(code(&sim.admit(capped, &req, &body)), 200);
    let refused = sim.admit(capped, &req, &body);
    assert!(
        matches!(&refused, Admission::Refused(a) if a.code == 433 && a.msg == MSG_KEY_CAPPED),
        "{refused:?}"
    );
    // Refused by the cap: nothing charged, and the account's other key goes on.
    assert!((sim.credits(main) - (before - 120.0)).abs() < 1e-9);
    assert_eq!(code(&sim.admit(main, &req, &body)), 200);
    assert_eq!(code(&sim.admit(capped, &req, &body)), 433);
    assert_eq!(sim.stats().answered_433, 2);
    // The capped key still reads its account's tasks.
    let id = created(sim.admit(main, &req, &body));
    assert_eq!(sim.record_info(capped, &id).code, 200);
}

/// record-info, both upgrades, download-url and extend answer "record is null"
/// (download-url: "url is wrong") to a key of another account, and answer the
/// task's own account, whichever of its keys asks.
#[tokio::test(start_paused = true)]
async fn a_task_is_answered_for_only_to_its_own_account() {
    let (sim, [main, main2, b]) = two_accounts(SimConfig {
        rate: None,
        generation_time: (Duration::from_secs(10), Duration::from_secs(10)),
        upgrade_1080p_time: (Duration::from_secs(1), Duration::from_secs(1)),
        record_lag: Duration::ZERO,
        ..SimConfig::default()
    });
    let (req, body) = request();
    let id = created(sim.admit(main, &req, &body));
    tokio::time::advance(Duration::from_secs(12)).await;
    assert_eq!(sim.record_info(b, &id).code, 422);
    assert_eq!(sim.record_info(b, &id).msg, MSG_RECORD_NULL);
    assert_eq!(sim.record_info(main2, &id).data["successFlag"], 1);
    let url = format!("http://sim/files/{id}.mp4");
    assert_eq!(sim.download_url(b, &url).msg, MSG_URL_WRONG);
    assert_eq!(sim.download_url(main2, &url).code, 200);
    let (call, extend_body) = {
        let body = json!({ "taskId": id, "prompt": "on", "model": "fast" });
        (crate::request::check_extend_json(&body).unwrap(), body)
    };
    let other = sim.admit_extend(b, &call, &extend_body);
    assert!(
        matches!(&other, Admission::Refused(a) if a.code == 422 && a.msg == MSG_RECORD_NULL),
        "{other:?}"
    );
    let b_credits = sim.credits(b);
    assert_eq!(sim.get_4k(b, &id, 0, None).msg, MSG_RECORD_NULL);
    assert_eq!(sim.get_1080p(b, &id, 0).msg, MSG_RECORD_NULL);
    assert_eq!(sim.credits(b), b_credits, "nothing charged to the asker");
    assert_eq!(sim.get_1080p(main2, &id, 0).code, 200);
    // Its files are public links: anyone may fetch them.
    assert!(matches!(
        sim.file(&format!("{id}.mp4"), None),
        FileState::Ready
    ));
    // And the other way round: account b's task is not the unnamed account's.
    let theirs = created(sim.admit(b, &req, &body));
    assert_eq!(sim.record_info(main, &theirs).msg, MSG_RECORD_NULL);
    assert_eq!(sim.record_info(b, &theirs).code, 200);
}

/// A later simulator with the same seed and keys re-derives a task from its id
/// for its own account only, as the one that made it would.
#[tokio::test(start_paused = true)]
async fn a_task_re_derived_from_its_id_keeps_its_account() {
    let config = || SimConfig {
        rate: None,
        generation_time: (Duration::from_secs(10), Duration::from_secs(10)),
        ..SimConfig::default()
    };
    let (first, [_, _, b]) = two_accounts(config());
    let (req, body) = request();
    let id = created(first.admit(b, &req, &body));
    let (later, [main, _, b_again]) = two_accounts(config());
    assert_eq!(later.record_info(main, &id).msg, MSG_RECORD_NULL);
    assert_eq!(later.record_info(b_again, &id).code, 200);
    // Asked by the wrong account first, it is still the right account's after.
    let (fresh, [main, _, b_again]) = two_accounts(config());
    assert_eq!(fresh.record_info(main, &id).msg, MSG_RECORD_NULL);
    assert_eq!(fresh.record_info(b_again, &id).code, 200);
    assert_eq!(fresh.record_info(main, &id).msg, MSG_RECORD_NULL);
}
