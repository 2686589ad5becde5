//! One job's way through the service: submit, poll, download. Every step is
//! recorded (and synced) before the next one is taken, so that a kill at any point
//! leaves a row that says exactly what may have happened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, SemaphorePermit, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

mod files;
mod poll;
mod submit;

use super::collector::Row;
use super::dispatch::JobEvent;
use super::pace::Reservation;
use super::polls;
use super::shared::Shared;
use super::stop::StopReason;
use crate::api::{ApiError, ErrorClass, TaskState, Upgrade4k, Upgrade1080};
use crate::checkpoint::{
    DOWNLOAD_FAILED, ErrorKind, Record, State, UPGRADE_FAILED, UPGRADE_NOT_MADE, now,
};
use crate::cost::Credits;
use crate::manifest::{Job, Upgrade};
use crate::paths::{superseded_path, upgrade_suffix, video_path};

/// One job of the run: the run's job list and the job's place in it, so that a
/// task and its rows hold a pointer to the job, not a copy of it.
#[derive(Debug, Clone)]
pub struct JobHandle {
    jobs: Arc<Vec<Job>>,
    index: usize,
}

impl JobHandle {
    /// The job at `index` of `jobs`; `None` past the end.
    pub fn new(jobs: Arc<Vec<Job>>, index: usize) -> Option<JobHandle> {
        (index < jobs.len()).then_some(JobHandle { jobs, index })
    }

    /// The job's place in the run's job list (the manifest's order).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl std::ops::Deref for JobHandle {
    type Target = Job;

    fn deref(&self) -> &Job {
        // `new` checked the index, and the list never changes.
        &self.jobs[self.index]
    }
}

/// How a job's part in this run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Succeeded,
    Failed,
    InDoubt,
    /// Submitted and not finished (timeout, `--no-wait`, a stop while waiting).
    Unfinished,
    /// Never sent in this run (stopped before its turn).
    NotStarted,
    /// The run stopped (fatal error or the checkpoint could not be written).
    Stopped,
}

/// What a job's part in this run left behind, for the jobs that extend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub end: JobEnd,
    /// The task whose video is made (it succeeded), when it is.
    pub made: Option<String>,
    /// Why the job failed, when its last record says it did.
    pub failed: Option<String>,
}

/// Where a job starts in this run.
#[derive(Debug, Clone)]
pub enum Start {
    /// Send the generate request, for this reason.
    Submit(crate::checkpoint::plan::SubmitReason),
    Poll(String),
    /// The task succeeded; get its 1080p or 4K file.
    Upgrade(String),
    Download,
}

/// Drives one job from `start` to the end of its part in this run.
pub async fn drive(
    shared: Arc<Shared>,
    job: JobHandle,
    record: Record,
    start: Start,
    seed: u64,
    submit_slot: Option<OwnedSemaphorePermit>,
) -> Ended {
    // Every event of the job carries its id, from this one span. At error level so
    // that it is on whenever any event is (`-q` keeps warnings).
    let span = tracing::error_span!("job", job = %job.id.escape_debug());
    let mut runner = JobRunner {
        shared,
        job,
        record,
        rng: fastrand::Rng::with_seed(seed),
        upgrade_reserved: None,
        before_task: None,
    };
    let outcome = async {
        let (task_id, submitted) = match start {
            Start::Submit(_) => {
                runner.set_aside_superseded_videos().await;
                let submitted = runner.submit().await;
                // The submission phase is over: let the next job start its own.
                drop(submit_slot);
                (submitted?, Some(Instant::now()))
            }
            Start::Poll(task_id) => (task_id, None),
            Start::Upgrade(task_id) => {
                runner.upgrade(&task_id).await?;
                return Ok(runner.download().await);
            }
            Start::Download => return Ok(runner.download().await),
        };
        runner.poll(&task_id, submitted).await?;
        if runner.job.upgrade.is_some() {
            runner.upgrade(&task_id).await?;
        }
        Ok(runner.download().await)
    };
    let end = outcome.instrument(span).await.unwrap_or_else(|end| end);
    let r = &runner.record;
    Ended {
        end,
        made: (r.state() == State::Succeeded)
            .then(|| r.task_id.clone())
            .flatten(),
        failed: (r.state() == State::Failed).then(|| crate::summary::reason(r)),
    }
}

struct JobRunner {
    shared: Arc<Shared>,
    job: JobHandle,
    record: Record,
    rng: fastrand::Rng,
    /// The upgrade's price as this run reserved it: settled against the price
    /// its kind has once the upgrade is made (learned meanwhile, perhaps).
    upgrade_reserved: Option<crate::runner::spend::Price>,
    /// The record's `credits` before this run sent the job's task: what a task the
    /// service reports failed leaves it at (see [`spend::failed_task_cost`]).
    ///
    /// [`spend::failed_task_cost`]: crate::runner::spend::failed_task_cost
    before_task: Option<f64>,
}

impl JobRunner {
    /// Appends the current record and waits until it is on disk.
    async fn save(&mut self, state: State) -> Result<(), JobEnd> {
        self.record.state = Some(state);
        self.record.updated_at = now();
        // The one event that names the job itself: log pipelines read state changes
        // by their fields alone.
        tracing::debug!(
            job = %self.job.id.escape_debug(),
            state = state.as_str(),
            task = self.record.task_id.as_deref().unwrap_or(""),
            attempt = self.record.attempts,
            code = self.record.error_code,
            "state change"
        );
        let row = Row::new(
            self.job.index(),
            &self.record,
            self.shared.settings.download,
        )
        .map_err(|e| {
            let msg = format!("failed to encode a results row: {e}");
            self.shared.halt(StopReason::Checkpoint(msg));
            JobEnd::Stopped
        })?;
        let (tx, rx) = oneshot::channel();
        let event = JobEvent::Row { row, ack: Some(tx) };
        let written = match self.shared.events.send(event) {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err("the results writer stopped".into())),
            Err(_) => Err("the results writer stopped".into()),
        };
        written.map_err(|e| {
            self.shared.halt(StopReason::Checkpoint(e));
            JobEnd::Stopped
        })
    }

    fn set_error(&mut self, e: &ApiError, kind: ErrorKind) {
        self.record.set_failure(kind, e.code, e.message.clone());
    }

    /// Counts a retry of `request` and says why at debug level (`-v`): the
    /// service's status code or the transport failure, as the error tells it.
    fn retry_event(&self, request: &str, e: &crate::api::ApiError) {
        tracing::debug!(
            request,
            code = e.code,
            class = e.class.as_str(),
            "retrying {request}: {e}"
        );
        self.count_retry(e.code);
    }

    /// Counts a retry whose reason the caller says itself.
    fn count_retry(&self, code: Option<i64>) {
        let _ = self.shared.events.send(JobEvent::Retry { code });
    }

    async fn sleep_or_stop(&self, d: Duration) -> Result<(), JobEnd> {
        tokio::select! {
            biased;
            () = self.shared.stop.waiting().cancelled() => Err(JobEnd::Unfinished),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    fn since_submission(&self) -> Option<Duration> {
        let at = self.record.submitted_at.as_deref()?;
        let at = humantime::parse_rfc3339(at).ok()?;
        SystemTime::now().duration_since(at).ok()
    }
}

/// Waits for a request slot; `None` when waiting stops meanwhile.
async fn slot(shared: &Shared) -> Option<SemaphorePermit<'_>> {
    tokio::select! {
        biased;
        () = shared.stop.waiting().cancelled() => None,
        p = shared.permits.acquire() => p.ok(),
    }
}
