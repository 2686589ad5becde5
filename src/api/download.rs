//! Downloading result files: streamed to `<dest>.part`, checked against the
//! size cap and Content-Length, fsynced, then renamed, so `dest` either holds
//! the whole file or does not exist.

use std::path::{Path, PathBuf};

use reqwest::Url;

use super::classify::body_snippet;
use super::client::{Client, retry_after, root_cause};
use super::{ApiError, ErrorClass};

/// How much of an error page is read to quote it.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// What a result host answers for a link that has expired or been blocked.
const EXPIRED: [i64; 3] = [403, 404, 410];

impl Client {
    /// Downloads `url` to `dest` through a temporary file; the number of bytes.
    ///
    /// A result URL that answers 403, 404 or 410 has expired or been blocked: the
    /// file is then fetched through a fresh link from `download-url` (valid 20
    /// minutes), rather than giving up on a paid video. If that fails too, the error
    /// is the URL's, and a later run tries again.
    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, ApiError> {
        let first = match self.download_once(url, dest).await {
            Err(e) if e.code.is_some_and(|c| EXPIRED.contains(&c)) => e,
            done => return done,
        };
        tracing::info!(error = %first, "result url refused; asking download-url for a fresh link");
        match self.download_url(url).await {
            Ok(fresh) => self
                .download_once(&fresh, dest)
                .await
                .map_err(|e| ApiError {
                    message: format!(
                        "{} (and through a fresh link: {})",
                        first.message, e.message
                    ),
                    ..e
                }),
            Err(e) => Err(ApiError {
                message: format!(
                    "{} (and download-url gave no fresh link: {e})",
                    first.message
                ),
                // A refusal worth asking again (429, 5xx) makes the download worth
                // trying again in this run; anything else leaves it to the next run.
                class: match e.class {
                    ErrorClass::Retryable | ErrorClass::InDoubt => ErrorClass::Retryable,
                    _ => first.class,
                },
                retry_after: e.retry_after,
                ..first
            }),
        }
    }

    /// One try at [`Client::download`]'s URL, without a fresh link.
    ///
    /// No Authorization header is sent: result files live on other hosts. A
    /// download is side-effect free, so lost connections are `Retryable`.
    async fn download_once(&self, url: &str, dest: &Path) -> Result<u64, ApiError> {
        let parsed = Url::parse(url.trim()).map_err(|e| {
            ApiError::new(ErrorClass::Failed, None, format!("invalid result url: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::new(
                ErrorClass::Failed,
                None,
                format!(
                    "invalid result url: scheme `{}` is not http(s)",
                    parsed.scheme()
                ),
            ));
        }
        let shown = shown_url(&parsed);
        let part = part_path(dest).ok_or_else(|| {
            ApiError::new(
                ErrorClass::Failed,
                None,
                format!("download destination `{}` has no file name", dest.display()),
            )
        })?;

        let mut resp = self
            .files
            .get(parsed)
            .send()
            .await
            .map_err(|e| download_transport(&e, &shown))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
            let mut e = download_status(status, &body, &shown);
            e.retry_after = retry_after(resp.headers());
            return Err(e);
        }
        let expected = resp.content_length();
        if let Some(n) = expected
            && n > self.max_download_bytes
        {
            return Err(too_big(&shown, n, self.max_download_bytes));
        }

        let mut sink = Sink::new(part.clone(), dest.to_path_buf());
        let written = self.stream_to(&mut resp, &mut sink, &shown, expected).await;
        let total = match written {
            Ok(total) => total,
            Err(e) => {
                sink.discard().await;
                return Err(e);
            }
        };
        sink.finish().await?;
        tracing::debug!(url = %shown, bytes = total, dest = %dest.display(), "downloaded");
        Ok(total)
    }

    async fn stream_to(
        &self,
        resp: &mut reqwest::Response,
        sink: &mut Sink,
        shown: &str,
        expected: Option<u64>,
    ) -> Result<u64, ApiError> {
        let mut total: u64 = 0;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(download_transport(&e, shown)),
            };
            total = total.saturating_add(chunk.len() as u64);
            if total > self.max_download_bytes {
                return Err(too_big(shown, total, self.max_download_bytes));
            }
            sink.push(&chunk).await?;
        }
        if let Some(n) = expected
            && n != total
        {
            return Err(ApiError::new(
                ErrorClass::Retryable,
                None,
                format!("download of {shown} was cut short: got {total} of {n} bytes"),
            ));
        }
        Ok(total)
    }
}

/// Bytes held in memory before they are written out: a small file (the common
/// case) then costs one trip to the blocking pool in all, not one per step.
const SPILL_BYTES: usize = 1024 * 1024;

/// The part file a download goes to, written on the blocking pool in large
/// pieces: creating, writing, syncing and renaming are all blocking calls, and
/// each trip to the pool wakes a thread.
struct Sink {
    part: PathBuf,
    dest: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Sink {
    fn new(part: PathBuf, dest: PathBuf) -> Sink {
        Sink {
            part,
            dest,
            file: None,
            buf: Vec::new(),
        }
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() < SPILL_BYTES {
            return Ok(());
        }
        let (file, buf) = (self.file.take(), std::mem::take(&mut self.buf));
        let part = self.part.clone();
        let file = blocking(move || write_piece(file, &part, &buf)).await?;
        self.file = Some(file);
        Ok(())
    }

    /// Writes what is left, syncs, renames the part file to `dest` and syncs the
    /// folder: the results file will say this video is done, so it must be on disk
    /// under its name first.
    async fn finish(mut self) -> Result<(), ApiError> {
        let (file, buf) = (self.file.take(), std::mem::take(&mut self.buf));
        let (part, dest) = (self.part.clone(), self.dest.clone());
        blocking(move || {
            let written = write_piece(file, &part, &buf)
                .and_then(|file| file.sync_all().map_err(|e| disk_error("sync", &part, &e)));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            if let Err(e) = std::fs::rename(&part, &dest) {
                let _ = std::fs::remove_file(&part);
                return Err(disk_error("rename into", &dest, &e));
            }
            sync_parent(&dest);
            Ok(())
        })
        .await
    }

    /// Best effort: a leftover part file is overwritten next time.
    async fn discard(mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let part = self.part.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(part)).await;
        }
    }
}

/// Runs `f` on the blocking pool; a pool that is gone (the runtime shutting down)
/// is a failed download.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::new(
            ErrorClass::Failed,
            None,
            format!("the file writer stopped: {e}"),
        )),
    }
}

/// Writes `buf` to the part file, creating it first when `file` is `None`.
fn write_piece(
    file: Option<std::fs::File>,
    part: &Path,
    buf: &[u8],
) -> Result<std::fs::File, ApiError> {
    let mut file = match file {
        Some(f) => f,
        None => create_part(part)?,
    };
    std::io::Write::write_all(&mut file, buf).map_err(|e| disk_error("write", part, &e))?;
    Ok(file)
}

/// Creates the part file, and its folder when missing (looked for only then: the
/// runner makes the folder before the run).
fn create_part(part: &Path) -> Result<std::fs::File, ApiError> {
    match std::fs::File::create(part) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = crate::paths::folder_of(part);
            std::fs::create_dir_all(parent)
                .map_err(|e| disk_error("create directory", parent, &e))?;
            std::fs::File::create(part)
        }
        created => created,
    }
    .map_err(|e| disk_error("create", part, &e))
}

/// `dest` with `.part` added to its file name (`a.mp4` -> `a.mp4.part`).
fn part_path(dest: &Path) -> Option<PathBuf> {
    let mut name = dest.file_name()?.to_os_string();
    name.push(".part");
    Some(dest.with_file_name(name))
}

/// Host and path only: result URLs carry long signed queries that say nothing
/// to a reader.
fn shown_url(url: &Url) -> String {
    format!("{}{}", url.host_str().unwrap_or(""), url.path())
}

/// Makes the rename durable. Best effort: not every platform can open a directory.
fn sync_parent(dest: &Path) {
    let parent = crate::paths::folder_of(dest);
    let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
}

fn too_big(shown: &str, bytes: u64, max: u64) -> ApiError {
    ApiError::new(
        ErrorClass::Failed,
        None,
        format!("download of {shown} refused: {bytes} bytes is over the {max}-byte limit"),
    )
}

fn disk_error(action: &str, path: &Path, e: &std::io::Error) -> ApiError {
    ApiError::new(
        ErrorClass::Failed,
        None,
        format!("failed to {action} `{}`: {e}", path.display()),
    )
}

/// A non-2xx answer from a result host. A 403 there is an expired or refused
/// URL, not our key (we send none), so it fails the download, not the run.
fn download_status(status: u16, body: &[u8], shown: &str) -> ApiError {
    let class = match status {
        408 | 425 | 429 | 500..=599 => ErrorClass::Retryable,
        _ => ErrorClass::Failed,
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    ApiError::new(
        class,
        Some(i64::from(status)),
        format!(
            "download of {shown} failed: http {status} {reason}: {}",
            body_snippet(body)
        ),
    )
}

fn download_transport(e: &reqwest::Error, shown: &str) -> ApiError {
    let cause = root_cause(e);
    let (class, what) = if e.is_redirect() || e.is_builder() {
        (ErrorClass::Failed, "failed")
    } else if e.is_connect() {
        (ErrorClass::Retryable, "could not connect")
    } else if e.is_timeout() {
        (ErrorClass::Retryable, "stalled")
    } else {
        (ErrorClass::Retryable, "was cut short")
    };
    ApiError::new(class, None, format!("download of {shown} {what}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_path_appends_to_the_name() {
        assert_eq!(
            part_path(Path::new("out/a.mp4")),
            Some(PathBuf::from("out/a.mp4.part"))
        );
        assert_eq!(part_path(Path::new("/")), None);
    }

    #[test]
    fn download_status_classes() {
        assert_eq!(download_status(404, b"", "h/p").class, ErrorClass::Failed);
        assert_eq!(download_status(403, b"", "h/p").class, ErrorClass::Failed);
        assert_eq!(
            download_status(503, b"", "h/p").class,
            ErrorClass::Retryable
        );
        assert_eq!(
            download_status(429, b"", "h/p").class,
            ErrorClass::Retryable
        );
    }

    #[test]
    fn shown_url_drops_the_query() {
        let u = Url::parse("https://tempfile.aiquickdraw.com/v/abc.mp4?sig=xyz").unwrap();
        assert_eq!(shown_url(&u), "tempfile.aiquickdraw.com/v/abc.mp4");
    }
}
