//! The key pool: per-account and per-key state over several accounts, which key a
//! submission goes with, and the failover rule. Pure: time is passed in, nothing
//! here sends or sleeps, so the dispatcher owns when things happen.
//!
//! The service's limits and credits belong to the account, so the generate window
//! and the balance are kept per account; a usage cap belongs to one key, and so
//! does a refusal of the key. What each answer does:
//! - 429 rests that account's window (never the other accounts');
//! - 433 rests that key until the next run (a cap may be daily: asking again every
//!   few seconds would only collect 433s);
//! - 401/403 marks that key dead;
//! - 402 marks the account out of credits (every key of it).
//!
//! A submission may go again on another key only after an answer that proves no
//! task was made ([`Refusal::of`]); an in-doubt generate is never sent on another
//! key, whatever happened to it.
//!
//! The run holds it in [`super::pooled`], beside a client per key and each
//! account's paces.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::{ApiError, ErrorClass, KeyId, KeyRing};
use crate::units::Rate;

/// An answer to a generate (or extend) call that proves no task was made, and so
/// allows the job to go on another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection was refused: nothing was sent.
    NotConnected,
    /// 429: the account's window is full.
    RateLimited,
    /// 401 or 403: the service refuses this key.
    KeyRefused { code: i64 },
    /// 402: the account has no credits left.
    OutOfCredits,
    /// 433: the key is past its own usage cap.
    KeyCapped,
}

impl Refusal {
    /// The refusal `e` is, or `None` when it does not prove that no task was made
    /// (in doubt: a timeout or a connection lost after sending), or proves it for a
    /// reason another key would not change (a refused request, a server error):
    /// those follow the retry and in-doubt rules of a single key.
    pub fn of(e: &ApiError) -> Option<Refusal> {
        if e.class == ErrorClass::InDoubt {
            return None;
        }
        match e.code {
            Some(429) => Some(Refusal::RateLimited),
            Some(code @ (401 | 403)) => Some(Refusal::KeyRefused { code }),
            Some(402) => Some(Refusal::OutOfCredits),
            Some(433) => Some(Refusal::KeyCapped),
            // The client classes only a refused connection as retryable without a
            // code: every other code-less failure may have reached the service.
            None if e.class == ErrorClass::Retryable => Some(Refusal::NotConnected),
            _ => None,
        }
    }
}

/// What became of one key in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// It may send.
    Ready,
    /// It answered 433: rested until the next run. It may still poll its tasks.
    Capped,
    /// It was refused (401/403): never used again this run.
    Dead { code: i64 },
}

/// What the pool says about the next submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Send with this key (an index into the ring's keys).
    Send(usize),
    /// Every account that can send is resting or has a full window: ask again then.
    Wait(Instant),
    /// No key of any account can send: every key is dead or capped, or its
    /// account is out of credits. The run stops (exit 3).
    NoKeyCanSend,
}

/// One key's line in the pool's report (by key id, never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyReport {
    pub account: String,
    pub key_id: KeyId,
    pub state: KeyState,
    /// Its account was out of credits (402).
    pub account_out_of_credits: bool,
}

#[derive(Debug)]
struct Account {
    name: String,
    /// Send times within the generate window.
    window: VecDeque<Instant>,
    /// After a 429: no send from this account before then.
    rested_until: Option<Instant>,
    out_of_credits: bool,
    /// The last balance known (measured spend); `None`: not read.
    credits: Option<f64>,
}

#[derive(Debug)]
struct Key {
    account: usize,
    id: KeyId,
    state: KeyState,
}

/// The state of every account and key of a ring, for one run.
#[derive(Debug)]
pub struct Pool {
    accounts: Vec<Account>,
    keys: Vec<Key>,
    /// The generate window of each account; `None`: no limit.
    rate: Option<Rate>,
}

impl Pool {
    pub fn new(ring: &KeyRing, rate: Option<Rate>) -> Pool {
        let names = ring.accounts();
        let accounts = names
            .iter()
            .map(|name| Account {
                name: (*name).to_owned(),
                window: VecDeque::new(),
                rested_until: None,
                out_of_credits: false,
                credits: None,
            })
            .collect();
        let keys = ring
            .keys()
            .iter()
            .map(|k| Key {
                account: names.iter().position(|n| *n == k.account).unwrap_or(0),
                id: k.id.clone(),
                state: KeyState::Ready,
            })
            .collect();
        Pool {
            accounts,
            keys,
            rate,
        }
    }

    /// The key the next submission goes with: a ready key of the account that
    /// can send now with the most credits left (unknown balances rank above known
    /// ones, so that an account is read before it is judged), then the emptier
    /// window, then the order of the key file.
    pub fn pick(&mut self, now: Instant) -> Pick {
        self.pick_in(now, None)
    }

    /// [`Pool::pick`] among the keys of account `only` when given (an extend goes
    /// with a key of the account that made the task it continues).
    pub fn pick_in(&mut self, now: Instant, only: Option<usize>) -> Pick {
        let mut best: Option<(usize, usize)> = None;
        let mut soonest: Option<Instant> = None;
        for a in 0..self.accounts.len() {
            if only.is_some_and(|o| o != a) {
                continue;
            }
            let Some(key) = self.ready_key(a) else {
                continue;
            };
            match self.free_at(a, now) {
                Some(at) => soonest = Some(soonest.map_or(at, |s| s.min(at))),
                None => {
                    if best.is_none_or(|(b, _)| self.ranks_above(a, b)) {
                        best = Some((a, key));
                    }
                }
            }
        }
        match (best, soonest) {
            (Some((_, key)), _) => Pick::Send(key),
            (None, Some(at)) => Pick::Wait(at),
            (None, None) => Pick::NoKeyCanSend,
        }
    }

    /// `a` before `b`: more credits, then fewer sends in the window.
    fn ranks_above(&self, a: usize, b: usize) -> bool {
        let credits = |i: usize| self.accounts[i].credits.unwrap_or(f64::INFINITY);
        let (ca, cb) = (credits(a), credits(b));
        if ca != cb {
            return ca > cb;
        }
        self.accounts[a].window.len() < self.accounts[b].window.len()
    }

    /// The first ready key of account `a`, when the account has credits.
    fn ready_key(&self, a: usize) -> Option<usize> {
        if self.accounts[a].out_of_credits {
            return None;
        }
        self.keys
            .iter()
            .position(|k| k.account == a && k.state == KeyState::Ready)
    }

    /// `None` when account `a` may send at `now`; else when it may. Drops the
    /// sends that left the window.
    fn free_at(&mut self, a: usize, now: Instant) -> Option<Instant> {
        let account = &mut self.accounts[a];
        let rest = account.rested_until.filter(|r| *r > now);
        let window = self.rate.and_then(|rate| {
            while account
                .window
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= rate.per)
            {
                account.window.pop_front();
            }
            (account.window.len() >= rate.count as usize)
                .then(|| account.window.front().map(|t| *t + rate.per))
                .flatten()
        });
        match (rest, window) {
            (Some(r), Some(w)) => Some(r.max(w)),
            (r, w) => r.or(w),
        }
    }

    /// A generate (or extend) call with `key` is leaving at `now`.
    pub fn sent(&mut self, key: usize, now: Instant) {
        // Without a rate nothing ever leaves the window: keep none.
        if self.rate.is_none() {
            return;
        }
        if let Some(k) = self.keys.get(key) {
            self.accounts[k.account].window.push_back(now);
        }
    }

    /// `key` was answered with `refusal` at `now`; a 429 rests its account for
    /// `rest` (what the retry policy makes of the answer's Retry-After).
    pub fn refused(&mut self, key: usize, refusal: Refusal, now: Instant, rest: Duration) {
        let Some(k) = self.keys.get_mut(key) else {
            return;
        };
        let account = &mut self.accounts[k.account];
        match refusal {
            Refusal::NotConnected => {}
            Refusal::RateLimited => {
                let until = now + rest;
                account.rested_until = Some(account.rested_until.map_or(until, |r| r.max(until)));
            }
            Refusal::KeyRefused { code } => k.state = KeyState::Dead { code },
            Refusal::OutOfCredits => account.out_of_credits = true,
            Refusal::KeyCapped => {
                // A dead key stays dead: that is what the report must say.
                if k.state == KeyState::Ready {
                    k.state = KeyState::Capped;
                }
            }
        }
    }

    /// When account `a` may send again after a 429, if it is resting at `now`.
    pub fn resting(&self, a: usize, now: Instant) -> Option<Instant> {
        self.accounts
            .get(a)
            .and_then(|x| x.rested_until)
            .filter(|r| *r > now)
    }

    /// The account of `key` (its index in the ring's accounts).
    pub fn account_of(&self, key: usize) -> usize {
        self.keys.get(key).map_or(0, |k| k.account)
    }

    /// The index of the account named `name`.
    pub fn account_index(&self, name: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.name == name)
    }

    /// The state of `key`, and whether its account is out of credits.
    pub fn key_state(&self, key: usize) -> Option<(KeyState, bool)> {
        let k = self.keys.get(key)?;
        Some((k.state, self.accounts[k.account].out_of_credits))
    }

    /// `credits` were reserved for a send with `key`: the account's balance as the
    /// pool ranks it falls by as much until it is read again.
    pub fn charged(&mut self, key: usize, credits: f64) {
        if let Some(k) = self.keys.get(key)
            && let Some(c) = self.accounts[k.account].credits.as_mut()
        {
            *c -= credits;
        }
    }

    /// The balance of `account` as last read (measured spend ranks accounts by it).
    pub fn set_credits(&mut self, account: &str, credits: f64) {
        if let Some(a) = self.accounts.iter_mut().find(|a| a.name == account) {
            a.credits = Some(credits);
        }
    }

    /// A key of `account` for a call about one of its tasks (status, upgrade,
    /// download link, extend): a ready key first, else a capped one (a cap is on
    /// making tasks); `None` when every key of it is dead or the account unknown.
    pub fn key_of_account(&self, account: &str) -> Option<usize> {
        let a = self.accounts.iter().position(|x| x.name == account)?;
        let of = |state: fn(&KeyState) -> bool| {
            self.keys
                .iter()
                .position(|k| k.account == a && state(&k.state))
        };
        of(|s| *s == KeyState::Ready).or_else(|| of(|s| *s == KeyState::Capped))
    }

    /// What happened to each key, in the key file's order.
    pub fn report(&self) -> Vec<KeyReport> {
        self.keys
            .iter()
            .map(|k| KeyReport {
                account: self.accounts[k.account].name.clone(),
                key_id: k.id.clone(),
                state: k.state,
                account_out_of_credits: self.accounts[k.account].out_of_credits,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(text, "keys", "line", false).unwrap()
    }

    /// acme-a: keys 0 and 1; acme-b: key 2.
    fn pool(rate: Option<Rate>) -> Pool {
        Pool::new(&ring("acme-a ka1\nacme-a ka2\nacme-b kb1"), rate)
    }

    fn rate(count: u32, secs: u64) -> Option<Rate> {
        Some(Rate {
            count,
            per: Duration::from_secs(secs),
        })
    }

    fn error(class: ErrorClass, code: Option<i64>) -> ApiError {
        ApiError {
            class,
            code,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn only_answers_that_prove_no_task_allow_failover() {
        use ErrorClass::*;
        let of = |class, code| Refusal::of(&error(class, code));
        assert_eq!(of(Retryable, None), Some(Refusal::NotConnected));
        assert_eq!(of(Retryable, Some(429)), Some(Refusal::RateLimited));
        assert_eq!(of(Auth, Some(401)), Some(Refusal::KeyRefused { code: 401 }));
        assert_eq!(of(Auth, Some(403)), Some(Refusal::KeyRefused { code: 403 }));
        assert_eq!(of(Credits, Some(402)), Some(Refusal::OutOfCredits));
        assert_eq!(of(Credits, Some(433)), Some(Refusal::KeyCapped));
        // In doubt: never on another key, whatever its code says.
        assert_eq!(of(InDoubt, None), None);
        assert_eq!(of(InDoubt, Some(429)), None);
        assert_eq!(of(InDoubt, Some(500)), None);
        // Refused for reasons another key would not change.
        assert_eq!(of(Failed, Some(422)), None);
        assert_eq!(of(Retryable, Some(500)), None);
        assert_eq!(of(Retryable, Some(455)), None);
        assert_eq!(of(Failed, None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_rests_its_account_only() {
        let mut p = pool(None);
        let now = Instant::now();
        let first = p.pick(now);
        assert_eq!(first, Pick::Send(0), "acme-a: first in the file");
        p.refused(0, Refusal::RateLimited, now, Duration::from_secs(5));
        assert_eq!(p.pick(now), Pick::Send(2), "acme-b goes on");
        p.refused(2, Refusal::RateLimited, now, Duration::from_secs(3));
        assert_eq!(p.pick(now), Pick::Wait(now + Duration::from_secs(3)));
        // acme-a's second key is rested with its account: keys add no throughput.
        assert_eq!(p.pick(now + Duration::from_secs(4)), Pick::Send(2));
        assert_eq!(p.pick(now + Duration::from_secs(5)), Pick::Send(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_sends_the_next_job_to_the_other_account() {
        let mut p = pool(rate(2, 10));
        let now = Instant::now();
        let mut by_account = [0, 0];
        for _ in 0..4 {
            let Pick::Send(k) = p.pick(now) else {
                panic!("a slot is free")
            };
            by_account[usize::from(k == 2)] += 1;
            p.sent(k, now);
        }
        assert_eq!(by_account, [2, 2]);
        assert_eq!(p.pick(now), Pick::Wait(now + Duration::from_secs(10)));
        assert!(matches!(
            p.pick(now + Duration::from_secs(10)),
            Pick::Send(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_capped_key_rests_for_the_run_and_its_sibling_goes_on() {
        let mut p = pool(None);
        let now = Instant::now();
        p.refused(0, Refusal::KeyCapped, now, Duration::ZERO);
        assert_eq!(p.pick(now), Pick::Send(1), "acme-a's other key");
        assert_eq!(
            p.pick(now + Duration::from_secs(86_400)),
            Pick::Send(1),
            "not until the next run"
        );
        assert_eq!(p.key_of_account("acme-a"), Some(1));
        p.refused(1, Refusal::KeyCapped, now, Duration::ZERO);
        assert_eq!(p.pick(now), Pick::Send(2));
        // Its tasks can still be asked about with a capped key.
        assert_eq!(p.key_of_account("acme-a"), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn dead_keys_and_spent_accounts_end_in_no_key_can_send_with_a_report() {
        let mut p = pool(None);
        let now = Instant::now();
        p.refused(0, Refusal::KeyRefused { code: 401 }, now, Duration::ZERO);
        p.refused(1, Refusal::KeyCapped, now, Duration::ZERO);
        assert_eq!(p.pick(now), Pick::Send(2));
        p.refused(2, Refusal::OutOfCredits, now, Duration::ZERO);
        assert_eq!(p.pick(now), Pick::NoKeyCanSend);
        assert_eq!(p.key_of_account("acme-a"), Some(1));
        assert_eq!(
            p.key_of_account("acme-b"),
            Some(2),
            "402 is the account's, not the key's"
        );
        assert_eq!(p.key_of_account("nobody"), None);
        let report: Vec<(String, KeyState, bool)> = p
            .report()
            .into_iter()
            .map(|r| (r.account, r.state, r.account_out_of_credits))
            .collect();
        assert_eq!(
            report,
            [
                ("acme-a".to_owned(), KeyState::Dead { code: 401 }, false),
                ("acme-a".to_owned(), KeyState::Capped, false),
                ("acme-b".to_owned(), KeyState::Ready, true),
            ]
        );
        assert_eq!(p.report()[2].key_id, ring("kb1").first().id);
    }

    #[tokio::test(start_paused = true)]
    async fn the_account_with_the_most_credits_left_goes_first() {
        let mut p = pool(None);
        let now = Instant::now();
        p.set_credits("acme-a", 100.0);
        p.set_credits("acme-b", 400.0);
        assert_eq!(p.pick(now), Pick::Send(2));
        p.set_credits("acme-b", 50.0);
        assert_eq!(p.pick(now), Pick::Send(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_changes_no_state() {
        let mut p = pool(None);
        let now = Instant::now();
        p.refused(0, Refusal::NotConnected, now, Duration::from_secs(9));
        assert_eq!(p.pick(now), Pick::Send(0));
        assert!(p.report().iter().all(|r| r.state == KeyState::Ready));
    }

    /// One step of a run as the pool sees it.
    #[derive(Debug, Clone)]
    enum Step {
        Send,
        Refuse(usize, u8),
        Advance(u64),
        Credits(bool, u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Send),
            2 => (0..5usize, 0..5u8).prop_map(|(k, r)| Step::Refuse(k, r)),
            2 => (0..4000u64).prop_map(Step::Advance),
            1 => (any::<bool>(), any::<u16>()).prop_map(|(a, c)| Step::Credits(a, c)),
        ]
    }

    proptest! {
        /// Whatever happens: a pick is a ready key of an account with credits, not
        /// resting and with room in its window; no account ever sends more than
        /// its rate in any window; and the pool says no key can send exactly
        /// when every key is dead or capped or its account out of credits.
        #[test]
        fn picks_respect_every_state(steps in prop::collection::vec(step(), 1..120)) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let per = Duration::from_secs(2);
                let mut p = Pool::new(
                    &ring("a k1\na k2\nb k3\nc k4\nc k5"),
                    Some(Rate { count: 3, per }),
                );
                let start = Instant::now();
                let mut now = start;
                let mut sends: Vec<Vec<Instant>> = vec![Vec::new(); 3];
                for s in steps {
                    match s {
                        Step::Send => match p.pick(now) {
                            Pick::Send(k) => {
                                let key = &p.keys[k];
                                let a = key.account;
                                prop_assert_eq!(key.state, KeyState::Ready);
                                prop_assert!(!p.accounts[a].out_of_credits);
                                prop_assert!(p.accounts[a].rested_until.is_none_or(|r| r <= now));
                                let recent = sends[a].iter().filter(|t| now.duration_since(**t) < per).count();
                                prop_assert!(recent < 3, "window of account {} full", a);
                                sends[a].push(now);
                                p.sent(k, now);
                            }
                            Pick::Wait(at) => prop_assert!(at > now),
                            Pick::NoKeyCanSend => {}
                        },
                        Step::Refuse(k, r) => {
                            let refusal = [
                                Refusal::NotConnected,
                                Refusal::RateLimited,
                                Refusal::KeyRefused { code: 401 },
                                Refusal::OutOfCredits,
                                Refusal::KeyCapped,
                            ][usize::from(r)];
                            p.refused(k, refusal, now, Duration::from_millis(1500));
                        }
                        Step::Advance(ms) => now += Duration::from_millis(ms),
                        Step::Credits(first, c) => {
                            p.set_credits(if first { "a" } else { "b" }, f64::from(c));
                        }
                    }
                    let none_can = p.keys.iter().all(|k| {
                        k.state != KeyState::Ready || p.accounts[k.account].out_of_credits
                    });
                    prop_assert_eq!(none_can, p.pick(now) == Pick::NoKeyCanSend);
                }
                Ok(())
            })?;
        }
    }
}
