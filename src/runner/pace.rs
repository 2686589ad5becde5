//! The rate limit on generate requests, kept the way the service counts it: at
//! most `count` requests in any window of `per` (20 per 10 s). The runner keeps the
//! send times of its last `count` requests and lets the next one leave when the
//! oldest of them is one window (plus a margin) old. That is the service's own
//! rule, so a run sends its first `count` requests at once and then keeps the
//! window exactly full; an evenly spaced schedule (a token bucket without burst)
//! would hold back the start of every run and lose each late timer wake-up for
//! good.
//!
//! A submission first reserves its place: the slot at which it may leave, one
//! window after the send it follows. Several places can be reserved at once (a
//! burst), but a place can only be reserved once the send it follows has left,
//! so a slot is always computed from a real send time. Each send time is taken
//! after the request's `submitting` row is on disk, just before the request
//! leaves, so a slow sync delays that send but can never bring two sends closer
//! than the window allows; and since the reservations of a burst sync their rows
//! together (one group commit), one slow sync does not hold back the others. The
//! row's sync starts ahead of the slot by about as long as a sync takes, so that
//! it rarely delays the send at all. Not much more ahead: a kill between the sync
//! and the send leaves a row that says "submitting" for a request that never left
//! (an in-doubt job for nothing).

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
    /// The places of the last `count` sends, oldest first: when each left, or
    /// `None` while it is reserved and has not left yet.
    places: VecDeque<Option<Instant>>,
    /// The number of the oldest place in `places`.
    first: u64,
    /// How long before its slot a submission starts writing its row.
    lead: Duration,
}

/// A reserved place among the sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub number: u64,
    /// When the send may leave (`None`: now).
    pub slot: Option<Instant>,
}

impl Pace {
    pub fn new(rate: Rate) -> Self {
        let margin = (rate.per / 100).max(Duration::from_millis(10));
        let count = usize::try_from(rate.count).unwrap_or(usize::MAX).max(1);
        Pace {
            count,
            window: rate.per + margin,
            places: VecDeque::with_capacity(count.min(4096)),
            first: 0,
            lead: Duration::ZERO,
        }
    }

    /// Reserves the next send's place; `None` while the send it must follow by a
    /// window has not left yet.
    pub fn reserve(&mut self) -> Option<Reservation> {
        let slot = if self.places.len() < self.count {
            None
        } else {
            let oldest = (*self.places.front()?)?;
            self.places.pop_front();
            self.first += 1;
            Some(oldest + self.window)
        };
        self.places.push_back(None);
        Some(Reservation {
            number: self.first + self.places.len() as u64 - 1,
            slot,
        })
    }

    /// The send of `place` left at `at`. A reserved place that is given up is
    /// recorded as a send too, at the moment it is given up: never earlier than
    /// a send it might still stand for.
    pub fn sent(&mut self, place: u64, at: Instant) {
        let Some(index) = place.checked_sub(self.first) else {
            return;
        };
        if let Some(entry) = usize::try_from(index)
            .ok()
            .and_then(|i| self.places.get_mut(i))
        {
            entry.get_or_insert(at);
        }
    }

    /// When a submission whose slot is `slot` should start writing its row.
    pub fn sync_from(&self, slot: Option<Instant>) -> Option<Instant> {
        let slot = slot?;
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

    /// Counts the requests a previous run sent within the last window, from its
    /// results file, so that a run resumed at once after a kill does not overfill
    /// the window the killed one left. Results times have whole seconds, so each
    /// is taken as the end of its second.
    pub fn remember<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let horizon = self.window + Duration::from_secs(1);
        let cutoff = cutoff_of(wall, horizon);
        let mut recent: Vec<Instant> = records
            .into_iter()
            .filter_map(|r| {
                let at = sent_at(r).filter(|at| *at >= cutoff.as_str())?;
                let at = humantime::parse_rfc3339(at).ok()? + Duration::from_secs(1);
                let age = wall.duration_since(at).unwrap_or(Duration::ZERO);
                (age < horizon).then(|| now.checked_sub(age).unwrap_or(now))
            })
            .collect();
        recent.sort();
        for at in recent {
            if let Some(place) = self.reserve() {
                self.sent(place.number, at);
            }
        }
    }
}

/// The oldest time, as results files write it, that a pace of `rate` still counts
/// a request sent at ([`Pace::remember`]): a record sent before it is not kept for
/// the pace.
pub fn cutoff(rate: Rate) -> String {
    let window = Pace::new(rate).window;
    cutoff_of(SystemTime::now(), window + Duration::from_secs(1))
}

/// Results times are RFC 3339 in UTC, which sort as text: a resumed run of 100,000
/// jobs compares its times with this one instead of parsing each.
fn cutoff_of(wall: SystemTime, horizon: Duration) -> String {
    wall.checked_sub(horizon + Duration::from_secs(1))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// When the request `r` records was sent, as its row writes it; `None` when it was
/// refused before any task existed, or never sent.
pub fn sent_at(r: &Record) -> Option<&str> {
    match r.state? {
        State::Submitting | State::InDoubt => Some(r.updated_at.as_str()),
        State::Submitted | State::Succeeded | State::Failed => r.submitted_at.as_deref(),
        State::Pending | State::Blocked => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(count: u32, per: Duration) -> Rate {
        Rate { count, per }
    }

    /// Reserves a place and sends at once, at `at` or at its slot if later.
    fn send(pace: &mut Pace, at: Instant) -> Instant {
        let place = pace.reserve().expect("a place");
        let at = place.slot.map_or(at, |s| s.max(at));
        pace.sent(place.number, at);
        at
    }

    #[test]
    fn the_first_window_is_sent_at_once_then_each_slot_follows_the_oldest_send() {
        let mut pace = Pace::new(rate(3, 1000 * MS));
        let t0 = Instant::now();
        for i in 0..3u32 {
            let place = pace.reserve().expect("a place");
            assert_eq!(place.slot, None, "send {i} of the first window");
            pace.sent(place.number, t0 + 7 * i * MS);
        }
        let place = pace.reserve().expect("a place");
        assert_eq!(place.slot, Some(t0 + 1010 * MS), "window + 1% margin");
        pace.sent(place.number, t0 + 1030 * MS);
        let place = pace.reserve().expect("a place");
        assert_eq!(place.slot, Some(t0 + 1017 * MS), "the second-oldest send");
    }

    #[test]
    fn a_place_waits_until_the_send_it_follows_has_left() {
        let mut pace = Pace::new(rate(2, 1000 * MS));
        let t0 = Instant::now();
        let a = pace.reserve().expect("a place");
        let b = pace.reserve().expect("a place");
        assert_eq!((a.slot, b.slot), (None, None), "a burst of two");
        assert_eq!(pace.reserve(), None, "the first has not left");
        pace.sent(b.number, t0 + 5 * MS);
        assert_eq!(pace.reserve(), None, "the first still has not left");
        pace.sent(a.number, t0 + 9 * MS);
        pace.sent(a.number, t0 + 900 * MS);
        let c = pace.reserve().expect("a place");
        assert_eq!(c.slot, Some(t0 + 1019 * MS), "the first send's time, kept");
    }

    #[test]
    fn late_sends_never_bring_a_window_closer() {
        // Whatever the delays and however the burst's sends interleave, no
        // `count + 1` sends fall within one window.
        let mut pace = Pace::new(rate(4, 100 * MS));
        let mut rng = fastrand::Rng::with_seed(7);
        let mut now = Instant::now();
        let mut reserved = VecDeque::new();
        let mut sends = Vec::new();
        for _ in 0..400 {
            if let Some(place) = pace.reserve() {
                reserved.push_back(place);
            }
            if !reserved.is_empty() && rng.bool() {
                let place = reserved.swap_remove_back(rng.usize(..reserved.len()));
                let place = place.expect("an index in range");
                now = place.slot.map_or(now, |s| s.max(now)) + MS * rng.u32(0..30) / 10;
                pace.sent(place.number, now);
                sends.push(now);
            }
            now += MS * rng.u32(0..5);
        }
        sends.sort();
        assert!(sends.len() > 100, "{} sends", sends.len());
        for five in sends.windows(5) {
            assert!(five[4] - five[0] >= 110 * MS, "{:?}", five[4] - five[0]);
        }
    }

    #[test]
    fn the_margin_is_a_hundredth_of_the_window_and_at_least_10_ms() {
        let t0 = Instant::now();
        let mut pace = Pace::new(rate(1, Duration::from_secs(10)));
        send(&mut pace, t0);
        assert_eq!(pace.reserve().and_then(|p| p.slot), Some(t0 + 10_100 * MS));
        let mut pace = Pace::new(rate(1, 200 * MS));
        send(&mut pace, t0);
        assert_eq!(pace.reserve().and_then(|p| p.slot), Some(t0 + 210 * MS));
    }

    #[test]
    fn the_sync_starts_one_lead_before_the_slot() {
        let mut pace = Pace::new(rate(1, 1000 * MS));
        let t0 = Instant::now();
        assert_eq!(pace.sync_from(None), None, "at once");
        pace.synced(4 * MS);
        assert_eq!(pace.lead, 7 * MS, "1.5 x 4 ms + 1 ms of timer slack");
        assert_eq!(pace.sync_from(Some(t0 + 1000 * MS)), Some(t0 + 993 * MS));
    }

    #[test]
    fn the_lead_follows_a_slow_sync_at_once_and_decays_slowly() {
        let mut pace = Pace::new(rate(20, Duration::from_secs(10)));
        pace.synced(20 * MS);
        assert_eq!(pace.lead, 31 * MS);
        pace.synced(MS);
        assert!(
            pace.lead > 29 * MS && pace.lead < 31 * MS,
            "{:?}",
            pace.lead
        );
        for _ in 0..200 {
            pace.synced(MS);
        }
        assert_eq!(pace.lead, MS + MS / 2 + MS, "back to the usual sync time");
        pace.synced(Duration::from_secs(60));
        assert_eq!(pace.lead, 1010 * MS, "a tenth of the window at most");
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
        let slot = pace
            .reserve()
            .and_then(|p| p.slot)
            .expect("the window is full");
        let wait = slot - Instant::now();
        // Four sends were recent (3, 2, 1 and 1 s ago); the oldest of the last
        // three was 2 s ago, 1-2 s as the end of its second: 8.1-9.1 s are left.
        assert!(
            wait > Duration::from_secs(8) && wait < Duration::from_millis(9200),
            "{wait:?}"
        );
        let mut pace = Pace::new(rate(5, Duration::from_secs(10)));
        pace.remember(&records);
        assert_eq!(
            pace.reserve().map(|p| p.slot),
            Some(None),
            "four recent sends leave one of five"
        );
    }
}
