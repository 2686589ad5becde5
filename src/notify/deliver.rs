//! Sending the end-of-run document: one POST per webhook, all at once, each tried
//! three times with a short backoff (`backon`) under a short timeout, the whole
//! bounded by [`DELIVERY_DEADLINE`]; signed with Standard Webhooks headers when a
//! secret is given. A client of its own, without the API key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use sha2::Sha256;

use super::{RunEnd, Secret, is_slack, shown};

/// The longest the end of a run waits on its webhooks, all tries included.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);
/// One try's limit, connection included.
const TRY_TIMEOUT: Duration = Duration::from_millis(1500);
/// Tries after the first.
const RETRIES: usize = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// How a delivery ended, for the log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The receiver answered 2xx.
    Ok { tries: usize },
    /// It did not: why, after how many tries.
    Failed { tries: usize, why: String },
}

/// A failed try: whether another could help.
#[derive(Debug)]
struct TryError {
    retryable: bool,
    why: String,
}

/// The Standard Webhooks signature of `body` sent as message `id` at `timestamp`
/// (Unix seconds): `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
pub fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// POSTs `end` to every URL at once and logs how each went; never longer than
/// [`DELIVERY_DEADLINE`].
pub(super) async fn deliver_all(urls: &[Url], secret: Option<&Secret>, end: &RunEnd) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("veo-batch/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(TRY_TIMEOUT)
        .timeout(TRY_TIMEOUT)
        // A webhook that redirects is misconfigured; following it could post
        // the document somewhere unexpected.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("no notification sent: failed to build the http client: {e}");
            return;
        }
    };
    let document = serde_json::to_vec(&end.envelope()).unwrap_or_default();
    let slack = serde_json::to_vec(&end.slack()).unwrap_or_default();
    let id = format!("msg_{:032x}", fastrand::u128(..));
    let mut set = tokio::task::JoinSet::new();
    for url in urls {
        let body = if is_slack(url) {
            slack.clone()
        } else {
            document.clone()
        };
        let (client, url, secret, id) = (client.clone(), url.clone(), secret.cloned(), id.clone());
        set.spawn(async move {
            let outcome = deliver(&client, &url, &body, secret.as_ref(), &id).await;
            (url, outcome)
        });
    }
    let all = async {
        while let Some(done) = set.join_next().await {
            match done {
                Ok((url, Delivered::Ok { tries })) => {
                    tracing::info!("notified {} (try {tries})", shown(&url))
                }
                Ok((url, Delivered::Failed { tries, why })) => tracing::warn!(
                    "the notification to {} was not delivered after {tries} {}: {why}",
                    shown(&url),
                    if tries == 1 { "try" } else { "tries" }
                ),
                Err(e) => tracing::warn!("a notification task failed: {e}"),
            }
        }
    };
    if tokio::time::timeout(DELIVERY_DEADLINE, all).await.is_err() {
        tracing::warn!(
            "notifications still unanswered after {}s were given up",
            DELIVERY_DEADLINE.as_secs()
        );
        set.abort_all();
    }
}

/// POSTs `body` to `url`: up to three tries, backing off, retrying only what
/// another try could fix (no answer, 408, 429, 5xx).
pub async fn deliver(
    client: &reqwest::Client,
    url: &Url,
    body: &[u8],
    secret: Option<&Secret>,
    id: &str,
) -> Delivered {
    let tries = std::sync::atomic::AtomicUsize::new(0);
    let attempt = || async {
        tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        try_once(client, url, body, secret, id).await
    };
    let outcome = attempt
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(FIRST_BACKOFF)
                .with_max_times(RETRIES)
                .with_jitter(),
        )
        .sleep(tokio::time::sleep)
        .when(|e: &TryError| e.retryable)
        .await;
    let tries = tries.into_inner();
    match outcome {
        Ok(()) => Delivered::Ok { tries },
        Err(e) => Delivered::Failed { tries, why: e.why },
    }
}

async fn try_once(
    client: &reqwest::Client,
    url: &Url,
    body: &[u8],
    secret: Option<&Secret>,
    id: &str,
) -> Result<(), TryError> {
    let mut req = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(secret, id, timestamp, body));
    }
    let resp = req.send().await.map_err(|e| TryError {
        retryable: true,
        // Without the URL: a webhook's path is often its secret.
        why: root_cause(&e.without_url()),
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    Err(TryError {
        retryable: status.is_server_error() || matches!(status.as_u16(), 408 | 429),
        why: format!("the receiver answered HTTP {}", status.as_u16()),
    })
}

/// The innermost cause of `e`: what went wrong, without the layers around it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
