//! What is told when a run ends: [`RunEnd`], built once from the finished
//! [`RunReport`], is the JSON document webhooks receive, the source of the Slack
//! text and of the metrics file. It holds counts, credits, times and reasons, never
//! the API key, a prompt or a request body.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::exit::Exit;
use crate::runner::{RunReport, StopReason};
use crate::summary::{Outcomes, Problem, Tally};

/// The `type` of the document, as Standard Webhooks payloads name their event.
pub const EVENT_TYPE: &str = "batch.finished";
/// Failure groups a document lists at most; `more_failure_groups` counts the rest.
pub const FAILURE_GROUPS: usize = 5;
/// Job ids a failure group names at most.
const EXAMPLES: usize = 3;

/// The document a webhook receives: a Standard Webhooks payload (`type`,
/// `timestamp`, `data`).
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the run ended (RFC 3339, UTC).
    pub timestamp: String,
    pub data: RunEnd,
}

/// How a run ended, for people and machines downstream.
#[derive(Debug, Clone, Serialize)]
pub struct RunEnd {
    pub batch: String,
    pub results: String,
    pub videos_dir: String,
    pub exit: ExitInfo,
    /// Why the run stopped before its end, if something stopped it.
    pub stopped: Option<Stopped>,
    pub jobs: Jobs,
    pub credits: CreditFigures,
    /// Tasks this run submitted to the service (each one paid for).
    pub submissions: u64,
    pub retries: u64,
    /// Answers of HTTP 429 (or the service's rate-limit code) this run saw.
    pub rate_limited: u64,
    pub started_at: String,
    pub ended_at: String,
    #[serde(skip)]
    pub started: SystemTime,
    #[serde(skip)]
    pub ended: SystemTime,
    pub duration_seconds: f64,
    /// The largest groups of jobs that need attention, one per reason.
    pub failure_groups: Vec<FailureGroup>,
    /// Groups left out of `failure_groups`.
    pub more_failure_groups: usize,
}

/// Why a run stopped early: a word for machines, the service's or the limit's
/// message for people.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// `budget`, `credits`, `checkpoint`, `auth` or `interrupted`.
    pub reason: &'static str,
    pub message: Option<String>,
}

impl From<&StopReason> for Stopped {
    fn from(s: &StopReason) -> Stopped {
        let (reason, message) = match s {
            StopReason::Budget(m) => ("budget", Some(m)),
            StopReason::Credits(m) => ("credits", Some(m)),
            StopReason::Checkpoint(m) => ("checkpoint", Some(m)),
            StopReason::Auth(m) => ("auth", Some(m)),
            StopReason::Interrupted => ("interrupted", None),
        };
        Stopped {
            reason,
            message: message.cloned(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    pub code: u8,
    pub meaning: &'static str,
}

/// Where every job of the batch stands at the end of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Jobs {
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub not_downloaded: usize,
    pub download_failed: usize,
    pub in_doubt: usize,
    pub running: usize,
    pub not_started: usize,
    pub blocked: usize,
    /// Made and kept; the 1080p/4K upgrade refused for want of credits.
    pub upgrade_not_made: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CreditFigures {
    /// What the run was estimated to cost before it started.
    pub estimated: f64,
    /// What this run's submissions cost at the manifest's prices.
    pub spent: f64,
    /// What the results file records for the whole batch, this run included.
    pub batch_spent: f64,
    /// What the service's balance says this run cost; `null` when not measured.
    pub measured: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    /// `failed`, `download failed`, `in doubt`, `blocked` or `upgrade not made`.
    pub kind: &'static str,
    pub reason: String,
    pub jobs: usize,
    /// The first few job ids of the group.
    pub examples: Vec<String>,
}

impl Jobs {
    /// The states in the order they are shown, with the names metrics use.
    pub fn by_state(&self) -> [(&'static str, usize); 9] {
        [
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("not_downloaded", self.not_downloaded),
            ("download_failed", self.download_failed),
            ("in_doubt", self.in_doubt),
            ("running", self.running),
            ("not_started", self.not_started),
            ("blocked", self.blocked),
            ("upgrade_not_made", self.upgrade_not_made),
        ]
    }
}

impl From<&Tally> for Jobs {
    fn from(t: &Tally) -> Jobs {
        Jobs {
            total: t.total(),
            succeeded: t.succeeded,
            failed: t.failed,
            not_downloaded: t.not_downloaded,
            download_failed: t.download_failed,
            in_doubt: t.in_doubt,
            running: t.running,
            not_started: t.not_started,
            blocked: t.blocked,
            upgrade_not_made: t.upgrade_not_made,
        }
    }
}

/// The credits the service's balance says this run cost: the balance's fall over
/// the run, `None` (`null` in the document, absent from the metrics) when it could
/// not be read.
fn measured_credits(report: &RunReport) -> Option<f64> {
    report.spend.measured
}

impl RunEnd {
    /// The end of the run `report` tells, for the batch `name` estimated at
    /// `estimate` credits, ended at `ended` with the process's code `exit` (which
    /// `--running-ok` may have softened from the report's own).
    pub fn new(
        name: &str,
        report: &RunReport,
        exit: Exit,
        estimate: f64,
        ended: SystemTime,
    ) -> RunEnd {
        let started = ended.checked_sub(report.elapsed).unwrap_or(UNIX_EPOCH);
        let (failure_groups, more_failure_groups) = failure_groups(&report.outcomes);
        RunEnd {
            batch: name.to_owned(),
            results: shown(&report.results),
            videos_dir: shown(&report.videos_dir),
            exit: ExitInfo {
                code: exit.code(),
                meaning: exit.meaning(),
            },
            stopped: report.stopped.as_ref().map(Stopped::from),
            jobs: Jobs::from(&report.outcomes.tally),
            credits: CreditFigures {
                estimated: estimate,
                spent: report.spent,
                batch_spent: report.recorded_spend + report.spent,
                measured: measured_credits(report),
            },
            submissions: report.counters.submitted,
            retries: report.counters.retries,
            rate_limited: report.counters.rate_limited,
            started_at: rfc3339(started),
            ended_at: rfc3339(ended),
            started,
            ended,
            duration_seconds: round_ms(report.elapsed),
            failure_groups,
            more_failure_groups,
        }
    }

    /// The exit code the run ends with.
    pub fn exit(&self) -> u8 {
        self.exit.code
    }

    /// The document a webhook receives.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            kind: EVENT_TYPE,
            timestamp: self.ended_at.clone(),
            data: self.clone(),
        }
    }

    /// Slack's shape: one `text` in Slack's mrkdwn, readable in a channel.
    pub fn slack(&self) -> serde_json::Value {
        use std::fmt::Write as _;
        let j = &self.jobs;
        let mut text = format!(
            "veo-batch: *{}* ended with exit {} ({})",
            mrkdwn(&self.batch),
            self.exit.code,
            mrkdwn(self.exit.meaning)
        );
        if let Some(why) = &self.stopped {
            let _ = write!(
                text,
                "\n:warning: stopped ({}){}",
                why.reason,
                why.message
                    .as_ref()
                    .map_or_else(String::new, |m| format!(": {}", mrkdwn(m)))
            );
        }
        let states: Vec<String> = j
            .by_state()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        let _ = write!(
            text,
            "\n{}: {}",
            crate::summary::jobs(j.total),
            if states.is_empty() {
                "none".to_owned()
            } else {
                states.join(", ")
            }
        );
        let _ = write!(
            text,
            "\ncredits: {} spent this run (estimated {}){}",
            crate::cost::Credits(self.credits.spent),
            crate::cost::Credits(self.credits.estimated),
            match self.credits.measured {
                Some(m) => format!(", {} by the balance", crate::cost::Credits(m)),
                None => String::new(),
            }
        );
        let _ = write!(
            text,
            "\nsubmitted {}, retries {}, rate-limited {}; {:.1}s",
            self.submissions, self.retries, self.rate_limited, self.duration_seconds
        );
        for g in &self.failure_groups {
            let ids: Vec<String> = g.examples.iter().map(|id| format!("`{id}`")).collect();
            let _ = write!(
                text,
                "\n• {} ({}): {}: {}",
                g.kind,
                crate::summary::jobs(g.jobs),
                mrkdwn(&g.reason),
                mrkdwn(&ids.join(", "))
            );
        }
        if self.more_failure_groups > 0 {
            let _ = write!(text, "\n• and {} more groups", self.more_failure_groups);
        }
        let _ = write!(text, "\nresults: `{}`", mrkdwn(&self.results));
        serde_json::json!({ "text": text })
    }
}

/// The first [`FAILURE_GROUPS`] groups of problems, failed first, then failed
/// downloads, jobs in doubt and blocked jobs, each largest first; and how many
/// more there were.
fn failure_groups(o: &Outcomes) -> (Vec<FailureGroup>, usize) {
    let kinds: [(&'static str, &[Problem]); 5] = [
        ("failed", &o.failed),
        ("download failed", &o.download_failed),
        ("in doubt", &o.in_doubt),
        ("blocked", &o.blocked),
        ("upgrade not made", &o.upgrade_not_made),
    ];
    let mut all = Vec::new();
    for (kind, problems) in kinds {
        for (reason, ids) in crate::summary::grouped(problems) {
            all.push(FailureGroup {
                kind,
                reason: reason.to_owned(),
                jobs: ids.len(),
                examples: ids.iter().take(EXAMPLES).map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    let more = all.len().saturating_sub(FAILURE_GROUPS);
    all.truncate(FAILURE_GROUPS);
    (all, more)
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds to the millisecond: a document need not say nanoseconds.
fn round_ms(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// Text as Slack's mrkdwn shows it literally: `&`, `<` and `>` escaped.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
