//! The simulator's store of uploaded files: what [`super::uploads`] keeps, for as
//! long as it lives, and how often each name was stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Stored {
    pub bytes: Bytes,
    pub mime: String,
    pub at: Instant,
}

/// Uploaded files, by their path under [`PREFIX`], and how often each name was
/// stored (for tests that count uploads).
#[derive(Debug, Default)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub files: HashMap<String, Stored>,
    pub stored: BTreeMap<String, u32>,
}

impl Store {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Uploads stored so far, per file name.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        self.lock().stored.clone()
    }

    /// The file at `path`, while it lives (`ttl`: its lifetime, scaled; `None`:
    /// for ever).
    pub(super) fn get(&self, path: &str, ttl: Option<Duration>) -> Option<(Bytes, String)> {
        let mut inner = self.lock();
        let alive = inner
            .files
            .get(path)
            .is_some_and(|f| ttl.is_none_or(|ttl| f.at.elapsed() < ttl));
        if !alive {
            // Forgotten, as the live service deletes them.
            inner.files.remove(path);
            return None;
        }
        inner
            .files
            .get(path)
            .map(|f| (f.bytes.clone(), f.mime.clone()))
    }
}
