//! The dispatcher: the one owner of a run's state. It holds the queue of jobs to
//! start, the extend graph (children waiting for their parent's video), the jobs
//! running, the budget, the retry counts and the stop reason. It waits on its
//! sources at once (the signals, the jobs' events, the jobs' ends, a free
//! submission slot), turns each into one [`Input`] and hands it to a synchronous
//! handler, so no state is shared with the jobs but the tokens they watch.
//!
//! Every way a run ends (its work done, a drain, an abort, a stop for money, key
//! or checkpoint) leaves by the same path: the job tasks are joined, what they sent
//! is handed on, and the collector is waited for, so that the report is read from
//! the results file as it stands.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle, JoinSet};

use super::Signals;
use super::budget::Budget;
use super::chain;
use super::collector::{self, CallCounts, Collected};
use super::job::{self, Ended, JobHandle, Start};
use super::planned::{Planned, fresh_record, resumed_record};
use super::shared::Shared;
use super::stop::{Stop, StopReason};
use crate::checkpoint::{Record, State};
use crate::manifest::Job;

/// Where jobs send their events.
pub type Events = mpsc::UnboundedSender<JobEvent>;

/// What a job tells the dispatcher. The channel is unbounded, and still bounded in
/// use: a job waits for each row's ack and each reservation's answer, so no more
/// than a few events per running job are ever in it.
#[derive(Debug)]
pub enum JobEvent {
    /// A new row for a job, for the collector; `ack` hears back once it is on disk.
    Row {
        row: collector::Row,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// A request will be retried.
    Retry { code: Option<i64> },
    /// Credits to reserve before a billed call: the answer is `Ok`, or the limit
    /// the reservation would pass (the job then stops the run, saying why).
    Reserve {
        cost: f64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Credits reserved and not spent: the service made no task.
    Release { cost: f64 },
    /// The job met a reason for the run to stop.
    Stop(StopReason),
}

/// Everything the dispatcher hears, from whichever source.
enum Input {
    Job(JobEvent),
    Joined(Result<(tokio::task::Id, Ended), JoinError>),
    /// A submission slot is free: the next job may start.
    SlotFree,
    /// The first Ctrl-C: no new submissions, the rest finishes.
    Drain,
    /// The second Ctrl-C: every job stops at once.
    Abort,
}

/// What a run left, once the collector has written everything.
pub(super) struct Dispatched {
    pub collected: Collected,
    pub counters: CallCounts,
    pub stopped: Option<StopReason>,
    /// The second Ctrl-C stopped every job at once.
    pub aborted: bool,
}

/// The run's state and the sources it waits on.
pub(super) struct Dispatcher {
    pub shared: Arc<Shared>,
    pub inbox: mpsc::UnboundedReceiver<JobEvent>,
    /// Rows for the collector, which owns the results file.
    pub rows: mpsc::UnboundedSender<collector::Event>,
    pub collector: JoinHandle<Collected>,
    pub jobs: Arc<Vec<Job>>,
    /// The records loaded before the run, which planned jobs start from.
    pub loaded: Arc<Vec<Record>>,
    pub queue: VecDeque<Planned>,
    /// Extend jobs that wait for their parent's video, by the parent's place.
    pub waiting: HashMap<usize, Vec<Planned>>,
    /// Jobs that have yet to submit are started only as submission slots free
    /// up, so that thousands of them do not wait at once on the limiter: memory
    /// and wake-ups then follow the jobs the service is working on.
    pub submit_slots: Arc<Semaphore>,
    pub max_active: usize,
    pub seed: u64,
    pub budget: Budget,
    pub stop: Stop,
    pub running: HashMap<tokio::task::Id, usize>,
    pub set: JoinSet<Ended>,
    pub counters: CallCounts,
    pub drained: bool,
    pub aborted: bool,
}

impl Dispatcher {
    /// Splits `plan` into the queue and the extend jobs waiting for a parent.
    pub fn queue(plan: Vec<Planned>) -> (VecDeque<Planned>, HashMap<usize, Vec<Planned>>) {
        let mut waiting: HashMap<usize, Vec<Planned>> = HashMap::new();
        // The plan's own buffer becomes the queue (no second copy of every planned
        // job at the peak); only the waiting extends move out of it.
        let mut plan = plan;
        for child in plan.extract_if(.., |p| p.after.is_some()) {
            if let Some(parent) = child.after {
                waiting.entry(parent).or_default().push(child);
            }
        }
        (VecDeque::from(plan), waiting)
    }

    /// Runs the queue to the end of what this run can do, then waits for the
    /// collector: the one way out.
    pub async fn run(mut self, signals: &Signals) -> anyhow::Result<Dispatched> {
        loop {
            self.start_jobs();
            let waiting_for_slot = !self.aborted
                && self.set.len() < self.max_active
                && self
                    .queue
                    .front()
                    .is_some_and(|p| matches!(p.start, Start::Submit(_)));
            if self.set.is_empty() && !waiting_for_slot {
                break;
            }
            let input = tokio::select! {
                biased;
                () = signals.abort.cancelled(), if !self.aborted => Input::Abort,
                () = signals.drain.cancelled(), if !self.drained => Input::Drain,
                Some(event) = self.inbox.recv() => Input::Job(event),
                Some(joined) = self.set.join_next_with_id() => Input::Joined(joined),
                slot = self.submit_slots.clone().acquire_owned(), if waiting_for_slot => {
                    // The slot is taken again when the job starts.
                    drop(slot);
                    Input::SlotFree
                }
            };
            self.handle(input);
        }
        self.close().await
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Job(event) => self.heard(event),
            Input::Joined(joined) => self.joined(joined),
            Input::SlotFree => {}
            Input::Drain => {
                self.drained = true;
                self.stop.stop(StopReason::Interrupted);
            }
            Input::Abort => {
                self.aborted = true;
                self.drained = true;
                self.stop.stop(StopReason::Interrupted);
                // The tasks end at their next wait; what they sent before still
                // reaches the results file, and the report reads it from there.
                self.set.abort_all();
            }
        }
    }

    fn heard(&mut self, event: JobEvent) {
        match event {
            JobEvent::Row { row, ack } => self.write(row, ack),
            JobEvent::Retry { code } => {
                self.counters.retries += 1;
                if code == Some(429) {
                    self.counters.rate_limited += 1;
                }
            }
            JobEvent::Reserve { cost, reply } => {
                let reserved = self.budget.reserve(cost);
                let ok = reserved.is_ok();
                if reply.send(reserved).is_err() && ok {
                    // The job is gone: nothing will be sent for it.
                    self.budget.release(cost);
                }
            }
            JobEvent::Release { cost } => self.budget.release(cost),
            JobEvent::Stop(reason) => self.stop.stop(reason),
        }
    }

    /// Hands a row to the collector. Gone, it drops the ack, which tells the job
    /// the results writer stopped.
    fn write(&self, row: collector::Row, ack: Option<oneshot::Sender<Result<(), String>>>) {
        let _ = self.rows.send(collector::Event::Row { row, ack });
    }

    /// Starts queued jobs while there is room, unless the run stopped them.
    fn start_jobs(&mut self) {
        while !self.aborted && self.set.len() < self.max_active {
            let Some(next) = self.queue.front() else {
                break;
            };
            let slot = match next.start {
                Start::Submit(_) => match self.submit_slots.clone().try_acquire_owned() {
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
                parent_account,
            }) = self.queue.pop_front()
            else {
                break;
            };
            // Once submissions stop, jobs that would submit are not started; jobs
            // with a task go on being polled unless everything stops.
            let tokens = self.stop.tokens();
            let stopped = match start {
                Start::Submit(_) => tokens.submitting().is_cancelled(),
                _ => tokens.waiting().is_cancelled(),
            };
            if stopped {
                continue;
            }
            let seed = self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let Some(job) = JobHandle::new(self.jobs.clone(), index) else {
                continue;
            };
            let mut record = match from.and_then(|i| self.loaded.get(i)) {
                Some(last) => resumed_record(last, &start, &job),
                None => fresh_record(&job),
            };
            let mut owner = job::Owner::default();
            if let (Start::Submit(_), Some(task)) = (&start, parent_task) {
                record.parent_task_id = Some(task);
                owner = job::Owner(parent_account);
            }
            let handle = self.set.spawn(job::drive(
                self.shared.clone(),
                job,
                record,
                start,
                seed,
                slot,
                owner,
            ));
            self.running.insert(handle.id(), index);
        }
    }

    fn joined(&mut self, joined: Result<(tokio::task::Id, Ended), JoinError>) {
        match joined {
            Ok((id, ended)) => {
                if let Some(index) = self.running.remove(&id)
                    && let Some(children) = self.waiting.remove(&index)
                {
                    self.follow(index, &ended, children);
                }
            }
            // Aborted on the second Ctrl-C: its last recorded step stands.
            Err(e) if e.is_cancelled() && self.aborted => {
                self.running.remove(&e.id());
            }
            Err(e) => {
                // Its children stay waiting: not started in this run.
                let job = self
                    .running
                    .remove(&e.id())
                    .and_then(|i| self.jobs.get(i))
                    .map(|j| j.id.clone())
                    .unwrap_or_default();
                tracing::error!(job = %job, "job task failed: {e}; its last recorded step stands and the next run resumes it");
            }
        }
    }

    /// The children of the job at `index`, which just ended as `ended`: sent (first
    /// in the queue) with its task when its video is made; blocked, with their own
    /// children, when it failed; otherwise left waiting, not started in this run.
    fn follow(&mut self, index: usize, ended: &Ended, children: Vec<Planned>) {
        if let Some(task) = &ended.made {
            for mut child in children.into_iter().rev() {
                child.parent_task = Some(task.clone());
                child.parent_account = Some(ended.account.clone());
                self.queue.push_front(child);
            }
            return;
        }
        let Some(why) = &ended.failed else {
            self.waiting.insert(index, children);
            return;
        };
        let parent = self
            .jobs
            .get(index)
            .map(|j| j.id.clone())
            .unwrap_or_default();
        let mut stack: Vec<(Planned, String)> = children
            .into_iter()
            .map(|c| (c, format!("the job it extends, {parent:?}, failed: {why}")))
            .collect();
        while let Some((child, reason)) = stack.pop() {
            let Some(job) = self.jobs.get(child.index) else {
                continue;
            };
            let last = child.from.and_then(|i| self.loaded.get(i));
            let record = chain::blocked_record(last, job, reason.clone());
            self.write_decided(child.index, &record);
            for grandchild in self.waiting.remove(&child.index).unwrap_or_default() {
                let why = format!("the job it extends, {:?}, is blocked: {reason}", job.id);
                stack.push((grandchild, why));
            }
        }
    }

    /// Writes the row of an extend job the plan of its chain decided (blocked by its
    /// parent, or pending again behind it). Nothing is sent on it, so it is not
    /// waited for: a kill before it is on disk leaves the row before it, which the
    /// next run decides again the same way.
    pub fn write_decided(&self, index: usize, record: &Record) {
        if record.state() == State::Blocked {
            tracing::warn!(
                "job {:?}: blocked: {}",
                record.job_id,
                record.error_message.as_deref().unwrap_or_default()
            );
        }
        match collector::Row::new(index, record, self.shared.settings.download) {
            Ok(row) => self.write(row, None),
            Err(e) => tracing::error!("failed to encode a results row: {e}"),
        }
    }

    /// The one way out: hands on what the ended jobs sent, lets the collector
    /// write it and waits for it.
    async fn close(mut self) -> anyhow::Result<Dispatched> {
        // Every job task has ended, so everything they sent is in the inbox now.
        while let Ok(event) = self.inbox.try_recv() {
            self.heard(event);
        }
        let Dispatcher {
            shared,
            rows,
            collector,
            stop,
            counters,
            aborted,
            ..
        } = self;
        drop(shared);
        // The collector ends once it has written every row it was handed.
        drop(rows);
        let collected = collector.await.context("the results writer failed")?;
        let mut counters = counters;
        counters.submitted = collected.submitted;
        Ok(Dispatched {
            aborted,
            counters,
            stopped: stop.reason().cloned(),
            collected,
        })
    }
}
