//! How the end of a run is told: a summary on stderr (why it stopped first, then
//! what was spent, where things are and where the jobs stand), nothing under `-q`
//! when every job succeeded, or one `run summary` event in JSON logs.

use std::path::PathBuf;

use crate::cost::{Count, Credits, Dollars};
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

/// What held jobs back from this run: the flag (`--limit` or `--sample`) and its N.
pub type HeldBy = Option<(&'static str, usize)>;

/// What the run planned that its summary tells beside its report.
#[derive(Debug, Clone, Copy)]
pub struct Planned<'a> {
    pub prices: &'a crate::cost::PriceTable,
    /// The credits the run was estimated to spend.
    pub estimate: f64,
    pub held_by: HeldBy,
    /// Superseded tasks that had a video (kept in `superseded/`); a failed task had none.
    pub superseded_videos: usize,
}

/// Prints the end of a run in `style`.
pub fn print(
    name: &str,
    r: &RunReport,
    exit: Exit,
    style: Style,
    page: &Result<PathBuf, String>,
    planned: Planned<'_>,
) {
    let held_by = planned.held_by;
    let why = stop_message(r);
    match style {
        Style::Quiet if exit == Exit::Ok => {}
        Style::Json => print_json(name, r, exit, planned.estimate, why.as_deref(), page),
        Style::Quiet => eprint!("{}", short(name, r, why.as_deref(), held_by)),
        Style::Text => eprint!("{}", text(name, r, why.as_deref(), page, planned)),
    }
}

/// The run's end as JSON events: why it stopped as an ERROR event of its own, the
/// warnings as WARN events, then one `run summary` event, at INFO when every job
/// succeeded and at WARN otherwise, so that `-q` (warnings and errors only) keeps it
/// exactly when the exit code is not 0.
fn print_json(
    name: &str,
    r: &RunReport,
    exit: Exit,
    estimate: f64,
    why: Option<&str>,
    page: &Result<PathBuf, String>,
) {
    let t = &r.outcomes.tally;
    // Only a run over several accounts has the field, so one account's event keeps its shape.
    let by_account = (r.outcomes.by_account.len() > 1)
        .then(|| serde_json::to_string(&r.outcomes.by_account).unwrap_or_default());
    let by_account = by_account.as_deref();
    if let Some(why) = why {
        tracing::error!(exit_code = exit.code(), stopped = stop_kind(r), "{why}");
    }
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    if let Err(e) = page {
        tracing::warn!("the report page was not written: {e}");
    }
    macro_rules! summary {
        ($level:ident) => {
            tracing::$level!(
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
                held_back = r.held_back,
                spent_credits = r.spent,
                batch_credits = r.recorded_spend + r.spent,
                estimated_credits = estimate,
                measured_credits = r.spend.measured,
                unexplained_credits = r.spend.unexplained,
                upgrades_not_made = r.spend.upgrades_not_made,
                spend = %serde_json::to_string(&r.spend).unwrap_or_default(),
                by_account,
                elapsed_ms = r.elapsed.as_millis() as u64,
                interrupted = r.stopped == Some(StopReason::Interrupted),
                stopped = why,
                results = %r.results.display(),
                exit_code = exit.code(),
                "run summary"
            )
        };
    }
    if exit == Exit::Ok {
        summary!(info);
    } else {
        summary!(warn);
    }
}

/// Why the run stopped, as the summary's first line (after `error: `) and the
/// JSON ERROR event say it: upgrades left for want of credits, or the stop reason.
fn stop_message(r: &RunReport) -> Option<String> {
    if r.spend.upgrades_not_made > 0 {
        let n = r.spend.upgrades_not_made;
        return Some(format!(
            "credits exhausted: {n} upgrade{} not made (the base video{} kept); top up, then run the same command again: it makes those upgrades and generates nothing again",
            if n == 1 { "" } else { "s" },
            if n == 1 { " is" } else { "s are" },
        ));
    }
    r.stopped.as_ref().and_then(describe_stop)
}

/// A stable word for why the run stopped, for JSON logs.
fn stop_kind(r: &RunReport) -> Option<&'static str> {
    if r.spend.upgrades_not_made > 0 {
        return Some("credits_exhausted");
    }
    r.stopped.as_ref().map(|s| match s {
        StopReason::Auth(_) => "key_refused",
        StopReason::Credits(_) => "credits_exhausted",
        StopReason::Budget(_) => "spending_limit",
        StopReason::Checkpoint(_) => "results_file",
        StopReason::Interrupted => "interrupted",
    })
}

/// The advice about jobs not started, for how the run ended.
fn hint(r: &RunReport, held_by: HeldBy) -> crate::summary::NotStartedHint {
    use crate::summary::NotStartedHint;
    match (&r.stopped, held_by) {
        (Some(StopReason::Budget(_)), _) => NotStartedHint::Budget,
        (Some(StopReason::Auth(_)), _) => NotStartedHint::Key,
        (_, Some((flag, per_run))) if r.held_back > 0 => NotStartedHint::Held { flag, per_run },
        _ => NotStartedHint::RunAgain,
    }
}

/// `-q` on a run that did not end in 0: why it stopped, the heading, where the
/// results are, and the problems with the tally; not the spend and call counts.
fn short(name: &str, r: &RunReport, why: Option<&str>, held_by: HeldBy) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(why) = why {
        let _ = writeln!(out, "error: {why}");
    }
    let _ = writeln!(out, "{}", heading(name, r));
    let _ = writeln!(out, "  results: {}", r.results.display());
    out.push_str(&crate::summary::render_with(&r.outcomes, hint(r, held_by)));
    out
}

/// `NAME: N jobs, 1.2s`, and `(interrupted)` when it was.
fn heading(name: &str, r: &RunReport) -> String {
    format!(
        "{name}: {}, {:.1}s{}",
        crate::summary::jobs(r.outcomes.tally.total()),
        r.elapsed.as_secs_f64(),
        if r.stopped == Some(StopReason::Interrupted) {
            " (interrupted)"
        } else {
            ""
        }
    )
}

/// The whole summary, as a terminal shows it.
fn text(
    name: &str,
    r: &RunReport,
    why: Option<&str>,
    page: &Result<PathBuf, String>,
    planned: Planned<'_>,
) -> String {
    use std::fmt::Write as _;
    let Planned {
        prices,
        estimate,
        held_by,
        ..
    } = planned;
    let mut out = String::new();
    // Why the run stopped comes first: the summary after it says what it means.
    if let Some(why) = why {
        let _ = writeln!(out, "error: {why}");
    }
    let _ = writeln!(out, "\n{}", heading(name, r));
    let _ = writeln!(
        out,
        "  submitted this run {}, retries {} (rate-limited {}){}",
        Count(r.counters.submitted),
        Count(r.counters.retries),
        Count(r.counters.rate_limited),
        if r.changed > 0 {
            format!(
                "; {} resubmitted because the manifest changed",
                Count(r.changed)
            )
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
        let videos = match planned.superseded_videos {
            0 => String::new(),
            n => format!(
                "; {} kept in {}",
                if n == 1 { "its video" } else { "their videos" },
                r.videos_dir.join("superseded").display()
            ),
        };
        let _ = writeln!(
            out,
            "  {} task{} superseded (listed in the results file's superseded_tasks{videos})",
            Count(r.superseded),
            if r.superseded == 1 { "" } else { "s" },
        );
    }
    if r.held_back > 0 {
        let by = held_by.map_or("--limit/--sample", |(flag, _)| flag);
        let _ = writeln!(
            out,
            "  {} held back by {by}",
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
    out.push_str(&crate::summary::render_with(&r.outcomes, hint(r, held_by)));
    out
}

/// The measured spend beside the estimate, and what does not add up.
fn spend_lines(out: &mut String, s: &SpendReport) {
    use std::fmt::Write as _;
    if let (Some(m), Some(start), Some(end)) = (s.measured, s.balance_start, s.balance_end) {
        // It rises when failed tasks of earlier runs are refunded (or on a top-up).
        let moved = if m < 0.0 { "rose" } else { "fell" };
        let _ = writeln!(
            out,
            "  measured: the balance {moved} by {} credits ({} to {}), against {} at the price table; other use of the same account counts in it",
            Credits(m.abs()),
            Credits(start),
            Credits(end),
            Credits(s.estimated)
        );
    }
    // Several accounts: the fall above is the sum of theirs.
    for a in &s.accounts {
        let account = if a.account.is_empty() {
            crate::summary::UNNAMED
        } else {
            &a.account
        };
        match (a.measured, a.balance_end) {
            (Some(m), Some(end)) => {
                let _ = writeln!(
                    out,
                    "    {account}: fell by {} credits ({} to {})",
                    Credits(m),
                    Credits(a.balance_start),
                    Credits(end)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "    {account}: {} credits at the start, not read at the end",
                    Credits(a.balance_start)
                );
            }
        }
    }
    for k in &s.kinds {
        let (Some(measured), Some(_)) = (k.measured, &k.paste) else {
            continue;
        };
        let _ = writeln!(
            out,
            "warning: {}: the service billed {} credits a video, the price table says {}",
            k.kind,
            Credits(measured),
            k.table
                .map_or_else(|| "nothing".to_owned(), |t| Credits(t).to_string()),
        );
    }
    if !s.paste.is_empty() {
        // Pasted as they are under the manifest's `prices:` (a model's line there
        // replaces this one), the next run estimates and caps at these prices.
        let _ = writeln!(
            out,
            "  to estimate and cap with the measured prices, paste into the manifest:\n  prices:"
        );
        for line in &s.paste {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(u) = s.unexplained {
        let counted = match s.billed_failures.len() {
            0 => String::new(),
            n => format!(
                "; {} failed task{} counted as spent for it ({} credits)",
                n,
                if n == 1 { "" } else { "s" },
                Credits(s.failed_billed)
            ),
        };
        let _ = writeln!(
            out,
            "warning: failed tasks may be billed: {} credits unexplained (the balance fell by more than the tasks made explain){counted}",
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
        // A pool's keys, each said by key id: the advice is per key.
        StopReason::Auth(m) | StopReason::Credits(m)
            if m.starts_with(crate::runner::NO_KEY_CAN_SEND) =>
        {
            format!(
                "{m}; top up or replace those keys (--api-key-file or KIE_API_KEYS), then run again"
            )
        }
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
