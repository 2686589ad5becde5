//! `POST /api/file-stream-upload` on the upload host: a local image's bytes up, its
//! temporary URL (`data.downloadUrl`, on yet another host) back. The upload host is
//! not the API's (`kieai.redpandaai.co` against `api.kie.ai`), but takes the same key.
//! One request per call and no retries, like every other call of the client.

use reqwest::Url;
use reqwest::header::AUTHORIZATION;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::{ApiError, Client, ErrorClass};

/// The live upload host (recorded live; newer docs also show api.kie.ai, unverified).
pub const DEFAULT_UPLOAD_BASE: &str = "https://kieai.redpandaai.co";
/// The upload endpoint, relative to the upload host.
pub(super) const UPLOAD: &str = "api/file-stream-upload";
/// The folder uploads go to on the service (no leading or trailing slash).
pub const UPLOAD_PATH: &str = "images/veo-batch";

/// Where uploads go: `flag` (`--upload-base` or `KIE_UPLOAD_BASE`) when given; else
/// the API base when it is not the live service's (a simulator or a stand-in serves
/// both); else the live upload host.
pub fn upload_base(api_base: &str, flag: Option<&str>) -> String {
    match flag.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => f.to_owned(),
        None if api_base.trim().trim_end_matches('/') != super::DEFAULT_BASE_URL => {
            api_base.to_owned()
        }
        None => DEFAULT_UPLOAD_BASE.to_owned(),
    }
}

impl Client {
    /// The upload host (always ends in `/`).
    pub fn upload_base_url(&self) -> &Url {
        &self.upload_base
    }

    /// Uploads `bytes` as `file_name` (of type `mime`) into [`UPLOAD_PATH`]; the URL
    /// to put in `imageUrls`. Success is HTTP 2xx, `code` 200 and `success` not false.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        file_name: &str,
        mime: &str,
    ) -> Result<String, ApiError> {
        let what = "file-stream-upload";
        let size = bytes.len() as u64;
        let part = Part::bytes(bytes)
            .file_name(file_name.to_owned())
            .mime_str(mime)
            .map_err(|e| ApiError::new(ErrorClass::Failed, None, format!("{what}: {e}")))?;
        let form = Form::new()
            .part("file", part)
            .text("uploadPath", UPLOAD_PATH)
            .text("fileName", file_name.to_owned());
        let url = self
            .upload_base
            .join(super::upload::UPLOAD)
            .map_err(|e| ApiError::new(ErrorClass::Failed, None, format!("{what}: {e}")))?;
        // The whole-call limit, plus a second per 128 KiB: an 8 MiB image over a slow
        // uplink must not time out as if the service had stalled.
        let timeout = self.request_timeout + std::time::Duration::from_secs(size / (128 * 1024));
        let req = self
            .api
            .post(url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(timeout)
            .multipart(form);
        let answer = self.send(req, what).await?;
        let env = answer.classify()?;
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let refused = |v: &Value| v.get("success").and_then(Value::as_bool) == Some(false);
        if refused(&body) || refused(&env.data) {
            let msg = if env.msg.trim().is_empty() {
                "the upload was refused (success: false)".to_owned()
            } else {
                env.msg.clone()
            };
            return Err(ApiError::new(ErrorClass::Failed, Some(env.code), msg));
        }
        match env.data.get("downloadUrl").and_then(Value::as_str) {
            Some(u) if crate::request::check_http_url(u).is_ok() => Ok(u.to_owned()),
            _ => Err(ApiError::new(
                ErrorClass::Failed,
                Some(env.code),
                format!("{what} answered success without a downloadUrl"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_follow_the_api_base_unless_told_otherwise() {
        assert_eq!(upload_base("https://api.kie.ai", None), DEFAULT_UPLOAD_BASE);
        assert_eq!(
            upload_base("https://api.kie.ai/", None),
            DEFAULT_UPLOAD_BASE
        );
        assert_eq!(
            upload_base("http://127.0.0.1:9", None),
            "http://127.0.0.1:9",
            "a simulator serves both"
        );
        assert_eq!(
            upload_base("http://127.0.0.1:9", Some("https://up.example")),
            "https://up.example"
        );
        assert_eq!(
            upload_base("https://api.kie.ai", Some(" ")),
            DEFAULT_UPLOAD_BASE
        );
    }
}
