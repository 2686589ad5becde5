//! Video objects that appear only complete: a video downloaded to a local staging
//! file is uploaded from it in one create-only PUT, or above a size threshold as a
//! multipart upload (which S3 shows under its name only once completed), and an
//! object already there with the same size and SHA-256 counts as done, so a run
//! killed after its upload and before its checkpoint does not upload twice.
//!
//! The SHA-256 travels as the object's metadata `veo-batch-sha256`. A part is
//! retried by the store client under its own part number (a dropped connection,
//! a 5xx); an upload whose part still fails is aborted and started again, up to
//! [`UploadPolicy::tries`] times, and then reported: the staging file stays for
//! the next run, and nothing is left under the final name.

use std::path::{Path, PathBuf};

use object_store::path::Path as Key;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, MultipartUpload, PutMode,
    PutMultipartOptions, PutOptions, PutPayload,
};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use super::{Bucket, StoreError};

/// The metadata key holding a video object's SHA-256 (lowercase hex).
pub const SHA256: &str = "veo-batch-sha256";

/// When and how a file is uploaded in parts.
#[derive(Debug, Clone, Copy)]
pub struct UploadPolicy {
    /// Files larger than this go up in parts.
    pub multipart_above: u64,
    /// The size of every part but the last (S3: at least 5 MiB).
    pub part_size: usize,
    /// Whole uploads tried before giving up (each part is also retried within one).
    pub tries: u32,
}

impl Default for UploadPolicy {
    fn default() -> UploadPolicy {
        UploadPolicy {
            multipart_above: 32 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            tries: 3,
        }
    }
}

/// How an upload ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// Uploaded in one PUT.
    Put,
    /// Uploaded in this many parts.
    Parts(usize),
    /// The same bytes were already there.
    AlreadyThere,
}

/// A video that could not be put in the bucket.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("failed to read the staged video `{}`: {source}", path.display())]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "{url} already exists with other content ({there}); veo-batch never overwrites a video: move it away or choose another videos prefix"
    )]
    Different { url: String, there: String },
}

/// The size and SHA-256 of the file at `path`.
async fn fingerprint(path: &Path) -> Result<(u64, String), UploadError> {
    let local = |source| UploadError::Local {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(local)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, hex))
}

/// What the object at `key` is, if anything: its size and recorded SHA-256.
async fn existing(bucket: &Bucket, key: &Key) -> Result<Option<(u64, Option<String>)>, StoreError> {
    let opts = GetOptions::new().with_head(true);
    match bucket.store().get_opts(key, opts).await {
        Ok(got) => {
            let sha = got
                .attributes
                .get(&Attribute::Metadata(SHA256.into()))
                .map(|v| v.as_ref().to_owned());
            Ok(Some((got.meta.size, sha)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(bucket.error(format!("look up {}", bucket.url(key)), &e)),
    }
}

/// Ok when what is at the key is this file; the mismatch otherwise.
fn same(
    bucket: &Bucket,
    key: &Key,
    there: (u64, Option<String>),
    size: u64,
    sha: &str,
) -> Result<Uploaded, UploadError> {
    match there {
        (s, Some(h)) if s == size && h == sha => Ok(Uploaded::AlreadyThere),
        (s, h) => Err(UploadError::Different {
            url: bucket.url(key),
            there: match h {
                Some(_) => format!("{s} bytes, another SHA-256"),
                None => format!("{s} bytes, no veo-batch checksum"),
            },
        }),
    }
}

/// Puts the staged file at `file` in the bucket at `key`, complete or not at all.
pub async fn upload(
    bucket: &Bucket,
    key: &Key,
    file: &Path,
    policy: UploadPolicy,
) -> Result<Uploaded, UploadError> {
    let (size, sha) = fingerprint(file).await?;
    if let Some(there) = existing(bucket, key).await? {
        return same(bucket, key, there, size, &sha);
    }
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(SHA256.into()),
        AttributeValue::from(sha.clone()),
    );
    attributes.insert(Attribute::ContentType, AttributeValue::from("video/mp4"));
    let url = bucket.url(key);
    if size <= policy.multipart_above {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|source| UploadError::Local {
                path: file.to_owned(),
                source,
            })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        return match bucket.store().put_opts(key, bytes.into(), opts).await {
            Ok(_) => Ok(Uploaded::Put),
            // Created meanwhile, or by this very PUT sent again after a 5xx.
            Err(object_store::Error::AlreadyExists { .. }) => match existing(bucket, key).await? {
                Some(there) => same(bucket, key, there, size, &sha),
                None => Err(StoreError {
                    bucket: bucket.name().to_owned(),
                    operation: format!("create {url}"),
                    reason: "the store said it exists, then that it does not".into(),
                }
                .into()),
            },
            Err(e) => Err(bucket.error(format!("create {url}"), &e).into()),
        };
    }
    // Multipart uploads cannot be create-only on S3; the check above and the run's
    // lease are what keep a second writer off the key.
    let mut last = None;
    for _ in 0..policy.tries.max(1) {
        match upload_parts(bucket, key, file, &attributes, policy.part_size).await {
            Ok(parts) => return Ok(Uploaded::Parts(parts)),
            Err(e @ UploadError::Local { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("upload of {url} failed, starting it again: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        UploadError::Store(StoreError {
            bucket: bucket.name().to_owned(),
            operation: format!("upload {url}"),
            reason: "no attempt was made".into(),
        })
    }))
}

/// One multipart upload of `file`, one part in flight at a time (a part's memory
/// is the whole cost); aborted on failure so no parts are left to pay for.
async fn upload_parts(
    bucket: &Bucket,
    key: &Key,
    file: &Path,
    attributes: &Attributes,
    part_size: usize,
) -> Result<usize, UploadError> {
    let url = bucket.url(key);
    let local = |source| UploadError::Local {
        path: file.to_owned(),
        source,
    };
    let opts = PutMultipartOptions {
        attributes: attributes.clone(),
        ..PutMultipartOptions::default()
    };
    let mut upload = bucket
        .store()
        .put_multipart_opts(key, opts)
        .await
        .map_err(|e| bucket.error(format!("start a multipart upload of {url}"), &e))?;
    let result = send_parts(&mut upload, file, part_size, &url, bucket, local).await;
    let result = match result {
        Ok(parts) => upload.complete().await.map(|_| parts).map_err(|e| {
            bucket
                .error(format!("complete the upload of {url}"), &e)
                .into()
        }),
        Err(e) => Err(e),
    };
    if result.is_err()
        && let Err(e) = upload.abort().await
    {
        tracing::warn!("failed to abort the upload of {url} (a lifecycle rule removes it): {e}");
    }
    result
}

async fn send_parts(
    upload: &mut Box<dyn MultipartUpload>,
    file: &Path,
    part_size: usize,
    url: &str,
    bucket: &Bucket,
    local: impl Fn(std::io::Error) -> UploadError,
) -> Result<usize, UploadError> {
    let mut source = tokio::fs::File::open(file).await.map_err(&local)?;
    let mut parts = 0;
    loop {
        let mut buf = Vec::with_capacity(part_size);
        let n = (&mut source)
            .take(part_size as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(&local)?;
        if n == 0 && parts > 0 {
            return Ok(parts);
        }
        parts += 1;
        upload
            .put_part(PutPayload::from(buf))
            .await
            .map_err(|e| bucket.error(format!("upload part {parts} of {url}"), &e))?;
        if n < part_size {
            return Ok(parts);
        }
    }
}
