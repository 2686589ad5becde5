//! The kie.ai client: typed calls for every endpoint a runner needs, and the
//! classification of every answer into what the runner should do about it.
//!
//! `classify` holds the pure rules (envelope code first, HTTP status second),
//! `wire` the tolerant parsing of answer bodies, `client` the reqwest calls and
//! `download` the streaming of result files to disk.

mod classify;
mod client;
mod download;
mod key;
mod keys;
mod transport;
mod upload;
mod wire;

use std::fmt;
use std::time::Duration;

pub use classify::{Envelope, classify, parse_envelope, parse_retry_after};
pub use client::Client;
pub use key::{ApiKey, KEY_ENV};
pub use keys::{KEYS_ENV, KeyId, KeyRing, PoolKey};
pub use transport::{InsecureBase, is_loopback};
pub use upload::{DEFAULT_UPLOAD_BASE, UPLOAD_PATH, upload_base};

/// The default cap on one downloaded file: a Veo clip is tens of MB, 4K a few
/// hundred; anything past this is not a video we asked for.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    /// Where local images are uploaded; `None`: `base_url` (see [`upload_base`]).
    pub upload_base_url: Option<String>,
    pub key: ApiKey,
    pub connect_timeout: Duration,
    /// The whole-call limit for API calls; for downloads, the longest wait for
    /// the next bytes (a large file may take longer than this in total).
    pub request_timeout: Duration,
    /// A download larger than this is refused (`ErrorClass::Failed`).
    pub max_download_bytes: u64,
    /// Accept a plain-http base on a host that is not loopback
    /// (`--allow-insecure-http`): the key then travels in clear.
    pub allow_insecure_http: bool,
}

/// Checks the API base and the upload base a command was given (`upload_base`
/// as [`upload_base`] resolves it) before anything else happens: a malformed URL
/// or a plain-http one off loopback (see [`transport::check_base`]) is an error
/// naming the setting, and nothing is looked up or sent.
pub fn check_bases(
    api_base: &str,
    upload_base: Option<&str>,
    allow_insecure_http: bool,
) -> anyhow::Result<()> {
    let api = client::parse_base(api_base)?;
    transport::check_base(&api, client::API_BASE_SETTING, allow_insecure_http)?;
    if let Some(raw) = upload_base {
        let upload = client::parse_upload_base(raw)?;
        transport::check_base(&upload, client::UPLOAD_BASE_SETTING, allow_insecure_http)?;
    }
    Ok(())
}

/// The live service.
pub const DEFAULT_BASE_URL: &str = "https://api.kie.ai";

impl ClientConfig {
    /// A config with the default timeouts (10 s connect, 60 s request) and cap.
    /// Uploads go where [`upload_base`] says for `base_url` alone.
    pub fn new(base_url: impl Into<String>, key: ApiKey) -> ClientConfig {
        let base_url = base_url.into();
        ClientConfig {
            upload_base_url: Some(upload_base(&base_url, None)),
            base_url,
            key,
            ..ClientConfig::default()
        }
    }
}

/// The live service, no key (set one), the default timeouts and cap.
impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            upload_base_url: Some(DEFAULT_UPLOAD_BASE.to_owned()),
            key: ApiKey::new(""),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
            allow_insecure_http: false,
        }
    }
}

/// What the runner should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not done; safe to send again later (429, 455, 500, 502-504, refused connection).
    Retryable,
    /// Sent, but no answer came: the call may have taken effect.
    InDoubt,
    /// The key was refused (401, CDN 403): stop the run.
    Auth,
    /// Credits are exhausted (402, 433): stop submitting.
    Credits,
    /// This call failed for good (400, 404, 422, 501, 505, anything else).
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub class: ErrorClass,
    /// The envelope code, or the HTTP status when the body was not an envelope.
    pub code: Option<i64>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub(crate) fn new(class: ErrorClass, code: Option<i64>, message: impl Into<String>) -> Self {
        ApiError {
            class,
            code,
            message: classify::clean_message(&message.into()),
            retry_after: None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "{c}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// A task's state as record-info tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    Generating,
    Succeeded {
        result_urls: Vec<String>,
        /// For an extend task: the whole stitched video (`resultUrls` is then only
        /// the new segment). Empty for other tasks.
        full_result_urls: Vec<String>,
    },
    Failed {
        flag: i64,
        error_code: Option<i64>,
        error_message: Option<String>,
    },
}

/// The answer of get-1080p-video.
#[derive(Debug, Clone, PartialEq)]
pub enum Upgrade1080 {
    Ready(String),
    /// Not ready yet; ask again in 20-30 s. The service's message.
    Processing(String),
}

/// The answer of get-4k-video.
#[derive(Debug, Clone, PartialEq)]
pub enum Upgrade4k {
    Ready(Vec<String>),
    /// Not ready yet; ask again later. The service's message.
    Processing(String),
}

impl ErrorClass {
    /// A short lowercase name for logs and the results file.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::InDoubt => "in-doubt",
            ErrorClass::Auth => "auth",
            ErrorClass::Credits => "credits",
            ErrorClass::Failed => "failed",
        }
    }
}

impl ApiError {
    /// record-info's 422 "record is null": the task is unknown, or too new to be known.
    pub fn is_record_null(&self) -> bool {
        self.code == Some(422) && self.message.to_ascii_lowercase().contains("record is null")
    }

    /// A 422 whose message starts with "record" ("record is null", "record result data
    /// is blank", "... is empty", "... not exist", "record status is not success"), on
    /// record-info or the upgrade endpoints: the record is not ready yet, which within
    /// a grace period is no failure. "Temporarily supports records within 14 days" (the
    /// record aged out) does not start so, and stays final.
    pub fn is_record_not_ready(&self) -> bool {
        self.code == Some(422)
            && self
                .message
                .trim_start()
                .get(..6)
                .is_some_and(|w| w.eq_ignore_ascii_case("record"))
    }
}
