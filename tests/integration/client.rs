//! The kie.ai client against small stub servers on 127.0.0.1:0: headers, every
//! transport failure class, Retry-After, downloads, and that the key never leaks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use veo_batch::api::{
    ApiError, ApiKey, Client, ClientConfig, ErrorClass, TaskState, Upgrade4k, Upgrade1080,
};

const KEY: &str = "test-key-0123456789abcdef";

/// One request as a stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    auth: Option<String>,
    agent: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn record(log: &Log, uri: &Uri, headers: &HeaderMap) {
    let h = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    log.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        auth: h(header::AUTHORIZATION),
        agent: h(header::USER_AGENT),
    });
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A raw server that answers every connection with `reply` and then closes it,
/// for answers axum would refuse to send (cut-short bodies).
async fn serve_raw(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                // Read the request head before answering, so the client has sent it.
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(reply).await;
                let _ = sock.flush().await;
                // Dropping the socket closes it mid-answer.
            });
        }
    });
    addr
}

fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(format!("http://{addr}"), ApiKey::new(KEY))
    }
}

fn client(addr: SocketAddr) -> Client {
    Client::new(config(addr)).unwrap()
}

/// Every formatting of an error a user or a log could see.
fn assert_no_key(e: &ApiError) {
    for shown in [e.to_string(), format!("{e:?}"), e.message.clone()] {
        assert!(!shown.contains(KEY), "key leaked: {shown}");
    }
}

fn stub_api(log: Log) -> Router {
    async fn generate(
        State(log): State<Log>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> axum::Json<Value> {
        record(&log, &uri, &headers);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let prompt = body["prompt"].as_str().unwrap_or("").to_owned();
        axum::Json(
            json!({"code": 200, "msg": "success", "data": {"taskId": format!("veo_{prompt}")}}),
        )
    }
    async fn record_info(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> &'static str {
        record(&log, &uri, &headers);
        r#"{"code":200,"msg":"success","data":{"taskId":"veo_t","successFlag":1,
            "response":{"resultUrls":"[\"http://example.com/v.mp4\"]"},"createTime":1749205500000,
            "completeTime":null,"errorCode":null,"errorMessage":null,"somethingNew":[1]}}"#
    }
    async fn hd(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> &'static str {
        record(&log, &uri, &headers);
        r#"{"code":400,"msg":"1080P is processing. It should be ready in 1-2 minutes. Please check back shortly.","data":null}"#
    }
    async fn uhd(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: String) -> Response {
        record(&log, &uri, &headers);
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(body, json!({"taskId": "veo_t", "index": 0}));
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"code":422,"msg":"The video has been generated successfully","data":{"taskId":"veo_t","resultUrls":["http://example.com/4k.mp4"],"imageUrls":[]}}"#,
        )
            .into_response()
    }
    async fn credit(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> &'static str {
        record(&log, &uri, &headers);
        r#"{"code":200,"msg":"success","data":87.5}"#
    }
    Router::new()
        .route("/api/v1/veo/generate", post(generate))
        .route("/api/v1/veo/record-info", get(record_info))
        .route("/api/v1/veo/get-1080p-video", get(hd))
        .route("/api/v1/veo/get-4k-video", post(uhd))
        .route("/api/v1/chat/credit", get(credit))
        .with_state(log)
}

#[tokio::test]
async fn every_endpoint_sends_bearer_and_user_agent() {
    let log = Log::default();
    let addr = serve(stub_api(log.clone())).await;
    // A trailing slash on the base must not double the slash in paths.
    let c = Client::new(ClientConfig {
        base_url: format!("http://{addr}/"),
        ..config(addr)
    })
    .unwrap();

    let task = c.generate(&json!({"prompt": "city"})).await.unwrap();
    assert_eq!(task, "veo_city");
    assert_eq!(
        c.record_info("veo_t").await.unwrap(),
        TaskState::Succeeded {
            result_urls: vec!["http://example.com/v.mp4".into()],
            full_result_urls: Vec::new(),
        }
    );
    assert!(matches!(
        c.get_1080p("veo_t", 2).await.unwrap(),
        Upgrade1080::Processing(m) if m.contains("1080P is processing")
    ));
    assert_eq!(
        c.get_4k("veo_t", 0).await.unwrap(),
        Upgrade4k::Ready(vec!["http://example.com/4k.mp4".into()])
    );
    assert_eq!(c.credit().await.unwrap(), 87.5);

    let seen = log.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/veo/generate",
            "/api/v1/veo/record-info",
            "/api/v1/veo/get-1080p-video",
            "/api/v1/veo/get-4k-video",
            "/api/v1/chat/credit"
        ]
    );
    assert_eq!(seen[1].query, "taskId=veo_t");
    assert_eq!(seen[2].query, "taskId=veo_t&index=2");
    let agent = format!("veo-batch/{}", env!("CARGO_PKG_VERSION"));
    for s in &seen {
        assert_eq!(
            s.auth.as_deref(),
            Some(format!("Bearer {KEY}").as_str()),
            "{s:?}"
        );
        assert_eq!(s.agent.as_deref(), Some(agent.as_str()), "{s:?}");
    }
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    // Bind to learn a free port, then close it: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = client(addr)
        .generate(&json!({"prompt": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert_eq!(e.code, None);
    assert!(
        e.message
            .starts_with(&format!("generate: could not connect to {addr}: ")),
        "{e}"
    );
    assert_no_key(&e);
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_in_doubt() {
    async fn stall() -> &'static str {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "{}"
    }
    let addr = serve(Router::new().route("/api/v1/veo/generate", post(stall))).await;
    let c = Client::new(ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..config(addr)
    })
    .unwrap();
    let e = c.generate(&json!({"prompt": "x"})).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::InDoubt, "{e}");
    assert!(e.message.contains("no complete answer"), "{e}");
    assert_no_key(&e);
}

#[tokio::test]
async fn connection_closed_mid_answer_is_in_doubt() {
    let addr = serve_raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"code\":200,\"msg\":\"succ",
    )
    .await;
    let e = client(addr)
        .generate(&json!({"prompt": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::InDoubt, "{e}");
    assert_no_key(&e);
}

#[tokio::test]
async fn connection_closed_without_answer_is_in_doubt() {
    let addr = serve_raw(b"").await;
    let e = client(addr).record_info("t").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::InDoubt, "{e}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    async fn limited() -> Response {
        (
            [(header::RETRY_AFTER, "7")],
            r#"{"code":429,"msg":"rate limited","data":null}"#,
        )
            .into_response()
    }
    async fn down() -> Response {
        // An HTTP date far in the future is capped, not obeyed for years.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "Fri, 31 Dec 2100 23:59:59 GMT")],
            "<html><title>503 Service Temporarily Unavailable</title></html>",
        )
            .into_response()
    }
    let app = Router::new()
        .route("/api/v1/veo/generate", post(limited))
        .route("/api/v1/chat/credit", get(down));
    let c = client(serve(app).await);
    let e = c.generate(&json!({})).await.unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Retryable, Some(429)));
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    let e = c.credit().await.unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Retryable, Some(503)));
    assert_eq!(e.retry_after, Some(Duration::from_secs(24 * 60 * 60)));
    assert!(
        e.message.contains("503 Service Temporarily Unavailable"),
        "{e}"
    );
}

#[tokio::test]
async fn envelope_errors_in_http_200_and_record_null() {
    async fn answer(uri: Uri) -> String {
        let code = uri
            .query()
            .unwrap_or("")
            .trim_start_matches("taskId=")
            .to_owned();
        let msg = if code == "422" {
            "record is null"
        } else {
            "nope"
        };
        format!(r#"{{"code":{code},"msg":"{msg}","data":null}}"#)
    }
    let c = client(serve(Router::new().route("/api/v1/veo/record-info", get(answer))).await);
    for (code, class) in [
        ("401", ErrorClass::Auth),
        ("402", ErrorClass::Credits),
        ("429", ErrorClass::Retryable),
        ("455", ErrorClass::Retryable),
        ("501", ErrorClass::Failed),
        ("422", ErrorClass::Failed),
    ] {
        let e = c.record_info(code).await.unwrap_err();
        assert_eq!(e.class, class, "{code}: {e}");
        assert_eq!(e.code.map(|c| c.to_string()).as_deref(), Some(code));
        assert_eq!(e.is_record_null(), code == "422");
    }
}

#[tokio::test]
async fn cdn_403_is_auth() {
    async fn cdn() -> Response {
        (StatusCode::FORBIDDEN, "error code: 1010").into_response()
    }
    let c = client(serve(Router::new().route("/api/v1/chat/credit", get(cdn))).await);
    let e = c.credit().await.unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Auth, Some(403)));
    assert!(
        e.message.contains("KIE_API_KEY") && e.message.contains("CDN"),
        "{e}"
    );
}

#[tokio::test]
async fn the_key_never_shows_in_errors_even_when_echoed() {
    // A server that quotes the Authorization header back in its messages.
    async fn echo(headers: HeaderMap) -> Response {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = json!({"code": 401, "msg": format!("invalid key {auth}"), "data": null});
        axum::Json(body).into_response()
    }
    async fn echo_html(headers: HeaderMap) -> Response {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (StatusCode::FORBIDDEN, format!("denied for {auth}")).into_response()
    }
    let app = Router::new()
        .route("/api/v1/veo/generate", post(echo))
        .route("/api/v1/chat/credit", get(echo_html));
    let c = client(serve(app).await);
    let e = c.generate(&json!({})).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("<redacted>"), "{e}");
    assert_no_key(&e);
    let e = c.credit().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_no_key(&e);
    assert!(!format!("{c:?}").contains(KEY));
    assert!(!format!("{:?}", config(([127, 0, 0, 1], 1).into())).contains(KEY));
}

fn video_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn download_streams_to_dest_without_the_key() {
    let log = Log::default();
    async fn file(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> Vec<u8> {
        record(&log, &uri, &headers);
        video_bytes(300_000)
    }
    let addr = serve(
        Router::new()
            .route("/v/a.mp4", get(file))
            .with_state(log.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("videos/nested/a.mp4");
    let n = client(addr)
        .download(&format!("http://{addr}/v/a.mp4?sig=abc"), &dest)
        .await
        .unwrap();
    assert_eq!(n, 300_000);
    assert_eq!(std::fs::read(&dest).unwrap(), video_bytes(300_000));
    assert!(!dest.with_file_name("a.mp4.part").exists());
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].auth, None, "the key was sent to a file host");
    assert!(
        seen[0]
            .agent
            .as_deref()
            .unwrap_or("")
            .starts_with("veo-batch/")
    );
}

#[tokio::test]
async fn download_follows_a_redirect_without_sending_the_key() {
    let log = Log::default();
    async fn file(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> Vec<u8> {
        record(&log, &uri, &headers);
        video_bytes(1000)
    }
    let target = serve(
        Router::new()
            .route("/f.mp4", get(file))
            .with_state(log.clone()),
    )
    .await;
    let hop = serve(Router::new().route(
        "/r.mp4",
        get(move || async move {
            (
                StatusCode::FOUND,
                [(header::LOCATION, format!("http://{target}/f.mp4"))],
            )
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("r.mp4");
    let n = client(hop)
        .download(&format!("http://{hop}/r.mp4"), &dest)
        .await
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(log.lock().unwrap()[0].auth, None);

    // A redirect loop gives up instead of spinning.
    let looping = serve(Router::new().route(
        "/loop",
        get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
    ))
    .await;
    let e = client(looping)
        .download(
            &format!("http://{looping}/loop"),
            &dest.with_file_name("l.mp4"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Failed, "{e}");
    assert!(!dest.with_file_name("l.mp4").exists());
}

#[tokio::test]
async fn truncated_download_leaves_no_file() {
    let addr = serve_raw(
        b"HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: 1000\r\n\r\n0123456789",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("t.mp4");
    let e = client(addr)
        .download(&format!("http://{addr}/t.mp4"), &dest)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert!(!dest.exists());
    assert!(!dir.path().join("t.mp4.part").exists());
}

#[tokio::test]
async fn download_over_the_cap_is_refused() {
    async fn sized() -> Vec<u8> {
        video_bytes(5000)
    }
    // No Content-Length: the cap must hold while streaming too.
    async fn chunked() -> Body {
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(video_bytes(1000)));
        Body::from_stream(futures::stream::iter(chunks))
    }
    let addr = serve(
        Router::new()
            .route("/sized.mp4", get(sized))
            .route("/chunked.mp4", get(chunked)),
    )
    .await;
    let c = Client::new(ClientConfig {
        max_download_bytes: 4096,
        ..config(addr)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["sized.mp4", "chunked.mp4"] {
        let dest = dir.path().join(name);
        let e = c
            .download(&format!("http://{addr}/{name}"), &dest)
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Failed, "{name}: {e}");
        assert!(e.message.contains("4096-byte limit"), "{e}");
        assert!(!dest.exists());
        assert!(!dir.path().join(format!("{name}.part")).exists());
    }
}

#[tokio::test]
async fn download_http_errors_are_classified_by_status() {
    async fn gone() -> Response {
        (StatusCode::NOT_FOUND, "no such file").into_response()
    }
    async fn forbidden() -> Response {
        (StatusCode::FORBIDDEN, "AccessDenied").into_response()
    }
    async fn busy() -> Response {
        (StatusCode::BAD_GATEWAY, "<html><title>bad</title></html>").into_response()
    }
    let addr = serve(
        Router::new()
            .route("/gone", get(gone))
            .route("/forbidden", get(forbidden))
            .route("/busy", get(busy)),
    )
    .await;
    let c = client(addr);
    let dir = tempfile::tempdir().unwrap();
    for (path, class, code) in [
        ("gone", ErrorClass::Failed, 404),
        // A 403 from a file host is an expired link, not our key: never Auth.
        ("forbidden", ErrorClass::Failed, 403),
        ("busy", ErrorClass::Retryable, 502),
    ] {
        let dest = dir.path().join(path);
        let e = c
            .download(&format!("http://{addr}/{path}"), &dest)
            .await
            .unwrap_err();
        assert_eq!((e.class, e.code), (class, Some(code)), "{path}: {e}");
        assert!(!dest.exists());
    }
}

/// A file host whose first URL has expired (410) and a download-url endpoint that
/// hands out `/fresh.mp4`, or refuses with 422 when `refuse` is set.
async fn expiring_host(refuse: bool) -> (SocketAddr, Log) {
    async fn expired() -> Response {
        (StatusCode::GONE, "expired").into_response()
    }
    async fn fresh() -> Vec<u8> {
        b"fresh video".to_vec()
    }
    async fn download_url(
        State((log, refuse)): State<(Log, bool)>,
        uri: Uri,
        headers: HeaderMap,
        body: String,
    ) -> String {
        record(&log, &uri, &headers);
        let asked: Value = serde_json::from_str(&body).unwrap();
        assert!(
            asked["url"].as_str().unwrap().ends_with("/old.mp4?sig=1"),
            "{body}"
        );
        let host = headers.get(header::HOST).unwrap().to_str().unwrap();
        if refuse {
            json!({"code": 422, "msg": "url is wrong", "data": null}).to_string()
        } else {
            json!({"code": 200, "msg": "success", "data": format!("http://{host}/fresh.mp4")})
                .to_string()
        }
    }
    let log = Log::default();
    let app = Router::new()
        .route("/old.mp4", get(expired))
        .route("/fresh.mp4", get(fresh))
        .route(
            "/api/v1/common/download-url",
            post(download_url).with_state((log.clone(), refuse)),
        );
    (serve(app).await, log)
}

#[tokio::test]
async fn an_expired_result_url_is_downloaded_through_a_fresh_link() {
    let (addr, log) = expiring_host(false).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.mp4");
    let n = client(addr)
        .download(&format!("http://{addr}/old.mp4?sig=1"), &dest)
        .await
        .unwrap();
    assert_eq!(n, 11);
    assert_eq!(std::fs::read(&dest).unwrap(), b"fresh video");
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one fresh link asked for");
    assert_eq!(
        seen[0].auth.as_deref(),
        Some(format!("Bearer {KEY}").as_str()),
        "download-url is an API call"
    );
}

#[tokio::test]
async fn a_refused_fresh_link_leaves_the_download_to_the_next_run() {
    let (addr, _) = expiring_host(true).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.mp4");
    let e = client(addr)
        .download(&format!("http://{addr}/old.mp4?sig=1"), &dest)
        .await
        .unwrap_err();
    assert_eq!((e.class, e.code), (ErrorClass::Failed, Some(410)), "{e}");
    assert!(
        e.message.contains("http 410 Gone")
            && e.message
                .contains("download-url gave no fresh link: 422: url is wrong"),
        "{e}"
    );
    assert!(!dest.exists());
    assert_no_key(&e);
}

#[tokio::test]
async fn invalid_base_url_is_a_clear_error() {
    let e = Client::new(ClientConfig::new("not a url", ApiKey::new(KEY))).unwrap_err();
    let shown = format!("{e:#}");
    assert!(
        shown.starts_with("invalid api base url `not a url`"),
        "{shown}"
    );
    assert!(!shown.contains(KEY));
}
