//! The simulator's accounts and keys: which account a key belongs to, each
//! account's generate and poll windows and balance, and each key's usage cap. The
//! limits and the credits belong to the account, as on the service; a cap belongs
//! to one key, and a key past it answers 433 while the account's other keys go on.
//!
//! Account 0 is the one `SimConfig::api_key` belongs to (the unnamed account);
//! `SimConfig::keys` add keys to it (account `""`) or to named accounts.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::ids;
use crate::sim::SimConfig;

/// What the service answers to a key past its own usage cap.
pub(crate) const MSG_KEY_CAPPED: &str = "The usage limit of this API key has been reached";

/// Who made a call: the key (index into [`Keys::keys`]) and its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub key: usize,
    pub account: usize,
}

impl Caller {
    /// The first key of the unnamed account: `SimConfig::api_key`.
    #[cfg(test)]
    pub const MAIN: Caller = Caller { key: 0, account: 0 };
}

/// One key the simulator accepts.
pub(crate) struct KeyEntry {
    /// `Bearer <key>`, as the Authorization header must read.
    pub bearer: String,
    pub account: usize,
    /// Tasks (generate and extend) this key may create; `None`: no cap.
    pub cap: Option<u64>,
}

/// The keys and accounts of a configuration, fixed for the simulator's life.
pub(crate) struct Keys {
    pub keys: Vec<KeyEntry>,
    /// Account names; index 0 is the unnamed account (`""`).
    pub names: Vec<String>,
    /// The id codec of each account: a task id one account's codec sealed opens
    /// under no other, so that a task re-derived from its id (by a later simulator)
    /// still belongs to the account that made it. Account 0 keeps the seed's own
    /// codec, so a single-account simulator's ids are what they always were.
    pub codecs: Vec<ids::Codec>,
}

impl Keys {
    pub fn new(config: &SimConfig) -> Keys {
        let mut names = vec![String::new()];
        let mut keys = vec![KeyEntry {
            bearer: format!("Bearer {}", config.api_key),
            account: 0,
            cap: config.api_key_cap,
        }];
        for k in &config.keys {
            let account = match names.iter().position(|n| *n == k.account) {
                Some(i) => i,
                None => {
                    names.push(k.account.clone());
                    names.len() - 1
                }
            };
            keys.push(KeyEntry {
                bearer: format!("Bearer {}", k.key),
                account,
                cap: k.cap,
            });
        }
        let codecs = (0..names.len())
            .map(|i| {
                let salt = match i {
                    0 => 0,
                    // Any distinct value per account; the name keeps it stable
                    // when accounts are listed in another order.
                    _ => name_salt(&names[i]),
                };
                ids::Codec::new(config.seed ^ salt)
            })
            .collect();
        Keys {
            keys,
            names,
            codecs,
        }
    }

    /// The caller whose `Authorization` header this is; `None`: no key we know.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        let given = authorization?;
        self.keys
            .iter()
            .position(|k| k.bearer == given)
            .map(|key| Caller {
                key,
                account: self.keys[key].account,
            })
    }
}

/// A stable, nonzero 64-bit value of an account name (FNV-1a).
fn name_salt(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

/// What one account holds while the simulator runs.
#[derive(Debug, Default)]
pub(crate) struct Account {
    pub credits: f64,
    /// Send times of the generate and extend calls within the rate window.
    pub window: VecDeque<Instant>,
    /// Send times of the record-info calls within the poll window.
    pub poll_window: VecDeque<Instant>,
}

impl Account {
    /// Every account of `keys`, each with its starting balance.
    pub fn all(config: &SimConfig, keys: &Keys) -> Vec<Account> {
        keys.names
            .iter()
            .map(|name| Account {
                credits: config
                    .account_credits
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(config.credits, |(_, c)| *c),
                ..Account::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimKey;

    fn config() -> SimConfig {
        SimConfig {
            api_key: "main".into(),
            keys: vec![
                SimKey::new("acme-a", "a1"),
                SimKey::new("", "main-2"),
                SimKey::new("acme-b", "b1"),
                SimKey::new("acme-a", "a2"),
            ],
            credits: 10.0,
            account_credits: vec![("acme-b".into(), 3.0)],
            ..SimConfig::default()
        }
    }

    #[test]
    fn keys_are_grouped_into_accounts_by_name() {
        let keys = Keys::new(&config());
        assert_eq!(keys.names, ["", "acme-a", "acme-b"]);
        let account = |k: &str| keys.caller(Some(&format!("Bearer {k}"))).unwrap().account;
        assert_eq!(
            ["main", "a1", "main-2", "b1", "a2"].map(account),
            [0, 1, 0, 2, 1]
        );
        assert_eq!(keys.caller(Some("Bearer nope")), None);
        assert_eq!(keys.caller(Some("main")), None);
        assert_eq!(keys.caller(None), None);
        let balances: Vec<f64> = Account::all(&config(), &keys)
            .iter()
            .map(|a| a.credits)
            .collect();
        assert_eq!(balances, [10.0, 10.0, 3.0]);
    }

    #[test]
    fn an_id_sealed_for_one_account_opens_for_no_other() {
        let keys = Keys::new(&config());
        let sealed = ids::Sealed {
            created_ms: 1000,
            uniq: 7,
            outcome: 0,
            aspect: 0,
            resolution: 0,
            model: 0,
            generation: 100,
            hd: 100,
        };
        for (i, codec) in keys.codecs.iter().enumerate() {
            let id = codec.seal(&sealed);
            let opened: Vec<usize> = (0..keys.codecs.len())
                .filter(|j| keys.codecs[*j].open(id).is_some())
                .collect();
            assert_eq!(opened, [i]);
        }
        // The unnamed account's ids are those a single-account simulator makes.
        let alone = Keys::new(&SimConfig::default());
        assert_eq!(alone.codecs[0].seal(&sealed), keys.codecs[0].seal(&sealed));
    }
}
