//! Where the key may travel: a plain-http base off loopback is refused before any
//! connection, the explicit opt-in lets it through, a redirect to another origin
//! arrives without the key, and downloads never carry it.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use veo_batch::api::{ApiKey, Client, ClientConfig};

const KEY: &str = "transport-key-5566778899";

/// The Authorization header of each request a stub saw, by path.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn note(seen: &Seen, uri: &Uri, headers: &HeaderMap) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock().unwrap().push((uri.path().to_owned(), auth));
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A server that answers the credit call and serves a small file, noting headers.
async fn serve_target(seen: Seen) -> SocketAddr {
    async fn credit(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> &'static str {
        note(&seen, &uri, &headers);
        r#"{"code":200,"msg":"success","data":12.5}"#
    }
    async fn file(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> &'static str {
        note(&seen, &uri, &headers);
        "not really an mp4"
    }
    serve(
        Router::new()
            .route("/api/v1/chat/credit", get(credit))
            .route("/files/v.mp4", get(file))
            .with_state(seen),
    )
    .await
}

fn client(base: SocketAddr) -> Client {
    Client::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(format!("http://{base}"), ApiKey::new(KEY))
    })
    .unwrap()
}

#[tokio::test]
async fn a_redirect_to_another_port_arrives_without_the_key() {
    let second_seen = Seen::default();
    let second = serve_target(second_seen.clone()).await;
    let first_seen = Seen::default();
    let first = serve(
        Router::new()
            .fallback(
                |State((seen, to)): State<(Seen, SocketAddr)>, uri: Uri, headers: HeaderMap| async move {
                    note(&seen, &uri, &headers);
                    let location = format!("http://{to}{}", uri.path());
                    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
                },
            )
            .with_state((first_seen.clone(), second)),
    )
    .await;

    let credits = client(first).credit().await.unwrap();
    assert_eq!(credits, 12.5);
    let bearer = format!("Bearer {KEY}");
    assert_eq!(
        *first_seen.lock().unwrap(),
        [("/api/v1/chat/credit".to_owned(), Some(bearer))],
        "the first server is the API and gets the key"
    );
    assert_eq!(
        *second_seen.lock().unwrap(),
        [("/api/v1/chat/credit".to_owned(), None)],
        "the second origin is reached, without the key"
    );
}

#[tokio::test]
async fn downloads_never_carry_the_key_even_from_the_api_host() {
    let seen = Seen::default();
    let addr = serve_target(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v.mp4");
    let c = client(addr);
    // The same host as the API: a download still goes without the key.
    c.download(&format!("http://{addr}/files/v.mp4"), &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"not really an mp4");
    // An API call to the same server does carry it (the check can fail).
    c.credit().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("/files/v.mp4".to_owned(), None),
            (
                "/api/v1/chat/credit".to_owned(),
                Some(format!("Bearer {KEY}"))
            ),
        ]
    );
}

/// A listener that counts connections and drops each at once: set as the HTTP
/// proxy of a `veo-batch` process, it is where any request would go, so nothing
/// leaves the machine and no name is looked up by the process.
struct Trap {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Trap {
    fn start() -> Trap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { break };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = sock.read(&mut [0u8; 1024]);
            }
        });
        Trap { addr, connections }
    }
}

fn veo_batch(trap: &Trap, dir: &std::path::Path) -> std::process::Command {
    let mut cmd = crate::harness::veo_batch();
    let proxy = format!("http://{}", trap.addr);
    cmd.env("KIE_API_KEY", KEY)
        .env("HTTP_PROXY", &proxy)
        .env("HTTPS_PROXY", &proxy)
        .env("ALL_PROXY", &proxy)
        .current_dir(dir);
    cmd
}

fn bounded(cmd: &mut std::process::Command) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("veo-batch did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plain_http_off_loopback_is_refused_before_any_connection() {
    let trap = Trap::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, "jobs:\n  - id: a\n    prompt: a cat\n").unwrap();

    let o =
        bounded(veo_batch(&trap, dir.path()).args(["credits", "--api-base", "http://api.kie.ai"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: --api-base (or KIE_API_BASE) `http://api.kie.ai` is refused: plain http sends \
         the api key in clear to every hop on the way; use https, or a loopback address \
         (127.0.0.1, ::1, localhost) for a local test server, or pass --allow-insecure-http \
         for a private test server you trust\n"
    );

    // The environment and the upload base obey the same rule, for `run` too.
    let o = bounded(
        veo_batch(&trap, dir.path())
            .env("KIE_API_BASE", "http://10.1.2.3:8080")
            .args(["run", "-y"])
            .arg(&manifest),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: --api-base (or KIE_API_BASE) `http://10.1.2.3:8080`"),
        "{}",
        stderr(&o)
    );
    let o = bounded(
        veo_batch(&trap, dir.path())
            .env("KIE_UPLOAD_BASE", "http://uploads.example")
            .args(["run", "-y"])
            .arg(&manifest),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--upload-base (or KIE_UPLOAD_BASE) `http://uploads.example`"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("results").exists(), "no results file");
    assert_eq!(trap.connections.load(Ordering::SeqCst), 0, "nothing sent");

    // With the explicit opt-in the same base is used: the request reaches the trap.
    let o = bounded(veo_batch(&trap, dir.path()).args([
        "credits",
        "--api-base",
        "http://api.kie.ai",
        "--allow-insecure-http",
    ]));
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        trap.connections.load(Ordering::SeqCst) >= 1,
        "the opt-in sends: {}",
        stderr(&o)
    );
}

#[tokio::test]
async fn the_client_itself_refuses_plain_http_off_loopback() {
    let e = Client::new(ClientConfig::new("http://api.kie.ai", ApiKey::new(KEY))).unwrap_err();
    assert!(e.to_string().contains("is refused"), "{e}");
    let e = Client::new(ClientConfig {
        upload_base_url: Some("http://up.example".into()),
        ..ClientConfig::new("https://api.kie.ai", ApiKey::new(KEY))
    })
    .unwrap_err();
    assert!(e.to_string().starts_with("--upload-base"), "{e}");
    assert!(
        Client::new(ClientConfig {
            allow_insecure_http: true,
            ..ClientConfig::new("http://api.kie.ai", ApiKey::new(KEY))
        })
        .is_ok()
    );
}
