//! A run whose results or videos live in a bucket, built around the local
//! pipeline rather than beside it: the run works in a local staging folder (a
//! temporary one, or `--staging-dir`) exactly as it works on a local disk, and this
//! module mirrors it to the bucket.
//!
//! - At the start ([`BucketRun::setup`]) the bucket is probed (nothing is sent to
//!   the service before a refusal ends the run), the lease is taken (a second run
//!   exits 5), and the results are rebuilt from the bucket (compacted CSV + log) into
//!   the staging results file, so a container with an empty disk resumes the batch.
//! - Every group commit of the collector is sent on to the bucket log
//!   ([`LogMirror`]) before any job hears that its row is safe: a task id is in the
//!   bucket before the job's next step, and before the next generate call, which
//!   waits for its own `submitting` row behind it.
//! - A video is downloaded to staging, uploaded whole ([`VideosTarget::put`]) and
//!   only then recorded `downloaded` with its `s3://` URL; the staging copy is
//!   removed.
//! - At intervals and at the end the log is compacted into the plain results CSV,
//!   and the lease is released ([`BucketRun::finish`]).
//!
//! A run whose lease is lost (fence closed) fails its next commit: the collector
//! stops the run, which ends with the fence's message.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::{KeepAlive, Lease, LeaseTimes};
use super::log::{CheckpointLog, Compacted};
use super::video::{UploadError, UploadPolicy, upload};
use super::{Bucket, BucketUrl, Location, Retries, S3Env, parse_location};
use crate::checkpoint::writer::Written;

/// How often a run folds its log into the results CSV while it runs.
pub const COMPACT_EVERY: Duration = Duration::from_secs(10 * 60);

/// Where a run's videos go in a bucket, and which of them are there already.
#[derive(Clone)]
pub struct VideosTarget {
    bucket: Bucket,
    prefix: Key,
    policy: UploadPolicy,
    /// The `s3://` URLs of the objects under the prefix at the start of the run.
    present: Arc<HashSet<String>>,
}

impl fmt::Debug for VideosTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideosTarget")
            .field("prefix", &self.bucket.url(&self.prefix))
            .field("present", &self.present.len())
            .finish()
    }
}

impl VideosTarget {
    /// The object a staged file named like `file` becomes, and its URL.
    pub fn object_for(&self, file: &Path) -> (Key, String) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = self.prefix.clone().join(name);
        let url = self.bucket.url(&key);
        (key, url)
    }

    /// The prefix's URL, as messages name the videos folder.
    pub fn url(&self) -> String {
        self.bucket.url(&self.prefix)
    }

    /// Whether `url` is an object under this run's videos prefix.
    pub fn holds(&self, url: &str) -> bool {
        url.strip_prefix(&self.url())
            .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'))
    }

    /// Whether the object at `url` was there when the run started.
    pub fn is_there(&self, url: &str) -> bool {
        self.present.contains(url)
    }

    /// Moves the object at `url` (a superseded task's video) to
    /// `superseded/<name>.<label>.mp4` under the prefix, so the name is free for the
    /// task that replaces it and the paid video is kept; its new URL. The name
    /// holds the superseded task's id, so a copy found there already is this one,
    /// moved by a run killed before it recorded the move (S3 has no create-only
    /// copy, and none is needed).
    pub async fn set_aside(&self, url: &str, label: &str) -> Result<String, super::StoreError> {
        let key = Key::from(
            url.strip_prefix(&format!("s3://{}/", self.bucket.name()))
                .unwrap_or(url),
        );
        let local =
            crate::paths::superseded_path(Path::new(key.filename().unwrap_or("video.mp4")), label);
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = self.prefix.clone().join("superseded").join(name);
        let store = self.bucket.store();
        match store.copy(&key, &to).await {
            Ok(()) => {}
            // Moved already by a run killed before it recorded the move.
            Err(object_store::Error::NotFound { .. }) if store.head(&to).await.is_ok() => {
                return Ok(self.bucket.url(&to));
            }
            Err(e) => {
                return Err(self
                    .bucket
                    .error(format!("copy {url} to {}", self.bucket.url(&to)), &e));
            }
        }
        match store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(self.bucket.url(&to)),
            Err(e) => Err(self.bucket.error(format!("delete {url}"), &e)),
        }
    }

    /// Puts the staged video at `staged` in the bucket under its file name,
    /// complete or not at all, then removes the staged copy; its URL. A failed
    /// upload removes the staged copy too: the next run downloads it again.
    pub async fn put(&self, staged: &Path) -> Result<String, UploadError> {
        let (key, url) = self.object_for(staged);
        let result = upload(&self.bucket, &key, staged, self.policy).await;
        if let Err(e) = tokio::fs::remove_file(staged).await {
            tracing::debug!(
                "could not remove the staged video {}: {e}",
                staged.display()
            );
        }
        result.map(|how| {
            tracing::debug!(url = %url, "video in the bucket ({how:?})");
            url
        })
    }
}

/// What the collector's writes go through when the results live in a bucket:
/// each batch, once on the staging disk, is committed to the bucket log before its
/// jobs hear it is safe.
#[derive(Clone)]
pub struct LogMirror {
    batches: mpsc::UnboundedSender<Mirrored>,
}

impl fmt::Debug for LogMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogMirror").finish_non_exhaustive()
    }
}

struct Mirrored {
    local: oneshot::Receiver<Written>,
    done: oneshot::Sender<Written>,
}

impl LogMirror {
    /// The write `local` (the collector's writer thread's answer), committed to the
    /// bucket after it: the answer the collector waits for instead.
    pub fn after(&self, local: oneshot::Receiver<Written>) -> oneshot::Receiver<Written> {
        let (done, heard) = oneshot::channel();
        // A mirror that is gone drops `done`, which the collector hears as its
        // writer stopped: the run stops writing.
        let _ = self.batches.send(Mirrored { local, done });
        heard
    }
}

/// What a run hands its collector and its jobs.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub videos: Option<VideosTarget>,
    pub log: Option<LogMirror>,
}

/// The results object of a run, its lease, and the task that mirrors the log.
struct ResultsSide {
    url: BucketUrl,
    keep_alive: KeepAlive,
    mirror: LogMirror,
    stop: CancellationToken,
    task: JoinHandle<CheckpointLog>,
}

/// The local staging folder: removed at the end unless the user named it.
enum Staging {
    Temporary(tempfile::TempDir),
    Given(PathBuf),
}

impl Staging {
    fn path(&self) -> &Path {
        match self {
            Staging::Temporary(t) => t.path(),
            Staging::Given(p) => p,
        }
    }
}

/// The bucket side of one run.
pub struct BucketRun {
    staging: Staging,
    results: Option<ResultsSide>,
    videos: Option<VideosTarget>,
    /// The local paths the run works with in place of the bucket URLs.
    pub local_results: Option<PathBuf>,
    pub local_videos: Option<PathBuf>,
}

/// The results and videos locations of a run, as given.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// (setting that gave it, value), e.g. `("--results", "s3://b/x.csv")`.
    pub results: Option<(&'a str, &'a str)>,
    pub videos: Option<(&'a str, &'a str)>,
    pub staging_dir: Option<&'a Path>,
    pub times: LeaseTimes,
    pub policy: UploadPolicy,
}

/// A name for this machine and process, as the lease shows its holder.
fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned());
    format!("{host}, pid {}", std::process::id())
}

/// The bucket URL of a setting, if it is one; any other scheme is an error naming it.
fn bucket_url(given: Option<(&str, &str)>) -> anyhow::Result<Option<BucketUrl>> {
    let Some((setting, value)) = given else {
        return Ok(None);
    };
    match parse_location(setting, value)? {
        Location::Local(_) => Ok(None),
        Location::S3(url) => Ok(Some(url)),
    }
}

/// The folder part of a key (`a/b/x.csv` -> `a/b`).
fn parent_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl BucketRun {
    /// Sets up the bucket side of a run when its results or videos are in a bucket
    /// (None otherwise): probes each bucket, takes the lease, rebuilds the results
    /// into staging. Every refusal names the bucket and the operation; nothing has
    /// been sent to the service.
    pub async fn setup(wanted: Wanted<'_>) -> anyhow::Result<Option<BucketRun>> {
        let results = bucket_url(wanted.results)?;
        let videos = bucket_url(wanted.videos)?;
        if results.is_none() && videos.is_none() {
            return Ok(None);
        }
        let env = S3Env::from_env();
        if let Some(url) = results.as_ref().or(videos.as_ref())
            && (env.access_key_id.is_none() || !env.has_secret())
        {
            // Without them the client would ask an instance's metadata service:
            // a container would wait on it, and a run meant for a bucket would not
            // say what is missing.
            return Err(super::StoreError {
                bucket: url.bucket.clone(),
                operation: "sign requests to it".into(),
                reason: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (with AWS_ENDPOINT_URL for a store other than AWS S3)".into(),
            }
            .into());
        }
        let staging = match wanted.staging_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("failed to create the staging folder `{}`", dir.display())
                })?;
                Staging::Given(dir.to_owned())
            }
            None => Staging::Temporary(
                tempfile::Builder::new()
                    .prefix("veo-batch-staging-")
                    .tempdir()
                    .context("failed to create a staging folder in the temporary folder (set TMPDIR, or give --staging-dir)")?,
            ),
        };
        let mut run = BucketRun {
            staging,
            results: None,
            videos: None,
            local_results: None,
            local_videos: None,
        };
        if let Some(url) = videos {
            let bucket = Bucket::s3(&url.bucket, &env, Retries::default())?;
            bucket.probe(&url.key).await?;
            let prefix = Key::from(url.key.as_str());
            let listed = bucket
                .store()
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| bucket.error(format!("list objects under {url}"), &e))?;
            let present = listed
                .objects
                .iter()
                .map(|o| bucket.url(&o.location))
                .collect();
            let local = run.staging.path().join("videos");
            run.local_videos = Some(local);
            run.videos = Some(VideosTarget {
                bucket,
                prefix,
                policy: wanted.policy,
                present: Arc::new(present),
            });
        }
        if let Some(url) = results {
            let setting = wanted.results.map_or("--results", |(s, _)| s);
            let name = url.key.rsplit('/').next().unwrap_or_default().to_owned();
            if name.is_empty() {
                anyhow::bail!(
                    "{setting}: `{url}` names no results object; write s3://bucket/path/results.csv"
                );
            }
            let bucket = Bucket::s3(&url.bucket, &env, Retries::default())?;
            bucket.probe(parent_of(&url.key)).await?;
            let key = Key::from(url.key.as_str());
            let lease =
                Lease::acquire(&bucket, Lease::key_for(&key), &holder(), wanted.times).await?;
            let keep_alive = lease.keep_alive();
            let opened = CheckpointLog::open(&bucket, key, keep_alive.fence()).await;
            let (log, rebuilt) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    release(keep_alive).await;
                    return Err(e.into());
                }
            };
            let local = run.staging.path().join(&name);
            let loaded = &rebuilt.loaded;
            if !loaded.order.is_empty() {
                let rows = loaded.order.iter().filter_map(|id| loaded.records.get(id));
                if let Err(e) = crate::checkpoint::writer::rewrite(&local, rows) {
                    release(keep_alive).await;
                    return Err(anyhow::Error::from(e).context(format!(
                        "failed to write the results rebuilt from {url} to `{}`",
                        local.display()
                    )));
                }
            }
            tracing::info!(
                "results in {url}: {} jobs recorded ({} commits after the last compaction); staging in {}",
                loaded.order.len(),
                rebuilt.commits.len(),
                run.staging.path().display()
            );
            let (batches, rx) = mpsc::unbounded_channel();
            let stop = CancellationToken::new();
            let task = tokio::spawn(mirror(log, rx, stop.clone(), COMPACT_EVERY));
            run.local_results = Some(local);
            run.results = Some(ResultsSide {
                url,
                keep_alive,
                mirror: LogMirror { batches },
                stop,
                task,
            });
        }
        Ok(Some(run))
    }

    /// What the run's collector and jobs need.
    pub fn hooks(&self) -> Hooks {
        Hooks {
            videos: self.videos.clone(),
            log: self.results.as_ref().map(|r| r.mirror.clone()),
        }
    }

    /// What says whether the run still holds the lease of its results.
    pub fn fence(&self) -> Option<super::lease::Fence> {
        self.results.as_ref().map(|r| r.keep_alive.fence())
    }

    /// The videos prefix, when the videos are in a bucket.
    pub fn videos_url(&self) -> Option<String> {
        self.videos.as_ref().map(VideosTarget::url)
    }

    /// The results object, when the results are in a bucket.
    pub fn results_url(&self) -> Option<&BucketUrl> {
        self.results.as_ref().map(|r| &r.url)
    }

    /// Ends the bucket side: the last batches committed, the log compacted into the
    /// results CSV (only after a run that kept its lease), the lease released, the
    /// staging folder removed unless it was given.
    pub async fn finish(self) -> anyhow::Result<Option<Compacted>> {
        let BucketRun {
            staging, results, ..
        } = self;
        let mut compacted = None;
        if let Some(side) = results {
            side.stop.cancel();
            let mut log = side
                .task
                .await
                .context("the task writing the results to the bucket failed")?;
            let fence = side.keep_alive.fence();
            let ended = if fence.check().is_ok() {
                log.compact()
                    .await
                    .map(Some)
                    .with_context(|| format!("failed to compact the results log into {}", side.url))
            } else {
                Ok(None)
            };
            release(side.keep_alive).await;
            compacted = ended?;
        }
        if let Staging::Temporary(dir) = staging
            && let Err(e) = dir.close()
        {
            tracing::debug!("could not remove the staging folder: {e}");
        }
        Ok(compacted)
    }
}

/// Stops renewing the lease and gives it up, so the next run takes it at once.
async fn release(keep_alive: KeepAlive) {
    if let Some(lease) = keep_alive.stop().await
        && let Err(e) = lease.release().await
    {
        tracing::warn!("failed to release the lease (it expires on its own): {e}");
    }
}

/// The mirror's task: commits each batch after its local write, in order, and
/// compacts the log every `compact_every` beside the commits. Returns the log when
/// stopped, once the batches already handed to it are committed.
async fn mirror(
    mut log: CheckpointLog,
    mut batches: mpsc::UnboundedReceiver<Mirrored>,
    stop: CancellationToken,
    compact_every: Duration,
) -> CheckpointLog {
    let mut compacting: Option<JoinHandle<()>> = None;
    let mut ticks = tokio::time::interval(compact_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let next = tokio::select! {
            biased;
            next = batches.recv() => next,
            () = stop.cancelled() => batches.try_recv().ok(),
            _ = ticks.tick() => {
                if compacting.as_ref().is_none_or(JoinHandle::is_finished) {
                    let mut beside = log.clone();
                    compacting = Some(tokio::spawn(async move {
                        match beside.compact().await {
                            Ok(c) => tracing::debug!("results log compacted: {c:?}"),
                            Err(e) => tracing::warn!("failed to compact the results log (tried again later): {e}"),
                        }
                    }));
                }
                continue;
            }
        };
        let Some(Mirrored { local, done }) = next else {
            break;
        };
        let Ok(mut written) = local.await else {
            continue;
        };
        if written.result.is_ok()
            && let Err(e) = log.commit_encoded(&written.buf).await
        {
            written.result = Err(std::io::Error::other(format!(
                "the rows are on the staging disk but not in the bucket: {e}"
            )));
        }
        let _ = done.send(written);
    }
    if let Some(task) = compacting {
        let _ = task.await;
    }
    log
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::checkpoint::writer::encode_row;
    use crate::checkpoint::{Record, State};
    use crate::store::lease::Fence;

    fn row(id: &str, state: State) -> Vec<u8> {
        let mut out = Vec::new();
        encode_row(
            &Record {
                job_id: id.into(),
                state: Some(state),
                updated_at: "2026-12-07T19:00:00Z".into(),
                ..Record::default()
            },
            &mut out,
        )
        .unwrap();
        out
    }

    /// A batch the collector's writer thread answered for.
    fn written(bytes: Vec<u8>, ok: bool) -> oneshot::Receiver<Written> {
        let (tx, rx) = oneshot::channel();
        let result = if ok {
            Ok(0)
        } else {
            Err(std::io::Error::other("disk full"))
        };
        tx.send(Written { buf: bytes, result }).ok().unwrap();
        rx
    }

    /// Each batch is in the bucket log before the collector hears of it; a local
    /// failure is passed on and nothing is committed for it; the log is compacted
    /// at intervals beside the commits, and a stopped mirror hands the log back.
    // Paused time: the compaction ticks fire only where the test waits for them,
    // never between the last commit and the stop however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn batches_are_in_the_log_before_they_are_acknowledged() {
        let mem = Arc::new(InMemory::new());
        let bucket = Bucket::with_store("bkt", mem);
        let results = Key::from("runs/x.csv");
        let fence = Fence::open_ended("t");
        let (log, _) = CheckpointLog::open(&bucket, results.clone(), fence)
            .await
            .unwrap();
        let (batches, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(mirror(log, rx, stop.clone(), Duration::from_millis(50)));
        let mirror = LogMirror { batches };

        let heard = mirror
            .after(written(row("a", State::Submitted), true))
            .await
            .unwrap();
        assert!(heard.result.is_ok());
        let read_back = crate::store::log::read(&bucket, &results).await.unwrap();
        assert_eq!(read_back.loaded.records["a"].state(), State::Submitted);
        assert_eq!(read_back.commits, [1]);

        let heard = mirror
            .after(written(row("b", State::Submitted), false))
            .await
            .unwrap();
        assert!(heard.result.is_err());
        let read_back = crate::store::log::read(&bucket, &results).await.unwrap();
        assert!(!read_back.loaded.records.contains_key("b"));

        // Compacted beside the commits: the CSV holds the rows, the log is empty.
        // Woken between two ticks, so the next commit stays in the log until the stop.
        tokio::time::sleep(Duration::from_millis(225)).await;
        let read_back = crate::store::log::read(&bucket, &results).await.unwrap();
        assert!(read_back.commits.is_empty(), "{:?}", read_back.commits);
        assert_eq!(read_back.through, 1);
        assert_eq!(read_back.loaded.records["a"].state(), State::Submitted);

        let heard = mirror
            .after(written(row("a", State::Succeeded), true))
            .await
            .unwrap();
        assert!(heard.result.is_ok());
        stop.cancel();
        let mut log = task.await.unwrap();
        let compacted = log.compact().await.unwrap();
        assert_eq!((compacted.rows, compacted.commits), (1, 1));
    }
}
