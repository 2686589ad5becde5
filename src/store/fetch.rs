//! A bucket batch's results read for `status`, `report` and `credits`: the record
//! rebuilt from the bucket (the compacted CSV and the log after it; reading takes
//! no lease) into a local temporary file that those commands read as they read a
//! local one. For `report`, the videos' `s3://` URLs become presigned links, so the
//! page plays its videos for whoever has it, without credentials, until they
//! expire ([`LINKS_LAST`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use object_store::path::Path as Key;

use super::log::read;
use super::{Bucket, BucketUrl, Location, Retries, S3Env, parse_location};
use crate::checkpoint::Record;

/// How long the presigned links of a report page work: the longest S3 signs
/// (SigV4 allows seven days).
pub const LINKS_LAST: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A bucket's results, copied to a local file for as long as this lives.
#[derive(Debug)]
pub struct Fetched {
    _dir: tempfile::TempDir,
    /// The local copy, named like the object.
    pub path: PathBuf,
    pub url: BucketUrl,
}

/// The results at `value` (given by `setting`) copied to a local file when
/// `value` is a bucket URL (None for a local path); with `links`, every recorded
/// video object is a presigned link in the copy. Any other scheme is an error.
pub fn fetch(setting: &str, value: &Path, links: bool) -> anyhow::Result<Option<Fetched>> {
    let Some(text) = value.to_str() else {
        return Ok(None);
    };
    let url = match parse_location(setting, text)? {
        Location::Local(_) => return Ok(None),
        Location::S3(url) => url,
    };
    // On a thread and a runtime of its own: `credits` calls this from its runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start a runtime to read the bucket")?
                .block_on(fetch_async(url, links))
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the bucket's reader panicked")))
    })
    .map(Some)
}

async fn fetch_async(url: BucketUrl, links: bool) -> anyhow::Result<Fetched> {
    let env = S3Env::from_env();
    if env.access_key_id.is_none() || !env.has_secret() {
        return Err(super::StoreError {
            bucket: url.bucket.clone(),
            operation: format!("read {url}"),
            reason: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (with AWS_ENDPOINT_URL for a store other than AWS S3)".into(),
        }
        .into());
    }
    let bucket = Bucket::s3(&url.bucket, &env, Retries::default())?;
    let rebuilt = read(&bucket, &Key::from(url.key.as_str())).await?;
    if rebuilt.loaded.rows == 0 && rebuilt.commits.is_empty() {
        anyhow::bail!("no results at {url}: nothing has run with them yet");
    }
    let loaded = rebuilt.loaded;
    let mut rows: Vec<Record> = loaded
        .order
        .iter()
        .filter_map(|id| loaded.records.get(id).cloned())
        .collect();
    if links {
        presign_videos(&mut rows, &bucket, &env).await?;
    }
    let dir = tempfile::Builder::new()
        .prefix("veo-batch-results-")
        .tempdir()
        .context("failed to create a temporary folder for the results")?;
    let name = url.key.rsplit('/').next().unwrap_or("results.csv");
    let path = dir
        .path()
        .join(if name.is_empty() { "results.csv" } else { name });
    crate::checkpoint::writer::rewrite(&path, &rows)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(Fetched {
        _dir: dir,
        path,
        url,
    })
}

/// Replaces every `s3://` video of `rows` with a presigned link, one signing call
/// per bucket.
async fn presign_videos(rows: &mut [Record], home: &Bucket, env: &S3Env) -> anyhow::Result<()> {
    let mut by_bucket: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows.iter() {
        for p in r.video_paths.iter().chain(&r.superseded_paths) {
            if let Ok(Location::S3(u)) = parse_location("video_paths", p) {
                by_bucket.entry(u.bucket).or_default().push(u.key);
            }
        }
    }
    let mut signed: HashMap<String, String> = HashMap::new();
    for (name, keys) in by_bucket {
        let bucket = if name == home.name() {
            home.clone()
        } else {
            Bucket::s3(&name, env, Retries::default())?
        };
        let keys: Vec<Key> = keys.iter().map(|k| Key::from(k.as_str())).collect();
        let links = bucket.presign(&keys, LINKS_LAST).await?;
        for (key, link) in keys.iter().zip(links) {
            signed.insert(bucket.url(key), link);
        }
    }
    for r in rows.iter_mut() {
        for p in r.video_paths.iter_mut().chain(&mut r.superseded_paths) {
            if let Some(link) = signed.get(p.as_str()) {
                p.clone_from(link);
            }
        }
    }
    Ok(())
}
