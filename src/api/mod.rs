//! The kie.ai client: typed calls for every endpoint a runner needs, and the
//! classification of every answer into what the runner should do about it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub key: ApiKey,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
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
    },
    Failed {
        flag: i64,
        error_code: Option<i64>,
        error_message: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Client {}

impl Client {
    pub fn new(config: ClientConfig) -> anyhow::Result<Client> {
        let _ = config;
        todo!()
    }

    /// POST /api/v1/veo/generate; the task id.
    pub async fn generate(&self, body: &serde_json::Value) -> Result<String, ApiError> {
        let _ = body;
        todo!()
    }

    /// GET /api/v1/veo/record-info.
    pub async fn record_info(&self, task_id: &str) -> Result<TaskState, ApiError> {
        let _ = task_id;
        todo!()
    }

    /// Downloads `url` to `dest` through a temporary file; the number of bytes.
    pub async fn download(&self, url: &str, dest: &Path) -> Result<u64, ApiError> {
        let _ = (url, dest);
        todo!()
    }
}

impl ApiError {
    /// record-info's 422 "record is null": the task is unknown, or too new to be known.
    pub fn is_record_null(&self) -> bool {
        self.code == Some(422) && self.message.to_ascii_lowercase().contains("record is null")
    }
}
