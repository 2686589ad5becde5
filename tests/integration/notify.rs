//! The end of a run told to a local webhook receiver and a metrics file: one POST
//! per run with the counts and the exit code, however the run ends; a receiver that
//! is down or failing changes nothing but a warning; the signature verifies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use veo_batch::checkpoint::State as JobState;
use veo_batch::exit::Exit;
use veo_batch::sim::DEMO_KEY;

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Post {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Post {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A receiver on 127.0.0.1:0 that notes every POST and answers `status`.
struct Receiver {
    url: String,
    posts: Arc<Mutex<Vec<Post>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(status: StatusCode) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let addr: SocketAddr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = Router::new()
                .route(
                    "/hook",
                    post(
                        move |State(posts): State<Arc<Mutex<Vec<Post>>>>,
                              headers: HeaderMap,
                              body: axum::body::Bytes| async move {
                            posts.lock().unwrap().push(Post {
                                headers,
                                body: body.to_vec(),
                            });
                            status
                        },
                    ),
                )
                .with_state(posts.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            posts,
            _rt: rt,
        }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

/// Every line of a metrics file is a comment or `veo_batch_...{batch="batch"...} NUMBER`;
/// the value of `name` (with `state` when given).
fn metric(text: &str, name: &str, state: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with("# HELP veo_batch_") || line.starts_with("# TYPE veo_batch_") {
            continue;
        }
        let (series, value) = line.rsplit_once("} ").expect("a sample line");
        let value: f64 = value.parse().expect("a number");
        let (metric, labels) = series.split_once("{batch=\"batch\"").expect("batch label");
        assert!(metric.starts_with("veo_batch_"), "{line}");
        let wanted = state.map_or(String::new(), |s| format!(",state=\"{s}\""));
        if metric == name && labels == wanted {
            found = Some(value);
        }
    }
    found
}

#[test]
fn one_post_per_run_with_the_counts_and_the_exit_code() {
    let h = Harness::new(fast_sim());
    let receiver = Receiver::start(StatusCode::NO_CONTENT);
    let manifest = h.write("batch.yaml", &text_jobs(3));
    let metrics = h.path("veo.prom");
    let o = h.run(
        &manifest,
        &[
            "--notify",
            &receiver.url,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));

    let posts = receiver.posts();
    assert_eq!(posts.len(), 1, "one POST per run");
    let post = &posts[0];
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("authorization"), None);
    assert_eq!(
        post.header("webhook-signature"),
        None,
        "unsigned without a secret"
    );
    let text = String::from_utf8_lossy(&post.body);
    assert!(
        !text.contains(DEMO_KEY),
        "the key is never in a notification"
    );
    let doc = post.json();
    assert_eq!(doc["type"], "batch.finished");
    let data = &doc["data"];
    assert_eq!(data["batch"], "batch");
    assert_eq!(data["exit"]["code"], 0);
    assert_eq!(data["exit"]["meaning"], "every job succeeded");
    assert_eq!(data["jobs"]["total"], 3);
    assert_eq!(data["jobs"]["succeeded"], 3);
    assert_eq!(data["submissions"], 3);
    assert_eq!(
        data["results"].as_str(),
        h.path("results.csv").to_str(),
        "{doc}"
    );
    // The simulator bills the documented table: the balance's fall is the estimate.
    assert_eq!(
        data["credits"]["measured"], data["credits"]["estimated"],
        "{doc}"
    );
    assert!(
        data["credits"]["measured"]
            .as_f64()
            .is_some_and(|m| m > 0.0),
        "{doc}"
    );
    assert_eq!(data["failure_groups"], Value::Array(Vec::new()));

    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    assert_eq!(
        metric(&text, "veo_batch_jobs", Some("succeeded")),
        Some(3.0)
    );
    assert_eq!(metric(&text, "veo_batch_exit_code", None), Some(0.0));
    assert_eq!(metric(&text, "veo_batch_submissions", None), Some(3.0));
    assert_eq!(
        metric(&text, "veo_batch_measured_credits", None),
        data["credits"]["measured"].as_f64()
    );
    assert!(metric(&text, "veo_batch_end_timestamp_seconds", None).is_some());
    assert!(!h.path("veo.prom.tmp").exists());
}

#[test]
fn a_refused_key_is_told_with_its_exit_code() {
    let h = Harness::new(fast_sim());
    let receiver = Receiver::start(StatusCode::OK);
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let metrics = h.path("veo.prom");
    let o = h
        .run_cmd(&manifest)
        .env("KIE_API_KEY", "not-the-key")
        .args(["--notify", &receiver.url, "--metrics-file"])
        .arg(&metrics)
        .output()
        .expect("veo-batch runs");
    assert_eq!(
        o.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{}",
        stderr(&o)
    );
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    let data = &posts[0].json()["data"];
    assert_eq!(data["exit"]["code"], 3);
    assert_eq!(data["stopped"]["reason"], "auth");
    assert!(!String::from_utf8_lossy(&posts[0].body).contains("not-the-key"));
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    assert_eq!(metric(&text, "veo_batch_exit_code", None), Some(3.0));
}

#[test]
fn a_receiver_that_is_down_or_failing_changes_nothing_but_a_warning() {
    let h = Harness::new(fast_sim());
    // A port nobody listens on: bound without listening, so connections to it are
    // refused and no other test's server can take it while this one runs.
    let down = tokio::net::TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down_url = format!("http://{}/hook", down.local_addr().unwrap());
    let failing = Receiver::start(StatusCode::SERVICE_UNAVAILABLE);
    let refusing = Receiver::start(StatusCode::BAD_REQUEST);
    let manifest = h.write("batch.yaml", &text_jobs(3));
    let o = h.run(
        &manifest,
        &[
            "--notify",
            &down_url,
            "--notify",
            &failing.url,
            "--notify",
            &refusing.url,
        ],
    );
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let results = h.results();
    assert_eq!(results.records.len(), 3);
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == JobState::Succeeded)
    );
    assert_eq!(failing.posts().len(), 3, "three tries, then a warning");
    // A refusal another try would not change is not tried again.
    assert_eq!(refusing.posts().len(), 1);
    let err = stderr(&o);
    let origin = |url: &str| url.trim_end_matches("/hook").to_owned();
    for url in [&down_url, &failing.url] {
        assert!(
            err.contains(&format!(
                "the notification to {} was not delivered after 3 tries",
                origin(url)
            )),
            "{err}"
        );
    }
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(
        err.contains(&format!(
            "the notification to {} was not delivered after 1 try: the receiver answered HTTP 400",
            origin(&refusing.url)
        )),
        "{err}"
    );
    // The webhook's path (often its secret) is not logged.
    assert!(!err.contains("/hook"), "{err}");
}

#[test]
fn the_signature_verifies_with_the_shared_secret() {
    let h = Harness::new(fast_sim());
    let receiver = Receiver::start(StatusCode::OK);
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37)).collect();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let secret_file = h.write("webhook.secret", &format!("{secret}\n"));
    let manifest = h.write("batch.yaml", &text_jobs(1));
    let o = h.run(
        &manifest,
        &[
            "--notify",
            &receiver.url,
            "--notify-secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    let id = post.header("webhook-id").expect("webhook-id");
    let timestamp = post.header("webhook-timestamp").expect("webhook-timestamp");
    let signature = post.header("webhook-signature").expect("webhook-signature");
    assert!(id.starts_with("msg_"), "{id}");
    let sent: u64 = timestamp.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(sent <= now && now - sent < 300, "{sent} against {now}");

    let expected = |key: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&post.body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    // The header may list several signatures, space-separated.
    let signatures: Vec<&str> = signature.split(' ').collect();
    assert!(signatures.contains(&expected(&key).as_str()), "{signature}");
    assert!(!signatures.contains(&expected(b"another secret").as_str()));
}

#[test]
fn the_manifest_names_the_webhook_and_the_metrics_file() {
    let h = Harness::new(fast_sim());
    let receiver = Receiver::start(StatusCode::OK);
    std::fs::create_dir(h.path("metrics")).unwrap();
    let manifest = h.write(
        "batch.yaml",
        &format!(
            "output:\n  notify: [\"{}\"]\n  metrics_file: metrics/batch.prom\n{}",
            receiver.url,
            text_jobs(1)
        ),
    );
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_eq!(receiver.posts().len(), 1);
    let text = std::fs::read_to_string(h.path("metrics/batch.prom")).expect("metrics file");
    assert_eq!(
        metric(&text, "veo_batch_jobs", Some("succeeded")),
        Some(1.0)
    );
}

#[test]
fn bad_notify_settings_stop_the_run_before_anything_is_sent() {
    let h = Harness::new(fast_sim());
    let manifest = h.write(
        "batch.yaml",
        &format!("output:\n  notify: not a url\n{}", text_jobs(1)),
    );
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("batch.yaml:2:11: notify: `not a url` is not a URL"),
        "{err}"
    );

    let manifest = h.write("ok.yaml", &text_jobs(1));
    for (flags, want) in [
        (
            vec![
                "--notify",
                "http://127.0.0.1:9/h",
                "--notify-secret-file",
                "missing.secret",
            ],
            "error: failed to read --notify-secret-file `missing.secret`",
        ),
        (
            vec!["--metrics-file", "no/such/dir/m.prom"],
            "error: --metrics-file `no/such/dir/m.prom`: the folder `no/such/dir` does not exist",
        ),
        (
            vec!["--notify", "ftp://example.com/x"],
            "is not an http or https URL with a host",
        ),
    ] {
        let o = h.run(&manifest, &flags);
        assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    assert_eq!(h.stats().generate_calls, 0, "nothing was sent");
}

#[cfg(unix)]
#[test]
fn an_interrupted_run_is_told_too() {
    let h = Harness::new(veo_batch::sim::SimConfig {
        // Long enough that the interrupt comes while tasks run.
        generation_time: (
            std::time::Duration::from_secs(20),
            std::time::Duration::from_secs(20),
        ),
        ..fast_sim()
    });
    let receiver = Receiver::start(StatusCode::OK);
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let mut child = h
        .run_cmd(&manifest)
        .args(["--rate", "1000/1s", "--notify", &receiver.url])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("veo-batch starts");
    // Once both tasks exist, interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.stats().tasks_created < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks were not created"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("veo-batch did not stop after the interrupt");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(Exit::Interrupted as i32));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    let data = &posts[0].json()["data"];
    assert_eq!(data["exit"]["code"], 130);
    assert_eq!(data["stopped"]["reason"], "interrupted");
    assert_eq!(data["jobs"]["running"], 2, "{data}");
}

#[test]
fn running_ok_tells_the_code_the_process_ends_with() {
    let h = Harness::new(fast_sim());
    let receiver = Receiver::start(StatusCode::NO_CONTENT);
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let metrics = h.path("veo.prom");
    let o = h.run(
        &manifest,
        &[
            "--no-wait",
            "--running-ok",
            "--notify",
            &receiver.url,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    let data = &posts[0].json()["data"];
    assert_eq!(data["exit"]["code"], 0, "{data}");
    assert_eq!(data["jobs"]["running"], 2, "{data}");
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    assert_eq!(metric(&text, "veo_batch_exit_code", None), Some(0.0));
}
