//! The key pool as a run uses it: a client per key of the ring, the pool's state
//! ([`Pool`]) behind one lock, and each account's generate pace (the service's
//! window is the account's). Which key a submission goes with is the pool's pick;
//! which key a task's later calls (status, upgrades, download link, an extend of
//! it) go with is [`Pooled::for_task`]'s: one of the account that made it, since
//! the service answers "record is null" to a key of any other.
//!
//! One key is the pool of one account: a run with one key sends, paces and stops
//! as it always has.

use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use tokio::time::Instant;

use super::accounts::{KeyReport, KeyState, Pick, Pool};
use super::pace::Pace;
use crate::api::{Client, KeyRing};
use crate::checkpoint::Record;
use crate::units::Rate;

/// How the stop message of a pool with no key left starts.
pub const NO_KEY_CAN_SEND: &str = "no key of any account can send";

/// The run's keys, their clients and their accounts' generate paces.
pub struct Pooled {
    /// One client per key of the ring, in its order (the pool's key indices).
    clients: Vec<Client>,
    pool: Mutex<Pool>,
    /// The accounts' names, in the pool's order.
    names: Vec<String>,
    /// Each account's generate pace.
    paces: Vec<Mutex<Pace>>,
}

/// Why a task's calls have no key in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoKeyForTask {
    pub account: String,
    pub key_id: String,
}

impl std::fmt::Display for NoKeyForTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let account = if self.account.is_empty() {
            "the unnamed account".to_owned()
        } else {
            format!("account `{}`", self.account)
        };
        if !self.key_id.is_empty() {
            write!(f, "{account} (key id {})", self.key_id)?;
        } else {
            f.write_str(&account)?;
        }
        f.write_str(" has no usable key in the keys given to this run")
    }
}

impl Pooled {
    /// The pool of `ring`, every key calling through `base`'s connection pools;
    /// each account sends at most `rate`.
    pub fn new(base: &Client, ring: &KeyRing, rate: Rate) -> anyhow::Result<Pooled> {
        let clients = ring
            .keys()
            .iter()
            .map(|k| base.with_key(k))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("failed to set up a client for every api key")?;
        let names: Vec<String> = ring.accounts().into_iter().map(str::to_owned).collect();
        // One account keeps its window in its pace alone, as a run with one key
        // always has; several also rank and skip full windows in the pool.
        let pool_rate = (names.len() > 1).then_some(rate);
        Ok(Pooled {
            clients,
            pool: Mutex::new(Pool::new(ring, pool_rate)),
            paces: names.iter().map(|_| Mutex::new(Pace::new(rate))).collect(),
            names,
        })
    }

    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client of `key` (an unknown index: the first key's).
    pub fn client(&self, key: usize) -> &Client {
        self.clients.get(key).unwrap_or(&self.clients[0])
    }

    /// The number of keys.
    pub fn keys(&self) -> usize {
        self.clients.len()
    }

    /// The accounts' names, in the key file's order.
    pub fn accounts(&self) -> &[String] {
        &self.names
    }

    /// The generate pace of account `a`.
    pub fn pace(&self, a: usize) -> Option<MutexGuard<'_, Pace>> {
        self.paces.get(a).and_then(|p| p.lock().ok())
    }

    /// Counts the sends of the run before, per account, so that a run resumed at
    /// once does not overfill any account's window.
    pub fn remember(&self, records: &[Record]) {
        for (a, name) in self.names.iter().enumerate() {
            if let Some(mut pace) = self.pace(a) {
                let one = self.names.len() == 1;
                pace.remember(records.iter().filter(|r| one || r.account == *name));
            }
        }
    }

    /// The key a task made by `account` with key `key_id` is asked about with: that
    /// key while it is not refused, else another usable one of its account. A row
    /// written before accounts were recorded (both empty) belongs to the only
    /// account when there is one.
    pub fn for_task(&self, account: &str, key_id: &str) -> Result<usize, NoKeyForTask> {
        let pool = self.pool();
        let usable = |k: usize| {
            pool.key_state(k)
                .is_some_and(|(s, _)| !matches!(s, KeyState::Dead { .. }))
        };
        if !key_id.is_empty()
            && let Some(k) = self
                .clients
                .iter()
                .position(|c| c.key_id().as_str() == key_id)
            && usable(k)
        {
            return Ok(k);
        }
        let name = if account.is_empty() && key_id.is_empty() && self.names.len() == 1 {
            self.names[0].as_str()
        } else {
            account
        };
        pool.key_of_account(name).ok_or_else(|| NoKeyForTask {
            account: account.to_owned(),
            key_id: key_id.to_owned(),
        })
    }

    /// A client of each account whose keys are not all refused, for its balance.
    pub fn account_clients(&self) -> Vec<(String, Client)> {
        let pool = self.pool();
        self.names
            .iter()
            .filter_map(|name| {
                let k = pool.key_of_account(name)?;
                Some((name.clone(), self.client(k).clone()))
            })
            .collect()
    }

    /// The pick for a submission (of account `only`, for an extend).
    pub fn pick(&self, only: Option<usize>) -> Pick {
        self.pool().pick_in(Instant::now(), only)
    }

    /// What became of each key, one line each, by key id: why no key can send.
    pub fn report(&self) -> (String, bool) {
        let report = self.pool().report();
        let money = report
            .iter()
            .any(|r| r.account_out_of_credits || r.state == KeyState::Capped);
        let lines: Vec<String> = report.iter().map(line).collect();
        (format!("{NO_KEY_CAN_SEND}: {}", lines.join("; ")), money)
    }
}

/// One key's line: `acme-a/1a2b3c4d: capped (433)`.
fn line(r: &KeyReport) -> String {
    let what = match r.state {
        KeyState::Dead { code } => format!("refused ({code})"),
        KeyState::Capped => "past its usage cap (433), rested until the next run".to_owned(),
        KeyState::Ready if r.account_out_of_credits => "account out of credits (402)".to_owned(),
        KeyState::Ready => "ready".to_owned(),
    };
    match r.account.as_str() {
        "" => format!("{}: {what}", r.key_id),
        account => format!("{account}/{}: {what}", r.key_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKey, ClientConfig, KeyId};
    use crate::runner::accounts::Refusal;

    fn pooled(text: &str) -> Pooled {
        let ring = KeyRing::parse(text, "keys", "line", false).unwrap();
        let base = Client::new(ClientConfig::new("http://127.0.0.1:9", ApiKey::new("x"))).unwrap();
        Pooled::new(&base, &ring, Rate::KIE_DEFAULT).unwrap()
    }

    fn id(key: &str) -> String {
        KeyId::of(&ApiKey::new(key)).to_string()
    }

    #[test]
    fn a_task_is_asked_about_with_its_own_key_or_another_of_its_account() {
        let p = pooled("a ka1\na ka2\nb kb1");
        assert_eq!(p.for_task("a", &id("ka2")), Ok(1));
        assert_eq!(p.for_task("b", &id("kb1")), Ok(2));
        // A key no longer in the file: another of the same account.
        assert_eq!(p.for_task("a", &id("gone")), Ok(0));
        p.pool().refused(
            1,
            Refusal::KeyRefused { code: 401 },
            Instant::now(),
            Default::default(),
        );
        assert_eq!(p.for_task("a", &id("ka2")), Ok(0));
        // An account without a key today: said, with its key id.
        let missing = p.for_task("c", &id("kc1")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!(
                "account `c` (key id {}) has no usable key in the keys given to this run",
                id("kc1")
            )
        );
        // A row from before accounts were recorded names none of several.
        assert!(p.for_task("", "").is_err());
    }

    #[test]
    fn a_row_without_an_account_belongs_to_the_only_one() {
        let p = pooled("team k1\nteam k2");
        assert_eq!(p.for_task("", ""), Ok(0));
    }

    #[test]
    fn the_report_names_every_key_by_id_and_never_the_key() {
        let p = pooled("a ka1\na ka2\nb kb1");
        let now = Instant::now();
        p.pool().refused(
            0,
            Refusal::KeyRefused { code: 401 },
            now,
            Default::default(),
        );
        p.pool()
            .refused(1, Refusal::KeyCapped, now, Default::default());
        p.pool()
            .refused(2, Refusal::OutOfCredits, now, Default::default());
        let (text, money) = p.report();
        assert!(money);
        assert_eq!(
            text,
            format!(
                "no key of any account can send: a/{}: refused (401); a/{}: past its usage cap (433), rested until the next run; b/{}: account out of credits (402)",
                id("ka1"),
                id("ka2"),
                id("kb1")
            )
        );
        for key in ["ka1", "ka2", "kb1"] {
            assert!(!text.contains(&format!("{key}:")), "{text}");
        }
    }
}
