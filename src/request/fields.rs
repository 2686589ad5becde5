//! The request's fields, declared once: the [`fields!`] table below makes the
//! [`Field`] enum, its spellings, the [`RawRequest`] that holds values as given, the
//! defaults merge and the one typed setter every reader (YAML, CSV, the simulator's
//! JSON) calls. The value enums ([`Model`], [`AspectRatio`], [`GenerationType`],
//! [`Resolution`], [`Upgrade`]) spell each variant once, in [`value_enum!`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::FieldIssue;

/// How a field's value is written, which decides how every reader reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text, kept exactly as written (a CSV cell keeps its spaces).
    Text,
    /// One word or URL; a CSV cell's surrounding spaces are dropped.
    Token,
    /// A list of URLs (a YAML list, a `|`-separated CSV cell, a JSON array).
    Urls,
    Int,
    Bool,
}

impl Kind {
    /// What a JSON value of this kind must be, for "must be ..." messages.
    pub fn json_type(self) -> &'static str {
        match self {
            Kind::Text | Kind::Token => "a string",
            Kind::Urls => "an array of strings",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean",
        }
    }
}

/// A value read for a field, of its [`Kind`], handed to [`RawRequest::set`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Text(String),
    Urls(Vec<String>),
    Int(i64),
    Bool(bool),
}

/// The type a field of each kind holds in a [`RawRequest`].
macro_rules! raw_type {
    (Text) => { String };
    (Token) => { String };
    (Urls) => { Vec<String> };
    (Int) => { i64 };
    (Bool) => { bool };
}

/// The [`FieldValue`] variant that carries a field of each kind.
macro_rules! value_pattern {
    (Text, $v:ident) => {
        FieldValue::Text($v)
    };
    (Token, $v:ident) => {
        FieldValue::Text($v)
    };
    (Urls, $v:ident) => {
        FieldValue::Urls($v)
    };
    (Int, $v:ident) => {
        FieldValue::Int($v)
    };
    (Bool, $v:ident) => {
        FieldValue::Bool($v)
    };
}

macro_rules! optional {
    () => {
        None
    };
    ($x:literal) => {
        Some($x)
    };
}

macro_rules! one {
    ($x:ident) => {
        1
    };
}

/// Whether an extend job (the extend endpoint) takes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendUse {
    /// Taken as a generation takes it, and filled from the manifest's defaults.
    Same,
    /// Taken, spelled the extend endpoint's own way (the model), and not filled
    /// from defaults written for generations.
    Own,
    /// Not taken: set on an extend job, it is an error.
    No,
}

/// The field table: one line per request field, `Variant slot: Kind = "apiName"`, with
/// `| "alias"` when manifests also accept a snake_case spelling, then whether an
/// extend job takes it (an [`ExtendUse`]).
macro_rules! fields {
    ($( $(#[$meta:meta])* $variant:ident $slot:ident : $kind:ident = $api:literal $(| $alias:literal)?, extend: $extend:ident ;)*) => {
        /// A request field, named by its API spelling.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $( $(#[$meta])* $variant, )*
        }

        impl Field {
            pub const ALL: [Field; 0 $(+ one!($variant))*] = [ $(Field::$variant,)* ];

            /// The spelling the API uses on the wire.
            pub fn api_name(self) -> &'static str {
                match self { $(Field::$variant => $api,)* }
            }

            /// The snake_case alias accepted in manifests, where it differs from the API name.
            pub fn alias(self) -> Option<&'static str> {
                match self { $(Field::$variant => optional!($($alias)?),)* }
            }

            /// How the field's value is written.
            pub fn kind(self) -> Kind {
                match self { $(Field::$variant => Kind::$kind,)* }
            }

            /// Whether an extend job takes the field.
            pub fn extend(self) -> ExtendUse {
                match self { $(Field::$variant => ExtendUse::$extend,)* }
            }
        }

        /// Field values as given, before any rule is checked. Enum fields stay strings so
        /// that a bad value can be reported with what is allowed.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct RawRequest {
            $( pub $slot: Option<raw_type!($kind)>, )*
            /// Newer API fields passed through unchanged (the manifest's `extra:`).
            pub extra: BTreeMap<String, Value>,
        }

        impl RawRequest {
            /// Fills every field this request leaves unset from `defaults`.
            pub fn apply_defaults(&mut self, defaults: &RawRequest) {
                $( if self.$slot.is_none() {
                    self.$slot.clone_from(&defaults.$slot);
                } )*
                for (k, v) in &defaults.extra {
                    self.extra.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }

            /// The fields for which `keep` holds, the others unset (and no extras).
            pub fn only(&self, keep: impl Fn(Field) -> bool) -> RawRequest {
                RawRequest {
                    $( $slot: if keep(Field::$variant) { self.$slot.clone() } else { None }, )*
                    extra: BTreeMap::new(),
                }
            }

            /// Whether `field` is set.
            pub fn is_set(&self, field: Field) -> bool {
                match field { $(Field::$variant => self.$slot.is_some(),)* }
            }

            /// Sets `field` to `value`: the one setter every reader calls. A value of
            /// another kind than the field's is refused with what the field must be.
            pub fn set(&mut self, field: Field, value: FieldValue) -> Result<(), String> {
                match (field, value) {
                    $( (Field::$variant, value_pattern!($kind, v)) => self.$slot = Some(v), )*
                    (field, _) => return Err(format!("must be {}", field.kind().json_type())),
                }
                Ok(())
            }
        }
    };
}

fields! {
    Prompt prompt: Text = "prompt", extend: Same;
    ImageUrls image_urls: Urls = "imageUrls" | "image_urls", extend: No;
    Model model: Token = "model", extend: Own;
    GenerationType generation_type: Token = "generationType" | "generation_type", extend: No;
    AspectRatio aspect_ratio: Token = "aspect_ratio", extend: No;
    Seeds seeds: Int = "seeds", extend: Same;
    CallbackUrl callback_url: Token = "callBackUrl" | "callback_url", extend: Same;
    EnableFallback enable_fallback: Bool = "enableFallback" | "enable_fallback", extend: No;
    EnableTranslation enable_translation: Bool = "enableTranslation" | "enable_translation", extend: No;
    Watermark watermark: Text = "watermark", extend: Same;
    Resolution resolution: Token = "resolution", extend: No;
    Duration duration: Int = "duration", extend: No;
}

impl Field {
    /// The fields an extend job takes as a generation does (filled from defaults).
    pub fn extend_same() -> impl Iterator<Item = Field> {
        Field::ALL
            .into_iter()
            .filter(|f| f.extend() == ExtendUse::Same)
    }

    /// The fields an extend job takes, said for messages: "prompt, model, seeds,
    /// callBackUrl and watermark".
    pub fn extend_taken() -> String {
        let taken: Vec<&str> = Field::ALL
            .into_iter()
            .filter(|f| f.extend() != ExtendUse::No)
            .map(Field::api_name)
            .collect();
        match taken.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl Field {
    /// Looks a manifest key up by its API spelling or its snake_case alias.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.api_name() == name || f.alias() == Some(name))
    }

    /// What an integer field takes, for the readers' messages.
    pub fn int_range(self) -> String {
        match self {
            Field::Seeds => format!("an integer from {} to {}", super::SEED_MIN, super::SEED_MAX),
            Field::Duration => super::DURATION_ALLOWED.to_owned(),
            _ => "an integer".to_owned(),
        }
    }
}

impl RawRequest {
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
            let set = match FieldValue::from_json(field.kind(), value) {
                Some(v) => raw.set(field, v),
                None => Err(format!("must be {}", field.kind().json_type())),
            };
            if let Err(message) = set {
                issues.push(FieldIssue::new(field, message));
            }
        }
        if issues.is_empty() {
            Ok(raw)
        } else {
            Err(issues)
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

impl FieldValue {
    /// A JSON value read as a field of `kind`; `None` when it is of another type.
    pub fn from_json(kind: Kind, value: &Value) -> Option<FieldValue> {
        match kind {
            Kind::Text | Kind::Token => value.as_str().map(|s| FieldValue::Text(s.to_owned())),
            Kind::Urls => value
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(FieldValue::Urls),
            Kind::Int => value.as_i64().map(FieldValue::Int),
            Kind::Bool => value.as_bool().map(FieldValue::Bool),
        }
    }
}

/// A closed set of values, each spelled once: the enum, `ALL`, `ALLOWED` (for
/// messages), `as_str`, `parse`, and serialization as the spelling.
macro_rules! value_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$fmeta:meta])* $first:ident = $first_s:literal
            $(, $(#[$vmeta:meta])* $variant:ident = $s:literal)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(#[$fmeta])* $first,
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            pub const ALL: [$name; 1 $(+ one!($variant))*] = [$name::$first, $($name::$variant,)*];
            /// Every spelling, for "is not allowed (...)" messages.
            pub const ALLOWED: &'static str = concat!($first_s $(, ", ", $s)*);

            pub fn as_str(self) -> &'static str {
                match self {
                    $name::$first => $first_s,
                    $( $name::$variant => $s, )*
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|v| v.as_str() == s)
            }

            /// The variant's place in `ALL` (for tables indexed by it).
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

value_enum! {
    pub enum Model {
        Veo3 = "veo3",
        Veo3Fast = "veo3_fast",
        /// Veo 3.1 Lite: the cheapest, made for high-volume batches; no 4k.
        Veo3Lite = "veo3_lite",
    }
}

value_enum! {
    /// The resolution asked at generation (`resolution`); the service's default is 720p.
    pub enum Resolution {
        Hd720 = "720p",
        Hd1080 = "1080p",
        Uhd4k = "4k",
    }
}

value_enum! {
    pub enum AspectRatio {
        Landscape = "16:9",
        Portrait = "9:16",
        Auto = "Auto",
    }
}

value_enum! {
    pub enum GenerationType {
        Text = "TEXT_2_VIDEO",
        FirstAndLastFrames = "FIRST_AND_LAST_FRAMES_2_VIDEO",
        Reference = "REFERENCE_2_VIDEO",
    }
}

value_enum! {
    /// After the task succeeds, ask for a higher-resolution file (the 1080p and 4K
    /// endpoints): part of what a job asks, priced with its request. Not a field of the
    /// generate body: the manifest's `upgrade` and the results file's column spell it.
    pub enum Upgrade {
        Hd1080 = "1080p",
        Uhd4k = "4k",
    }
}

impl Model {
    /// Whether the model renders `r` at generation (Lite has no 4k).
    pub fn offers(self, r: Resolution) -> bool {
        !(self == Model::Veo3Lite && r == Resolution::Uhd4k)
    }
}

impl Default for Resolution {
    /// The service's default when `resolution` is not sent.
    fn default() -> Resolution {
        Resolution::Hd720
    }
}

impl GenerationType {
    /// How many images the mode takes, inclusive.
    pub(crate) fn image_range(self) -> (usize, usize) {
        match self {
            GenerationType::Text => (0, 0),
            GenerationType::FirstAndLastFrames => (1, 2),
            GenerationType::Reference => (1, 3),
        }
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
        .map(|c| (strsim::levenshtein(&wanted, &norm(c)), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// All accepted field names (API spellings and aliases), for suggestions.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    Field::ALL
        .into_iter()
        .flat_map(|f| std::iter::once(f.api_name()).chain(f.alias()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_spelling_finds_its_field() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.api_name()), Some(f));
            if let Some(alias) = f.alias() {
                assert_eq!(Field::from_name(alias), Some(f));
            }
        }
        assert_eq!(Field::from_name("image_urls"), Some(Field::ImageUrls));
        assert_eq!(Field::ImageUrls.alias(), Some("image_urls"));
        assert_eq!(Field::Model.alias(), None);
    }

    #[test]
    fn value_enums_spell_each_variant_once() {
        assert_eq!(Model::ALLOWED, "veo3, veo3_fast, veo3_lite");
        assert_eq!(Resolution::ALLOWED, "720p, 1080p, 4k");
        assert_eq!(Resolution::Uhd4k.index(), 2);
        assert_eq!(Model::parse("veo3_fast"), Some(Model::Veo3Fast));
        assert_eq!(Model::parse("veo4"), None);
        assert_eq!(
            serde_json::to_string(&AspectRatio::Portrait).unwrap(),
            "\"9:16\""
        );
        for g in GenerationType::ALL {
            assert_eq!(GenerationType::parse(g.as_str()), Some(g));
        }
    }

    #[test]
    fn the_setter_refuses_a_value_of_another_kind() {
        let mut raw = RawRequest::default();
        raw.set(Field::Seeds, FieldValue::Int(12_345)).unwrap();
        assert_eq!(raw.seeds, Some(12_345));
        assert_eq!(
            raw.set(Field::Seeds, FieldValue::Text("x".into())),
            Err("must be an integer".to_owned())
        );
        raw.set(Field::Watermark, FieldValue::Text(" B ".into()))
            .unwrap();
        assert_eq!(raw.watermark.as_deref(), Some(" B "));
    }
}

#[cfg(test)]
mod table_tests {
    //! The table is the one declaration of a field: these tests fail when a field
    //! is declared and not validated, not sent, or not placed.

    use serde_json::json;

    use super::*;
    use crate::request::check;

    /// A value each field accepts, another than its default, and one it refuses.
    /// The match has no catch-all: a new field must say its own.
    fn samples(field: Field) -> (FieldValue, Option<FieldValue>) {
        use FieldValue::{Bool, Int, Text, Urls};
        let text = |s: &str| Text(s.to_owned());
        match field {
            Field::Prompt => (text("a lighthouse at dusk"), Some(text("  "))),
            Field::ImageUrls => (
                Urls(vec!["https://example.com/a.png".into()]),
                Some(Urls(vec!["not a url".into()])),
            ),
            Field::Model => (text("veo3"), Some(text("veo9"))),
            Field::GenerationType => (text("REFERENCE_2_VIDEO"), Some(text("SOUND_2_VIDEO"))),
            Field::AspectRatio => (text("9:16"), Some(text("4:3"))),
            Field::Seeds => (Int(12_345), Some(Int(5))),
            Field::CallbackUrl => (
                text("https://example.com/hook"),
                Some(text("ftp://example.com")),
            ),
            Field::EnableFallback => (Bool(true), None),
            Field::EnableTranslation => (Bool(false), None),
            Field::Watermark => (text("Brand"), None),
            Field::Resolution => (text("1080p"), Some(text("8k"))),
            Field::Duration => (Int(6), Some(Int(7))),
        }
    }

    fn as_json(value: &FieldValue) -> Value {
        match value {
            FieldValue::Text(s) => json!(s),
            FieldValue::Urls(u) => json!(u),
            FieldValue::Int(i) => json!(i),
            FieldValue::Bool(b) => json!(b),
        }
    }

    /// A request that passes the rules, with `field` set to `value`.
    fn with(field: Field, value: FieldValue) -> RawRequest {
        let mut raw = RawRequest {
            prompt: Some("a slow pan".into()),
            ..RawRequest::default()
        };
        raw.set(field, value).unwrap();
        // A reference video takes images; the images then need a mode that does.
        if field == Field::GenerationType {
            raw.image_urls = Some(vec!["https://example.com/r.png".into()]);
        }
        if field == Field::ImageUrls {
            raw.generation_type = Some("REFERENCE_2_VIDEO".into());
        }
        raw
    }

    #[test]
    fn every_declared_field_is_validated_sent_and_placed() {
        for field in Field::ALL {
            let (good, bad) = samples(field);
            let request = check(&with(field, good.clone()))
                .result
                .unwrap_or_else(|e| panic!("{field}: {e:?}"));
            let body = request.to_body();
            assert_eq!(
                body[field.api_name()],
                as_json(&good),
                "{field} is not sent as set: {body}"
            );
            if let Some(bad) = bad {
                let issues = check(&with(field, bad)).result.unwrap_err();
                assert!(
                    issues.iter().any(|i| i.field == Some(field)),
                    "{field}: a bad value is not refused under its name: {issues:?}"
                );
            }
            // Placed: found by its spellings, and its kind read from JSON.
            assert_eq!(Field::from_name(field.api_name()), Some(field));
            let read = RawRequest::from_json(&json!({ field.api_name(): as_json(&good) }))
                .unwrap_or_else(|e| panic!("{field}: {e:?}"));
            assert!(read.is_set(field), "{field} is not read from a body");
        }
    }

    #[test]
    fn the_extend_fields_and_their_message_follow_the_table() {
        let same: Vec<Field> = Field::extend_same().collect();
        assert_eq!(
            same,
            [
                Field::Prompt,
                Field::Seeds,
                Field::CallbackUrl,
                Field::Watermark
            ]
        );
        assert_eq!(
            Field::extend_taken(),
            "prompt, model, seeds, callBackUrl and watermark"
        );
    }
}
