//! Why a run stops before its end, held in one place: every job and the signal
//! watcher report a reason here, the stronger reason wins, and the two tokens jobs
//! watch (no new submission; no new poll or download either) follow from it.

use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// Why a run stopped early, weakest first: a reason replaces a weaker one only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// The next submission would take the batch or the run past its spending limit.
    Budget(String),
    /// The service has no credits left for the key.
    Credits(String),
    /// The results file cannot be written: nothing may be sent without a checkpoint.
    Checkpoint(String),
    /// The service refused the key: nothing else can work.
    Auth(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl StopReason {
    /// Whether jobs with a task stop being polled and downloaded too: only running
    /// out of money leaves the tasks already paid for to finish.
    fn stops_waiting(&self) -> bool {
        !matches!(self, StopReason::Budget(_) | StopReason::Credits(_))
    }
}

/// The run's stop: its reason and the tokens jobs watch.
#[derive(Debug)]
pub struct Stop {
    reason: Mutex<Option<StopReason>>,
    submitting: CancellationToken,
    waiting: CancellationToken,
}

impl Stop {
    /// A stop that `drain` (the first Ctrl-C) also triggers.
    pub fn new(drain: &CancellationToken) -> Stop {
        Stop {
            reason: Mutex::new(None),
            submitting: drain.child_token(),
            waiting: drain.child_token(),
        }
    }

    /// Stops the run for `reason`, unless a stronger reason already stopped it.
    pub fn stop(&self, reason: StopReason) {
        let stops_waiting = reason.stops_waiting();
        {
            let mut held = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
            if held.as_ref().is_none_or(|r| *r < reason) {
                *held = Some(reason);
            }
        }
        self.submitting.cancel();
        if stops_waiting {
            self.waiting.cancel();
        }
    }

    /// Why the run stopped, if it did.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Cancelled when no new generate request may be sent.
    pub fn submitting(&self) -> &CancellationToken {
        &self.submitting
    }

    /// Cancelled when no new poll or download may start either.
    pub fn waiting(&self) -> &CancellationToken {
        &self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stronger_reason_replaces_a_weaker_one_and_never_the_reverse() {
        let drain = CancellationToken::new();
        let stop = Stop::new(&drain);
        stop.stop(StopReason::Budget("b".into()));
        assert!(stop.submitting().is_cancelled());
        assert!(!stop.waiting().is_cancelled(), "paid tasks still finish");
        stop.stop(StopReason::Auth("a".into()));
        assert!(stop.waiting().is_cancelled());
        stop.stop(StopReason::Credits("c".into()));
        assert_eq!(stop.reason(), Some(StopReason::Auth("a".into())));
        stop.stop(StopReason::Interrupted);
        assert_eq!(stop.reason(), Some(StopReason::Interrupted));
    }

    #[test]
    fn the_first_ctrl_c_stops_submitting_and_waiting() {
        let drain = CancellationToken::new();
        let stop = Stop::new(&drain);
        drain.cancel();
        assert!(stop.submitting().is_cancelled());
        assert!(stop.waiting().is_cancelled());
        assert_eq!(stop.reason(), None, "the caller says why");
    }
}
