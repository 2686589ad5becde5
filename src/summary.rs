//! Where every job stands, counted from the results file, and the end-of-run
//! summary that `run` prints and `status` prints again from the file alone.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use crate::checkpoint::plan::{Standing, Wants, standing};
use crate::checkpoint::{DOWNLOAD_FAILED, Record};
use crate::cost::Count;

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
    /// Extend jobs not sent because the job they continue failed.
    pub blocked: usize,
    /// Recorded as downloaded, with a video file gone from disk (`status` only).
    pub video_missing: usize,
    /// Made and kept; the upgrade was refused for want of credits.
    pub upgrade_not_made: usize,
}

impl Tally {
    /// Every count, in the order the summary prints them, with its label.
    fn counts(&self) -> [(&'static str, usize); 10] {
        [
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("not downloaded", self.not_downloaded),
            ("download failed", self.download_failed),
            ("in doubt", self.in_doubt),
            ("running", self.running),
            ("not started", self.not_started),
            ("blocked", self.blocked),
            ("video missing", self.video_missing),
            ("upgrade not made", self.upgrade_not_made),
        ]
    }

    fn counts_mut(&mut self) -> [&mut usize; 10] {
        [
            &mut self.succeeded,
            &mut self.failed,
            &mut self.not_downloaded,
            &mut self.download_failed,
            &mut self.in_doubt,
            &mut self.running,
            &mut self.not_started,
            &mut self.blocked,
            &mut self.video_missing,
            &mut self.upgrade_not_made,
        ]
    }

    /// The nonzero counts in one line: `28 succeeded, 2 failed`.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| format!("{} {label}", Count(n)))
            .collect();
        parts.join(", ")
    }

    pub fn total(&self) -> usize {
        self.succeeded
            + self.failed
            + self.not_downloaded
            + self.download_failed
            + self.in_doubt
            + self.running
            + self.not_started
            + self.blocked
            + self.video_missing
            + self.upgrade_not_made
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
    /// Extend jobs not sent, each with its parent and why it failed.
    pub blocked: Vec<Problem>,
    /// Jobs recorded as downloaded whose video file is gone (`status` only).
    pub video_missing: Vec<Problem>,
    pub upgrade_not_made: Vec<Problem>,
    /// Where the jobs with a task stand, by the account that made it (`(unnamed)`
    /// for keys without an account name); left out while there is only one.
    #[serde(skip_serializing_if = "one_or_none")]
    pub by_account: BTreeMap<String, Tally>,
}

/// The name `(unnamed)` stands for the account of keys written without one.
pub const UNNAMED: &str = "(unnamed)";

fn one_or_none(m: &BTreeMap<String, Tally>) -> bool {
    m.len() <= 1
}

/// The account a record's task was made by, as counts name it; `None` when no
/// key is recorded (no task, or a row from before keys were).
pub fn account_of(r: &Record) -> Option<&str> {
    if r.key_id.is_empty() {
        return None;
    }
    Some(if r.account.is_empty() {
        UNNAMED
    } else {
        &r.account
    })
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

/// [`standing_of`], and then, for a job recorded as done, whether every video file its
/// record lists (relative to `results_dir`, the results file's folder) is still on
/// disk: [`Standing::VideoMissing`] if not.
pub fn standing_on_disk(
    job: JobRef<'_>,
    record: Option<&Record>,
    results_dir: &std::path::Path,
) -> Standing {
    match (standing_of(job, record), record) {
        (Standing::Succeeded, Some(r))
            // An object in a bucket was recorded once it was whole there; `status`
            // sends nothing, so it is taken at its word.
            if r.video_paths.iter().any(|p| {
                !crate::paths::is_bucket_url(p)
                    && !crate::paths::resolve(results_dir, p)
                    .try_exists()
                    .unwrap_or(true)
            }) =>
        {
            Standing::VideoMissing
        }
        (s, _) => s,
    }
}

/// [`outcomes`], with each done job's video files looked for on disk (see
/// [`standing_on_disk`]).
pub fn outcomes_on_disk<'a>(
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    records: &HashMap<String, Record>,
    results_dir: &std::path::Path,
) -> Outcomes {
    let mut o = Outcomes::default();
    for job in jobs {
        let record = records.get(job.id);
        let standing = standing_on_disk(job, record, results_dir);
        o.count_as(job, record, standing);
    }
    o
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
    /// Counts one job that stands succeeded (known without its record: such a job
    /// lists no problem).
    pub fn count_succeeded(&mut self) {
        self.tally.succeeded += 1;
    }

    /// Counts one job against its last record, for callers that read records one
    /// at a time instead of holding them all.
    pub fn count(&mut self, job: JobRef<'_>, record: Option<&Record>) {
        self.count_as(job, record, standing_of(job, record));
    }

    /// Counts one job where `standing` says it stands.
    pub fn count_as(&mut self, job: JobRef<'_>, record: Option<&Record>, standing: Standing) {
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
        let before = self.tally.counts();
        let t = &mut self.tally;
        match (standing, record) {
            (Standing::NotStarted, _) | (_, None) => t.not_started += 1,
            (Standing::VideoMissing, Some(_)) => {
                t.video_missing += 1;
                self.video_missing.push(Problem {
                    job_id: job.id.to_owned(),
                    reason: "recorded as downloaded, and its video file is gone".to_owned(),
                });
            }
            (Standing::UpgradeNotMade, Some(r)) => {
                t.upgrade_not_made += 1;
                self.upgrade_not_made.push(problem(r, None));
            }
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
            (Standing::Blocked, Some(r)) => {
                t.blocked += 1;
                self.blocked.push(Problem {
                    job_id: job.id.to_owned(),
                    reason: r
                        .error_message
                        .clone()
                        .unwrap_or_else(|| format!("the job it extends ({:?}) failed", r.extends)),
                });
            }
        }
        if let Some(account) = record.and_then(account_of) {
            let by = self.by_account.entry(account.to_owned()).or_default();
            for (((_, was), (_, now)), slot) in
                before.iter().zip(self.tally.counts()).zip(by.counts_mut())
            {
                *slot += now - was;
            }
        }
    }
}

/// Why a job stands where it does, as the summary says it: the service's code and
/// message, or that no answer was recorded.
pub fn reason(r: &Record) -> String {
    r.error_message
        .as_deref()
        .map(|m| match r.error_code {
            Some(c) => format!("{c}: {m}"),
            None => m.to_owned(),
        })
        .unwrap_or_else(|| "no answer was recorded".into())
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
    /// `--limit N` or `--sample N` held them back: the same command sends the
    /// next N, not all of them.
    Held { flag: &'static str, per_run: usize },
}

/// The table of counts and the advice for each problem job.
pub fn render(o: &Outcomes) -> String {
    render_with(o, NotStartedHint::default())
}

/// How many ids of each group of problems a summary shows.
const IDS_SHOWN: usize = 3;

/// Problems of one kind, grouped by reason, the largest group first (then by the
/// first job's place): one line per reason, however many jobs share it.
pub(crate) fn grouped(problems: &[Problem]) -> Vec<(String, Vec<&str>)> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for p in problems {
        let reason = general(&p.reason, &p.job_id);
        let i = *at.entry(reason.clone()).or_insert_with(|| {
            groups.push((reason, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(p.job_id.as_str());
    }
    // Stable: equal groups keep the order of their first job.
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    groups
}

/// A job's reason as its group says it: without what names the job itself (its
/// id, the URL or file of its video), which would make one group per job. The
/// job's own reason stays whole in `status --failed` and `status --json`.
fn general(reason: &str, job_id: &str) -> String {
    const ELIDED: &str = "…";
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    // `download of HOST/PATH failed`: the URL is the job's.
    while let Some(at) = rest.find("download of ") {
        let after = &rest[at + "download of ".len()..];
        out.push_str(&rest[..at]);
        out.push_str("download");
        rest = after.find(' ').map_or("", |end| &after[end..]);
    }
    out.push_str(rest);
    // A file named in backquotes is the job's video.
    let mut general = String::with_capacity(out.len());
    let mut parts = out.split('`');
    if let Some(first) = parts.next() {
        general.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        general.push('`');
        general.push_str(if i % 2 == 0 { ELIDED } else { part });
    }
    // Ids of a letter or two also spell ordinary words.
    if job_id.chars().count() >= 3 {
        general = general.replace(job_id, ELIDED);
    }
    general
}

fn write_groups(out: &mut String, kind: &str, problems: &[Problem], advice: &str) {
    if problems.is_empty() {
        return;
    }
    for (reason, ids) in grouped(problems) {
        let shown: Vec<String> = ids
            .iter()
            .take(IDS_SHOWN)
            .map(|id| format!("{id:?}"))
            .collect();
        let more = match ids.len().saturating_sub(IDS_SHOWN) {
            0 => String::new(),
            n => format!(" and {} more", Count(n)),
        };
        let _ = writeln!(
            out,
            "{kind} ({}): {reason}: {}{more}",
            jobs(ids.len()),
            shown.join(", ")
        );
    }
    let _ = writeln!(out, "  {advice}");
}

/// [`render`], saying `hint` about the jobs not started and still running. Problems
/// come grouped by reason with their advice once; the tally comes last, so that it
/// is what stays on screen.
pub fn render_with(o: &Outcomes, hint: NotStartedHint) -> String {
    let t = &o.tally;
    let mut out = String::new();
    write_groups(
        &mut out,
        "failed",
        &o.failed,
        "fix the cause, then run again with --retry-failed (`veo-batch status RESULTS --failed` lists every failed job)",
    );
    write_groups(
        &mut out,
        "download failed",
        &o.download_failed,
        "the videos are made and paid for: run the same command again to download them",
    );
    write_groups(
        &mut out,
        "in doubt",
        &o.in_doubt,
        "a task may exist and be billed: check your kie.ai logs, then --resubmit-in-doubt sends the job again",
    );
    write_groups(
        &mut out,
        "blocked",
        &o.blocked,
        "nothing was sent for them: once the job they extend succeeds (--retry-failed retries it), they follow",
    );
    write_groups(
        &mut out,
        "video missing",
        &o.video_missing,
        "run the same command again: they are downloaded again from their recorded URLs, not generated again",
    );
    write_groups(
        &mut out,
        "upgrade not made",
        &o.upgrade_not_made,
        "their videos are kept: top up the account, then run the same command again to make the upgrades (nothing is generated again)",
    );
    let again = match hint {
        NotStartedHint::Key => "once the key is fixed, run again",
        NotStartedHint::RunAgain | NotStartedHint::Budget | NotStartedHint::Held { .. } => {
            "run the same command again"
        }
    };
    if t.not_downloaded > 0 {
        let _ = writeln!(
            out,
            "{} made and not downloaded yet: {again} (without --no-download) to download {}",
            videos(t.not_downloaded),
            them(t.not_downloaded)
        );
    }
    if t.running > 0 {
        let _ = writeln!(
            out,
            "{} still running on the service: {again} to collect {}",
            jobs(t.running),
            them(t.running)
        );
    }
    if t.not_started > 0 {
        let advice = match hint {
            NotStartedHint::RunAgain => format!("run the same command again to send {}", them(t.not_started)),
            NotStartedHint::Budget => format!(
                "the spending limit holds {0} back; raise it (--max-credits, max_credits, --max-run-credits) to send {0}",
                them(t.not_started)
            ),
            NotStartedHint::Held { flag, per_run } if t.not_started > per_run => format!(
                "run the same command again to send the next {per_run} ({flag} {per_run} sends {per_run} a run), or leave out {flag} to send all {}",
                t.not_started
            ),
            NotStartedHint::Held { .. } => {
                format!("run the same command again to send {}", them(t.not_started))
            }
            NotStartedHint::Key => {
                "check KIE_API_KEY (or --api-key-file): nothing is sent until the service accepts the key".to_owned()
            }
        };
        let _ = writeln!(out, "{} not started: {advice}", jobs(t.not_started));
    }
    if o.by_account.len() > 1 {
        let _ = writeln!(out, "by account:");
        for (account, tally) in &o.by_account {
            let _ = writeln!(out, "  {account}: {}", tally.line());
        }
    }
    for (label, n) in t.counts() {
        if n > 0 || label == "succeeded" {
            let _ = writeln!(out, "  {label:<16}{:>6}", Count(n));
        }
    }
    out
}

fn them(n: usize) -> &'static str {
    if n == 1 { "it" } else { "them" }
}

/// `n jobs`, with the plural right (`1 job`).
pub fn jobs(n: usize) -> String {
    format!("{} job{}", Count(n), if n == 1 { "" } else { "s" })
}

fn videos(n: usize) -> String {
    format!("{} video{}", Count(n), if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::State;
    use crate::exit::Exit;

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
                blocked: 0,
                video_missing: 0,
                upgrade_not_made: 0,
            }
        );
        assert_eq!(o.tally.total(), ids.len());
        assert_eq!(Exit::of_tally(&o.tally), Exit::NotFinished);
        insta::assert_snapshot!(render(&o));
    }

    #[test]
    fn many_failures_print_one_line_per_reason_and_the_tally_last() {
        let mut o = Outcomes::default();
        for i in 0..169 {
            let mut r = rec(&format!("job-{i}"), State::Failed, Some("t"));
            r.error_code = Some(if i % 3 == 0 { 400 } else { 500 });
            r.error_message = Some(
                if i % 3 == 0 {
                    "content policy"
                } else {
                    "internal error"
                }
                .into(),
            );
            o.count(JobRef::recorded(&r), Some(&r));
        }
        let text = render(&o);
        insta::assert_snapshot!(text);
        assert_eq!(text.matches("--retry-failed").count(), 1, "the hint once");
        assert!(
            text.trim_end().ends_with("failed             169"),
            "{text}"
        );
    }

    /// Download failures that differ only in the job's URL or file share a group.
    #[test]
    fn failures_group_by_reason_without_the_jobs_own_names() {
        let mut o = Outcomes::default();
        for i in 1..=4 {
            let mut r = rec(&format!("clip-{i}"), State::Succeeded, Some("t"));
            r.video_urls = vec!["u".into()];
            r.error_code = Some(404);
            r.error_message = Some(format!(
                "download failed: download of files.example/v/clip-{i}.mp4 failed: http 404 Not Found: gone"
            ));
            o.count(JobRef::recorded(&r), Some(&r));
        }
        let mut r = rec("clip-5", State::Succeeded, Some("t"));
        r.video_urls = vec!["u".into()];
        r.error_message = Some(
            "download failed: failed to write `videos/b/clip-5.mp4.part`: No space left on device"
                .into(),
        );
        o.count(JobRef::recorded(&r), Some(&r));
        let text = render(&o);
        assert!(
            text.contains(
                "download failed (4 jobs): 404: download failed: http 404 Not Found: gone: \"clip-1\", \"clip-2\", \"clip-3\" and 1 more\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "download failed (1 job): failed to write `…`: No space left on device: \"clip-5\"\n"
            ),
            "{text}"
        );
        // The job's own reason is whole where one job is shown.
        assert!(o.download_failed[0].reason.contains("clip-1.mp4"));
    }

    #[test]
    fn a_blocked_extend_counts_apart_names_its_parent_and_fails_the_run() {
        let mut o = Outcomes::default();
        let mut parent = rec("hero", State::Failed, Some("t"));
        parent.error_code = Some(400);
        parent.error_message = Some("content policy".into());
        o.count(JobRef::recorded(&parent), Some(&parent));
        for id in ["hero-2", "hero-3"] {
            let mut r = rec(id, State::Blocked, None);
            r.extends = "hero".into();
            r.error_message =
                Some("the job it extends, \"hero\", failed: 400: content policy".into());
            o.count(JobRef::recorded(&r), Some(&r));
        }
        assert_eq!(
            (o.tally.failed, o.tally.blocked, o.tally.total()),
            (1, 2, 3)
        );
        assert_eq!(Exit::of_tally(&o.tally), Exit::JobsFailed);
        let text = render(&o);
        assert!(
            text.contains(
                "blocked (2 jobs): the job it extends, \"hero\", failed: 400: content policy: \"hero-2\", \"hero-3\""
            ),
            "{text}"
        );
        assert!(text.contains("  blocked              2"), "{text}");
        // Edited since (another fingerprint): no longer blocked, not started.
        let r = rec("hero-2", State::Blocked, None);
        let job = JobRef {
            id: "hero-2",
            fingerprint: Some("g"),
            wants: Some(Wants::default()),
        };
        assert_eq!(standing_of(job, Some(&r)), Standing::NotStarted);
    }
}
