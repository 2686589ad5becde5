//! What every simulated call goes through: the CDN's user-agent check, Bearer
//! auth, injected faults and slow answers, the request log, and answers in the
//! configured error style. The service's endpoints ([`super::handlers`]) and its
//! upload host ([`super::uploads`]) both build on it.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use tokio::time::Instant;

use super::state::{Answer, Caller, LogLine, Sim};
use super::{Endpoint, ErrorStyle, Kill};

/// What the request log says about one call besides its endpoint and code.
#[derive(Debug, Default)]
pub(super) struct Ctx {
    pub prompt: Option<String>,
    pub fingerprint: Option<String>,
    pub task_id: Option<String>,
    /// For an extend: the task it continues.
    pub extends: Option<String>,
    pub created: bool,
    /// When the created task's video (or failure) is ready.
    pub ready: Option<SystemTime>,
}

impl Ctx {
    pub fn task(id: &str) -> Ctx {
        Ctx {
            task_id: Some(id.to_owned()),
            ..Ctx::default()
        }
    }
}

pub(super) fn log(sim: &Sim, endpoint: Endpoint, code: Option<i64>, ctx: &Ctx) {
    tracing::debug!(
        endpoint = endpoint.name(),
        code,
        task_id = ctx.task_id.as_deref(),
        "simulator answered"
    );
    sim.count_answer(code);
    sim.write_log(&LogLine {
        ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        endpoint: endpoint.name(),
        prompt: ctx.prompt.as_deref(),
        fingerprint: ctx.fingerprint.as_deref(),
        task_id: ctx.task_id.as_deref(),
        extends: ctx.extends.as_deref(),
        code,
        task_created: ctx.created,
        ready_at: ctx
            .ready
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        dropped: code.is_none(),
    });
}

/// Sends `answer` in the configured error style, and logs it.
pub(super) fn reply(sim: &Sim, endpoint: Endpoint, answer: Answer, ctx: &Ctx) -> Response {
    log(sim, endpoint, Some(answer.code), ctx);
    respond(sim, answer)
}

/// A call that created a task and answers late: logged now, answered after the
/// delay. A client that dies meanwhile drops the connection and the handler with
/// it, and the log must still say the task was created.
pub(super) async fn reply_late(
    sim: &Sim,
    endpoint: Endpoint,
    answer: Answer,
    ctx: &Ctx,
) -> Response {
    log(sim, endpoint, Some(answer.code), ctx);
    slow_down(sim).await;
    respond(sim, answer)
}

/// `answer` in the configured error style.
fn respond(sim: &Sim, answer: Answer) -> Response {
    let status = match sim.config.error_style {
        _ if answer.code == 200 => StatusCode::OK,
        ErrorStyle::Envelope => StatusCode::OK,
        ErrorStyle::HttpStatus => u16::try_from(answer.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let body = json!({ "code": answer.code, "msg": answer.msg, "data": answer.data });
    (status, Json(body)).into_response()
}

/// Drops the connection this request came on, without an answer.
pub(super) async fn drop_connection(
    sim: &Sim,
    kill: Option<Extension<Kill>>,
    endpoint: Endpoint,
    ctx: &Ctx,
) -> Response {
    let Some(Extension(Kill(token))) = kill else {
        // Served outside our accept loop: the closest thing is a server error.
        return reply(sim, endpoint, Answer::err(500, "connection dropped"), ctx);
    };
    log(sim, endpoint, None, ctx);
    token.cancel();
    // The connection task drops this future with the connection.
    std::future::pending().await
}

const MSG_MAINTENANCE: &str = "The service is under maintenance, please try again later";

/// The checks every API call passes first. `Ok((caller, slow))`: the key's account,
/// and whether to answer late.
pub(super) fn gate(
    sim: &Sim,
    endpoint: Endpoint,
    headers: &HeaderMap,
    ctx: &Ctx,
) -> Result<(Caller, bool), Box<Response>> {
    sim.count_request(endpoint);
    if !headers.contains_key(header::USER_AGENT) {
        log(sim, endpoint, Some(403), ctx);
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "error code: 1010").into_response(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(caller) = sim.caller(given) else {
        let answer = Answer::err(401, "You do not have access permissions");
        return Err(Box::new(reply(sim, endpoint, answer, ctx)));
    };
    sim.count_caller(caller, endpoint);
    let faults = &sim.config.faults;
    let window_left = sim.maintenance_left(Instant::now());
    if let (Some(left), true) = (window_left, faults.maintenance_retry_after) {
        let answer = Answer::err(455, MSG_MAINTENANCE);
        let mut response = reply(sim, endpoint, answer, ctx);
        // Whole seconds, rounded up, so a retry lands after the window.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return Err(Box::new(response));
    }
    let answer = if window_left.is_some() || sim.draw(faults.http_455.for_endpoint(endpoint)) {
        Some(Answer::err(455, MSG_MAINTENANCE))
    } else if sim.draw(faults.http_500.for_endpoint(endpoint)) {
        Some(Answer::err(500, "Server error, please try again later"))
    } else if sim.draw(faults.http_429.for_endpoint(endpoint)) {
        Some(Answer::err(
            429,
            "Your call frequency is too high. Please try again later.",
        ))
    } else {
        None
    };
    if let Some(answer) = answer {
        return Err(Box::new(reply(sim, endpoint, answer, ctx)));
    }
    // A generate or extend call is slow after its task exists; that is decided in
    // `admit`.
    let slow = !matches!(endpoint, Endpoint::Generate | Endpoint::Extend) && sim.draw(faults.slow);
    Ok((caller, slow))
}

pub(super) async fn slow_down(sim: &Sim) {
    tokio::time::sleep(sim.config.scaled(sim.config.faults.slow_delay)).await;
}

/// [`gate`], then the slow-answer delay when one was drawn: the start of every
/// call but generate and extend, whose delay comes after their task exists.
pub(super) async fn pass_gate(
    sim: &Sim,
    endpoint: Endpoint,
    headers: &HeaderMap,
    ctx: &Ctx,
) -> Result<Caller, Response> {
    let (caller, slow) = gate(sim, endpoint, headers, ctx).map_err(|r| *r)?;
    if slow {
        slow_down(sim).await;
    }
    Ok(caller)
}
