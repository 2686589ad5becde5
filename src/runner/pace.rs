//! The rate limit on generate requests, kept the way the service counts it: at
//! most `count` requests in any window of `per` (20 per 10 s). The runner keeps the
//! send times of its last `count` requests and lets the next one leave when the
//! oldest of them is one window (plus a margin) old. That is the service's own
//! rule, so a run sends its first `count` requests at once and then keeps the
//! window exactly full; an evenly spaced schedule (a token bucket without burst)
//! would hold back the start of every run and lose each late timer wake-up for
//! good.
//!
//! Each send time is taken after the request's `submitting` row is on disk, just
//! before the request leaves, so a slow sync delays that send but can never bring
//! two sends closer than the window allows. The row's sync is started ahead of
//! the send's slot by about as long as a sync takes, so that it rarely delays the
//! send at all. Not much more ahead: a kill between the sync and the send leaves a
//! row that says "submitting" for a request that never left (an in-doubt job for
//! nothing).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::checkpoint::{Record, State};
use crate::units::Rate;

/// Room for the timer's granularity: a sleep ends up to a millisecond late.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The send times of the last requests, and how long a row's sync takes.
#[derive(Debug)]
pub struct Pace {
    count: usize,
    /// The service's window plus the margin that absorbs the jitter between a
    /// send and its arrival.
    window: Duration,
    /// The last `count` send times, oldest first.
    sent: VecDeque<Instant>,
    /// How long before its slot a submission starts writing its row.
    lead: Duration,
}

impl Pace {
    pub fn new(rate: Rate) -> Self {
        let margin = (rate.per / 100).max(Duration::from_millis(10));
        let count = usize::try_from(rate.count).unwrap_or(usize::MAX).max(1);
        Pace {
            count,
            window: rate.per + margin,
            sent: VecDeque::with_capacity(count.min(4096)),
            lead: Duration::ZERO,
        }
    }

    /// When the next request may leave (`None`: now).
    pub fn slot(&self) -> Option<Instant> {
        if self.sent.len() < self.count {
            return None;
        }
        self.sent.front().map(|oldest| *oldest + self.window)
    }

    /// When the next submission should start writing its row (`None`: now).
    pub fn sync_from(&self) -> Option<Instant> {
        let slot = self.slot()?;
        Some(slot.checked_sub(self.lead).unwrap_or(slot))
    }

    /// A row's sync took `took`. The lead follows the slowest recent sync, with
    /// headroom, and decays slowly, so that one slow sync does not keep rows
    /// waiting on disk for long; it never exceeds a tenth of the window.
    pub fn synced(&mut self, took: Duration) {
        let wanted = took + took / 2 + TIMER_SLACK;
        let decayed = self.lead.mul_f64(15.0 / 16.0);
        self.lead = wanted.max(decayed).min(self.window / 10);
    }

    /// A request leaves at `at`.
    pub fn sent(&mut self, at: Instant) {
        if self.sent.len() == self.count {
            self.sent.pop_front();
        }
        self.sent.push_back(at);
    }

    pub fn lead(&self) -> Duration {
        self.lead
    }

    /// Counts the requests a previous run sent within the last window, from its
    /// results file, so that a run resumed at once after a kill does not overfill
    /// the window the killed one left. Results times have whole seconds, so each
    /// is taken as the end of its second.
    pub fn remember<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let horizon = self.window + Duration::from_secs(1);
        let mut recent: Vec<Instant> = records
            .into_iter()
            .filter_map(|r| {
                let at = match r.state? {
                    State::Submitting | State::InDoubt => Some(r.updated_at.as_str()),
                    State::Submitted | State::Succeeded | State::Failed => {
                        r.submitted_at.as_deref()
                    }
                    // Refused before any task existed.
                    State::Pending => None,
                }?;
                let at = humantime::parse_rfc3339(at).ok()? + Duration::from_secs(1);
                let age = wall.duration_since(at).unwrap_or(Duration::ZERO);
                (age < horizon).then(|| now.checked_sub(age).unwrap_or(now))
            })
            .collect();
        recent.sort();
        for at in recent {
            self.sent(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(count: u32, per: Duration) -> Rate {
        Rate { count, per }
    }

    #[test]
    fn the_first_window_is_sent_at_once_then_each_slot_follows_the_oldest_send() {
        let mut pace = Pace::new(rate(3, 1000 * MS));
        let t0 = Instant::now();
        for i in 0..3u32 {
            assert_eq!(pace.slot(), None, "send {i} of the first window");
            pace.sent(t0 + 7 * i * MS);
        }
        assert_eq!(pace.slot(), Some(t0 + 1010 * MS), "window + 1% margin");
        pace.sent(t0 + 1030 * MS);
        assert_eq!(pace.slot(), Some(t0 + 1017 * MS), "the second-oldest send");
    }

    #[test]
    fn a_late_send_never_brings_the_next_window_closer() {
        // Whatever the delays, no `count + 1` sends fall within one window.
        let mut pace = Pace::new(rate(4, 100 * MS));
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut sends = Vec::new();
        let mut now = t0;
        for _ in 0..200 {
            now = pace.slot().map_or(now, |s| s.max(now)) + MS * rng.u32(0..30) / 10;
            pace.sent(now);
            sends.push(now);
        }
        for pair in sends.windows(5) {
            assert!(pair[4] - pair[0] >= 110 * MS, "{:?}", pair[4] - pair[0]);
        }
    }

    #[test]
    fn the_margin_is_a_hundredth_of_the_window_and_at_least_10_ms() {
        let mut pace = Pace::new(rate(1, Duration::from_secs(10)));
        let t0 = Instant::now();
        pace.sent(t0);
        assert_eq!(pace.slot(), Some(t0 + 10_100 * MS));
        let mut pace = Pace::new(rate(1, 200 * MS));
        pace.sent(t0);
        assert_eq!(pace.slot(), Some(t0 + 210 * MS));
    }

    #[test]
    fn the_sync_starts_one_lead_before_the_slot() {
        let mut pace = Pace::new(rate(1, 1000 * MS));
        let t0 = Instant::now();
        assert_eq!(pace.sync_from(), None);
        pace.synced(4 * MS);
        pace.sent(t0);
        assert_eq!(pace.lead(), 7 * MS, "1.5 x 4 ms + 1 ms of timer slack");
        assert_eq!(pace.sync_from(), Some(t0 + 1003 * MS));
    }

    #[test]
    fn the_lead_follows_a_slow_sync_at_once_and_decays_slowly() {
        let mut pace = Pace::new(rate(20, Duration::from_secs(10)));
        pace.synced(20 * MS);
        assert_eq!(pace.lead(), 31 * MS);
        pace.synced(MS);
        assert!(
            pace.lead() > 29 * MS && pace.lead() < 31 * MS,
            "{:?}",
            pace.lead()
        );
        for _ in 0..200 {
            pace.synced(MS);
        }
        assert_eq!(pace.lead(), MS + MS / 2 + MS, "back to the usual sync time");
        pace.synced(Duration::from_secs(60));
        assert_eq!(pace.lead(), 1010 * MS, "a tenth of the window at most");
    }

    #[test]
    fn sends_a_killed_run_made_within_the_window_are_remembered() {
        let at = |secs_ago: u64| {
            humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(secs_ago))
                .to_string()
        };
        let record = |state: State, updated: String, submitted: Option<String>| Record {
            state: Some(state),
            updated_at: updated,
            submitted_at: submitted,
            ..Record::default()
        };
        let records = [
            record(State::Submitting, at(1), None),
            record(State::Submitted, at(1), Some(at(2))),
            record(State::Succeeded, at(0), Some(at(60))),
            record(State::InDoubt, at(3), None),
            record(State::Pending, at(0), None),
            record(State::Failed, at(0), Some(at(1))),
        ];
        let mut pace = Pace::new(rate(3, Duration::from_secs(10)));
        pace.remember(&records);
        let slot = pace.slot().expect("the window is full");
        let wait = slot - Instant::now();
        // Four sends were recent (3, 2, 1 and 1 s ago); the oldest of the last
        // three was 2 s ago, 1-2 s as the end of its second: 8.1-9.1 s are left.
        assert!(
            wait > Duration::from_secs(8) && wait < Duration::from_millis(9200),
            "{wait:?}"
        );
        let mut pace = Pace::new(rate(5, Duration::from_secs(10)));
        pace.remember(&records);
        assert_eq!(pace.slot(), None, "four recent sends leave one of five");
    }
}
