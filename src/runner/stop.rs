//! Why a run stops before its end, held in one place: the dispatcher keeps the
//! reason every job and the signal watcher report, the stronger reason wins, and
//! the two tokens jobs watch (no new submission; no new poll or download either)
//! follow from it.

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

/// The tokens jobs watch. Any job may pull them, at once, for a reason it met; it
/// then tells the dispatcher why, which keeps the reason ([`Stop`]).
#[derive(Debug, Clone)]
pub struct StopTokens {
    submitting: CancellationToken,
    waiting: CancellationToken,
}

impl StopTokens {
    /// Tokens that `drain` (the first Ctrl-C) also pulls.
    pub fn new(drain: &CancellationToken) -> StopTokens {
        StopTokens {
            submitting: drain.child_token(),
            waiting: drain.child_token(),
        }
    }

    /// Pulls the tokens `reason` stops: submitting always, waiting unless only
    /// money ran out.
    pub fn pull(&self, reason: &StopReason) {
        self.submitting.cancel();
        if reason.stops_waiting() {
            self.waiting.cancel();
        }
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

/// The run's stop: its reason, owned by the dispatcher, and the tokens it pulls.
#[derive(Debug)]
pub struct Stop {
    reason: Option<StopReason>,
    tokens: StopTokens,
}

impl Stop {
    /// A stop whose tokens `drain` (the first Ctrl-C) also pulls.
    pub fn new(drain: &CancellationToken) -> Stop {
        Stop {
            reason: None,
            tokens: StopTokens::new(drain),
        }
    }

    /// The tokens, for the jobs.
    pub fn tokens(&self) -> &StopTokens {
        &self.tokens
    }

    /// Stops the run for `reason`, unless a stronger reason already stopped it.
    pub fn stop(&mut self, reason: StopReason) {
        self.tokens.pull(&reason);
        if self.reason.as_ref().is_none_or(|r| *r < reason) {
            self.reason = Some(reason);
        }
    }

    /// Why the run stopped, if it did.
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stronger_reason_replaces_a_weaker_one_and_never_the_reverse() {
        let drain = CancellationToken::new();
        let mut stop = Stop::new(&drain);
        stop.stop(StopReason::Budget("b".into()));
        assert!(stop.tokens().submitting().is_cancelled());
        assert!(
            !stop.tokens().waiting().is_cancelled(),
            "paid tasks still finish"
        );
        stop.stop(StopReason::Auth("a".into()));
        assert!(stop.tokens().waiting().is_cancelled());
        stop.stop(StopReason::Credits("c".into()));
        assert_eq!(stop.reason(), Some(&StopReason::Auth("a".into())));
        stop.stop(StopReason::Interrupted);
        assert_eq!(stop.reason(), Some(&StopReason::Interrupted));
    }

    #[test]
    fn the_first_ctrl_c_stops_submitting_and_waiting() {
        let drain = CancellationToken::new();
        let stop = Stop::new(&drain);
        drain.cancel();
        assert!(stop.tokens().submitting().is_cancelled());
        assert!(stop.tokens().waiting().is_cancelled());
        assert_eq!(stop.reason(), None, "the caller says why");
    }
}
