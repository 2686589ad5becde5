//! Local images on their way to the service. Each distinct file (by content hash) is
//! uploaded once, when the first job that needs it is about to be submitted, and its
//! temporary URL is used by every job that needs the same file while it is younger
//! than its lifetime minus a safety margin; a job that needs a file being uploaded
//! waits for that one upload. Uploads are remembered beside the results file
//! (`<results>.uploads.jsonl`: content hash, URL, time), so a resumed or later run
//! reuses a URL still young enough and uploads again one that is not. A job takes its
//! URLs before it waits for its place among the sends, and renews any that aged past
//! use while it waited, keeping its place. Uploads have slots of their own (as many
//! as the run's requests), so that a job holding a request slot can wait for one.
//!
//! The remembered-uploads file is appended and synced one line per upload (a few
//! per run, one per distinct file: a lock around one append is all it needs), read
//! back tolerating a torn last line, and rewritten through a temporary file and a
//! rename when it holds lines no longer of use. A lost line costs one upload again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::dispatch::{Events, JobEvent};
use crate::api::ErrorClass;
use crate::manifest::{Job, LocalImage};

pub use crate::config::DEFAULT_UPLOAD_TTL;
/// The most an upload's usable life is cut short by: time for the send to leave
/// and for the service to fetch the image after taking the request.
pub const MAX_MARGIN: Duration = Duration::from_secs(60 * 60);

/// The remembered-uploads file beside `results`: `<results>.uploads.jsonl`.
pub fn remembered_path(results: &Path) -> PathBuf {
    let mut name = results.file_name().unwrap_or_default().to_os_string();
    name.push(".uploads.jsonl");
    results.with_file_name(name)
}

/// The first line of every remembered-uploads file veo-batch writes: a file at that
/// path without it (and without any line veo-batch writes) is someone else's, and is
/// never rewritten or emptied.
const MARK: &str = r#"{"veo_batch":"remembered uploads"}"#;

/// A file at the remembered-uploads path that veo-batch did not write.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{}` is not a file veo-batch wrote (it remembers uploaded images there), so it is left \
     as it is and nothing was sent; move it elsewhere, or give this run another --results",
    path.display()
)]
pub struct NotOurs {
    pub path: PathBuf,
}

/// True when `text` is a remembered-uploads file veo-batch wrote: it starts with
/// [`MARK`], or (written before the mark was) holds a line veo-batch writes.
fn is_ours(text: &str) -> bool {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).peekable();
    match lines.peek() {
        None => true,
        Some(first) if first.trim() == MARK => true,
        Some(_) => lines.any(|l| serde_json::from_str::<Line>(l).is_ok()),
    }
}

/// How long an upload that lives `ttl` is used for: `ttl` less a margin of a quarter
/// of it, at most [`MAX_MARGIN`] (23 h of the default 24 h).
pub fn usable_life(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 4).min(MAX_MARGIN))
}

/// One line of the remembered-uploads file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    sha256: String,
    /// The upload host it was sent to: a URL from another host (another account, a
    /// simulator) is not used.
    host: String,
    url: String,
    /// RFC 3339, UTC: taken just before the upload was sent, so never late.
    uploaded_at: String,
}

/// What is known of one file's upload in this run.
#[derive(Debug, Clone)]
enum Slot {
    Empty,
    Ready {
        url: String,
        at: SystemTime,
    },
    /// It could not be uploaded: every job that needs it fails with this.
    Failed(Refusal),
}

/// Why a job's images could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Option<i64>,
    pub message: String,
    /// The key was refused: the run stops, as for generate.
    pub auth: bool,
}

/// Why [`Uploads::lease`] gave no URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLease {
    /// The image cannot be had: the job fails (or, for `auth`, the run stops).
    Refused(Refusal),
    /// Submissions stopped while it waited.
    Stopped,
}

/// A job's image URLs, usable until `until`.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `(index in imageUrls, URL)`.
    pub urls: Vec<(usize, String)>,
    /// Each image's upload, to forget it if the service says it is gone.
    used: Vec<(String, SystemTime)>,
    until: SystemTime,
}

impl Lease {
    /// True while every URL is young enough to send.
    pub fn fresh(&self) -> bool {
        SystemTime::now() < self.until
    }
}

/// What an upload needs of the run: the client, the retry policy, the token that
/// stops submissions, and the dispatcher (which counts retries).
pub struct Run<'a> {
    pub client: &'a crate::api::Client,
    pub retry: crate::retry::RetryPolicy,
    pub stop: &'a tokio_util::sync::CancellationToken,
    pub events: &'a Events,
}

/// The run's uploads: what is known of each file, and the remembered-uploads file.
#[derive(Debug)]
pub struct Uploads {
    path: PathBuf,
    /// The upload host, as remembered lines name it.
    host: String,
    usable: Duration,
    /// Uploads in flight at most. Their own, not the run's request slots: a job that
    /// holds a request slot (and a place among the sends) may wait for an upload in
    /// flight, which must then never wait for a request slot itself.
    permits: tokio::sync::Semaphore,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Opened at the first upload of the run.
    file: Arc<Mutex<Option<File>>>,
}

impl Uploads {
    /// The uploads to `host` remembered beside `results` that are still usable, for a
    /// run whose uploads live `ttl`; warnings for what could not be read. The file is
    /// rewritten without lines of no further use (expired, superseded, torn); other
    /// hosts' young lines are kept for their runs.
    ///
    /// A run that uploads nothing (`needed` false) leaves the file alone; one that
    /// may upload refuses a file there that veo-batch did not write.
    pub fn load(
        results: &Path,
        host: &str,
        ttl: Duration,
        concurrency: usize,
        needed: bool,
    ) -> Result<(Uploads, Vec<String>), NotOurs> {
        let path = remembered_path(results);
        let usable = usable_life(ttl);
        let mut warnings = Vec::new();
        let empty = |path| Uploads {
            path,
            host: host.to_owned(),
            usable,
            permits: tokio::sync::Semaphore::new(concurrency.max(1)),
            slots: Mutex::new(HashMap::new()),
            file: Arc::new(Mutex::new(None)),
        };
        if !needed {
            return Ok((empty(path), warnings));
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                warnings.push(format!(
                    "cannot read {} ({e}); local images are uploaded again",
                    path.display()
                ));
                String::new()
            }
        };
        if !is_ours(&text) {
            return Err(NotOurs { path });
        }
        let marked = text.lines().next().is_some_and(|l| l.trim() == MARK);
        let (remembered, lines, skipped) = parse(&text, usable);
        for n in skipped {
            warnings.push(format!(
                "{}:{n}: an unreadable line was skipped (its file is uploaded again when needed)",
                path.display()
            ));
        }
        // A file from before the mark gets it with its next rewrite.
        if (lines > remembered.len() || !marked && lines > 0)
            && let Err(e) = rewrite(&path, &remembered)
        {
            warnings.push(format!("cannot rewrite {}: {e}", path.display()));
        }
        let slots = remembered
            .into_iter()
            .filter(|(line, _)| line.host == host)
            .map(|(line, at)| {
                let slot = Slot::Ready { url: line.url, at };
                (line.sha256, Arc::new(tokio::sync::Mutex::new(slot)))
            })
            .collect();
        let uploads = Uploads {
            slots: Mutex::new(slots),
            ..empty(path)
        };
        Ok((uploads, warnings))
    }

    /// The remembered-uploads file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn slot(&self, sha256: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry(sha256.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty)))
            .clone()
    }

    /// URLs for every local image of `job`, uploading what has no usable URL yet.
    pub async fn lease(
        &self,
        run: &Run<'_>,
        job: &Job,
        rng: &mut fastrand::Rng,
    ) -> Result<Lease, NoLease> {
        let mut lease = Lease {
            urls: Vec::with_capacity(job.local_images.len()),
            used: Vec::with_capacity(job.local_images.len()),
            until: SystemTime::now() + self.usable,
        };
        for local in &job.local_images {
            let (url, at) = self.url(run, &local.image, rng).await?;
            lease.until = lease.until.min(at + self.usable);
            lease.urls.push((local.index, url));
            lease.used.push((local.image.sha256.clone(), at));
        }
        Ok(lease)
    }

    /// After the service could not fetch a leased image: its uploads are not used
    /// again (unless another job has uploaded it anew since).
    pub async fn forget(&self, lease: &Lease) {
        for (sha, used_at) in &lease.used {
            let slot = self.slot(sha);
            let mut slot = slot.lock().await;
            if matches!(&*slot, Slot::Ready { at, .. } if at == used_at) {
                *slot = Slot::Empty;
            }
        }
    }

    /// A usable URL of `image` and when it was uploaded: the one known, or a new upload.
    async fn url(
        &self,
        run: &Run<'_>,
        image: &LocalImage,
        rng: &mut fastrand::Rng,
    ) -> Result<(String, SystemTime), NoLease> {
        let slot = self.slot(&image.sha256);
        // Held through the upload: jobs that need the same file wait for this one.
        let mut slot = tokio::select! {
            biased;
            () = run.stop.cancelled() => return Err(NoLease::Stopped),
            s = slot.lock() => s,
        };
        match &*slot {
            Slot::Ready { url, at } if young(*at, self.usable) => return Ok((url.clone(), *at)),
            Slot::Failed(refusal) => return Err(NoLease::Refused(refusal.clone())),
            Slot::Ready { .. } | Slot::Empty => {}
        }
        match self.upload(run, image, rng).await {
            Ok((url, at)) => {
                *slot = Slot::Ready {
                    url: url.clone(),
                    at,
                };
                Ok((url, at))
            }
            Err(NoLease::Refused(refusal)) if !refusal.auth => {
                *slot = Slot::Failed(refusal.clone());
                Err(NoLease::Refused(refusal))
            }
            Err(other) => Err(other),
        }
    }

    /// Uploads `image` with the run's retries; remembers it on success.
    async fn upload(
        &self,
        run: &Run<'_>,
        image: &LocalImage,
        rng: &mut fastrand::Rng,
    ) -> Result<(String, SystemTime), NoLease> {
        let shown = image.path.display().to_string();
        let refused = |code: Option<i64>, message: String, auth: bool| {
            NoLease::Refused(Refusal {
                code,
                message,
                auth,
            })
        };
        let read = {
            let image = image.clone();
            tokio::task::spawn_blocking(move || image.read_again()).await
        };
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => return Err(refused(None, why, false)),
            Err(e) => {
                return Err(refused(
                    None,
                    format!("reading `{shown}` failed: {e}"),
                    false,
                ));
            }
        };
        let retry = run.retry;
        let mut delays = retry.nominal_delays();
        let name = image.upload_name();
        loop {
            let permit = tokio::select! {
                biased;
                () = run.stop.cancelled() => return Err(NoLease::Stopped),
                p = self.permits.acquire() => p.map_err(|_| NoLease::Stopped)?,
            };
            let at = SystemTime::now();
            tracing::debug!(file = %shown, bytes = bytes.len(), "uploading a local image");
            let sent = run
                .client
                .upload(bytes.clone(), &name, image.kind.mime())
                .await;
            drop(permit);
            let e = match sent {
                Ok(url) => {
                    tracing::info!(file = %shown, "uploaded a local image");
                    self.remember(&image.sha256, &url, at).await;
                    return Ok((url, at));
                }
                Err(e) => e,
            };
            match e.class {
                ErrorClass::Auth => return Err(refused(e.code, e.message, true)),
                // An upload changes nothing a second one would not: a lost answer is
                // safe to send again, under the same name.
                ErrorClass::Retryable | ErrorClass::InDoubt => {
                    let Some(nominal) = delays.next() else {
                        let message = format!(
                            "upload of `{shown}` gave up after {} attempts: {}",
                            retry.max_attempts, e.message
                        );
                        return Err(refused(e.code, message, false));
                    };
                    let delay = retry.delay(nominal, &e, rng);
                    let _ = run.events.send(JobEvent::Retry { code: e.code });
                    tracing::info!(file = %shown, code = e.code, delay_ms = delay.as_millis() as u64, "retrying upload: {}", e.message);
                    tokio::select! {
                        biased;
                        () = run.stop.cancelled() => return Err(NoLease::Stopped),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                ErrorClass::Failed | ErrorClass::Credits => {
                    let message = format!("upload of `{shown}` failed: {}", e.message);
                    return Err(refused(e.code, message, false));
                }
            }
        }
    }

    /// Appends one upload to the remembered-uploads file and syncs it. A failure is
    /// a warning: the URL serves this run, and the next one uploads again.
    async fn remember(&self, sha256: &str, url: &str, at: SystemTime) {
        let line = Line {
            sha256: sha256.to_owned(),
            host: self.host.clone(),
            url: url.to_owned(),
            uploaded_at: humantime::format_rfc3339_millis(at).to_string(),
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        let path = self.path.clone();
        let file = Arc::clone(&self.file);
        // On the blocking pool: the run's one thread never waits on the disk.
        let written = tokio::task::spawn_blocking(move || append(&file, &path, text.as_bytes()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::warn!(
                "failed to remember an upload in {}: {e}; the next run uploads it again",
                self.path.display()
            );
        }
    }
}

/// The remembered uploads in `text` still usable, the newest per host and file, in
/// the order they were made; how many lines there were; and the numbers of unreadable
/// lines other than the last (which a kill may have cut mid-write).
fn parse(text: &str, usable: Duration) -> (Vec<(Line, SystemTime)>, usize, Vec<usize>) {
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != MARK)
        .collect();
    let mut latest: HashMap<(String, String), (Line, SystemTime)> = HashMap::new();
    let mut skipped = Vec::new();
    for (n, text) in all.iter().enumerate() {
        let parsed = serde_json::from_str::<Line>(text).ok().and_then(|l| {
            let at = humantime::parse_rfc3339(&l.uploaded_at).ok()?;
            Some((l, at))
        });
        let Some((line, at)) = parsed else {
            if n + 1 != all.len() {
                skipped.push(n + 1);
            }
            continue;
        };
        let key = (line.host.clone(), line.sha256.clone());
        if latest.get(&key).is_none_or(|(_, prev)| *prev <= at) {
            latest.insert(key, (line, at));
        }
    }
    let mut kept: Vec<(Line, SystemTime)> = latest
        .into_values()
        .filter(|(_, at)| young(*at, usable))
        .collect();
    kept.sort_by_key(|(_, at)| *at);
    (kept, all.len(), skipped)
}

fn young(at: SystemTime, usable: Duration) -> bool {
    SystemTime::now()
        .duration_since(at)
        .map_or(true, |age| age < usable)
}

/// Appends `bytes` to the file at `path` (opened on first use) and syncs it.
fn append(file: &Mutex<Option<File>>, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = file
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if file.is_none() {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        if f.metadata()?.len() == 0 {
            f.write_all(format!("{MARK}\n").as_bytes())?;
        }
        *file = Some(f);
    }
    let Some(f) = file.as_mut() else {
        return Ok(());
    };
    f.write_all(bytes)?;
    f.sync_data()
}

/// Writes `kept` to `path`, atomically (see [`crate::durable::replace`]).
fn rewrite(path: &Path, kept: &[(Line, SystemTime)]) -> std::io::Result<()> {
    crate::durable::replace(path, |f| {
        f.write_all(format!("{MARK}\n").as_bytes())?;
        for (line, _) in kept {
            let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
            text.push('\n');
            f.write_all(text.as_bytes())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: &str, sha: &str, url: &str, ago: Duration) -> String {
        let at = SystemTime::now() - ago;
        let l = Line {
            sha256: sha.into(),
            host: host.into(),
            url: url.into(),
            uploaded_at: humantime::format_rfc3339_millis(at).to_string(),
        };
        serde_json::to_string(&l).unwrap()
    }

    #[test]
    fn the_file_sits_beside_the_results_and_uploads_are_used_short_of_their_life() {
        assert_eq!(
            remembered_path(Path::new("out/r.csv")),
            Path::new("out/r.csv.uploads.jsonl")
        );
        assert_eq!(
            usable_life(DEFAULT_UPLOAD_TTL),
            Duration::from_secs(23 * 3600)
        );
        assert_eq!(usable_life(Duration::from_secs(4)), Duration::from_secs(3));
    }

    #[test]
    fn the_newest_young_upload_per_host_and_file_is_kept_and_a_torn_end_is_no_error() {
        let h = Duration::from_secs(3600);
        let text = [
            line("up", "a", "u-a-old", 3 * h),
            line("up", "a", "u-a-new", h),
            line("up", "b", "u-b", 30 * h),
            "{not json".to_owned(),
            line("other", "a", "o-a", h),
            line("up", "c", "u-c", h)[..20].to_owned(),
        ]
        .join("\n");
        let (kept, lines, skipped) = parse(&text, usable_life(DEFAULT_UPLOAD_TTL));
        assert_eq!(lines, 6);
        assert_eq!(skipped, [4], "the garbage in the middle, not the torn end");
        let urls: Vec<(&str, &str)> = kept
            .iter()
            .map(|(l, _)| (l.host.as_str(), l.url.as_str()))
            .collect();
        assert_eq!(urls.len(), 2);
        assert!(urls.contains(&("up", "u-a-new")), "{urls:?}");
        assert!(urls.contains(&("other", "o-a")), "{urls:?}");
    }

    #[test]
    fn loading_keeps_this_hosts_uploads_and_rewrites_the_rest_away() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let path = remembered_path(&results);
        let h = Duration::from_secs(3600);
        let text = [
            line("up", "a", "u-a", h),
            line("up", "b", "u-b", 30 * h),
            line("other", "a", "o-a", h),
            "{\"sha256\":\"c\",\"ho".to_owned(),
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let (uploads, warnings) =
            Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, true).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let slots = uploads.slots.lock().unwrap();
        assert_eq!(slots.len(), 1);
        assert!(slots.contains_key("a"));
        let rewritten = std::fs::read_to_string(&path).unwrap();
        assert_eq!(rewritten.lines().count(), 3, "{rewritten}");
        assert_eq!(rewritten.lines().next(), Some(MARK), "marked as ours");
        assert!(rewritten.contains("o-a") && rewritten.contains("u-a"));
    }

    #[test]
    fn a_file_veo_batch_did_not_write_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let path = remembered_path(&results);
        let theirs = "{\"level\":\"info\",\"msg\":\"someone's log\"}\nplain notes\n";
        std::fs::write(&path, theirs).unwrap();
        let err = Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, true).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "`{}` is not a file veo-batch wrote",
                path.display()
            )),
            "{err}"
        );
        // A run that uploads nothing does not even look at it.
        assert!(Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, false).is_ok());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), theirs);
        // An empty file, a marked one and one written before the mark are ours.
        for ours in [
            String::new(),
            format!("{MARK}\n"),
            line("up", "a", "u", Duration::ZERO),
        ] {
            std::fs::write(&path, &ours).unwrap();
            assert!(
                Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, true).is_ok(),
                "{ours}"
            );
        }
    }

    #[test]
    fn a_remembered_upload_is_appended_and_synced() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let (uploads, _) = Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(uploads.remember("a", "u-a", SystemTime::now()));
        rt.block_on(uploads.remember("b", "u-b", SystemTime::now()));
        let (again, _) = Uploads::load(&results, "up", DEFAULT_UPLOAD_TTL, 2, true).unwrap();
        assert_eq!(again.slots.lock().unwrap().len(), 2);
        let (elsewhere, _) =
            Uploads::load(&results, "another-host", DEFAULT_UPLOAD_TTL, 2, true).unwrap();
        assert!(elsewhere.slots.lock().unwrap().is_empty());
    }
}
