//! Before a run: the results file locked and read, every job's standing decided
//! against it (submit, poll, upgrade, download, or nothing), extend chains planned,
//! `--limit`/`--sample` applied, and what the run will replace and cost known.

use anyhow::Context as _;

use super::RunConfig;
use super::chain;
use super::collector::LastRow;
use super::job::Start;
use super::planned::{Planned, superseded_task};
use crate::checkpoint::plan::{Action, Settled, Standing, SubmitReason, Wants, next_action};
use crate::checkpoint::writer::{Lock, lock};
use crate::checkpoint::{self, Record, State};
use crate::cost::Estimate;
use crate::manifest::Job;
use crate::summary::JobRef;

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
    /// The last records held in full: those of the jobs this run acts on (and of
    /// every job when the manifest has extend chains, whose planning reads them).
    /// A settled job's stays in the file, at its place (see [`LastRow::Kept`]).
    pub(super) records: Vec<Record>,
    /// Where each job's last record is, by the job's place in the manifest.
    pub(super) last: Vec<Option<LastRow>>,
    /// The rows of jobs no longer in the manifest, kept as they are.
    pub(super) foreign: Vec<LastRow>,
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
        None => checkpoint::load_located(&config.results),
    };
    let mut located = loaded?.unwrap_or_default();
    let mut warnings = std::mem::take(&mut located.warnings);

    // A results file the run wrote holds the manifest's jobs in manifest order: then
    // every recorded job is in the manifest, seen without a set of 100,000 ids, and
    // each job's record is found by its place.
    let in_order = located.jobs.len() <= config.jobs.len()
        && located
            .jobs
            .iter()
            .zip(&config.jobs)
            .all(|(p, job)| *p.id == *job.id);
    let foreign: Vec<usize> = if in_order {
        Vec::new()
    } else {
        let manifest_ids: rustc_hash::FxHashSet<&str> =
            config.jobs.iter().map(|j| j.id.as_str()).collect();
        checkpoint::check_belongs(&config.results, located.jobs.iter().map(|p| &*p.id), |id| {
            manifest_ids.contains(id)
        })?;
        (0..located.jobs.len())
            .filter(|&at| !manifest_ids.contains(&*located.jobs[at].id))
            .collect()
    };
    if !foreign.is_empty() {
        warnings.push(format!(
            "{} jobs in the results file are no longer in the manifest; their rows are kept",
            foreign.len()
        ));
    }
    if located.needs_compaction() {
        // A kill left several rows per job or a torn row: start from a clean file.
        located = located.compacted().with_context(|| {
            format!(
                "failed to rewrite results file `{}`",
                config.results.display()
            )
        })?;
    }
    let recorded_spend = located.jobs.iter().map(|p| p.credits).sum();

    // Each job's last record is read back in turn and checked: paths a results file
    // records are only ever acted on inside the videos folder, and a done job whose
    // video is gone is downloaded again (see `checkpoint::Confinement`); checked
    // after any rewrite above, so that the file keeps what it said until a job's
    // next row replaces it. Only the records a run needs stay in memory. Objects in
    // a bucket are checked against the bucket, files against the disk.
    let mut confinement =
        checkpoint::Confinement::new(&config.results, &config.videos_dir, config.resume.download);
    // Extend chains are planned from every job's record; a recent submission counts
    // against the generate pace (`Pace::remember`).
    let keep_all = config.jobs.iter().any(|j| j.extend.is_some());
    let recent = super::pace::cutoff(config.rate);
    let mut records: Vec<Record> = Vec::new();
    let mut last: Vec<Option<LastRow>> = Vec::with_capacity(config.jobs.len());
    let mut bucket_gone: Vec<String> = Vec::new();
    let mut plan: Vec<Planned> = Vec::with_capacity(config.jobs.len());
    let mut changed = 0;
    let places = config.jobs.iter().enumerate().map(|(index, job)| {
        if in_order {
            located.jobs.get(index)
        } else {
            located.get(&job.id)
        }
    });
    let mut jobs = config.jobs.iter().enumerate();
    let mut rows = places.clone().map(|p| p.map(checkpoint::Place::row));
    let reader = if located.jobs.is_empty() {
        None
    } else {
        Some(located.reader()?)
    };
    let mut decide = |record: Option<Record>| -> anyhow::Result<()> {
        let (Some((index, job)), Some(row)) = (jobs.next(), rows.next()) else {
            return Ok(());
        };
        let Some(mut record) = record else {
            last.push(None);
            plan.push(Planned {
                index,
                start: Start::Submit(SubmitReason::New),
                from: None,
                after: None,
                parent_task: None,
                parent_account: None,
            });
            return Ok(());
        };
        let objects = take_bucket_videos(&mut record, config.bucket.videos.as_ref());
        let mut checked = confinement.check(&mut record);
        if let Some((video_paths, superseded_paths, gone)) = objects {
            if gone {
                bucket_gone.push(record.job_id.clone());
                checked = true;
            }
            record.video_paths.extend(video_paths);
            record.superseded_paths.extend(superseded_paths);
        }
        let wants = Wants {
            upgrade: job.upgrade.is_some(),
            keep_original: job.keep_original,
        };
        let action = next_action(&job.fingerprint, wants, Some(&record), config.resume);
        let start = match action {
            Action::Nothing(Settled::Succeeded | Settled::Failed | Settled::InDoubt) => None,
            Action::Submit(reason) => {
                if reason == SubmitReason::Changed {
                    changed += 1;
                }
                Some(Start::Submit(reason))
            }
            Action::Poll { task_id } => Some(Start::Poll(task_id)),
            Action::Upgrade { task_id } => Some(Start::Upgrade(task_id)),
            Action::Download => Some(Start::Download),
        };
        let held = start.is_some()
            || keep_all
            || checked
            || super::pace::sent_at(&record).is_some_and(|at| at >= recent.as_str());
        if !held {
            // Settled, and left in the file as it is: read back at the end.
            let (offset, len) = row.unwrap_or_default();
            let standing = crate::summary::standing_of(JobRef::from(job), Some(&record));
            last.push(Some(LastRow::Kept {
                offset,
                len,
                bucket: crate::progress::bucket(Some(&record), config.resume.download),
                credits: record.credits,
                succeeded: standing == Standing::Succeeded,
            }));
            return Ok(());
        }
        let at = records.len();
        records.push(record);
        last.push(Some(LastRow::Loaded(at)));
        // Every job with a record starts from it: a job submitted again keeps its
        // attempts, its credits and its superseded tasks (see `resumed_record`).
        if let Some(start) = start {
            plan.push(Planned {
                index,
                start,
                from: Some(at),
                after: None,
                parent_task: None,
                parent_account: None,
            });
        }
        Ok(())
    };
    match &reader {
        Some(reader) => reader.each_owned(places, &mut decide)?,
        None => places.map(|_| None).try_for_each(&mut decide)?,
    }
    // Jobs no longer in the manifest are checked as the others are (their warnings
    // said), and their rows copied as they are.
    let mut foreign_rows = Vec::with_capacity(foreign.len());
    if let Some(reader) = &reader {
        let places = foreign.iter().map(|&at| located.jobs.get(at));
        let mut rows = foreign
            .iter()
            .map(|&at| located.jobs.get(at).map(|p| p.row()));
        reader.each_owned(places, |record| -> anyhow::Result<()> {
            if let (Some(mut record), Some(Some((offset, len)))) = (record, rows.next()) {
                if let Some((_, _, true)) =
                    take_bucket_videos(&mut record, config.bucket.videos.as_ref())
                {
                    bucket_gone.push(record.job_id.clone());
                }
                confinement.check(&mut record);
                // Not a job of this run: neither counted nor shown in progress.
                foreign_rows.push(LastRow::Kept {
                    offset,
                    len,
                    bucket: crate::progress::Bucket::Done,
                    credits: record.credits,
                    succeeded: false,
                });
            }
            Ok(())
        })?;
    }
    warnings.extend(bucket_warning(&bucket_gone));
    warnings.extend(confinement.warnings(&config.results));

    // Extend jobs follow their parents: sent with the parent's task once it is made,
    // blocked when it failed.
    let mut blocked = Vec::new();
    if config.jobs.iter().any(|j| j.extend.is_some()) {
        let last_at: Vec<Option<usize>> = last
            .iter()
            .map(|l| match l {
                Some(LastRow::Loaded(at)) => Some(*at),
                _ => None,
            })
            .collect();
        let (rows, again) = chain::plan_chains(&config, &records, &last_at, &mut plan);
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
            let last = p.from.and_then(|at| records.get(at))?;
            Some(Superseding {
                index: p.index,
                task: superseded_task(last)?,
                state: last.state(),
                reason,
            })
        })
        .collect();
    Ok(Prepared {
        held_back,
        superseding,
        recorded_spend,
        blocked,
        config,
        plan,
        changed,
        warnings,
        records,
        last,
        foreign: foreign_rows,
        lock,
    })
}

/// The bucket objects of a record's `video_paths` and `superseded_paths` that stay
/// on it, and whether a video was dropped.
type BucketVideos = (Vec<String>, Vec<String>, bool);

/// The bucket objects recorded in `r`'s `video_paths` and `superseded_paths`, taken
/// off the record so that the local checks leave them alone (`None`: it has none).
/// An object outside the run's videos prefix, or a done job's video no longer in
/// the bucket, is dropped instead: the job's video is downloaded again, never
/// generated again.
fn take_bucket_videos(
    r: &mut Record,
    target: Option<&crate::store::run::VideosTarget>,
) -> Option<BucketVideos> {
    if !r
        .video_paths
        .iter()
        .chain(&r.superseded_paths)
        .any(|p| crate::paths::is_bucket_url(p))
    {
        return None;
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
    let old = old
        .into_iter()
        .filter(|url| target.is_some_and(|t| t.holds(url)))
        .collect();
    Some((objects, old, !gone.is_empty()))
}

/// The one warning that names the jobs whose bucket video was dropped.
fn bucket_warning(dropped: &[String]) -> Option<String> {
    (!dropped.is_empty()).then(|| {
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
    })
}
