//! The run's status checks (record-info), paced for the whole run, not per task:
//! at most `--poll-rate` of them per account, shared by every job of the account
//! (the service caps them per account: 10 per second), and fewer after that
//! account's 429. What the checks find feeds the
//! schedule ([`super::schedule`]) that decides when each task is checked next.
//!
//! Checks have request slots of their own (as many as `--concurrency`), not the
//! ones submissions and downloads share: a submission holds its slot from the
//! moment it reserves its place among the sends until it leaves, up to a window
//! of the rate limit, so at the limit most of those slots are held by waiting
//! submissions, and checks sharing them would wait behind every submission (the
//! schedule-polls bench measures the time from a video being ready to its download).
//!
//! A check takes the next free place of an evenly spaced timetable, which costs
//! O(1) however many tasks wait (a sliding window alone would wake every waiting
//! task at each free place). Just before it leaves, with its request slot in hand,
//! two rules hold back the checks that a stalled thread (a loaded machine) would
//! otherwise send in one burst: never more than the rate's count within one window,
//! and never two closer than half the spacing. A burst at the end of one window and
//! another at the start of the next would reach the service within one window of
//! its own as soon as the first burst's requests were delayed a little more than
//! the second's, which a loaded machine with a short window makes likely.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::schedule::{self, Limits, Seen};
use crate::manifest::Job;
use crate::units::Rate;

/// After a 429 the spacing doubles, up to this many times the rate's own.
const MAX_SLOWDOWN: u32 = 64;

/// The timetable of the run's checks, and the window of their sends.
#[derive(Debug)]
pub struct PollPace {
    count: usize,
    per: Duration,
    /// The spacing the rate asks for.
    base: Duration,
    /// The spacing now: wider after a 429, back to `base` as checks are answered.
    gap: Duration,
    /// The next free place.
    next: Option<Instant>,
    /// How many times a 429 slowed the checks down: the 429s of checks placed
    /// before the last slow-down say nothing new.
    epoch: u64,
    /// Send times of the checks within the last window.
    sent: VecDeque<Instant>,
}

impl PollPace {
    pub fn new(rate: Rate) -> PollPace {
        let count = usize::try_from(rate.count).unwrap_or(usize::MAX).max(1);
        let base = rate.per / rate.count.max(1);
        PollPace {
            count,
            per: rate.per,
            base,
            gap: base,
            next: None,
            epoch: 0,
            sent: VecDeque::with_capacity(count.min(4096)),
        }
    }

    /// The place of a check that wants to leave at `now` (`now` or later), and the
    /// pace's epoch it was placed in.
    pub fn reserve(&mut self, now: Instant) -> (Instant, u64) {
        let at = self.next.map_or(now, |next| next.max(now));
        self.next = Some(at + self.gap);
        (at, self.epoch)
    }

    /// Checks allowed per window now: the rate's count, fewer while slowed down.
    fn allowed(&self) -> usize {
        let share = self.base.as_secs_f64() / self.gap.as_secs_f64().max(f64::MIN_POSITIVE);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a share of a count, at least 1"
        )]
        let allowed = (self.count as f64 * share).floor() as usize;
        allowed.clamp(1, self.count)
    }

    /// `None` when a check may leave at `now` (and it is counted as sent), else
    /// when it may: never more than the checks allowed within one window, however
    /// late wake-ups bunch the places up (or places handed out before a 429).
    pub fn send(&mut self, now: Instant) -> Option<Instant> {
        let free = self.free_at(now);
        if free.is_none() {
            self.sent.push_back(now);
        }
        free
    }

    /// Like [`PollPace::send`], without counting a send.
    fn free_at(&mut self, now: Instant) -> Option<Instant> {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.per)
        {
            self.sent.pop_front();
        }
        let mut free = now;
        if let Some(oldest_counted) = self.sent.len().checked_sub(self.allowed())
            && let Some(at) = self.sent.get(oldest_counted)
        {
            free = free.max(*at + self.per);
        }
        if let Some(last) = self.sent.back() {
            free = free.max(*last + self.gap / 2);
        }
        (free > now).then_some(free)
    }

    /// A check placed in `epoch` was answered; `refused` when with a 429, which
    /// slows the checks down (the spacing doubles, once per epoch: the 429s of
    /// checks placed before the last slow-down say nothing new) until answers come
    /// back (it shrinks by an eighth per answer).
    pub fn answered(&mut self, refused: bool, epoch: u64, now: Instant) {
        if refused {
            if epoch != self.epoch {
                return;
            }
            self.epoch += 1;
            self.gap = (self.gap * 2).min(self.base * MAX_SLOWDOWN);
            // The places already handed out keep theirs; the next waits a gap.
            self.next = Some(self.next.map_or(now, |n| n.max(now)) + self.gap);
        } else if self.gap > self.base {
            self.gap = (self.gap - self.gap / 8).max(self.base);
        }
    }

    pub fn gap(&self) -> Duration {
        self.gap
    }
}

/// What every job shares about status checks: the pace, the times seen, the bounds.
#[derive(Debug)]
pub struct Polls {
    /// The pace and the turn of each account of the run's keys.
    pace: Vec<Mutex<PollPace>>,
    turn: Vec<tokio::sync::Mutex<()>>,
    slots: tokio::sync::Semaphore,
    seen: Mutex<Seen>,
    learn: bool,
    pub limits: Limits,
}

/// The kind of a job's task, for the times the schedule learns: its model, and its
/// resolution when the request names one.
pub fn kind(job: &Job) -> String {
    let model = job.request.model.as_str();
    if job.extend.is_some() {
        // An extend renders a continuation: a kind of its own.
        return format!("{model}:extend");
    }
    match job.request.resolution {
        Some(resolution) => format!("{model}:{}", resolution.as_str()),
        None => model.to_owned(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Polls {
    /// Checks at most `rate`, `slots` of them in flight at most; `learn`: when to
    /// check from the tasks seen done, else every `limits.cap`.
    pub fn new(rate: Rate, limits: Limits, slots: usize, learn: bool) -> Polls {
        Polls::of_accounts(1, rate, limits, slots, learn)
    }

    /// [`Polls::new`] for `accounts` accounts, each paced at `rate` on its own; the
    /// request slots and what the checks learn are the run's.
    pub fn of_accounts(
        accounts: usize,
        rate: Rate,
        limits: Limits,
        slots: usize,
        learn: bool,
    ) -> Polls {
        let accounts = accounts.max(1);
        Polls {
            pace: (0..accounts)
                .map(|_| Mutex::new(PollPace::new(rate)))
                .collect(),
            turn: (0..accounts).map(|_| tokio::sync::Mutex::new(())).collect(),
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            seen: Mutex::new(Seen::default()),
            learn,
            limits,
        }
    }

    /// How long a task of `kind` submitted `elapsed` ago waits for its next check.
    pub fn wait(&self, kind: &str, elapsed: Duration) -> Duration {
        let expect = if self.learn {
            lock(&self.seen).outlook(kind)
        } else {
            None
        };
        schedule::next_wait(expect, elapsed, self.limits)
    }

    /// The pace of `account` (an unknown one: the first's).
    fn pace(&self, account: usize) -> MutexGuard<'_, PollPace> {
        lock(self.pace.get(account).unwrap_or(&self.pace[0]))
    }

    /// The place of a check of `account` that is due now, and the pace's epoch it
    /// was placed in.
    pub fn reserve(&self, account: usize) -> (Instant, u64) {
        self.pace(account).reserve(Instant::now())
    }

    /// Takes the turn to send a check: one check at a time waits for the window,
    /// and then for a request slot, so that checks that come due together neither
    /// hold request slots while they wait for the window nor race for it.
    pub async fn turn(&self, account: usize) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.get(account).unwrap_or(&self.turn[0]).lock().await
    }

    /// A request slot for a check; `None` once the slots are closed.
    pub async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    /// Waits until the window lets a check leave (the caller holds the turn).
    pub async fn until_free(&self, account: usize) {
        loop {
            let free = self.pace(account).free_at(Instant::now());
            match free {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Counts a check that leaves now; waits first if the window is full after
    /// all (it is not, while the caller holds the turn).
    pub async fn send(&self, account: usize) {
        loop {
            let free = self.pace(account).send(Instant::now());
            match free {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// A check placed in `epoch` was answered, `refused` with a 429 or not.
    pub fn answered(&self, account: usize, refused: bool, epoch: u64) {
        self.pace(account).answered(refused, epoch, Instant::now());
    }

    /// A task of `kind` submitted in this run was found generating `age` after its
    /// submission.
    pub fn generating(&self, kind: &str, age: Duration) {
        lock(&self.seen).generating(kind, age);
    }

    /// A task of `kind` submitted in this run was found done `done` after its
    /// submission; the check before found it generating at `last_generating`.
    pub fn finished(&self, kind: &str, last_generating: Option<Duration>, done: Duration) {
        lock(&self.seen).record(kind, schedule::observed(last_generating, done));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Each account's checks have their own window: one account's full window
    /// holds back none of the other's, and a 429 slows down only its own.
    #[tokio::test(start_paused = true)]
    async fn each_account_checks_at_its_own_pace() {
        let limits = Limits {
            min: Duration::ZERO,
            cap: Duration::from_secs(15),
        };
        let polls = Polls::of_accounts(2, rate(2, 1000), limits, 8, false);
        let start = Instant::now();
        for account in [0, 1] {
            polls.send(account).await;
            polls.send(account).await;
        }
        assert_eq!(
            start.elapsed(),
            500 * MS,
            "each window took its two checks, half a gap apart"
        );
        polls.send(0).await;
        assert_eq!(
            start.elapsed(),
            1000 * MS,
            "account 0's third check waited for its window"
        );
        let (_, epoch) = polls.reserve(1);
        polls.answered(1, true, epoch);
        let (a, _) = polls.reserve(0);
        let (b, _) = polls.reserve(1);
        assert!(b > a, "only account 1 was slowed down by its 429");
    }

    fn rate(count: u32, per_ms: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_millis(per_ms),
        }
    }

    #[test]
    fn places_are_evenly_spaced_from_the_first_and_never_in_the_past() {
        let mut pace = PollPace::new(rate(8, 1000));
        let t0 = Instant::now();
        let places: Vec<Instant> = (0..4).map(|_| pace.reserve(t0).0).collect();
        assert_eq!(places, [t0, t0 + 125 * MS, t0 + 250 * MS, t0 + 375 * MS]);
        let later = t0 + 2000 * MS;
        assert_eq!(pace.reserve(later).0, later, "a free timetable starts now");
        assert_eq!(pace.reserve(later).0, later + 125 * MS);
    }

    #[test]
    fn bunched_sends_never_exceed_the_count_in_a_window() {
        let mut pace = PollPace::new(rate(4, 100));
        let mut rng = fastrand::Rng::with_seed(3);
        let mut now = Instant::now();
        let mut sends = Vec::new();
        for _ in 0..400 {
            // Wake-ups come in bursts: several at the same instant.
            if let Some(at) = pace.send(now) {
                assert!(at > now);
                now = at;
                assert_eq!(pace.send(now), None, "free at the time it said");
            }
            sends.push(now);
            if rng.u8(..4) == 0 {
                now += MS * rng.u32(0..60);
            }
        }
        for five in sends.windows(5) {
            assert!(five[4] - five[0] >= 100 * MS, "{:?}", five[4] - five[0]);
        }
        for two in sends.windows(2) {
            assert!(two[1] - two[0] >= 12_500 * MS / 1000, "half the spacing");
        }
    }

    #[test]
    fn a_429_slows_the_checks_down_until_answers_come_back() {
        let mut pace = PollPace::new(rate(10, 1000));
        let t0 = Instant::now();
        let (first, epoch) = pace.reserve(t0);
        let (_, same_epoch) = pace.reserve(t0);
        assert_eq!(first, t0);
        pace.answered(true, epoch, t0);
        assert_eq!(pace.gap(), 200 * MS);
        let (next, later_epoch) = pace.reserve(t0);
        assert_eq!(
            next,
            t0 + 400 * MS,
            "the places handed out, then a doubled gap"
        );
        pace.answered(true, same_epoch, t0);
        assert_eq!(
            pace.gap(),
            200 * MS,
            "placed before the slow-down: nothing new"
        );
        pace.answered(true, later_epoch, t0);
        assert_eq!(pace.gap(), 400 * MS);
        for _ in 0..10 {
            let (_, epoch) = pace.reserve(t0);
            pace.answered(true, epoch, t0);
        }
        assert_eq!(pace.gap(), 6400 * MS, "at most 64 times slower");
        for _ in 0..100 {
            pace.answered(false, 0, t0);
        }
        assert_eq!(pace.gap(), 100 * MS, "back to the rate");
    }

    #[test]
    fn while_slowed_down_the_window_lets_fewer_checks_through() {
        let mut pace = PollPace::new(rate(8, 1000));
        let t0 = Instant::now();
        let (_, epoch) = pace.reserve(t0);
        pace.answered(true, epoch, t0);
        let (_, epoch) = pace.reserve(t0);
        pace.answered(true, epoch, t0);
        // A quarter of the rate: places handed out before are held back here.
        assert_eq!(pace.send(t0), None);
        assert_eq!(
            pace.send(t0),
            Some(t0 + 250 * MS),
            "half the (slowed) spacing"
        );
        assert_eq!(pace.send(t0 + 250 * MS), None);
        assert_eq!(
            pace.send(t0 + 500 * MS),
            Some(t0 + 1000 * MS),
            "two per window"
        );
        assert_eq!(pace.send(t0 + 1000 * MS), None);
    }

    #[test]
    fn a_kind_is_the_model_and_the_resolution_asked_for() {
        let job = |extra: serde_json::Value| {
            let mut body = serde_json::json!({ "prompt": "x", "model": "veo3" });
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            let raw = crate::request::RawRequest::from_json(&body).expect("raw");
            let request = crate::request::check(&raw).result.expect("valid");
            Job {
                id: "a".into(),
                fingerprint: request.fingerprint(),
                request,
                upgrade: None,
                keep_original: false,
                origin: crate::manifest::Origin::default(),
                file_stem: None,
                local_images: Vec::new(),
                extend: None,
            }
        };
        assert_eq!(kind(&job(serde_json::json!({}))), "veo3");
        assert_eq!(
            kind(&job(serde_json::json!({ "resolution": "1080p" }))),
            "veo3:1080p"
        );
    }
}
