//! Several API keys grouped into accounts: the key file (`--api-key-file`) and
//! `KIE_API_KEYS` may hold one key a line (or, in the variable, a comma between
//! keys), each optionally after an account name (`acme-a  KEY`). Keys without a
//! name form one unnamed account. A key is shown only as its [`KeyId`], a short
//! hash prefix that results, summaries and errors may carry.
//!
//! A file with one unlabelled key reads exactly as a single-key file always has.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::key::{ApiKey, KEY_ENV};

/// The environment variable that may hold several keys.
pub const KEYS_ENV: &str = "KIE_API_KEYS";

/// Hex digits of a key's SHA-256 kept in its [`KeyId`]: enough to tell a pool's
/// keys apart, too few to help guess one.
const KEY_ID_HEX: usize = 8;

/// The longest account name: it lands in the results file and every summary.
const MAX_ACCOUNT_LEN: usize = 64;

/// A key's public name: the first hex digits of the SHA-256 of the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn of(key: &ApiKey) -> KeyId {
        let digest = Sha256::digest(key.expose().as_bytes());
        let mut hex = String::with_capacity(KEY_ID_HEX);
        for b in digest.iter().take(KEY_ID_HEX / 2) {
            hex.push_str(&format!("{b:02x}"));
        }
        KeyId(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key of the ring, with the account it belongs to (`""`: the unnamed one).
#[derive(Debug, Clone)]
pub struct PoolKey {
    pub account: String,
    pub key: ApiKey,
    pub id: KeyId,
}

/// The keys a command may call with, in the order they were written; never empty.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<PoolKey>,
}

/// One bad entry of a key source, located; the key itself is never in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLineIssue {
    /// Line of a file, or entry of `KIE_API_KEYS` (1-based, blank ones counted).
    pub line: usize,
    pub message: String,
}

impl KeyRing {
    /// One key, for the unnamed account: what `KIE_API_KEY` and the simulator give.
    pub fn single(key: ApiKey) -> KeyRing {
        KeyRing {
            keys: vec![PoolKey {
                account: String::new(),
                id: KeyId::of(&key),
                key,
            }],
        }
    }

    /// A ring of the one key `key`, of its own account.
    pub fn of_key(key: PoolKey) -> KeyRing {
        KeyRing { keys: vec![key] }
    }

    /// Reads the keys from `file` (the `--api-key-file` path) when given, else from
    /// `KIE_API_KEYS` or `KIE_API_KEY` (setting both is refused as ambiguous).
    pub fn load(file: Option<&Path>) -> anyhow::Result<KeyRing> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read api key file `{}`", path.display()))?;
            let source = format!("api key file `{}`", path.display());
            return KeyRing::parse(&text, &source, "line", false);
        }
        match std::env::var(KEYS_ENV) {
            Ok(text) => {
                if std::env::var_os(KEY_ENV).is_some() {
                    bail!("both {KEY_ENV} and {KEYS_ENV} are set: set only one");
                }
                KeyRing::parse(&text, KEYS_ENV, "entry", true)
            }
            Err(std::env::VarError::NotUnicode(_)) => bail!("{KEYS_ENV} is not valid utf-8"),
            Err(std::env::VarError::NotPresent) => ApiKey::load(None).map(KeyRing::single),
        }
    }

    /// Every key of `text`, or every bad entry with its `unit` number (`line` or
    /// `entry`) after `source`. With `commas`, a comma separates entries too.
    pub fn parse(text: &str, source: &str, unit: &str, commas: bool) -> anyhow::Result<KeyRing> {
        let (keys, issues) = parse_entries(text, commas, unit);
        if !issues.is_empty() {
            let list: Vec<String> = issues
                .iter()
                .map(|i| format!("{source} {unit} {}: {}", i.line, i.message))
                .collect();
            bail!("{}", list.join("\n"));
        }
        if keys.is_empty() {
            bail!("{source} is empty: it must hold the kie.ai api key");
        }
        Ok(KeyRing { keys })
    }

    pub fn keys(&self) -> &[PoolKey] {
        &self.keys
    }

    /// The first key: the one a single-key command calls with.
    pub fn first(&self) -> &PoolKey {
        // `parse` and `single` never build an empty ring.
        &self.keys[0]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The accounts, each once, in the order their first key was written.
    pub fn accounts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for k in &self.keys {
            if !out.contains(&k.account.as_str()) {
                out.push(&k.account);
            }
        }
        out
    }
}

/// The keys of `text` and the issues of its bad entries.
fn parse_entries(text: &str, commas: bool, unit: &str) -> (Vec<PoolKey>, Vec<KeyLineIssue>) {
    let mut keys: Vec<(usize, PoolKey)> = Vec::new();
    let mut issues = Vec::new();
    let entries = text.lines().flat_map(|l| -> Vec<&str> {
        if commas {
            l.split(',').collect()
        } else {
            vec![l]
        }
    });
    for (i, raw) in entries.enumerate() {
        let line = i + 1;
        match parse_entry(raw) {
            Ok(None) => {}
            Ok(Some(k)) => {
                if let Some((first, _)) = keys.iter().find(|(_, o)| o.id == k.id) {
                    issues.push(KeyLineIssue {
                        line,
                        message: format!("the same key as {unit} {first} (key id {})", k.id),
                    });
                } else {
                    keys.push((line, k));
                }
            }
            Err(message) => issues.push(KeyLineIssue { line, message }),
        }
    }
    (keys.into_iter().map(|(_, k)| k).collect(), issues)
}

/// One entry: `None` for a blank or `#` comment one. Errors never quote the entry,
/// which may be a key.
fn parse_entry(raw: &str) -> Result<Option<PoolKey>, String> {
    let entry = raw.trim();
    if entry.is_empty() || entry.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = entry.split_whitespace().collect();
    let (account, key) = match fields.as_slice() {
        [key] => ("", *key),
        [account, key] => (*account, *key),
        more => {
            return Err(format!(
                "{} fields where `KEY` or `ACCOUNT KEY` was expected",
                more.len()
            ));
        }
    };
    // The key goes into an HTTP header: anything but visible ASCII would fail
    // later with a less helpful message.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the key holds characters that cannot be sent in an http header \
             (control or non-ascii characters)"
                .to_owned(),
        );
    }
    if account.len() > MAX_ACCOUNT_LEN
        || !account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "the account name must be at most {MAX_ACCOUNT_LEN} letters, digits, `-`, `_` or `.`"
        ));
    }
    let key = ApiKey::new(key);
    Ok(Some(PoolKey {
        account: account.to_owned(),
        id: KeyId::of(&key),
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(text, "f", "line", false).unwrap()
    }

    fn error(text: &str, commas: bool) -> String {
        let unit = if commas { "entry" } else { "line" };
        format!("{:#}", KeyRing::parse(text, "f", unit, commas).unwrap_err())
    }

    #[test]
    fn one_unlabelled_key_is_one_unnamed_account() {
        let r = ring("  secret-key-42\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r.first().account, "");
        assert_eq!(r.first().key.expose(), "secret-key-42");
        assert_eq!(r.accounts(), vec![""]);
    }

    #[test]
    fn labelled_keys_group_into_accounts_and_comments_are_skipped() {
        let r = ring(
            "# team keys\n\nacme-a  key-1\nacme-b\tkey-2\n  # off for now: acme-c key-9\nacme-a key-3\nkey-4\n",
        );
        let got: Vec<(&str, &str)> = r
            .keys()
            .iter()
            .map(|k| (k.account.as_str(), k.key.expose()))
            .collect();
        assert_eq!(
            got,
            [
                ("acme-a", "key-1"),
                ("acme-b", "key-2"),
                ("acme-a", "key-3"),
                ("", "key-4")
            ]
        );
        assert_eq!(r.accounts(), vec!["acme-a", "acme-b", ""]);
    }

    #[test]
    fn the_variable_takes_commas_as_well_as_newlines() {
        let r = KeyRing::parse("a k1, a k2\nb k3,", "KIE_API_KEYS", "entry", true).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.accounts(), vec!["a", "b"]);
        // In a file a comma is part of nothing special: the key is refused whole
        // only if it is not a header value, and `k1,k2` is one.
        assert_eq!(ring("k1,k2").len(), 1);
    }

    #[test]
    fn key_ids_are_short_stable_hash_prefixes() {
        let id = KeyId::of(&ApiKey::new("sim-key"));
        assert_eq!(id.as_str().len(), 8);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, KeyId::of(&ApiKey::new("sim-key")));
        assert_ne!(id, KeyId::of(&ApiKey::new("sim-key2")));
        // sha256("sim-key") starts with these digits.
        assert_eq!(id.as_str(), "d40a2817");
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_never_the_key() {
        let e = error(
            "good-key\nacme a-secret extra-secret\nacme-a\u{7}bell-secret\nbad/name key-x\ngood-key\n",
            false,
        );
        assert_eq!(
            e,
            "f line 2: 3 fields where `KEY` or `ACCOUNT KEY` was expected\n\
             f line 3: the key holds characters that cannot be sent in an http header (control or non-ascii characters)\n\
             f line 4: the account name must be at most 64 letters, digits, `-`, `_` or `.`\n\
             f line 5: the same key as line 1 (key id ".to_owned()
                + KeyId::of(&ApiKey::new("good-key")).as_str()
                + ")"
        );
        for secret in [
            "a-secret",
            "extra-secret",
            "bell-secret",
            "good-key",
            "key-x",
        ] {
            assert!(!e.contains(secret), "{e}");
        }
    }

    #[test]
    fn entries_of_the_variable_are_numbered_across_commas() {
        let e = error("k1, a b c", true);
        assert_eq!(
            e,
            "f entry 2: 3 fields where `KEY` or `ACCOUNT KEY` was expected"
        );
    }

    #[test]
    fn only_comments_is_empty() {
        assert_eq!(
            error("# nothing\n\n", false),
            "f is empty: it must hold the kie.ai api key"
        );
    }

    #[test]
    fn debug_never_shows_a_key() {
        let r = ring("acme-a key-secret-1\nkey-secret-2");
        let shown = format!("{r:?}");
        assert!(!shown.contains("key-secret"), "{shown}");
        assert!(shown.contains("acme-a"), "{shown}");
    }
}
