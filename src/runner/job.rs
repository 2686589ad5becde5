//! One job's way through the service: submit, poll, download. Every step is
//! recorded (and synced) before the next one is taken, so that a kill at any point
//! leaves a row that says exactly what may have happened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, SemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use super::collector::{Event, Row};
use super::pace::{Pace, Reservation};
use super::polls::{self, Polls};
use super::retry::RetryPolicy;
use super::stop::{Stop, StopReason};
use crate::api::{ApiError, Client, ErrorClass, TaskState, Upgrade4k, Upgrade1080};
use crate::checkpoint::{DOWNLOAD_FAILED, Record, State, UPGRADE_FAILED, now};
use crate::cost::{Credits, PriceTable};
use crate::manifest::{Job, Upgrade};
use crate::paths::{superseded_path, upgrade_suffix, video_path};

/// Settings every job reads.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub task_timeout: Duration,
    /// How long a 422 "record ..." answer still means "not yet": after submission on
    /// record-info, after the first such answer on the upgrade endpoints.
    pub record_null_grace: Duration,
    pub videos_dir: PathBuf,
    /// The results file's folder, absolute: recorded paths are relative to it.
    pub results_dir: PathBuf,
    pub download: bool,
    pub no_wait: bool,
}

/// The run's spending limits and what it has spent.
pub struct Budget {
    pub prices: PriceTable,
    /// The batch's limit (`max_credits`), against `recorded` plus this run's spend.
    pub max: Option<f64>,
    /// Credits the results file records as spent by earlier runs.
    pub recorded: f64,
    /// This run's own limit (`--max-run-credits`).
    pub max_run: Option<f64>,
    /// Credits of the submissions sent (reserved before each send, given back when
    /// the service refused it without creating a task).
    pub spent: Arc<Mutex<f64>>,
}

impl Budget {
    /// Reserves `cost`; the limit it would pass otherwise, said the way the stop
    /// message ends ("would take the batch past ...").
    fn reserve(&self, cost: f64) -> Result<(), String> {
        let Ok(mut spent) = self.spent.lock() else {
            return Err("the spending limit (its counter is lost)".into());
        };
        if let Some(max) = self.max
            && self.recorded + *spent + cost > max + 1e-9
        {
            return Err(format!(
                "the batch past --max-credits {} ({} credits spent on it so far, {} of them by earlier runs)",
                Credits(max),
                Credits(self.recorded + *spent),
                Credits(self.recorded)
            ));
        }
        if let Some(max) = self.max_run
            && *spent + cost > max + 1e-9
        {
            return Err(format!(
                "this run past --max-run-credits {} ({} credits spent by it)",
                Credits(max),
                Credits(*spent)
            ));
        }
        *spent += cost;
        Ok(())
    }

    fn release(&self, cost: f64) {
        if let Ok(mut spent) = self.spent.lock() {
            *spent -= cost;
        }
    }
}

/// What all jobs share: the client, the limits, and the stop signals.
pub struct Shared {
    pub client: Client,
    pub settings: JobSettings,
    pub permits: Semaphore,
    /// The pace and the schedule of the run's status checks.
    pub polls: Polls,
    /// The rate limit's record of recent sends.
    pub pace: Mutex<Pace>,
    /// A reserved place's send left (or was given up).
    pub place_left: Notify,
    /// Lets one submitter at a time reserve a place among the sends.
    pub submit_turn: tokio::sync::Mutex<()>,
    /// After a 429, no job submits before this instant.
    pub pause_until: Mutex<Option<Instant>>,
    pub events: mpsc::Sender<Event>,
    /// Why the run stops early, and the tokens that stop its jobs.
    pub stop: Stop,
    pub budget: Budget,
    /// Local images: their uploads, shared by every job that needs the same file.
    pub uploads: super::uploads::Uploads,
}

impl Shared {
    fn pause_submissions(&self, delay: Duration) {
        if let Ok(mut until) = self.pause_until.lock() {
            let candidate = Instant::now() + delay;
            if until.is_none_or(|u| u < candidate) {
                *until = Some(candidate);
            }
        }
    }

    fn pace(&self) -> Option<std::sync::MutexGuard<'_, Pace>> {
        self.pace.lock().ok()
    }

    /// Records that the send of `place` left now.
    fn sent(&self, place: u64) {
        if let Some(mut pace) = self.pace() {
            pace.sent(place, Instant::now());
        }
        self.place_left.notify_waiters();
    }

    fn paused_until(&self) -> Option<Instant> {
        self.pause_until.lock().ok().and_then(|u| *u)
    }
}

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
    let mut runner = JobRunner {
        shared,
        job,
        record,
        rng: fastrand::Rng::with_seed(seed),
    };
    let outcome = async {
        let (task_id, submitted) = match start {
            Start::Submit(_) => {
                runner.set_aside_superseded_videos();
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
    let end = outcome.await.unwrap_or_else(|end| end);
    let r = &runner.record;
    Ended {
        end,
        made: (r.state() == State::Succeeded)
            .then(|| r.task_id.clone())
            .flatten(),
        failed: (r.state() == State::Failed).then(|| crate::summary::reason(r)),
    }
}

/// A submission's reserved place among the sends, with its request slot. Given
/// up without a send (the run stops, the budget is spent, the row cannot be
/// written), the place counts as a send at that moment, so that the places after
/// it never wait for it and never leave too early.
struct Reserved<'a> {
    shared: &'a Shared,
    place: Reservation,
    permit: Option<SemaphorePermit<'a>>,
}

impl<'a> Reserved<'a> {
    /// The request leaves now: hands over the request slot, and the place, dropped
    /// here, records the send.
    fn leave(mut self) -> Option<SemaphorePermit<'a>> {
        self.permit.take()
    }
}

impl Drop for Reserved<'_> {
    /// Records the send (or the place given up) now.
    fn drop(&mut self) {
        self.shared.sent(self.place.number);
    }
}

/// Waits for the pause after a 429, a request slot and a place among the sends
/// (see [`Pace`]), then for the moment to start writing the row. One submitter
/// at a time reserves, so places follow the order jobs asked for them; a slot
/// awaited after the place would let sends bunch up and overfill the service's
/// window. The one submitter that waits for a place holds a request slot, so
/// polls and downloads keep the others.
async fn ready_to_submit(shared: &Shared) -> Option<Reserved<'_>> {
    let wait = async {
        let turn = shared.submit_turn.lock().await;
        while let Some(until) = shared.paused_until().filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
        let permit = shared.permits.acquire().await.ok()?;
        let reserved = loop {
            let left = shared.place_left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if let Some(place) = shared.pace().and_then(|mut p| p.reserve()) {
                break Reserved {
                    shared,
                    place,
                    permit: Some(permit),
                };
            }
            left.await;
        };
        drop(turn);
        loop {
            if let Some(at) = shared.pace().and_then(|p| p.sync_from(reserved.place.slot)) {
                tokio::time::sleep_until(at).await;
            }
            // A 429 may have come back meanwhile, to a request sent before this one.
            match shared.paused_until().filter(|u| *u > Instant::now()) {
                Some(until) => tokio::time::sleep_until(until).await,
                None => break,
            }
        }
        Some(reserved)
    };
    tokio::select! {
        biased;
        () = shared.stop.submitting().cancelled() => None,
        reserved = wait => reserved.filter(|_| !shared.stop.submitting().is_cancelled()),
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

struct JobRunner {
    shared: Arc<Shared>,
    job: JobHandle,
    record: Record,
    rng: fastrand::Rng,
}

impl JobRunner {
    /// Appends the current record and waits until it is on disk.
    async fn save(&mut self, state: State) -> Result<(), JobEnd> {
        self.record.state = Some(state);
        self.record.updated_at = now();
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
            self.shared.stop.stop(StopReason::Checkpoint(msg));
            JobEnd::Stopped
        })?;
        let (tx, rx) = oneshot::channel();
        let event = Event::Row { row, ack: Some(tx) };
        let written = match self.shared.events.send(event).await {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err("the results writer stopped".into())),
            Err(_) => Err("the results writer stopped".into()),
        };
        written.map_err(|e| {
            self.shared.stop.stop(StopReason::Checkpoint(e));
            JobEnd::Stopped
        })
    }

    fn set_error(&mut self, e: &ApiError) {
        self.record.error_code = e.code;
        self.record.error_message = Some(e.message.clone());
    }

    async fn retry_event(&self, code: Option<i64>) {
        tracing::debug!(job = %self.job.id.escape_debug(), code, "a request will be retried");
        let _ = self.shared.events.send(Event::Retry { code }).await;
    }

    async fn submit(&mut self) -> Result<String, JobEnd> {
        // An extend names the task of the video it continues, which its record
        // holds (set when its parent's video was made).
        let parent_task = self.record.parent_task_id.clone().unwrap_or_default();
        let mut body = self.job.body(&parent_task);
        let extend = self.job.extend.is_some();
        let mut delays = self.shared.settings.retry.nominal_delays();
        let mut uploaded_again = false;
        loop {
            let shared = self.shared.clone();
            // Local images get their URLs now, just before the send (and again
            // before each retry), not when the run starts.
            let mut lease = self.lease_images(&mut body).await?;
            let Some(reserved) = ready_to_submit(&shared).await else {
                return Err(JobEnd::NotStarted);
            };
            if lease.as_ref().is_some_and(|l| !l.fresh()) {
                // The wait outlived an upload: renew it, keeping the place.
                lease = self.lease_images(&mut body).await?;
            }
            // A job the table has no price for is never sent under a limit (the run
            // refuses to start), so 0 here counts only where nothing is capped.
            let cost = shared.budget.prices.job(&*self.job).unwrap_or(0.0);
            if let Err(past) = shared.budget.reserve(cost) {
                shared.stop.stop(StopReason::Budget(format!(
                    "job {:?} ({} credits) would take {past}",
                    self.job.id,
                    Credits(cost)
                )));
                return Err(JobEnd::NotStarted);
            }
            self.record.attempts += 1;
            self.record.credits += cost;
            self.record.task_id = None;
            let syncing = Instant::now();
            self.save(State::Submitting).await?;
            if let Some(mut pace) = shared.pace() {
                pace.synced(syncing.elapsed());
            }
            if let Some(slot) = reserved.place.slot {
                tokio::time::sleep_until(slot).await;
            }
            let permit = reserved.leave();
            let sent = if extend {
                self.shared.client.extend(&body).await
            } else {
                self.shared.client.generate(&body).await
            };
            drop(permit);
            let e = match sent {
                Ok(task_id) => {
                    self.record.task_id = Some(task_id.clone());
                    self.record.submitted_at = Some(now());
                    self.record.error_code = None;
                    self.record.error_message = None;
                    self.save(State::Submitted).await?;
                    tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, "submitted");
                    return Ok(task_id);
                }
                Err(e) => e,
            };
            self.set_error(&e);
            if let Some(lease) = lease.filter(|_| e.code == Some(451) && !uploaded_again) {
                // The service could not fetch an uploaded image (gone before its
                // time): no task was made; upload again and send once more.
                uploaded_again = true;
                shared.budget.release(cost);
                self.record.credits = (self.record.credits - cost).max(0.0);
                shared.uploads.forget(&lease).await;
                self.save(State::Pending).await?;
                tracing::info!(job = %self.job.id.escape_debug(), "the service could not fetch an uploaded image; uploading it again");
                continue;
            }
            if matches!(
                e.class,
                ErrorClass::Retryable | ErrorClass::Failed | ErrorClass::Auth | ErrorClass::Credits
            ) {
                // Refused: no task, no charge.
                shared.budget.release(cost);
                self.record.credits = (self.record.credits - cost).max(0.0);
            }
            match e.class {
                ErrorClass::InDoubt => {
                    tracing::warn!(job = %self.job.id.escape_debug(), code = e.code, error = %e.message, "in doubt: the request was sent and no answer came; it is not sent again");
                    self.save(State::InDoubt).await?;
                    return Err(JobEnd::InDoubt);
                }
                ErrorClass::Failed => {
                    tracing::warn!(job = %self.job.id.escape_debug(), code = e.code, error = %e.message, "failed");
                    self.record.finished_at = Some(now());
                    self.save(State::Failed).await?;
                    return Err(JobEnd::Failed);
                }
                ErrorClass::Auth => {
                    self.save(State::Pending).await?;
                    self.shared.stop.stop(StopReason::Auth(e.message.clone()));
                    return Err(JobEnd::Stopped);
                }
                ErrorClass::Credits => {
                    self.save(State::Pending).await?;
                    self.shared.stop.stop(StopReason::Credits(e.to_string()));
                    return Err(JobEnd::Stopped);
                }
                ErrorClass::Retryable => {
                    // Refused without creating a task: say so, so that a kill during
                    // the wait does not leave the job looking in doubt.
                    self.save(State::Pending).await?;
                    let Some(nominal) = delays.next() else {
                        tracing::warn!(job = %self.job.id.escape_debug(), code = e.code, error = %e.message, "failed: gave up after {} attempts", self.shared.settings.retry.max_attempts);
                        self.record.error_message = Some(format!(
                            "gave up after {} attempts: {}",
                            self.shared.settings.retry.max_attempts, e.message
                        ));
                        self.record.finished_at = Some(now());
                        self.save(State::Failed).await?;
                        return Err(JobEnd::Failed);
                    };
                    let delay = self.shared.settings.retry.delay(nominal, &e, &mut self.rng);
                    if e.code == Some(429) {
                        self.shared.pause_submissions(delay);
                    }
                    self.retry_event(e.code).await;
                    tracing::info!(job = %self.job.id.escape_debug(), attempt = self.record.attempts, code = e.code, delay_ms = delay.as_millis() as u64, "retrying submit: {}", e.message);
                    tokio::select! {
                        () = self.shared.stop.submitting().cancelled() => return Err(JobEnd::NotStarted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// URLs for the job's local images, put into `body`; `None` for a job without.
    /// A file that cannot be uploaded fails the job; a refused key stops the run.
    async fn lease_images(
        &mut self,
        body: &mut serde_json::Value,
    ) -> Result<Option<super::uploads::Lease>, JobEnd> {
        use super::uploads::NoLease;
        if self.job.local_images.is_empty() {
            return Ok(None);
        }
        let shared = self.shared.clone();
        match shared
            .uploads
            .lease(&shared, &self.job, &mut self.rng)
            .await
        {
            Ok(lease) => {
                for (index, url) in &lease.urls {
                    if let Some(slot) = body.get_mut("imageUrls").and_then(|u| u.get_mut(*index)) {
                        *slot = serde_json::Value::from(url.as_str());
                    }
                }
                Ok(Some(lease))
            }
            Err(NoLease::Stopped) => Err(JobEnd::NotStarted),
            Err(NoLease::Refused(r)) if r.auth => {
                shared.stop.stop(StopReason::Auth(r.message));
                Err(JobEnd::Stopped)
            }
            Err(NoLease::Refused(r)) => {
                tracing::warn!(job = %self.job.id.escape_debug(), code = r.code, error = %r.message, "failed");
                self.record.error_code = r.code;
                self.record.error_message = Some(r.message);
                self.record.finished_at = Some(now());
                self.save(State::Failed).await?;
                Err(JobEnd::Failed)
            }
        }
    }

    /// The URLs of the video to keep from a task that succeeded: for an extend, the
    /// stitched whole (`fullResultUrls`), never the new segment alone; `None` when
    /// there is none yet.
    fn kept_urls(
        &self,
        result_urls: Vec<String>,
        full_result_urls: Vec<String>,
    ) -> Option<Vec<String>> {
        let urls = if self.job.extend.is_some() {
            full_result_urls
        } else {
            result_urls
        };
        (!urls.is_empty()).then_some(urls)
    }

    async fn sleep_or_stop(&self, d: Duration) -> Result<(), JobEnd> {
        tokio::select! {
            biased;
            () = self.shared.stop.waiting().cancelled() => Err(JobEnd::Unfinished),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// True when the file at `path` was last written after this job's task was sent.
    fn written_since_submission(&self, path: &Path) -> bool {
        let sent = self
            .record
            .submitted_at
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339(at).ok());
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        matches!((sent, written), (Some(sent), Some(written)) if written >= sent)
    }

    fn since_submission(&self) -> Option<Duration> {
        let at = self.record.submitted_at.as_deref()?;
        let at = humantime::parse_rfc3339(at).ok()?;
        SystemTime::now().duration_since(at).ok()
    }

    /// Checks the task until it ends, at the times the run's schedule picks and
    /// within the run's pace of checks (see [`Polls`]). `submitted` is when this run
    /// submitted it; a task of an earlier run counts from its recorded submission.
    async fn poll(&mut self, task_id: &str, submitted: Option<Instant>) -> Result<(), JobEnd> {
        let settings = self.shared.settings.clone();
        if settings.no_wait {
            return Err(JobEnd::Unfinished);
        }
        let shared = self.shared.clone();
        let kind = polls::kind(&self.job);
        let deadline = Instant::now() + settings.task_timeout;
        let mut not_ready_since: Option<Instant> = None;
        let start = submitted.unwrap_or_else(|| {
            let age = self.since_submission().unwrap_or(Duration::ZERO);
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        });
        // When the last check found the task generating, from `start`.
        let mut last_generating: Option<Duration> = None;
        loop {
            let wait = shared.polls.wait(&kind, start.elapsed());
            self.sleep_or_stop(wait).await?;
            if Instant::now() >= deadline {
                tracing::warn!(job = %self.job.id.escape_debug(), task = %task_id, "still running after --task-timeout; left submitted, the next run polls it again");
                return Err(JobEnd::Unfinished);
            }
            let (place, epoch) = shared.polls.reserve();
            self.sleep_or_stop(place.saturating_duration_since(Instant::now()))
                .await?;
            let turn = shared.polls.turn().await;
            shared.polls.until_free().await;
            let permit = tokio::select! {
                biased;
                () = shared.stop.waiting().cancelled() => None,
                p = shared.polls.slot() => p,
            };
            let Some(permit) = permit else {
                return Err(JobEnd::Unfinished);
            };
            shared.polls.send().await;
            drop(turn);
            let checked = start.elapsed();
            let answer = self.shared.client.record_info(task_id).await;
            drop(permit);
            let refused = matches!(&answer, Err(e) if e.code == Some(429));
            shared.polls.answered(refused, epoch);
            match answer {
                Ok(TaskState::Generating) => {
                    if submitted.is_some() {
                        shared.polls.generating(&kind, checked);
                    }
                    last_generating = Some(checked);
                }
                Ok(TaskState::Succeeded {
                    result_urls,
                    full_result_urls,
                }) => {
                    let Some(urls) = self.kept_urls(result_urls, full_result_urls) else {
                        // An extend's stitched video is the one to keep: its segment
                        // alone would lose what was paid for. Ask again.
                        tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, "extend succeeded without its stitched video yet");
                        continue;
                    };
                    if submitted.is_some() {
                        shared.polls.finished(&kind, last_generating, checked);
                    }
                    self.record.video_urls = urls;
                    self.record.finished_at = Some(now());
                    self.save(State::Succeeded).await?;
                    tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, "generated");
                    return Ok(());
                }
                Ok(TaskState::Failed {
                    flag,
                    error_code,
                    error_message,
                }) => {
                    self.record.error_code = error_code;
                    self.record.error_message = Some(
                        error_message
                            .filter(|m| !m.is_empty())
                            .unwrap_or_else(|| format!("generation failed (successFlag {flag})")),
                    );
                    self.record.finished_at = Some(now());
                    tracing::warn!(job = %self.job.id.escape_debug(), task = %task_id, code = self.record.error_code, error = self.record.error_message.as_deref().unwrap_or_default(), "generation failed");
                    self.save(State::Failed).await?;
                    return Err(JobEnd::Failed);
                }
                // Not ready yet: early after submission, or (a task polled long after,
                // by a later run) for a while from the first such answer.
                Err(e)
                    if e.is_record_not_ready()
                        && (self
                            .since_submission()
                            .is_none_or(|d| d < settings.record_null_grace)
                            || not_ready_since.get_or_insert_with(Instant::now).elapsed()
                                < settings.record_null_grace) => {}
                Err(e) => match e.class {
                    ErrorClass::Auth => {
                        self.shared.stop.stop(StopReason::Auth(e.message.clone()));
                        return Err(JobEnd::Stopped);
                    }
                    ErrorClass::Failed => {
                        self.set_error(&e);
                        self.record.finished_at = Some(now());
                        tracing::warn!(job = %self.job.id.escape_debug(), task = %task_id, code = e.code, error = %e.message, "status check failed");
                        self.save(State::Failed).await?;
                        return Err(JobEnd::Failed);
                    }
                    // A status check changes nothing on the service: ask again at the
                    // next interval, within the task timeout.
                    ErrorClass::Retryable | ErrorClass::InDoubt | ErrorClass::Credits => {
                        self.retry_event(e.code).await;
                    }
                },
            }
        }
    }

    /// Asks for the 1080p or 4K file until it is ready. The service charges a 4K
    /// upgrade once, however often it is asked, so asking again after a kill is safe.
    async fn upgrade(&mut self, task_id: &str) -> Result<(), JobEnd> {
        let Some(kind) = self.job.upgrade else {
            return Ok(());
        };
        let settings = self.shared.settings.clone();
        let deadline = Instant::now() + settings.task_timeout;
        let mut first = true;
        // When the upgrade endpoint first said the record is not ready.
        let mut not_ready_since: Option<Instant> = None;
        loop {
            if !first {
                let wait = settings.poll_interval.mul_f64(0.8 + 0.4 * self.rng.f64());
                self.sleep_or_stop(wait).await?;
                if Instant::now() >= deadline {
                    tracing::warn!(job = %self.job.id.escape_debug(), task = %task_id, "{kind} file not ready after --task-timeout; the next run asks again");
                    return Err(JobEnd::Unfinished);
                }
            }
            first = false;
            let shared = self.shared.clone();
            let Some(permit) = slot(&shared).await else {
                return Err(JobEnd::Unfinished);
            };
            let answer = match kind {
                Upgrade::Hd1080 => {
                    self.shared
                        .client
                        .get_1080p(task_id, 0)
                        .await
                        .map(|a| match a {
                            Upgrade1080::Ready(url) => Some(vec![url]),
                            Upgrade1080::Processing(_) => None,
                        })
                }
                Upgrade::Uhd4k => self
                    .shared
                    .client
                    .get_4k(task_id, 0)
                    .await
                    .map(|a| match a {
                        Upgrade4k::Ready(urls) => Some(urls),
                        Upgrade4k::Processing(_) => None,
                    }),
            };
            drop(permit);
            match answer {
                Err(e)
                    if e.is_record_not_ready()
                        && not_ready_since.get_or_insert_with(Instant::now).elapsed()
                            < settings.record_null_grace =>
                {
                    tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, error = %e, "{kind} record not ready yet");
                }
                Ok(Some(urls)) if !urls.is_empty() => {
                    self.record.upgrade_urls = urls;
                    self.save(State::Succeeded).await?;
                    tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, "{kind} file ready");
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => match e.class {
                    ErrorClass::Auth => {
                        self.shared.stop.stop(StopReason::Auth(e.message.clone()));
                        return Err(JobEnd::Stopped);
                    }
                    ErrorClass::Failed | ErrorClass::Credits => {
                        // The base video is paid for and kept: record why there is
                        // no upgrade, and download what there is.
                        tracing::warn!(job = %self.job.id.escape_debug(), task = %task_id, code = e.code, error = %e.message, "{kind} upgrade failed; keeping the base video");
                        self.record.error_code = e.code;
                        self.record.error_message =
                            Some(format!("{kind} {UPGRADE_FAILED}: {}", e.message));
                        self.save(State::Succeeded).await?;
                        return Ok(());
                    }
                    ErrorClass::Retryable | ErrorClass::InDoubt => {
                        self.retry_event(e.code).await;
                    }
                },
            }
        }
    }

    /// The files to download, with the name each gets: the upgraded videos
    /// (`<stem>-1080p.mp4`), and the base ones (`<stem>.mp4`) when there is no upgrade
    /// or the job keeps the original.
    fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        let dir = &self.shared.settings.videos_dir;
        let stem = self.job.stem();
        let mut files = Vec::new();
        if self.record.upgrade_urls.is_empty() || self.job.keep_original {
            for (i, url) in self.record.video_urls.iter().enumerate() {
                files.push((url.clone(), video_path(dir, stem, i, "")));
            }
        }
        let suffix = upgrade_suffix(self.job.upgrade);
        for (i, url) in self.record.upgrade_urls.iter().enumerate() {
            files.push((url.clone(), video_path(dir, stem, i, suffix)));
        }
        files
    }

    /// Before a job is sent again, moves the videos of the task it supersedes (the
    /// files its record still lists) to `superseded/` beside them, and records where:
    /// a paid video is never left under the name of the task that replaces it, and
    /// never overwritten. Nothing is sent before this is recorded with the job's
    /// next row.
    fn set_aside_superseded_videos(&mut self) {
        let label = self
            .record
            .superseded_tasks
            .last()
            .cloned()
            .unwrap_or_else(|| "unrecorded".to_owned());
        for recorded in std::mem::take(&mut self.record.video_paths) {
            // A file recorded by a version that wrote paths from the current folder
            // is found there.
            let path = crate::paths::resolve(&self.shared.settings.results_dir, &recorded);
            let path = if path.exists() || !Path::new(&recorded).exists() {
                path
            } else {
                PathBuf::from(&recorded)
            };
            self.set_aside(&path, &label);
        }
    }

    /// Moves the video at `path` (if there is one) to `superseded/` beside it, named
    /// after `label`, and records the move.
    fn set_aside(&mut self, path: &std::path::Path, label: &str) {
        if !path.try_exists().unwrap_or(false) {
            return;
        }
        let to = superseded_path(path, label);
        let moved = to
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(path, &to));
        match moved {
            Ok(()) => {
                tracing::info!(
                    "job {:?}: kept the superseded video {} as {}",
                    self.job.id,
                    path.display(),
                    to.display()
                );
                let dir = &self.shared.settings.results_dir;
                self.record
                    .superseded_paths
                    .push(crate::paths::recorded(dir, &crate::paths::absolute(&to)));
            }
            Err(e) => tracing::warn!(
                "job {:?}: could not move the superseded video {} aside ({e}); it stays where it is",
                self.job.id,
                path.display()
            ),
        }
    }

    /// Asks the service for the task's result URLs again: they expire, and a run
    /// resumed later may hold ones that no longer answer (or, for `--simulate`, that
    /// named the port of the simulator before). True when new URLs came.
    async fn refresh_urls(&mut self) -> bool {
        let Some(task_id) = self.record.task_id.clone() else {
            return false;
        };
        let shared = self.shared.clone();
        let Some(permit) = slot(&shared).await else {
            return false;
        };
        let answer = self.shared.client.record_info(&task_id).await;
        drop(permit);
        let Ok(TaskState::Succeeded {
            result_urls,
            full_result_urls,
        }) = answer
        else {
            return false;
        };
        let Some(result_urls) = self.kept_urls(result_urls, full_result_urls) else {
            return false;
        };
        tracing::debug!(job = %self.job.id.escape_debug(), task = %task_id, "asked the service for fresh result URLs");
        self.record.video_urls = result_urls;
        if !self.record.upgrade_urls.is_empty() {
            // The upgrade is made already: asking again gives its URL, not a charge.
            self.record.upgrade_urls.clear();
            if self.upgrade(&task_id).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn download(&mut self) -> JobEnd {
        let settings = self.shared.settings.clone();
        let mut refreshed = false;
        'again: loop {
            let files = self.files();
            if !settings.download || files.is_empty() {
                return JobEnd::Succeeded;
            }
            let mut paths = Vec::with_capacity(files.len());
            for (url, dest) in &files {
                // A file already at `dest` is this task's when the record lists it, or
                // when it was written after the task was sent (a kill came between its
                // download and the row recording it). Any other file there (a
                // superseded task's, or one from a results file since deleted) is kept
                // aside, never overwritten and never left under this task's row.
                let dir = &settings.results_dir;
                let dest_abs = crate::paths::absolute(dest);
                let ours = self
                    .record
                    .video_paths
                    .iter()
                    .any(|p| crate::paths::resolve(dir, p) == dest_abs)
                    || self.written_since_submission(dest);
                if !ours {
                    let label = format!("unrecorded-{}", now().replace(':', ""));
                    self.set_aside(dest, &label);
                }
                // Files only reach their final name complete (temp file, then rename).
                // A stat of a local file is quicker than the trip to the blocking pool
                // that `tokio::fs` would make for it.
                if !dest.try_exists().unwrap_or(false) {
                    let mut delays = settings.retry.nominal_delays();
                    loop {
                        let shared = self.shared.clone();
                        let Some(permit) = slot(&shared).await else {
                            return JobEnd::Unfinished;
                        };
                        let got = self.shared.client.download(url, dest).await;
                        drop(permit);
                        let e = match got {
                            Ok(_) => break,
                            Err(e) => e,
                        };
                        let next = match e.class {
                            ErrorClass::Retryable | ErrorClass::InDoubt => delays.next(),
                            _ => None,
                        };
                        let Some(nominal) = next else {
                            // Once per job: the URLs may have expired, or a resumed run
                            // may hold ones that no longer answer.
                            if !refreshed && self.refresh_urls().await {
                                refreshed = true;
                                continue 'again;
                            }
                            tracing::warn!(job = %self.job.id.escape_debug(), url = %url, code = e.code, error = %e.message, "download failed; the next run tries again");
                            self.record.error_code = e.code;
                            self.record.error_message =
                                Some(format!("{DOWNLOAD_FAILED}: {}", e.message));
                            // The files already fetched are this task's: recorded, so
                            // that the next try keeps them.
                            self.record.video_paths = paths;
                            return match self.save(State::Succeeded).await {
                                Ok(()) => JobEnd::Failed,
                                Err(end) => end,
                            };
                        };
                        self.retry_event(e.code).await;
                        let delay = settings.retry.delay(nominal, &e, &mut self.rng);
                        if let Err(end) = self.sleep_or_stop(delay).await {
                            return end;
                        }
                    }
                }
                paths.push(crate::paths::recorded(dir, &dest_abs));
            }
            self.record.video_paths = paths;
            // A download failure recorded by an earlier try is resolved now; the reason
            // an upgrade failed is not, and stays on the record.
            if self.record.download_failed() {
                self.record.error_code = None;
                self.record.error_message = None;
            }
            return match self.save(State::Succeeded).await {
                Ok(()) => JobEnd::Succeeded,
                Err(end) => end,
            };
        }
    }
}
