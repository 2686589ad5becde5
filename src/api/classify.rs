//! The pure classification of kie.ai answers: envelope `code` first, HTTP status
//! second, into an [`ErrorClass`] the runner acts on. No I/O here, so every rule
//! is unit-tested on recorded bodies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{ApiError, ErrorClass, KEY_ENV};

/// Longest message kept for the results file; service messages are short, a
/// longer one is an error page or garbage.
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest piece of a non-envelope body quoted in a message.
const MAX_SNIPPET_CHARS: usize = 200;
/// A Retry-After longer than this is treated as this: a runner waiting a week
/// on a header is a bug, not politeness.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The `{code, msg, data}` wrapper every JSON answer comes in.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub code: i64,
    pub msg: String,
    pub data: Value,
}

/// The envelope in `body`, or `None` when the body is not one (an HTML error
/// page, truncated JSON, JSON without an integer `code`). The content type is
/// not trusted: the service and its CDN both get it wrong.
pub fn parse_envelope(body: &[u8]) -> Option<Envelope> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    let code = match obj.get("code")? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let msg = match obj.get("msg").or_else(|| obj.get("message")) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    Some(Envelope { code, msg, data })
}

/// Success (HTTP 2xx AND envelope code 200) gives the envelope; anything else
/// the classified error. Retry-After is added by the caller, who has the headers.
pub fn classify(http_status: u16, body: &[u8]) -> Result<Envelope, ApiError> {
    match parse_envelope(body) {
        Some(env) if env.code == 200 && is_success(http_status) => Ok(env),
        // A "success" envelope inside an HTTP error: the status is the truth.
        Some(env) if env.code == 200 => Err(by_status(http_status, body)),
        Some(env) => Err(by_code(env.code, &env.msg)),
        None => Err(by_status(http_status, body)),
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The class of an envelope code (the table in docs/api.md).
pub(crate) fn class_of_code(code: i64) -> ErrorClass {
    match code {
        401 | 403 => ErrorClass::Auth,
        402 | 433 => ErrorClass::Credits,
        429 | 455 | 500 | 502 | 503 | 504 => ErrorClass::Retryable,
        // 408 comes from a stalled upstream after minutes: on generate the task
        // may exist, on a poll asking again is safe. In doubt covers both.
        408 => ErrorClass::InDoubt,
        _ => ErrorClass::Failed,
    }
}

fn by_code(code: i64, msg: &str) -> ApiError {
    let class = class_of_code(code);
    let msg = msg.trim();
    let base = if msg.is_empty() {
        default_meaning(code).to_owned()
    } else {
        msg.to_owned()
    };
    let message = match class {
        ErrorClass::Auth => format!("{base} (check {KEY_ENV} or --api-key-file)"),
        _ => explain(code, &base),
    };
    ApiError::new(class, Some(code), message)
}

/// The service's message, with what to do when the code says more than the message.
pub(crate) fn explain(code: i64, message: &str) -> String {
    match code {
        451 => format!("{message} (check the image URLs: each must be public and reachable)"),
        _ => message.to_owned(),
    }
}

fn default_meaning(code: i64) -> &'static str {
    match code {
        400 => "request refused",
        401 => "api key refused",
        402 => "insufficient credits",
        404 => "not found",
        408 => "upstream timed out",
        422 => "validation error",
        429 => "rate limited",
        433 => "usage cap reached",
        451 => "an image could not be fetched",
        455 => "service under maintenance",
        500 => "server error",
        501 => "generation failed",
        505 => "feature disabled",
        _ => "error",
    }
}

fn by_status(status: u16, body: &[u8]) -> ApiError {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let head = format!("http {status} {reason}").trim_end().to_owned();
    let snippet = body_snippet(body);
    let (class, message) = match status {
        s if is_success(s) => (
            // The call was answered, so it may have taken effect, but we cannot
            // read what it did.
            ErrorClass::InDoubt,
            format!("{head} with an unreadable answer (not the json envelope): {snippet}"),
        ),
        401 => (
            ErrorClass::Auth,
            format!("{head}: api key refused (check {KEY_ENV} or --api-key-file): {snippet}"),
        ),
        403 => (
            ErrorClass::Auth,
            format!(
                "{head}: refused (check {KEY_ENV} or --api-key-file; a 403 may also \
                 come from the CDN in front of the service refusing the request): {snippet}"
            ),
        ),
        402 => (ErrorClass::Credits, format!("{head}: {snippet}")),
        408 | 429 => (ErrorClass::Retryable, format!("{head}: {snippet}")),
        500..=599 => (ErrorClass::Retryable, format!("{head}: {snippet}")),
        _ => (ErrorClass::Failed, format!("{head}: {snippet}")),
    };
    ApiError::new(class, Some(i64::from(status)), message)
}

/// A short readable piece of a body that is not an envelope: an HTML page's
/// title, else the start of the text.
pub(crate) fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_owned();
    }
    if text.starts_with('<') {
        let lower = text.to_ascii_lowercase();
        if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>")) {
            let start = start + "<title>".len();
            if start <= end {
                let title = clean_message(&text[start..end]);
                if !title.is_empty() {
                    return format!("html page \"{title}\"");
                }
            }
        }
        return "an html page".to_owned();
    }
    truncate_chars(&clean_message(text), MAX_SNIPPET_CHARS)
}

/// Control characters become spaces, runs of whitespace one space, and the
/// result is cut to a length that fits a CSV cell.
pub(crate) fn clean_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_MESSAGE_CHARS * 4));
    let mut last_space = true;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    truncate_chars(out.trim_end(), MAX_MESSAGE_CHARS)
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (IMF-fixdate), as a
/// wait from `now`. A date in the past is a zero wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)).min(MAX_RETRY_AFTER))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the two obsolete forms) as
/// seconds since the epoch.
fn parse_http_date(s: &str) -> Option<u64> {
    let at = httpdate::parse_http_date(s).ok()?;
    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> ApiError {
        classify(status, body.as_bytes()).unwrap_err()
    }

    const RECORD_INFO: &str = r#"{"code":200,"msg":"success","data":{"taskId":"veo_task_abcdef123456",
 "paramJson":"{\"prompt\":\"A futuristic city\"}","completeTime":"2025-06-06 10:30:00",
 "response":{"taskId":"veo_task_abcdef123456","resultUrls":["http://example.com/video1.mp4"],
 "originUrls":[],"resolution":"1080p"},"successFlag":1,"errorCode":null,
 "errorMessage":"","createTime":"2025-06-06 10:25:00","fallbackFlag":false}}"#;

    #[test]
    fn success_needs_2xx_and_code_200() {
        let env = classify(200, RECORD_INFO.as_bytes()).unwrap();
        assert_eq!(env.code, 200);
        assert_eq!(env.msg, "success");
        assert_eq!(env.data["taskId"], "veo_task_abcdef123456");
        // A success envelope under an HTTP 502 is a 502.
        let e = err(502, RECORD_INFO);
        assert_eq!((e.class, e.code), (ErrorClass::Retryable, Some(502)));
    }

    #[test]
    fn envelope_errors_inside_http_200_use_the_code() {
        let cases = [
            (401, ErrorClass::Auth),
            (402, ErrorClass::Credits),
            (429, ErrorClass::Retryable),
            (422, ErrorClass::Failed),
            (501, ErrorClass::Failed),
            (433, ErrorClass::Credits),
            (455, ErrorClass::Retryable),
            (500, ErrorClass::Retryable),
            (400, ErrorClass::Failed),
            (404, ErrorClass::Failed),
            (505, ErrorClass::Failed),
            (408, ErrorClass::InDoubt),
            (999, ErrorClass::Failed),
        ];
        for (code, class) in cases {
            let body = format!(r#"{{"code":{code},"msg":"m{code}","data":null}}"#);
            let e = err(200, &body);
            assert_eq!(e.class, class, "code {code}");
            assert_eq!(e.code, Some(code));
            assert!(e.message.starts_with(&format!("m{code}")), "{}", e.message);
        }
    }

    #[test]
    fn envelope_code_wins_over_http_status() {
        let e = err(
            500,
            r#"{"code":402,"msg":"insufficient credits","data":null}"#,
        );
        assert_eq!((e.class, e.code), (ErrorClass::Credits, Some(402)));
        let e = err(422, r#"{"code":429,"msg":"slow down"}"#);
        assert_eq!(e.class, ErrorClass::Retryable);
    }

    #[test]
    fn auth_message_names_the_key_variable() {
        let e = err(
            200,
            r#"{"code":401,"msg":"You do not have access permissions","data":null}"#,
        );
        assert_eq!(e.class, ErrorClass::Auth);
        assert!(e.message.contains("KIE_API_KEY"), "{}", e.message);
    }

    #[test]
    fn record_null_is_a_failed_422() {
        let e = err(200, r#"{"code":422,"msg":"record is null","data":null}"#);
        assert_eq!(e.class, ErrorClass::Failed);
        assert!(e.is_record_null());
    }

    #[test]
    fn record_not_ready_messages_are_recognised_and_aged_out_is_not() {
        for msg in [
            "record is null",
            "record result data is blank",
            "Record result data is empty",
            "record result data not exist",
            "record status is not success",
        ] {
            let e = err(200, &format!(r#"{{"code":422,"msg":"{msg}","data":null}}"#));
            assert!(e.is_record_not_ready(), "{msg}");
        }
        let e = err(
            200,
            r#"{"code":422,"msg":"Temporarily supports records within 14 days","data":null}"#,
        );
        assert!(!e.is_record_not_ready());
        assert_eq!(e.class, ErrorClass::Failed);
        let e = err(200, r#"{"code":400,"msg":"record is null","data":null}"#);
        assert!(!e.is_record_not_ready(), "only a 422");
    }

    #[test]
    fn image_fetch_failure_says_to_check_the_url() {
        let e = err(
            200,
            r#"{"code":451,"msg":"Failed to fetch the image","data":null}"#,
        );
        assert_eq!((e.class, e.code), (ErrorClass::Failed, Some(451)));
        assert_eq!(
            e.message,
            "Failed to fetch the image (check the image URLs: each must be public and reachable)"
        );
    }

    #[test]
    fn record_null_is_recognised() {
        let e = ApiError::new(ErrorClass::Failed, Some(422), "record is null");
        assert!(e.is_record_null());
        let e = ApiError::new(ErrorClass::Failed, Some(422), "prompt is required");
        assert!(!e.is_record_null());
        let e = ApiError::new(ErrorClass::Failed, Some(404), "record is null");
        assert!(!e.is_record_null());
    }

    #[test]
    fn html_502_page_is_retryable_and_quotes_the_title() {
        let body = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\
                    <body><center><h1>502 Bad Gateway</h1></center><hr>nginx</body></html>";
        let e = err(502, body);
        assert_eq!((e.class, e.code), (ErrorClass::Retryable, Some(502)));
        assert_eq!(
            e.message,
            "http 502 Bad Gateway: html page \"502 Bad Gateway\""
        );
    }

    #[test]
    fn http_5xx_without_envelope_is_retryable() {
        for s in [500, 501, 503, 504, 505, 520] {
            assert_eq!(err(s, "oops").class, ErrorClass::Retryable, "status {s}");
        }
        assert_eq!(
            err(503, "").message,
            "http 503 Service Unavailable: empty body"
        );
    }

    #[test]
    fn cdn_403_is_auth_and_mentions_the_cdn() {
        let e = err(403, "error code: 1010");
        assert_eq!((e.class, e.code), (ErrorClass::Auth, Some(403)));
        assert!(e.message.contains("KIE_API_KEY"), "{}", e.message);
        assert!(e.message.contains("CDN"), "{}", e.message);
        assert!(e.message.contains("error code: 1010"), "{}", e.message);
    }

    #[test]
    fn truncated_json_is_classified_by_status() {
        let e = err(200, r#"{"code":200,"msg":"success","data":{"taskId":"veo_"#);
        assert_eq!((e.class, e.code), (ErrorClass::InDoubt, Some(200)));
        let e = err(500, r#"{"code":500,"ms"#);
        assert_eq!(e.class, ErrorClass::Retryable);
        let e = err(404, "Not Found");
        assert_eq!((e.class, e.code), (ErrorClass::Failed, Some(404)));
        assert_eq!(err(401, "").class, ErrorClass::Auth);
        assert_eq!(err(402, "").class, ErrorClass::Credits);
        assert_eq!(err(429, "").class, ErrorClass::Retryable);
    }

    #[test]
    fn json_without_integer_code_is_not_an_envelope() {
        assert!(parse_envelope(br#"{"msg":"x"}"#).is_none());
        assert!(parse_envelope(br#"[1,2]"#).is_none());
        assert!(parse_envelope(br#"{"code":null}"#).is_none());
        assert_eq!(
            parse_envelope(br#"{"code":"429"}"#).map(|e| e.code),
            Some(429)
        );
        assert_eq!(
            parse_envelope(br#"{"code":200.0}"#).map(|e| e.code),
            Some(200)
        );
    }

    #[test]
    fn messages_are_cleaned_and_truncated() {
        let long = "x".repeat(2000);
        let body = format!(r#"{{"code":400,"msg":"bad\u0000\n\tthing {long}"}}"#);
        let e = err(200, &body);
        assert!(e.message.starts_with("bad thing xxx"), "{}", e.message);
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(e.message.ends_with('…'));
        assert!(!e.message.chars().any(char::is_control));
        // Multi-byte characters are cut on a boundary.
        assert_eq!(truncate_chars("ééé", 2), "éé…");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // 1994-11-06 08:49:30
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn http_date_matches_known_epochs() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }
}
