use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::runner::collector::CallCounts;
use crate::runner::{RunReport, StopReason};
use crate::summary::{Outcomes, Problem, Tally};

fn problem(id: &str, reason: &str) -> Problem {
    Problem {
        job_id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A run of 9 jobs that ended with failures, at a fixed time.
fn report() -> RunReport {
    RunReport {
        outcomes: Outcomes {
            tally: Tally {
                succeeded: 5,
                failed: 3,
                in_doubt: 1,
                ..Tally::default()
            },
            failed: vec![
                problem("cat-2", "content policy: flagged"),
                problem("cat-5", "content policy: flagged"),
                problem("dog-1", "unsupported aspect ratio"),
            ],
            in_doubt: vec![problem("dog-4", "no answer within 60s after sending")],
            ..Outcomes::default()
        },
        counters: CallCounts {
            retries: 4,
            rate_limited: 2,
            submitted: 9,
        },
        changed: 0,
        held_back: 0,
        spent: 540.0,
        spend: crate::runner::spend::SpendReport::default(),
        recorded_spend: 120.0,
        superseded: 0,
        stopped: None,
        elapsed: Duration::from_millis(83_456),
        results: PathBuf::from("results/spring campaign.csv"),
        videos_dir: PathBuf::from("videos/spring campaign"),
        warnings: Vec::new(),
    }
}

fn end_of(r: &RunReport) -> RunEnd {
    let ended = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    RunEnd::new("spring \"campaign\"", r, r.exit(), 600.0, ended)
}

#[test]
fn the_document_shape_is_pinned() {
    let json = serde_json::to_string_pretty(&end_of(&report()).envelope()).unwrap();
    insta::assert_snapshot!("document", json);
}

#[test]
fn a_stopped_run_says_why_and_its_exit_code() {
    let r = RunReport {
        stopped: Some(StopReason::Auth("401: invalid key".into())),
        ..report()
    };
    let doc = serde_json::to_value(end_of(&r).envelope()).unwrap();
    assert_eq!(doc["data"]["exit"]["code"], 3);
    assert_eq!(
        doc["data"]["stopped"],
        serde_json::json!({"reason": "auth", "message": "401: invalid key"})
    );
    let r = RunReport {
        stopped: Some(StopReason::Interrupted),
        ..report()
    };
    let doc = serde_json::to_value(end_of(&r).envelope()).unwrap();
    assert_eq!(doc["data"]["exit"]["code"], 130);
    assert_eq!(doc["data"]["stopped"]["reason"], "interrupted");
}

#[test]
fn failure_groups_are_capped_and_the_rest_counted() {
    let mut r = report();
    r.outcomes.failed = (0..9)
        .map(|i| problem(&format!("j{i}"), &format!("reason {i}")))
        .collect();
    let end = end_of(&r);
    assert_eq!(end.failure_groups.len(), document::FAILURE_GROUPS);
    // 9 failed reasons and the in-doubt one.
    assert_eq!(end.more_failure_groups, 10 - document::FAILURE_GROUPS);
}

#[test]
fn slack_gets_a_readable_text() {
    let slack = end_of(&report()).slack();
    assert_eq!(slack.as_object().map(|o| o.len()), Some(1), "{slack}");
    insta::assert_snapshot!("slack", slack["text"].as_str().unwrap());
}

#[test]
fn slack_urls_are_recognised_by_host_and_path() {
    let yes = |u: &str| is_slack(&parse_url(u).unwrap());
    assert!(yes("https://hooks.slack.com/services/T000/B000/XXXX"));
    assert!(yes("https://hooks.slack-gov.com/services/T0/B0/X"));
    assert!(!yes("http://hooks.slack.com/services/T000/B000/XXXX"));
    assert!(!yes("https://hooks.slack.com/workflows/T0/A0/1/x"));
    assert!(!yes("https://hooks.slack.com.example/services/T0"));
    assert!(!yes("https://example.com/services/T0"));
}

#[test]
fn webhook_urls_must_be_http_with_a_host() {
    assert!(parse_url(" https://example.com/hook ").is_ok());
    for (bad, want) in [
        ("example.com/hook", "is not a URL"),
        ("ftp://example.com/x", "not an http or https URL"),
        ("mailto:me@example.com", "not an http or https URL"),
    ] {
        let e = parse_url(bad).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// The example of the Standard Webhooks specification (and of svix, which wrote it).
#[test]
fn the_signature_matches_the_standard_webhooks_example() {
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = sign(
        &secret,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn secrets_are_whsec_base64_or_plain_text_and_never_shown() {
    let plain = Secret::parse("  my-shared-secret\n").unwrap();
    assert_eq!(plain.bytes(), b"my-shared-secret");
    assert_eq!(format!("{plain:?}"), "Secret(<redacted>)");
    let e = Secret::parse("whsec_not base64!").unwrap_err();
    assert!(e.contains("not base64"), "{e}");
    assert!(Secret::parse(" \n").unwrap_err().contains("empty"));
}

/// A sample: its metric name, its labels in order, its value.
type Sample = (String, Vec<(String, String)>, f64);

/// A sample line of the text format: `name{labels} value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = line
        .split_once('{')
        .ok_or_else(|| format!("no labels: {line}"))?;
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("bad label in {line}"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {line}")),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err(format!("unterminated label in {line}")),
            }
        }
        let name_ok = key
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if key.is_empty() || !name_ok {
            return Err(format!("bad label name {key:?} in {line}"));
        }
        labels.push((key, value));
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => return Err(format!("unexpected {other:?} in {line}")),
        }
    }
    let rest: String = chars.collect();
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value: {line}"))?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok((name.to_owned(), labels, value))
}

/// Every line of a metrics text: HELP and TYPE before each metric's samples, names
/// and labels well-formed, every sample with the batch label; the samples by name.
fn check_exposition(text: &str, batch: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the last line ends");
    let mut samples = Vec::new();
    let mut typed: Option<String> = None;
    let mut helped: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(!help.is_empty(), "{line}");
            helped = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert_eq!(helped.as_deref(), Some(name), "HELP then TYPE: {line}");
            assert_eq!(kind, "gauge", "{line}");
            typed = Some(name.to_owned());
        } else {
            let (name, labels, value) = parse_sample(line).unwrap();
            assert_eq!(typed.as_deref(), Some(name.as_str()), "typed first: {line}");
            assert!(name.starts_with("veo_batch_"), "{line}");
            assert!(
                name.chars().all(|c| c == '_' || c.is_ascii_lowercase()),
                "{line}"
            );
            assert_eq!(labels[0], ("batch".to_owned(), batch.to_owned()), "{line}");
            assert!(!value.is_nan(), "{line}");
            samples.push((name, labels, value));
        }
    }
    samples
}

fn sample(samples: &[Sample], name: &str, state: Option<&str>) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name && state.is_none_or(|s| labels.iter().any(|(k, v)| k == "state" && v == s))
        })
        .map(|s| s.2)
}

#[test]
fn every_metrics_line_parses_and_says_the_run() {
    let end = end_of(&report());
    let text = metrics::render(&end);
    let samples = check_exposition(&text, "spring \"campaign\"");
    assert_eq!(
        sample(&samples, "veo_batch_jobs", Some("succeeded")),
        Some(5.0)
    );
    assert_eq!(
        sample(&samples, "veo_batch_jobs", Some("failed")),
        Some(3.0)
    );
    assert_eq!(
        sample(&samples, "veo_batch_jobs", Some("blocked")),
        Some(0.0)
    );
    assert_eq!(sample(&samples, "veo_batch_exit_code", None), Some(4.0));
    assert_eq!(
        sample(&samples, "veo_batch_estimated_credits", None),
        Some(600.0)
    );
    assert_eq!(
        sample(&samples, "veo_batch_spent_credits", None),
        Some(540.0)
    );
    assert_eq!(sample(&samples, "veo_batch_submissions", None), Some(9.0));
    assert_eq!(sample(&samples, "veo_batch_retries", None), Some(4.0));
    assert_eq!(
        sample(&samples, "veo_batch_rate_limited_responses", None),
        Some(2.0)
    );
    assert_eq!(
        sample(&samples, "veo_batch_duration_seconds", None),
        Some(83.456)
    );
    assert_eq!(
        sample(&samples, "veo_batch_end_timestamp_seconds", None),
        Some(1_796_000_000.0)
    );
    assert_eq!(
        sample(&samples, "veo_batch_start_timestamp_seconds", None),
        Some(1_796_000_000.0 - 83.456)
    );
    // Not measured: absent, not a made-up zero.
    assert_eq!(sample(&samples, "veo_batch_measured_credits", None), None);
}

#[test]
fn a_batch_name_with_newlines_and_backslashes_stays_one_label() {
    let mut end = end_of(&report());
    end.batch = "a\\b\nc\"d".to_owned();
    let text = metrics::render(&end);
    check_exposition(&text, "a\\b\nc\"d");
}

#[test]
fn the_metrics_file_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("veo.prom");
    std::fs::write(&path, "old").unwrap();
    metrics::write(&path, &end_of(&report())).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# HELP veo_batch_jobs "), "{text}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["veo.prom"], "no temporary file left");
    let e = metrics::check_target(&dir.path().join("nowhere/veo.prom")).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = metrics::check_target(dir.path()).unwrap_err();
    assert!(e.to_string().contains("is a folder"), "{e}");
}
