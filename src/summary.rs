//! Where every job stands, counted from the results file, and the end-of-run
//! summary that `run` prints and `status` prints again from the file alone.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checkpoint::Record;
use crate::checkpoint::plan::{Action, ResumeOptions, Settled, Wants, next_action};
use crate::exit;

/// How many jobs stand where.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub succeeded: usize,
    pub failed: usize,
    /// Succeeded on the service, but the video is not downloaded yet.
    pub not_downloaded: usize,
    pub in_doubt: usize,
    /// Submitted and still running on the service.
    pub running: usize,
    pub not_started: usize,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.succeeded
            + self.failed
            + self.not_downloaded
            + self.in_doubt
            + self.running
            + self.not_started
    }

    /// The exit code these counts call for, when nothing stopped the run.
    pub fn exit_code(&self) -> u8 {
        if self.in_doubt + self.running + self.not_started > 0 {
            exit::NOT_FINISHED
        } else if self.failed + self.not_downloaded > 0 {
            exit::JOBS_FAILED
        } else {
            exit::OK
        }
    }
}

/// A job that needs attention, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub job_id: String,
    pub reason: String,
}

/// The tally and the jobs behind its bad numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub tally: Tally,
    pub failed: Vec<Problem>,
    pub not_downloaded: Vec<Problem>,
    pub in_doubt: Vec<Problem>,
}

/// A job as the manifest has it now, for counting: its id, its request's
/// fingerprint and whether it keeps the original beside an upgrade (when known).
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    pub id: &'a str,
    pub fingerprint: Option<&'a str>,
    pub keep_original: bool,
    /// The job asks for a 1080p or 4K file.
    pub upgrade: bool,
}

impl<'a> From<&'a crate::manifest::Job> for JobRef<'a> {
    fn from(j: &'a crate::manifest::Job) -> JobRef<'a> {
        JobRef {
            id: &j.id,
            fingerprint: Some(&j.fingerprint),
            keep_original: j.keep_original,
            upgrade: j.upgrade.is_some(),
        }
    }
}

/// Counts `jobs` against their last records. A record of another request (the
/// manifest changed) counts as not started.
pub fn outcomes<'a>(
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    records: &HashMap<String, Record>,
    download: bool,
) -> Outcomes {
    let mut o = Outcomes::default();
    for job in jobs {
        o.count(job, records.get(job.id), download);
    }
    o
}

/// Where one job stands, as `status`, the summary and the report page show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Succeeded,
    Failed,
    /// Succeeded on the service, but the video is not downloaded yet.
    NotDownloaded,
    InDoubt,
    /// Submitted and still running on the service (or its upgrade is).
    Running,
    /// No record, a record of another request (the manifest changed), or nothing
    /// sent yet.
    NotStarted,
}

/// Where `job` stands given its last record: what a run would do with it next (the
/// planner's answer), so that `status`, the summary, the report page and the next
/// run never disagree.
pub fn standing(job: JobRef<'_>, record: Option<&Record>, download: bool) -> Standing {
    let Some(r) = record.filter(|r| job.fingerprint.is_none_or(|f| f == r.fingerprint)) else {
        return Standing::NotStarted;
    };
    let wants = Wants {
        upgrade: job.upgrade,
        keep_original: job.keep_original,
    };
    let opts = ResumeOptions {
        download,
        ..ResumeOptions::default()
    };
    match next_action(&r.fingerprint, wants, Some(r), opts) {
        Action::Submit(_) => Standing::NotStarted,
        Action::Poll { .. } | Action::Upgrade { .. } => Standing::Running,
        Action::Download => Standing::NotDownloaded,
        Action::Nothing(Settled::Succeeded) => Standing::Succeeded,
        Action::Nothing(Settled::Failed) => Standing::Failed,
        Action::Nothing(Settled::InDoubt) => Standing::InDoubt,
    }
}

/// Why a job needs attention, from its record: the service's code and message.
pub fn reason(r: &Record) -> String {
    r.error_message
        .clone()
        .map(|m| match r.error_code {
            Some(c) => format!("{c}: {m}"),
            None => m,
        })
        .unwrap_or_else(|| "no answer was recorded".into())
}

impl Outcomes {
    /// Counts one job against its last record, for callers that read records one
    /// at a time instead of holding them all.
    pub fn count(&mut self, job: JobRef<'_>, record: Option<&Record>, download: bool) {
        let problem = |r: Option<&Record>| Problem {
            job_id: job.id.to_owned(),
            reason: r.map_or_else(|| "no answer was recorded".into(), reason),
        };
        let t = &mut self.tally;
        match standing(job, record, download) {
            Standing::NotStarted => t.not_started += 1,
            Standing::Running => t.running += 1,
            Standing::Succeeded => t.succeeded += 1,
            Standing::NotDownloaded => {
                t.not_downloaded += 1;
                self.not_downloaded.push(problem(record));
            }
            Standing::Failed => {
                t.failed += 1;
                self.failed.push(problem(record));
            }
            Standing::InDoubt => {
                t.in_doubt += 1;
                self.in_doubt.push(problem(record));
            }
        }
    }
}

/// The table of counts and the advice for each problem job.
pub fn render(o: &Outcomes) -> String {
    let t = &o.tally;
    let mut out = String::new();
    for (label, n) in [
        ("succeeded", t.succeeded),
        ("failed", t.failed),
        ("not downloaded", t.not_downloaded),
        ("in doubt", t.in_doubt),
        ("running", t.running),
        ("not started", t.not_started),
    ] {
        if n > 0 || label == "succeeded" {
            let _ = writeln!(out, "  {label:<15}{n:>7}");
        }
    }
    for p in &o.failed {
        let _ = writeln!(
            out,
            "failed: {}: {} (fix the cause, then run again with --retry-failed)",
            p.job_id, p.reason
        );
    }
    for p in &o.not_downloaded {
        let _ = writeln!(
            out,
            "not downloaded: {}: {} (the video is paid for; run the same command again to download it)",
            p.job_id, p.reason
        );
    }
    for p in &o.in_doubt {
        let _ = writeln!(
            out,
            "in doubt: {}: {} (a task may exist and be billed; check your kie.ai logs, then --resubmit-in-doubt sends it again)",
            p.job_id, p.reason
        );
    }
    if t.running > 0 {
        let _ = writeln!(
            out,
            "{} still running on the service: run the same command again to collect {}",
            jobs(t.running),
            if t.running == 1 { "it" } else { "them" }
        );
    }
    if t.not_started > 0 {
        let _ = writeln!(
            out,
            "{} not started: run the same command again to send {}",
            jobs(t.not_started),
            if t.not_started == 1 { "it" } else { "them" }
        );
    }
    out
}

fn jobs(n: usize) -> String {
    format!("{n} job{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::State;

    fn rec(id: &str, state: State, task: Option<&str>) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            task_id: task.map(Into::into),
            fingerprint: "f".into(),
            ..Record::default()
        }
    }

    #[test]
    fn every_state_is_counted_once() {
        let mut records = HashMap::new();
        let mut done = rec("done", State::Succeeded, Some("t"));
        done.video_urls = vec!["u".into()];
        done.video_paths = vec!["p".into()];
        let mut undl = rec("undl", State::Succeeded, Some("t"));
        undl.video_urls = vec!["u".into()];
        undl.error_message = Some("download failed: 404".into());
        let mut bad = rec("bad", State::Failed, Some("t"));
        bad.error_code = Some(400);
        bad.error_message = Some("content policy".into());
        for r in [
            done,
            undl,
            bad,
            rec("doubt", State::Submitting, None),
            rec("run", State::Submitted, Some("t")),
            rec("pend", State::Pending, None),
            rec("edited", State::Succeeded, Some("t")),
        ] {
            records.insert(r.job_id.clone(), r);
        }
        let ids = [
            "done", "undl", "bad", "doubt", "run", "pend", "edited", "new",
        ];
        let jobs = ids.iter().map(|id| JobRef {
            id,
            fingerprint: Some(if *id == "edited" { "g" } else { "f" }),
            keep_original: false,
            upgrade: false,
        });
        let o = outcomes(jobs, &records, true);
        assert_eq!(
            o.tally,
            Tally {
                succeeded: 1,
                failed: 1,
                not_downloaded: 1,
                in_doubt: 1,
                running: 1,
                not_started: 3,
            }
        );
        assert_eq!(o.tally.total(), ids.len());
        assert_eq!(o.tally.exit_code(), exit::NOT_FINISHED);
        insta::assert_snapshot!(render(&o));
    }

    #[test]
    fn exit_codes_follow_the_worst_state() {
        let mut t = Tally {
            succeeded: 3,
            ..Tally::default()
        };
        assert_eq!(t.exit_code(), exit::OK);
        t.failed = 1;
        assert_eq!(t.exit_code(), exit::JOBS_FAILED);
        t.running = 1;
        assert_eq!(t.exit_code(), exit::NOT_FINISHED);
    }
}
