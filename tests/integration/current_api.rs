//! The whole tool against today's API, end to end on the simulator: result URLs
//! that expire before their download, upgrades that first answer "record result
//! data is blank", fractional credits, and the estimate of a mixed manifest.

use std::time::Duration;

use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;
use veo_batch::sim::{self, SimConfig};

use crate::harness::{Harness, fast_sim, stderr};

fn succeeded(h: &Harness) -> usize {
    h.results()
        .records
        .values()
        .filter(|r| r.state() == State::Succeeded)
        .count()
}

#[test]
fn result_urls_that_expire_before_download_are_still_downloaded() {
    // Every result URL has expired by the time anyone asks for it.
    let h = Harness::new(SimConfig {
        url_ttl: Some(Duration::ZERO),
        upgrade_1080p_time: (Duration::from_millis(100), Duration::from_millis(100)),
        ..fast_sim()
    });
    let manifest = h.write(
        "m.yaml",
        "defaults:\n  model: veo3_lite\njobs:\n  - id: a\n    prompt: x\n  - id: b\n    prompt: y\n  \
         - id: c\n    prompt: z\n    model: veo3\n    upgrade: 1080p\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    assert_eq!(succeeded(&h), 3);
    for name in ["a.mp4", "b.mp4", "c-1080p.mp4"] {
        let bytes = std::fs::read(h.path("videos").join(name)).unwrap();
        assert_eq!(&bytes[..], sim::SAMPLE_MP4, "{name}");
    }
    let stats = h.stats();
    assert_eq!(stats.requests.get("download-url"), Some(&3), "{stats:?}");
    assert!(stats.codes.get(&410).is_some_and(|n| *n >= 3), "{stats:?}");
    let r = &h.results().records["a"];
    assert_eq!(r.error_message, None, "{r:?}");
}

#[test]
fn an_upgrade_that_first_answers_record_blank_is_still_fetched() {
    let h = Harness::new(SimConfig {
        record_lag: Duration::from_secs(1),
        upgrade_1080p_time: (Duration::from_millis(100), Duration::from_millis(100)),
        ..fast_sim()
    });
    let manifest = h.write(
        "m.yaml",
        "jobs:\n  - id: sharp\n    prompt: x\n    model: veo3_lite\n    upgrade: 1080p\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let r = &h.results().records["sharp"];
    assert_eq!(r.state(), State::Succeeded);
    assert_eq!(r.upgrade_urls.len(), 1, "{r:?}");
    assert_eq!(r.error_message, None, "{r:?}");
    assert!(h.path("videos").join("sharp-1080p.mp4").exists());
    let stats = h.stats();
    assert!(
        stats.codes.get(&422).is_some_and(|n| *n >= 1),
        "the upgrade was asked while the record was blank: {stats:?}"
    );
}

#[test]
fn fractional_credits_end_to_end() {
    let h = Harness::new(SimConfig {
        credits: 5916.25,
        ..fast_sim()
    });
    let credits = || {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
            .env_clear()
            .env("KIE_API_KEY", sim::DEMO_KEY)
            .args(["credits", "--api-base", &h.sim.base_url()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(credits(), "5916.25\n");
    // Three veo3_lite videos at 1080p: 3 x 22.5.
    let manifest = h.write(
        "m.yaml",
        "defaults:\n  model: veo3_lite\n  resolution: 1080p\njobs:\n  \
         - id: a\n    prompt: x\n  - id: b\n    prompt: y\n  - id: c\n    prompt: z\n",
    );
    let out = h.run(&manifest, &["--max-credits", "70"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("estimated cost 67.5 credits ($0.34)"), "{log}");
    assert!(
        log.contains("spent about 67.5 credits ($0.34) on this run's submissions (estimated 67.5)"),
        "{log}"
    );
    assert_eq!(credits(), "5848.75\n");
    assert!((h.stats().credits - 5848.75).abs() < 1e-9);
}

#[test]
fn a_budget_of_fractional_credits_stops_at_the_job_that_would_pass_it() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "m.yaml",
        "defaults:\n  model: veo3_lite\n  resolution: 1080p\njobs:\n  \
         - id: a\n    prompt: x\n  - id: b\n    prompt: y\n  - id: c\n    prompt: z\n",
    );
    // 45 pays for two jobs of 22.5, not three.
    let out = h.run(&manifest, &["--max-credits", "45", "--concurrency", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Budget as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out)
            .contains("job \"c\" (22.5 credits) would take the batch past --max-credits 45"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.stats().tasks_created, 2);
}

#[test]
fn the_estimate_of_a_mixed_manifest_is_the_table_summed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.yaml");
    std::fs::write(
        &path,
        "prices:\n  veo3_lite: {1080p: 20}\njobs:\n  \
         - id: lite\n    prompt: a\n    model: veo3_lite\n    repeat: 2\n  \
         - id: lite-hd\n    prompt: b\n    model: veo3_lite\n    resolution: 1080p\n  \
         - id: fast-hd\n    prompt: c\n    model: veo3_fast\n    resolution: 1080p\n  \
         - id: fast-4k\n    prompt: d\n    model: veo3_fast\n    resolution: 4k\n  \
         - id: quality\n    prompt: e\n    model: veo3\n    upgrade: 1080p\n  \
         - id: quality-hd\n    prompt: f\n    model: veo3\n    resolution: 1080p\n    upgrade: 4k\n",
    )
    .unwrap();
    let out = assert_cmd::cargo::cargo_bin_cmd!("veo-batch")
        .env_clear()
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // By hand, at the 2026-09-08 table with lite at 1080p set to 20:
    //   generation: lite 2 x 15 = 30, lite-hd 20, fast-hd 37.5, fast-4k 90,
    //               quality 225, quality-hd 232.5            = 635
    //   upgrades:   quality 1080p 5, quality-hd 4k 120       = 125
    //   total 760 credits, at $0.005 each $3.80
    assert!(
        stdout.contains("prices: the 2026-09-08 table, 1 price set by the manifest\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("estimated cost: 760 credits ($3.80): generation 635, upgrades 125\n"),
        "{stdout}"
    );
    // 232.5 + 120 at 1080p then 4k, against 285 at 4k: a hint, not a problem.
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("job \"quality-hd\": upgrade: resolution: 4k at generation costs 285 credits, less than 1080p then upgrade: 4k (352.5 credits"),
        "{err}"
    );
}

#[test]
fn status_counts_credits_at_the_manifest_prices() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "m.yaml",
        "defaults:\n  model: veo3_lite\n  resolution: 1080p\njobs:\n  \
         - id: a\n    prompt: x\n  - id: b\n    prompt: y\n  - id: c\n    prompt: z\n",
    );
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .current_dir(h.dir.path())
        .args(["status", "m.yaml", "--results", "results.csv"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.ends_with(
            "credits: 45 recorded as spent by the batch; at the manifest's prices (the 2026-09-08 \
             table): about 45 for the 2 jobs with a task, 22.5 for the 1 job still to submit\n"
        ),
        "{text}"
    );
}
