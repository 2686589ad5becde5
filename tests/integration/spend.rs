//! Spend you can trust: the balance measured over a run, each kind's real price
//! learned before a second task of it, the cap held against the real bill, the
//! reconciliation in the summary, and upgrades refused for want of credits made
//! after a top-up.

use std::collections::BTreeMap;
use std::time::Duration;

use veo_batch::exit::Exit;
use veo_batch::request::{Model, Resolution};
use veo_batch::sim::{Endpoint, FaultRate, SimConfig};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// The simulator billing 168 for a veo3_fast 720p video (the table says 60).
fn billing_168(credits: f64) -> SimConfig {
    let mut config = SimConfig {
        credits,
        ..fast_sim()
    };
    config
        .prices
        .set_generation(Model::Veo3Fast, Resolution::Hd720, 168.0);
    config
}

#[test]
fn a_cap_holds_against_the_real_bill() {
    let h = Harness::new(billing_168(100_000.0));
    let manifest = h.write("m.yaml", &text_jobs(10));
    let out = h.run(&manifest, &["--max-credits", "1000"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Budget as i32), "{err}");
    let billed = 100_000.0 - h.stats().credits;
    assert!(billed <= 1000.0, "billed {billed}: {err}");
    // 168 learned from the first task: five fit under 1,000, a sixth would not.
    assert_eq!(billed, 840.0, "{err}");
    assert!(
        err.contains("(168 credits) would take the batch past --max-credits 1,000"),
        "{err}"
    );
    let recorded: f64 = h.results().records.values().map(|r| r.credits).sum();
    assert_eq!(recorded, 840.0, "the results file records the real bill");
}

#[test]
fn a_cap_below_the_highest_reported_price_sends_nothing_of_that_kind() {
    // One reservation at the table price (60) fits under 150; the real bill (168)
    // does not: the first task of the kind is reserved at the highest price
    // reported for it, so nothing is sent.
    let h = Harness::new(billing_168(100_000.0));
    let manifest = h.write("m.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--max-credits", "150"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Budget as i32), "{err}");
    assert_eq!(h.stats().tasks_created, 0, "{err}");
    assert_eq!(h.stats().credits, 100_000.0, "nothing billed: {err}");
    assert!(
        err.contains(
            "(168 credits: a veo3_fast 720p 8s task is reserved at the highest price reported for its kind \
             or 2 times its table price of 60, whichever is larger, until the balance tells its real price) \
             would take the batch past --max-credits 150"
        ),
        "{err}"
    );
}

#[test]
fn validate_says_a_limit_below_a_first_reservation_sends_nothing_of_that_kind() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("m.yaml", &text_jobs(1));
    let validate = |cap: &str| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
            .env_clear()
            .current_dir(h.dir.path())
            .args(["validate", "m.yaml", "--max-credits", cap])
            .output()
            .expect("runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        validate("150"),
        "spending limit: --max-credits 150 (the batch's spend, earlier runs' included) keeps the \
         estimate (60 credits), but a first veo3_fast 720p 8s task is reserved at 168 credits (the \
         highest price reported for its kind or twice its table price) until the balance tells its \
         real price: a run sends none of that kind and stops (exit 6)"
    );
    assert!(validate("168").ends_with("keeps the estimate (60 credits)"));
    // As validate said: the run sends nothing.
    let out = h.run(&manifest, &["--max-credits", "150"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Budget as i32),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().tasks_created, 0);
}

#[test]
fn the_pasted_prices_lines_make_the_estimate_the_measured_price() {
    // Two kinds of one model and resolution that differ by length only: 168 for
    // an 8 s video (the default length), 84 for a 4 s one.
    let mut config = billing_168(100_000.0);
    config
        .prices
        .set_generation_of(Model::Veo3Fast, Resolution::Hd720, 4, 84.0);
    let h = Harness::new(config);
    let mut jobs = text_jobs(6);
    for i in 1..=4 {
        jobs.push_str(&format!(
            "  - id: short-{i}\n    prompt: \"short clip {i}\"\n    duration: 4\n"
        ));
    }
    let manifest = h.write("m.yaml", &jobs);
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{err}");
    // The lines under the warning's `prices:`, pasted as they are.
    let pasted: Vec<&str> = err
        .lines()
        .skip_while(|l| *l != "  prices:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert!(!pasted.is_empty(), "{err}");
    let next = h.write(
        "next.yaml",
        &format!("prices:\n{}\n{jobs}", pasted.join("\n")),
    );
    let validate = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .current_dir(h.dir.path())
        .arg("validate")
        .arg(&next)
        .output()
        .expect("runs");
    let shown = String::from_utf8_lossy(&validate.stdout);
    assert_eq!(validate.status.code(), Some(Exit::Ok as i32), "{shown}");
    let measured = err
        .lines()
        .find_map(|l| l.strip_prefix("  measured: the balance fell by "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no measured spend: {err}"));
    assert_eq!(measured, "1,344", "6 x 168 + 4 x 84: {err}");
    assert!(
        shown.contains(&format!("estimated cost: {measured} credits")),
        "{shown}"
    );
    assert_eq!(
        pasted,
        ["    veo3_fast: {720p: {4s: 84, 8s: 168}}"],
        "{err}"
    );
}

#[test]
fn without_a_cap_the_summary_reconciles_and_warns() {
    let h = Harness::new(billing_168(100_000.0));
    let manifest = h.write("m.yaml", &text_jobs(10));
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{err}");
    assert!(
        err.contains(
            "  measured: the balance fell by 1,680 credits (100,000 to 98,320), against 600 at the price table"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: veo3_fast 720p 8s: the service billed 168 credits a video, the price table says 60\n  \
             to estimate and cap with the measured prices, paste into the manifest:\n  prices:\n    \
             veo3_fast: {720p: {8s: 168}}\n"
        ),
        "{err}"
    );
    assert!(!err.contains("unexplained"), "{err}");
    let results = h.results();
    for r in results.records.values() {
        assert_eq!((r.credits, r.credits_source.as_str()), (168.0, "measured"));
    }
    // The results file says where each figure comes from.
    let text = std::fs::read_to_string(h.path("results.csv")).unwrap();
    assert!(
        text.lines()
            .next()
            .unwrap()
            .split(',')
            .any(|c| c == "credits_source")
    );

    let credits = |args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
            .env_clear()
            .env("KIE_API_KEY", veo_batch::sim::DEMO_KEY)
            .current_dir(h.dir.path())
            .arg("credits")
            .args(args)
            .args(["--api-base", &h.sim.base_url()])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        credits(&["results.csv"]),
        "98320\nbatch: 1,680 credits spent, 1,680 measured from the balance and 0 at the price table\n"
    );
    assert_eq!(
        credits(&["m.yaml", "--results", "results.csv"]),
        "98320\nbatch: 1,680 credits spent, 1,680 measured from the balance and 0 at the price table\n\
         estimated: 600 credits for the same jobs at the manifest's prices (the 2026-09-08 table)\n"
    );
}

#[test]
fn the_json_summary_and_status_carry_the_measured_spend() {
    let h = Harness::new(billing_168(100_000.0));
    let manifest = h.write("m.yaml", &text_jobs(2));
    let out = h.run(&manifest, &["--log-format", "json"]);
    let err = stderr(&out);
    let summary = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "run summary")
        .unwrap_or_else(|| panic!("no run summary: {err}"));
    assert_eq!(summary["fields"]["measured_credits"], 336.0, "{summary}");
    let spend: serde_json::Value =
        serde_json::from_str(summary["fields"]["spend"].as_str().unwrap()).unwrap();
    assert_eq!(spend["kinds"][0]["measured"], 168.0);
    assert_eq!(spend["kinds"][0]["paste"], "veo3_fast: {720p: {8s: 168}}");
    let status = h.status(&["results.csv", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("\"credits_table\": 0.0,"), "never -0: {text}");
    assert_eq!(json["credits_measured"], 336.0, "{json}");
    assert_eq!(json["credits_table"], 0.0, "{json}");
}

#[test]
fn failed_tasks_billed_are_reported_unexplained() {
    let mut config = SimConfig {
        bill_failed: true,
        ..fast_sim()
    };
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(3));
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::JobsFailed as i32), "{err}");
    assert!(
        err.contains("warning: failed tasks may be billed: 180 credits unexplained"),
        "{err}"
    );
}

#[test]
fn an_unreadable_balance_leaves_the_table_with_its_margin() {
    let mut config = fast_sim();
    config.faults.http_500 = FaultRate {
        all: 0.0,
        per_endpoint: BTreeMap::from([(Endpoint::Credit, 1.0)]),
    };
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(3));
    let out = h.run(&manifest, &["--max-credits", "200"]);
    let err = stderr(&out);
    // Each task reserved at the highest price reported for veo3_fast 720p (168,
    // above twice the table's 60): one fits under 200.
    assert_eq!(out.status.code(), Some(Exit::Budget as i32), "{err}");
    assert_eq!(h.stats().tasks_created, 1, "{err}");
    assert!(
        err.contains(
            "warning: the spend could not be measured: the balance could not be read at the start"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "reserved at the highest price reported for it or 2 times its table price, whichever is larger"
        ),
        "{err}"
    );
}

#[test]
fn a_refused_upgrade_is_made_after_a_top_up_and_nothing_is_generated_again() {
    let h = Harness::new(SimConfig {
        // The generation is paid; its 1080p upgrade (5) is not.
        credits: 60.0,
        upgrade_1080p_time: (Duration::from_millis(50), Duration::from_millis(100)),
        ..fast_sim()
    });
    let manifest = h.write(
        "m.yaml",
        "jobs:\n  - id: hd\n    prompt: a clip\n    upgrade: 1080p\n",
    );
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{err}"
    );
    assert!(
        err.contains("error: credits exhausted: 1 upgrade not made"),
        "{err}"
    );
    let first = h.results().records["hd"].clone();
    assert!(first.upgrade_urls.is_empty());
    assert_eq!(first.video_paths.len(), 1, "the base video is kept");
    assert_eq!(first.credits, 60.0, "the upgrade is not counted as spent");
    assert_eq!(h.stats().tasks_created, 1);
    // Where the job stands says so, not "running", in the run's summary and in status.
    assert!(err.contains("  upgrade not made     1\n"), "{err}");
    let results = h.path("results.csv");
    let status = h.status(&[
        manifest.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]);
    let shown = String::from_utf8_lossy(&status.stdout).into_owned() + &stderr(&status);
    assert!(shown.contains("upgrade not made (1 job)"), "{shown}");
    assert!(shown.contains("top up the account"), "{shown}");
    assert!(!shown.contains("running"), "{shown}");
    assert_eq!(
        status.status.code(),
        Some(Exit::NotFinished as i32),
        "{shown}"
    );

    h.sim.top_up(100.0);
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{err}");
    assert_eq!(h.stats().tasks_created, 1, "nothing generated again: {err}");
    let after = h.results().records["hd"].clone();
    assert_eq!(after.task_id, first.task_id);
    assert_eq!(after.upgrade_urls.len(), 1, "{err}");
    assert!(after.video_paths[0].ends_with("hd-1080p.mp4"), "{after:?}");
    assert_eq!(after.error_message, None);
    assert_eq!(after.credits, 65.0);
    assert_eq!(h.stats().credits, 95.0);
}

#[test]
fn an_upgrade_price_is_learned_like_a_generation() {
    let mut config = SimConfig {
        upgrade_1080p_time: (Duration::from_millis(50), Duration::from_millis(100)),
        ..fast_sim()
    };
    config.prices.upgrade_1080p = 20.0;
    let h = Harness::new(config);
    let manifest = h.write(
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: one\n    upgrade: 1080p\n  - id: b\n    prompt: two\n    upgrade: 1080p\n",
    );
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{err}");
    assert!(
        err.contains(
            "warning: 1080p upgrade: the service billed 20 credits a video, the price table says 5\n"
        ),
        "{err}"
    );
    assert!(err.contains("    upgrade_1080p: 20\n"), "{err}");
    assert!(err.contains("the balance fell by 160 credits"), "{err}");
    assert!(!err.contains("unexplained"), "{err}");
    for r in h.results().records.values() {
        assert_eq!(r.credits, 80.0, "{err}");
    }
}
