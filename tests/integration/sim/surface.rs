//! The simulator speaks today's API: `veo3_lite`, `resolution` (with the 720p
//! render in `originUrls`), `duration`, prices by model and resolution, the
//! "record ..." answers of the upgrade endpoints right after success, result URLs
//! that expire and `download-url`'s fresh links, and 451 for an image it cannot fetch.

use std::time::Duration;

use serde_json::{Value, json};
use veo_batch::sim::{SAMPLE_MP4, SimConfig};

use super::{Api, client, quick, start};

impl Api {
    async fn download_url(&self, url: &str) -> Value {
        let endpoint = format!("{}/api/v1/common/download-url", self.base);
        self.send(self.http.post(endpoint).json(&json!({ "url": url })))
            .await
            .1
    }
}

/// The HTTP status and body of a GET of `url`, without auth (result files are public).
async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn lite_resolution_and_duration_are_priced_by_model_and_resolution() {
    let h = start(SimConfig {
        credits: 1000.0,
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    for (body, price) in [
        (json!({"prompt": "a", "model": "veo3_lite"}), 15.0),
        (
            json!({"prompt": "b", "model": "veo3_lite", "resolution": "1080p", "duration": 4}),
            22.5,
        ),
        (
            json!({"prompt": "c", "model": "veo3", "resolution": "1080p"}),
            232.5,
        ),
        (
            json!({"prompt": "d", "model": "veo3_fast", "resolution": "4k", "duration": 6}),
            90.0,
        ),
    ] {
        let before = api.credit().await["data"].as_f64().unwrap();
        let answer = api.generate(&body).await;
        assert_eq!(answer["code"], 200, "{answer}");
        let after = api.credit().await["data"].as_f64().unwrap();
        assert!(
            (before - after - price).abs() < 1e-9,
            "{body}: {before} -> {after}"
        );
    }
    // 1000 - 15 - 22.5 - 232.5 - 90: a fractional balance, sent as it is.
    assert_eq!(api.credit().await["data"], json!(640));
    let answer = api
        .generate(&json!({"prompt": "e", "model": "veo3_lite", "resolution": "1080p"}))
        .await;
    assert_eq!(answer["code"], 200);
    assert_eq!(api.credit().await["data"], json!(617.5));
}

#[tokio::test]
async fn the_rules_of_the_new_fields_are_422s() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    for (body, says) in [
        (
            json!({"prompt": "x", "model": "veo3_lite", "resolution": "4k"}),
            "resolution: veo3_lite has no 4k (720p or 1080p)",
        ),
        (
            json!({"prompt": "x", "duration": 5}),
            "duration: 5 is not allowed (a whole number of seconds: 4, 6 or 8)",
        ),
        (
            json!({"prompt": "x", "resolution": "8k"}),
            "resolution: \"8k\" is not allowed (720p, 1080p, 4k)",
        ),
        (
            json!({"prompt": "x", "model": "veo3", "generationType": "REFERENCE_2_VIDEO",
                   "imageUrls": ["https://a.example/1.png"]}),
            "model: REFERENCE_2_VIDEO works only with veo3_fast or veo3_lite, not veo3",
        ),
    ] {
        let answer = api.generate(&body).await;
        assert_eq!(answer["code"], 422, "{answer}");
        assert!(answer["msg"].as_str().unwrap().contains(says), "{answer}");
    }
    let refs = json!({"prompt": "x", "model": "veo3_lite", "generationType": "REFERENCE_2_VIDEO",
                      "imageUrls": ["https://a.example/1.png"]});
    assert_eq!(api.generate(&refs).await["code"], 200);
}

#[tokio::test(start_paused = true)]
async fn a_higher_resolution_comes_with_the_720p_render_in_origin_urls() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    let plain = api.task("plain").await;
    let body = json!({"prompt": "sharp", "resolution": "1080p"});
    let sharp = api.generate(&body).await["data"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = api.wait_done(&plain).await;
    let sharp = api.wait_done(&sharp).await;
    assert_eq!(plain["response"]["resolution"], "720p");
    assert_eq!(plain["response"]["originUrls"], json!([]));
    assert_eq!(sharp["response"]["resolution"], "1080p");
    let origin = sharp["response"]["originUrls"][0].as_str().unwrap();
    assert!(origin.ends_with("-origin.mp4"), "{origin}");
    assert_eq!(fetch(origin).await.0, 200);
    let param: Value = serde_json::from_str(sharp["paramJson"].as_str().unwrap()).unwrap();
    assert_eq!(param["resolution"], "1080p");
}

#[tokio::test]
async fn an_image_it_cannot_fetch_is_a_451() {
    let h = start(quick()).await;
    let api = Api::new(&h);
    let before = api.credit().await["data"].clone();
    let answer = api
        .generate(&json!({"prompt": "x", "imageUrls": ["https://cdn.example.invalid/a.png"]}))
        .await;
    assert_eq!(answer["code"], 451, "{answer}");
    assert_eq!(answer["msg"], "Failed to fetch the image");
    assert_eq!(api.credit().await["data"], before, "no task, no charge");
}

#[tokio::test(start_paused = true)]
async fn upgrades_answer_record_blank_for_a_while_after_success() {
    let h = start(SimConfig {
        record_lag: Duration::from_millis(600),
        upgrade_1080p_time: (Duration::from_secs(5), Duration::from_secs(5)),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let id = api.task("soon sharp").await;
    api.wait_done(&id).await;
    for answer in [api.hd(&id).await, api.uhd(&id).await] {
        assert_eq!(answer["code"], 422, "{answer}");
        assert_eq!(answer["msg"], "record result data is blank");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hd = api.hd(&id).await;
    assert!(
        hd["msg"]
            .as_str()
            .unwrap()
            .starts_with("1080P is processing"),
        "{hd}"
    );
    assert_eq!(api.uhd(&id).await["code"], 200, "the 4K upgrade starts");
}

#[tokio::test(start_paused = true)]
async fn result_urls_expire_and_download_url_gives_a_fresh_link() {
    let h = start(SimConfig {
        url_ttl: Some(Duration::from_millis(300)),
        download_link_ttl: Duration::from_millis(400),
        ..quick()
    })
    .await;
    let api = Api::new(&h);
    let id = api.task("short-lived").await;
    let done = api.wait_done(&id).await;
    let url = done["response"]["resultUrls"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fetch(&url).await.0, 200, "fresh from the task");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(fetch(&url).await.0, 410, "expired");

    let fresh = api.download_url(&url).await;
    assert_eq!(fresh["code"], 200, "{fresh}");
    let link = fresh["data"].as_str().unwrap();
    let (status, bytes) = fetch(link).await;
    assert_eq!((status, &bytes[..]), (200, SAMPLE_MP4));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(fetch(link).await.0, 410, "the fresh link expires too");

    for wrong in [
        "https://tempfile.example.com/x.mp4".to_owned(),
        format!("{}/files/veo_task_unknown.mp4", h.base_url()),
    ] {
        let answer = api.download_url(&wrong).await;
        assert_eq!(answer["code"], 422, "{answer}");
        assert_eq!(answer["msg"], "url is wrong");
    }
}
