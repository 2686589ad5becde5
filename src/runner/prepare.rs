//! Before a run: the results file locked and read, every job's standing decided
//! against it (submit, poll, upgrade, download, or nothing), extend chains planned,
//! `--limit`/`--sample` applied, and what the run will replace and cost known.

use anyhow::Context as _;

use super::RunConfig;
use super::chain;
use super::job::Start;
use super::planned::{Planned, superseded_task};
use crate::checkpoint::plan::{Action, Settled, SubmitReason, Wants, next_action};
use crate::checkpoint::writer::{Lock, lock, rewrite};
use crate::checkpoint::{self, Record, State};
use crate::cost::Estimate;
use crate::manifest::Job;

/// A task, running, finished or in doubt, that a submission of this run replaces:
/// it was paid for, and stays on record in the job's `superseded_tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseding {
    /// The job's place in the manifest.
    pub index: usize,
    /// The task's id, or [`checkpoint::IN_DOUBT_TASK`].
    pub task: String,
    /// Where the task stood.
    pub state: State,
    pub reason: SubmitReason,
}

/// A run ready to go: the results file locked and loaded, and what is left to do.
#[derive(Debug)]
pub struct Prepared {
    pub config: RunConfig,
    pub plan: Vec<Planned>,
    /// Jobs submitted because the manifest changed their request.
    pub changed: usize,
    /// Jobs to send left out by `--limit` or `--sample`.
    pub held_back: usize,
    pub warnings: Vec<String>,
    /// Tasks that this run's submissions replace, in manifest order.
    pub superseding: Vec<Superseding>,
    /// Credits the results file records as spent by earlier runs.
    pub recorded_spend: f64,
    /// Rows of extend jobs decided by the plan (blocked, or pending again behind a
    /// parent made again), written before anything is sent.
    pub(super) blocked: Vec<chain::Decided>,
    /// The results file's last record of each job, in the order they first appear.
    pub(super) records: Vec<Record>,
    /// Where each job's last record is in `records`, by the job's place in the manifest.
    pub(super) last: Vec<Option<usize>>,
    /// The places in `records` of jobs no longer in the manifest.
    pub(super) foreign: Vec<usize>,
    pub(super) lock: Lock,
}

impl Prepared {
    /// Credits the submissions of this run would cost, at the manifest's prices.
    pub fn estimate(&self) -> Estimate {
        Estimate::of(
            &self.config.prices,
            self.plan
                .iter()
                .filter(|p| matches!(p.start, Start::Submit(_)))
                .map(|p| &self.config.jobs[p.index]),
        )
    }

    pub fn submissions(&self) -> usize {
        self.plan
            .iter()
            .filter(|p| matches!(p.start, Start::Submit(_)))
            .count()
    }

    /// The job of a planned step.
    pub fn job(&self, planned: &Planned) -> &Job {
        &self.config.jobs[planned.index]
    }

    /// The last record a planned step starts from (see [`Planned::from`]).
    pub fn record(&self, planned: &Planned) -> Option<&Record> {
        planned.from.and_then(|i| self.records.get(i))
    }
}

/// Takes the results file's lock, loads it, and decides what is left to do. Sends
/// nothing; a kill-shaped results file is rewritten clean.
pub fn prepare(config: RunConfig) -> anyhow::Result<Prepared> {
    prepare_from(config, None)
}

/// [`prepare`], taking the results file as `preloaded` read it when that is still the
/// file (read while the manifest was, see [`checkpoint::Preloaded`]).
pub fn prepare_from(
    config: RunConfig,
    preloaded: Option<checkpoint::Preloaded>,
) -> anyhow::Result<Prepared> {
    let lock = lock(&config.results)?;
    let loaded = match preloaded.and_then(|p| p.take_for(&config.results)) {
        Some(read) => read,
        None => checkpoint::load_listed(&config.results, config.jobs.len()),
    };
    let mut loaded = loaded?.unwrap_or_default();
    let mut warnings = std::mem::take(&mut loaded.warnings);

    // A results file the run wrote holds the manifest's jobs in manifest order: then
    // every recorded job is in the manifest, seen without a set of 100,000 ids, and
    // each job's record is found by its place.
    let in_order = loaded.records.len() <= config.jobs.len()
        && loaded
            .records
            .iter()
            .zip(&config.jobs)
            .all(|(r, job)| r.job_id == job.id);
    let foreign: Vec<usize> = if in_order {
        Vec::new()
    } else {
        let manifest_ids: rustc_hash::FxHashSet<&str> =
            config.jobs.iter().map(|j| j.id.as_str()).collect();
        checkpoint::check_belongs(
            &config.results,
            loaded.records.iter().map(|r| r.job_id.as_str()),
            |id| manifest_ids.contains(id),
        )?;
        (0..loaded.records.len())
            .filter(|&at| !manifest_ids.contains(loaded.records[at].job_id.as_str()))
            .collect()
    };
    if !foreign.is_empty() {
        warnings.push(format!(
            "{} jobs in the results file are no longer in the manifest; their rows are kept",
            foreign.len()
        ));
    }
    if loaded.needs_compaction() {
        // A kill left several rows per job or a torn row: start from a clean file.
        rewrite(&config.results, &loaded.records).with_context(|| {
            format!(
                "failed to rewrite results file `{}`",
                config.results.display()
            )
        })?;
    }

    // Paths a results file records are only ever acted on inside the videos folder
    // (see `checkpoint::confine_paths`); taken off after any rewrite above, so that
    // the file keeps what it said until a job's next row replaces it.
    // Objects in a bucket are checked against the bucket, files against the disk.
    let (objects, gone) = take_bucket_videos(&mut loaded.records, config.bucket.videos.as_ref());
    warnings.extend(gone);
    warnings.extend(checkpoint::confine_paths(
        &mut loaded.records,
        &config.results,
        &config.videos_dir,
    ));
    if config.resume.download {
        warnings.extend(checkpoint::forget_missing_videos(
            &mut loaded.records,
            &config.results,
        ));
    }
    for (at, video_paths, superseded_paths) in objects {
        if let Some(r) = loaded.records.get_mut(at) {
            r.video_paths.extend(video_paths);
            r.superseded_paths.extend(superseded_paths);
        }
    }

    // What is left to do, job by job.
    let mut plan: Vec<Planned> = Vec::with_capacity(config.jobs.len());
    let mut last_at = Vec::with_capacity(config.jobs.len());
    let mut changed = 0;
    for (index, job) in config.jobs.iter().enumerate() {
        let at = if in_order {
            (index < loaded.records.len()).then_some(index)
        } else {
            loaded.position(&job.id)
        };
        last_at.push(at);
        let last = at.and_then(|i| loaded.records.get(i));
        let wants = Wants {
            upgrade: job.upgrade.is_some(),
            keep_original: job.keep_original,
        };
        let action = next_action(&job.fingerprint, wants, last, config.resume);
        let start = match action {
            Action::Nothing(Settled::Succeeded | Settled::Failed | Settled::InDoubt) => continue,
            Action::Submit(reason) => {
                if reason == SubmitReason::Changed {
                    changed += 1;
                }
                Start::Submit(reason)
            }
            Action::Poll { task_id } => Start::Poll(task_id),
            Action::Upgrade { task_id } => Start::Upgrade(task_id),
            Action::Download => Start::Download,
        };
        // Every job with a record starts from it: a job submitted again keeps its
        // attempts, its credits and its superseded tasks (see `resumed_record`).
        plan.push(Planned {
            index,
            start,
            from: last.and(at),
            after: None,
            parent_task: None,
            parent_account: None,
        });
    }
    // Extend jobs follow their parents: sent with the parent's task once it is made,
    // blocked when it failed.
    let mut blocked = Vec::new();
    if config.jobs.iter().any(|j| j.extend.is_some()) {
        let (rows, again) = chain::plan_chains(&config, &loaded.records, &last_at, &mut plan);
        blocked = rows;
        changed += again;
    }
    // `--limit` and `--sample` choose among the jobs to send; tasks already paid
    // for are always collected.
    let to_send: Vec<usize> = (0..plan.len())
        .filter(|&i| matches!(plan[i].start, Start::Submit(_)))
        .collect();
    let keep = match (config.sample, config.limit) {
        (Some(n), _) => {
            let mut rng = fastrand::Rng::with_seed(config.seed);
            let mut picked = rng.choose_multiple(to_send.iter().copied(), n.min(to_send.len()));
            picked.sort_unstable();
            Some(picked)
        }
        (None, Some(n)) => Some(to_send.iter().copied().take(n).collect()),
        (None, None) => None,
    };
    let mut held_back = 0;
    if let Some(keep) = keep {
        held_back = to_send.len() - keep.len();
        let mut i = 0;
        plan.retain(|p| {
            let kept = !matches!(p.start, Start::Submit(_)) || keep.binary_search(&i).is_ok();
            i += 1;
            kept
        });
    }
    let superseding = plan
        .iter()
        .filter_map(|p| {
            let Start::Submit(reason) = p.start else {
                return None;
            };
            let last = p.from.and_then(|at| loaded.records.get(at))?;
            Some(Superseding {
                index: p.index,
                task: superseded_task(last)?,
                state: last.state(),
                reason,
            })
        })
        .collect();
    let recorded_spend = loaded.records.iter().map(|r| r.credits).sum();
    Ok(Prepared {
        held_back,
        superseding,
        recorded_spend,
        blocked,
        config,
        plan,
        changed,
        warnings,
        records: loaded.records,
        last: last_at,
        foreign,
        lock,
    })
}

/// A record's place, and the bucket objects of its `video_paths` and
/// `superseded_paths`.
type BucketVideos = (usize, Vec<String>, Vec<String>);

/// The bucket objects recorded in `video_paths` and `superseded_paths`, taken off
/// the records (by place) so that the local checks leave them alone. An object
/// outside the run's videos prefix, or a done job's video no longer in the bucket,
/// is dropped instead: the job's video is downloaded again, never generated again.
fn take_bucket_videos(
    records: &mut [Record],
    target: Option<&crate::store::run::VideosTarget>,
) -> (Vec<BucketVideos>, Option<String>) {
    let mut kept = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for (at, r) in records.iter_mut().enumerate() {
        if !r
            .video_paths
            .iter()
            .chain(&r.superseded_paths)
            .any(|p| crate::paths::is_bucket_url(p))
        {
            continue;
        }
        let done = r.state() == State::Succeeded;
        let (objects, paths): (Vec<String>, Vec<String>) = std::mem::take(&mut r.video_paths)
            .into_iter()
            .partition(|p| crate::paths::is_bucket_url(p));
        r.video_paths = paths;
        let (old, paths): (Vec<String>, Vec<String>) = std::mem::take(&mut r.superseded_paths)
            .into_iter()
            .partition(|p| crate::paths::is_bucket_url(p));
        r.superseded_paths = paths;
        let (objects, gone): (Vec<String>, Vec<String>) = objects
            .into_iter()
            .partition(|url| target.is_some_and(|t| t.holds(url) && (!done || t.is_there(url))));
        if !gone.is_empty() {
            dropped.push(r.job_id.clone());
        }
        let old = old
            .into_iter()
            .filter(|url| target.is_some_and(|t| t.holds(url)));
        kept.push((at, objects, old.collect()));
    }
    let warning = (!dropped.is_empty()).then(|| {
        let shown: Vec<String> = dropped.iter().take(3).map(|id| format!("{id:?}")).collect();
        format!(
            "{} job{} recorded as downloaded to a bucket {} a video that is not under the \
             videos prefix now ({}{}): downloaded again from the recorded URLs, not generated again",
            dropped.len(),
            if dropped.len() == 1 { "" } else { "s" },
            if dropped.len() == 1 { "has" } else { "have" },
            shown.join(", "),
            if dropped.len() > 3 {
                format!(" and {} more", dropped.len() - 3)
            } else {
                String::new()
            }
        )
    });
    (kept, warning)
}
