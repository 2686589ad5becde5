//! What every job of a run shares: the client, the settings, the request slots,
//! the rate limit's and the polls' pace, the 429 pause, the stop tokens, the
//! uploads of local images, and the one channel of events to the dispatcher, which
//! owns everything else of the run (queue, budget, counts, stop reason).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use super::dispatch::{Events, JobEvent};
use super::pace::Pace;
use super::polls::Polls;
use super::stop::{StopReason, StopTokens};
use crate::api::Client;
use crate::retry::RetryPolicy;

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
    /// Videos go on to this bucket prefix from `videos_dir` (then a staging folder).
    pub videos_bucket: Option<crate::store::run::VideosTarget>,
    /// The results live in a bucket: local video paths are recorded whole.
    pub results_in_bucket: bool,
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
    /// The dispatcher's ear: rows, retries, stops and the budget go through it.
    pub events: Events,
    /// The tokens that stop the jobs; why lives with the dispatcher.
    pub stop: StopTokens,
    /// The spend as the service bills it: the balance, each kind's real price.
    pub spend: super::spend::Spend,
    /// Local images: their uploads, shared by every job that needs the same file.
    pub uploads: super::uploads::Uploads,
}

impl Shared {
    /// Stops the run for `reason`: the tokens at once, so that no other job sends
    /// meanwhile, and the dispatcher, which keeps the stronger reason.
    pub(super) fn halt(&self, reason: StopReason) {
        self.stop.pull(&reason);
        let _ = self.events.send(JobEvent::Stop(reason));
    }

    /// Reserves `cost` against the run's spending limits (the dispatcher's
    /// [`Budget`](super::budget::Budget)); the limit it would pass otherwise, said
    /// the way a stop message ends ("would take the batch past ...").
    pub(super) async fn reserve(&self, cost: f64) -> Result<(), String> {
        let lost = || "the spending limit (its counter is lost)".to_owned();
        let (reply, heard) = oneshot::channel();
        if self.events.send(JobEvent::Reserve { cost, reply }).is_err() {
            return Err(lost());
        }
        heard.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Gives back `cost` reserved by [`reserve`](Shared::reserve): the service
    /// refused the send without creating a task.
    pub(super) fn release(&self, cost: f64) {
        let _ = self.events.send(JobEvent::Release { cost });
    }

    pub(super) fn pause_submissions(&self, delay: Duration) {
        if let Ok(mut until) = self.pause_until.lock() {
            let candidate = Instant::now() + delay;
            if until.is_none_or(|u| u < candidate) {
                *until = Some(candidate);
            }
        }
    }

    pub(super) fn pace(&self) -> Option<std::sync::MutexGuard<'_, Pace>> {
        self.pace.lock().ok()
    }

    /// Records that the send of `place` left now.
    pub(super) fn sent(&self, place: u64) {
        if let Some(mut pace) = self.pace() {
            pace.sent(place, Instant::now());
        }
        self.place_left.notify_waiters();
    }

    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.pause_until.lock().ok().and_then(|u| *u)
    }
}
