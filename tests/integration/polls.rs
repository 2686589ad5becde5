//! The run's status checks: paced for the whole run under the service's limit on
//! record-info, slowed by a 429, and fewer per video once the run has seen its
//! tasks finish.

use std::process::Output;
use std::time::Duration;

use veo_batch::exit::Exit;
use veo_batch::sim::SimConfig;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// 60 jobs against `h`, checked every 20 ms if they could be, at most
/// `poll_rate` checks.
fn run(h: &Harness, poll_rate: &str) -> Output {
    let manifest = h.write("b.yaml", &text_jobs(60));
    h.cmd()
        .arg("run")
        .arg(&manifest)
        .args(["--api-base", &h.sim.base_url()])
        .args(["--results", "results.csv", "--videos-dir", "videos"])
        .args(["--rate", "1000/1s", "--poll-interval", "20ms"])
        .args(["--poll-rate", poll_rate])
        .output()
        .expect("runs")
}

/// Jobs whose tasks all run at once, checked every 20 ms if they could be: far
/// more checks than the service's limit on record-info (50 per 500 ms here: the
/// service's 10 per second, 5 times faster, in a window long enough that a loaded
/// test machine's delays between a send and its arrival do not matter).
fn busy_sim() -> SimConfig {
    SimConfig {
        poll_rate: Some("50/500ms".parse().expect("rate")),
        generation_time: (Duration::from_millis(600), Duration::from_millis(900)),
        ..fast_sim()
    }
}

#[test]
fn checks_are_paced_for_the_whole_run_under_the_service_limit() {
    let h = Harness::new(busy_sim());
    // Under the service's 100 per second, with the default's margin.
    let out = run(&h, "40/500ms");
    assert_eq!(out.status.code(), Some(Exit::Ok.into()), "{}", stderr(&out));
    let stats = h.stats();
    assert_eq!(stats.polls_refused, 0, "{stats:?}");
    let checks = stats.requests.get("record-info").copied().unwrap_or(0);
    assert!(checks >= 60, "{checks} checks");
}

#[test]
fn a_429_on_checks_slows_them_down() {
    let h = Harness::new(busy_sim());
    // Four times what the service allows: only its 429s can slow the run down.
    let out = run(&h, "200/500ms");
    assert_eq!(out.status.code(), Some(Exit::Ok.into()), "{}", stderr(&out));
    let stats = h.stats();
    let checks = stats.requests.get("record-info").copied().unwrap_or(0);
    // At the asked pace, about two checks in three are refused for the whole run
    // (measured with the slow-down turned off: 368 of 525); slowed down, about one
    // in three, most of them before the first slow-downs took hold.
    assert!(
        stats.polls_refused * 2 < checks,
        "{} of {checks} checks refused",
        stats.polls_refused
    );
    assert!(stats.polls_refused > 0, "the limit was reached: {stats:?}");
}
