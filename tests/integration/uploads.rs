//! Local images end to end: manifests that name files (YAML and CSV), each file
//! uploaded once however many jobs use it and only when a job that needs it is sent,
//! uploads remembered and reused by a resumed run, uploaded again once too old, the
//! fingerprint that never changes with an upload, located errors before anything is
//! sent, upload faults retried, refusals that stop the run or fail only the jobs that
//! need the file, and the simulator's upload host.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use veo_batch::checkpoint::State;
use veo_batch::exit::Exit;
use veo_batch::sim::{self, Endpoint, FaultRate, Faults, SimConfig};

use crate::harness::{Harness, fast_sim, stderr};

/// The campaign's packshot: a real PNG.
const PNG: &[u8] = include_bytes!("../../manifests/images/aurora-packshot-ember.png");

/// Another PNG (bytes after the end chunk change the hash, not the format).
fn png(n: u8) -> Vec<u8> {
    let mut b = PNG.to_vec();
    b.extend_from_slice(&[n; 4]);
    b
}

fn put(h: &Harness, name: &str, bytes: &[u8]) {
    let path = h.path(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("folder");
    }
    std::fs::write(path, bytes).expect("image written");
}

/// Upload calls the simulator saw (answered any way).
fn upload_calls(h: &Harness) -> u64 {
    h.stats()
        .requests
        .get(Endpoint::Upload.name())
        .copied()
        .unwrap_or(0)
}

/// Files the simulator stored, per name, and how often.
fn stored(h: &Harness) -> BTreeMap<String, u32> {
    h.stats().uploads
}

fn generate_calls(h: &Harness) -> u64 {
    h.stats().generate_calls
}

fn states(h: &Harness) -> BTreeMap<String, State> {
    h.results()
        .records
        .iter()
        .map(|(id, r)| (id.clone(), r.state()))
        .collect()
}

fn all_succeeded(h: &Harness, n: usize) {
    let s = states(h);
    assert_eq!(s.len(), n, "{s:?}");
    assert!(s.values().all(|s| *s == State::Succeeded), "{s:?}");
}

/// The lines of the remembered-uploads file.
fn remembered(h: &Harness) -> Vec<Value> {
    std::fs::read_to_string(h.path("results.csv.uploads.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a remembered upload is JSON"))
        // The first line marks the file as veo-batch's.
        .filter(|l| l.get("veo_batch").is_none())
        .collect()
}

/// A CSV manifest of `n` jobs, each animating `image`.
fn shared_image_jobs(n: usize, image: &str) -> String {
    let mut s = String::from("id,prompt,image_url_1\n");
    for i in 1..=n {
        s.push_str(&format!("job-{i},\"clip {i} of the shoe\",{image}\n"));
    }
    s
}

fn sha_name(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.png")
}

/// What the simulator's record of a task says it was asked (its `paramJson`).
fn asked(h: &Harness, task: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("{}/api/v1/veo/record-info?taskId={task}", h.sim.base_url());
    let answer: Value = rt.block_on(async {
        reqwest::Client::new()
            .get(url)
            .header("User-Agent", "test")
            .bearer_auth(sim::DEMO_KEY)
            .send()
            .await
            .expect("record-info answers")
            .json()
            .await
            .expect("json")
    });
    let params = answer["data"]["paramJson"].as_str().expect("paramJson");
    serde_json::from_str(params).expect("paramJson is JSON")
}

#[test]
fn yaml_and_csv_local_images_run_end_to_end() {
    let h = Harness::new(fast_sim());
    put(&h, "img/a.png", &png(1));
    put(&h, "img/b.png", &png(2));
    put(&h, "tables/shots/c.png", &png(3));
    h.write(
        "tables/rows.csv",
        "id,prompt,imageUrls\nrow-1,\"a row\",shots/c.png | https://a.example/1.png\nrow-2,\"another row\",\n",
    );
    let manifest = h.write(
        "m.yaml",
        "name: local\ndefaults:\n  imageUrls: [img/b.png]\njobs:\n  \
         - id: listed\n    prompt: one\n    imageUrls: [img/a.png, https://a.example/x.png]\n  \
         - id: defaulted\n    prompt: two\n  \
         - id: take-{take}\n    prompt: take {take}\n    matrix:\n      take: [1, 2]\n\
         include:\n  - tables/rows.csv\n",
    );
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 6);
    // Three files, one upload each, though the default one serves four jobs.
    assert_eq!(upload_calls(&h), 3);
    let want: BTreeMap<String, u32> = [png(1), png(2), png(3)]
        .iter()
        .map(|b| (sha_name(b), 1))
        .collect();
    assert_eq!(stored(&h), want);
    assert_eq!(h.stats().codes.get(&451), None);
    // The service was sent the uploads' URLs in the files' places, never a path.
    let results = h.results();
    let listed = asked(&h, results.records["listed"].task_id.as_deref().unwrap());
    let images = listed["imageUrls"].as_array().unwrap();
    assert!(
        images[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/tempfile/", h.sim.base_url())),
        "{listed}"
    );
    assert_eq!(images[1], "https://a.example/x.png");
    let row = asked(&h, results.records["row-2"].task_id.as_deref().unwrap());
    assert!(
        row["imageUrls"][0]
            .as_str()
            .unwrap()
            .ends_with(&sha_name(&png(2))),
        "{row}"
    );
    assert_eq!(remembered(&h).len(), 3);
}

#[test]
fn one_file_shared_by_many_jobs_is_uploaded_once() {
    let h = Harness::new(fast_sim());
    put(&h, "packshot.png", PNG);
    let manifest = h.write("m.csv", &shared_image_jobs(40, "packshot.png"));
    let out = h.run(&manifest, &["--concurrency", "16"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 40);
    assert_eq!(upload_calls(&h), 1);
    assert_eq!(stored(&h), BTreeMap::from([(sha_name(PNG), 1)]));
    assert_eq!(generate_calls(&h), 40);
}

#[test]
fn a_resumed_run_reuses_the_upload_and_a_changed_file_is_an_edit() {
    let h = Harness::new(fast_sim());
    put(&h, "a.png", PNG);
    let manifest = h.write("m.csv", &shared_image_jobs(4, "a.png"));
    let out = h.run(&manifest, &["--limit", "2"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert_eq!(upload_calls(&h), 1);
    let first = h.results();
    assert_eq!(remembered(&h).len(), 1);

    // The rest, from the upload the first run remembered.
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 4);
    assert_eq!(upload_calls(&h), 1, "the remembered upload was used");
    assert_eq!(generate_calls(&h), 4);
    let log = stderr(&out);
    assert!(!log.contains("manifest changed"), "{log}");
    let second = h.results();
    for id in ["job-1", "job-2"] {
        assert_eq!(
            second.records[id].fingerprint,
            first.records[id].fingerprint
        );
        assert_eq!(second.records[id].attempts, 1, "{id} was not sent again");
    }

    // New content at the same path: every job's request changed.
    put(&h, "a.png", &png(9));
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("4 resubmitted because the manifest changed"),
        "{log}"
    );
    assert_eq!(upload_calls(&h), 2, "the new content was uploaded");
    assert_eq!(generate_calls(&h), 8);
}

#[test]
fn an_expired_upload_is_uploaded_again_and_the_fingerprint_stays() {
    // The simulator forgets uploads after 2 s; the runner uses one for 1.5 s.
    let h = Harness::new(SimConfig {
        upload_ttl: Some(Duration::from_secs(2)),
        ..fast_sim()
    });
    put(&h, "a.png", PNG);
    let manifest = h.write("m.csv", &shared_image_jobs(3, "a.png"));
    let ttl = ["--upload-ttl", "2s"];
    let out = h.run(&manifest, &[&ttl[..], &["--limit", "1"]].concat());
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    let first = h.results().records["job-1"].clone();
    assert_eq!(upload_calls(&h), 1);

    std::thread::sleep(Duration::from_millis(2200));
    let out = h.run(&manifest, &ttl);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 3);
    assert_eq!(upload_calls(&h), 2, "uploaded again before use");
    assert_eq!(h.stats().codes.get(&451), None, "no expired URL was sent");
    let log = stderr(&out);
    assert!(!log.contains("manifest changed"), "{log}");
    let again = h.results().records["job-1"].clone();
    assert_eq!(
        again.fingerprint, first.fingerprint,
        "re-uploads change no fingerprint"
    );
    assert_eq!(again.attempts, 1);
    assert_eq!(again.task_id, first.task_id);
    // The file holds the upload in use; the expired one was dropped from it.
    assert_eq!(remembered(&h).len(), 1, "{:?}", remembered(&h));
}

#[test]
fn an_upload_the_service_lost_early_is_uploaded_again_once_and_sent_again() {
    // The service forgets uploads after 1 s; the runner believes they live 24 h.
    let h = Harness::new(SimConfig {
        upload_ttl: Some(Duration::from_secs(1)),
        ..fast_sim()
    });
    put(&h, "a.png", PNG);
    let manifest = h.write("m.csv", &shared_image_jobs(2, "a.png"));
    let out = h.run(&manifest, &["--limit", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(1200));
    let out = h.run(&manifest, &[]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 2);
    let stats = h.stats();
    assert_eq!(stats.codes.get(&451), Some(&1), "{stats:?}");
    assert_eq!(upload_calls(&h), 2);
    let r = &h.results().records["job-2"];
    assert_eq!(r.attempts, 2, "the refused send counts as an attempt");
    assert!((r.credits - 60.0).abs() < 1e-9, "and costs nothing: {r:?}");
    assert_eq!(r.error_message, None, "{r:?}");
}

#[test]
fn an_upload_that_ages_while_its_job_waits_is_uploaded_again_before_the_send() {
    let h = Harness::new(SimConfig {
        upload_ttl: Some(Duration::from_secs(2)),
        ..fast_sim()
    });
    put(&h, "a.png", PNG);
    let manifest = h.write("m.csv", &shared_image_jobs(4, "a.png"));
    // One send a second: the fourth job leaves 3 s after the first upload.
    let out = h.run(
        &manifest,
        &["--upload-ttl", "2s", "--rate", "1/1s", "--concurrency", "4"],
    );
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 4);
    assert!(upload_calls(&h) >= 2, "{:?}", h.stats());
    assert_eq!(h.stats().codes.get(&451), None, "no expired URL was sent");
}

#[test]
fn bad_local_images_are_located_errors_and_nothing_is_sent() {
    let h = Harness::new(fast_sim());
    put(&h, "ok.png", PNG);
    put(&h, "notes.png", b"these are notes, not pixels");
    put(&h, "big.png", &{
        let mut b = PNG.to_vec();
        b.resize(5000, 0);
        b
    });
    std::fs::create_dir(h.path("folder.png")).unwrap();
    let manifest = h.write(
        "m.yaml",
        "jobs:\n  - id: fine\n    prompt: x\n    imageUrls: [ok.png]\n  \
         - id: missing\n    prompt: x\n    imageUrls: [gone.png]\n  \
         - id: notes\n    prompt: x\n    imageUrls: [notes.png]\n  \
         - id: big\n    prompt: x\n    imageUrls: [big.png]\n  \
         - id: folder\n    prompt: x\n    imageUrls: [folder.png]\n",
    );
    let out = h.run(&manifest, &["--max-image-size", "4KB"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    let log = stderr(&out);
    let at = manifest.display().to_string();
    for line in [
        format!("{at}:7:17: job \"missing\": imageUrls: \"gone.png\" names no file (looked for `"),
        format!(
            "{at}:10:17: job \"notes\": imageUrls: \"notes.png\" is not a PNG, JPEG or WebP image \
             (judged by its content, not its name)"
        ),
        format!(
            "{at}:13:17: job \"big\": imageUrls: \"big.png\" is 4.9 KiB, over the 3.9 KiB limit \
             for a local image (--max-image-size)"
        ),
        format!(
            "{at}:16:17: job \"folder\": imageUrls: \"folder.png\" is a directory, not an image file"
        ),
    ] {
        assert!(log.contains(&line), "missing {line:?} in:\n{log}");
    }
    assert!(log.contains("has 4 problems; nothing was sent"), "{log}");
    assert_eq!(generate_calls(&h), 0);
    assert_eq!(upload_calls(&h), 0);
    assert!(!h.path("results.csv").exists());

    // validate says the same, and lists nothing.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
        .env_clear()
        .current_dir(h.dir.path())
        .args(["validate", "m.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(Exit::Usage as i32));
    assert!(
        stderr(&out).contains("m.yaml:7:17: job \"missing\""),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[test]
fn an_unreadable_image_is_a_located_error() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = Harness::new(fast_sim());
    put(&h, "locked.png", PNG);
    let img = h.path("locked.png");
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&img).is_ok() {
        eprintln!("skipped: running as root, chmod does not stop reads");
        return;
    }
    let manifest = h.write("m.csv", &shared_image_jobs(2, "locked.png"));
    let out = h.run(&manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    let line = format!(
        "{}:2: job \"job-1\": imageUrls: \"locked.png\" cannot be read: permission denied",
        manifest.display()
    );
    assert!(stderr(&out).contains(&line), "{}", stderr(&out));
    assert_eq!(generate_calls(&h) + upload_calls(&h), 0);
}

#[test]
fn validate_and_dry_run_show_the_local_files_and_upload_nothing() {
    let h = Harness::new(fast_sim());
    put(&h, "img/a.png", PNG);
    put(&h, "img/b.png", &png(1));
    let manifest = h.write(
        "m.yaml",
        "jobs:\n  - id: a\n    prompt: x\n    imageUrls: [img/a.png]\n  \
         - id: b\n    prompt: y\n    imageUrls: [img/a.png, img/b.png]\n",
    );
    let validate = |extra: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
            .env_clear()
            .current_dir(h.dir.path())
            .args(["validate", "m.yaml"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = validate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let total = PNG.len() * 2 + 4;
    assert!(
        text.contains(&format!(
            "local images: 2 files, {total} B in all; uploaded when a job that uses them is sent\n  \
             img/a.png  {:>9}  2 jobs\n  img/b.png  {:>9}  1 job\n",
            format!("{} B", PNG.len()),
            format!("{} B", PNG.len() + 4)
        )),
        "{text}"
    );
    let out = validate(&["--emit", "jsonl"]);
    let bodies = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        bodies
            .lines()
            .nth(1)
            .unwrap()
            .contains(r#""imageUrls":["img/a.png","img/b.png"]"#),
        "{bodies}"
    );

    let out = h.run(&manifest, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let a = h.path("img/a.png").display().to_string();
    assert!(
        lines.contains(&format!("\"imageUrls\":[\"{a}\"]")),
        "{lines}"
    );
    assert_eq!(upload_calls(&h) + generate_calls(&h), 0);
    assert!(!h.path("results.csv.uploads.jsonl").exists());
}

#[test]
fn jobs_that_are_not_submitted_upload_nothing() {
    let h = Harness::new(fast_sim());
    put(&h, "a.png", PNG);
    put(&h, "b.png", &png(1));
    let manifest = h.write(
        "m.csv",
        "id,prompt,image_url_1\nfirst,x,a.png\nsecond,y,b.png\n",
    );
    let out = h.run(&manifest, &["--limit", "1"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert_eq!(stored(&h), BTreeMap::from([(sha_name(PNG), 1)]));
    // Polling and downloading a job sent earlier needs no upload either.
    let out = h.run(&manifest, &["--limit", "0"]);
    assert_eq!(
        out.status.code(),
        Some(Exit::NotFinished as i32),
        "{}",
        stderr(&out)
    );
    assert_eq!(upload_calls(&h), 1);
}

#[test]
fn upload_faults_are_retried() {
    let h = Harness::new(SimConfig {
        faults: Faults {
            http_500: FaultRate::only(Endpoint::Upload, 0.4),
            http_429: FaultRate::only(Endpoint::Upload, 0.2),
            ..Faults::default()
        },
        ..fast_sim()
    });
    let mut csv = String::from("id,prompt,image_url_1\n");
    for i in 0..6u8 {
        put(&h, &format!("i{i}.png"), &png(i));
        csv.push_str(&format!("j{i},\"clip {i}\",i{i}.png\n"));
    }
    let manifest = h.write("m.csv", &csv);
    let out = h.run(&manifest, &["--max-attempts", "10"]);
    assert_eq!(out.status.code(), Some(Exit::Ok as i32), "{}", stderr(&out));
    all_succeeded(&h, 6);
    let stats = h.stats();
    let refused =
        stats.codes.get(&500).copied().unwrap_or(0) + stats.codes.get(&429).copied().unwrap_or(0);
    assert!(refused >= 1, "some uploads were refused first: {stats:?}");
    assert_eq!(
        upload_calls(&h),
        6 + refused,
        "each refusal was sent again, nothing more"
    );
    assert!(stats.uploads.values().all(|n| *n == 1), "{stats:?}");
    assert_eq!(stats.uploads.len(), 6);
    assert!(
        stderr(&out).contains(&format!("retries {refused} ")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_refused_key_on_the_upload_host_stops_the_run() {
    let h = Harness::new(fast_sim());
    // A second simulator that takes another key stands for the upload host.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upload_host = rt
        .block_on(sim::start(
            SimConfig {
                api_key: "another-key".into(),
                ..fast_sim()
            },
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    put(&h, "a.png", PNG);
    let manifest = h.write(
        "m.csv",
        "id,prompt,image_url_1\ntext-only,x,\nwith-image,y,a.png\n",
    );
    let out = h
        .run_cmd(&manifest)
        .args(["--rate", "1000/1s", "--concurrency", "1"])
        .args(["--upload-base", &upload_host.base_url()])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(Exit::ServiceStopped as i32),
        "{log}"
    );
    assert!(log.contains("KIE_API_KEY"), "{log}");
    assert!(
        !log.contains(sim::DEMO_KEY),
        "the key is never shown: {log}"
    );
    let s = states(&h);
    assert_ne!(s.get("with-image"), Some(&State::Failed), "{s:?}");
    assert_eq!(
        upload_host.stats().requests.get(Endpoint::Upload.name()),
        Some(&1)
    );
    assert_eq!(upload_calls(&h), 0, "uploads went to --upload-base");
    drop(rt);
}

/// A stand-in upload host that refuses every file with a 400 envelope, counting calls.
fn refusing_upload_host(rt: &tokio::runtime::Runtime, calls: Arc<AtomicUsize>) -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/api/file-stream-upload",
        post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "success": false, "code": 400, "msg": "File type not supported", "data": null
                }))
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[test]
fn an_upload_the_service_refuses_fails_only_the_jobs_that_need_that_file() {
    let h = Harness::new(fast_sim());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let host = refusing_upload_host(&rt, calls.clone());
    put(&h, "a.png", PNG);
    let manifest = h.write(
        "m.csv",
        "id,prompt,image_url_1\nplain,x,\none,y,a.png\ntwo,z,a.png\nthree,w,a.png\n",
    );
    let out = h
        .run_cmd(&manifest)
        .args(["--rate", "1000/1s"])
        .args(["--upload-base", &format!("http://{host}")])
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(Exit::JobsFailed as i32), "{log}");
    let results = h.results();
    assert_eq!(results.records["plain"].state(), State::Succeeded);
    for id in ["one", "two", "three"] {
        let r = &results.records[id];
        assert_eq!(r.state(), State::Failed, "{id}");
        assert_eq!(r.error_code, Some(400), "{r:?}");
        let msg = r.error_message.as_deref().unwrap_or_default();
        assert!(msg.contains("File type not supported"), "{msg}");
        assert!(msg.contains("a.png"), "the message names the file: {msg}");
        assert_eq!(r.attempts, 0, "no generate call was made for {id}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refusal serves every job of the file"
    );
    assert_eq!(generate_calls(&h), 1);
}

#[test]
fn a_file_that_vanished_before_its_upload_fails_its_jobs_clearly() {
    let h = Harness::new(fast_sim());
    put(&h, "a.png", PNG);
    put(&h, "b.png", &png(1));
    let manifest = h.write(
        "m.csv",
        "id,prompt,image_url_1\nkept,x,a.png\ngone,y,b.png\nchanged,z,c.png\n",
    );
    put(&h, "c.png", &png(2));
    let m = veo_batch::manifest::load(&manifest).unwrap();
    // Between the check and the upload: one file goes, another changes.
    std::fs::remove_file(h.path("b.png")).unwrap();
    put(&h, "c.png", &png(3));
    let config = veo_batch::runner::RunConfig {
        poll_interval: Duration::from_millis(30),
        ..veo_batch::runner::RunConfig::with_defaults(
            m.jobs,
            h.path("results.csv"),
            h.path("videos"),
        )
    };
    let client = veo_batch::api::Client::new(veo_batch::api::ClientConfig::new(
        h.sim.base_url(),
        veo_batch::api::ApiKey::new(sim::DEMO_KEY),
    ))
    .unwrap();
    let rt = veo_batch::runner::runtime().unwrap();
    let report = rt
        .block_on(veo_batch::runner::run(config, client, Default::default()))
        .unwrap();
    assert_eq!(report.exit(), Exit::JobsFailed);
    let results = h.results();
    assert_eq!(results.records["kept"].state(), State::Succeeded);
    let gone = &results.records["gone"];
    assert_eq!(gone.state(), State::Failed);
    assert!(
        gone.error_message
            .as_deref()
            .unwrap_or_default()
            .contains("b.png` is gone"),
        "{gone:?}"
    );
    let changed = &results.records["changed"];
    assert_eq!(changed.state(), State::Failed);
    assert!(
        changed
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("c.png` changed since the manifest was read"),
        "{changed:?}"
    );
    assert_eq!(generate_calls(&h), 1);
    assert_eq!(upload_calls(&h), 1);
}

mod simulator {
    //! The simulator's upload host over plain HTTP.

    use super::*;

    fn upload(rt: &tokio::runtime::Runtime, base: &str, bytes: &[u8], name: Option<&str>) -> Value {
        let mut form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("x.png"),
            )
            .text("uploadPath", "images/tests");
        if let Some(n) = name {
            form = form.text("fileName", n.to_owned());
        }
        rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{base}/api/file-stream-upload"))
                .header("User-Agent", "test")
                .bearer_auth(sim::DEMO_KEY)
                .multipart(form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    fn get(rt: &tokio::runtime::Runtime, url: &str) -> (u16, Vec<u8>) {
        rt.block_on(async {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        })
    }

    fn generate(rt: &tokio::runtime::Runtime, base: &str, image: &str) -> i64 {
        rt.block_on(async {
            let v: Value = reqwest::Client::new()
                .post(format!("{base}/api/v1/veo/generate"))
                .header("User-Agent", "test")
                .bearer_auth(sim::DEMO_KEY)
                .json(&serde_json::json!({"prompt": "x", "imageUrls": [image]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["code"].as_i64().unwrap()
        })
    }

    #[test]
    fn uploads_answer_the_live_shape_are_served_then_forgotten() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let h = rt
            .block_on(sim::start(
                SimConfig {
                    upload_ttl: Some(Duration::from_millis(800)),
                    ..fast_sim()
                },
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let base = h.base_url();
        let answer = upload(&rt, &base, PNG, Some("shoe.png"));
        assert_eq!(answer["success"], true, "{answer}");
        assert_eq!(answer["code"], 200);
        let data = &answer["data"];
        assert_eq!(data["fileName"], "shoe.png");
        assert_eq!(data["mimeType"], "image/png");
        assert_eq!(data["fileSize"], PNG.len());
        assert!(data["uploadedAt"].is_string());
        let url = data["downloadUrl"].as_str().unwrap().to_owned();
        assert_eq!(
            url,
            format!("{base}/tempfile/kieai/sim/images/tests/shoe.png")
        );
        assert_eq!(get(&rt, &url), (200, PNG.to_vec()));
        assert_eq!(generate(&rt, &base, &url), 200);
        // Without a name, the service picks a unique one.
        let unnamed = upload(&rt, &base, PNG, None);
        let other = unnamed["data"]["downloadUrl"].as_str().unwrap();
        assert_ne!(other, url);
        assert!(other.ends_with(".png"), "{other}");
        // Forgotten after its lifetime: gone, and generate cannot fetch it.
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(get(&rt, &url).0, 404);
        assert_eq!(generate(&rt, &base, &url), 451);
        // A URL it never issued under its own prefix is as gone.
        assert_eq!(
            generate(&rt, &base, &format!("{base}/tempfile/nope.png")),
            451
        );
        // A bad request is refused with a 400 envelope.
        let bad = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{base}/api/file-stream-upload"))
                .header("User-Agent", "test")
                .bearer_auth(sim::DEMO_KEY)
                .multipart(reqwest::multipart::Form::new().text("uploadPath", "images"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
        assert_eq!(bad["code"], 400, "{bad}");
        assert_eq!(h.stats().uploads.get("shoe.png"), Some(&1));
        rt.block_on(h.shutdown());
    }
}

#[test]
fn an_uploads_file_veo_batch_did_not_write_is_refused_never_emptied() {
    let h = Harness::new(fast_sim());
    put(&h, "shot.png", PNG);
    let manifest = h.write("b.csv", &shared_image_jobs(1, "shot.png"));
    let theirs = "my own notes, which happen to sit at this name\n";
    let ledger = h.write("results.csv.uploads.jsonl", theirs);
    let o = h.run(&manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "`{}` is not a file veo-batch wrote",
            ledger.display()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&ledger).expect("kept"), theirs);
    assert_eq!(generate_calls(&h), 0);
    assert_eq!(upload_calls(&h), 0);
}
