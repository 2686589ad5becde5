//! The reqwest calls to the kie.ai endpoints: one request each, no retries here
//! (the runner owns retry policy), every failure classified into an [`ApiError`].

use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Url, redirect};
use serde_json::{Value, json};

use super::classify::{self, Envelope};
use super::transport::{self, MAX_REDIRECTS};
use super::wire::{self, Unreadable};
use super::{
    ApiError, ApiKey, ClientConfig, ErrorClass, KeyId, PoolKey, TaskState, Upgrade4k, Upgrade1080,
};

pub(crate) const USER_AGENT: &str = concat!("veo-batch/", env!("CARGO_PKG_VERSION"));
/// Longest API answer read into memory; real ones are a few KB.
const MAX_API_BODY: usize = 8 * 1024 * 1024;

const GENERATE: &str = "api/v1/veo/generate";
const EXTEND: &str = "api/v1/veo/extend";
const RECORD_INFO: &str = "api/v1/veo/record-info";
const GET_1080P: &str = "api/v1/veo/get-1080p-video";
const GET_4K: &str = "api/v1/veo/get-4k-video";
const CREDIT: &str = "api/v1/chat/credit";
const DOWNLOAD_URL: &str = "api/v1/common/download-url";

/// Where the API base comes from, as errors name it.
pub(super) const API_BASE_SETTING: &str = "--api-base (or KIE_API_BASE)";
/// Where the upload base comes from, as errors name it.
pub(super) const UPLOAD_BASE_SETTING: &str = "--upload-base (or KIE_UPLOAD_BASE)";

/// A kie.ai client. Cheap to clone: the connection pools are shared.
#[derive(Clone)]
pub struct Client {
    /// API calls: a whole-call timeout, Authorization added per request.
    pub(super) api: reqwest::Client,
    /// Result downloads: an idle-read timeout and never an Authorization header,
    /// since result files live on other hosts.
    pub(super) files: reqwest::Client,
    pub(super) base: Url,
    /// Where local images are uploaded (the API base unless set apart).
    pub(super) upload_base: Url,
    pub(super) key: ApiKey,
    /// The account the key belongs to (`""`: the unnamed one) and the key's id:
    /// what the results file records of the key that made a task.
    account: std::sync::Arc<str>,
    key_id: KeyId,
    /// The endpoints joined to `base` once, not at every call.
    endpoints: std::sync::Arc<[(&'static str, Url)]>,
    /// `Bearer <key>`, marked sensitive so that it is never logged.
    pub(super) auth: HeaderValue,
    pub(super) request_timeout: Duration,
    pub(super) max_download_bytes: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("upload_base", &self.upload_base.as_str())
            .field("key", &self.key)
            .field("account", &self.account)
            .field("key_id", &self.key_id)
            .field("request_timeout", &self.request_timeout)
            .field("max_download_bytes", &self.max_download_bytes)
            .finish()
    }
}

/// The Authorization header of `key`, marked sensitive so that it is never logged.
/// Fails here, not on the first call, when the key cannot be a header.
fn bearer(key: &ApiKey) -> anyhow::Result<HeaderValue> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| anyhow::anyhow!("the api key cannot be sent in an http header"))?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// The base URL with a trailing slash, so that joining keeps any path prefix.
pub(super) fn parse_base(raw: &str) -> anyhow::Result<Url> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).with_context(|| format!("invalid api base url `{raw}`"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid api base url `{raw}`: the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("invalid api base url `{raw}`: it has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid api base url `{raw}`: it must not have a query or fragment");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// [`parse_base`] for the upload host, whose errors say so.
pub(super) fn parse_upload_base(raw: &str) -> anyhow::Result<Url> {
    parse_base(raw).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string().replace("api base url", "upload base url")
        )
    })
}

impl Client {
    pub fn new(config: ClientConfig) -> anyhow::Result<Client> {
        let base = parse_base(&config.base_url)?;
        let upload_base = match &config.upload_base_url {
            Some(u) => parse_upload_base(u)?,
            None => base.clone(),
        };
        transport::check_base(&base, API_BASE_SETTING, config.allow_insecure_http)?;
        transport::check_base(
            &upload_base,
            UPLOAD_BASE_SETTING,
            config.allow_insecure_http,
        )?;
        let auth = bearer(&config.key)?;
        let endpoints = [
            GENERATE,
            EXTEND,
            RECORD_INFO,
            GET_1080P,
            GET_4K,
            CREDIT,
            DOWNLOAD_URL,
        ]
        .into_iter()
        .map(|path| base.join(path).map(|url| (path, url)))
        .collect::<Result<Vec<_>, _>>()
        .context("failed to join the api base url and an endpoint")?
        .into();
        let api = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(transport::api_redirects())
            .build()
            .context("failed to build the http client")?;
        let files = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.request_timeout)
            .redirect(redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .context("failed to build the download client")?;
        Ok(Client {
            api,
            files,
            base,
            upload_base,
            endpoints,
            auth,
            account: "".into(),
            key_id: KeyId::of(&config.key),
            key: config.key,
            request_timeout: config.request_timeout,
            max_download_bytes: config.max_download_bytes,
        })
    }

    /// This client calling with `key` instead (of its account): the same
    /// connection pools and settings. A task's calls go with a key of the account
    /// that made it, since the service answers "record is null" to any other.
    pub fn with_key(&self, key: &PoolKey) -> anyhow::Result<Client> {
        Ok(Client {
            auth: bearer(&key.key)?,
            key: key.key.clone(),
            account: key.account.as_str().into(),
            key_id: key.id.clone(),
            ..self.clone()
        })
    }

    /// The key this client calls with, as the one key of a ring.
    pub fn pool_key(&self) -> PoolKey {
        PoolKey {
            account: self.account.to_string(),
            key: self.key.clone(),
            id: self.key_id.clone(),
        }
    }

    /// The account of the key this client calls with (`""`: the unnamed one).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The id of the key this client calls with.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The base URL the client talks to (always ends in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, ApiError> {
        let known = self.endpoints.iter().find(|(p, _)| *p == path);
        let url = match known {
            Some((_, url)) => url.clone(),
            None => self.base.join(path).map_err(|e| {
                ApiError::new(ErrorClass::Failed, None, format!("bad endpoint url: {e}"))
            })?,
        };
        Ok(self
            .api
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone()))
    }

    /// Sends `req` and reads the answer: the HTTP status, Retry-After and body.
    /// Transport failures are classified here.
    pub(super) async fn send(&self, req: RequestBuilder, what: &str) -> Result<Answer, ApiError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.redact(transport_error(&e, what, self.request_timeout)))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_API_BODY {
                        return Err(ApiError::new(
                            ErrorClass::InDoubt,
                            Some(i64::from(status)),
                            format!("{what}: answer larger than {MAX_API_BODY} bytes"),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(self.redact(transport_error(&e, what, self.request_timeout)));
                }
            }
        }
        tracing::debug!(
            endpoint = what,
            status,
            bytes = body.len(),
            "kie.ai answered"
        );
        Ok(Answer {
            status,
            retry_after,
            body: redact_bytes(body, self.key.expose()),
        })
    }

    /// Sends and classifies: the success envelope or the error.
    async fn call(&self, req: RequestBuilder, what: &str) -> Result<Envelope, ApiError> {
        let answer = self.send(req, what).await?;
        answer.classify()
    }

    /// Replaces the key wherever it shows up in an error (a server echoing it back).
    fn redact(&self, mut e: ApiError) -> ApiError {
        let key = self.key.expose();
        if !key.is_empty() && e.message.contains(key) {
            e.message = e.message.replace(key, "<redacted>");
        }
        e
    }

    /// POST /api/v1/veo/generate; the task id.
    ///
    /// Not idempotent: an `InDoubt` error means a paid task may exist.
    pub async fn generate(&self, body: &Value) -> Result<String, ApiError> {
        let req = self.request(Method::POST, GENERATE)?.json(body);
        let env = self.call(req, "generate").await?;
        wire::task_id(&env.data).ok_or_else(|| {
            ApiError::new(
                ErrorClass::InDoubt,
                Some(env.code),
                "generate answered success without a taskId",
            )
        })
    }

    /// POST /api/v1/veo/extend; the new task's id. Not idempotent, like generate.
    pub async fn extend(&self, body: &Value) -> Result<String, ApiError> {
        let req = self.request(Method::POST, EXTEND)?.json(body);
        let env = self.call(req, "extend").await?;
        wire::task_id(&env.data).ok_or_else(|| {
            ApiError::new(
                ErrorClass::InDoubt,
                Some(env.code),
                "extend answered success without a taskId",
            )
        })
    }

    /// GET /api/v1/veo/record-info.
    pub async fn record_info(&self, task_id: &str) -> Result<TaskState, ApiError> {
        let req = self
            .request(Method::GET, RECORD_INFO)?
            .query(&[("taskId", task_id)]);
        let env = self.call(req, "record-info").await?;
        wire::task_state(&env.data).map_err(|why| {
            // A poll is safe to repeat, and the next answer may be complete.
            let message = match why {
                Unreadable::NoFlag => "record-info answered success without a successFlag",
                Unreadable::NoUrls => {
                    "record-info says the task succeeded but gives no result urls"
                }
            };
            ApiError::new(ErrorClass::Retryable, Some(env.code), message)
        })
    }

    /// GET /api/v1/veo/get-1080p-video. Until the upgrade is ready the service
    /// answers a non-200 code with a "processing" message: that is `Processing`.
    pub async fn get_1080p(&self, task_id: &str, index: u32) -> Result<Upgrade1080, ApiError> {
        let req = self
            .request(Method::GET, GET_1080P)?
            .query(&[("taskId", task_id)])
            .query(&[("index", index)]);
        let answer = self.send(req, "get-1080p-video").await?;
        answer.upgrade_1080()
    }

    /// POST /api/v1/veo/get-4k-video without a callback.
    pub async fn get_4k(&self, task_id: &str, index: u32) -> Result<Upgrade4k, ApiError> {
        self.get_4k_with_callback(task_id, index, None).await
    }

    /// POST /api/v1/veo/get-4k-video. A finished upgrade may answer 422 "has been
    /// generated successfully" with `resultUrls`: that is `Ready`.
    pub async fn get_4k_with_callback(
        &self,
        task_id: &str,
        index: u32,
        callback_url: Option<&str>,
    ) -> Result<Upgrade4k, ApiError> {
        let mut body = json!({"taskId": task_id, "index": index});
        if let Some(url) = callback_url {
            body["callBackUrl"] = Value::from(url);
        }
        let req = self.request(Method::POST, GET_4K)?.json(&body);
        let answer = self.send(req, "get-4k-video").await?;
        answer.upgrade_4k()
    }

    /// POST /api/v1/common/download-url: a fresh link (valid 20 minutes) to a result
    /// file whose URL has expired. A URL that is not a kie result answers 422.
    pub async fn download_url(&self, url: &str) -> Result<String, ApiError> {
        let req = self
            .request(Method::POST, DOWNLOAD_URL)?
            .json(&json!({ "url": url }));
        let env = self.call(req, "download-url").await?;
        wire::fresh_url(&env.data).ok_or_else(|| {
            ApiError::new(
                ErrorClass::Failed,
                Some(env.code),
                "download-url answered success without a link",
            )
        })
    }

    /// GET /api/v1/chat/credit: the remaining credits.
    pub async fn credit(&self) -> Result<f64, ApiError> {
        let req = self.request(Method::GET, CREDIT)?;
        let env = self.call(req, "credit").await?;
        wire::credit(&env.data).ok_or_else(|| {
            ApiError::new(
                ErrorClass::Retryable,
                Some(env.code),
                "credit answered success without a number",
            )
        })
    }
}

/// What came back from one call, before classification.
pub(super) struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    pub(super) body: Vec<u8>,
}

impl Answer {
    pub(super) fn classify(&self) -> Result<Envelope, ApiError> {
        classify::classify(self.status, &self.body).map_err(|mut e| {
            e.retry_after = self.retry_after;
            e
        })
    }

    fn upgrade_1080(&self) -> Result<Upgrade1080, ApiError> {
        match self.classify() {
            Ok(env) => Ok(match wire::url_1080(&env.data) {
                Some(url) => Upgrade1080::Ready(url),
                None => Upgrade1080::Processing(or_default(&env.msg, "1080p video not ready")),
            }),
            Err(e) if is_processing(&e) => Ok(Upgrade1080::Processing(e.message)),
            Err(e) => Err(e),
        }
    }

    /// A finished 4K upgrade may answer 422 "has been generated successfully"
    /// with `resultUrls`: the URLs win over the code.
    fn upgrade_4k(&self) -> Result<Upgrade4k, ApiError> {
        if let Some(env) = classify::parse_envelope(&self.body) {
            let answered = (200..300).contains(&self.status) || self.status == 422;
            if answered && matches!(env.code, 200 | 422) {
                let urls = wire::urls_4k(&env.data);
                if !urls.is_empty() {
                    return Ok(Upgrade4k::Ready(urls));
                }
            }
        }
        match self.classify() {
            Ok(env) => Ok(Upgrade4k::Processing(or_default(
                &env.msg,
                "4k video not ready",
            ))),
            Err(e) if is_processing(&e) => Ok(Upgrade4k::Processing(e.message)),
            Err(e) => Err(e),
        }
    }
}

fn or_default(msg: &str, default: &str) -> String {
    let msg = classify::clean_message(msg);
    if msg.is_empty() {
        default.to_owned()
    } else {
        msg
    }
}

/// The upgrade endpoints' "not ready yet" answers: a job-level code whose
/// message says the work is still running.
fn is_processing(e: &ApiError) -> bool {
    if e.class != ErrorClass::Failed {
        return false;
    }
    let m = e.message.to_ascii_lowercase();
    ["processing", "in progress", "not ready", "check back"]
        .iter()
        .any(|w| m.contains(w))
}

pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    classify::parse_retry_after(value, SystemTime::now())
}

/// The deepest cause of an error: the part a person can act on
/// ("Connection refused (os error 111)"), without reqwest's URL wrapper.
pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A transport failure on an API call. A refused connection was never sent
/// (retryable); a failure after sending may have taken effect (in doubt).
fn transport_error(e: &reqwest::Error, what: &str, timeout: Duration) -> ApiError {
    let cause = root_cause(e);
    let (class, message) = if e.is_connect() {
        let to = e
            .url()
            .and_then(|u| {
                Some(format!(
                    " to {}:{}",
                    u.host_str()?,
                    u.port_or_known_default()?
                ))
            })
            .unwrap_or_default();
        (
            ErrorClass::Retryable,
            format!("{what}: could not connect{to}: {cause}"),
        )
    } else if e.is_timeout() {
        (
            ErrorClass::InDoubt,
            format!(
                "{what}: no complete answer within {} after sending",
                humantime::format_duration(timeout)
            ),
        )
    } else if e.is_redirect() {
        (ErrorClass::Failed, format!("{what}: {cause}"))
    } else if e.is_builder() {
        (ErrorClass::Failed, format!("{what}: bad request: {cause}"))
    } else {
        // is_request, is_body, is_decode and anything unknown: the request may
        // have reached the service.
        (
            ErrorClass::InDoubt,
            format!("{what}: connection lost before the answer was complete: {cause}"),
        )
    };
    ApiError::new(class, None, message)
}

/// The body with every occurrence of the key replaced, so no message quoting
/// the body can leak it.
fn redact_bytes(body: Vec<u8>, key: &str) -> Vec<u8> {
    let key = key.as_bytes();
    let Some(&first) = key.first() else {
        return body;
    };
    // Comparing only where the key's first byte is: every body of a run passes
    // here, and a memcmp call per position would be paid on all of them.
    if body.len() < key.len() || !body.windows(key.len()).any(|w| w[0] == first && w == key) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(key) {
            out.extend_from_slice(b"<redacted>");
            i += key.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_joins_with_or_without_trailing_slash() {
        for raw in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            " http://127.0.0.1:8080 ",
        ] {
            let base = parse_base(raw).unwrap();
            assert_eq!(
                base.join(GENERATE).unwrap().as_str(),
                "http://127.0.0.1:8080/api/v1/veo/generate"
            );
        }
        let base = parse_base("https://proxy.example/kie").unwrap();
        assert_eq!(
            base.join(CREDIT).unwrap().as_str(),
            "https://proxy.example/kie/api/v1/chat/credit"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_clearly() {
        for (raw, want) in [
            ("api.kie.ai", "invalid api base url `api.kie.ai`"),
            ("ftp://api.kie.ai", "the scheme must be http or https"),
            ("https://api.kie.ai/?x=1", "must not have a query"),
            ("", "invalid api base url ``"),
        ] {
            let e = parse_base(raw).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{raw}: {e:#}");
        }
    }

    #[test]
    fn processing_answers_are_recognised() {
        let e = ApiError::new(
            ErrorClass::Failed,
            Some(400),
            "1080P is processing. It should be ready in 1-2 minutes. Please check back shortly.",
        );
        assert!(is_processing(&e));
        let e = ApiError::new(
            ErrorClass::Failed,
            Some(422),
            "4k is processing, please wait",
        );
        assert!(is_processing(&e));
        let e = ApiError::new(ErrorClass::Failed, Some(404), "task not found");
        assert!(!is_processing(&e));
        let e = ApiError::new(ErrorClass::Retryable, Some(429), "processing too many");
        assert!(!is_processing(&e));
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn upgrade_1080_answers() {
        let a = answer(
            200,
            r#"{"code":400,"msg":"1080P is processing. It should be ready in 1-2 minutes. Please check back shortly.","data":null}"#,
        );
        assert!(
            matches!(a.upgrade_1080(), Ok(Upgrade1080::Processing(m)) if m.starts_with("1080P is processing"))
        );
        let a = answer(
            200,
            r#"{"code":200,"msg":"success","data":{"resultUrl":"https://f/1080.mp4"}}"#,
        );
        assert_eq!(
            a.upgrade_1080(),
            Ok(Upgrade1080::Ready("https://f/1080.mp4".into()))
        );
        let a = answer(200, r#"{"code":404,"msg":"task not found","data":null}"#);
        assert_eq!(
            a.upgrade_1080().map_err(|e| e.class),
            Err(ErrorClass::Failed)
        );
        let a = answer(
            200,
            r#"{"code":402,"msg":"insufficient credits","data":null}"#,
        );
        assert_eq!(
            a.upgrade_1080().map_err(|e| e.class),
            Err(ErrorClass::Credits)
        );
    }

    #[test]
    fn upgrade_4k_reads_urls_even_on_422() {
        let a = answer(
            200,
            r#"{"code":422,"msg":"The video has been generated successfully","data":{"taskId":"t","resultUrls":["https://f/4k.mp4"],"imageUrls":[]}}"#,
        );
        assert_eq!(
            a.upgrade_4k(),
            Ok(Upgrade4k::Ready(vec!["https://f/4k.mp4".into()]))
        );
        let a = answer(
            422,
            r#"{"code":422,"msg":"The video has been generated successfully","data":{"resultUrls":"[\"https://f/4k.mp4\"]"}}"#,
        );
        assert_eq!(
            a.upgrade_4k(),
            Ok(Upgrade4k::Ready(vec!["https://f/4k.mp4".into()]))
        );
        let a = answer(
            200,
            r#"{"code":422,"msg":"4k is processing, please wait","data":null}"#,
        );
        assert!(matches!(a.upgrade_4k(), Ok(Upgrade4k::Processing(m)) if m.contains("processing")));
        let a = answer(200, r#"{"code":200,"msg":"success","data":{"taskId":"t"}}"#);
        assert!(matches!(a.upgrade_4k(), Ok(Upgrade4k::Processing(_))));
        let a = answer(200, r#"{"code":422,"msg":"record is null","data":null}"#);
        assert_eq!(a.upgrade_4k().map_err(|e| e.class), Err(ErrorClass::Failed));
        // URLs inside a 502 are not trusted.
        let a = answer(
            502,
            r#"{"code":500,"msg":"x","data":{"resultUrls":["https://f/4k.mp4"]}}"#,
        );
        assert_eq!(
            a.upgrade_4k().map_err(|e| e.class),
            Err(ErrorClass::Retryable)
        );
    }

    #[test]
    fn key_is_redacted_from_bodies() {
        let out = redact_bytes(b"bad key sk-1 and sk-1!".to_vec(), "sk-1");
        assert_eq!(out, b"bad key <redacted> and <redacted>!");
        assert_eq!(redact_bytes(b"ok".to_vec(), "sk-1"), b"ok");
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Client::new(ClientConfig::new(
            "http://127.0.0.1:1",
            ApiKey::new("super-secret-key"),
        ))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("super-secret-key"), "{dbg}");
        assert!(dbg.contains("127.0.0.1"), "{dbg}");
    }

    #[test]
    fn another_key_changes_the_header_account_and_id_and_nothing_else() {
        let c = Client::new(ClientConfig::new(
            "http://127.0.0.1:1",
            ApiKey::new("first-secret"),
        ))
        .unwrap();
        assert_eq!(c.account(), "");
        assert_eq!(c.key_id(), &KeyId::of(&ApiKey::new("first-secret")));
        let ring =
            super::super::KeyRing::parse("acme-b second-secret", "f", "line", false).unwrap();
        let b = c.with_key(ring.first()).unwrap();
        assert_eq!(b.account(), "acme-b");
        assert_eq!(b.key_id(), &ring.first().id);
        assert_eq!(b.auth.to_str().unwrap(), "Bearer second-secret");
        assert!(b.auth.is_sensitive());
        assert_eq!(b.base_url(), c.base_url());
        assert_eq!(c.auth.to_str().unwrap(), "Bearer first-secret");
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("second-secret"), "{dbg}");
        assert!(dbg.contains(ring.first().id.as_str()), "{dbg}");
    }
}
