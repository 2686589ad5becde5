//! What every job of a run shares: the client, the settings, the request slots,
//! the rate limit's and the polls' pace, the 429 pause, the stop, the budget and
//! the uploads of local images.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use super::collector::Event;
use super::pace::Pace;
use super::polls::Polls;
use super::retry::RetryPolicy;
use super::stop::Stop;
use crate::api::Client;
use crate::cost::{Credits, PriceTable};

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
    /// Where `max` was set (`--max-credits` or the manifest's `max_credits`).
    pub max_setting: &'static str,
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
    pub(super) fn reserve(&self, cost: f64) -> Result<(), String> {
        let Ok(mut spent) = self.spent.lock() else {
            return Err("the spending limit (its counter is lost)".into());
        };
        if let Some(max) = self.max
            && self.recorded + *spent + cost > max + 1e-9
        {
            return Err(format!(
                "the batch past {} {} ({} credits spent on it so far, {} of them by earlier runs)",
                self.max_setting,
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

    pub(super) fn release(&self, cost: f64) {
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
    /// The spend as the service bills it: the balance, each kind's real price.
    pub spend: super::spend::Spend,
    /// Local images: their uploads, shared by every job that needs the same file.
    pub uploads: super::uploads::Uploads,
}

impl Shared {
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
