//! Where every job stands, counted from the results file, and the end-of-run
//! summary that `run` prints and `status` prints again from the file alone.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::checkpoint::plan::{Standing, Wants, standing};
use crate::checkpoint::{DOWNLOAD_FAILED, Record};
use crate::exit;

/// How many jobs stand where.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub succeeded: usize,
    pub failed: usize,
    /// Made and paid for; not downloaded yet, and no download failed.
    pub not_downloaded: usize,
    /// Made and paid for; the download failed.
    pub download_failed: usize,
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
            + self.download_failed
            + self.in_doubt
            + self.running
            + self.not_started
    }

    /// The exit code these counts call for, when nothing stopped the run.
    pub fn exit_code(&self) -> u8 {
        if self.in_doubt + self.running + self.not_started + self.not_downloaded > 0 {
            exit::NOT_FINISHED
        } else if self.failed + self.download_failed > 0 {
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
    pub download_failed: Vec<Problem>,
    pub in_doubt: Vec<Problem>,
}

/// A job as the manifest has it now, for counting: its id, its request's
/// fingerprint and what it asks beyond the request (`None` when only the results
/// file is known: then the record's own say).
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    pub id: &'a str,
    pub fingerprint: Option<&'a str>,
    pub wants: Option<Wants>,
}

impl<'a> From<&'a crate::manifest::Job> for JobRef<'a> {
    fn from(j: &'a crate::manifest::Job) -> JobRef<'a> {
        JobRef {
            id: &j.id,
            fingerprint: Some(&j.fingerprint),
            wants: Some(Wants {
                upgrade: j.upgrade.is_some(),
                keep_original: j.keep_original,
            }),
        }
    }
}

impl<'a> JobRef<'a> {
    /// A job known only from its record in the results file.
    pub fn recorded(record: &'a Record) -> JobRef<'a> {
        JobRef {
            id: &record.job_id,
            fingerprint: None,
            wants: None,
        }
    }
}

/// Where `job` stands, given its last record: see [`standing`].
pub fn standing_of(job: JobRef<'_>, record: Option<&Record>) -> Standing {
    let wants = job
        .wants
        .unwrap_or_else(|| record.map(Record::wants).unwrap_or_default());
    standing(job.fingerprint, wants, record)
}

/// Counts `jobs` against their last records. A record of another request (the
/// manifest changed) counts as not started.
pub fn outcomes<'a>(
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    records: &HashMap<String, Record>,
) -> Outcomes {
    let mut o = Outcomes::default();
    for job in jobs {
        o.count(job, records.get(job.id));
    }
    o
}

impl Outcomes {
    /// Counts one job against its last record, for callers that read records one
    /// at a time instead of holding them all.
    pub fn count(&mut self, job: JobRef<'_>, record: Option<&Record>) {
        let problem = |r: &Record, prefix: Option<&str>| Problem {
            job_id: job.id.to_owned(),
            reason: r
                .error_message
                .as_deref()
                .map(|m| {
                    let m = prefix
                        .and_then(|p| m.strip_prefix(p))
                        .map_or(m, |rest| rest.trim_start_matches(':').trim_start());
                    match r.error_code {
                        Some(c) => format!("{c}: {m}"),
                        None => m.to_owned(),
                    }
                })
                .unwrap_or_else(|| "no answer was recorded".into()),
        };
        let t = &mut self.tally;
        match (standing_of(job, record), record) {
            (Standing::NotStarted, _) | (_, None) => t.not_started += 1,
            (Standing::Running, _) => t.running += 1,
            (Standing::NotDownloaded, _) => t.not_downloaded += 1,
            (Standing::DownloadFailed, Some(r)) => {
                t.download_failed += 1;
                self.download_failed.push(problem(r, Some(DOWNLOAD_FAILED)));
            }
            (Standing::Succeeded, _) => t.succeeded += 1,
            (Standing::Failed, Some(r)) => {
                t.failed += 1;
                self.failed.push(problem(r, None));
            }
            (Standing::InDoubt, Some(r)) => {
                t.in_doubt += 1;
                self.in_doubt.push(problem(r, None));
            }
        }
    }
}

/// What the summary tells the user to do about jobs not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotStartedHint {
    /// Running the same command again sends them.
    #[default]
    RunAgain,
    /// The batch's spending limit holds them back: running again would not help.
    Budget,
    /// The service refused the key: fix it first.
    Key,
}

/// The table of counts and the advice for each problem job.
pub fn render(o: &Outcomes) -> String {
    render_with(o, NotStartedHint::default())
}

/// [`render`], saying `hint` about the jobs not started.
pub fn render_with(o: &Outcomes, hint: NotStartedHint) -> String {
    let t = &o.tally;
    let mut out = String::new();
    for (label, n) in [
        ("succeeded", t.succeeded),
        ("failed", t.failed),
        ("not downloaded", t.not_downloaded),
        ("download failed", t.download_failed),
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
    for p in &o.download_failed {
        let _ = writeln!(
            out,
            "download failed: {}: {} (the video is paid for; run the same command again to download it)",
            p.job_id, p.reason
        );
    }
    if t.not_downloaded > 0 {
        let _ = writeln!(
            out,
            "{} made and not downloaded yet: run the same command again (without --no-download) to download {}",
            videos(t.not_downloaded),
            if t.not_downloaded == 1 { "it" } else { "them" }
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
        let them = if t.not_started == 1 { "it" } else { "them" };
        let advice = match hint {
            NotStartedHint::RunAgain => format!("run the same command again to send {them}"),
            NotStartedHint::Budget => format!(
                "the batch's spending limit holds {them} back; raise max_credits (or --max-credits) to send {them}"
            ),
            NotStartedHint::Key => "fix the API key, then run the same command again".to_owned(),
        };
        let _ = writeln!(out, "{} not started: {advice}", jobs(t.not_started));
    }
    out
}

fn jobs(n: usize) -> String {
    format!("{n} job{}", if n == 1 { "" } else { "s" })
}

fn videos(n: usize) -> String {
    format!("{n} video{}", if n == 1 { "" } else { "s" })
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
        let mut later = rec("later", State::Succeeded, Some("t"));
        later.video_urls = vec!["u".into()];
        let mut bad = rec("bad", State::Failed, Some("t"));
        bad.error_code = Some(400);
        bad.error_message = Some("content policy".into());
        for r in [
            done,
            undl,
            later,
            bad,
            rec("doubt", State::Submitting, None),
            rec("run", State::Submitted, Some("t")),
            rec("pend", State::Pending, None),
            rec("edited", State::Succeeded, Some("t")),
        ] {
            records.insert(r.job_id.clone(), r);
        }
        let ids = [
            "done", "undl", "later", "bad", "doubt", "run", "pend", "edited", "new",
        ];
        let jobs = ids.iter().map(|id| JobRef {
            id,
            fingerprint: Some(if *id == "edited" { "g" } else { "f" }),
            wants: Some(Wants::default()),
        });
        let o = outcomes(jobs, &records);
        assert_eq!(
            o.tally,
            Tally {
                succeeded: 1,
                failed: 1,
                not_downloaded: 1,
                download_failed: 1,
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
