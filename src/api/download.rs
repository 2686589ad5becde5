//! Downloading result files: streamed to `<dest>.part`, checked against the
//! size cap and Content-Length, fsynced, then renamed, so `dest` either holds
//! the whole file or does not exist.

use std::path::{Path, PathBuf};

use reqwest::Url;
use tokio::io::AsyncWriteExt;

use super::classify::body_snippet;
use super::client::{Client, retry_after, root_cause};
use super::{ApiError, ErrorClass};

/// How much of an error page is read to quote it.
const MAX_ERROR_BODY: usize = 16 * 1024;

impl Client {
    /// Downloads `url` to `dest` through a temporary file; the number of bytes.
    ///
    /// No Authorization header is sent: result files live on other hosts. A
    /// download is side-effect free, so lost connections are `Retryable`.
    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, ApiError> {
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

        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| disk_error("create directory", parent, &e))?;
        }
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| disk_error("create", &part, &e))?;
        let written = self
            .stream_to(&mut resp, &mut file, &part, &shown, expected)
            .await;
        drop(file);
        let total = match written {
            Ok(total) => total,
            Err(e) => {
                // Best effort: a leftover part file is overwritten next time.
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&part, dest).await {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(disk_error("rename into", dest, &e));
        }
        sync_parent(dest).await;
        tracing::debug!(url = %shown, bytes = total, dest = %dest.display(), "downloaded");
        Ok(total)
    }

    async fn stream_to(
        &self,
        resp: &mut reqwest::Response,
        file: &mut tokio::fs::File,
        part: &Path,
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
            file.write_all(&chunk)
                .await
                .map_err(|e| disk_error("write", part, &e))?;
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
        file.flush()
            .await
            .map_err(|e| disk_error("write", part, &e))?;
        // The results file will say this video is done: make sure it is on disk first.
        file.sync_all()
            .await
            .map_err(|e| disk_error("sync", part, &e))?;
        Ok(total)
    }
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
async fn sync_parent(dest: &Path) {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&parent).and_then(|d| d.sync_all())
    })
    .await;
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
