//! The simulator's HTTP surface: the service's paths, the CDN's user-agent check,
//! Bearer auth, injected faults, and answers in the `{code,msg,data}` envelope
//! (HTTP 200 with the code inside, or the code as the HTTP status).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};

use super::http::{Ctx, drop_connection, gate, log, pass_gate, reply, reply_late};
use super::state::{Admission, Answer, FULL_SUFFIX, FileState, Sim, file_task};
use super::{Endpoint, Kill, SAMPLE_MP4};
use crate::request::{
    FieldIssue, GenerateRequest, RawRequest, check, check_extend_json, extend_fingerprint,
};

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/v1/veo/generate", post(generate))
        .route("/api/v1/veo/extend", post(extend))
        .route("/api/v1/veo/record-info", get(record_info))
        .route("/api/v1/veo/get-1080p-video", get(get_1080p))
        .route("/api/v1/veo/get-4k-video", post(get_4k))
        .route("/api/v1/chat/credit", get(credit))
        .route("/api/v1/common/download-url", post(download_url))
        .route("/files/{name}", get(files))
        .route(
            "/api/file-stream-upload",
            post(super::uploads::upload).layer(axum::extract::DefaultBodyLimit::max(
                super::uploads::MAX_UPLOAD_BYTES,
            )),
        )
        .route("/tempfile/{*path}", get(super::uploads::serve))
        .fallback(not_found)
        .with_state(sim)
}

fn issues_msg(issues: &[FieldIssue]) -> String {
    let list: Vec<String> = issues.iter().map(ToString::to_string).collect();
    format!("invalid request: {}", list.join("; "))
}

async fn generate(
    State(sim): State<Arc<Sim>>,
    kill: Option<Extension<Kill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = Endpoint::Generate;
    // Read the body before the gate, so that even a refused call is logged with
    // its prompt and fingerprint; it is answered only in the service's order.
    let value = serde_json::from_slice::<Value>(&body)
        .map_err(|err| Answer::err(422, format!("the body is not valid JSON: {err}")));
    let checked = value.as_ref().map_err(Clone::clone).and_then(|value| {
        let raw =
            RawRequest::from_json(value).map_err(|issues| Answer::err(422, issues_msg(&issues)))?;
        check(&raw)
            .result
            .map_err(|issues| Answer::err(422, issues_msg(&issues)))
    });
    let ctx = Ctx {
        prompt: value
            .as_ref()
            .ok()
            .and_then(|v| v.get("prompt"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        fingerprint: checked.as_ref().ok().map(GenerateRequest::fingerprint),
        ..Ctx::default()
    };
    let caller = match gate(&sim, e, &headers, &ctx) {
        Ok((caller, _)) => caller,
        Err(r) => return *r,
    };
    let (value, req) = match (value, checked) {
        (Ok(value), Ok(req)) => (value, req),
        (Err(answer), _) | (_, Err(answer)) => return reply(&sim, e, answer, &ctx),
    };
    // An image this simulator's upload host issued, and has forgotten since.
    if let Some(answer) = super::uploads::refuse_gone(&sim, &req.image_urls) {
        return reply(&sim, e, answer, &ctx);
    }
    let admission = sim.admit(caller, &req, &value);
    answer_admission(&sim, kill, e, admission, ctx).await
}

/// The answer to a call that creates a task (generate, extend), as its admission
/// decided: refused, dropped before or after the task exists, late, or on time.
async fn answer_admission(
    sim: &Sim,
    kill: Option<Extension<Kill>>,
    e: Endpoint,
    admission: Admission,
    mut ctx: Ctx,
) -> Response {
    match admission {
        Admission::Refused(answer) => reply(sim, e, answer, &ctx),
        Admission::DropBefore => drop_connection(sim, kill, e, &ctx).await,
        Admission::Created {
            task_id,
            ready,
            drop_after,
            slow,
        } => {
            ctx.task_id = Some(task_id.clone());
            ctx.created = true;
            ctx.ready = Some(ready);
            if drop_after {
                return drop_connection(sim, kill, e, &ctx).await;
            }
            let answer = Answer::ok(json!({ "taskId": task_id }));
            if slow {
                return reply_late(sim, e, answer, &ctx).await;
            }
            reply(sim, e, answer, &ctx)
        }
    }
}

/// `POST /api/v1/veo/extend`: a new task continuing a finished video of this
/// account, refused (422) for any other (unknown, unfinished, failed, or with its
/// 1080p version made); faults, the rate window and credits as for generate.
async fn extend(
    State(sim): State<Arc<Sim>>,
    kill: Option<Extension<Kill>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = Endpoint::Extend;
    let value = serde_json::from_slice::<Value>(&body)
        .map_err(|err| Answer::err(422, format!("the body is not valid JSON: {err}")));
    let checked = value.as_ref().map_err(Clone::clone).and_then(|value| {
        check_extend_json(value).map_err(|issues| Answer::err(422, issues_msg(&issues)))
    });
    let ctx = Ctx {
        prompt: value
            .as_ref()
            .ok()
            .and_then(|v| v.get("prompt"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        fingerprint: checked
            .as_ref()
            .ok()
            .map(|c| extend_fingerprint(&c.request, &c.task_id)),
        extends: checked.as_ref().ok().map(|c| c.task_id.clone()),
        ..Ctx::default()
    };
    let caller = match gate(&sim, e, &headers, &ctx) {
        Ok((caller, _)) => caller,
        Err(r) => return *r,
    };
    let (value, call) = match (value, checked) {
        (Ok(value), Ok(call)) => (value, call),
        (Err(answer), _) | (_, Err(answer)) => return reply(&sim, e, answer, &ctx),
    };
    let admission = sim.admit_extend(caller, &call, &value);
    answer_admission(&sim, kill, e, admission, ctx).await
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn task_param(params: &Params) -> Result<String, Answer> {
    let Ok(Query(params)) = params else {
        return Err(Answer::err(422, "the query string is not valid"));
    };
    match params.get("taskId") {
        Some(id) if !id.is_empty() => Ok(id.clone()),
        _ => Err(Answer::err(422, "taskId is required")),
    }
}

fn index_param(v: Option<&Value>) -> Result<u32, Answer> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Answer::err(422, "index must be a non-negative integer")),
    }
}

async fn record_info(State(sim): State<Arc<Sim>>, headers: HeaderMap, params: Params) -> Response {
    let e = Endpoint::RecordInfo;
    let ctx = task_param(&params)
        .map(|id| Ctx::task(&id))
        .unwrap_or_default();
    let caller = match pass_gate(&sim, e, &headers, &ctx).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    match task_param(&params) {
        Ok(id) => {
            let answer = sim
                .admit_poll(caller)
                .unwrap_or_else(|| sim.record_info(caller, &id));
            reply(&sim, e, answer, &Ctx::task(&id))
        }
        Err(answer) => reply(&sim, e, answer, &Ctx::default()),
    }
}

async fn get_1080p(State(sim): State<Arc<Sim>>, headers: HeaderMap, params: Params) -> Response {
    let e = Endpoint::Get1080p;
    let ctx = task_param(&params)
        .map(|id| Ctx::task(&id))
        .unwrap_or_default();
    let caller = match pass_gate(&sim, e, &headers, &ctx).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let id = match task_param(&params) {
        Ok(id) => id,
        Err(answer) => return reply(&sim, e, answer, &Ctx::default()),
    };
    let index = params
        .as_ref()
        .ok()
        .and_then(|Query(p)| p.get("index"))
        .map(|s| Value::from(s.as_str()));
    let answer = match index_param(index.as_ref()) {
        Ok(index) => sim.get_1080p(caller, &id, index),
        Err(answer) => answer,
    };
    reply(&sim, e, answer, &Ctx::task(&id))
}

async fn get_4k(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let e = Endpoint::Get4k;
    let caller = match pass_gate(&sim, e, &headers, &Ctx::default()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => {
            let answer = Answer::err(422, format!("the body is not valid JSON: {err}"));
            return reply(&sim, e, answer, &Ctx::default());
        }
    };
    let Some(id) = value.get("taskId").and_then(Value::as_str) else {
        return reply(
            &sim,
            e,
            Answer::err(422, "taskId is required"),
            &Ctx::default(),
        );
    };
    let callback = value
        .get("callBackUrl")
        .and_then(Value::as_str)
        .filter(|u| crate::request::check_http_url(u).is_ok())
        .map(str::to_owned);
    let answer = match index_param(value.get("index")) {
        Ok(index) => sim.get_4k(caller, id, index, callback),
        Err(answer) => answer,
    };
    reply(&sim, e, answer, &Ctx::task(id))
}

async fn credit(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let e = Endpoint::Credit;
    let caller = match pass_gate(&sim, e, &headers, &Ctx::default()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let credits = sim.credits(caller);
    // An integer when whole, as the service usually sends it.
    let data = if credits.fract() == 0.0 && credits.abs() < 9.0e15 {
        #[expect(clippy::cast_possible_truncation, reason = "whole and in range")]
        Value::from(credits as i64)
    } else {
        Value::from(credits)
    };
    reply(&sim, e, Answer::ok(data), &Ctx::default())
}

/// `POST /api/v1/common/download-url`: a fresh link for one of our result URLs.
async fn download_url(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let e = Endpoint::DownloadUrl;
    let caller = match pass_gate(&sim, e, &headers, &Ctx::default()).await {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let url = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_owned));
    let answer = match url {
        Some(url) => sim.download_url(caller, &url),
        None => Answer::err(422, "url is required"),
    };
    reply(&sim, e, answer, &Ctx::default())
}

/// Result files: no auth (result URLs are public links), only per-endpoint faults.
/// An expired URL answers 410 unless it carries a fresh `link` from download-url.
async fn files(State(sim): State<Arc<Sim>>, Path(name): Path<String>, params: Params) -> Response {
    let e = Endpoint::Files;
    sim.count_request(e);
    let faults = &sim.config.faults;
    let ctx = file_task(&name).map(Ctx::task).unwrap_or_default();
    if sim.draw(faults.http_500.for_endpoint(e)) {
        log(&sim, e, Some(500), &ctx);
        return (StatusCode::INTERNAL_SERVER_ERROR, "server error").into_response();
    }
    if sim.draw(faults.http_429.for_endpoint(e)) {
        log(&sim, e, Some(429), &ctx);
        return (StatusCode::TOO_MANY_REQUESTS, "too many requests").into_response();
    }
    let link = params
        .as_ref()
        .ok()
        .and_then(|Query(p)| p.get("link"))
        .map(|l| l.parse::<u64>().unwrap_or(0));
    match sim.file(&name, link) {
        FileState::Ready => {}
        FileState::Missing => {
            log(&sim, e, Some(404), &ctx);
            return (StatusCode::NOT_FOUND, "not found").into_response();
        }
        FileState::Expired => {
            log(&sim, e, Some(410), &ctx);
            return (StatusCode::GONE, "this link has expired").into_response();
        }
    }
    log(&sim, e, Some(200), &ctx);
    let bytes = match (name.ends_with(FULL_SUFFIX), file_task(&name)) {
        (true, Some(task)) => Bytes::from(super::stitched_mp4(task)),
        _ => Bytes::from_static(SAMPLE_MP4),
    };
    ([(header::CONTENT_TYPE, "video/mp4")], bytes).into_response()
}

async fn not_found() -> Response {
    let body = json!({ "code": 404, "msg": "not found", "data": null });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
