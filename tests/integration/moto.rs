//! A real S3 implementation on loopback for the bucket tests: moto's server
//! (`pip install 'moto[server]'`), started per test on a free port of 127.0.0.1 and
//! killed when dropped; and a small fault-injecting proxy in front of it.
//!
//! Without `moto_server` on the PATH a test skips with a loud message, except
//! under `CI=true`, where it fails: CI installs moto (`.ci/run`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use veo_batch::store::{Bucket, Retries, S3Env};

/// A moto server of this test's own.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl Moto {
    /// Starts moto, or says loudly why not and returns None (panics under CI).
    pub fn start() -> Option<Moto> {
        if !on_path("moto_server") {
            assert!(
                !crate::harness::under_ci(),
                "moto_server is not installed, and CI=true: the bucket tests must run (pip install 'moto[server]')"
            );
            eprintln!(
                "\n!!! SKIPPED: moto_server is not on the PATH, so this bucket test did not run. Install it: pip install 'moto[server]' !!!\n"
            );
            return None;
        }
        // A free port: moto takes a port number, not port 0.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto takes an unsigned request).
    pub async fn create_bucket(&self, bucket: &str) {
        let resp = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
    }
}

pub const SECRET: &str = "moto-secret-key-that-must-never-show";

/// The settings a user would export for a local S3 at `endpoint`.
pub fn env_for(endpoint: &str) -> S3Env {
    let endpoint = endpoint.to_owned();
    S3Env::from_lookup(move |name| {
        Some(match name {
            "AWS_ACCESS_KEY_ID" => "testing".to_owned(),
            "AWS_SECRET_ACCESS_KEY" => SECRET.to_owned(),
            "AWS_REGION" => "us-east-1".to_owned(),
            "AWS_ENDPOINT_URL" => endpoint.clone(),
            "AWS_ALLOW_HTTP" => "true".to_owned(),
            _ => return None,
        })
    })
}

/// Retries quick enough for tests.
pub fn quick_retries() -> Retries {
    Retries {
        max_retries: 4,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        give_up_after: Duration::from_secs(20),
    }
}

/// The environment a user would export for a run against a local S3 at `endpoint`.
pub fn aws_vars(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
}

pub fn bucket_at(endpoint: &str, name: &str) -> Bucket {
    Bucket::s3(name, &env_for(endpoint), quick_retries()).expect("client")
}

/// What the proxy does to the requests a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads half the request body, then drops the connection without answering.
    DropMidBody,
    /// Passes the request on, then answers 500 as if it had failed.
    ServerErrorAfter,
    /// Answers 403 with this S3 error code without passing it on.
    Forbidden(&'static str),
    /// Answers 500 without passing the request on: a store failing for good.
    ServerError,
}

/// A rule: the `nth` (1-based) request whose method is `method` and whose path
/// and query contain `contains` gets `fault`; 0 means every such request.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub contains: &'static str,
    pub nth: usize,
    pub fault: Fault,
}

/// A proxy on 127.0.0.1:0 in front of moto that injects [`Fault`]s.
pub struct Proxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    upstream: String,
    rules: Vec<(Rule, AtomicUsize)>,
    seen: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Proxy {
    pub async fn start(upstream: String, rules: Vec<Rule>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            upstream,
            rules: rules
                .into_iter()
                .map(|r| (r, AtomicUsize::new(0)))
                .collect(),
            seen: seen.clone(),
            client: reqwest::Client::new(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { addr, seen, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `METHOD path?query` of every request seen, with the fault it got.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let fault = state.rules.iter().find_map(|(rule, count)| {
        if rule.method != method || !target.contains(rule.contains) {
            return None;
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        (rule.nth == 0 || rule.nth == n).then_some(rule.fault)
    });
    state
        .seen
        .lock()
        .expect("lock")
        .push(format!("{method} {target} {fault:?}"));
    let (parts, body) = req.into_parts();
    let body = Body::new(body);
    if fault == Some(Fault::DropMidBody) {
        let total: usize = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let mut read = 0;
        let mut data = body.into_data_stream();
        while read < total / 2 {
            match data.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        return Err(Dropped);
    }
    if fault == Some(Fault::ServerError) {
        return Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(
                "<Error><Code>InternalError</Code><Message>failing on purpose</Message></Error>",
            ))
            .unwrap_or_default());
    }
    if let Some(Fault::Forbidden(code)) = fault {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>refused by the test proxy</Message></Error>"
        );
        return Ok(Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::from(xml))
            .unwrap_or_default());
    }
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| Dropped)?;
    let mut forward = state
        .client
        .request(parts.method.clone(), format!("{}{target}", state.upstream))
        .body(bytes);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.map_err(|_| Dropped)?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.map_err(|_| Dropped)?;
    if fault == Some(Fault::ServerErrorAfter) {
        return Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from("<Error><Code>InternalError</Code></Error>"))
            .unwrap_or_default());
    }
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Body::from(body)).unwrap_or_default())
}
