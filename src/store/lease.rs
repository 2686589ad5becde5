//! The lease that keeps two runs, on any machines, off one results object: a small
//! JSON object beside it (`<results>.lease`), taken with a conditional create,
//! renewed with a conditional replace (If-Match on its ETag) while the run lives,
//! and expiring on its own after a killed run.
//!
//! Timing ([`LeaseTimes`], by default): the lease says it expires 60 s after its
//! last renewal; it is renewed every 15 s; and its holder stops writing (its
//! [`Fence`] closes) 45 s after the last renewal it *sent*, by its own monotonic
//! clock, so that a paused container that wakes up late refuses to write before
//! another machine may take the lease over (clocks may differ by up to 15 s).
//! Another run takes an expired lease with a conditional replace of exactly the
//! version it read, so two runs racing for it cannot both win. Deleting the lease
//! object ([`take_over`], or `aws s3 rm s3://bucket/results.csv.lease`) frees it at
//! once; the old holder's next renewal then fails and its fence closes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::path::Path as Key;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Bucket, StoreError};

/// How long a lease lives and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimes {
    /// A lease not renewed for this long may be taken by another run.
    pub ttl: Duration,
    /// How often the holder renews it.
    pub renew_every: Duration,
    /// How long before `ttl` the holder stops writing: room for clocks that
    /// disagree and for a renewal's own round trip.
    pub margin: Duration,
}

impl Default for LeaseTimes {
    fn default() -> LeaseTimes {
        LeaseTimes {
            ttl: Duration::from_secs(60),
            renew_every: Duration::from_secs(15),
            margin: Duration::from_secs(15),
        }
    }
}

/// Whether the holder of a lease may still write: closed once the lease is lost
/// or its last renewal is older than `ttl - margin`. Every write to the bucket's
/// record checks it first.
#[derive(Clone)]
pub struct Fence(Arc<FenceState>);

struct FenceState {
    start: Instant,
    /// Milliseconds after `start` until which writing is allowed.
    until_ms: AtomicU64,
    lost: AtomicBool,
    what: String,
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("what", &self.0.what)
            .field("open", &self.check().is_ok())
            .finish()
    }
}

/// A write refused because the lease that allowed it is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this run no longer holds the lease {what} ({why}); it stops writing so that the run that holds it now is not overwritten"
)]
pub struct Fenced {
    pub what: String,
    pub why: &'static str,
}

impl Fence {
    /// A fence that never closes: for a record no lease guards (a test, a tool
    /// that reads and compacts alone).
    pub fn open_ended(what: &str) -> Fence {
        let fence = Fence::new(what);
        fence.0.until_ms.store(u64::MAX, Ordering::Release);
        fence
    }

    fn new(what: &str) -> Fence {
        Fence(Arc::new(FenceState {
            start: Instant::now(),
            until_ms: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            what: what.to_owned(),
        }))
    }

    /// Ok while writing is allowed.
    pub fn check(&self) -> Result<(), Fenced> {
        let state = &self.0;
        let why = if state.lost.load(Ordering::Acquire) {
            LOST
        } else if self.elapsed_ms() >= state.until_ms.load(Ordering::Acquire) {
            "it was not renewed in time and may have expired"
        } else {
            return Ok(());
        };
        Err(Fenced {
            what: state.what.clone(),
            why,
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Allows writing until `valid` after `sent` (when the renewal left).
    fn extend(&self, sent: Instant, valid: Duration) {
        let at = sent.saturating_duration_since(self.0.start) + valid;
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.0.until_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn lost_error(&self) -> Fenced {
        Fenced {
            what: self.0.what.clone(),
            why: LOST,
        }
    }

    fn lose(&self) {
        self.0.lost.store(true, Ordering::Release);
    }
}

const LOST: &str = "another run took it over, or it was deleted";

/// What the lease object holds: who holds it and until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Body {
    holder: String,
    /// Unique to one taking of the lease.
    token: String,
    /// Unix milliseconds, by the holder's clock; 0 once released.
    expires_at_ms: u64,
}

/// The lease cannot be had or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "another run holds the lease {url} ({holder}, for {}s more unless renewed); wait, or delete the lease object to take it over at once if that run is dead",
        expires_in.as_secs()
    )]
    Held {
        url: String,
        holder: String,
        expires_in: Duration,
    },
    #[error("{0}")]
    Lost(#[from] Fenced),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    bucket: Bucket,
    key: Key,
    body: Body,
    version: UpdateVersion,
    times: LeaseTimes,
    fence: Fence,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode(body: &Body) -> PutPayload {
    // A struct of strings and integers always serializes.
    PutPayload::from(serde_json::to_vec(body).unwrap_or_default())
}

impl Lease {
    /// The lease object of the results object `results`.
    pub fn key_for(results: &Key) -> Key {
        Key::from(format!("{results}.lease"))
    }

    /// Takes the lease at `key` for `holder` (a name people read: host and pid):
    /// creates it when absent, or replaces it when it has expired.
    pub async fn acquire(
        bucket: &Bucket,
        key: Key,
        holder: &str,
        times: LeaseTimes,
    ) -> Result<Lease, LeaseError> {
        let url = bucket.url(&key);
        let body = Body {
            holder: holder.to_owned(),
            token: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            expires_at_ms: 0,
        };
        let mut lease = Lease {
            bucket: bucket.clone(),
            key,
            body,
            version: UpdateVersion {
                e_tag: None,
                version: None,
            },
            times,
            fence: Fence::new(&url),
        };
        match lease.write(PutMode::Create).await {
            Ok(()) => return Ok(lease),
            Err(WriteError::Refused) => {}
            Err(WriteError::Store(e)) => return Err(lease.store_error("create", &e).into()),
        }
        // Someone's lease is there: take it only if it has run out, and only the
        // very version read, so that two runs taking it over cannot both win.
        let found = bucket
            .store()
            .get(&lease.key)
            .await
            .map_err(|e| lease.store_error("read", &e))?;
        let version = UpdateVersion {
            e_tag: found.meta.e_tag.clone(),
            version: found.meta.version.clone(),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|e| lease.store_error("read", &e))?;
        let now = now_ms();
        match serde_json::from_slice::<Body>(&bytes) {
            Ok(held) if held.expires_at_ms > now => {
                return Err(LeaseError::Held {
                    url,
                    holder: held.holder,
                    expires_in: Duration::from_millis(held.expires_at_ms - now),
                });
            }
            // Expired, released, or not a lease veo-batch wrote (then it is
            // replaced like an expired one: only the If-Match protects it).
            _ => {}
        }
        match lease.write(PutMode::Update(version)).await {
            Ok(()) => Ok(lease),
            Err(WriteError::Refused) => Err(LeaseError::Held {
                url,
                holder: "a run that took it over a moment ago".into(),
                expires_in: times.ttl,
            }),
            Err(WriteError::Store(e)) => Err(lease.store_error("take over", &e).into()),
        }
    }

    /// Writes the lease with a new expiry; extends the fence when the write lands.
    async fn write(&mut self, mode: PutMode) -> Result<(), WriteError> {
        let sent = Instant::now();
        self.body.expires_at_ms = now_ms().saturating_add(millis(self.times.ttl));
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .bucket
            .store()
            .put_opts(&self.key, encode(&self.body), opts)
            .await
        {
            Ok(put) => {
                self.version = UpdateVersion {
                    e_tag: put.e_tag,
                    version: put.version,
                };
                let valid = self.times.ttl.saturating_sub(self.times.margin);
                self.fence.extend(sent, valid);
                Ok(())
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Err(WriteError::Refused),
            Err(e) => Err(WriteError::Store(e)),
        }
    }

    fn store_error(&self, what: &str, e: &object_store::Error) -> StoreError {
        self.bucket.error(
            format!("{what} the lease {}", self.bucket.url(&self.key)),
            e,
        )
    }

    /// What every write of this run checks.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Renews the lease. A lease replaced or deleted meanwhile is lost for good
    /// (the fence closes); a store error leaves the fence to close on its own if
    /// no later renewal lands in time.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        self.fence.check()?;
        match self.write(PutMode::Update(self.version.clone())).await {
            Ok(()) => Ok(()),
            Err(WriteError::Refused) => {
                self.fence.lose();
                Err(LeaseError::Lost(self.fence.lost_error()))
            }
            Err(WriteError::Store(e)) => Err(self.store_error("renew", &e).into()),
        }
    }

    /// Gives the lease up: marks it expired (only if it is still this run's), so
    /// that the next run takes it at once, and closes the fence.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.fence.check()?;
        self.body.expires_at_ms = 0;
        let opts = PutOptions {
            mode: PutMode::Update(self.version.clone()),
            ..PutOptions::default()
        };
        let result = self
            .bucket
            .store()
            .put_opts(&self.key, encode(&self.body), opts)
            .await;
        self.fence.lose();
        match result {
            Ok(_) => Ok(()),
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(()),
            Err(e) => Err(self.store_error("release", &e).into()),
        }
    }

    /// Renews the lease every `renew_every` on a task of its own until stopped.
    pub fn keep_alive(self) -> KeepAlive {
        let (stop, mut stopped) = watch::channel(false);
        let fence = self.fence();
        let task = tokio::spawn(async move {
            let mut lease = self;
            let mut ticks = tokio::time::interval(lease.times.renew_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return lease,
                    _ = ticks.tick() => {}
                }
                match lease.renew().await {
                    Ok(()) => {}
                    Err(LeaseError::Lost(e)) => {
                        tracing::error!("{e}");
                        return lease;
                    }
                    Err(e) => tracing::warn!("failed to renew the lease (retried): {e}"),
                }
            }
        });
        KeepAlive { stop, task, fence }
    }
}

/// The renewal task of a lease.
#[derive(Debug)]
pub struct KeepAlive {
    stop: watch::Sender<bool>,
    task: JoinHandle<Lease>,
    fence: Fence,
}

impl KeepAlive {
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Stops renewing; the lease, to release it (none if the task panicked).
    pub async fn stop(self) -> Option<Lease> {
        let _ = self.stop.send(true);
        self.task.await.ok()
    }
}

/// Frees the lease at `key` at once, whoever holds it: the documented way to
/// take over from a run known to be dead without waiting for the lease to expire.
pub async fn take_over(bucket: &Bucket, key: &Key) -> Result<(), StoreError> {
    match bucket.store().delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(bucket.error(format!("delete the lease {}", bucket.url(key)), &e)),
    }
}

enum WriteError {
    /// The condition failed: someone else's lease is there (or ours is gone).
    Refused,
    Store(object_store::Error),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
