//! The Veo 3.1 generate request: its fields, their spellings, and the one set of
//! rules that both the manifest validator and the simulator apply to it.
//!
//! Rules come from the provider's page for `POST /api/v1/veo/generate`. A request
//! arrives here as a [`RawRequest`] (field values as given, not yet checked) and
//! leaves as a [`GenerateRequest`] (every rule holds, defaults resolved) or a list
//! of [`FieldIssue`]s, one per broken rule, so that callers can report them all.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A request field, named by its API spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Prompt,
    ImageUrls,
    Model,
    GenerationType,
    AspectRatio,
    Seeds,
    CallbackUrl,
    EnableFallback,
    EnableTranslation,
    Watermark,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Prompt,
        Field::ImageUrls,
        Field::Model,
        Field::GenerationType,
        Field::AspectRatio,
        Field::Seeds,
        Field::CallbackUrl,
        Field::EnableFallback,
        Field::EnableTranslation,
        Field::Watermark,
    ];

    /// The spelling the API uses on the wire.
    pub fn api_name(self) -> &'static str {
        match self {
            Field::Prompt => "prompt",
            Field::ImageUrls => "imageUrls",
            Field::Model => "model",
            Field::GenerationType => "generationType",
            Field::AspectRatio => "aspect_ratio",
            Field::Seeds => "seeds",
            Field::CallbackUrl => "callBackUrl",
            Field::EnableFallback => "enableFallback",
            Field::EnableTranslation => "enableTranslation",
            Field::Watermark => "watermark",
        }
    }

    /// The snake_case alias accepted in manifests, where it differs from the API name.
    pub fn alias(self) -> Option<&'static str> {
        match self {
            Field::ImageUrls => Some("image_urls"),
            Field::GenerationType => Some("generation_type"),
            Field::CallbackUrl => Some("callback_url"),
            Field::EnableFallback => Some("enable_fallback"),
            Field::EnableTranslation => Some("enable_translation"),
            _ => None,
        }
    }

    /// Looks a manifest key up by its API spelling or its snake_case alias.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.api_name() == name || f.alias() == Some(name))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// The closest of `candidates` to `name`, when it is near enough to be a likely typo
/// (`aspectRatio` for `aspect_ratio`, `seed` for `seeds`).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = norm(name);
    let wanted_len = wanted.chars().count();
    candidates
        .into_iter()
        // The distance is at least the difference in length: skipping hopeless
        // candidates keeps a megabyte-long unknown key from costing minutes.
        .filter(|c| wanted_len.abs_diff(c.chars().count()) <= 2.max(c.len() / 4))
        .map(|c| (edit_distance(&wanted, &norm(c)), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// All accepted field names (API spellings and aliases), for suggestions.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    Field::ALL
        .into_iter()
        .flat_map(|f| std::iter::once(f.api_name()).chain(f.alias()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Model {
    #[serde(rename = "veo3")]
    Veo3,
    #[serde(rename = "veo3_fast")]
    Veo3Fast,
}

impl Model {
    pub const ALLOWED: &'static str = "veo3, veo3_fast";

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Veo3 => "veo3",
            Model::Veo3Fast => "veo3_fast",
        }
    }

    pub fn parse(s: &str) -> Option<Model> {
        match s {
            "veo3" => Some(Model::Veo3),
            "veo3_fast" => Some(Model::Veo3Fast),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum AspectRatio {
    #[serde(rename = "16:9")]
    Landscape,
    #[serde(rename = "9:16")]
    Portrait,
    #[serde(rename = "Auto")]
    Auto,
}

impl AspectRatio {
    pub const ALLOWED: &'static str = "16:9, 9:16, Auto";

    pub fn as_str(self) -> &'static str {
        match self {
            AspectRatio::Landscape => "16:9",
            AspectRatio::Portrait => "9:16",
            AspectRatio::Auto => "Auto",
        }
    }

    pub fn parse(s: &str) -> Option<AspectRatio> {
        match s {
            "16:9" => Some(AspectRatio::Landscape),
            "9:16" => Some(AspectRatio::Portrait),
            "Auto" => Some(AspectRatio::Auto),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum GenerationType {
    #[serde(rename = "TEXT_2_VIDEO")]
    Text,
    #[serde(rename = "FIRST_AND_LAST_FRAMES_2_VIDEO")]
    FirstAndLastFrames,
    #[serde(rename = "REFERENCE_2_VIDEO")]
    Reference,
}

impl GenerationType {
    pub const ALLOWED: &'static str =
        "TEXT_2_VIDEO, FIRST_AND_LAST_FRAMES_2_VIDEO, REFERENCE_2_VIDEO";

    pub fn as_str(self) -> &'static str {
        match self {
            GenerationType::Text => "TEXT_2_VIDEO",
            GenerationType::FirstAndLastFrames => "FIRST_AND_LAST_FRAMES_2_VIDEO",
            GenerationType::Reference => "REFERENCE_2_VIDEO",
        }
    }

    pub fn parse(s: &str) -> Option<GenerationType> {
        match s {
            "TEXT_2_VIDEO" => Some(GenerationType::Text),
            "FIRST_AND_LAST_FRAMES_2_VIDEO" => Some(GenerationType::FirstAndLastFrames),
            "REFERENCE_2_VIDEO" => Some(GenerationType::Reference),
            _ => None,
        }
    }

    /// How many images the mode takes, inclusive.
    fn image_range(self) -> (usize, usize) {
        match self {
            GenerationType::Text => (0, 0),
            GenerationType::FirstAndLastFrames => (1, 2),
            GenerationType::Reference => (1, 3),
        }
    }
}

pub const SEED_MIN: i64 = 10_000;
pub const SEED_MAX: i64 = 99_999;

/// Field values as given, before any rule is checked. Enum fields stay strings so
/// that a bad value can be reported with what is allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRequest {
    pub prompt: Option<String>,
    pub image_urls: Option<Vec<String>>,
    pub model: Option<String>,
    pub generation_type: Option<String>,
    pub aspect_ratio: Option<String>,
    pub seeds: Option<i64>,
    pub callback_url: Option<String>,
    pub enable_fallback: Option<bool>,
    pub enable_translation: Option<bool>,
    pub watermark: Option<String>,
    /// Newer API fields passed through unchanged (the manifest's `extra:`).
    pub extra: BTreeMap<String, Value>,
}

impl RawRequest {
    /// Fills every field this request leaves unset from `defaults`.
    pub fn apply_defaults(&mut self, defaults: &RawRequest) {
        fn fill<T: Clone>(slot: &mut Option<T>, default: &Option<T>) {
            if slot.is_none() {
                slot.clone_from(default);
            }
        }
        fill(&mut self.prompt, &defaults.prompt);
        fill(&mut self.image_urls, &defaults.image_urls);
        fill(&mut self.model, &defaults.model);
        fill(&mut self.generation_type, &defaults.generation_type);
        fill(&mut self.aspect_ratio, &defaults.aspect_ratio);
        fill(&mut self.seeds, &defaults.seeds);
        fill(&mut self.callback_url, &defaults.callback_url);
        fill(&mut self.enable_fallback, &defaults.enable_fallback);
        fill(&mut self.enable_translation, &defaults.enable_translation);
        fill(&mut self.watermark, &defaults.watermark);
        for (k, v) in &defaults.extra {
            self.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// Reads a generate body as the service receives it (the simulator's side).
    /// Unknown keys are kept in `extra`, as the live service ignores what it does not know.
    pub fn from_json(body: &Value) -> Result<RawRequest, Vec<FieldIssue>> {
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldIssue::body("the body must be a JSON object")]);
        };
        let mut raw = RawRequest::default();
        let mut issues = Vec::new();
        for (key, value) in obj {
            let Some(field) = Field::ALL.into_iter().find(|f| f.api_name() == key) else {
                raw.extra.insert(key.clone(), value.clone());
                continue;
            };
            if value.is_null() {
                continue;
            }
            let wrong = |expected: &str| FieldIssue::new(field, format!("must be {expected}"));
            match field {
                Field::Prompt => match value.as_str() {
                    Some(s) => raw.prompt = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
                Field::ImageUrls => match value.as_array().and_then(|a| {
                    a.iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                }) {
                    Some(urls) => raw.image_urls = Some(urls),
                    None => issues.push(wrong("an array of strings")),
                },
                Field::Model => match value.as_str() {
                    Some(s) => raw.model = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
                Field::GenerationType => match value.as_str() {
                    Some(s) => raw.generation_type = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
                Field::AspectRatio => match value.as_str() {
                    Some(s) => raw.aspect_ratio = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
                Field::Seeds => match value.as_i64() {
                    Some(n) => raw.seeds = Some(n),
                    None => issues.push(wrong("an integer")),
                },
                Field::CallbackUrl => match value.as_str() {
                    Some(s) => raw.callback_url = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
                Field::EnableFallback => match value.as_bool() {
                    Some(b) => raw.enable_fallback = Some(b),
                    None => issues.push(wrong("a boolean")),
                },
                Field::EnableTranslation => match value.as_bool() {
                    Some(b) => raw.enable_translation = Some(b),
                    None => issues.push(wrong("a boolean")),
                },
                Field::Watermark => match value.as_str() {
                    Some(s) => raw.watermark = Some(s.to_owned()),
                    None => issues.push(wrong("a string")),
                },
            }
        }
        if issues.is_empty() {
            Ok(raw)
        } else {
            Err(issues)
        }
    }
}

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

    fn body(message: impl Into<String>) -> FieldIssue {
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

/// A request every rule holds for, with defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    pub image_urls: Vec<String>,
    pub model: Model,
    pub generation_type: GenerationType,
    pub aspect_ratio: AspectRatio,
    pub seeds: Option<u32>,
    pub callback_url: Option<String>,
    pub enable_fallback: Option<bool>,
    pub enable_translation: Option<bool>,
    pub watermark: Option<String>,
    pub extra: BTreeMap<String, Value>,
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
    let (decided, warnings) = check_parts(raw);
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

/// What the rules decide for a request that passes them: the values resolved from its
/// text. With the raw request's own values it makes the [`GenerateRequest`]; kept apart
/// so that a caller that owns the raw request (the manifest reader) can move its
/// strings in rather than copy them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decided {
    model: Model,
    aspect_ratio: AspectRatio,
    generation_type: GenerationType,
    seeds: Option<u32>,
    enable_fallback: Option<bool>,
    enable_translation: Option<bool>,
}

impl Decided {
    /// The request, taking the text fields of `raw` (the one the rules were applied to).
    pub(crate) fn into_request(self, raw: RawRequest) -> GenerateRequest {
        GenerateRequest {
            prompt: raw.prompt.unwrap_or_default(),
            image_urls: raw.image_urls.unwrap_or_default(),
            model: self.model,
            generation_type: self.generation_type,
            aspect_ratio: self.aspect_ratio,
            seeds: self.seeds,
            callback_url: raw.callback_url,
            enable_fallback: self.enable_fallback,
            enable_translation: self.enable_translation,
            watermark: raw.watermark,
            extra: raw.extra,
        }
    }
}

/// The rules of [`check`], without building the request: the decided values or every
/// issue, and the warnings.
pub(crate) fn check_parts(raw: &RawRequest) -> (Result<Decided, Vec<FieldIssue>>, Vec<FieldIssue>) {
    let mut issues = Vec::new();
    let mut warnings = Vec::new();

    match raw.prompt.as_deref() {
        Some(p) if !p.trim().is_empty() => {}
        Some(_) => issues.push(FieldIssue::new(Field::Prompt, "must not be blank")),
        None => issues.push(FieldIssue::new(Field::Prompt, "is required")),
    }

    let model = match raw.model.as_deref() {
        None => Some(DEFAULT_MODEL),
        Some(m) => Model::parse(m).or_else(|| {
            issues.push(unknown_value(Field::Model, m, Model::ALLOWED));
            None
        }),
    };
    let aspect_ratio = match raw.aspect_ratio.as_deref() {
        None => Some(DEFAULT_ASPECT_RATIO),
        Some(a) => AspectRatio::parse(a).or_else(|| {
            issues.push(unknown_value(Field::AspectRatio, a, AspectRatio::ALLOWED));
            None
        }),
    };

    let image_urls: &[String] = raw.image_urls.as_deref().unwrap_or_default();
    for url in image_urls {
        if let Err(why) = check_http_url(url) {
            issues.push(FieldIssue::new(
                Field::ImageUrls,
                format!("{url:?} {why} (an absolute http or https URL)"),
            ));
        }
    }

    let generation_type = match raw.generation_type.as_deref() {
        Some(g) => GenerationType::parse(g).or_else(|| {
            issues.push(unknown_value(
                Field::GenerationType,
                g,
                GenerationType::ALLOWED,
            ));
            None
        }),
        None => match image_urls.len() {
            0 => Some(GenerationType::Text),
            1 | 2 => Some(GenerationType::FirstAndLastFrames),
            n => {
                issues.push(FieldIssue::new(
                    Field::ImageUrls,
                    format!(
                        "{n} images need generationType REFERENCE_2_VIDEO (without it, 0 images \
                         mean TEXT_2_VIDEO and 1-2 mean FIRST_AND_LAST_FRAMES_2_VIDEO)"
                    ),
                ));
                None
            }
        },
    };

    if let Some(mode) = generation_type {
        let (min, max) = mode.image_range();
        let n = image_urls.len();
        if n < min || n > max {
            let allowed = if max == 0 {
                "none".to_owned()
            } else {
                format!("{min} to {max}")
            };
            issues.push(FieldIssue::new(
                Field::ImageUrls,
                format!("{} takes {allowed} images, got {n}", mode.as_str()),
            ));
        }
        if mode == GenerationType::Reference {
            if let Some(m) = model.filter(|m| *m != Model::Veo3Fast) {
                issues.push(FieldIssue::new(
                    Field::Model,
                    format!(
                        "REFERENCE_2_VIDEO works only with veo3_fast, not {}",
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
    }

    let seeds = match raw.seeds {
        None => None,
        Some(s) if (SEED_MIN..=SEED_MAX).contains(&s) => u32::try_from(s).ok(),
        Some(s) => {
            issues.push(FieldIssue::new(
                Field::Seeds,
                format!("{s} is out of range (an integer from {SEED_MIN} to {SEED_MAX})"),
            ));
            None
        }
    };

    if let Some(url) = raw.callback_url.as_deref()
        && let Err(why) = check_http_url(url)
    {
        issues.push(FieldIssue::new(
            Field::CallbackUrl,
            format!("{url:?} {why} (an absolute http or https URL)"),
        ));
    }

    if let Some(fallback) = raw.enable_fallback {
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

    for key in raw.extra.keys() {
        if Field::from_name(key).is_some() {
            issues.push(FieldIssue::body(format!(
                "extra: {key} is a request field; set it directly, not under extra"
            )));
        }
    }

    let result = match (issues.is_empty(), model, aspect_ratio, generation_type) {
        (true, Some(model), Some(aspect_ratio), Some(generation_type)) => Ok(Decided {
            model,
            aspect_ratio,
            generation_type,
            seeds,
            enable_fallback: raw.enable_fallback,
            enable_translation: raw.enable_translation,
        }),
        _ => Err(issues),
    };
    (result, warnings)
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

impl GenerateRequest {
    /// The JSON body sent to the service, in its field spelling. Model, aspect ratio
    /// and generation type are always sent (resolved), so that what runs never depends
    /// on a server-side default; optional fields only when set.
    pub fn to_body(&self) -> Value {
        let mut m = Map::new();
        m.insert("prompt".into(), Value::from(self.prompt.as_str()));
        if !self.image_urls.is_empty() {
            m.insert("imageUrls".into(), Value::from(self.image_urls.clone()));
        }
        m.insert("model".into(), Value::from(self.model.as_str()));
        m.insert(
            "generationType".into(),
            Value::from(self.generation_type.as_str()),
        );
        m.insert(
            "aspect_ratio".into(),
            Value::from(self.aspect_ratio.as_str()),
        );
        if let Some(s) = self.seeds {
            m.insert("seeds".into(), Value::from(s));
        }
        if let Some(u) = &self.callback_url {
            m.insert("callBackUrl".into(), Value::from(u.as_str()));
        }
        if let Some(b) = self.enable_fallback {
            m.insert("enableFallback".into(), Value::from(b));
        }
        if let Some(b) = self.enable_translation {
            m.insert("enableTranslation".into(), Value::from(b));
        }
        if let Some(w) = &self.watermark {
            m.insert("watermark".into(), Value::from(w.as_str()));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }

    /// A stable hash of the body (hex, 16 digits): what the results file compares to
    /// notice that a manifest was edited since a job ran. Keys are sorted, so it does
    /// not depend on field order.
    pub fn fingerprint(&self) -> String {
        let mut body = Vec::with_capacity(128 + self.prompt.len());
        self.write_body(&mut body);
        let digest = Sha256::digest(&body);
        let mut hex = String::with_capacity(16);
        for b in &digest[..8] {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        hex
    }

    /// Appends the body's JSON text to `out`, byte for byte as `to_body().to_string()`
    /// prints it (compact, keys in byte order, serde_json's escaping), without building
    /// the JSON tree: start-up fingerprints every job of the manifest, and the tree's
    /// allocations were most of that cost.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        if !self.extra.is_empty() {
            // Extra keys sort in among the fields (and `to_body` lets one replace a
            // field): rare enough to leave to serde_json.
            out.extend_from_slice(self.to_body().to_string().as_bytes());
            return;
        }
        // The keys below are in byte order, as serde_json's map keeps them.
        out.extend_from_slice(b"{\"aspect_ratio\":");
        json_str(out, self.aspect_ratio.as_str());
        if let Some(u) = &self.callback_url {
            out.extend_from_slice(b",\"callBackUrl\":");
            json_str(out, u);
        }
        if let Some(b) = self.enable_fallback {
            out.extend_from_slice(b",\"enableFallback\":");
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        if let Some(b) = self.enable_translation {
            out.extend_from_slice(b",\"enableTranslation\":");
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        out.extend_from_slice(b",\"generationType\":");
        json_str(out, self.generation_type.as_str());
        if !self.image_urls.is_empty() {
            out.extend_from_slice(b",\"imageUrls\":[");
            for (i, url) in self.image_urls.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, url);
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"model\":");
        json_str(out, self.model.as_str());
        out.extend_from_slice(b",\"prompt\":");
        json_str(out, &self.prompt);
        if let Some(s) = self.seeds {
            out.extend_from_slice(b",\"seeds\":");
            // Writing to a Vec cannot fail.
            let _ = std::io::Write::write_fmt(out, format_args!("{s}"));
        }
        if let Some(w) = &self.watermark {
            out.extend_from_slice(b",\"watermark\":");
            json_str(out, w);
        }
        out.push(b'}');
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string with serde_json's own escaping (the one `Value` prints with).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
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
                "model: \"veo4\" is not allowed (veo3, veo3_fast)",
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
    }

    #[test]
    fn reference_mode_needs_fast_model_and_fixed_ratio() {
        let mut r = raw("x");
        r.generation_type = Some("REFERENCE_2_VIDEO".into());
        r.image_urls = Some(vec!["https://a.example/1.png".into()]);
        r.aspect_ratio = Some("9:16".into());
        assert!(issues(&r).is_empty(), "9:16 is accepted");
        r.model = Some("veo3".into());
        r.aspect_ratio = Some("Auto".into());
        assert_eq!(
            issues(&r),
            [
                "model: REFERENCE_2_VIDEO works only with veo3_fast, not veo3",
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
        r.extra.insert("resolution".into(), Value::from("1080p"));
        let body = check(&r).result.unwrap().to_body();
        assert_eq!(body["resolution"], "1080p");
        r.extra.insert("model".into(), Value::from("veo3_lite"));
        assert_eq!(issues(&r).len(), 1);
    }

    #[test]
    fn body_round_trips_through_json() {
        let mut r = raw("a \"quoted\" prompt");
        r.image_urls = Some(vec!["https://a.example/1.png".into()]);
        r.seeds = Some(12_345);
        r.watermark = Some("Brand".into());
        r.enable_translation = Some(false);
        let req = check(&r).result.unwrap();
        let back = RawRequest::from_json(&req.to_body()).unwrap();
        assert_eq!(check(&back).result.unwrap(), req);
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = check(&raw("a dog")).result.unwrap();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        let b = check(&raw("a cat")).result.unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// The fingerprint as it was first computed: the JSON tree, printed, hashed.
    fn fingerprint_of_tree(r: &GenerateRequest) -> String {
        let digest = Sha256::digest(r.to_body().to_string().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn request_strategy() -> impl proptest::strategy::Strategy<Value = GenerateRequest> {
        use proptest::prelude::*;
        // Text with quotes, backslashes, control characters and non-ASCII.
        let text = "(\\PC|[\"\\\\\\x00-\\x1f\\x7f\\u{2028}é😀]){0,12}";
        let extra = prop::collection::btree_map(
            prop_oneof![Just("resolution".to_owned()), "[a-zA-Z_]{1,8}"],
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                text.prop_map(Value::from),
                Just(Value::Null)
            ],
            0..3,
        );
        (
            (
                text,
                prop::collection::vec(text, 0..4),
                0..2usize,
                0..3usize,
                0..3usize,
            ),
            (
                prop::option::of(any::<u32>()),
                prop::option::of(text),
                prop::option::of(any::<bool>()),
                prop::option::of(any::<bool>()),
                prop::option::of(text),
                extra,
            ),
        )
            .prop_map(
                |((prompt, image_urls, m, g, a), (seeds, cb, fb, tr, wm, extra))| GenerateRequest {
                    prompt,
                    image_urls,
                    model: [Model::Veo3, Model::Veo3Fast][m],
                    generation_type: [
                        GenerationType::Text,
                        GenerationType::FirstAndLastFrames,
                        GenerationType::Reference,
                    ][g],
                    aspect_ratio: [
                        AspectRatio::Landscape,
                        AspectRatio::Portrait,
                        AspectRatio::Auto,
                    ][a],
                    seeds,
                    callback_url: cb,
                    enable_fallback: fb,
                    enable_translation: tr,
                    watermark: wm,
                    extra,
                },
            )
    }

    proptest::proptest! {
        /// Results files written before the direct writer must still resume: the
        /// fingerprint is the same value, for any request.
        #[test]
        fn write_body_matches_the_json_tree(r in request_strategy()) {
            let mut body = Vec::new();
            r.write_body(&mut body);
            proptest::prop_assert_eq!(String::from_utf8(body).unwrap(), r.to_body().to_string());
            proptest::prop_assert_eq!(r.fingerprint(), fingerprint_of_tree(&r));
        }
    }

    #[test]
    fn fingerprint_values_are_pinned() {
        // Values computed by the first version; a change here breaks every resume.
        let a = check(&raw("a dog")).result.unwrap();
        assert_eq!(a.fingerprint(), "bf4724e2f7dc5103");
        let mut r = raw("shot 1, a \"red\" kite\nover a beach");
        r.image_urls = Some(vec!["https://a.example/1.png".into()]);
        r.seeds = Some(12_345);
        r.watermark = Some("Brand".into());
        r.callback_url = Some("https://hooks.example/x".into());
        r.enable_translation = Some(false);
        let b = check(&r).result.unwrap();
        assert_eq!(b.fingerprint(), "295f0d51236a4ec7");
    }

    #[test]
    fn suggestions_for_near_misses() {
        assert_eq!(
            did_you_mean("aspectRatio", field_names()),
            Some("aspect_ratio")
        );
        assert_eq!(did_you_mean("seed", field_names()), Some("seeds"));
        assert_eq!(did_you_mean("imageUrl", field_names()), Some("imageUrls"));
        assert_eq!(did_you_mean("colour_grading", field_names()), None);
    }

    #[test]
    fn wire_type_errors_are_reported() {
        let body = serde_json::json!({"prompt": 5, "seeds": "x", "newField": 1});
        let err = RawRequest::from_json(&body).unwrap_err();
        assert_eq!(err.len(), 2);
    }
}
