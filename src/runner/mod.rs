//! `veo-batch run`: takes every job of a manifest to a terminal state with bounded
//! concurrency, a rate limit and retries, recording each step in the results CSV so
//! that running the same command again after any interruption resumes exactly.
//!
//! One task (the collector) owns the results file and the counters; job tasks send
//! it events. Jobs share only the client, the limits and the stop signals.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::Client;
pub use crate::checkpoint::ForeignResults;
use crate::checkpoint::writer::Appender;
use crate::checkpoint::{Record, State};
use crate::exit::Exit;
use crate::manifest::Job;
use crate::summary::Outcomes;

/// The runtime a run is driven on: one thread. A run's work is waiting on the
/// network; on one thread its tasks hand nothing between threads, which on two
/// threads cost about a fifth of the runner's CPU (docs/performance.md). Nothing on
/// it waits on the disk: results rows are written and synced by the collector's own
/// thread, and downloads are written on the blocking pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub mod accounts;
mod chain;
pub mod collector;
pub mod job;
pub mod pace;
mod planned;
pub mod polls;
mod prepare;
pub mod retry;
pub mod schedule;
mod shared;
pub mod spend;
pub mod stop;
mod supersede;
pub mod uploads;

use collector::{CallCounts, Collected, LastRow, Progress};
use job::JobHandle;
pub use job::Start;
use pace::Pace;
pub use planned::Planned;
use planned::{fresh_record, resumed_record};
pub use prepare::{Prepared, Superseding, prepare, prepare_from};
use shared::{Budget, JobSettings, Shared};
use stop::Stop;
pub use stop::StopReason;

pub use crate::config::RunConfig;

/// The stop signals from outside: the first Ctrl-C drains, the second aborts.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
}

/// What a run did, for the summary and the exit code.
#[derive(Debug)]
pub struct RunReport {
    pub outcomes: Outcomes,
    pub counters: CallCounts,
    /// Jobs this run submitted because the manifest changed their request.
    pub changed: usize,
    /// Outstanding jobs left out by `--limit` or `--sample`.
    pub held_back: usize,
    /// Credits this run's submissions cost, at the manifest's prices.
    pub spent: f64,
    /// Credits the results file recorded as spent before this run.
    pub recorded_spend: f64,
    /// Paid tasks this run replaced with new ones.
    pub superseded: usize,
    /// Why the run stopped before its end, if it did.
    pub stopped: Option<StopReason>,
    pub elapsed: Duration,
    pub results: PathBuf,
    pub videos_dir: PathBuf,
    pub warnings: Vec<String>,
    /// What the service billed, measured from the balance, beside the estimate.
    pub spend: spend::SpendReport,
}

impl RunReport {
    /// The code the run ends with: why it stopped, if something stopped it, else
    /// where its jobs stand.
    pub fn exit(&self) -> Exit {
        match &self.stopped {
            Some(StopReason::Interrupted) => Exit::Interrupted,
            Some(StopReason::Auth(_) | StopReason::Credits(_)) => Exit::ServiceStopped,
            Some(StopReason::Checkpoint(_)) => Exit::JobsFailed,
            Some(StopReason::Budget(_)) => Exit::Budget,
            None => Exit::of_tally(&self.outcomes.tally),
        }
    }
}

/// Runs every job of `config` to the end of what this run can do.
pub async fn run(config: RunConfig, client: Client, signals: Signals) -> anyhow::Result<RunReport> {
    execute(prepare(config)?, client, signals).await
}

/// Runs a prepared plan.
pub async fn execute(
    prepared: Prepared,
    client: Client,
    signals: Signals,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let estimate = prepared.estimate().total();
    let Prepared {
        config,
        plan,
        changed,
        held_back,
        warnings,
        superseding,
        recorded_spend,
        blocked,
        records: loaded_records,
        last,
        foreign,
        lock: _lock,
    } = prepared;
    // Said before anything is sent: these tasks were paid for, and a new one
    // replaces each.
    for line in supersede::lines(&superseding, &config.jobs) {
        tracing::warn!("{line}");
    }
    // A videos folder that cannot be made is found now, before anything is paid for.
    if config.resume.download && !plan.is_empty() {
        std::fs::create_dir_all(&config.videos_dir).with_context(|| {
            format!(
                "failed to create the videos folder `{}`",
                config.videos_dir.display()
            )
        })?;
    }
    let appender = Appender::open(&config.results, config.sync)
        .with_context(|| format!("failed to open results file `{}`", config.results.display()))?;
    let mut pace = Pace::new(config.rate);
    // Shared with the collector, which keeps each untouched job's record as its
    // place in this list; a job copies its own when it starts.
    let loaded_records = Arc::new(loaded_records);
    pace.remember(loaded_records.iter());
    let (tx, rx) = mpsc::channel(4096);
    let collector = tokio::spawn(collector::collect(
        rx,
        appender,
        loaded_records.clone(),
        last.into_iter().map(|at| at.map(LastRow::Loaded)).collect(),
        Progress {
            mode: config.progress,
            total: config.jobs.len(),
            download: config.resume.download,
            rate_per_second: config.rate.per_second(),
        },
    ));

    let spent = Arc::new(Mutex::new(0.0));
    let (uploads, upload_warnings) = uploads::Uploads::load(
        &config.results,
        client.upload_base_url().as_str(),
        config.upload_ttl,
        config.concurrency,
    );
    for w in &upload_warnings {
        tracing::warn!("{w}");
    }
    let shared = Arc::new(Shared {
        client,
        settings: JobSettings {
            retry: config.retry,
            poll_interval: config.poll_interval,
            task_timeout: config.task_timeout,
            record_null_grace: config.record_null_grace,
            videos_dir: config.videos_dir.clone(),
            results_dir: crate::paths::absolute(
                config
                    .results
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new(".")),
            ),
            download: config.resume.download,
            no_wait: config.no_wait,
        },
        permits: Semaphore::new(config.concurrency.max(1)),
        polls: polls::Polls::new(
            config.poll_rate,
            schedule::Limits {
                min: config.poll_min,
                cap: config.poll_interval,
            },
            config.concurrency,
            config.learn_schedule,
        ),
        pace: Mutex::new(pace),
        place_left: tokio::sync::Notify::new(),
        submit_turn: tokio::sync::Mutex::new(()),
        pause_until: Mutex::new(None),
        events: tx,
        stop: Stop::new(&signals.drain),
        spend: spend::Spend::new(config.prices),
        budget: Budget {
            prices: config.prices,
            max: config.max_credits,
            max_setting: config.max_credits_setting,
            recorded: recorded_spend,
            max_run: config.max_run_credits,
            spent: spent.clone(),
        },
        uploads,
    });

    // The jobs move behind one `Arc` for the job tasks: a task holds the list and its
    // place in it, so no job is copied or allocated again.
    // The balance is read only when something may be billed: its fall over the
    // run is the measured spend.
    let measuring = !plan.is_empty();
    if measuring
        && let Some(balance) = shared.spend.start(&shared.client).await
        && balance < estimate
    {
        tracing::warn!(
            "the estimate ({} credits) is above the account's balance ({}): the run will stop when credits run out",
            crate::cost::Credits(estimate),
            crate::cost::Credits(balance)
        );
    }
    let mut config = config;
    let jobs: Arc<Vec<Job>> = Arc::new(std::mem::take(&mut config.jobs));
    // Jobs that have yet to submit are started only as submission slots free up,
    // so that thousands of them do not wait at once on the limiter: memory and
    // wake-ups then follow the jobs the service is working on, not the manifest.
    let submit_slots = Arc::new(Semaphore::new(config.concurrency.max(1) * 2));
    let mut set = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
    // Extend jobs that wait for their parent's video, by the parent's place.
    let mut waiting: HashMap<usize, Vec<Planned>> = HashMap::new();
    // The plan's own buffer becomes the queue (no second copy of every planned job
    // at the peak); only the waiting extends move out of it.
    let mut plan = plan;
    for child in plan.extract_if(.., |p| p.after.is_some()) {
        if let Some(parent) = child.after {
            waiting.entry(parent).or_default().push(child);
        }
    }
    let mut queue = VecDeque::from(plan);
    for b in blocked {
        write_blocked(&shared, b.index, &b.record).await;
    }
    let mut aborted = false;
    loop {
        while set.len() < config.max_active.max(1) {
            let Some(next) = queue.front() else {
                break;
            };
            let slot = match next.start {
                Start::Submit(_) => match submit_slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => break,
                },
                _ => None,
            };
            let Some(Planned {
                index,
                start,
                from,
                after: _,
                parent_task,
            }) = queue.pop_front()
            else {
                break;
            };
            // Once submissions stop, jobs that would submit are not started; jobs
            // with a task go on being polled unless everything stops.
            let stopped = match start {
                Start::Submit(_) => shared.stop.submitting().is_cancelled(),
                _ => shared.stop.waiting().is_cancelled(),
            };
            if stopped {
                continue;
            }
            let seed = config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let Some(job) = JobHandle::new(jobs.clone(), index) else {
                continue;
            };
            let mut record = match from.and_then(|i| loaded_records.get(i)) {
                Some(last) => resumed_record(last, &start, &job),
                None => fresh_record(&job),
            };
            if let (Start::Submit(_), Some(task)) = (&start, parent_task) {
                record.parent_task_id = Some(task);
            }
            let handle = set.spawn(job::drive(shared.clone(), job, record, start, seed, slot));
            running.insert(handle.id(), index);
        }
        let waiting_for_slot = set.len() < config.max_active.max(1)
            && queue
                .front()
                .is_some_and(|p| matches!(p.start, Start::Submit(_)));
        if set.is_empty() && !waiting_for_slot {
            break;
        }
        let joined = tokio::select! {
            biased;
            () = signals.abort.cancelled() => {
                aborted = true;
                break;
            }
            slot = submit_slots.clone().acquire_owned(), if waiting_for_slot => {
                // A slot is free: start the next job at the top of the loop.
                drop(slot);
                continue;
            }
            joined = set.join_next_with_id(), if !set.is_empty() => joined,
        };
        match joined {
            Some(Ok((id, ended))) => {
                if let Some(index) = running.remove(&id)
                    && let Some(children) = waiting.remove(&index)
                {
                    follow(
                        &shared,
                        &jobs,
                        &loaded_records,
                        index,
                        &ended,
                        children,
                        &mut queue,
                        &mut waiting,
                    )
                    .await;
                }
            }
            Some(Err(e)) => {
                // Its children stay waiting: not started in this run.
                let job = running
                    .remove(&e.id())
                    .map(|i| jobs[i].id.clone())
                    .unwrap_or_default();
                tracing::error!(job = %job, "job task failed: {e}; its last recorded step stands and the next run resumes it");
            }
            None => {}
        }
    }
    if aborted {
        set.abort_all();
        return Ok(RunReport {
            outcomes: Outcomes::default(),
            counters: CallCounts::default(),
            changed,
            held_back,
            spent: 0.0,
            recorded_spend,
            superseded: superseding.len(),
            stopped: Some(StopReason::Interrupted),
            elapsed: started.elapsed(),
            results: config.results,
            videos_dir: config.videos_dir,
            warnings,
            spend: spend::SpendReport::default(),
        });
    }
    if signals.drain.is_cancelled() {
        shared.stop.stop(StopReason::Interrupted);
    }
    let spend = if measuring {
        shared.spend.finish(&shared.client).await
    } else {
        spend::SpendReport::default()
    };
    let stopped = shared.stop.reason();
    drop(shared);
    let Collected {
        entries,
        counters,
        write_error,
    } = collector.await.context("the results writer failed")?;

    // One row per job, manifest order, then rows of jobs no longer in the manifest;
    // the outcomes are counted in the same pass over the last rows.
    let outcomes = collector::finish(
        &config.results,
        &jobs,
        &foreign,
        &entries,
        &loaded_records,
        write_error.is_none(),
    )
    .with_context(|| {
        let what = if write_error.is_none() {
            "rewrite"
        } else {
            "read back"
        };
        format!(
            "failed to {what} results file `{}`",
            config.results.display()
        )
    })?;
    drop(entries);
    let spent = shared_spent(&spent);
    Ok(RunReport {
        outcomes,
        counters,
        changed,
        held_back,
        spent,
        recorded_spend,
        superseded: superseding.len(),
        // The stronger reason, as `Stop` keeps it.
        stopped: stopped.max(write_error.map(StopReason::Checkpoint)),
        elapsed: started.elapsed(),
        results: config.results,
        videos_dir: config.videos_dir,
        warnings,
        spend,
    })
}

/// The children of the job at `index`, which just ended as `ended`: sent (first in
/// the queue) with its task when its video is made; blocked, with their own
/// children, when it failed; otherwise left waiting, not started in this run.
#[expect(clippy::too_many_arguments, reason = "the run loop's own state, lent")]
async fn follow(
    shared: &Shared,
    jobs: &[Job],
    loaded: &[Record],
    index: usize,
    ended: &job::Ended,
    children: Vec<Planned>,
    queue: &mut VecDeque<Planned>,
    waiting: &mut HashMap<usize, Vec<Planned>>,
) {
    if let Some(task) = &ended.made {
        for mut child in children.into_iter().rev() {
            child.parent_task = Some(task.clone());
            queue.push_front(child);
        }
        return;
    }
    let Some(why) = &ended.failed else {
        waiting.insert(index, children);
        return;
    };
    let mut stack: Vec<(Planned, String)> = children
        .into_iter()
        .map(|c| {
            (
                c,
                format!("the job it extends, {:?}, failed: {why}", jobs[index].id),
            )
        })
        .collect();
    while let Some((child, reason)) = stack.pop() {
        let Some(job) = jobs.get(child.index) else {
            continue;
        };
        let last = child.from.and_then(|i| loaded.get(i));
        let record = chain::blocked_record(last, job, reason.clone());
        write_blocked(shared, child.index, &record).await;
        for grandchild in waiting.remove(&child.index).unwrap_or_default() {
            let why = format!("the job it extends, {:?}, is blocked: {reason}", job.id);
            stack.push((grandchild, why));
        }
    }
}

/// Writes the row of an extend job the plan of its chain decided (blocked by its
/// parent, or pending again behind it). Nothing is sent on it, so it is not waited
/// for: a kill before it is on disk leaves the row before it, which the next run
/// decides again the same way.
async fn write_blocked(shared: &Shared, index: usize, record: &Record) {
    if record.state() == State::Blocked {
        tracing::warn!(
            "job {:?}: blocked: {}",
            record.job_id,
            record.error_message.as_deref().unwrap_or_default()
        );
    }
    match collector::Row::new(index, record, shared.settings.download) {
        Ok(row) => {
            let _ = shared
                .events
                .send(collector::Event::Row { row, ack: None })
                .await;
        }
        Err(e) => tracing::error!("failed to encode a results row: {e}"),
    }
}

fn shared_spent(spent: &Mutex<f64>) -> f64 {
    spent.lock().map(|s| *s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint;

    /// Each planned job starts from its own last record, whether the results file
    /// lists the jobs in manifest order (found by place) or not (found by id).
    #[test]
    fn each_job_starts_from_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id,prompt\na,one\nb,two\nc,three\n").unwrap();
        let jobs = crate::manifest::load(&manifest).unwrap().jobs;
        let results = dir.path().join("r.csv");
        let last = |job: &Job, state: State, task: Option<&str>| Record {
            state: Some(state),
            task_id: task.map(str::to_owned),
            attempts: 1,
            updated_at: "2026-01-01T00:00:00Z".into(),
            ..fresh_record(job)
        };
        let a = last(&jobs[0], State::Submitted, Some("ta"));
        let b = last(&jobs[1], State::Pending, None);
        let c = last(&jobs[2], State::Submitted, Some("tc"));
        let gone = Record {
            job_id: "gone".into(),
            ..last(&jobs[0], State::Failed, None)
        };
        for (rows, in_order) in [
            (vec![a.clone(), b.clone(), c.clone()], true),
            (vec![c.clone(), gone.clone(), a.clone(), b.clone()], false),
        ] {
            checkpoint::writer::rewrite(&results, &rows).unwrap();
            let config =
                RunConfig::with_defaults(jobs.clone(), results.clone(), dir.path().join("videos"));
            let prepared = prepare(config).unwrap();
            let starts: Vec<(&str, String, Option<&str>)> = prepared
                .plan
                .iter()
                .map(|p| {
                    let record = prepared.record(p).map(|r| r.job_id.as_str());
                    (
                        prepared.job(p).id.as_str(),
                        format!("{:?}", p.start),
                        record,
                    )
                })
                .collect();
            assert_eq!(
                starts,
                [
                    ("a", r#"Poll("ta")"#.to_owned(), Some("a")),
                    ("b", "Submit(New)".to_owned(), Some("b")),
                    ("c", r#"Poll("tc")"#.to_owned(), Some("c")),
                ],
                "in order: {in_order}"
            );
            assert_eq!(prepared.foreign.len(), usize::from(!in_order));
            let b_start = resumed_record(
                prepared.record(&prepared.plan[1]).unwrap(),
                &Start::Submit(crate::checkpoint::plan::SubmitReason::New),
                &jobs[1],
            );
            assert_eq!(b_start, b);
        }
    }
}
