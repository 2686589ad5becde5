//! What the simulator lets a test observe: the request log, callbacks, and time
//! scaling.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use veo_batch::request::{RawRequest, check};
use veo_batch::sim::{self, Endpoint, FaultRate, SimConfig};
use veo_batch::units::Rate;

use super::{Api, BOUND, loopback, quick, start};

#[tokio::test]
async fn request_log_maps_tasks_to_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let h = start(SimConfig {
        request_log: Some(path.clone()),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let body = json!({"prompt": "a lighthouse", "model": "veo3"});
    let id = api.generate(&body).await["data"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    api.generate(&json!({"prompt": ""})).await;
    api.record(&id).await;

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let fp = check(&RawRequest::from_json(&body).unwrap())
        .result
        .unwrap()
        .fingerprint();
    assert_eq!(lines[0]["endpoint"], "generate");
    assert_eq!(lines[0]["prompt"], "a lighthouse");
    assert_eq!(lines[0]["fingerprint"], fp.as_str());
    assert_eq!(lines[0]["task_id"], id.as_str());
    assert_eq!(lines[0]["code"], 200);
    assert_eq!(lines[0]["task_created"], true);
    assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["code"], 422);
    assert_eq!(lines[1]["task_created"], false);
    assert!(lines[1]["fingerprint"].is_null());
    assert_eq!(lines[2]["endpoint"], "record-info");
    assert_eq!(lines[2]["task_id"], id.as_str());
    assert_eq!(h.stats().tasks_by_fingerprint.get(&fp), Some(&1));
    h.shutdown().await;

    // A refused call is logged with the job it was for.
    let refused = dir.path().join("refused.jsonl");
    let h = start(SimConfig {
        request_log: Some(refused.clone()),
        faults: sim::Faults {
            http_500: FaultRate::only(Endpoint::Generate, 1.0),
            ..sim::Faults::default()
        },
        ..quick()
    })
    .await;
    Api::new(&h).generate(&body).await;
    h.shutdown().await;
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&refused).unwrap().trim()).unwrap();
    assert_eq!(line["code"], 500);
    assert_eq!(line["fingerprint"], fp.as_str());
    assert_eq!(line["prompt"], "a lighthouse");
    assert_eq!(line["task_created"], false);
}

#[tokio::test]
async fn callbacks_reach_a_receiver() {
    let (tx, mut rx) = mpsc::channel::<Value>(8);
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let h = start(quick()).await;
    let api = Api::new(&h);
    let answer = api
        .generate(&json!({"prompt": "call me", "callBackUrl": hook}))
        .await;
    let id = answer["data"]["taskId"].as_str().unwrap().to_owned();
    let got = tokio::time::timeout(BOUND, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["code"], 200);
    assert_eq!(got["data"]["taskId"], id.as_str());
    let url = got["data"]["info"]["resultUrls"][0].as_str().unwrap();
    assert!(url.ends_with(&format!("/files/{id}.mp4")), "{url}");
    // The receiver hands the body over before it answers, so the count comes a bit later.
    let deadline = tokio::time::Instant::now() + BOUND;
    while h.stats().callbacks_delivered == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.stats().callbacks_delivered, 1);
    assert!(rx.try_recv().is_err(), "delivered once");
    h.shutdown().await;
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn time_scale_shrinks_generation_and_the_rate_window() {
    // 1000 s of generation at 0.002: 2 s. 2 calls per 100 s: per 200 ms.
    let h = start(SimConfig {
        time_scale: 0.002,
        generation_time: (Duration::from_secs(1000), Duration::from_secs(1000)),
        rate: Some(Rate {
            count: 2,
            per: Duration::from_secs(100),
        }),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let id = api.task("scaled").await;
    api.task("scaled 2").await;
    assert_eq!(api.generate(&json!({"prompt": "x"})).await["code"], 429);
    assert_eq!(api.record(&id).await["data"]["successFlag"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.generate(&json!({"prompt": "y"})).await["code"], 200);
    assert_eq!(api.wait_done(&id).await["successFlag"], 1);
    h.shutdown().await;
}
