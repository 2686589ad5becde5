//! How the end of a run is told: a summary on stderr (why it stopped first, then
//! what was spent, where things are and where the jobs stand), nothing under `-q`
//! when every job succeeded, or one `run summary` event in JSON logs.

use std::path::PathBuf;

use crate::cost::{Credits, Dollars};
use crate::exit::Exit;
use crate::runner::spend::SpendReport;
use crate::runner::{RunReport, StopReason};

/// How the end of a run is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    /// `-q`: nothing when every job succeeded; the exit code speaks.
    Quiet,
    /// `--log-format json`: one `run summary` event holding the tally and spend.
    Json,
}

/// Prints the end of a run in `style`.
pub fn print(
    name: &str,
    r: &RunReport,
    prices: &crate::cost::PriceTable,
    estimate: f64,
    style: Style,
    page: &Result<PathBuf, String>,
) {
    use std::fmt::Write as _;
    let exit = r.exit();
    let t = &r.outcomes.tally;
    match style {
        Style::Quiet if exit == Exit::Ok => return,
        Style::Json => {
            tracing::info!(
                batch = name,
                jobs = t.total(),
                succeeded = t.succeeded,
                failed = t.failed,
                not_downloaded = t.not_downloaded,
                download_failed = t.download_failed,
                in_doubt = t.in_doubt,
                running = t.running,
                not_started = t.not_started,
                blocked = t.blocked,
                submitted = r.counters.submitted,
                retries = r.counters.retries,
                rate_limited = r.counters.rate_limited,
                superseded = r.superseded,
                spent_credits = r.spent,
                batch_credits = r.recorded_spend + r.spent,
                estimated_credits = estimate,
                measured_credits = r.spend.measured,
                unexplained_credits = r.spend.unexplained,
                upgrades_not_made = r.spend.upgrades_not_made,
                spend = %serde_json::to_string(&r.spend).unwrap_or_default(),
                elapsed_ms = r.elapsed.as_millis() as u64,
                interrupted = r.stopped == Some(StopReason::Interrupted),
                stopped = r.stopped.as_ref().and_then(describe_stop).as_deref(),
                results = %r.results.display(),
                exit_code = exit.code(),
                "run summary"
            );
            return;
        }
        Style::Text | Style::Quiet => {}
    }
    let mut out = String::new();
    // Why the run stopped comes first: the summary after it says what it means.
    if r.spend.upgrades_not_made > 0 {
        let n = r.spend.upgrades_not_made;
        let _ = writeln!(
            out,
            "error: credits exhausted: {n} upgrade{} not made (the base video{} kept); top up, then run the same command again: it makes those upgrades and generates nothing again",
            if n == 1 { "" } else { "s" },
            if n == 1 { " is" } else { "s are" },
        );
    } else if let Some(why) = r.stopped.as_ref().and_then(describe_stop) {
        let _ = writeln!(out, "error: {why}");
    }
    let _ = writeln!(
        out,
        "\n{name}: {}, {:.1}s{}",
        crate::summary::jobs(t.total()),
        r.elapsed.as_secs_f64(),
        if r.stopped == Some(StopReason::Interrupted) {
            " (interrupted)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  submitted this run {}, retries {} (rate-limited {}){}",
        r.counters.submitted,
        r.counters.retries,
        r.counters.rate_limited,
        if r.changed > 0 {
            format!("; {} resubmitted because the manifest changed", r.changed)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  spent about {} credits ({}) on this run's submissions (estimated {}); {} recorded for the batch",
        Credits(r.spent),
        Dollars(prices.usd(r.spent)),
        Credits(estimate),
        Credits(r.recorded_spend + r.spent)
    );
    spend_lines(&mut out, &r.spend);
    if r.superseded > 0 {
        let _ = writeln!(
            out,
            "  {} paid task{} superseded (listed in the results file's superseded_tasks; their videos kept in {})",
            r.superseded,
            if r.superseded == 1 { "" } else { "s" },
            r.videos_dir.join("superseded").display()
        );
    }
    if r.held_back > 0 {
        let _ = writeln!(
            out,
            "  {} held back by --limit/--sample",
            crate::summary::jobs(r.held_back)
        );
    }
    let _ = writeln!(out, "  results: {}", r.results.display());
    let _ = writeln!(out, "  videos:  {}", r.videos_dir.display());
    if let Ok(page) = page {
        let _ = writeln!(out, "  report:  {}", page.display());
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Err(e) = page {
        let _ = writeln!(out, "warning: the report page was not written: {e}");
    }
    let hint = match &r.stopped {
        Some(StopReason::Budget(_)) => crate::summary::NotStartedHint::Budget,
        Some(StopReason::Auth(_)) => crate::summary::NotStartedHint::Key,
        _ => crate::summary::NotStartedHint::RunAgain,
    };
    out.push_str(&crate::summary::render_with(&r.outcomes, hint));
    eprint!("{out}");
}

/// The measured spend beside the estimate, and what does not add up.
fn spend_lines(out: &mut String, s: &SpendReport) {
    use std::fmt::Write as _;
    if let (Some(m), Some(start), Some(end)) = (s.measured, s.balance_start, s.balance_end) {
        let _ = writeln!(
            out,
            "  measured: the balance fell by {} credits ({} to {}), against {} at the price table; other use of the same account counts in it",
            Credits(m),
            Credits(start),
            Credits(end),
            Credits(s.estimated)
        );
    }
    for k in &s.kinds {
        let (Some(measured), Some(paste)) = (k.measured, &k.paste) else {
            continue;
        };
        let _ = writeln!(
            out,
            "warning: {}: the service billed {} credits a video, the price table says {}; paste under prices: in the manifest to estimate and cap with it:\n  prices:\n    {paste}",
            k.kind,
            Credits(measured),
            k.table
                .map_or_else(|| "nothing".to_owned(), |t| Credits(t).to_string()),
        );
    }
    if let Some(u) = s.unexplained {
        let _ = writeln!(
            out,
            "warning: failed tasks may be billed: {} credits unexplained (the balance fell by more than the tasks made explain)",
            Credits(u)
        );
    }
    if let Some(p) = &s.problem {
        let _ = writeln!(
            out,
            "warning: the spend could not be measured: {p}; the figures are the price table's"
        );
    }
}

/// Why the run stopped, as the summary's first line says it (an interruption
/// says so in the summary's heading instead).
fn describe_stop(why: &StopReason) -> Option<String> {
    Some(match why {
        StopReason::Auth(m) if m.contains("KIE_API_KEY") => {
            format!("the service refused the API key ({m})")
        }
        StopReason::Auth(m) => {
            format!("the service refused the API key ({m}); check KIE_API_KEY (or --api-key-file)")
        }
        StopReason::Credits(m) => {
            format!("the service has no credits left for this key ({m}); top up, then run again")
        }
        StopReason::Budget(m) => format!("{m}; raise that limit to go on"),
        StopReason::Checkpoint(m) => {
            format!("{m}; nothing more was sent, fix the disk problem and run again")
        }
        StopReason::Interrupted => return None,
    })
}
