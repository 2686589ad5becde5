//! `veo-batch run`: takes every job of a manifest to a terminal state with bounded
//! concurrency, a rate limit and retries, recording each step in the results CSV so
//! that running the same command again after any interruption resumes exactly.
//!
//! One dispatcher ([`dispatch`]) owns the run's state and hears one kind of event
//! from the jobs; one task (the collector) owns the results file. Jobs share only
//! the client, the limits and the stop tokens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Client, KeyRing};
pub use crate::checkpoint::ForeignResults;
use crate::checkpoint::writer::Appender;
use crate::exit::Exit;
use crate::manifest::Job;
use crate::summary::Outcomes;

/// The runtime a run is driven on: one thread. A run's work is waiting on the
/// network; on one thread its tasks hand nothing between threads, a cost that
/// docs/performance.md measures. Nothing on
/// it waits on the disk: results rows are written and synced by the collector's own
/// thread, and downloads are written on the blocking pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub mod accounts;
mod budget;
mod chain;
pub mod collector;
mod dispatch;
pub mod job;
pub mod pace;
mod planned;
pub mod polls;
mod pooled;
mod prepare;
pub mod schedule;
mod shared;
pub mod spend;
pub mod stop;
mod supersede;
pub mod uploads;

use budget::Budget;
use collector::{CallCounts, Collected, Progress};
use dispatch::{Dispatched, Dispatcher};
pub use job::Start;
pub use planned::Planned;
pub use pooled::NO_KEY_CAN_SEND;
pub use prepare::{Prepared, Superseding, prepare, prepare_from};
use shared::{JobSettings, Shared};
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
    /// Credits the results file recorded as spent before this run, less what the
    /// records of earlier runs' tasks that failed this run gave back.
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

/// Runs a prepared plan with `client`'s one key.
pub async fn execute(
    prepared: Prepared,
    client: Client,
    signals: Signals,
) -> anyhow::Result<RunReport> {
    let ring = KeyRing::of_key(client.pool_key());
    execute_pooled(prepared, client, &ring, signals).await
}

/// Runs a prepared plan over the keys of `ring`, every one calling through
/// `client`'s connections (uploads go with `client`'s own key).
pub async fn execute_pooled(
    prepared: Prepared,
    client: Client,
    ring: &KeyRing,
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
    // A videos folder that cannot be made or written (a file in the way, a read-only
    // mount, a full disk) is found now, before anything is paid for.
    if config.resume.download && !plan.is_empty() {
        std::fs::create_dir_all(&config.videos_dir).with_context(|| {
            format!(
                "failed to create the videos folder `{}`",
                config.videos_dir.display()
            )
        })?;
        probe_writable(&config.videos_dir)?;
    }
    // Said before anything is sent: these tasks were paid for, and a new one
    // replaces each.
    for line in supersede::lines(&superseding, &config.jobs) {
        tracing::warn!("{line}");
    }
    // Before the results file is opened: a file in the uploads' place that is not
    // ours ends the run with nothing sent.
    let (uploads, upload_warnings) = uploads::Uploads::load(
        &config.results,
        client.upload_base_url().as_str(),
        config.upload_ttl,
        config.concurrency,
        plan.iter().any(|p| {
            config
                .jobs
                .get(p.index)
                .is_some_and(|j| !j.local_images.is_empty())
        }),
    )?;
    for w in &upload_warnings {
        tracing::warn!("{w}");
    }
    let appender = Appender::open(&config.results, config.sync)
        .with_context(|| format!("failed to open results file `{}`", config.results.display()))?;
    let pooled = pooled::Pooled::new(&client, ring, config.rate)?;
    // Shared with the collector, which keeps each untouched job's record as its
    // place in this list; a job copies its own when it starts.
    let loaded_records = Arc::new(loaded_records);
    pooled.remember(&loaded_records);
    let accounts = pooled.accounts().len();
    let (rows, rows_in) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collector::collect(
        rows_in,
        appender,
        loaded_records.clone(),
        last,
        Progress {
            mode: config.progress,
            total: config.jobs.len(),
            download: config.resume.download,
            rate_per_second: config.rate.per_second() * accounts as f64,
        },
        config.bucket.log.clone(),
    ));

    let stop = Stop::new(&signals.drain);
    let (events, inbox) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        client,
        settings: JobSettings {
            retry: config.retry,
            poll_interval: config.poll_interval,
            task_timeout: config.task_timeout,
            record_null_grace: config.record_null_grace,
            videos_dir: config.videos_dir.clone(),
            results_dir: crate::paths::absolute(crate::paths::folder_of(&config.results)),
            results_file: config.results.clone(),
            download: config.resume.download,
            no_wait: config.no_wait,
            videos_bucket: config.bucket.videos.clone(),
            results_in_bucket: config.bucket.log.is_some(),
        },
        permits: Semaphore::new(config.concurrency.max(1)),
        polls: polls::Polls::of_accounts(
            accounts,
            config.poll_rate,
            schedule::Limits {
                min: config.poll_min,
                cap: config.poll_interval,
            },
            config.concurrency,
            config.learn_schedule,
        ),
        pooled,
        place_left: tokio::sync::Notify::new(),
        submit_turn: tokio::sync::Mutex::new(()),
        events,
        stop: stop.tokens().clone(),
        spend: spend::Spend::new(config.prices),
        uploads,
    });

    // The balance is read only when something may be billed: its fall over the
    // run is the measured spend.
    let measuring = !plan.is_empty();
    if measuring
        && let Some(balance) = shared.spend.start(&shared.pooled.account_clients()).await
        && balance < estimate
    {
        tracing::warn!(
            "the estimate ({} credits) is above the account's balance ({}): the run will stop when credits run out",
            crate::cost::Credits(estimate),
            crate::cost::Credits(balance)
        );
    }
    // With spend measured, the pool sends to the account with the most left.
    for (account, balance) in shared.spend.starts() {
        shared.pooled.pool().set_credits(&account, balance);
    }
    // The jobs move behind one `Arc` for the job tasks: a task holds the list and its
    // place in it, so no job is copied or allocated again.
    let mut config = config;
    let jobs: Arc<Vec<Job>> = Arc::new(std::mem::take(&mut config.jobs));
    let (queue, waiting) = Dispatcher::queue(plan);
    let dispatcher = Dispatcher {
        shared: shared.clone(),
        inbox,
        rows,
        collector,
        jobs: jobs.clone(),
        loaded: loaded_records.clone(),
        queue,
        waiting,
        submit_slots: Arc::new(Semaphore::new(config.concurrency.max(1) * 2)),
        max_active: config.max_active.max(1),
        seed: config.seed,
        budget: Budget {
            max: config.max_credits,
            max_setting: config.max_credits_setting,
            recorded: recorded_spend,
            max_run: config.max_run_credits,
            spent: 0.0,
        },
        stop,
        running: HashMap::new(),
        set: JoinSet::new(),
        counters: CallCounts::default(),
        drained: false,
        aborted: false,
    };
    for b in blocked {
        dispatcher.write_decided(b.index, &b.record);
    }
    let Dispatched {
        collected:
            Collected {
                entries,
                submitted: _,
                write_error,
            },
        counters,
        stopped,
        aborted,
    } = dispatcher.run(&signals).await?;
    // After a second Ctrl-C nothing more is asked of the service.
    let spend = if measuring && !aborted {
        shared.spend.finish(&shared.pooled.account_clients()).await
    } else {
        spend::SpendReport::default()
    };
    drop(shared);

    // One row per job, manifest order, then rows of jobs no longer in the manifest;
    // the outcomes are counted in the same pass over the last rows. After a stop
    // of any kind too: the report tells what the results file holds.
    let finished = collector::finish(
        &config.results,
        &jobs,
        &foreign,
        &entries,
        &loaded_records,
        write_error.is_none(),
        &spend.billed_failures,
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
    Ok(RunReport {
        outcomes: finished.outcomes,
        counters,
        changed,
        held_back,
        // What the file records beyond what it held before: reserved credits of a
        // send that never left are not in it.
        // A failed task of an earlier run given back this run comes off what the
        // earlier runs spent, so that this run's figure is its own submissions'.
        spent: finished.credits - (recorded_spend - spend.earlier_refunded),
        recorded_spend: recorded_spend - spend.earlier_refunded,
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

/// Writes and syncs a small nameless file in `dir`: a folder that takes no file (read
/// only, full) would otherwise be found only once videos paid for cannot be saved.
fn probe_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    // One block: a disk without room for it has none for a video either.
    const PROBE: [u8; 4096] = [0; 4096];
    // A file without a name (O_TMPFILE on Linux, elsewhere one unlinked as soon as
    // it is made): a run killed mid-probe leaves nothing in the videos folder.
    tempfile::tempfile_in(dir)
        .and_then(|mut f| f.write_all(&PROBE).and_then(|()| f.sync_all()))
        .with_context(|| {
            format!(
                "the videos folder `{}` cannot take a file, so no video could be saved; \
                 nothing was sent (make room, or choose another folder with --videos-dir)",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{self, Record, State};
    use collector::LastRow;
    use planned::{fresh_record, resumed_record};

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

    /// A resume holds in full only the records of the jobs it acts on: a settled
    /// job's row stays in the file at its place, and a run that appends rows copies
    /// it into the rewritten file byte for byte.
    #[test]
    fn a_resume_holds_only_the_records_it_acts_on() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.csv");
        std::fs::write(&manifest, "id,prompt\na,one\nb,two\nc,three\nd,four\n").unwrap();
        let jobs = crate::manifest::load(&manifest).unwrap().jobs;
        let results = dir.path().join("r.csv");
        let videos = dir.path().join("videos");
        std::fs::create_dir_all(&videos).unwrap();
        // Sent long ago, so that the generate pace keeps none of them either.
        let row = |job: &Job, state: State| Record {
            state: Some(state),
            task_id: Some(format!("t{}", job.id)),
            attempts: 1,
            submitted_at: Some("2026-01-01T00:00:00Z".into()),
            updated_at: "2026-01-01T00:00:00Z".into(),
            ..fresh_record(job)
        };
        let done = |job: &Job| {
            let path = videos.join(format!("{}.mp4", job.id));
            std::fs::write(&path, b"mp4").unwrap();
            Record {
                video_urls: vec![format!("https://x.example/{}.mp4", job.id)],
                video_paths: vec![format!("videos/{}.mp4", job.id)],
                ..row(job, State::Succeeded)
            }
        };
        let rows = vec![
            done(&jobs[0]),
            row(&jobs[1], State::Submitted),
            row(&jobs[2], State::Failed),
            done(&jobs[3]),
        ];
        checkpoint::writer::rewrite(&results, &rows).unwrap();
        let before = std::fs::read_to_string(&results).unwrap();
        let config = RunConfig::with_defaults(jobs.clone(), results.clone(), videos.clone());
        let prepared = prepare(config).unwrap();
        let held: Vec<&str> = prepared.records.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(held, ["b"], "only the job still running is held");
        assert!(matches!(prepared.last[1], Some(LastRow::Loaded(0))));
        for i in [0, 2, 3] {
            assert!(
                matches!(prepared.last[i], Some(LastRow::Kept { .. })),
                "{i}: {:?}",
                prepared.last[i]
            );
        }

        // A row appended for `b`; the rewrite copies the kept rows as they were.
        let mut b = prepared.records[0].clone();
        b.state = Some(State::Failed);
        let mut appender = checkpoint::writer::Appender::open(&results, false).unwrap();
        appender.append([&b]).unwrap();
        drop(appender);
        let offset = before.len() as u64;
        let len = std::fs::metadata(&results).unwrap().len() - offset;
        let mut entries = prepared.last.clone();
        entries[1] = Some(LastRow::Logged {
            offset,
            len: u32::try_from(len).unwrap(),
            bucket: crate::progress::Bucket::Failed,
        });
        let finished = collector::finish(
            &results,
            &prepared.config.jobs,
            &prepared.foreign,
            &entries,
            &prepared.records,
            true,
            &[],
        )
        .unwrap();
        assert_eq!(finished.outcomes.tally.succeeded, 2);
        assert_eq!(finished.outcomes.tally.failed, 2);
        let after = std::fs::read_to_string(&results).unwrap();
        let lines = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
        let (before, after) = (lines(&before), lines(&after));
        assert_eq!(after.len(), 5, "{after:?}");
        for i in [0, 1, 3, 4] {
            assert_eq!(after[i], before[i], "line {i} copied as it was");
        }
        assert_ne!(after[2], before[2], "b's new row");
    }
}
