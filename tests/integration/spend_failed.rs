//! What a failed task costs, on every surface: the results file's `credits`, the
//! text summary, the metrics file (the notification's document), `status --json`
//! and the report page agree, and the batch's limit over runs counts what they
//! count: a refunded task nothing, a task the balance showed billed its price.

use veo_batch::exit::Exit;
use veo_batch::sim::SimConfig;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// The batch's spend as each surface gives it after a run that printed `err`
/// and wrote `spend.prom`, in the order: results file, text summary, metrics
/// file, `status --json`, report page.
fn every_figure(h: &Harness, err: &str) -> [String; 5] {
    let file: f64 = h.results().records.values().map(|r| r.credits).sum();
    let summary = err
        .lines()
        .find_map(|l| {
            l.split("; ")
                .nth(1)?
                .strip_suffix(" recorded for the batch")
        })
        .unwrap_or_else(|| panic!("no batch figure in the summary: {err}"))
        .to_owned();
    let metrics = std::fs::read_to_string(h.path("spend.prom")).unwrap();
    let metric = metrics
        .lines()
        .find_map(|l| l.strip_prefix("veo_batch_batch_spent_credits{batch=\"batch\"} "))
        .unwrap_or_else(|| panic!("no batch spend metric: {metrics}"))
        .to_owned();
    let status = h.status(&["results.csv", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let page = std::fs::read_to_string(h.path("results.html")).unwrap();
    let on_page = page
        .split("spent about ")
        .nth(1)
        .and_then(|s| s.split(" credits").next())
        .unwrap_or_else(|| panic!("no spent figure on the page"))
        .to_owned();
    [
        file.to_string(),
        summary,
        metric,
        json["credits"].as_f64().unwrap().to_string(),
        on_page,
    ]
}

const RUN: [&str; 2] = ["--metrics-file", "spend.prom"];

#[test]
fn a_refunded_failed_task_costs_nothing_on_every_surface_and_spares_the_limit() {
    let mut config = fast_sim();
    config.faults.generation_failure = 0.5;
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(6));
    let out = h.run(&manifest, &RUN);
    let err = stderr(&out);
    let records = h.results().records;
    let failed: Vec<_> = records
        .values()
        .filter(|r| r.state == Some(veo_batch::checkpoint::State::Failed))
        .collect();
    let succeeded = records.len() - failed.len();
    assert!(!failed.is_empty() && succeeded > 0, "seeded mix: {err}");
    for r in &failed {
        assert_eq!((r.credits, r.credits_source.as_str()), (0.0, "refunded"));
    }
    // The simulator refunds failed tasks: the balance fell by the successes only.
    let billed = 1_000_000.0 - h.stats().credits;
    assert_eq!(billed, 60.0 * succeeded as f64, "{err}");
    assert!(!err.contains("unexplained"), "{err}");
    let figure = billed.to_string();
    assert_eq!(
        every_figure(&h, &err),
        [&figure; 5].map(String::clone),
        "{err}"
    );

    // The limit over runs counts what the file counts: the failed jobs sent again
    // fit under the successes' spend plus theirs at 60, the first of the kind
    // reserved at 168 until the balance tells its price.
    let cap = billed + 60.0 * failed.len() as f64 + 108.0;
    let created = h.stats().tasks_created;
    let out = h.run(
        &manifest,
        &["--retry-failed", "--max-credits", &cap.to_string()],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(Exit::Budget as i32), "{err}");
    assert_eq!(
        h.stats().tasks_created,
        created + failed.len() as u64,
        "{err}"
    );
}

#[test]
fn a_failed_task_the_balance_shows_billed_counts_on_every_surface_and_against_the_limit() {
    let mut config = SimConfig {
        bill_failed: true,
        ..fast_sim()
    };
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(3));
    let out = h.run(&manifest, &RUN);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::JobsFailed as i32), "{err}");
    // Every surface first, the page included: each counts the billed failed tasks.
    assert_eq!(
        every_figure(&h, &err),
        [&"180".to_owned(); 5].map(String::clone),
        "{err}"
    );
    for r in h.results().records.values() {
        assert_eq!((r.credits, r.credits_source.as_str()), (60.0, "measured"));
    }
    assert!(
        err.contains(
            "warning: failed tasks may be billed: 180 credits unexplained (the balance fell by more \
             than the tasks made explain); 3 failed tasks counted as spent for it (180 credits)"
        ),
        "{err}"
    );

    // The billed failures eat the batch's limit: 180 recorded, and the first job
    // sent again is reserved at 168, past 200: nothing is sent.
    let created = h.stats().tasks_created;
    let out = h.run(&manifest, &["--retry-failed", "--max-credits", "200"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::Budget as i32), "{err}");
    assert!(
        err.contains("(180 credits spent on it so far, 180 of them by earlier runs)"),
        "{err}"
    );
    assert_eq!(h.stats().tasks_created, created, "{err}");
}

#[test]
fn the_json_summary_counts_a_billed_failed_task_as_the_file_does() {
    let mut config = SimConfig {
        bill_failed: true,
        ..fast_sim()
    };
    config.faults.generation_failure = 1.0;
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(2));
    let out = h.run(&manifest, &["--log-format", "json"]);
    let err = stderr(&out);
    let summary = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "run summary")
        .unwrap_or_else(|| panic!("no run summary: {err}"));
    let fields = &summary["fields"];
    assert_eq!(fields["spent_credits"], 120.0, "{summary}");
    assert_eq!(fields["batch_credits"], 120.0, "{summary}");
    assert_eq!(fields["unexplained_credits"], 120.0, "{summary}");
    let spend: serde_json::Value = serde_json::from_str(fields["spend"].as_str().unwrap()).unwrap();
    assert_eq!(spend["failed_billed"], 120.0, "{spend}");
    let file: f64 = h.results().records.values().map(|r| r.credits).sum();
    assert_eq!(file, 120.0);
}

#[test]
fn a_task_of_an_earlier_run_that_fails_later_costs_nothing_either() {
    let mut config = fast_sim();
    config.faults.generation_failure = 1.0;
    // Billed 168 when it is made, measured so, and refunded when it fails.
    config.prices.set_generation(
        veo_batch::request::Model::Veo3Fast,
        veo_batch::request::Resolution::Hd720,
        168.0,
    );
    let h = Harness::new(config);
    let manifest = h.write("m.yaml", &text_jobs(1));
    let out = h.run(&manifest, &["--no-wait"]);
    let made = h.results().records["job-1"].clone();
    assert_eq!(
        (made.credits, made.credits_source.as_str()),
        (168.0, "measured"),
        "{}",
        stderr(&out)
    );
    // The next run finds it failed: the record counts it 0, not 168 less the
    // table's 60.
    let out = h.run(&manifest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::JobsFailed as i32), "{err}");
    // The refund is the earlier run's, not a negative spend of this one.
    assert!(
        err.contains(
            "  spent about 0 credits ($0.00) on this run's submissions (estimated 0); 0 recorded for the batch\n\
             \x20 measured: the balance rose by 168 credits (999,832 to 1,000,000)"
        ),
        "{err}"
    );
    let failed = h.results().records["job-1"].clone();
    assert_eq!(
        (failed.credits, failed.credits_source.as_str()),
        (0.0, "refunded"),
        "{err}"
    );
}
