//! The Veo 3.1 generate request: its fields, their spellings, and the one set of
//! rules that both the manifest validator and the simulator apply to it.
//!
//! Rules come from the provider's page for `POST /api/v1/veo/generate` and its
//! current docs. A request arrives here as a [`RawRequest`] (field values as given, not
//! yet checked) and leaves as a [`GenerateRequest`] (every rule holds, defaults
//! resolved) or a list of [`FieldIssue`]s, one per broken rule, so that callers can
//! report them all.
//!
//! `fields` declares the fields once (names, kinds, the raw holder and its setter) and
//! the value enums; `rules` checks them; `body` is the checked request and its bytes on
//! the wire.

mod body;
mod extend;
mod fields;
mod rules;

pub use body::GenerateRequest;
pub use extend::{
    EXTEND_DEFAULT_MODEL, EXTEND_MODELS, ExtendCall, check_extend_json, extend_body,
    extend_fingerprint, write_extend_body,
};
pub use fields::{
    AspectRatio, ExtendUse, Field, FieldValue, GenerationType, Kind, Model, RawRequest, Resolution,
    Upgrade, did_you_mean, field_names,
};
pub(crate) use rules::check_parts;
pub use rules::{
    Checked, DEFAULT_ASPECT_RATIO, DEFAULT_MODEL, DURATION_ALLOWED, DURATIONS, FieldIssue,
    SEED_MAX, SEED_MIN, check, check_http_url,
};
