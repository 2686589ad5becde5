//! The rules of the generate endpoint, applied to a [`RawRequest`]: every broken rule
//! becomes a [`FieldIssue`], and a request that passes becomes a [`GenerateRequest`]
//! with its defaults resolved. The manifest validator and the simulator both call
//! [`check`] (or [`check_parts`]), so they can never disagree.

use std::fmt;

use super::{AspectRatio, Field, GenerateRequest, GenerationType, Model, RawRequest, Resolution};

pub const SEED_MIN: i64 = 10_000;
pub const SEED_MAX: i64 = 99_999;
/// The lengths the service renders, in seconds.
pub const DURATIONS: [i64; 3] = [4, 6, 8];
pub const DURATION_ALLOWED: &str = "a whole number of seconds: 4, 6 or 8";

/// One broken rule. `field` is `None` for problems with the request as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: Option<Field>,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: Field, message: impl Into<String>) -> FieldIssue {
        FieldIssue {
            field: Some(field),
            message: message.into(),
        }
    }

    pub(crate) fn body(message: impl Into<String>) -> FieldIssue {
        FieldIssue {
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The outcome of checking a request: the request, or every issue found, plus
/// warnings that do not stop it (a deprecated field).
#[derive(Debug)]
pub struct Checked {
    pub result: Result<GenerateRequest, Vec<FieldIssue>>,
    pub warnings: Vec<FieldIssue>,
}

pub const DEFAULT_MODEL: Model = Model::Veo3Fast;
pub const DEFAULT_ASPECT_RATIO: AspectRatio = AspectRatio::Landscape;

/// Applies every rule of the generate endpoint to `raw`.
pub fn check(raw: &RawRequest) -> Checked {
    let (decided, warnings) = check_parts(raw, &|_| false);
    let result = decided.map(|d| {
        d.into_request(RawRequest {
            prompt: raw.prompt.clone(),
            image_urls: raw.image_urls.clone(),
            callback_url: raw.callback_url.clone(),
            watermark: raw.watermark.clone(),
            extra: raw.extra.clone(),
            ..RawRequest::default()
        })
    });
    Checked { result, warnings }
}

/// What the rules decide for a request that passes them: the request with every value
/// the rules resolve, and its text fields still empty. With the raw request's own text
/// it makes the [`GenerateRequest`]; kept apart so that a caller that owns the raw
/// request (the manifest reader) can move its strings in rather than copy them.
#[derive(Debug, Clone)]
pub(crate) struct Decided(GenerateRequest);

impl Decided {
    /// The request, taking the text fields of `raw` (the one the rules were applied to).
    pub(crate) fn into_request(self, raw: RawRequest) -> GenerateRequest {
        GenerateRequest {
            prompt: raw.prompt.unwrap_or_default(),
            image_urls: raw.image_urls.unwrap_or_default(),
            callback_url: raw.callback_url,
            watermark: raw.watermark,
            extra: raw.extra,
            ..self.0
        }
    }
}

/// The rules of [`check`], without building the request: the decided values or every
/// issue, and the warnings. An image entry for which `local` is true names a local
/// file, which the caller (the manifest) checks instead of the URL rule; it still
/// counts as an image.
pub(crate) fn check_parts(
    raw: &RawRequest,
    local: &dyn Fn(&str) -> bool,
) -> (Result<Decided, Vec<FieldIssue>>, Vec<FieldIssue>) {
    let mut issues = Vec::new();
    let mut warnings = Vec::new();

    check_prompt(raw, &mut issues);
    let model = given_or_default(
        Field::Model,
        raw.model.as_deref(),
        DEFAULT_MODEL,
        Model::parse,
        Model::ALLOWED,
        &mut issues,
    );
    let aspect_ratio = given_or_default(
        Field::AspectRatio,
        raw.aspect_ratio.as_deref(),
        DEFAULT_ASPECT_RATIO,
        AspectRatio::parse,
        AspectRatio::ALLOWED,
        &mut issues,
    );
    let image_urls: &[String] = raw.image_urls.as_deref().unwrap_or_default();
    check_image_urls(image_urls, local, &mut issues);
    let generation_type = generation_type_of(raw, image_urls.len(), &mut issues);
    if let Some(mode) = generation_type {
        check_mode(mode, image_urls.len(), model, aspect_ratio, &mut issues);
    }
    let seeds = seeds_of(raw, &mut issues);
    let resolution = resolution_of(raw, model, &mut issues);
    let duration = duration_of(raw, &mut issues);
    check_callback(raw, &mut issues);
    check_fallback(raw, aspect_ratio, &mut issues, &mut warnings);
    check_extra(raw, &mut issues);

    let result = match (issues.is_empty(), model, aspect_ratio, generation_type) {
        (true, Some(model), Some(aspect_ratio), Some(generation_type)) => {
            Ok(Decided(GenerateRequest {
                aspect_ratio,
                duration,
                enable_fallback: raw.enable_fallback,
                enable_translation: raw.enable_translation,
                generation_type,
                model,
                resolution,
                seeds,
                // The text fields come with the raw request (`into_request`): empty
                // here, they cost no allocation.
                prompt: String::new(),
                image_urls: Vec::new(),
                callback_url: None,
                watermark: None,
                extra: std::collections::BTreeMap::new(),
            }))
        }
        _ => Err(issues),
    };
    (result, warnings)
}

/// The prompt is required and not blank.
fn check_prompt(raw: &RawRequest, issues: &mut Vec<FieldIssue>) {
    match raw.prompt.as_deref() {
        Some(p) if !p.trim().is_empty() => {}
        Some(_) => issues.push(FieldIssue::new(Field::Prompt, "must not be blank")),
        None => issues.push(FieldIssue::new(Field::Prompt, "is required")),
    }
}

/// A value of a closed set with a default: the value given, or the default when none
/// is; `None` (and an issue naming what is allowed) when the value given is not one of
/// the set.
fn given_or_default<T>(
    field: Field,
    given: Option<&str>,
    default: T,
    parse: fn(&str) -> Option<T>,
    allowed: &str,
    issues: &mut Vec<FieldIssue>,
) -> Option<T> {
    match given {
        None => Some(default),
        Some(v) => parse(v).or_else(|| {
            issues.push(unknown_value(field, v, allowed));
            None
        }),
    }
}

/// Every image that is not a local file is an absolute http(s) URL.
fn check_image_urls(
    image_urls: &[String],
    local: &dyn Fn(&str) -> bool,
    issues: &mut Vec<FieldIssue>,
) {
    for url in image_urls.iter().filter(|u| !local(u)) {
        if let Err(why) = check_http_url(url) {
            issues.push(FieldIssue::new(
                Field::ImageUrls,
                format!("{url:?} {why} (an absolute http or https URL)"),
            ));
        }
    }
}

/// The generation mode: the one given, or the one the number of images implies.
fn generation_type_of(
    raw: &RawRequest,
    images: usize,
    issues: &mut Vec<FieldIssue>,
) -> Option<GenerationType> {
    if let Some(g) = raw.generation_type.as_deref() {
        return GenerationType::parse(g).or_else(|| {
            issues.push(unknown_value(
                Field::GenerationType,
                g,
                GenerationType::ALLOWED,
            ));
            None
        });
    }
    match images {
        0 => Some(GenerationType::Text),
        1 | 2 => Some(GenerationType::FirstAndLastFrames),
        3 => {
            issues.push(FieldIssue::new(
                Field::ImageUrls,
                "3 images need generationType REFERENCE_2_VIDEO (without it, 0 images \
                 mean TEXT_2_VIDEO and 1-2 mean FIRST_AND_LAST_FRAMES_2_VIDEO)",
            ));
            None
        }
        n => {
            // No mode takes more than 3: naming one would send the user to
            // another error.
            issues.push(FieldIssue::new(
                Field::ImageUrls,
                format!(
                    "{n} images is more than any generation mode takes (REFERENCE_2_VIDEO \
                     takes up to 3, FIRST_AND_LAST_FRAMES_2_VIDEO 1 or 2)"
                ),
            ));
            None
        }
    }
}

/// What the mode asks of the rest: its number of images, and for a reference video
/// the models and aspect ratios it works with.
fn check_mode(
    mode: GenerationType,
    images: usize,
    model: Option<Model>,
    aspect_ratio: Option<AspectRatio>,
    issues: &mut Vec<FieldIssue>,
) {
    let (min, max) = mode.image_range();
    if images < min || images > max {
        let allowed = if max == 0 {
            "none".to_owned()
        } else {
            format!("{min} to {max}")
        };
        issues.push(FieldIssue::new(
            Field::ImageUrls,
            format!("{} takes {allowed} images, got {images}", mode.as_str()),
        ));
    }
    if mode != GenerationType::Reference {
        return;
    }
    if let Some(m) = model.filter(|m| !matches!(m, Model::Veo3Fast | Model::Veo3Lite)) {
        issues.push(FieldIssue::new(
            Field::Model,
            format!(
                "REFERENCE_2_VIDEO works only with veo3_fast or veo3_lite, not {}",
                m.as_str()
            ),
        ));
    }
    if aspect_ratio == Some(AspectRatio::Auto) {
        issues.push(FieldIssue::new(
            Field::AspectRatio,
            "REFERENCE_2_VIDEO takes 16:9 or 9:16, not Auto",
        ));
    }
}

/// The seed, when given and in range.
fn seeds_of(raw: &RawRequest, issues: &mut Vec<FieldIssue>) -> Option<u32> {
    match raw.seeds {
        None => None,
        Some(s) if (SEED_MIN..=SEED_MAX).contains(&s) => u32::try_from(s).ok(),
        Some(s) => {
            issues.push(FieldIssue::new(
                Field::Seeds,
                format!("{s} is out of range (an integer from {SEED_MIN} to {SEED_MAX})"),
            ));
            None
        }
    }
}

/// The resolution, when given, known, and offered by the model.
fn resolution_of(
    raw: &RawRequest,
    model: Option<Model>,
    issues: &mut Vec<FieldIssue>,
) -> Option<Resolution> {
    let resolution = raw.resolution.as_deref().and_then(|r| {
        Resolution::parse(r).or_else(|| {
            issues.push(unknown_value(Field::Resolution, r, Resolution::ALLOWED));
            None
        })
    });
    if let (Some(m), Some(r)) = (model, resolution)
        && !m.offers(r)
    {
        let offered: Vec<&str> = Resolution::ALL
            .into_iter()
            .filter(|r| m.offers(*r))
            .map(Resolution::as_str)
            .collect();
        issues.push(FieldIssue::new(
            Field::Resolution,
            format!(
                "{} has no {} ({})",
                m.as_str(),
                r.as_str(),
                offered.join(" or ")
            ),
        ));
    }
    resolution
}

/// The video's length, when given and one the service makes.
fn duration_of(raw: &RawRequest, issues: &mut Vec<FieldIssue>) -> Option<u8> {
    match raw.duration {
        None => None,
        Some(d) if DURATIONS.contains(&d) => u8::try_from(d).ok(),
        Some(d) => {
            issues.push(FieldIssue::new(
                Field::Duration,
                format!("{d} is not allowed ({DURATION_ALLOWED})"),
            ));
            None
        }
    }
}

/// The callback, when given, is an absolute http(s) URL.
fn check_callback(raw: &RawRequest, issues: &mut Vec<FieldIssue>) {
    if let Some(url) = raw.callback_url.as_deref()
        && let Err(why) = check_http_url(url)
    {
        issues.push(FieldIssue::new(
            Field::CallbackUrl,
            format!("{url:?} {why} (an absolute http or https URL)"),
        ));
    }
}

/// `enableFallback` is deprecated (a warning), and when true still needs 16:9.
fn check_fallback(
    raw: &RawRequest,
    aspect_ratio: Option<AspectRatio>,
    issues: &mut Vec<FieldIssue>,
    warnings: &mut Vec<FieldIssue>,
) {
    let Some(fallback) = raw.enable_fallback else {
        return;
    };
    warnings.push(FieldIssue::new(
        Field::EnableFallback,
        "is deprecated and ignored by the service; remove it",
    ));
    if fallback && aspect_ratio.is_some_and(|a| a != AspectRatio::Landscape) {
        issues.push(FieldIssue::new(
            Field::EnableFallback,
            "true requires aspect_ratio 16:9",
        ));
    }
}

/// `extra:` carries only what the table does not declare.
fn check_extra(raw: &RawRequest, issues: &mut Vec<FieldIssue>) {
    for key in raw.extra.keys() {
        if Field::from_name(key).is_some() {
            issues.push(FieldIssue::body(format!(
                "extra: {key} is a request field; set it directly, not under extra"
            )));
        }
    }
}

fn unknown_value(field: Field, value: &str, allowed: &str) -> FieldIssue {
    FieldIssue::new(field, format!("{value:?} is not allowed ({allowed})"))
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub fn check_http_url(url: &str) -> Result<(), &'static str> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err("is not http or https"),
        Err(_) => Err("is not a valid URL"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn raw(prompt: &str) -> RawRequest {
        RawRequest {
            prompt: Some(prompt.into()),
            ..RawRequest::default()
        }
    }

    fn issues(r: &RawRequest) -> Vec<String> {
        match check(r).result {
            Ok(_) => vec![],
            Err(i) => i.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_are_resolved() {
        let req = check(&raw("a dog")).result.unwrap();
        assert_eq!(req.model, Model::Veo3Fast);
        assert_eq!(req.aspect_ratio, AspectRatio::Landscape);
        assert_eq!(req.generation_type, GenerationType::Text);
        assert_eq!(
            req.to_body().to_string(),
            r#"{"aspect_ratio":"16:9","generationType":"TEXT_2_VIDEO","model":"veo3_fast","prompt":"a dog"}"#
        );
    }

    #[test]
    fn prompt_required_and_not_blank() {
        assert_eq!(issues(&RawRequest::default()), ["prompt: is required"]);
        assert_eq!(issues(&raw("  \n")), ["prompt: must not be blank"]);
    }

    #[test]
    fn enum_values_are_checked() {
        let mut r = raw("x");
        r.model = Some("veo4".into());
        r.aspect_ratio = Some("4:3".into());
        r.generation_type = Some("IMAGE".into());
        assert_eq!(
            issues(&r),
            [
                "model: \"veo4\" is not allowed (veo3, veo3_fast, veo3_lite)",
                "aspect_ratio: \"4:3\" is not allowed (16:9, 9:16, Auto)",
                "generationType: \"IMAGE\" is not allowed (TEXT_2_VIDEO, FIRST_AND_LAST_FRAMES_2_VIDEO, REFERENCE_2_VIDEO)",
            ]
        );
    }

    #[test]
    fn generation_type_is_derived_from_images() {
        let mut r = raw("x");
        r.image_urls = Some(vec!["https://a.example/1.png".into()]);
        assert_eq!(
            check(&r).result.unwrap().generation_type,
            GenerationType::FirstAndLastFrames
        );
        r.image_urls = Some(vec![
            "https://a.example/1.png".into(),
            "https://a.example/2.png".into(),
            "https://a.example/3.png".into(),
        ]);
        assert_eq!(issues(&r).len(), 1);
        assert!(issues(&r)[0].contains("REFERENCE_2_VIDEO"));
    }

    #[test]
    fn image_counts_per_mode() {
        let url = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("https://a.example/{i}.png"))
                .collect()
        };
        let case = |mode: &str, n: usize| {
            let mut r = raw("x");
            r.generation_type = Some(mode.into());
            r.image_urls = Some(url(n));
            issues(&r).is_empty()
        };
        assert!(case("TEXT_2_VIDEO", 0));
        assert!(!case("TEXT_2_VIDEO", 1));
        assert!(!case("FIRST_AND_LAST_FRAMES_2_VIDEO", 0));
        assert!(case("FIRST_AND_LAST_FRAMES_2_VIDEO", 1));
        assert!(case("FIRST_AND_LAST_FRAMES_2_VIDEO", 2));
        assert!(!case("FIRST_AND_LAST_FRAMES_2_VIDEO", 3));
        assert!(!case("REFERENCE_2_VIDEO", 0));
        assert!(case("REFERENCE_2_VIDEO", 3));
        assert!(!case("REFERENCE_2_VIDEO", 4));
        // Four images and no mode: the message names no mode that would refuse them.
        let mut four = raw("p");
        four.image_urls = Some(vec!["https://x/a.png".into(); 4]);
        let said = issues(&four).join("; ");
        assert!(
            said.contains("more than any generation mode takes"),
            "{said}"
        );
        assert!(!said.contains("need generationType"), "{said}");
    }

    #[test]
    fn reference_mode_needs_fast_or_lite_model_and_fixed_ratio() {
        let mut r = raw("x");
        r.generation_type = Some("REFERENCE_2_VIDEO".into());
        r.image_urls = Some(vec!["https://a.example/1.png".into()]);
        r.aspect_ratio = Some("9:16".into());
        assert!(issues(&r).is_empty(), "9:16 is accepted");
        r.model = Some("veo3_lite".into());
        assert!(issues(&r).is_empty(), "veo3_lite takes references");
        r.model = Some("veo3".into());
        r.aspect_ratio = Some("Auto".into());
        assert_eq!(
            issues(&r),
            [
                "model: REFERENCE_2_VIDEO works only with veo3_fast or veo3_lite, not veo3",
                "aspect_ratio: REFERENCE_2_VIDEO takes 16:9 or 9:16, not Auto",
            ]
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        let mut r = raw("x");
        r.image_urls = Some(vec!["ftp://a.example/x.png".into(), "img.png".into()]);
        r.callback_url = Some("/hook".into());
        let got = issues(&r);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("imageUrls: \"ftp://a.example/x.png\" is not http"));
        assert!(got[2].starts_with("callBackUrl: \"/hook\" is not a valid URL"));
    }

    #[test]
    fn seeds_range() {
        for (seed, ok) in [
            (9_999, false),
            (10_000, true),
            (99_999, true),
            (100_000, false),
        ] {
            let mut r = raw("x");
            r.seeds = Some(seed);
            assert_eq!(issues(&r).is_empty(), ok, "seed {seed}");
        }
    }

    #[test]
    fn fallback_warns_and_needs_landscape() {
        let mut r = raw("x");
        r.enable_fallback = Some(false);
        let c = check(&r);
        assert!(c.result.is_ok());
        assert_eq!(c.warnings.len(), 1);
        r.enable_fallback = Some(true);
        r.aspect_ratio = Some("9:16".into());
        assert_eq!(
            issues(&r),
            ["enableFallback: true requires aspect_ratio 16:9"]
        );
    }

    #[test]
    fn extra_fields_pass_through_but_cannot_shadow() {
        let mut r = raw("x");
        r.extra
            .insert("personGeneration".into(), Value::from("allow_adult"));
        let body = check(&r).result.unwrap().to_body();
        assert_eq!(body["personGeneration"], "allow_adult");
        for field in ["model", "resolution", "duration"] {
            let mut r = r.clone();
            r.extra.insert(field.into(), Value::from("x"));
            assert_eq!(
                issues(&r),
                [format!(
                    "extra: {field} is a request field; set it directly, not under extra"
                )]
            );
        }
    }

    #[test]
    fn lite_is_a_model_without_4k() {
        let mut r = raw("x");
        r.model = Some("veo3_lite".into());
        assert_eq!(check(&r).result.unwrap().model, Model::Veo3Lite);
        for (res, ok) in [("720p", true), ("1080p", true), ("4k", false)] {
            r.resolution = Some(res.into());
            assert_eq!(issues(&r).is_empty(), ok, "veo3_lite at {res}");
        }
        assert_eq!(
            issues(&r),
            ["resolution: veo3_lite has no 4k (720p or 1080p)"]
        );
        r.model = Some("veo3".into());
        assert_eq!(
            check(&r).result.unwrap().resolution,
            Some(Resolution::Uhd4k)
        );
    }

    #[test]
    fn resolution_values_and_default() {
        let req = check(&raw("x")).result.unwrap();
        assert_eq!(req.resolution, None, "not sent: the service's 720p");
        assert!(!req.to_body().to_string().contains("resolution"));
        let mut r = raw("x");
        r.resolution = Some("1080p".into());
        let body = check(&r).result.unwrap().to_body();
        assert_eq!(body["resolution"], "1080p");
        for bad in ["1080", "4K", "8k", ""] {
            r.resolution = Some(bad.into());
            assert_eq!(
                issues(&r),
                [format!(
                    "resolution: {bad:?} is not allowed (720p, 1080p, 4k)"
                )]
            );
        }
    }

    #[test]
    fn duration_is_4_6_or_8() {
        for (d, ok) in [
            (4, true),
            (6, true),
            (8, true),
            (5, false),
            (0, false),
            (10, false),
        ] {
            let mut r = raw("x");
            r.duration = Some(d);
            assert_eq!(issues(&r).is_empty(), ok, "{d} s");
            if ok {
                let body = check(&r).result.unwrap().to_body();
                assert_eq!(body["duration"], d);
            } else {
                assert_eq!(
                    issues(&r),
                    [format!(
                        "duration: {d} is not allowed (a whole number of seconds: 4, 6 or 8)"
                    )]
                );
            }
        }
        assert!(
            !check(&raw("x"))
                .result
                .unwrap()
                .to_body()
                .to_string()
                .contains("duration")
        );
    }

    #[test]
    fn new_fields_read_from_json_with_their_types() {
        let body = serde_json::json!({"prompt": "x", "resolution": "4k", "duration": 6});
        let req = check(&RawRequest::from_json(&body).unwrap())
            .result
            .unwrap();
        assert_eq!(
            (req.resolution, req.duration),
            (Some(Resolution::Uhd4k), Some(6))
        );
        let body = serde_json::json!({"prompt": "x", "resolution": 1080, "duration": "8"});
        let err: Vec<String> = RawRequest::from_json(&body)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            err,
            [
                "duration: must be an integer",
                "resolution: must be a string"
            ]
        );
    }

    #[test]
    fn wire_type_errors_are_reported() {
        let body = serde_json::json!({"prompt": 5, "seeds": "x", "newField": 1});
        let err = RawRequest::from_json(&body).unwrap_err();
        assert_eq!(err.len(), 2);
    }
}
