//! The simulator's upload host: `POST /api/file-stream-upload` (multipart `file`,
//! `uploadPath`, `fileName`) answered in the live shape, the uploaded bytes served at
//! `data.downloadUrl` (`/tempfile/...` on the simulator's own loopback host) until
//! their lifetime (`upload_ttl`, scaled) ends, and the check generate makes of image
//! URLs it issued: one that has expired, or never existed, cannot be fetched (451).
//! A file uploaded under a name already taken replaces it, as on the live service.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::Endpoint;
use super::files::Stored;
use super::http::{Ctx, gate, log, reply};
use super::state::{Answer, MSG_IMAGE_FETCH, Sim};
use crate::manifest::images::ImageKind;

/// The largest upload the simulator takes (the runner's own cap is far below).
pub(crate) const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// Where `downloadUrl`s point, under the simulator's base URL.
const PREFIX: &str = "/tempfile/";
/// The account folder the live service puts before `uploadPath`.
const ACCOUNT: &str = "kieai/sim";

/// A 451 answer when one of `urls` is an upload of this simulator that is gone
/// (expired or never made): the service could not fetch it.
pub(crate) fn refuse_gone(sim: &Sim, urls: &[String]) -> Option<Answer> {
    let prefix = format!("{}{PREFIX}", sim.base_url);
    let gone = urls.iter().any(|u| {
        u.strip_prefix(&prefix)
            .map(|p| p.split(['?', '#']).next().unwrap_or(p))
            .is_some_and(|p| sim.uploads.get(p, upload_ttl(sim)).is_none())
    });
    gone.then(|| Answer::err(451, MSG_IMAGE_FETCH))
}

/// How long an upload lives, scaled; `None`: for ever.
fn upload_ttl(sim: &Sim) -> Option<std::time::Duration> {
    sim.config.upload_ttl.map(|ttl| sim.config.scaled(ttl))
}

/// A folder or file name the simulator will store under: no empty, `.` or `..`
/// segment, and nothing but letters, digits, `-`, `_` and `.`.
fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// `POST /api/file-stream-upload`.
pub(crate) async fn upload(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let e = Endpoint::Upload;
    let ctx = Ctx::default();
    match gate(&sim, e, &headers, &ctx) {
        Err(r) => return *r,
        Ok((_, true)) => tokio::time::sleep(sim.config.scaled(sim.config.faults.slow_delay)).await,
        Ok((_, false)) => {}
    }
    let refuse = |msg: &str| reply(&sim, e, Answer::err(400, msg), &ctx);
    let Ok(mut multipart) = multipart else {
        return refuse("the body must be multipart/form-data with a file");
    };
    let (mut file, mut upload_path, mut file_name) = (None, None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(err) => return refuse(&format!("the multipart body cannot be read: {err}")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let content_type = field.content_type().map(str::to_owned);
        let Ok(bytes) = field.bytes().await else {
            return refuse("the multipart body cannot be read");
        };
        match name.as_str() {
            "file" => file = Some((bytes, content_type)),
            "uploadPath" => upload_path = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "fileName" => file_name = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {}
        }
    }
    let Some((bytes, content_type)) = file.filter(|(b, _)| !b.is_empty()) else {
        return refuse("file is required");
    };
    let Some(upload_path) = upload_path.filter(|p| !p.trim().is_empty()) else {
        return refuse("uploadPath is required");
    };
    if !safe_path(&upload_path) {
        return refuse(
            "uploadPath must be a folder like images/uploads, without a leading or trailing slash",
        );
    }
    let kind = ImageKind::sniff(&bytes);
    let mime = kind
        .map(|k| k.mime().to_owned())
        .or(content_type)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let file_name = match file_name.filter(|n| !n.trim().is_empty()) {
        Some(n) if safe_path(&n) && !n.contains('/') => n,
        Some(_) => return refuse("fileName must be a plain file name"),
        None => {
            // The service picks a unique name when none is given.
            let millis = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let ext = kind.map_or("bin", ImageKind::extension);
            format!("{millis}-{:011x}.{ext}", fastrand::u64(..) >> 20)
        }
    };
    let path = format!("{ACCOUNT}/{upload_path}/{file_name}");
    let size = bytes.len();
    {
        let mut inner = sim.uploads.lock();
        inner.files.insert(
            path.clone(),
            Stored {
                bytes,
                mime: mime.clone(),
                at: Instant::now(),
            },
        );
        *inner.stored.entry(file_name.clone()).or_default() += 1;
    }
    log(&sim, e, Some(200), &ctx);
    let data = json!({
        "success": true,
        "fileName": file_name,
        "filePath": path,
        "downloadUrl": format!("{}{PREFIX}{path}", sim.base_url),
        "fileSize": size,
        "mimeType": mime,
        "uploadedAt": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    });
    let body =
        json!({"success": true, "code": 200, "msg": "File uploaded successfully", "data": data});
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `GET /tempfile/<path>`: an uploaded file while it lives (public, like the live
/// host's links); 404 once it is forgotten.
pub(crate) async fn serve(State(sim): State<Arc<Sim>>, Path(path): Path<String>) -> Response {
    let e = Endpoint::Files;
    sim.count_request(e);
    let ctx = Ctx::default();
    match sim.uploads.get(&path, upload_ttl(&sim)) {
        Some((bytes, mime)) => {
            log(&sim, e, Some(200), &ctx);
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        None => {
            log(&sim, e, Some(404), &ctx);
            (StatusCode::NOT_FOUND, "not found").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_folders_and_names_are_stored() {
        assert!(safe_path("images/veo-batch"));
        assert!(safe_path("a.png"));
        for bad in [
            "", "/images", "images/", "a//b", "../x", "a/./b", "a b", "a\\b",
        ] {
            assert!(!safe_path(bad), "{bad:?}");
        }
    }
}
