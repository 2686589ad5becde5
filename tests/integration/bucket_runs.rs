//! Runs whose results and videos live in a bucket, end to end: the `veo-batch`
//! binary against the simulator and moto's S3 on loopback, killed with SIGKILL at
//! random points and resumed each time from an empty local folder; a second run on
//! the same results object; a store that fails mid-run; the secret key nowhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use veo_batch::checkpoint::{Loaded, State};
use veo_batch::exit::Exit;
use veo_batch::sim::{SAMPLE_MP4, SimConfig};
use veo_batch::store::Bucket;
use veo_batch::store::lease::{Lease, take_over};
use veo_batch::store::log::read;

use crate::harness::{Harness, fast_sim, text_jobs};
use crate::moto::{Fault, Moto, Proxy, Rule, SECRET, aws_vars, bucket_at};

const RESULTS: &str = "s3://media/team/batch.csv";
const VIDEOS: &str = "s3://media/team/videos";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `veo-batch run` of `manifest` with results and videos in the bucket behind
/// `endpoint`, from the folder `work` (its staging folder inside it), stdout and
/// stderr into `log`.
fn bucket_run(h: &Harness, manifest: &Path, endpoint: &str, work: &Path, log: &Path) -> Command {
    let mut cmd = h.run_cmd_at(manifest, Path::new(RESULTS), Path::new(VIDEOS));
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.current_dir(work)
        .envs(aws_vars(endpoint))
        .arg("--staging-dir")
        .arg(work.join("staging"))
        .args(["--rate", "6/1s", "--concurrency", "8"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    cmd
}

fn wait_bounded(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("veo-batch still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every object of the bucket, by key, with its bytes.
async fn objects(bucket: &Bucket) -> BTreeMap<String, Vec<u8>> {
    use futures::TryStreamExt as _;
    let listed: Vec<_> = bucket
        .store()
        .list(None)
        .try_collect()
        .await
        .expect("list the bucket");
    let mut all = BTreeMap::new();
    for meta in listed {
        let bytes = bucket
            .store()
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        all.insert(meta.location.to_string(), bytes.to_vec());
    }
    all
}

/// How many video objects the bucket holds (not the start-up probe's object).
fn videos_in(rt: &tokio::runtime::Runtime, bucket: &Bucket) -> usize {
    let prefix = Key::from("team/videos");
    rt.block_on(bucket.store().list_with_delimiter(Some(&prefix)))
        .map_or(0, |l| {
            l.objects
                .iter()
                .filter(|o| o.location.as_ref().ends_with(".mp4"))
                .count()
        })
}

/// Whether no file under `dir` holds `needle`.
fn no_file_holds(dir: &Path, needle: &[u8]) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            no_file_holds(&path, needle)?;
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Err(path.display().to_string());
        }
    }
    Ok(())
}

fn in_flight(loaded: &Loaded) -> impl Iterator<Item = &str> {
    loaded.records.values().filter_map(|r| {
        let doubt =
            r.state() == State::InDoubt || (r.state() == State::Submitting && r.task_id.is_none());
        doubt.then_some(r.job_id.as_str())
    })
}

/// The acceptance test: 24 jobs, killed twice at random points and
/// resumed each time from an empty folder, end with exactly one right video per
/// job in the bucket; only a call in flight at a kill may have made a second
/// task; a second run on the same results object exits 5; the secret key is in
/// no output, no object and no staging file.
#[cfg(unix)]
#[test]
fn a_bucket_batch_killed_twice_resumes_from_an_empty_folder_each_time() {
    const JOBS: usize = 24;
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    rt.block_on(moto.create_bucket("media"));
    let bucket = bucket_at(&moto.endpoint(), "media");
    let results = Key::from("team/batch.csv");
    let seed = std::env::var("BUCKET_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("bucket kill test: seed {seed} (BUCKET_KILL_SEED={seed} repeats the kill times)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_millis(2500), Duration::from_millis(4000)),
        ..fast_sim()
    });
    let manifest = h.write("batch.yaml", &text_jobs(JOBS));
    let logs = tempfile::tempdir().expect("logs");
    let mut outputs = String::new();
    let mut doubted: BTreeSet<String> = BTreeSet::new();
    let mut first_task: BTreeMap<String, String> = BTreeMap::new();
    // At 6 submissions a second the 24 take 3-4 s and each generation 2.5-4 s: the
    // first kill lands at a random time in the submissions; the second a random
    // 0-400 ms after this run's first upload, among downloads and uploads (and
    // the submissions left).
    let kills = [rng.u64(800..3000), rng.u64(0..400)];
    for (round, after) in kills.into_iter().enumerate() {
        let work = tempfile::tempdir().expect("an empty folder");
        let log = logs.path().join(format!("round-{round}.log"));
        let started = Instant::now();
        let mut child = bucket_run(&h, &manifest, &moto.endpoint(), work.path(), &log)
            .spawn()
            .expect("spawn veo-batch");
        if round == 0 {
            // A second run on another machine, while the first holds the lease.
            let lease = Lease::key_for(&results);
            let deadline = Instant::now() + Duration::from_secs(20);
            while rt.block_on(bucket.store().head(&lease)).is_err() {
                assert!(Instant::now() < deadline, "no lease after 20 s");
                std::thread::sleep(Duration::from_millis(20));
            }
            let other = tempfile::tempdir().expect("dir");
            let other_log = logs.path().join("second.log");
            let code = bucket_run(&h, &manifest, &moto.endpoint(), other.path(), &other_log)
                .status()
                .expect("second run")
                .code();
            let said = std::fs::read_to_string(&other_log).unwrap_or_default();
            assert_eq!(code, Some(Exit::Locked as i32), "{said}");
            assert!(
                said.contains("another run holds the lease s3://media/team/batch.csv.lease"),
                "{said}"
            );
            outputs.push_str(&said);
        }
        let started = if round == 0 {
            started
        } else {
            let before = videos_in(&rt, &bucket);
            let deadline = Instant::now() + Duration::from_secs(30);
            while videos_in(&rt, &bucket) <= before {
                assert!(
                    child.try_wait().expect("try_wait").is_none(),
                    "ended before an upload"
                );
                assert!(Instant::now() < deadline, "no upload within 30 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            Instant::now()
        };
        while started.elapsed() < Duration::from_millis(after) {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "round {round}: the run ended ({status}) before its kill at {after} ms:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL veo-batch");
        let _ = child.wait();
        outputs.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
        if let Err(file) = no_file_holds(work.path(), SECRET.as_bytes()) {
            panic!("the secret key is in {file}");
        }
        // The record as the bucket holds it after the kill: a task once recorded
        // stays the job's for good.
        let loaded = rt.block_on(read(&bucket, &results)).expect("read").loaded;
        for r in loaded.records.values() {
            if let Some(task) = &r.task_id {
                let first = first_task
                    .entry(r.job_id.clone())
                    .or_insert_with(|| task.clone());
                assert_eq!(first, task, "after kill {round}: {} changed task", r.job_id);
            }
        }
        doubted.extend(in_flight(&loaded).map(str::to_owned));
        // No partial object, ever, under a video's name.
        for (key, bytes) in rt.block_on(objects(&bucket)) {
            if key.starts_with("team/videos/") {
                assert!(
                    bytes == SAMPLE_MP4,
                    "{key}: {} bytes, not the video",
                    bytes.len()
                );
            }
        }
        // The documented way to take over at once from a run known to be dead.
        rt.block_on(take_over(&bucket, &Lease::key_for(&results)))
            .expect("take over");
        eprintln!(
            "kill {round} at {after} ms: {} jobs recorded, {} tasks, {} in doubt so far, {} videos recorded, {} in the bucket",
            loaded.records.len(),
            first_task.len(),
            doubted.len(),
            loaded
                .records
                .values()
                .filter(|r| !r.video_paths.is_empty())
                .count(),
            videos_in(&rt, &bucket)
        );
        drop(work);
    }

    // The last run, from an empty folder too, to the end.
    let work = tempfile::tempdir().expect("an empty folder");
    let log = logs.path().join("last.log");
    let mut child = bucket_run(&h, &manifest, &moto.endpoint(), work.path(), &log)
        .arg("--resubmit-in-doubt")
        .spawn()
        .expect("spawn veo-batch");
    let code = wait_bounded(&mut child, Duration::from_secs(120));
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    outputs.push_str(&said);
    assert_eq!(code, 0, "{said}");
    if let Err(file) = no_file_holds(work.path(), SECRET.as_bytes()) {
        panic!("the secret key is in {file}");
    }

    let rebuilt = rt.block_on(read(&bucket, &results)).expect("read");
    assert!(
        rebuilt.commits.is_empty(),
        "the log was compacted at the end"
    );
    let all = rt.block_on(objects(&bucket));
    let videos: Vec<&String> = all
        .keys()
        .filter(|k| k.starts_with("team/videos/"))
        .collect();
    assert_eq!(videos.len(), JOBS, "one object per job: {videos:?}");
    for i in 1..=JOBS {
        let id = format!("job-{i}");
        let r = &rebuilt.loaded.records[&id];
        assert_eq!(r.state(), State::Succeeded, "{id}");
        assert_eq!(r.video_paths, [format!("{VIDEOS}/{id}.mp4")], "{id}");
        let object = &all[&format!("team/videos/{id}.mp4")];
        assert!(object == SAMPLE_MP4, "{id}: not the video the service made");
        if let Some(first) = first_task.get(&id)
            && !doubted.contains(&id)
        {
            assert_eq!(r.task_id.as_ref(), Some(first), "{id} changed task");
        }
    }
    let csv = String::from_utf8_lossy(&all["team/batch.csv"]).into_owned();
    assert!(csv.starts_with("job_id,state,task_id,"), "{csv}");
    assert_eq!(csv.lines().count(), JOBS + 1, "{csv}");
    for (key, bytes) in &all {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret key is in s3://media/{key}"
        );
    }
    assert!(!outputs.contains(SECRET), "the secret key is in the output");

    // Paid for once each, except a call in flight at a kill.
    let stats = h.stats();
    assert!(
        stats.generate_calls <= (JOBS + doubted.len()) as u64,
        "{} generate calls for {JOBS} jobs, {} in flight at a kill",
        stats.generate_calls,
        doubted.len()
    );
    for (fingerprint, tasks) in &stats.tasks_by_fingerprint {
        assert!(
            *tasks == 1 || (*tasks == 2 && !doubted.is_empty()),
            "{fingerprint}: {tasks} tasks"
        );
    }
    assert!(
        stats
            .tasks_by_fingerprint
            .values()
            .filter(|&&n| n > 1)
            .count()
            <= doubted.len()
    );
}

/// A store failing mid-run: a commit answered 500 after it landed is retried and
/// counts once; a video whose upload keeps failing is recorded like a failed
/// download, and the next run uploads it without generating it again.
#[test]
fn a_failing_store_is_retried_and_a_failed_upload_is_made_by_the_next_run() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    rt.block_on(moto.create_bucket("media"));
    let proxy = rt.block_on(Proxy::start(
        moto.endpoint(),
        vec![
            Rule {
                method: "PUT",
                contains: "/media/team/videos/job-1.mp4",
                nth: 0,
                fault: Fault::ServerError,
            },
            Rule {
                method: "PUT",
                contains: "/media/team/batch.csv.log/",
                nth: 2,
                fault: Fault::ServerErrorAfter,
            },
        ],
    ));
    let h = Harness::new(fast_sim());
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let logs = tempfile::tempdir().expect("logs");
    let work = tempfile::tempdir().expect("dir");
    let log = logs.path().join("first.log");
    let code = rt.block_on(async {
        // The proxy lives on this runtime: the run is waited for off it.
        let mut cmd = bucket_run(&h, &manifest, &proxy.endpoint(), work.path(), &log);
        tokio::task::spawn_blocking(move || cmd.status().expect("run").code())
            .await
            .expect("join")
    });
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(Exit::JobsFailed as i32), "{said}");
    assert!(said.contains("upload to the bucket failed"), "{said}");
    let bucket = bucket_at(&moto.endpoint(), "media");
    let results = Key::from("team/batch.csv");
    let loaded = rt.block_on(read(&bucket, &results)).expect("read").loaded;
    let failed = &loaded.records["job-1"];
    assert_eq!(failed.state(), State::Succeeded);
    assert!(failed.video_paths.is_empty());
    assert!(
        failed
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("the upload to the bucket failed")),
        "{failed:?}"
    );
    assert_eq!(
        loaded.records["job-2"].video_paths,
        [format!("{VIDEOS}/job-2.mp4")]
    );
    let commits: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.contains("ServerErrorAfter"))
        .collect();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!(h.stats().generate_calls, 2);

    // The store works again: the next run, from an empty folder, uploads it.
    let work = tempfile::tempdir().expect("dir");
    let log = logs.path().join("second.log");
    let status = bucket_run(&h, &manifest, &moto.endpoint(), work.path(), &log)
        .status()
        .expect("run");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{said}");
    assert_eq!(h.stats().generate_calls, 2, "generated again");
    let loaded = rt.block_on(read(&bucket, &results)).expect("read").loaded;
    assert_eq!(
        loaded.records["job-1"].video_paths,
        [format!("{VIDEOS}/job-1.mp4")]
    );
    assert!(loaded.records["job-1"].error_message.is_none());

    // status, report and credits read the bucket's batch by its URL.
    let tool = |args: &[&str]| {
        Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"))
            .env_clear()
            .env("KIE_API_KEY", veo_batch::sim::DEMO_KEY)
            .envs(aws_vars(&moto.endpoint()))
            .current_dir(work.path())
            .args(args)
            .output()
            .expect("veo-batch runs")
    };
    let out = tool(&["status", RESULTS]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with(&format!("{RESULTS}: 2 jobs\n")), "{text}");
    assert!(text.contains("succeeded            2"), "{text}");
    let out = tool(&["credits", RESULTS, "--api-base", &h.sim.base_url()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("120 credits"), "{text}");
    let out = tool(&["report", RESULTS]);
    let page_path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::harness::stderr(&out)
    );
    assert_eq!(page_path, "batch.html");
    assert!(
        crate::harness::stderr(&out)
            .contains("presigned URLs that work for whoever has the page, for 7 days"),
        "{}",
        crate::harness::stderr(&out)
    );
    let page = std::fs::read_to_string(work.path().join("batch.html")).expect("page");
    assert!(!page.contains(SECRET));
    // The page's link to job-1's video fetches it, with no credentials.
    let at = page.find("job-1.mp4?X-Amz-").expect("a presigned link");
    let query: String = page[at + "job-1.mp4".len()..]
        .chars()
        .take_while(|&c| c != '"')
        .collect::<String>()
        .replace("\\u0026", "&");
    let link = format!("{}/media/team/videos/job-1.mp4{query}", moto.endpoint());
    let got = rt.block_on(async { reqwest::get(&link).await?.bytes().await });
    assert!(got.expect("presigned GET").as_ref() == SAMPLE_MP4, "{link}");
}

/// Either side alone in the bucket: videos in the bucket with the results local,
/// and results in the bucket with the videos local (recorded as whole paths, since
/// every run rebuilds the results in a staging folder of its own); each run again
/// from another folder finds everything done.
#[test]
fn videos_alone_and_results_alone_in_the_bucket_both_work() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    rt.block_on(moto.create_bucket("media"));
    let h = Harness::new(fast_sim());
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let bucket = bucket_at(&moto.endpoint(), "media");
    let local_results = h.path("local.csv");
    let local_videos = h.path("local-videos");
    let combos: [(&Path, &Path); 2] = [
        (&local_results, Path::new(VIDEOS)),
        (Path::new(RESULTS), &local_videos),
    ];
    for (n, (results, videos)) in combos.into_iter().enumerate() {
        for again in [false, true] {
            let work = tempfile::tempdir().expect("dir");
            let out = h
                .run_cmd_at(&manifest, results, videos)
                .current_dir(work.path())
                .envs(aws_vars(&moto.endpoint()))
                .args(["--rate", "1000/1s"])
                .output()
                .expect("runs");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                crate::harness::stderr(&out)
            );
            assert_eq!(
                h.stats().generate_calls,
                2 * (n as u64 + 1),
                "combination {n}"
            );
            if again {
                assert!(
                    crate::harness::stderr(&out).contains("0 to submit, 0 to resume"),
                    "{}",
                    crate::harness::stderr(&out)
                );
            }
        }
    }
    let local = veo_batch::checkpoint::load(&local_results)
        .expect("loads")
        .expect("exists");
    assert_eq!(
        local.records["job-1"].video_paths,
        [format!("{VIDEOS}/job-1.mp4")]
    );
    let in_bucket = rt
        .block_on(read(&bucket, &Key::from("team/batch.csv")))
        .expect("read")
        .loaded;
    let recorded = &in_bucket.records["job-2"].video_paths;
    assert_eq!(recorded.len(), 1);
    assert_eq!(Path::new(&recorded[0]), local_videos.join("job-2.mp4"));
    assert!(local_videos.join("job-2.mp4").exists());
}

/// A run whose lease is taken over (its object deleted and taken by another run)
/// stops at its next renewal with the fence's message and exit 5, and writes
/// nothing more to the results: not a commit, not a compaction, not the lease.
#[cfg(unix)]
#[test]
fn a_run_that_loses_its_lease_stops_writing_and_exits_5() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    rt.block_on(moto.create_bucket("media"));
    let bucket = bucket_at(&moto.endpoint(), "media");
    let results = Key::from("team/batch.csv");
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_secs(60), Duration::from_secs(60)),
        ..fast_sim()
    });
    let manifest = h.write("batch.yaml", &text_jobs(2));
    let logs = tempfile::tempdir().expect("logs");
    let work = tempfile::tempdir().expect("dir");
    let log = logs.path().join("run.log");
    let mut child = bucket_run(&h, &manifest, &moto.endpoint(), work.path(), &log)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let sent = loop {
        let loaded = rt.block_on(read(&bucket, &results)).expect("read").loaded;
        if loaded.records.len() == 2 && loaded.records.values().all(|r| r.task_id.is_some()) {
            break loaded;
        }
        assert!(Instant::now() < deadline, "not submitted within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lease_key = Lease::key_for(&results);
    rt.block_on(take_over(&bucket, &lease_key))
        .expect("take over");
    let _taken = rt
        .block_on(Lease::acquire(
            &bucket,
            lease_key.clone(),
            "the other machine",
            veo_batch::store::lease::LeaseTimes::default(),
        ))
        .expect("the other run takes the lease");
    let at_takeover = rt.block_on(read(&bucket, &results)).expect("read");
    // Renewed every 15 s: found out within that, and a little.
    let code = wait_bounded(&mut child, Duration::from_secs(40));
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Exit::Locked as i32, "{said}");
    assert!(
        said.contains(
            "this run no longer holds the lease s3://media/team/batch.csv.lease (another run took it over, or it was deleted); it stops writing"
        ),
        "{said}"
    );
    let after = rt.block_on(read(&bucket, &results)).expect("read");
    assert_eq!(
        after.commits, at_takeover.commits,
        "the fenced run wrote a commit"
    );
    assert_eq!(after.loaded.records, at_takeover.loaded.records);
    assert_eq!(sent.records.len(), 2);
    let lease = rt
        .block_on(async { bucket.store().get(&lease_key).await?.bytes().await })
        .expect("lease");
    assert!(
        String::from_utf8_lossy(&lease).contains("the other machine"),
        "the fenced run touched the lease"
    );
    assert_eq!(h.stats().generate_calls, 2);
}

/// A job whose request changed in the manifest is made again; the paid video of
/// the task it replaces is moved to `superseded/` under the videos prefix and
/// recorded there, and the new one takes the name.
#[test]
fn a_superseded_video_moves_aside_in_the_bucket() {
    let Some(moto) = Moto::start() else { return };
    let rt = runtime();
    rt.block_on(moto.create_bucket("media"));
    let h = Harness::new(fast_sim());
    let bucket = bucket_at(&moto.endpoint(), "media");
    let logs = tempfile::tempdir().expect("logs");
    let mut tasks = Vec::new();
    for (n, prompt) in ["a red kite", "a blue kite"].into_iter().enumerate() {
        let manifest = h.write(
            "one.yaml",
            &format!("name: one\njobs:\n  - id: hero\n    prompt: {prompt}\n"),
        );
        let work = tempfile::tempdir().expect("dir");
        let log = logs.path().join(format!("{n}.log"));
        let status = bucket_run(&h, &manifest, &moto.endpoint(), work.path(), &log)
            .status()
            .expect("run");
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{said}");
        let loaded = rt
            .block_on(read(&bucket, &Key::from("team/batch.csv")))
            .expect("read")
            .loaded;
        tasks.push(loaded.records["hero"].clone());
    }
    let (old, new) = (&tasks[0], &tasks[1]);
    let old_task = old.task_id.clone().expect("a task");
    assert_ne!(new.task_id.as_ref(), Some(&old_task));
    assert_eq!(new.video_paths, [format!("{VIDEOS}/hero.mp4")]);
    let aside = format!("{VIDEOS}/superseded/hero.{old_task}.mp4");
    assert_eq!(new.superseded_paths, std::slice::from_ref(&aside));
    let all = rt.block_on(objects(&bucket));
    assert!(
        all.contains_key(&aside["s3://media/".len()..]),
        "the superseded video is not at {aside}: {:?}",
        all.keys().collect::<Vec<_>>()
    );
    assert!(all.contains_key("team/videos/hero.mp4"));
}
