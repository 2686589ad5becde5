//! The store modules against an in-memory store: locations, the secret kept out
//! of Debug, the log read back from an empty machine, compaction, the lease, and a
//! store that "dies" after its k-th write for every k (a kill at each point).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt as _};
use object_store::memory::InMemory;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::lease::{Fence, Lease, LeaseError, LeaseTimes, take_over};
use super::log::{CheckpointLog, LogError, log_dir, read};
use super::video::{UploadPolicy, Uploaded, upload};
use super::*;
use crate::checkpoint::{Record, State};

#[test]
fn locations_parse_and_other_schemes_name_the_flag() {
    assert_eq!(
        parse_location("--results", "s3://bkt/runs/x.csv"),
        Ok(Location::S3(BucketUrl {
            bucket: "bkt".into(),
            key: "runs/x.csv".into()
        }))
    );
    assert_eq!(
        parse_location("--videos-dir", "S3://bkt"),
        Ok(Location::S3(BucketUrl {
            bucket: "bkt".into(),
            key: String::new()
        }))
    );
    assert_eq!(
        parse_location("--results", "results/x:1.csv"),
        Ok(Location::Local("results/x:1.csv".into()))
    );
    assert_eq!(
        parse_location("--results", r"C:\runs\x.csv"),
        Ok(Location::Local(r"C:\runs\x.csv".into()))
    );
    let err = parse_location("output.videos_dir", "gs://bkt/v").unwrap_err();
    assert_eq!(
        err.to_string(),
        "output.videos_dir: `gs://bkt/v` has the scheme `gs://`, which veo-batch cannot write to; give a local path or an s3://bucket/prefix URL"
    );
    assert!(matches!(
        parse_location("--results", "s3:///x.csv"),
        Err(LocationError::NoBucket { .. })
    ));
    assert!(matches!(
        parse_location("--results", "s3://b/a//x.csv"),
        Err(LocationError::BadKey { .. })
    ));
    assert!(matches!(
        parse_location("--results", "s3://b/../x.csv"),
        Err(LocationError::BadKey { .. })
    ));
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
const TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN";

fn env() -> S3Env {
    S3Env::from_lookup(|name| {
        Some(
            match name {
                "AWS_ACCESS_KEY_ID" => "AKIAEXAMPLE",
                "AWS_SECRET_ACCESS_KEY" => SECRET,
                "AWS_SESSION_TOKEN" => TOKEN,
                "AWS_REGION" => "eu-west-1",
                "AWS_ENDPOINT_URL" => "http://127.0.0.1:9",
                "AWS_ALLOW_HTTP" => "true",
                _ => return None,
            }
            .to_owned(),
        )
    })
}

#[test]
fn the_secret_and_token_are_in_no_debug_output() {
    let env = env();
    assert!(env.allow_http);
    assert_eq!(env.region.as_deref(), Some("eu-west-1"));
    let bucket = Bucket::s3("bkt", &env, Retries::default()).unwrap();
    let store_debug = format!("{:?}", bucket.store());
    for shown in [
        format!("{env:?}"),
        format!("{env:#?}"),
        format!("{bucket:?}"),
        store_debug,
    ] {
        assert!(!shown.contains(SECRET), "secret in {shown}");
        assert!(!shown.contains(TOKEN), "token in {shown}");
    }
}

fn memory() -> (Arc<InMemory>, Bucket) {
    let mem = Arc::new(InMemory::new());
    let bucket = Bucket::with_store("bkt", mem.clone());
    (mem, bucket)
}

fn record(id: &str, state: State, attempts: u32) -> Record {
    Record {
        job_id: id.into(),
        state: Some(state),
        task_id: Some(format!("task-{id}-{attempts}")),
        attempts,
        prompt: format!("a prompt, with \"quotes\" and a\nnewline for {id}"),
        updated_at: "2026-12-07T19:00:00Z".into(),
        ..Record::default()
    }
}

fn results() -> Key {
    Key::from("runs/batch.csv")
}

#[tokio::test]
async fn the_log_rebuilds_on_an_empty_machine_and_compacts_to_the_plain_csv() {
    let (mem, bucket) = memory();
    let (mut log, rebuilt) = CheckpointLog::open(&bucket, results(), Fence::open_ended("t"))
        .await
        .unwrap();
    assert!(rebuilt.loaded.records.is_empty());
    let a1 = record("a", State::Submitted, 1);
    let b1 = record("b", State::Submitting, 1);
    let a2 = record("a", State::Succeeded, 1);
    log.commit(&[&a1, &b1]).await.unwrap();
    log.commit(&[&a2]).await.unwrap();
    drop(log);

    // Another machine: only the bucket.
    let fresh = Bucket::with_store("bkt", mem.clone());
    let rebuilt = read(&fresh, &results()).await.unwrap();
    assert_eq!(rebuilt.loaded.order, ["a", "b"]);
    assert_eq!(rebuilt.loaded.records["a"], a2);
    assert_eq!(rebuilt.loaded.records["b"], b1);
    assert_eq!(rebuilt.commits, [1, 2]);

    let (mut log, _) = CheckpointLog::open(&fresh, results(), Fence::open_ended("t"))
        .await
        .unwrap();
    let b2 = record("b", State::Failed, 1);
    log.commit(&[&b2]).await.unwrap();
    let compacted = log.compact().await.unwrap();
    assert_eq!((compacted.rows, compacted.commits), (2, 3));
    let listed = mem
        .list_with_delimiter(Some(&log_dir(&results())))
        .await
        .unwrap();
    assert!(listed.objects.is_empty(), "log objects left: {listed:?}");

    // The compacted object is the local file's format: the header, one row a job.
    let csv = mem.get(&results()).await.unwrap().bytes().await.unwrap();
    let mut expected = Vec::new();
    crate::checkpoint::writer::encode_header(&mut expected).unwrap();
    crate::checkpoint::writer::encode_row(&a2, &mut expected).unwrap();
    crate::checkpoint::writer::encode_row(&b2, &mut expected).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&csv),
        String::from_utf8_lossy(&expected)
    );

    // Commits after a compaction number on from it and read after it.
    let a3 = record("a", State::Succeeded, 2);
    log.commit(&[&a3]).await.unwrap();
    let rebuilt = read(&fresh, &results()).await.unwrap();
    assert_eq!(rebuilt.through, 3);
    assert_eq!(rebuilt.commits, [4]);
    assert_eq!(rebuilt.loaded.records["a"], a3);
    assert_eq!(rebuilt.loaded.records["b"], b2);
}

#[tokio::test]
async fn a_second_writer_on_the_same_commit_is_a_conflict_not_an_overwrite() {
    let (_mem, bucket) = memory();
    let fence = Fence::open_ended("t");
    let (mut one, _) = CheckpointLog::open(&bucket, results(), fence.clone())
        .await
        .unwrap();
    let (mut two, _) = CheckpointLog::open(&bucket, results(), fence)
        .await
        .unwrap();
    one.commit(&[&record("a", State::Submitted, 1)])
        .await
        .unwrap();
    let err = two
        .commit(&[&record("a", State::Pending, 0)])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict { .. }), "{err}");
    // And it stays refused.
    assert!(matches!(
        two.commit(&[&record("b", State::Pending, 0)]).await,
        Err(LogError::Conflict { .. })
    ));
    let rebuilt = read(&bucket, &results()).await.unwrap();
    assert_eq!(rebuilt.loaded.records["a"].state, Some(State::Submitted));
}

fn short() -> LeaseTimes {
    LeaseTimes {
        ttl: Duration::from_millis(600),
        renew_every: Duration::from_millis(100),
        margin: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn a_held_lease_refuses_a_second_run_and_expires_after_a_killed_one() {
    let (_mem, bucket) = memory();
    let key = Lease::key_for(&results());
    let first = Lease::acquire(&bucket, key.clone(), "host-a pid 1", short())
        .await
        .unwrap();
    let err = Lease::acquire(&bucket, key.clone(), "host-b pid 2", short())
        .await
        .unwrap_err();
    match &err {
        LeaseError::Held { holder, url, .. } => {
            assert_eq!(holder, "host-a pid 1");
            assert_eq!(url, "s3://bkt/runs/batch.csv.lease");
        }
        other => panic!("{other}"),
    }
    // The first run is killed: it neither renews nor releases.
    let fence = first.fence();
    drop(first);
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Its own fence closed before the lease could be taken over.
    assert!(fence.check().is_err());
    assert!(
        Lease::acquire(&bucket, key.clone(), "host-b", short())
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = Lease::acquire(&bucket, key, "host-b pid 2", short())
        .await
        .unwrap();
    assert!(second.fence().check().is_ok());
}

#[tokio::test]
async fn a_run_that_lost_its_lease_writes_nothing_more() {
    let (_mem, bucket) = memory();
    let key = Lease::key_for(&results());
    let mut first = Lease::acquire(&bucket, key.clone(), "a", short())
        .await
        .unwrap();
    let (mut log, _) = CheckpointLog::open(&bucket, results(), first.fence())
        .await
        .unwrap();
    log.commit(&[&record("a", State::Submitted, 1)])
        .await
        .unwrap();
    first.renew().await.unwrap();

    // An operator frees the lease at once, and another run takes it.
    take_over(&bucket, &key).await.unwrap();
    let second = Lease::acquire(&bucket, key, "b", short()).await.unwrap();
    let (mut log2, _) = CheckpointLog::open(&bucket, results(), second.fence())
        .await
        .unwrap();

    // The first run wakes up: its renewal fails, and its log refuses to write.
    assert!(matches!(first.renew().await, Err(LeaseError::Lost(_))));
    let err = log
        .commit(&[&record("a", State::Pending, 9)])
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Fenced(_)), "{err}");
    assert!(matches!(log.compact().await, Err(LogError::Fenced(_))));
    log2.commit(&[&record("a", State::Succeeded, 1)])
        .await
        .unwrap();
    let rebuilt = read(&bucket, &results()).await.unwrap();
    assert_eq!(rebuilt.loaded.records["a"].state, Some(State::Succeeded));
}

#[tokio::test]
async fn keep_alive_renews_past_the_ttl_and_release_frees_the_lease_at_once() {
    let (_mem, bucket) = memory();
    let key = Lease::key_for(&results());
    let lease = Lease::acquire(&bucket, key.clone(), "a", short())
        .await
        .unwrap();
    let alive = lease.keep_alive();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        alive.fence().check().is_ok(),
        "renewals kept the fence open"
    );
    assert!(
        Lease::acquire(&bucket, key.clone(), "b", short())
            .await
            .is_err()
    );
    let lease = alive.stop().await.unwrap();
    lease.release().await.unwrap();
    Lease::acquire(&bucket, key, "b", short()).await.unwrap();
}

/// A store whose process "dies" at its `budget`-th write: that write and every
/// call after it fail, as if the machine had been killed there.
#[derive(Debug)]
struct Dying {
    inner: Arc<InMemory>,
    writes_left: AtomicUsize,
}

impl Dying {
    fn write(&self) -> object_store::Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(killed());
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
    fn read(&self) -> object_store::Result<()> {
        match self.writes_left.load(Ordering::SeqCst) {
            0 => Err(killed()),
            _ => Ok(()),
        }
    }
}

fn killed() -> object_store::Error {
    object_store::Error::Generic {
        store: "dying",
        source: "killed".into(),
    }
}

impl std::fmt::Display for Dying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dying")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Dying {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.write()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Key,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.read()?;
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Key>>,
    ) -> BoxStream<'static, object_store::Result<Key>> {
        match self.write() {
            Ok(()) => self.inner.delete_stream(locations),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }
    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.read() {
            Ok(()) => self.inner.list(prefix),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }
    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        self.read()?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.write()?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// The rows of step `step` of a small run: every job moves on one state.
fn step_rows(step: u32) -> Vec<Record> {
    let states = [State::Submitting, State::Submitted, State::Succeeded];
    (0..4)
        .filter(|j| j <= &step)
        .map(|j| {
            let s = (step - j).min(2) as usize;
            record(&format!("job{j}"), states[s], step)
        })
        .collect()
}

/// Runs 6 commits with compactions between, as far as the store lets it; the
/// rows of every commit that returned Ok, in order.
async fn run_until_killed(bucket: &Bucket) -> Vec<Vec<Record>> {
    let mut acked = Vec::new();
    let Ok((mut log, _)) = CheckpointLog::open(bucket, results(), Fence::open_ended("t")).await
    else {
        return acked;
    };
    for step in 0..6 {
        let rows = step_rows(step);
        let refs: Vec<&Record> = rows.iter().collect();
        if log.commit(&refs).await.is_err() {
            return acked;
        }
        acked.push(rows);
        if step % 2 == 1 && log.compact().await.is_err() {
            return acked;
        }
    }
    let _ = log.compact().await;
    acked
}

#[tokio::test]
async fn a_kill_at_any_write_loses_no_acknowledged_row_and_resumes_cleanly() {
    let mut kills = 0;
    for budget in 0..60 {
        let mem = Arc::new(InMemory::new());
        let dying = Arc::new(Dying {
            inner: mem.clone(),
            writes_left: AtomicUsize::new(budget),
        });
        let acked = run_until_killed(&Bucket::with_store("bkt", dying.clone())).await;
        if dying.writes_left.load(Ordering::SeqCst) > 0 {
            // The run finished before its budget: every later budget would too.
            assert_eq!(acked.len(), 6);
            break;
        }
        kills += 1;
        // An empty machine reads what the bucket holds.
        let bucket = Bucket::with_store("bkt", mem.clone());
        let rebuilt = read(&bucket, &results())
            .await
            .unwrap_or_else(|e| panic!("kill after {budget} writes: unreadable: {e}"));
        let mut expected = std::collections::HashMap::new();
        for rows in &acked {
            for r in rows {
                expected.insert(r.job_id.clone(), r.clone());
            }
        }
        for (id, r) in &expected {
            let got = &rebuilt.loaded.records[id];
            // The commit the kill cut may or may not have landed: never older
            // than the last acknowledged row, at most one step newer.
            assert!(
                got == r || got.attempts == r.attempts + 1,
                "kill after {budget} writes: {id} reads {got:?}, acknowledged {r:?}"
            );
        }
        // The next run on that machine finishes the record and compacts it.
        let (mut log, _) = CheckpointLog::open(&bucket, results(), Fence::open_ended("t"))
            .await
            .unwrap();
        let last = step_rows(9);
        log.commit(&last.iter().collect::<Vec<_>>()).await.unwrap();
        log.compact().await.unwrap();
        let rebuilt = read(&bucket, &results()).await.unwrap();
        assert_eq!(rebuilt.commits, Vec::<u64>::new());
        for r in &last {
            assert_eq!(&rebuilt.loaded.records[&r.job_id], r);
        }
    }
    assert!(kills > 10, "only {kills} kill points were tried");
}

#[tokio::test]
async fn a_video_goes_up_whole_once_and_the_same_bytes_count_as_done() {
    let (mem, bucket) = memory();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.mp4");
    std::fs::write(&small, vec![7u8; 1000]).unwrap();
    let big = dir.path().join("big.mp4");
    let big_bytes: Vec<u8> = (0..25_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &big_bytes).unwrap();
    let policy = UploadPolicy {
        multipart_above: 10_000,
        part_size: 8_000,
        tries: 2,
    };
    let key = Key::from("videos/small.mp4");
    assert_eq!(
        upload(&bucket, &key, &small, policy).await.unwrap(),
        Uploaded::Put
    );
    assert_eq!(
        upload(&bucket, &key, &small, policy).await.unwrap(),
        Uploaded::AlreadyThere
    );
    let big_key = Key::from("videos/big.mp4");
    assert_eq!(
        upload(&bucket, &big_key, &big, policy).await.unwrap(),
        Uploaded::Parts(4)
    );
    let there = mem.get(&big_key).await.unwrap().bytes().await.unwrap();
    assert_eq!(there.as_ref(), big_bytes.as_slice());
    assert_eq!(
        upload(&bucket, &big_key, &big, policy).await.unwrap(),
        Uploaded::AlreadyThere
    );
    // Other bytes under the name are never overwritten.
    let err = upload(&bucket, &key, &big, policy).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("already exists with other content"),
        "{err}"
    );
}

/// A probe object a run killed mid-probe left behind is removed by the next
/// probe, and nothing else under the prefix is touched.
#[tokio::test]
async fn a_probe_left_by_a_killed_run_is_removed_by_the_next() {
    let mem = Arc::new(InMemory::new());
    let bucket = Bucket::with_store("bkt", mem.clone());
    let left = Key::from("videos/.veo-batch-probe-41-00000000000000aa");
    let video = Key::from("videos/job-1.mp4");
    for key in [&left, &video] {
        mem.put(key, "x".into()).await.unwrap();
    }
    bucket.probe("videos").await.unwrap();
    let names: Vec<String> = mem
        .list(Some(&Key::from("videos")))
        .map(|o| o.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(names, ["videos/job-1.mp4"]);
}
