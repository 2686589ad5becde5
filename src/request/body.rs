//! The checked request and its body on the wire: one `#[derive(Serialize)]`
//! declaration gives the JSON sent to the service, the JSONL `validate --emit`
//! prints, and the bytes the fingerprint (the resume key's guard) is taken of.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AspectRatio, GenerationType, Model, Resolution};

/// A request every rule holds for, with defaults resolved.
///
/// Serializing it gives the body. The fields are declared in the byte order of their
/// API names, the order serde_json's map keeps keys in: the bytes are those of the
/// body's JSON tree printed, which is what every fingerprint in every results file
/// was taken of (the pinned fingerprints and the proptest in the tests guard it).
/// Model, aspect ratio and generation type are always sent (resolved), so that what
/// runs never depends on a server-side default; optional fields only when set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateRequest {
    pub aspect_ratio: AspectRatio,
    #[serde(rename = "callBackUrl", skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Seconds; the service's default (8) when not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u8>,
    #[serde(rename = "enableFallback", skip_serializing_if = "Option::is_none")]
    pub enable_fallback: Option<bool>,
    #[serde(rename = "enableTranslation", skip_serializing_if = "Option::is_none")]
    pub enable_translation: Option<bool>,
    #[serde(rename = "generationType")]
    pub generation_type: GenerationType,
    #[serde(rename = "imageUrls", skip_serializing_if = "Vec::is_empty")]
    pub image_urls: Vec<String>,
    pub model: Model,
    pub prompt: String,
    /// Sent only when set: the service's default is 720p.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Newer API fields, sorted in among the others (see [`GenerateRequest::to_body`]).
    #[serde(skip)]
    pub extra: BTreeMap<String, Value>,
}

impl GenerateRequest {
    /// The JSON body sent to the service, in its field spelling, with the `extra`
    /// fields added (an extra key may replace a field: the checked request never
    /// has one that does, since the rules refuse it).
    pub fn to_body(&self) -> Value {
        // A struct of strings, numbers and booleans always serializes.
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(m) = &mut body {
            for (k, v) in &self.extra {
                m.insert(k.clone(), v.clone());
            }
        }
        body
    }

    /// A stable hash of the body (hex, 16 digits): what the results file compares to
    /// notice that a manifest was edited since a job ran. Keys are sorted, so it does
    /// not depend on field order.
    pub fn fingerprint(&self) -> String {
        let mut body = Vec::with_capacity(128 + self.prompt.len());
        self.write_body(&mut body);
        hex16(&Sha256::digest(&body))
    }

    /// Appends the body's JSON text to `out`, byte for byte as `to_body().to_string()`
    /// prints it (compact, keys in byte order, serde_json's escaping), without building
    /// the JSON tree: start-up fingerprints every job of the manifest, and the tree's
    /// allocations were most of that cost.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and the request always serializes.
        let _ = if self.extra.is_empty() {
            serde_json::to_writer(&mut *out, self)
        } else {
            // Extra keys sort in among the fields: rare enough to leave to the tree.
            serde_json::to_writer(&mut *out, &self.to_body())
        };
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first 8 bytes of `digest` in hex: how every fingerprint is written.
pub(crate) fn hex16(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(16);
    for b in digest.iter().take(8) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::super::{Field, RawRequest, check};
    use super::*;

    fn raw(prompt: &str) -> RawRequest {
        RawRequest {
            prompt: Some(prompt.into()),
            ..RawRequest::default()
        }
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
    fn body_keys_are_the_field_table_in_byte_order() {
        let req = GenerateRequest {
            aspect_ratio: AspectRatio::Auto,
            callback_url: Some("https://h.example/x".into()),
            enable_fallback: Some(false),
            enable_translation: Some(true),
            generation_type: GenerationType::FirstAndLastFrames,
            image_urls: vec!["https://a.example/1.png".into()],
            model: Model::Veo3,
            prompt: "x".into(),
            seeds: Some(12_345),
            watermark: Some("w".into()),
            resolution: Some(Resolution::Hd1080),
            duration: Some(6),
            extra: BTreeMap::new(),
        };
        let mut body = Vec::new();
        req.write_body(&mut body);
        let written: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
        // serde_json's map sorts its keys; the written text must already be in that order.
        let keys_in_text: Vec<usize> = written
            .keys()
            .map(|k| {
                String::from_utf8_lossy(&body)
                    .find(&format!("\"{k}\":"))
                    .unwrap()
            })
            .collect();
        assert!(
            keys_in_text.is_sorted(),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let mut table: Vec<&str> = Field::ALL.iter().map(|f| f.api_name()).collect();
        table.sort_unstable();
        let keys: Vec<&str> = written.keys().map(String::as_str).collect();
        assert_eq!(keys, table, "every field is in the body under its API name");
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
                prop::sample::select(Model::ALL.to_vec()),
                prop::sample::select(GenerationType::ALL.to_vec()),
                prop::sample::select(AspectRatio::ALL.to_vec()),
            ),
            (
                prop::option::of(any::<u32>()),
                prop::option::of(text),
                prop::option::of(any::<bool>()),
                prop::option::of(any::<bool>()),
                prop::option::of(text),
                extra,
            ),
            (
                prop::option::of(prop::sample::select(Resolution::ALL.to_vec())),
                prop::option::of(any::<u8>()),
            ),
        )
            .prop_map(
                |(
                    (prompt, image_urls, model, generation_type, aspect_ratio),
                    (seeds, cb, fb, tr, wm, extra),
                    (resolution, duration),
                )| GenerateRequest {
                    prompt,
                    image_urls,
                    model,
                    generation_type,
                    aspect_ratio,
                    seeds,
                    callback_url: cb,
                    enable_fallback: fb,
                    enable_translation: tr,
                    watermark: wm,
                    resolution,
                    duration,
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
    fn a_resolution_moved_out_of_extra_keeps_its_fingerprint() {
        // Before `resolution` was a field, manifests sent it through `extra:`; the
        // same body must give the same fingerprint, or their resume would pay twice.
        let mut old = check(&raw("a dog")).result.unwrap();
        old.extra.insert("resolution".into(), Value::from("1080p"));
        old.extra.insert("duration".into(), Value::from(6));
        let mut r = raw("a dog");
        r.resolution = Some("1080p".into());
        r.duration = Some(6);
        let new = check(&r).result.unwrap();
        assert_eq!(new.to_body(), old.to_body());
        assert_eq!(new.fingerprint(), old.fingerprint());
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
}
