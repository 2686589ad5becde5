//! Bucket output: other schemes and missing credentials refused (exit 2, nothing
//! sent, no folder named `s3:`), and the object-store layer against moto's S3 on loopback, with a
//! fault-injecting proxy for a dropped connection mid-part and a 500 on a commit.

use std::time::Duration;

use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use veo_batch::checkpoint::{Record, State};
use veo_batch::exit::Exit;
use veo_batch::store::lease::{Lease, LeaseError, LeaseTimes, take_over};
use veo_batch::store::log::{CheckpointLog, LogError, read};
use veo_batch::store::video::{UploadPolicy, Uploaded, upload};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};
use crate::moto::{Fault, Moto, Proxy, Rule, SECRET, bucket_at};

/// Before anything is sent (exit 2, no folder named `s3:`): a scheme other than
/// `s3://`, located in the manifest; a bucket without credentials, naming the
/// bucket and what could not be done (the client would otherwise wait on an
/// instance's metadata service).
#[test]
fn other_schemes_and_missing_credentials_are_refused_before_anything_is_sent() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("m.yaml", &text_jobs(2));
    let cases: [(&str, &str, &str); 2] = [
        (
            "s3://bkt/runs/x.csv",
            "videos",
            "error: bucket `bkt`: cannot sign requests to it: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (with AWS_ENDPOINT_URL for a store other than AWS S3)",
        ),
        (
            "results.csv",
            "gs://bkt/videos",
            "error: --videos-dir: `gs://bkt/videos` has the scheme `gs://`, which veo-batch cannot write to; give a local path or an s3://bucket/prefix URL",
        ),
    ];
    for (results, videos, expected) in cases {
        let out = h
            .run_cmd_at(&manifest, results.as_ref(), videos.as_ref())
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(Exit::Usage as i32),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).lines().any(|l| l == expected),
            "{}",
            stderr(&out)
        );
    }
    let manifest = h.write(
        "o.yaml",
        "name: o\noutput:\n  results: gs://bkt/o.csv\njobs:\n  - id: a\n    prompt: x\n",
    );
    let mut cmd = h.run_cmd(&manifest);
    let out = cmd.output().expect("runs");
    assert_eq!(
        out.status.code(),
        Some(Exit::Usage as i32),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("o.yaml:3") && err.contains("`gs://bkt/o.csv` has the scheme `gs://`"),
        "{err}"
    );
    assert_eq!(h.stats().generate_calls, 0);
    assert!(!h.path("s3:").exists(), "a folder named s3: was made");
    assert!(!h.path("gs:").exists(), "a folder named gs: was made");
}

fn record(id: &str, state: State, attempts: u32) -> Record {
    Record {
        job_id: id.into(),
        state: Some(state),
        task_id: Some(format!("task-{id}")),
        attempts,
        prompt: "a prompt".into(),
        updated_at: "2026-12-07T19:00:00Z".into(),
        ..Record::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_the_bucket_and_the_operation_refused() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("runs").await;
    bucket_at(&moto.endpoint(), "runs")
        .probe("batch")
        .await
        .expect("probe");

    let missing = bucket_at(&moto.endpoint(), "no-such-bucket")
        .probe("batch")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with(
            "bucket `no-such-bucket`: cannot list objects under s3://no-such-bucket/batch: the bucket does not exist"
        ),
        "{missing}"
    );

    // A policy that lets the run read but not write.
    let proxy = Proxy::start(
        moto.endpoint(),
        vec![
            Rule {
                method: "PUT",
                contains: "/runs/",
                nth: 0,
                fault: Fault::Forbidden("AccessDenied"),
            },
            Rule {
                method: "GET",
                contains: "/wrong-key",
                nth: 0,
                fault: Fault::Forbidden("InvalidAccessKeyId"),
            },
        ],
    )
    .await;
    let read_only = bucket_at(&proxy.endpoint(), "runs")
        .probe("batch")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        read_only.starts_with(
            "bucket `runs`: cannot create objects under s3://runs/batch: access denied"
        ),
        "{read_only}"
    );
    let wrong_key = bucket_at(&proxy.endpoint(), "wrong-key")
        .probe("batch")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        wrong_key.starts_with(
            "bucket `wrong-key`: cannot list objects under s3://wrong-key/batch: the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are wrong"
        ),
        "{wrong_key}"
    );
    for text in [&missing, &read_only, &wrong_key] {
        assert!(!text.contains(SECRET), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_and_the_lease_work_on_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("runs").await;
    let bucket = bucket_at(&moto.endpoint(), "runs");
    let results = Key::from("team/batch.csv");
    let times = LeaseTimes {
        ttl: Duration::from_secs(30),
        renew_every: Duration::from_secs(5),
        margin: Duration::from_secs(5),
    };
    let lease_key = Lease::key_for(&results);
    let mut lease = Lease::acquire(&bucket, lease_key.clone(), "machine-a", times)
        .await
        .expect("lease");
    // A second run, on another machine.
    let other = bucket_at(&moto.endpoint(), "runs");
    match Lease::acquire(&other, lease_key.clone(), "machine-b", times).await {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, "machine-a"),
        other => panic!("second lease: {other:?}"),
    }
    lease.renew().await.expect("renew with If-Match");

    let (mut log, rebuilt) = CheckpointLog::open(&bucket, results.clone(), lease.fence())
        .await
        .expect("open");
    assert_eq!(rebuilt.loaded.rows, 0);
    let a = record("a", State::Submitted, 1);
    let b = record("b", State::Submitted, 1);
    log.commit(&[&a]).await.expect("commit 1");
    log.commit(&[&b]).await.expect("commit 2");
    // A writer that ignores the lease cannot overwrite a commit (If-None-Match).
    let (mut rogue, _) = CheckpointLog::open(
        &other,
        results.clone(),
        veo_batch::store::lease::Fence::open_ended("rogue"),
    )
    .await
    .expect("open");
    let a_done = record("a", State::Succeeded, 1);
    log.commit(&[&a_done]).await.expect("commit 3");
    assert!(matches!(
        rogue.commit(&[&record("a", State::Pending, 0)]).await,
        Err(LogError::Conflict { .. })
    ));

    // An empty machine rebuilds the rows; compaction leaves the plain CSV.
    let rebuilt = read(&other, &results).await.expect("read");
    assert_eq!(rebuilt.loaded.records["a"], a_done);
    assert_eq!(rebuilt.loaded.records["b"], b);
    let compacted = log.compact().await.expect("compact");
    assert_eq!((compacted.rows, compacted.commits), (2, 3));
    let csv = other
        .store()
        .get(&results)
        .await
        .expect("csv")
        .bytes()
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&csv);
    assert!(text.starts_with("job_id,state,task_id,attempts,"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    // Taken over at once by deleting the lease: the old holder is fenced.
    take_over(&other, &lease_key).await.expect("take over");
    let _new = Lease::acquire(&other, lease_key, "machine-b", times)
        .await
        .expect("lease after take-over");
    assert!(matches!(lease.renew().await, Err(LeaseError::Lost(_))));
    assert!(matches!(log.commit(&[&a]).await, Err(LogError::Fenced(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_answered_500_after_it_landed_is_retried_and_counts_once() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("runs").await;
    let proxy = Proxy::start(
        moto.endpoint(),
        vec![Rule {
            method: "PUT",
            contains: "batch.csv.log/",
            nth: 2,
            fault: Fault::ServerErrorAfter,
        }],
    )
    .await;
    let bucket = bucket_at(&proxy.endpoint(), "runs");
    let results = Key::from("batch.csv");
    let fence = veo_batch::store::lease::Fence::open_ended("t");
    let (mut log, _) = CheckpointLog::open(&bucket, results.clone(), fence)
        .await
        .expect("open");
    log.commit(&[&record("a", State::Submitted, 1)])
        .await
        .expect("commit 1");
    log.commit(&[&record("b", State::Submitted, 1)])
        .await
        .expect("commit 2, answered 500 once, then found there");
    log.commit(&[&record("c", State::Submitted, 1)])
        .await
        .expect("commit 3");
    let puts: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.starts_with("PUT /runs/batch.csv.log/00000000000000000002.csv"))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(puts[0].ends_with("Some(ServerErrorAfter)"), "{puts:?}");
    let rebuilt = read(&bucket_at(&moto.endpoint(), "runs"), &results)
        .await
        .expect("read");
    assert_eq!(rebuilt.commits, [1, 2, 3]);
    assert_eq!(rebuilt.loaded.order, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_part_is_retried_and_the_video_appears_whole() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("media").await;
    let proxy = Proxy::start(
        moto.endpoint(),
        vec![Rule {
            method: "PUT",
            contains: "partNumber=2",
            nth: 1,
            fault: Fault::DropMidBody,
        }],
    )
    .await;
    let bucket = bucket_at(&proxy.endpoint(), "media");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("hero.mp4");
    let bytes: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &bytes).expect("write");
    let policy = UploadPolicy {
        multipart_above: 5 * 1024 * 1024,
        part_size: 5 * 1024 * 1024,
        tries: 1,
    };
    let key = Key::from("videos/hero.mp4");
    assert_eq!(
        upload(&bucket, &key, &file, policy).await.expect("upload"),
        Uploaded::Parts(3)
    );
    let part2: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.contains("partNumber=2"))
        .collect();
    assert_eq!(part2.len(), 2, "part 2 sent twice: {part2:?}");
    let direct = bucket_at(&moto.endpoint(), "media");
    let there = direct
        .store()
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(
        there.as_ref() == bytes.as_slice(),
        "the object differs from the file"
    );
    assert_eq!(
        upload(&direct, &key, &file, policy).await.expect("again"),
        Uploaded::AlreadyThere
    );
    // A small video is created only if absent; the same bytes again count as done.
    let small = dir.path().join("small.mp4");
    std::fs::write(&small, b"not really a video").expect("write");
    let small_key = Key::from("videos/small.mp4");
    assert_eq!(
        upload(&direct, &small_key, &small, policy)
            .await
            .expect("put"),
        Uploaded::Put
    );
    assert_eq!(
        upload(&direct, &small_key, &small, policy)
            .await
            .expect("again"),
        Uploaded::AlreadyThere
    );
}
