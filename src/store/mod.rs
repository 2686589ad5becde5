//! Where a run's files live when that is a bucket: parsing an output location
//! (`s3://bucket/prefix` or a plain path), the S3 settings read from the standard
//! `AWS_*` environment (never from the manifest, never printed), the [`Bucket`]
//! handle the other store modules work through, and the start-up probe that names
//! the bucket and the operation a store refuses.
//!
//! The pieces a bucket run is made of live beside this file: video objects that
//! appear only complete ([`video`]), the checkpoint as an append-only log of small
//! objects compacted into the plain results CSV ([`log`]), and the lease that keeps
//! two runs off one results object ([`lease`]).

pub mod fetch;
pub mod lease;
pub mod log;
pub mod run;
pub mod video;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions,
    RetryConfig,
};

/// Where a flag or the manifest's `output:` puts a file or a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine, as today.
    Local(PathBuf),
    /// An S3 (or S3-compatible) bucket and a key or key prefix in it.
    S3(BucketUrl),
}

/// `s3://bucket/key`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub bucket: String,
    /// The key (a results object) or key prefix (a videos folder), without leading
    /// or trailing `/`; empty for the bucket's root.
    pub key: String,
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.as_str() {
            "" => write!(f, "s3://{}", self.bucket),
            key => write!(f, "s3://{}/{key}", self.bucket),
        }
    }
}

/// A location that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error(
        "{flag}: `{value}` has the scheme `{scheme}://`, which veo-batch cannot write to; give a local path or an s3://bucket/prefix URL"
    )]
    UnknownScheme {
        flag: String,
        value: String,
        scheme: String,
    },
    #[error("{flag}: `{value}` names no bucket; write s3://bucket/prefix")]
    NoBucket { flag: String, value: String },
    #[error("{flag}: `{value}` is not a valid key: {problem}")]
    BadKey {
        flag: String,
        value: String,
        problem: String,
    },
}

/// The scheme of `value` when it is written as a URL (`scheme://...`), lowercased.
/// A Windows path (`C:\x`) and a plain path holding `:` are not URLs.
pub fn url_scheme(value: &str) -> Option<String> {
    let (scheme, _) = value.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Why `value` cannot be a setting that takes only a local path (the metrics
/// file, or a run's results and videos where no bucket was set up for them) when it
/// is written as a URL: a URL taken as a path would make a folder named `s3:`. The
/// message reads after the flag or field that gave it.
pub fn refuse_url(value: &str) -> Result<(), String> {
    match url_scheme(value).as_deref() {
        None => Ok(()),
        Some("s3") => Err(format!(
            "`{value}` is a bucket URL, and this setting takes a local path"
        )),
        Some(scheme) => Err(format!(
            "`{value}` has the scheme `{scheme}://`, which veo-batch cannot write to; give a local path"
        )),
    }
}

/// Reads `value`, given by `flag` (`--results`, `output.videos_dir`, ...), as a
/// location: `s3://bucket/prefix`, any other `scheme://` an error naming the flag,
/// anything else a local path.
pub fn parse_location(flag: &str, value: &str) -> Result<Location, LocationError> {
    let Some(scheme) = url_scheme(value) else {
        return Ok(Location::Local(PathBuf::from(value)));
    };
    if scheme != "s3" {
        return Err(LocationError::UnknownScheme {
            flag: flag.to_owned(),
            value: value.to_owned(),
            scheme,
        });
    }
    let rest = &value["s3://".len()..];
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(LocationError::NoBucket {
            flag: flag.to_owned(),
            value: value.to_owned(),
        });
    }
    let key = key.trim_matches('/');
    let bad = |problem: &str| LocationError::BadKey {
        flag: flag.to_owned(),
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    // object_store refuses these segments; saying so here names the flag.
    for part in key.split('/').filter(|_| !key.is_empty()) {
        match part {
            "" => return Err(bad("it has an empty segment (`//`)")),
            "." | ".." => return Err(bad("it has a `.` or `..` segment")),
            _ => {}
        }
    }
    if key.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    Ok(Location::S3(BucketUrl {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }))
}

/// The S3 settings of the environment: only the standard variables, so that the
/// same container settings work with the AWS CLI. The secret and the session token
/// are kept out of `Debug`.
#[derive(Clone, Default)]
pub struct S3Env {
    pub access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL`: an S3-compatible store (R2, MinIO, GCS interoperability).
    pub endpoint: Option<String>,
    /// `AWS_ALLOW_HTTP=true`: a store on plain HTTP (a local one).
    pub allow_http: bool,
}

impl fmt::Debug for S3Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |s: &Option<String>| s.as_ref().map(|_| "<set>");
        f.debug_struct("S3Env")
            .field("access_key_id", &shown(&self.access_key_id))
            .field("secret_access_key", &shown(&self.secret_access_key))
            .field("session_token", &shown(&self.session_token))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Env {
    /// The variables this reads, in the order the docs list them.
    pub const VARIABLES: [&str; 6] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
    ];

    /// Whether a secret access key is set (never what it is).
    pub fn has_secret(&self) -> bool {
        self.secret_access_key.is_some()
    }

    /// The settings of this process's environment.
    pub fn from_env() -> S3Env {
        S3Env::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings `lookup` gives for each variable (tests pass a map, since the
    /// process environment is shared by tests running in parallel). Empty values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> S3Env {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        S3Env {
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            region: get("AWS_REGION"),
            endpoint: get("AWS_ENDPOINT_URL"),
            allow_http: get("AWS_ALLOW_HTTP")
                .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1")),
        }
    }
}

/// How hard a store's requests are retried (5xx, timeouts, dropped connections)
/// before a call fails.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub max_retries: usize,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// No request is retried past this long after it first left.
    pub give_up_after: Duration,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            max_retries: 6,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// A store refused something a run needs.
#[derive(Debug, thiserror::Error)]
#[error("bucket `{bucket}`: cannot {operation}: {reason}")]
pub struct StoreError {
    pub bucket: String,
    /// What was being done (`list objects under s3://b/p`), as a phrase after "cannot".
    pub operation: String,
    /// The store's answer, made readable.
    pub reason: String,
}

impl StoreError {
    pub fn new(bucket: &str, operation: impl Into<String>, source: &object_store::Error) -> Self {
        StoreError {
            bucket: bucket.to_owned(),
            operation: operation.into(),
            reason: reason(source),
        }
    }
}

/// What a store's error means, in a sentence a user can act on, with the store's
/// own words after it.
fn reason(err: &object_store::Error) -> String {
    let text = err.to_string();
    let hint = if text.contains("NoSuchBucket") {
        Some("the bucket does not exist")
    } else if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
        Some("the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are wrong")
    } else if text.contains("AccessDenied") || text.contains("403 Forbidden") {
        Some("access denied: the credentials lack permission for this")
    } else if text.contains("ExpiredToken") {
        Some("the session token (AWS_SESSION_TOKEN) has expired")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({text})"),
        None => text,
    }
}

/// A bucket and the prefix a run's objects live under, through one store client.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// What signs links a person without credentials can open (S3 only).
    signer: Option<Arc<dyn Signer>>,
    name: String,
}

impl fmt::Debug for Bucket {
    // The store's own Debug holds its configuration; only the name is needed here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("name", &self.name).finish()
    }
}

impl Bucket {
    /// A client for the S3 bucket `name` with the settings of `env`.
    pub fn s3(name: &str, env: &S3Env, retries: Retries) -> Result<Bucket, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(name)
            .with_region(env.region.as_deref().unwrap_or("us-east-1"))
            .with_allow_http(env.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: retries.first_backoff,
                    max_backoff: retries.max_backoff,
                    base: 2.0,
                },
                max_retries: retries.max_retries,
                retry_timeout: retries.give_up_after,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(env.allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(id) = &env.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &env.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &env.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &env.endpoint {
            // S3-compatible stores are addressed by path (`host/bucket/key`).
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| StoreError {
            bucket: name.to_owned(),
            operation: "set up a client for it".into(),
            reason: e.to_string(),
        })?;
        let store = Arc::new(store);
        Ok(Bucket {
            store: store.clone(),
            signer: Some(store),
            name: name.to_owned(),
        })
    }

    /// A bucket served by `store` (an in-memory store in tests).
    pub fn with_store(name: &str, store: Arc<dyn ObjectStore>) -> Bucket {
        Bucket {
            store,
            signer: None,
            name: name.to_owned(),
        }
    }

    /// Links to GET the objects at `keys`, valid for `expires_in` to whoever holds
    /// them, signed here with the run's credentials (the secret never leaves).
    pub async fn presign(
        &self,
        keys: &[Key],
        expires_in: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let Some(signer) = &self.signer else {
            return Err(StoreError {
                bucket: self.name.clone(),
                operation: "sign links to its objects".into(),
                reason: "this store cannot sign links".into(),
            });
        };
        let urls = signer
            .signed_urls(object_store::signer::Method::GET, keys, expires_in)
            .await
            .map_err(|e| self.error("sign links to its objects", &e))?;
        Ok(urls.into_iter().map(String::from).collect())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `s3://bucket/key`, as results and messages name an object.
    pub fn url(&self, key: &Key) -> String {
        BucketUrl {
            bucket: self.name.clone(),
            key: key.to_string(),
        }
        .to_string()
    }

    pub(crate) fn error(
        &self,
        operation: impl Into<String>,
        e: &object_store::Error,
    ) -> StoreError {
        StoreError::new(&self.name, operation, e)
    }

    /// Checks at start-up that the run can list, create and delete objects under
    /// `prefix`, so that a missing bucket, wrong credentials or a read-only policy
    /// stop the run before anything is sent. The probe object is removed again.
    pub async fn probe(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = Key::from(prefix);
        let where_ = self.url(&dir);
        self.store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| self.error(format!("list objects under {where_}"), &e))?;
        let probe = dir.clone().join(format!(
            ".veo-batch-probe-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&probe, "probe".into(), opts)
            .await
            .map_err(|e| self.error(format!("create objects under {where_}"), &e))?;
        self.store
            .delete(&probe)
            .await
            .map_err(|e| self.error(format!("delete objects under {where_}"), &e))
    }
}
