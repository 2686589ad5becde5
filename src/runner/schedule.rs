//! When to check a task next: a pure function of what the run has seen.
//!
//! Every status check of a task that is still generating is wasted, and a run
//! shares one budget of checks (`--poll-rate`) among all its tasks. So a task is
//! first checked near the time tasks of its kind (model and resolution) took in this
//! run: when the first twentieth of them were done, plus a tenth, but not after
//! the first third were; then at short steps until it is done: a tenth of the time
//! it has taken so far, so a video waits about 5% of its generation time for its
//! download. A kind whose times are close together is then mostly done at its
//! first or second check; one whose times spread wide is checked from its earliest.
//!
//! Until the run has seen a few tasks of a kind finish, the prior is what it has
//! seen of that kind still generating: a task is first checked at the age at which
//! three others of its kind were last found still generating (never later than any
//! of its kind was found done). Tasks submitted early in a run are then checked at
//! about their own age at each check (an early one often, a later one a few times)
//! instead of every interval; the oldest of a kind (and every task before anything
//! is known), every `--poll-interval`. Other
//! kinds are no prior: a batch ordered by model would make its fast kind wait for
//! the slow one.
//!
//! The bounds: a check never comes sooner than `min` after the last one, and never
//! later than `cap` (`--poll-interval`) once the task may be done; before that, a
//! task waits for the age its kind's tasks were seen to need, and no longer.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How many generation times of a kind are kept: the recent ones, so that a
/// service that slows down or speeds up is followed.
const KEPT: usize = 64;
/// A kind's times are trusted once this many were seen.
const TRUSTED: usize = 3;
/// The first check comes at most at this quantile of the kind's times ...
const FIRST_QUANTILE: f64 = 0.3;
/// ... and at most a tenth after this one (a kind's earliest, but for outliers).
const EARLY_QUANTILE: f64 = 0.05;
/// How much later than its kind's earliest a task is first checked, at most.
const EARLY_SLACK: f64 = 1.1;
/// After the first check, the step is this share of the time the task has taken.
const STEP: f64 = 0.1;

/// The bounds of the wait between two checks of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The shortest wait between two checks.
    pub min: Duration,
    /// The longest wait once a task may be done (`--poll-interval`).
    pub cap: Duration,
}

impl Limits {
    /// The shortest wait, never above the cap.
    fn floor(self) -> Duration {
        self.min.min(self.cap)
    }
}

/// What the run expects of a kind of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// When to check first, from the task's submission.
    pub first: Duration,
    /// Whether tasks of the kind were seen done. If not, `first` only says how
    /// long some were seen generating, and a task past it (one of the oldest of its
    /// kind) is checked every `cap`: nothing says it may be done soon.
    pub seen_done: bool,
}

/// How long to wait before the next check of a task submitted `elapsed` ago.
pub fn next_wait(expect: Option<Expect>, elapsed: Duration, limits: Limits) -> Duration {
    let floor = limits.floor();
    let Some(expect) = expect else {
        return limits.cap;
    };
    if elapsed + floor <= expect.first {
        return expect.first - elapsed;
    }
    if !expect.seen_done {
        return limits.cap;
    }
    elapsed.mul_f64(STEP).clamp(floor, limits.cap)
}

/// A task done at its first check is taken to have finished this much before it
/// (a share of its age): a little, so that a kind's first check moves earlier
/// when its tasks get faster, and not so much that it drifts below them.
const DONE_AT_FIRST: f64 = 0.03;

/// The generation time a finished task stands for: the middle between the last
/// check that found it generating and the one that found it done, or a little
/// before the check that found it done at once.
pub fn observed(last_generating: Option<Duration>, done: Duration) -> Duration {
    match last_generating {
        Some(lo) if lo < done => lo + (done - lo) / 2,
        Some(_) => done,
        None => done.saturating_sub(done.mul_f64(DONE_AT_FIRST)),
    }
}

/// The generation times of one kind, most recent last, and what they make expected.
#[derive(Debug, Default)]
struct Times {
    kept: VecDeque<Duration>,
    /// From `kept`, once there are enough of them.
    trusted: Option<Expect>,
    /// The shortest of `kept`.
    shortest: Option<Duration>,
    /// The largest ages at which tasks of the kind were found generating, smallest
    /// first; counts only once all are filled.
    generating: [Option<Duration>; TRUSTED],
}

impl Times {
    fn push(&mut self, took: Duration) {
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(took);
        self.shortest = self.kept.iter().min().copied();
        if self.kept.len() >= TRUSTED {
            let mut sorted: Vec<Duration> = self.kept.iter().copied().collect();
            sorted.sort_unstable();
            let at = |q| sorted[quantile_index(sorted.len(), q)];
            let first = at(FIRST_QUANTILE).min(at(EARLY_QUANTILE).mul_f64(EARLY_SLACK));
            self.trusted = Some(Expect {
                first,
                seen_done: true,
            });
        }
    }

    fn still_generating(&mut self, age: Duration) {
        // Replaces the smallest, keeping them sorted: three comparisons at most.
        if self.generating[0].is_some_and(|least| age <= least) {
            return;
        }
        self.generating[0] = Some(age);
        self.generating.sort_unstable();
    }

    fn outlook(&self) -> Option<Expect> {
        if self.trusted.is_some() {
            return self.trusted;
        }
        // The third-oldest age found generating: a single stuck task is no prior.
        let first = self.generating[0]?;
        Some(Expect {
            first: self.shortest.map_or(first, |s| first.min(s)),
            seen_done: self.shortest.is_some(),
        })
    }
}

fn quantile_index(len: usize, q: f64) -> usize {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index below a small length"
    )]
    let at = (q * (len - 1) as f64).floor() as usize;
    at.min(len - 1)
}

/// What the run has seen of its tasks, by kind.
#[derive(Debug, Default)]
pub struct Seen {
    kinds: HashMap<String, Times>,
}

impl Seen {
    /// The times of `kind`, made the first time (a lookup by `&str` otherwise, not a
    /// copy of the kind per check).
    fn times(&mut self, kind: &str) -> Option<&mut Times> {
        if !self.kinds.contains_key(kind) {
            self.kinds.insert(kind.to_owned(), Times::default());
        }
        self.kinds.get_mut(kind)
    }

    /// A task of `kind` took `took` to generate.
    pub fn record(&mut self, kind: &str, took: Duration) {
        if let Some(times) = self.times(kind) {
            times.push(took);
        }
    }

    /// A task of `kind` was found still generating at `age`.
    pub fn generating(&mut self, kind: &str, age: Duration) {
        if let Some(times) = self.times(kind) {
            times.still_generating(age);
        }
    }

    /// What to expect of a task of `kind`: see the module's documentation.
    pub fn outlook(&self, kind: &str) -> Option<Expect> {
        self.kinds.get(kind).and_then(Times::outlook)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (0u64..20_000, 1u64..60_000).prop_map(|(min, cap)| Limits {
            min: ms(min),
            cap: ms(cap),
        })
    }

    fn expect() -> impl Strategy<Value = Option<Expect>> {
        proptest::option::of(
            (0u64..600_000, any::<bool>()).prop_map(|(n, seen_done)| Expect {
                first: ms(n),
                seen_done,
            }),
        )
    }

    proptest! {
        #[test]
        fn never_before_the_minimum_nor_beyond_the_cap_once_a_task_may_be_done(
            limits in limits(),
            expect in expect(),
            elapsed in (0u64..3_600_000).prop_map(ms),
        ) {
            let wait = next_wait(expect, elapsed, limits);
            prop_assert!(wait >= limits.min.min(limits.cap), "{wait:?} before the minimum");
            match expect {
                // Before the time its kind was seen done: the check comes then.
                Some(e) if elapsed + limits.floor() <= e.first => {
                    prop_assert_eq!(elapsed + wait, e.first);
                }
                _ => prop_assert!(wait <= limits.cap, "{wait:?} beyond the cap {:?}", limits.cap),
            }
        }

        #[test]
        fn the_first_check_lies_within_the_times_seen(
            times in proptest::collection::vec(1u64..600_000, 1..200),
        ) {
            let mut seen = Seen::default();
            for n in &times {
                seen.record("veo3_fast", ms(*n));
            }
            let kept = &times[times.len().saturating_sub(KEPT)..];
            let lo = ms(kept.iter().min().copied().unwrap_or_default());
            let hi = ms(kept.iter().max().copied().unwrap_or_default());
            match seen.outlook("veo3_fast") {
                None => prop_assert!(times.len() < TRUSTED),
                Some(e) => {
                    prop_assert!(e.first >= lo && e.first <= hi, "{:?} outside {lo:?}..{hi:?}", e.first);
                    let below = kept.iter().filter(|n| ms(**n) < e.first).count();
                    let mut sorted = kept.to_vec();
                    sorted.sort_unstable();
                    let early = ms(sorted[quantile_index(sorted.len(), EARLY_QUANTILE)]);
                    prop_assert!(e.first <= early.mul_f64(EARLY_SLACK), "{:?}: beyond the earliest + 10%", e.first);
                    prop_assert!(below as f64 <= FIRST_QUANTILE * kept.len() as f64, "{below} of {} sooner", kept.len());
                }
            }
        }

        #[test]
        fn an_untrusted_kind_waits_no_longer_than_its_evidence(
            generating in proptest::collection::vec(1u64..600_000, 0..20),
            done in proptest::collection::vec(1u64..600_000, 0..TRUSTED),
        ) {
            let mut seen = Seen::default();
            for n in &generating {
                seen.generating("k", ms(*n));
            }
            for n in &done {
                seen.record("k", ms(*n));
            }
            let mut sorted = generating.clone();
            sorted.sort_unstable();
            let third = sorted.iter().rev().nth(TRUSTED - 1).copied();
            let shortest = done.iter().min().copied();
            let want = third.map(|g| ms(shortest.map_or(g, |d| g.min(d))));
            prop_assert_eq!(seen.outlook("k").map(|e| e.first), want);
        }

        #[test]
        fn an_observation_lies_between_its_checks(
            lo in proptest::option::of(0u64..600_000),
            done in 0u64..600_000,
        ) {
            let took = observed(lo.map(ms), ms(done));
            prop_assert!(took <= ms(done));
            if let Some(lo) = lo.filter(|lo| *lo <= done) {
                prop_assert!(took >= ms(lo));
            }
        }
    }

    #[test]
    fn without_anything_seen_a_task_is_checked_every_interval() {
        let limits = Limits {
            min: 2000 * MS,
            cap: 15_000 * MS,
        };
        assert_eq!(next_wait(None, Duration::ZERO, limits), limits.cap);
        assert_eq!(next_wait(None, 600_000 * MS, limits), limits.cap);
    }

    #[test]
    fn a_task_is_first_checked_when_its_kind_finishes_then_at_short_steps() {
        let secs = Duration::from_secs;
        let limits = Limits {
            min: 2000 * MS,
            cap: 15_000 * MS,
        };
        let mut seen = Seen::default();
        for s in [118, 120, 121, 125, 130, 119, 122, 124, 126, 128] {
            seen.record("veo3_fast:1080p", secs(s));
        }
        let fast = seen.outlook("veo3_fast:1080p");
        // A third of the way through the sorted times (120 s), which is within a
        // tenth of the earliest.
        assert_eq!(
            fast,
            Some(Expect {
                first: secs(120),
                seen_done: true
            })
        );
        assert_eq!(
            next_wait(fast, Duration::ZERO, limits),
            secs(120),
            "beyond the cap: hardly any of its kind was done sooner"
        );
        assert_eq!(next_wait(fast, secs(10), limits), secs(110));
        assert_eq!(next_wait(fast, secs(120), limits), 12_000 * MS);
        assert_eq!(next_wait(fast, secs(300), limits), limits.cap);
        let short = Some(Expect {
            first: secs(5),
            seen_done: true,
        });
        assert_eq!(next_wait(short, secs(6), limits), limits.min);
        let unseen = Some(Expect {
            first: secs(5),
            seen_done: false,
        });
        assert_eq!(next_wait(unseen, secs(1), limits), secs(4));
        assert_eq!(
            next_wait(unseen, secs(6), limits),
            limits.cap,
            "an explorer"
        );
        assert_eq!(seen.outlook("veo3"), None, "another kind is no prior");
    }

    #[test]
    fn a_wide_kind_is_first_checked_near_its_earliest() {
        let mut seen = Seen::default();
        for s in (60..=300).step_by(4) {
            seen.record("veo3", Duration::from_secs(s));
        }
        // A third of the way would be 132 s: more than a minute's wait for the
        // fastest. The twentieth (72 s) plus a tenth instead.
        assert_eq!(
            seen.outlook("veo3").map(|e| e.first),
            Some(Duration::from_secs(72).mul_f64(EARLY_SLACK))
        );
    }

    #[test]
    fn before_a_kind_is_seen_done_its_tasks_wait_for_the_age_three_were_seen_generating() {
        let s = Duration::from_secs;
        let mut seen = Seen::default();
        seen.generating("veo3", s(40));
        seen.generating("veo3", s(90));
        assert_eq!(seen.outlook("veo3"), None, "two are not enough");
        seen.generating("veo3", s(30));
        assert_eq!(seen.outlook("veo3").map(|e| e.first), Some(s(30)));
        seen.generating("veo3", s(120));
        seen.generating("veo3", s(10));
        assert_eq!(
            seen.outlook("veo3").map(|e| e.first),
            Some(s(40)),
            "the third oldest"
        );
        seen.record("veo3", s(35));
        assert_eq!(
            seen.outlook("veo3").map(|e| e.first),
            Some(s(35)),
            "never later than one of its kind was done"
        );
        seen.record("veo3", s(200));
        seen.record("veo3", s(210));
        assert_eq!(
            seen.outlook("veo3").map(|e| e.first),
            Some(s(35)),
            "trusted"
        );
        assert_eq!(seen.outlook("veo3_fast"), None);
    }

    #[test]
    fn the_times_kept_are_the_recent_ones() {
        let mut seen = Seen::default();
        for _ in 0..KEPT {
            seen.record("k", Duration::from_secs(300));
        }
        for _ in 0..KEPT {
            seen.record("k", Duration::from_secs(60));
        }
        assert_eq!(
            seen.outlook("k").map(|e| e.first),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn observations() {
        let s = Duration::from_secs;
        assert_eq!(observed(Some(s(100)), s(110)), s(105));
        assert_eq!(observed(None, s(100)), s(97));
        assert_eq!(observed(Some(s(120)), s(110)), s(110));
    }
}
