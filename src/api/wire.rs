//! Tolerant reading of the `data` part of kie.ai answers into domain types.
//!
//! The service's field types drift (URL lists as arrays or JSON strings, times
//! as strings or epoch numbers, credits as integers or floats), so fields are
//! read from a `serde_json::Value` one by one and unknown fields are ignored.

use serde_json::Value;

use super::TaskState;

/// An integer from a number or a numeric string.
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-empty string, trimmed.
fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// [`str_of`], reading the literal string `"null"` (seen in `errorCode` and
/// `errorMessage`) as null.
fn nullable_str(v: &Value) -> Option<String> {
    str_of(v).filter(|s| !s.eq_ignore_ascii_case("null"))
}

/// A list of URLs given as an array, as a JSON-encoded array string, or as a
/// single URL string. Empty entries are dropped.
pub(crate) fn url_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(str_of).collect(),
        Value::String(s) => {
            let s = s.trim();
            if s.starts_with('[') {
                match serde_json::from_str::<Value>(s) {
                    Ok(inner @ Value::Array(_)) => url_list(&inner),
                    _ => Vec::new(),
                }
            } else if s.is_empty() {
                Vec::new()
            } else {
                vec![s.to_owned()]
            }
        }
        _ => Vec::new(),
    }
}

/// `data.taskId` of a generate answer.
pub(crate) fn task_id(data: &Value) -> Option<String> {
    str_of(data.get("taskId")?)
}

/// Why a success answer could not be read.
#[derive(Debug, PartialEq)]
pub(crate) enum Unreadable {
    NoFlag,
    NoUrls,
}

/// The state in a record-info `data`.
pub(crate) fn task_state(data: &Value) -> Result<TaskState, Unreadable> {
    let flag = data
        .get("successFlag")
        .and_then(int_of)
        .ok_or(Unreadable::NoFlag)?;
    match flag {
        0 => Ok(TaskState::Generating),
        1 => {
            let urls = data
                .get("response")
                .and_then(|r| r.get("resultUrls"))
                .map(url_list)
                .unwrap_or_default();
            // Some answers put the list beside `response`; take it from there
            // before giving up.
            let urls = if urls.is_empty() {
                data.get("resultUrls").map(url_list).unwrap_or_default()
            } else {
                urls
            };
            let full = data
                .get("response")
                .and_then(|r| r.get("fullResultUrls"))
                .or_else(|| data.get("fullResultUrls"))
                .map(url_list)
                .unwrap_or_default();
            if urls.is_empty() && full.is_empty() {
                Err(Unreadable::NoUrls)
            } else {
                Ok(TaskState::Succeeded {
                    result_urls: urls,
                    full_result_urls: full,
                })
            }
        }
        flag => {
            let error_code = data.get("errorCode").and_then(int_of);
            // 408: the upstream stalled; the task is not finished, ask again later.
            if error_code == Some(408) {
                return Ok(TaskState::Generating);
            }
            Ok(TaskState::Failed {
                flag,
                error_code,
                error_message: data
                    .get("errorMessage")
                    .and_then(nullable_str)
                    .map(|m| super::classify::clean_message(&m))
                    .map(|m| match error_code {
                        Some(code) => super::classify::explain(code, &m),
                        None => m,
                    }),
            })
        }
    }
}

/// `data.resultUrl` of a 1080p answer (or the first of `resultUrls`).
pub(crate) fn url_1080(data: &Value) -> Option<String> {
    data.get("resultUrl")
        .and_then(str_of)
        .or_else(|| data.get("resultUrls").map(url_list)?.into_iter().next())
}

/// `data.resultUrls` of a 4K answer.
pub(crate) fn urls_4k(data: &Value) -> Vec<String> {
    data.get("resultUrls").map(url_list).unwrap_or_default()
}

/// The link of a download-url answer: `data` itself, a string (or, tolerated, an
/// object with `url` or `downloadUrl`).
pub(crate) fn fresh_url(data: &Value) -> Option<String> {
    str_of(data).or_else(|| {
        ["url", "downloadUrl"]
            .iter()
            .find_map(|k| data.get(k).and_then(str_of))
    })
}

/// The credit balance: `data` itself, a number (integer or float) or a numeric string.
pub(crate) fn credit(data: &Value) -> Option<f64> {
    match data {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(body: &str) -> Value {
        serde_json::from_str::<Value>(body).unwrap()["data"].clone()
    }

    #[test]
    fn reference_record_info_example_succeeds() {
        let d = data(
            r#"{"code":200,"msg":"success","data":{"taskId":"veo_task_abcdef123456",
 "paramJson":"{\"prompt\":\"A futuristic city\"}","completeTime":"2025-06-06 10:30:00",
 "response":{"taskId":"veo_task_abcdef123456","resultUrls":["http://example.com/video1.mp4"],
 "originUrls":[],"resolution":"1080p"},"successFlag":1,"errorCode":null,
 "errorMessage":"","createTime":"2025-06-06 10:25:00","fallbackFlag":false}}"#,
        );
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Succeeded {
                result_urls: vec!["http://example.com/video1.mp4".into()],
                full_result_urls: Vec::new(),
            })
        );
    }

    #[test]
    fn result_urls_as_json_string() {
        let d = json!({"successFlag": 1, "response": {"resultUrls": "[\"https://a/1.mp4\",\"https://a/2.mp4\"]"}});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Succeeded {
                result_urls: vec!["https://a/1.mp4".into(), "https://a/2.mp4".into()],
                full_result_urls: Vec::new(),
            })
        );
        // An extend: the segment, and the stitched whole beside it.
        let d = json!({"successFlag": 1, "response": {"resultUrls": ["https://a/seg.mp4"],
                       "fullResultUrls": "[\"https://a/full.mp4\"]"}});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Succeeded {
                result_urls: vec!["https://a/seg.mp4".into()],
                full_result_urls: vec!["https://a/full.mp4".into()],
            })
        );
        assert_eq!(url_list(&json!("https://a/x.mp4")), vec!["https://a/x.mp4"]);
        assert!(url_list(&json!("[broken")).is_empty());
        assert!(url_list(&json!(null)).is_empty());
    }

    #[test]
    fn times_of_any_type_and_unknown_fields_are_ignored() {
        for t in [
            json!("2025-06-06 10:25:00"),
            json!(1749205500000_i64),
            json!(null),
        ] {
            let d = json!({"taskId": "t", "successFlag": 0, "createTime": t,
                           "completeTime": t, "newField": {"x": 1}, "response": null});
            assert_eq!(task_state(&d), Ok(TaskState::Generating));
        }
    }

    #[test]
    fn any_other_flag_is_a_terminal_failure() {
        let d = json!({"successFlag": 3, "errorCode": 400,
                       "errorMessage": "content\npolicy", "response": null});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Failed {
                flag: 3,
                error_code: Some(400),
                error_message: Some("content policy".into())
            })
        );
        let d = json!({"successFlag": -7, "errorCode": null, "errorMessage": ""});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Failed {
                flag: -7,
                error_code: None,
                error_message: None
            })
        );
        let d = json!({"successFlag": "2", "errorCode": "501"});
        assert!(matches!(
            task_state(&d),
            Ok(TaskState::Failed {
                flag: 2,
                error_code: Some(501),
                ..
            })
        ));
    }

    #[test]
    fn null_strings_read_as_null() {
        let d = json!({"successFlag": 2, "errorCode": "null", "errorMessage": "null"});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Failed {
                flag: 2,
                error_code: None,
                error_message: None
            })
        );
        let d = json!({"successFlag": 2, "errorCode": "NULL", "errorMessage": "Null"});
        assert!(matches!(
            task_state(&d),
            Ok(TaskState::Failed {
                error_code: None,
                error_message: None,
                ..
            })
        ));
    }

    #[test]
    fn a_stalled_upstream_is_not_a_failure() {
        let d = json!({"successFlag": 2, "errorCode": 408, "errorMessage": "upstream timed out"});
        assert_eq!(task_state(&d), Ok(TaskState::Generating));
        let d = json!({"successFlag": 3, "errorCode": 451, "errorMessage": "Failed to fetch the image"});
        assert_eq!(
            task_state(&d),
            Ok(TaskState::Failed {
                flag: 3,
                error_code: Some(451),
                error_message: Some(
                    "Failed to fetch the image (check the image URLs: each must be public and reachable)".into()
                )
            })
        );
    }

    #[test]
    fn unreadable_success_answers_are_reported() {
        assert_eq!(task_state(&json!({})), Err(Unreadable::NoFlag));
        assert_eq!(task_state(&Value::Null), Err(Unreadable::NoFlag));
        assert_eq!(
            task_state(&json!({"successFlag": 1, "response": null})),
            Err(Unreadable::NoUrls)
        );
    }

    #[test]
    fn credit_as_integer_float_or_string() {
        assert_eq!(credit(&json!(120)), Some(120.0));
        assert_eq!(credit(&json!(87.5)), Some(87.5));
        assert_eq!(credit(&json!("42")), Some(42.0));
        assert_eq!(credit(&json!(null)), None);
        assert_eq!(credit(&json!({"credits": 1})), None);
    }

    #[test]
    fn fresh_links() {
        assert_eq!(
            fresh_url(&json!("https://f/x.mp4?t=1")),
            Some("https://f/x.mp4?t=1".into())
        );
        assert_eq!(
            fresh_url(&json!({"url": "https://f/y.mp4"})),
            Some("https://f/y.mp4".into())
        );
        assert_eq!(fresh_url(&json!(null)), None);
        assert_eq!(fresh_url(&json!("")), None);
    }

    #[test]
    fn upgrade_urls() {
        assert_eq!(
            url_1080(&json!({"resultUrl": "https://x/1080.mp4"})),
            Some("https://x/1080.mp4".into())
        );
        assert_eq!(url_1080(&json!({"resultUrl": null})), None);
        assert_eq!(
            urls_4k(&json!({"resultUrls": ["https://x/4k.mp4"], "imageUrls": []})),
            vec!["https://x/4k.mp4"]
        );
        assert_eq!(task_id(&json!({"taskId": "veo_1"})), Some("veo_1".into()));
        // The live service's ids: 32 hex characters, no prefix; opaque to us.
        assert_eq!(
            task_id(&json!({"taskId": "9e9a071c779cf8842d269d0d3991d34e"})),
            Some("9e9a071c779cf8842d269d0d3991d34e".into())
        );
        assert_eq!(task_id(&json!({"taskId": ""})), None);
    }
}
