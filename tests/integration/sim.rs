//! The simulator driven over HTTP by a plain reqwest client on 127.0.0.1:0: auth,
//! the task lifecycle, validation, rate limit, credits, upgrades, every fault, the
//! request log, callbacks, time scaling and the `simulate` subcommand.
//!
//! Tests of a timeline (generation, upgrades, expiring links, maintenance windows,
//! time scaling) run on paused tokio time, the simulator's clock: a wait passes as
//! soon as nothing else is left to do, and "just after" is exact instead of a real
//! 50-100 ms margin. A test that also reads the wall clock (a task re-derived from
//! its id by a second simulator) stays on real time.

mod faults;
mod observe;
mod surface;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use veo_batch::request::{RawRequest, check};
use veo_batch::sim::{self, DEMO_KEY, SAMPLE_MP4, SimConfig, SimHandle};
use veo_batch::units::Rate;

const BOUND: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Fast, fault-free, unlimited: each test turns on what it checks.
fn quick() -> SimConfig {
    SimConfig {
        rate: None,
        generation_time: (Duration::from_millis(200), Duration::from_millis(200)),
        upgrade_1080p_time: (Duration::from_millis(500), Duration::from_millis(500)),
        upgrade_4k_time: (Duration::from_millis(500), Duration::from_millis(500)),
        callback_timeout: Duration::from_secs(5),
        // Upgrade answers right after success are checked as they were; the lag
        // has tests of its own.
        record_lag: Duration::ZERO,
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> SimHandle {
    sim::start(config, loopback()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("veo-batch-tests")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(h: &SimHandle) -> Api {
        Api {
            http: client(),
            base: h.base_url(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.bearer_auth(DEMO_KEY).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn generate(&self, body: &Value) -> Value {
        let url = format!("{}/api/v1/veo/generate", self.base);
        self.send(self.http.post(url).json(body)).await.1
    }

    async fn record(&self, id: &str) -> Value {
        let url = format!("{}/api/v1/veo/record-info", self.base);
        self.send(self.http.get(url).query(&[("taskId", id)]))
            .await
            .1
    }

    async fn hd(&self, id: &str) -> Value {
        let url = format!("{}/api/v1/veo/get-1080p-video", self.base);
        let q = [("taskId", id), ("index", "0")];
        self.send(self.http.get(url).query(&q)).await.1
    }

    async fn uhd(&self, id: &str) -> Value {
        let url = format!("{}/api/v1/veo/get-4k-video", self.base);
        let body = json!({"taskId": id, "index": 0});
        self.send(self.http.post(url).json(&body)).await.1
    }

    async fn credit(&self) -> Value {
        let url = format!("{}/api/v1/chat/credit", self.base);
        self.send(self.http.get(url)).await.1
    }

    /// Generates and returns the task id, failing the test on any other answer.
    async fn task(&self, prompt: &str) -> String {
        let answer = self.generate(&json!({ "prompt": prompt })).await;
        assert_eq!(answer["code"], 200, "{answer}");
        answer["data"]["taskId"].as_str().unwrap().to_owned()
    }

    /// Polls record-info until the task leaves successFlag 0.
    async fn wait_done(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let r = self.record(id).await;
            assert_eq!(r["code"], 200, "{r}");
            if r["data"]["successFlag"] != 0 {
                return r["data"].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "task never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn auth_and_user_agent() {
    let h = start(quick()).await;
    let url = format!("{}/api/v1/chat/credit", h.base_url());

    let bare = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(bare.status(), 403);
    assert_eq!(bare.text().await.unwrap(), "error code: 1010");

    let http = client();
    for req in [http.get(&url), http.get(&url).bearer_auth("wrong-key")] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "envelope style answers HTTP 200");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 401);
        assert!(body["data"].is_null());
    }
    let ok: Value = http
        .get(&url)
        .bearer_auth(DEMO_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ok,
        json!({"code": 200, "msg": "success", "data": 1_000_000})
    );
    assert_eq!(h.stats().codes.get(&401), Some(&2));
    h.shutdown().await;
}

// On paused time: the 2 s generations pass as soon as nothing else is left to do.
#[tokio::test(start_paused = true)]
async fn lifecycle_to_a_downloadable_mp4() {
    let h = start(SimConfig {
        generation_time: (Duration::from_secs(2), Duration::from_secs(2)),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let body = json!({"prompt": "a red fox", "aspect_ratio": "9:16"});
    let id = api.task("a red fox").await;
    // Opaque, as the live service's: 32 lowercase hex characters, no prefix.
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{id}"
    );

    let first = api.record(&id).await;
    assert_eq!(first["data"]["successFlag"], 0);
    assert!(first["data"]["response"].is_null());
    assert!(first["data"]["completeTime"].is_null());

    let done = api.wait_done(&id).await;
    assert_eq!(done["successFlag"], 1);
    assert_eq!(done["taskId"], id.as_str());
    assert_eq!(done["fallbackFlag"], false);
    assert!(done["errorCode"].is_null());
    let param: Value = serde_json::from_str(done["paramJson"].as_str().unwrap()).unwrap();
    assert_eq!(param["prompt"], "a red fox");
    let created = done["createTime"].as_str().unwrap();
    assert_eq!(created.len(), 19, "YYYY-MM-DD HH:MM:SS, got {created}");
    assert_eq!(&created[10..11], " ");
    assert!(done["completeTime"].as_str().unwrap() >= created);
    let url = done["response"]["resultUrls"][0].as_str().unwrap();
    assert!(url.starts_with(&h.base_url()), "{url}");
    assert_eq!(done["response"]["originUrls"], json!([]), "16:9 has none");

    let video = client().get(url).send().await.unwrap();
    assert_eq!(video.status(), 200);
    assert_eq!(video.headers()["content-type"], "video/mp4");
    let bytes = video.bytes().await.unwrap();
    assert_eq!(&bytes[..], SAMPLE_MP4);
    assert_eq!(&bytes[4..8], b"ftyp");

    // A portrait video also has an origin URL.
    let tall = api.generate(&body).await;
    let tall_id = tall["data"]["taskId"].as_str().unwrap();
    let tall_done = api.wait_done(tall_id).await;
    assert_eq!(
        tall_done["response"]["originUrls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let missing = client()
        .get(format!("{}/files/veo_task_nope.mp4", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_and_unknown_tasks_get_422() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    let url = format!("{}/api/v1/veo/generate", h.base_url());
    let (_, malformed) = api
        .send(
            api.http
                .post(&url)
                .body("{not json")
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(malformed["code"], 422);
    assert!(
        malformed["msg"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let missing = api.generate(&json!({"model": "veo3"})).await;
    assert_eq!(missing["code"], 422);
    assert!(
        missing["msg"]
            .as_str()
            .unwrap()
            .contains("prompt: is required")
    );

    let bad_model = api.generate(&json!({"prompt": "x", "model": "veo9"})).await;
    assert_eq!(bad_model["code"], 422);
    assert!(bad_model["msg"].as_str().unwrap().contains("model"));

    let unknown = api.record("veo_task_0000").await;
    assert_eq!(unknown["code"], 422);
    assert_eq!(unknown["msg"], "record is null");
    let no_id = api.record("").await;
    assert_eq!(no_id["code"], 422);
    assert_eq!(h.stats().tasks_created, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn garbage_never_crashes_the_simulator() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    let bodies: [&[u8]; 8] = [
        b"",
        b"null",
        b"[]",
        b"{\"prompt\":{}}",
        b"{\"prompt\":\"x\",\"seeds\":1e400}",
        b"\xff\xfe\x00",
        b"{\"taskId\":5,\"index\":-1}",
        b"{\"prompt\":\"x\",\"imageUrls\":[1,2]}",
    ];
    for path in ["/api/v1/veo/generate", "/api/v1/veo/get-4k-video"] {
        for body in bodies {
            let req = api
                .http
                .post(format!("{}{path}", h.base_url()))
                .body(body.to_vec());
            let (status, answer) = api.send(req).await;
            assert_eq!(status, 200);
            assert_eq!(answer["code"], 422, "{path} {body:?}: {answer}");
        }
    }
    let odd = api
        .send(api.http.get(format!(
            "{}/api/v1/veo/get-1080p-video?taskId=x&index=minus",
            h.base_url()
        )))
        .await;
    assert_eq!(odd.1["code"], 422);
    assert_eq!(api.credit().await["code"], 200, "still serving");
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limit_rejects_past_the_window_and_spares_polls() {
    let h = start(SimConfig {
        rate: Some(Rate {
            count: 3,
            per: Duration::from_secs(600),
        }),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(api.task(&format!("clip {i}")).await);
    }
    let over = api.generate(&json!({"prompt": "one too many"})).await;
    assert_eq!(over["code"], 429);
    assert!(over["data"].is_null());
    for _ in 0..10 {
        assert_eq!(api.record(&ids[0]).await["code"], 200);
        assert_eq!(api.credit().await["code"], 200);
    }
    let stats = h.stats();
    assert_eq!(stats.answered_429, 1);
    assert_eq!(stats.tasks_created, 3, "a 429 creates nothing");
    assert_eq!(stats.generate_calls, 4);
    assert_eq!(stats.requests.get("record-info"), Some(&10));
    h.shutdown().await;
}

#[tokio::test]
async fn credits_run_out_and_failed_tasks_are_refunded() {
    let h = start(SimConfig {
        credits: 100.0,
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    api.task("first").await;
    let broke = api.generate(&json!({"prompt": "second"})).await;
    assert_eq!(broke["code"], 402);
    assert_eq!(api.credit().await["data"], 40);
    assert_eq!(h.stats().tasks_created, 1);
    h.shutdown().await;

    let h = start(SimConfig {
        credits: 60.0,
        faults: sim::Faults {
            generation_failure: 1.0,
            ..sim::Faults::default()
        },
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let id = api.task("doomed").await;
    assert_eq!(api.credit().await["data"], 0);
    let done = api.wait_done(&id).await;
    let flag = done["successFlag"].as_i64().unwrap();
    assert!(flag == 2 || flag == 3, "{done}");
    assert!(done["errorCode"].is_i64(), "{done}");
    assert!(!done["errorMessage"].as_str().unwrap().is_empty());
    assert!(done["response"].is_null());
    assert_eq!(api.credit().await["data"], 60, "failed tasks are free");
    assert!((h.stats().credits - 60.0).abs() < 1e-9);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn upgrades_to_1080p_and_4k() {
    let h = start(SimConfig {
        credits: 1000.0,
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let early = api.task("upgrade me").await;
    let not_yet = api.hd(&early).await;
    assert_eq!(not_yet["code"], 400, "{not_yet}");
    api.wait_done(&early).await;

    let first = api.hd(&early).await;
    assert_eq!(first["code"], 400);
    assert!(
        first["msg"]
            .as_str()
            .unwrap()
            .starts_with("1080P is processing")
    );
    let deadline = tokio::time::Instant::now() + BOUND;
    let hd = loop {
        let r = api.hd(&early).await;
        if r["code"] == 200 {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "1080p never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hd_url = hd["data"]["resultUrl"].as_str().unwrap();
    let bytes = client()
        .get(hd_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], SAMPLE_MP4);
    assert_eq!(api.hd(&early).await["code"], 200);
    assert_eq!(
        api.credit().await["data"],
        1000 - 60 - 5,
        "1080p charged once"
    );

    let start_4k = api.uhd(&early).await;
    assert_eq!(start_4k["code"], 200, "{start_4k}");
    assert_eq!(start_4k["data"]["taskId"], early.as_str());
    let running = api.uhd(&early).await;
    assert_eq!(running["code"], 422);
    assert!(
        running["msg"]
            .as_str()
            .unwrap()
            .starts_with("4k is processing")
    );
    assert_eq!(api.credit().await["data"], 1000 - 60 - 5 - 120);
    let deadline = tokio::time::Instant::now() + BOUND;
    let done = loop {
        let r = api.uhd(&early).await;
        if r["msg"] == "The video has been generated successfully" {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "4k never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["code"], 422, "done is still a 422, with the result");
    let url = done["data"]["resultUrls"][0].as_str().unwrap();
    assert_eq!(client().get(url).send().await.unwrap().status(), 200);
    assert_eq!(
        api.credit().await["data"],
        1000 - 60 - 5 - 120,
        "4k charged once"
    );
    h.shutdown().await;
}

/// The same seed draws the same outcomes, but task ids never repeat across
/// simulators; one with the same seed answers for the tasks of an earlier one.
#[tokio::test]
async fn same_seed_same_run_new_ids_and_old_tasks_known() {
    let config = SimConfig {
        seed: 42,
        faults: sim::Faults {
            generation_failure: 0.5,
            ..sim::Faults::default()
        },
        ..quick()
    };
    let mut runs: Vec<(Vec<String>, Vec<Value>)> = Vec::new();
    for _ in 0..2 {
        let h = start(config.clone()).await;
        let api = Api::new(&h);
        let mut ids = Vec::new();
        for i in 0..8 {
            ids.push(api.task(&format!("seeded {i}")).await);
        }
        let mut flags = Vec::new();
        for id in &ids {
            flags.push(api.wait_done(id).await["successFlag"].clone());
        }
        runs.push((ids, flags));
        h.shutdown().await;
    }
    assert_eq!(runs[0].1, runs[1].1, "the same draws");
    assert!(runs[0].1.contains(&json!(1)) && runs[0].1.iter().any(|f| f != 1));
    assert!(
        runs[0].0.iter().all(|id| !runs[1].0.contains(id)),
        "{:?} vs {:?}",
        runs[0].0,
        runs[1].0
    );
    let h = start(config).await;
    let api = Api::new(&h);
    for (id, flag) in runs[0].0.iter().zip(&runs[0].1) {
        let known = api.record(id).await;
        assert_eq!(known["code"], 200, "{known}");
        assert_eq!(&known["data"]["successFlag"], flag, "{known}");
    }
    h.shutdown().await;
}

/// The simulator accepts exactly the bodies the manifest rules accept.
#[tokio::test]
async fn accepts_exactly_what_the_shared_rules_accept() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    let img = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("https://img.example/{i}.png"))
            .collect()
    };
    let bodies = [
        json!({"prompt": "a dog"}),
        json!({"prompt": "  "}),
        json!({}),
        json!({"prompt": "x", "model": "veo3"}),
        json!({"prompt": "x", "model": "veo3_lite"}),
        json!({"prompt": "x", "aspect_ratio": "4:3"}),
        json!({"prompt": "x", "aspect_ratio": "Auto"}),
        json!({"prompt": "x", "imageUrls": img(1)}),
        json!({"prompt": "x", "imageUrls": img(3)}),
        json!({"prompt": "x", "imageUrls": img(3), "generationType": "REFERENCE_2_VIDEO"}),
        json!({"prompt": "x", "imageUrls": img(2), "generationType": "REFERENCE_2_VIDEO", "model": "veo3"}),
        json!({"prompt": "x", "imageUrls": img(1), "generationType": "TEXT_2_VIDEO"}),
        json!({"prompt": "x", "imageUrls": ["not a url"]}),
        json!({"prompt": "x", "seeds": 9_999}),
        json!({"prompt": "x", "seeds": 12_345}),
        json!({"prompt": "x", "callBackUrl": "ftp://x.example/"}),
        json!({"prompt": "x", "enableFallback": true, "aspect_ratio": "9:16"}),
        json!({"prompt": "x", "enableFallback": false}),
        json!({"prompt": "x", "resolution": "1080p", "duration": 8}),
        json!({"prompt": 3}),
        json!(["prompt"]),
    ];
    for body in bodies {
        let expected = RawRequest::from_json(&body)
            .ok()
            .is_some_and(|raw| check(&raw).result.is_ok());
        let got = api.generate(&body).await;
        let accepted = got["code"] == 200;
        assert_eq!(accepted, expected, "{body} -> {got}");
        if !accepted {
            assert_eq!(got["code"], 422, "{body} -> {got}");
        }
    }
    h.shutdown().await;
}

/// `veo-batch simulate --port 0` prints where it listens and serves there.
#[tokio::test]
async fn simulate_subcommand_prints_its_address() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veo-batch"))
        .args([
            "simulate",
            "--port",
            "0",
            "--time-scale",
            "0.01",
            "--credits",
            "77",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(BOUND, line).await;
    let line = match line {
        Ok(Ok(Ok(line))) => line,
        other => {
            let _ = child.kill();
            panic!("no address printed: {other:?}");
        }
    };
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_default()
        .to_owned();
    let credit = client()
        .get(format!("{base}/api/v1/chat/credit"))
        .bearer_auth(DEMO_KEY)
        .send()
        .await;
    // SIGTERM is a clean stop (exit 0); SIGKILL stays the fallback.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let stopped = tokio::time::timeout(BOUND, stopped).await;
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    let body: Value = credit.unwrap().json().await.unwrap();
    assert_eq!(body["data"], 77);
    assert!(term.is_ok_and(|s| s.success()));
    let Ok(Ok((_, status))) = stopped else {
        panic!("simulate did not stop on SIGTERM");
    };
    assert!(status.unwrap().success());
}
