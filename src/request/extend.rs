//! The extend request (`POST /api/v1/veo/extend`): a finished video continued with a
//! new prompt. It takes only `taskId`, `prompt`, `seeds`, `model`, `watermark` and
//! `callBackUrl`, and spells the model its own way (`quality`, `fast`, `lite`).
//!
//! An extend job holds its fields in a [`GenerateRequest`] checked by the same rules
//! as a generation (prompt, seeds, callback URL), whose other fields it does not
//! send; this module writes its body, takes its fingerprint and reads a body as the
//! simulator receives it, so that the manifest, the runner and the simulator agree.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Field, FieldIssue, FieldValue, GenerateRequest, Model, RawRequest, check};

/// The extend endpoint's model spellings, for "is not allowed (...)" messages.
pub const EXTEND_MODELS: &str = "fast, quality, lite";

/// The model the extend endpoint uses when none is sent (documented).
pub const EXTEND_DEFAULT_MODEL: Model = Model::Veo3Fast;

impl Model {
    /// How the extend endpoint spells the model.
    pub fn extend_name(self) -> &'static str {
        match self {
            Model::Veo3 => "quality",
            Model::Veo3Fast => "fast",
            Model::Veo3Lite => "lite",
        }
    }

    /// The model an extend body names.
    pub fn from_extend_name(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.extend_name() == s)
    }
}

/// The extend body, keys in byte order (the order serde_json's map keeps them in),
/// so that the written text is the JSON tree's.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "callBackUrl", skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    model: &'static str,
    prompt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seeds: Option<u32>,
    #[serde(rename = "taskId")]
    task_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    watermark: Option<&'a str>,
}

fn body<'a>(req: &'a GenerateRequest, task_id: &'a str) -> Body<'a> {
    Body {
        callback_url: req.callback_url.as_deref(),
        // Always sent, resolved: what runs never depends on the service's default.
        model: req.model.extend_name(),
        prompt: &req.prompt,
        seeds: req.seeds,
        task_id,
        watermark: req.watermark.as_deref(),
    }
}

/// The body that extends task `task_id` with the extend fields of `req`.
pub fn extend_body(req: &GenerateRequest, task_id: &str) -> Value {
    // A struct of strings and numbers always serializes.
    serde_json::to_value(body(req, task_id)).unwrap_or_default()
}

/// Appends the text of [`extend_body`] to `out`.
pub fn write_extend_body(req: &GenerateRequest, task_id: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and the body always serializes.
    let _ = serde_json::to_writer(out, &body(req, task_id));
}

/// The fingerprint of an extend job (16 hex digits, like a generation's): its body
/// without the parent's task id, which the results file records on its own, and the
/// id of the job it continues, so that pointing `extend:` elsewhere is a change and
/// two continuations of different videos with the same prompt never share it.
pub fn extend_fingerprint(req: &GenerateRequest, parent: &str) -> String {
    let mut text = Vec::with_capacity(64 + req.prompt.len() + parent.len());
    text.extend_from_slice(b"extend of ");
    // The id quoted as JSON: no id can end early and run into the body.
    let _ = serde_json::to_writer(&mut text, parent);
    text.push(b'\n');
    write_extend_body(req, "", &mut text);
    super::body::hex16(&Sha256::digest(&text))
}

/// An extend call as the service receives it: the task to extend, and the request
/// (its model in the generate spelling).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtendCall {
    pub task_id: String,
    pub request: GenerateRequest,
}

/// Reads an extend body with the rules the manifest applies to an extend job.
/// Unknown keys are ignored, as the live service ignores what it does not know.
pub fn check_extend_json(body: &Value) -> Result<ExtendCall, Vec<FieldIssue>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldIssue::body("the body must be a JSON object")]);
    };
    let mut issues = Vec::new();
    let task_id = match obj.get("taskId") {
        Some(Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
        _ => {
            issues.push(FieldIssue::body("taskId is required"));
            None
        }
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => Some(EXTEND_DEFAULT_MODEL),
        Some(Value::String(m)) => Model::from_extend_name(m).or_else(|| {
            issues.push(FieldIssue::new(
                Field::Model,
                format!("{m:?} is not allowed ({EXTEND_MODELS})"),
            ));
            None
        }),
        Some(_) => {
            issues.push(FieldIssue::new(Field::Model, "must be a string"));
            None
        }
    };
    let mut raw = RawRequest::default();
    for field in Field::extend_same() {
        let Some(value) = obj.get(field.api_name()).filter(|v| !v.is_null()) else {
            continue;
        };
        let set = match FieldValue::from_json(field.kind(), value) {
            Some(v) => raw.set(field, v),
            None => Err(format!("must be {}", field.kind().json_type())),
        };
        if let Err(message) = set {
            issues.push(FieldIssue::new(field, message));
        }
    }
    match check(&raw).result {
        Ok(request) if issues.is_empty() => Ok(ExtendCall {
            task_id: task_id.unwrap_or_default(),
            request: GenerateRequest {
                model: model.unwrap_or(EXTEND_DEFAULT_MODEL),
                ..request
            },
        }),
        Ok(_) => Err(issues),
        Err(more) => {
            issues.extend(more);
            Err(issues)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(prompt: &str, model: Model) -> GenerateRequest {
        let raw = RawRequest {
            prompt: Some(prompt.into()),
            ..RawRequest::default()
        };
        GenerateRequest {
            model,
            ..check(&raw).result.unwrap()
        }
    }

    #[test]
    fn the_body_spells_the_model_the_extend_way_and_sends_only_its_fields() {
        let mut r = req("she runs on", Model::Veo3);
        r.seeds = Some(12_345);
        r.watermark = Some("Brand".into());
        let body = extend_body(&r, "t1");
        assert_eq!(
            body.to_string(),
            r#"{"model":"quality","prompt":"she runs on","seeds":12345,"taskId":"t1","watermark":"Brand"}"#
        );
        let mut text = Vec::new();
        write_extend_body(&r, "t1", &mut text);
        assert_eq!(String::from_utf8(text).unwrap(), body.to_string());
        for m in Model::ALL {
            assert_eq!(Model::from_extend_name(m.extend_name()), Some(m));
        }
    }

    #[test]
    fn the_fingerprint_names_the_parent_not_its_task() {
        let r = req("on", Model::Veo3Fast);
        let a = extend_fingerprint(&r, "hero");
        assert_eq!(a.len(), 16);
        assert_eq!(a, extend_fingerprint(&r, "hero"));
        assert_ne!(a, extend_fingerprint(&r, "hero-2"), "another parent");
        assert_ne!(a, extend_fingerprint(&req("on", Model::Veo3Lite), "hero"));
        assert_ne!(a, r.fingerprint(), "never a generation's");
    }

    #[test]
    fn a_body_is_read_with_the_manifests_rules() {
        let call =
            check_extend_json(&json!({"taskId": "t", "prompt": "on", "model": "lite"})).unwrap();
        assert_eq!(call.task_id, "t");
        assert_eq!(call.request.model, Model::Veo3Lite);
        let call = check_extend_json(&json!({"taskId": "t", "prompt": "on"})).unwrap();
        assert_eq!(call.request.model, Model::Veo3Fast, "fast by default");
        let err: Vec<String> = check_extend_json(
            &json!({"prompt": " ", "model": "veo3", "seeds": 5, "callBackUrl": "ftp://x"}),
        )
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            err,
            [
                "taskId is required",
                "model: \"veo3\" is not allowed (fast, quality, lite)",
                "prompt: must not be blank",
                "seeds: 5 is out of range (an integer from 10000 to 99999)",
                "callBackUrl: \"ftp://x\" is not http or https (an absolute http or https URL)",
            ]
        );
    }
}
