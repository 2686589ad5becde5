//! A simulated task: how it ends (success, or one of the failures the service
//! shows), its timeline, and its kind as its sealed id carries it, so that a later
//! simulator re-derives it.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::ids;
use crate::request::AspectRatio;

/// What an extend task's id holds in place of a resolution (the code past the
/// resolutions): an extend continues a 720p video, and says it is an extend.
pub(super) const EXTEND_CODE: u8 = 3;

/// `at` plus `d`, or `at` where that cannot be told (a span past the clock's range).
pub(super) fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at)
}

/// How a failed task fails: (successFlag, errorCode, errorMessage, only at the end).
/// The delayed ones stand for moderation, which rejects after a normal-looking run.
pub(super) const FAILURES: [(u8, i64, &str, bool); 4] = [
    (
        2,
        400,
        "Your prompt was flagged by the content policy after review",
        true,
    ),
    (
        2,
        400,
        "Failed to fetch the image from imageUrls; check that it is public",
        false,
    ),
    (
        3,
        501,
        "Generation failed upstream; the task was created but produced no video",
        false,
    ),
    (
        2,
        500,
        "Internal error during generation, please try again",
        true,
    ),
];

#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Success,
    Failure {
        flag: u8,
        code: i64,
        message: &'static str,
    },
}

impl Outcome {
    /// The outcome as an id holds it: 0 for success, else 1 + its place in `FAILURES`.
    pub(super) fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure { message, .. } => FAILURES
                .iter()
                .position(|f| f.2 == message)
                .and_then(|i| u8::try_from(i + 1).ok())
                .unwrap_or(1),
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Outcome> {
        match code {
            0 => Some(Outcome::Success),
            n => {
                let (flag, code, message, _) = *FAILURES.get(usize::from(n) - 1)?;
                Some(Outcome::Failure {
                    flag,
                    code,
                    message,
                })
            }
        }
    }

    /// Whether the failure shows only at the end of the generation time.
    pub(super) fn shows_early(self) -> bool {
        matches!(self, Outcome::Failure { message, .. } if FAILURES.iter().any(|f| f.2 == message && !f.3))
    }
}

/// The resolution a task without one in its request renders at: the service's default.
pub(super) const DEFAULT_RESOLUTION: &str = "720p";
/// Resolutions and models as ids hold them (by place; the last code is "other").
pub(super) const RESOLUTIONS: [&str; 3] = ["720p", "1080p", "4k"];
pub(super) const MODELS: [&str; 3] = ["veo3", "veo3_fast", "veo3_lite"];
pub(super) const ASPECTS: [AspectRatio; 3] = [
    AspectRatio::Landscape,
    AspectRatio::Portrait,
    AspectRatio::Auto,
];

pub(super) fn code_of<T: PartialEq>(table: &[T], value: &T) -> u8 {
    let at = table.iter().position(|v| v == value).unwrap_or(table.len());
    u8::try_from(at).unwrap_or(u8::MAX)
}

#[derive(Debug)]
pub(super) struct Task {
    pub(super) param_json: String,
    pub(super) aspect: AspectRatio,
    pub(super) resolution: String,
    pub(super) created: Instant,
    pub(super) created_wall: SystemTime,
    pub(super) ends: Instant,
    pub(super) outcome: Outcome,
    /// What this simulator charged for it (0 for a task an earlier one created).
    pub(super) charged: f64,
    pub(super) settled: bool,
    pub(super) hd_ready: Instant,
    pub(super) hd_charged: bool,
    pub(super) uhd_ready: Option<Instant>,
    /// An extend task: its `fullResultUrls` is the stitched video.
    pub(super) extend: bool,
    /// The index of the account that made it (see `accounts`).
    pub(super) account: usize,
}

impl Task {
    /// The timeline and kind of a task, from the fields its id carries; `None` when
    /// they name no outcome or aspect ratio this simulator knows.
    pub(super) fn from_sealed(
        sealed: &ids::Sealed,
        created: Instant,
        created_wall: SystemTime,
        param_json: Option<String>,
    ) -> Option<Task> {
        let outcome = Outcome::from_code(sealed.outcome)?;
        let aspect = *ASPECTS.get(usize::from(sealed.aspect))?;
        let extend = sealed.resolution == EXTEND_CODE;
        let resolution = RESOLUTIONS
            .get(usize::from(sealed.resolution))
            .copied()
            .unwrap_or(DEFAULT_RESOLUTION);
        let generation = ids::decode_span(sealed.generation);
        let ends = later(
            created,
            if outcome.shows_early() {
                generation / 10
            } else {
                generation
            },
        );
        let param_json = param_json.unwrap_or_else(|| {
            // The prompt is not in the id: an earlier simulator's task says what it can.
            let mut p = json!({ "aspect_ratio": aspect.as_str(), "resolution": resolution });
            if let Some(model) = MODELS.get(usize::from(sealed.model)) {
                p["model"] = Value::from(*model);
            }
            p.to_string()
        });
        Some(Task {
            param_json,
            aspect,
            resolution: resolution.to_owned(),
            created,
            created_wall,
            ends,
            outcome,
            charged: 0.0,
            settled: true,
            hd_ready: later(ends, ids::decode_span(sealed.hd)),
            hd_charged: false,
            uhd_ready: None,
            extend,
            account: 0,
        })
    }
}
