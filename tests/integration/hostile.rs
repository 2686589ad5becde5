//! Hostile input, hostile servers, secrets, paths, concurrency and disks: the
//! binary is fed broken manifests and results files, talks to stub servers that
//! answer badly, runs with a distinctive key through every failure, and writes to
//! places it cannot. Each case must end in a clear, located error or a job-level
//! outcome: never a panic, never a half-written video, never the key in output.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use veo_batch::api::{ApiKey, Client, ClientConfig, ErrorClass};
use veo_batch::checkpoint::{self, State};
use veo_batch::exit::Exit;
use veo_batch::sim::{FaultRate, SAMPLE_MP4, SimConfig};

use crate::harness::{Harness, fast_sim, stderr, text_jobs};

/// The key every test here runs with: distinctive, so any leak is found by search.
const SECRET: &str = "sk-TEST-SECRET-1234567890";
/// No test process may take longer than this.
const PROCESS_LIMIT: Duration = Duration::from_secs(90);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(name)
}

fn bin() -> Command {
    crate::harness::veo_batch()
}

/// Runs `cmd` to its end, killing it (and failing the test) past [`PROCESS_LIMIT`].
fn bounded(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veo-batch starts");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("veo-batch took longer than {PROCESS_LIMIT:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_panic(o: &Output, what: &str) {
    let text = all_output(o);
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{what}: the process panicked:\n{text}"
    );
    assert_ne!(
        o.status.code(),
        Some(101),
        "{what}: exit code 101 is a panic"
    );
}

fn assert_no_secret(text: &str, what: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains("1234567890"),
        "{what}: the key leaked:\n{text}"
    );
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().is_some_and(|e| e == ext)
}

/// `veo-batch run` against the harness's simulator with its own results and videos
/// paths (the harness's `run_cmd` sets both).
fn run_cmd_at(h: &Harness, manifest: &Path, results: &Path, videos: &Path) -> Command {
    let mut cmd = h.run_cmd_at(manifest, results, videos);
    cmd.args(["--rate", "1000/1s"]);
    cmd
}

/// `veo-batch run` against the harness's simulator, bounded in time.
fn run_bounded(h: &Harness, manifest: &Path, extra: &[&str]) -> Output {
    let mut cmd = h.run_cmd(manifest);
    if !extra.contains(&"--rate") {
        cmd.args(["--rate", "1000/1s"]);
    }
    bounded(cmd.args(extra))
}

// ---------------------------------------------------------------------------
// 1. Hostile manifests and results files
// ---------------------------------------------------------------------------

/// Each broken manifest of the corpus and where its first problem must be placed
/// (`""`: the file as a whole, no line).
const BROKEN_MANIFESTS: &[(&str, &str)] = &[
    ("wrong-types.yaml", ":5:12: job \"seeds-text\": seeds:"),
    ("wrong-types.csv", ":2: job \"a\": seeds:"),
    ("jobs-not-a-list.yaml", ":2:7: jobs:"),
    ("top-level-list.yaml", ":1:1:"),
    ("missing-prompt-cell.csv", ":3: prompt: is required"),
    (
        "missing-prompt-column.csv",
        ":2: job \"a\": prompt: is required",
    ),
    ("unknown-column.csv", ":1: sedes: unknown column"),
    ("ragged-row.csv", ":3:"),
    ("unterminated-quote.csv", ":2:"),
    ("deep-nesting.yaml", ":4:"),
    ("deep-maps.yaml", ":37:"),
    ("alias-bomb.yaml", ":6:"),
    ("invalid-utf8.yaml", ":4:17:"),
    ("invalid-utf8.csv", ":3: prompt: is not valid UTF-8"),
    ("binary-garbage.yaml", ":1:1:"),
    ("binary-garbage.csv", ":1:"),
    ("nul-bytes.yaml", ":3:10:"),
    ("empty.yaml", ":1:1:"),
    ("empty.csv", ": the manifest has no jobs"),
];

fn assert_refused(o: &Output, path: &Path, located: &str, what: &str) {
    assert_no_panic(o, what);
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(Exit::Usage as i32),
        "{what}: exit 2 expected:\n{err}"
    );
    let expected = format!("{}{located}", path.display());
    assert!(
        err.contains(&expected),
        "{what}: stderr must contain `{expected}`:\n{err}"
    );
}

#[test]
fn broken_manifests_are_refused_located_and_send_nothing() {
    let h = Harness::new(fast_sim());
    for (name, located) in BROKEN_MANIFESTS {
        let path = fixture(name);
        let validate = bounded(bin().arg("validate").arg(&path));
        assert_refused(&validate, &path, located, &format!("validate {name}"));
        assert!(validate.stdout.is_empty(), "validate {name}: no summary");

        let run = run_bounded(&h, &path, &[]);
        assert_refused(&run, &path, located, &format!("run {name}"));
        assert!(!h.path("results.csv").exists(), "run {name}: no results");
    }
    assert_eq!(h.stats().generate_calls, 0, "nothing was sent");
    assert_eq!(h.stats().tasks_created, 0);
}

/// Big cells are generated here rather than committed.
#[test]
fn huge_cells_are_refused_quickly_or_passed_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mb = 1024 * 1024;

    // An unknown column with a 4 MB name: the suggestion search must not hang.
    let wide = dir.path().join("wide-header.csv");
    std::fs::write(&wide, format!("id,prompt,{}\na,b,c\n", "c".repeat(4 * mb))).expect("write");
    let o = bounded(bin().arg("validate").arg(&wide));
    assert_refused(&o, &wide, ":1: ", "a 4 MB column name");
    assert!(stderr(&o).contains("unknown column"), "{}", stderr(&o));
    assert!(
        stderr(&o).len() < 64 * 1024,
        "the message quotes a bounded part of the column name ({} bytes)",
        stderr(&o).len()
    );

    // A YAML job key of 2 MB: same search, from the YAML side.
    let key = dir.path().join("wide-key.yaml");
    std::fs::write(
        &key,
        format!(
            "name: k\njobs:\n  - id: a\n    prompt: x\n    ? {}\n    : 1\n",
            "k".repeat(2 * mb)
        ),
    )
    .expect("write");
    let o = bounded(bin().arg("validate").arg(&key));
    assert_refused(&o, &key, ":5:", "a 2 MB YAML key");
    assert!(stderr(&o).contains("job \"a\": "), "{}", stderr(&o));
    assert!(stderr(&o).len() < 64 * 1024, "bounded message");

    // A 4 MB seeds cell is not a seed.
    let seeds = dir.path().join("huge-seed.csv");
    std::fs::write(
        &seeds,
        format!("id,prompt,seeds\na,b,{}\n", "9".repeat(4 * mb)),
    )
    .expect("write");
    let o = bounded(bin().arg("validate").arg(&seeds));
    assert_refused(&o, &seeds, ":2: job \"a\": seeds: ", "a 4 MB seed");
    assert!(stderr(&o).len() < 64 * 1024, "bounded message");

    // A YAML manifest past the 64 MiB cap is refused before it is parsed.
    let big = dir.path().join("big.yaml");
    {
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(65 * mb as u64).expect("grow");
    }
    let o = bounded(bin().arg("validate").arg(&big));
    assert_refused(&o, &big, ": ", "a 65 MiB YAML file");
    assert!(stderr(&o).contains("64 MiB"), "{}", stderr(&o));

    // A 16 MB prompt breaks no rule of the API (it sets no length): it is accepted
    // as written, and the service decides; it must not crash or stall validation.
    let long = dir.path().join("long-prompt.csv");
    std::fs::write(&long, format!("id,prompt\na,{}\n", "p".repeat(16 * mb))).expect("write");
    let o = bounded(bin().arg("validate").arg(&long));
    assert_no_panic(&o, "a 16 MB prompt");
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
}

/// A results file that cannot be used stops the run before anything is sent, and
/// is left exactly as it was (it is the user's record of what was paid for).
const BROKEN_RESULTS: &[(&str, &str)] = &[
    ("bad-header.csv", ":1: not a veo-batch results file"),
    (
        "malformed-middle.csv",
        ":3: job \"job-2\": state: \"exploded\" is not a state",
    ),
    (
        "wrong-type-attempts.csv",
        ":3: job \"job-2\": attempts: \"lots\" is not a whole number",
    ),
    ("short-middle-row.csv", ":3: has 5 cells, expected 17"),
    ("invalid-utf8.csv", ":3: is not valid UTF-8"),
    ("binary-garbage.csv", ":1: "),
    ("other-manifest.csv", "` belongs to another manifest"),
];

#[test]
fn broken_results_files_are_refused_located_and_kept() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("batch.yaml", &text_jobs(3));
    let results = h.path("results.csv");
    for (name, located) in BROKEN_RESULTS {
        let original = std::fs::read(fixture(&format!("results/{name}"))).expect("fixture");
        std::fs::write(&results, &original).expect("copy fixture");
        let o = run_bounded(&h, &manifest, &[]);
        let what = format!("results {name}");
        assert_no_panic(&o, &what);
        assert_eq!(
            o.status.code(),
            Some(Exit::Usage as i32),
            "{what}:\n{}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(&format!("{}", results.display())) && stderr(&o).contains(located),
            "{what}: stderr must name the file and contain `{located}`:\n{}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read(&results).expect("still there"),
            original,
            "{what}: the file is not touched"
        );
        // `status` reads the same file and must refuse it the same way.
        let s = bounded(bin().arg("status").arg(&results));
        assert_no_panic(&s, &format!("status {name}"));
        if *name != "other-manifest.csv" {
            assert_eq!(s.status.code(), Some(Exit::Usage as i32), "status {name}");
        }
    }
    assert_eq!(h.stats().generate_calls, 0, "nothing was sent");
}

#[test]
fn a_torn_last_results_row_is_dropped_with_a_warning_and_the_run_resumes() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("batch.yaml", &text_jobs(3));
    std::fs::copy(fixture("results/torn-last.csv"), h.path("results.csv")).expect("copy");
    let o = run_bounded(&h, &manifest, &[]);
    assert_no_panic(&o, "torn last row");
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning:") && stderr(&o).contains("torn last row"),
        "{}",
        stderr(&o)
    );
    let results = h.results();
    assert!(!results.torn && !results.needs_compaction());
    assert!(
        results
            .records
            .values()
            .all(|r| r.state() == State::Succeeded)
    );
    assert_eq!(h.stats().tasks_created, 3);
}

// ---------------------------------------------------------------------------
// 2. Arbitrary bytes into the parsers
// ---------------------------------------------------------------------------

const SEED_YAML: &str = r#"name: seed
defaults:
  model: veo3_fast
  aspect_ratio: "16:9"
jobs:
  - id: a-{c}
    prompt: "the {c} shoe"
    matrix:
      c: [red, blue]
  - id: r
    prompt: "x"
    generationType: REFERENCE_2_VIDEO
    imageUrls: [https://e.com/a.png]
    repeat: 2
    seeds: [10001, 10002]
output:
  results: out/r.csv
run:
  concurrency: 2
  rate: 5/s
"#;
const SEED_CSV: &str = "id,prompt,imageUrls,seeds,enableTranslation\n\
a,\"multi\nline, \"\"quoted\"\"\",https://e.com/a.png|https://e.com/b.png,12345,yes\n\
,plain,,,\n";
const SEED_RESULTS: &str = "job_id,state,task_id,attempts,model,generation_type,aspect_ratio,prompt,fingerprint,video_urls,upgrade_urls,video_paths,error_code,error_message,submitted_at,finished_at,updated_at\n\
a,succeeded,veo_task_1,1,veo3_fast,TEXT_2_VIDEO,16:9,\"multi\nline\",00ff,http://h/v.mp4,,v/a.mp4,,,2026-11-23T00:00:00Z,2026-11-23T00:00:01Z,2026-11-23T00:00:01Z\n\
b,failed,veo_task_2,2,veo3,TEXT_2_VIDEO,9:16,p,00ee,,,,422,\"bad, very\",,,2026-11-23T00:00:00Z\n";

/// Random bytes, or a valid document with a few bytes overwritten, inserted and
/// the end cut off: the second finds the parsers' deeper paths.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        0..3usize,
        proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
            0..8,
        ),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(seed, edits, cut)| {
            let mut b = [SEED_YAML, SEED_CSV, SEED_RESULTS][seed]
                .as_bytes()
                .to_vec();
            for (at, byte, insert) in edits {
                let k = at.index(b.len() + 1);
                if insert || k == b.len() {
                    b.insert(k, byte);
                } else {
                    b[k] = byte;
                }
            }
            if let Some(cut) = cut {
                b.truncate(cut.index(b.len() + 1));
            }
            b
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..1024), mutated]
}

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn manifest_loaders_never_panic(bytes in hostile_bytes()) {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["m.yaml", "m.csv"] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).expect("write");
            if let Err(e) = veo_batch::manifest::load(&path) {
                // Every problem is located in the file that was read.
                prop_assert!(!e.diagnostics.is_empty());
                for d in &e.diagnostics {
                    prop_assert!(d.to_string().starts_with(&path.display().to_string()), "{}", d);
                }
            }
        }
    }

    #[test]
    fn results_loader_never_panics(bytes in hostile_bytes(), torn in any::<bool>()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.csv");
        let _ = checkpoint::parse_reader(&bytes[..], &path, torn);
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = checkpoint::load(&path) {
            prop_assert!(e.to_string().contains(&path.display().to_string()), "{}", e);
        }
    }
}

#[test]
fn a_garbage_results_file_without_a_final_newline_is_not_taken_for_torn() {
    // A file whose first line is not UTF-8 and that does not end with a newline
    // is no torn header: taken for one, it would load as empty and be overwritten.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("r.csv");
    std::fs::write(&path, b"\xff\xfe garbage\x00 without a newline").expect("write");
    let e = checkpoint::load(&path).expect_err("refused");
    assert!(e.to_string().contains(":1:"), "{e}");
    // A real torn header (a prefix of the real one) is still dropped.
    std::fs::write(&path, b"job_id,state,task").expect("write");
    let loaded = checkpoint::load(&path).expect("loads").expect("exists");
    assert!(loaded.torn && loaded.records.is_empty());
}

// ---------------------------------------------------------------------------
// 3. Hostile servers
// ---------------------------------------------------------------------------

const VIDEO_LEN: usize = 64 * 1024;

fn video() -> Vec<u8> {
    (0..VIDEO_LEN).map(|i| (i % 251) as u8).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Gen {
    Ok,
    WrongContentType,
    TruncatedJson,
    Html502,
    Huge,
    /// 422 whose message quotes the Authorization header back.
    EchoAuth,
    /// An HTML 502 page whose title quotes the Authorization header.
    EchoAuthHtml,
    /// 307 to the same endpoint on another port.
    RedirectTo(SocketAddr),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Files {
    Ok,
    /// The result URL redirects to the video on another port.
    RedirectTo(SocketAddr),
    /// The result URL is on a raw server that sends less than it declares.
    Cut(SocketAddr),
    /// The result URL is on a port nobody listens on.
    Closed(SocketAddr),
    /// The result URL is a local file, not http(s).
    FileScheme,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Poll {
    Ok,
    TruncatedJson,
    Html502,
}

/// How get-1080p-video answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hd {
    Ready,
    TruncatedJson,
    Html502,
    /// A job-level failure that is not "processing".
    Refused,
}

#[derive(Clone)]
struct Stub {
    addr: SocketAddr,
    gen_mode: Gen,
    files: Files,
    poll: Poll,
    hd: Hd,
    /// The Authorization header of every request (None when absent).
    auth: Arc<Mutex<Vec<Option<String>>>>,
    tasks: Arc<AtomicU64>,
}

fn seen_auth(stub: &Stub, headers: &HeaderMap) -> String {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    stub.auth.lock().expect("log").push(auth.clone());
    auth.unwrap_or_default()
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn stub_generate(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    let auth = seen_auth(&s, &headers);
    let n = s.tasks.fetch_add(1, Ordering::SeqCst);
    let ok = format!(r#"{{"code":200,"msg":"success","data":{{"taskId":"veo_task_{n}"}}}}"#);
    match s.gen_mode {
        Gen::Ok => json(ok),
        Gen::WrongContentType => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], ok).into_response(),
        Gen::TruncatedJson => json(r#"{"code":200,"msg":"success","data":{"taskId":"veo_ta"#.into()),
        Gen::Html502 => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        )
            .into_response(),
        Gen::Huge => json(format!(
            r#"{{"code":200,"msg":"{}","data":{{"taskId":"veo_huge"}}}}"#,
            "x".repeat(9 * 1024 * 1024)
        )),
        Gen::EchoAuth => json(format!(
            r#"{{"code":422,"msg":"invalid request from {auth} (key {})","data":null}}"#,
            auth.trim_start_matches("Bearer ")
        )),
        Gen::EchoAuthHtml => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><head><title>502 for {auth}</title></head><body>{auth}</body></html>"),
        )
            .into_response(),
        Gen::RedirectTo(other) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{other}/api/v1/veo/generate"))],
        )
            .into_response(),
    }
}

async fn stub_record_info(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    seen_auth(&s, &headers);
    match s.poll {
        Poll::Ok => {}
        Poll::TruncatedJson => return json(r#"{"code":200,"msg":"success","data":{"succ"#.into()),
        Poll::Html502 => {
            return (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><head><title>502 Bad Gateway</title></head></html>",
            )
                .into_response();
        }
    }
    let url = match s.files {
        Files::Ok => format!("http://{}/files/v.mp4", s.addr),
        Files::RedirectTo(_) => format!("http://{}/files/moved.mp4?sig=abc", s.addr),
        Files::Cut(raw) | Files::Closed(raw) => format!("http://{raw}/files/v.mp4"),
        Files::FileScheme => "file:///etc/passwd".to_owned(),
    };
    json(format!(
        r#"{{"code":200,"msg":"success","data":{{"taskId":"t","successFlag":1,"response":{{"resultUrls":["{url}"]}}}}}}"#
    ))
}

async fn stub_credit(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    seen_auth(&s, &headers);
    // The balance check at the start of a run gets the same hostile answers as polls.
    match s.poll {
        Poll::Ok => json(r#"{"code":200,"msg":"success","data":100000}"#.into()),
        Poll::TruncatedJson => json(r#"{"code":200,"msg":"succ"#.into()),
        Poll::Html502 => {
            (StatusCode::BAD_GATEWAY, "<html><title>502</title></html>").into_response()
        }
    }
}

async fn stub_1080p(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    seen_auth(&s, &headers);
    match s.hd {
        Hd::Ready => json(format!(
            r#"{{"code":200,"msg":"success","data":{{"resultUrl":"http://{}/files/v.mp4"}}}}"#,
            s.addr
        )),
        Hd::TruncatedJson => json(r#"{"code":200,"msg":"success","data":{"resu"#.into()),
        Hd::Html502 => (
            StatusCode::BAD_GATEWAY,
            "<html><title>502 Bad Gateway</title></html>",
        )
            .into_response(),
        Hd::Refused => {
            json(r#"{"code":422,"msg":"upgrade refused for this video","data":null}"#.into())
        }
    }
}

async fn stub_file(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    seen_auth(&s, &headers);
    ([(header::CONTENT_TYPE, "video/mp4")], video()).into_response()
}

async fn stub_moved(AxState(s): AxState<Stub>, headers: HeaderMap) -> Response {
    seen_auth(&s, &headers);
    match s.files {
        Files::RedirectTo(other) => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("http://{other}/files/v.mp4"))],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A kie.ai look-alike on 127.0.0.1:0 that answers as told, on the given runtime.
fn start_stub(rt: &tokio::runtime::Runtime, gen_mode: Gen, files: Files) -> Stub {
    start_stub_polling(rt, gen_mode, files, Poll::Ok)
}

fn start_stub_polling(
    rt: &tokio::runtime::Runtime,
    gen_mode: Gen,
    files: Files,
    poll: Poll,
) -> Stub {
    start_stub_full(rt, gen_mode, files, poll, Hd::Ready)
}

fn start_stub_full(
    rt: &tokio::runtime::Runtime,
    gen_mode: Gen,
    files: Files,
    poll: Poll,
    hd: Hd,
) -> Stub {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stub = Stub {
            addr,
            gen_mode,
            files,
            poll,
            hd,
            auth: Arc::default(),
            tasks: Arc::default(),
        };
        let app = Router::new()
            .route("/api/v1/veo/generate", post(stub_generate))
            .route("/api/v1/veo/record-info", get(stub_record_info))
            .route("/api/v1/chat/credit", get(stub_credit))
            .route("/api/v1/veo/get-1080p-video", get(stub_1080p))
            .route("/files/v.mp4", get(stub_file))
            .route("/files/moved.mp4", get(stub_moved))
            .with_state(stub.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        stub
    })
}

/// Answers every connection with a video head declaring `declared` bytes, sends
/// 1000 of them, and closes: a download that stops midway.
fn start_cut_server(rt: &tokio::runtime::Runtime, declared: usize) -> SocketAddr {
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let _ = sock.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {declared}\r\n\r\n"
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&video()[..1000]).await;
                    let _ = sock.flush().await;
                });
            }
        });
        addr
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `veo-batch run` of `jobs` text jobs against `stub`, with the secret key, at -vv.
fn run_against(dir: &Path, stub: &Stub, jobs: usize, extra: &[&str]) -> Output {
    let manifest = dir.join("batch.yaml");
    std::fs::write(&manifest, text_jobs(jobs)).expect("manifest");
    bounded(
        bin()
            .env("KIE_API_KEY", SECRET)
            .current_dir(dir)
            .arg("-vv")
            .arg("run")
            .arg(&manifest)
            .args(["--api-base", &format!("http://{}", stub.addr)])
            .arg("--results")
            .arg(dir.join("results.csv"))
            .arg("--videos-dir")
            .arg(dir.join("videos"))
            .args(["--poll-interval", "30ms", "--request-timeout", "3s"])
            .args(["--poll-rate", "1000/1s"])
            .args(["--max-attempts", "2", "--rate", "1000/1s"])
            .args(extra),
    )
}

/// What every run against a hostile server must leave: no panic, no key anywhere,
/// a loadable results file, and every `.mp4` complete.
fn check_aftermath(dir: &Path, o: &Output, what: &str) -> checkpoint::Loaded {
    assert_no_panic(o, what);
    assert_no_secret(&all_output(o), what);
    let results_text = std::fs::read_to_string(dir.join("results.csv")).unwrap_or_default();
    assert_no_secret(&results_text, &format!("{what}: results file"));
    let loaded = checkpoint::load(&dir.join("results.csv"))
        .unwrap_or_else(|e| panic!("{what}: results file loads: {e}"))
        .unwrap_or_else(|| panic!("{what}: results file exists"));
    for f in walk(dir) {
        if has_ext(&f, "mp4") {
            assert_eq!(
                std::fs::read(&f).expect("read video"),
                video(),
                "{what}: {} is complete",
                f.display()
            );
        }
        assert!(
            !has_ext(&f, "part"),
            "{what}: part file {} was left behind",
            f.display()
        );
    }
    loaded
}

fn only_state(loaded: &checkpoint::Loaded) -> State {
    let states: Vec<State> = loaded.records.values().map(|r| r.state()).collect();
    assert!(!states.is_empty());
    assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
    states[0]
}

#[test]
fn hostile_api_answers_become_job_outcomes() {
    let rt = runtime();
    // (mode, expected exit, expected state, text the error must contain)
    let cases = [
        (Gen::TruncatedJson, Exit::NotFinished, State::InDoubt, ""),
        (Gen::Huge, Exit::NotFinished, State::InDoubt, "larger than"),
        (
            Gen::Html502,
            Exit::JobsFailed,
            State::Failed,
            "502 Bad Gateway",
        ),
        (Gen::WrongContentType, Exit::Ok, State::Succeeded, ""),
    ];
    for (mode, code, state, msg) in cases {
        let what = format!("{mode:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        let stub = start_stub(&rt, mode, Files::Ok);
        let o = run_against(dir.path(), &stub, 2, &[]);
        let loaded = check_aftermath(dir.path(), &o, &what);
        assert_eq!(
            o.status.code(),
            Some(code as i32),
            "{what}:\n{}",
            stderr(&o)
        );
        assert_eq!(only_state(&loaded), state, "{what}");
        for r in loaded.records.values() {
            if !msg.is_empty() {
                let m = r.error_message.clone().unwrap_or_default();
                assert!(m.contains(msg), "{what}: error message {m:?}");
            }
        }
        let mp4s = walk(dir.path())
            .into_iter()
            .filter(|f| has_ext(f, "mp4"))
            .count();
        assert_eq!(
            mp4s,
            if state == State::Succeeded { 2 } else { 0 },
            "{what}"
        );
        if mode == Gen::TruncatedJson || mode == Gen::Huge {
            // In doubt: sent once each, never again.
            assert_eq!(stub.tasks.load(Ordering::SeqCst), 2, "{what}");
        }
    }
}

#[test]
fn hostile_downloads_never_leave_a_half_written_video() {
    let rt = runtime();

    // A result URL that redirects to another port: followed, without the key.
    let dir = tempfile::tempdir().expect("temp dir");
    let other = start_stub(&rt, Gen::Ok, Files::Ok);
    let stub = start_stub(&rt, Gen::Ok, Files::RedirectTo(other.addr));
    let o = run_against(dir.path(), &stub, 2, &[]);
    let loaded = check_aftermath(dir.path(), &o, "redirected download");
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_eq!(only_state(&loaded), State::Succeeded);
    assert!(loaded.records.values().all(|r| r.video_paths.len() == 1));
    let other_auth = other.auth.lock().expect("log").clone();
    assert_eq!(other_auth.len(), 2, "both videos came from the other host");
    assert!(
        other_auth.iter().all(Option::is_none),
        "no Authorization on downloads: {other_auth:?}"
    );

    // A download that stops midway: retried, then recorded as not downloaded;
    // no file at the final name and no part file left.
    let dir = tempfile::tempdir().expect("temp dir");
    let cut = start_cut_server(&rt, VIDEO_LEN);
    let stub = start_stub(&rt, Gen::Ok, Files::Cut(cut));
    let o = run_against(dir.path(), &stub, 2, &[]);
    let loaded = check_aftermath(dir.path(), &o, "cut download");
    assert_eq!(
        o.status.code(),
        Some(Exit::JobsFailed as i32),
        "{}",
        stderr(&o)
    );
    for r in loaded.records.values() {
        assert_eq!(
            r.state(),
            State::Succeeded,
            "the video exists and is paid for"
        );
        assert!(r.video_paths.is_empty());
        let m = r.error_message.clone().unwrap_or_default();
        assert!(
            m.contains("download failed") && m.contains("cut short"),
            "{m}"
        );
    }
    assert!(!walk(dir.path()).iter().any(|f| has_ext(f, "mp4")));
    assert_eq!(stub.tasks.load(Ordering::SeqCst), 2, "not resubmitted");
}

#[test]
fn hostile_status_answers_are_asked_again_and_never_resubmitted() {
    let rt = runtime();
    for poll in [Poll::TruncatedJson, Poll::Html502] {
        let what = format!("{poll:?} status");
        let dir = tempfile::tempdir().expect("temp dir");
        let stub = start_stub_polling(&rt, Gen::Ok, Files::Ok, poll);
        let o = run_against(dir.path(), &stub, 2, &["--task-timeout", "1s"]);
        let loaded = check_aftermath(dir.path(), &o, &what);
        assert_eq!(
            o.status.code(),
            Some(Exit::NotFinished as i32),
            "{what}:\n{}",
            stderr(&o)
        );
        assert_eq!(only_state(&loaded), State::Submitted, "{what}");
        assert!(loaded.records.values().all(|r| r.task_id.is_some()));
        assert_eq!(
            stub.tasks.load(Ordering::SeqCst),
            2,
            "{what}: sent once each"
        );
        let polls = stub.auth.lock().expect("log").len();
        assert!(
            polls > 4,
            "{what}: the status was asked again ({polls} calls)"
        );
    }
}

#[test]
fn hostile_upgrade_answers_keep_the_base_video_or_ask_again() {
    let rt = runtime();
    let manifest =
        "name: up\njobs:\n  - id: hd\n    prompt: \"a 1080p clip\"\n    upgrade: 1080p\n";
    for hd in [Hd::Ready, Hd::TruncatedJson, Hd::Html502, Hd::Refused] {
        let what = format!("1080p {hd:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        let stub = start_stub_full(&rt, Gen::Ok, Files::Ok, Poll::Ok, hd);
        std::fs::write(dir.path().join("up.yaml"), manifest).expect("manifest");
        let o = bounded(
            bin()
                .env("KIE_API_KEY", SECRET)
                .current_dir(dir.path())
                .args([
                    "run",
                    "up.yaml",
                    "--api-base",
                    &format!("http://{}", stub.addr),
                ])
                .args(["--results", "results.csv", "--videos-dir", "videos"])
                .args(["--poll-interval", "30ms", "--request-timeout", "3s"])
                .args(["--poll-rate", "1000/1s"])
                .args(["--max-attempts", "2", "--task-timeout", "1s"]),
        );
        let loaded = check_aftermath(dir.path(), &o, &what);
        let r = &loaded.records["hd"];
        let videos: Vec<String> = walk(&dir.path().join("videos"))
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        match hd {
            Hd::Ready => {
                assert_eq!(
                    o.status.code(),
                    Some(Exit::Ok as i32),
                    "{what}:\n{}",
                    stderr(&o)
                );
                assert_eq!(videos, ["hd-1080p.mp4"], "{what}");
            }
            Hd::TruncatedJson | Hd::Html502 => {
                // Asked again until --task-timeout; the run is not finished (4)
                // and the next run asks again.
                let code = o.status.code();
                assert_eq!(
                    code,
                    Some(Exit::NotFinished as i32),
                    "{what}:\n{}",
                    stderr(&o)
                );
                assert!(r.upgrade_urls.is_empty(), "{what}");
                assert_eq!(r.state(), State::Succeeded, "{what}");
                assert!(videos.is_empty(), "{what}: {videos:?}");
            }
            Hd::Refused => {
                // The base video is paid for: it is kept, and the reason recorded.
                assert_eq!(videos, ["hd.mp4"], "{what}");
                assert_eq!(r.state(), State::Succeeded, "{what}");
                let m = r.error_message.clone().unwrap_or_default();
                assert!(
                    m.contains("upgrade refused for this video"),
                    "{what}: the reason is recorded: {r:?}"
                );
            }
        }
        assert_eq!(stub.tasks.load(Ordering::SeqCst), 1, "{what}: sent once");
    }
}

#[test]
fn unreachable_and_non_http_result_urls_are_not_downloaded() {
    let rt = runtime();
    let closed = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    });
    for (files, says) in [
        (Files::Closed(closed), "download failed"),
        (Files::FileScheme, "not http(s)"),
    ] {
        let what = format!("{files:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        let stub = start_stub(&rt, Gen::Ok, files);
        let o = run_against(dir.path(), &stub, 1, &[]);
        let loaded = check_aftermath(dir.path(), &o, &what);
        assert_eq!(
            o.status.code(),
            Some(Exit::JobsFailed as i32),
            "{what}:\n{}",
            stderr(&o)
        );
        for r in loaded.records.values() {
            assert_eq!(r.state(), State::Succeeded, "{what}");
            assert!(r.video_paths.is_empty(), "{what}");
            let m = r.error_message.clone().unwrap_or_default();
            assert!(m.contains(says), "{what}: {m}");
        }
        assert!(
            !walk(dir.path()).iter().any(|f| has_ext(f, "mp4")),
            "{what}"
        );
    }
}

#[test]
fn a_download_over_the_size_cap_is_refused_and_leaves_no_file() {
    let rt = runtime();
    let stub = start_stub(&rt, Gen::Ok, Files::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("videos/v.mp4");
    let client = Client::new(ClientConfig {
        max_download_bytes: 1000,
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::new(format!("http://{}", stub.addr), ApiKey::new(SECRET))
    })
    .expect("client");
    let url = format!("http://{}/files/v.mp4", stub.addr);
    let e = rt
        .block_on(client.download(&url, &dest))
        .expect_err("over the cap");
    assert_eq!(e.class, ErrorClass::Failed, "{e}");
    assert!(e.to_string().contains("1000"), "{e}");
    assert!(walk(dir.path()).is_empty(), "{:?}", walk(dir.path()));

    // A cut body below the cap is retryable and leaves nothing either.
    let cut = start_cut_server(&rt, 5000);
    let client = Client::new(ClientConfig {
        max_download_bytes: 1_000_000,
        ..ClientConfig::new(format!("http://{}", stub.addr), ApiKey::new(SECRET))
    })
    .expect("client");
    let e = rt
        .block_on(client.download(&format!("http://{cut}/files/v.mp4"), &dest))
        .expect_err("cut short");
    assert_eq!(e.class, ErrorClass::Retryable, "{e}");
    assert!(!walk(dir.path()).iter().any(|f| f.is_file()));
}

// ---------------------------------------------------------------------------
// 4. Paths
// ---------------------------------------------------------------------------

#[test]
fn hostile_job_ids_never_write_outside_the_videos_dir() {
    let h = Harness::new(fast_sim());
    let outside = tempfile::tempdir().expect("outside dir");
    let abs = format!("{}/escaped", outside.path().display());
    let ids = [
        "../../escaped-rel",
        "../sibling",
        "a/b",
        "..",
        ".",
        "...",
        ".hidden",
        "a\\b",
        abs.as_str(),
        "ünïcødé-ビデオ",
        "x\u{202e}4pm.exe",
        "-rf",
        "con",
    ];
    let mut yaml = String::from("name: ids\njobs:\n");
    for (i, id) in ids.iter().enumerate() {
        yaml.push_str(&format!(
            "  - id: {}\n    prompt: \"clip {i}\"\n",
            serde_json::to_string(id).expect("json string")
        ));
    }
    let manifest = h.write("ids.yaml", &yaml);
    let o = run_bounded(&h, &manifest, &[]);
    assert_no_panic(&o, "hostile ids");
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));

    let videos = h.path("videos");
    let mut names = std::collections::BTreeSet::new();
    for f in walk(h.dir.path()) {
        if f.parent() == Some(h.dir.path()) {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                // The review page goes beside the results file, named after it.
                [
                    "ids.yaml",
                    "results.csv",
                    "results.csv.lock",
                    "results.html"
                ]
                .contains(&name),
                "unexpected file {}",
                f.display()
            );
            continue;
        }
        assert_eq!(
            f.parent(),
            Some(videos.as_path()),
            "{} is outside",
            f.display()
        );
        assert!(has_ext(&f, "mp4"), "{}", f.display());
        assert_eq!(std::fs::read(&f).expect("video"), SAMPLE_MP4);
        names.insert(f.file_name().expect("name").to_owned());
    }
    assert_eq!(
        names.len(),
        ids.len(),
        "one distinct file per job: {names:?}"
    );
    assert!(
        walk(outside.path()).is_empty(),
        "nothing at the absolute id"
    );
    let parent = h.dir.path().parent().expect("parent");
    assert!(!parent.join("escaped-rel.mp4").exists());
    assert!(!parent.join("sibling.mp4").exists());
    for r in h.results().records.values() {
        for p in &r.video_paths {
            assert_eq!(Path::new(p).parent(), Some(videos.as_path()), "{p}");
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Secrets
// ---------------------------------------------------------------------------

#[test]
fn the_key_never_shows_after_runs_that_fail_every_way() {
    // A simulator that accepts another key: 401 on the first call.
    let refused = Harness::new(fast_sim());
    // One that accepts ours and answers 500 to everything.
    let mut storm = SimConfig {
        api_key: SECRET.to_owned(),
        ..fast_sim()
    };
    storm.faults.http_500 = FaultRate::everywhere(1.0);
    let storm = Harness::new(storm);
    let rt = runtime();
    let echo = start_stub(&rt, Gen::EchoAuth, Files::Ok);
    let echo_html = start_stub(&rt, Gen::EchoAuthHtml, Files::Ok);

    for format in ["text", "json"] {
        for (name, h) in [("401", &refused), ("500 storm", &storm)] {
            let manifest = h.write("b.yaml", &text_jobs(2));
            let o = bounded(
                h.run_cmd(&manifest)
                    .env("KIE_API_KEY", SECRET)
                    .env("RUST_LOG", "trace")
                    .args(["-vv", "--log-format", format])
                    .args(["--max-attempts", "2", "--rate", "1000/1s"]),
            );
            let what = format!("{name} {format}");
            assert_no_panic(&o, &what);
            assert_no_secret(&all_output(&o), &what);
            assert!(
                !o.status.success(),
                "{what}: the run failed:\n{}",
                stderr(&o)
            );
            let results = std::fs::read_to_string(h.path("results.csv")).unwrap_or_default();
            assert_no_secret(&results, &format!("{what}: results"));
            let _ = std::fs::remove_file(h.path("results.csv"));
        }
        for (name, stub) in [("echo 422", &echo), ("echo html 502", &echo_html)] {
            let dir = tempfile::tempdir().expect("temp dir");
            let o = run_against(dir.path(), stub, 2, &["--log-format", format]);
            let what = format!("{name} {format}");
            check_aftermath(dir.path(), &o, &what);
            assert_eq!(
                o.status.code(),
                Some(Exit::JobsFailed as i32),
                "{what}:\n{}",
                stderr(&o)
            );
            assert!(
                all_output(&o).contains("<redacted>"),
                "{what}: the echoed key was replaced:\n{}",
                stderr(&o)
            );
        }
    }
    assert_eq!(refused.stats().tasks_created, 0);

    // A generate call redirected to another port: the key does not follow it.
    let other = start_stub(&rt, Gen::Ok, Files::Ok);
    let hop = start_stub(&rt, Gen::RedirectTo(other.addr), Files::Ok);
    let dir = tempfile::tempdir().expect("temp dir");
    let o = run_against(dir.path(), &hop, 1, &[]);
    check_aftermath(dir.path(), &o, "redirected api call");
    let other_auth = other.auth.lock().expect("log").clone();
    assert!(!other_auth.is_empty(), "the redirect was followed");
    assert!(
        other_auth.iter().flatten().all(|a| !a.contains(SECRET)),
        "the key went to another host: {other_auth:?}"
    );

    // Help texts, with the key in the environment.
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["validate", "--help"],
        vec!["status", "--help"],
        vec!["credits", "--help"],
        vec!["simulate", "--help"],
        vec!["run"],
    ] {
        let o = bounded(bin().env("KIE_API_KEY", SECRET).args(&args));
        assert_no_panic(&o, &format!("{args:?}"));
        assert_no_secret(&all_output(&o), &format!("{args:?}"));
    }
}

// ---------------------------------------------------------------------------
// 6. Concurrency
// ---------------------------------------------------------------------------

#[test]
fn two_runs_started_together_one_runs_one_exits_5() {
    let h = Harness::new(SimConfig {
        generation_time: (Duration::from_millis(800), Duration::from_millis(1200)),
        ..fast_sim()
    });
    let jobs = 4;
    let manifest = h.write("b.yaml", &text_jobs(jobs));
    let spawn = || {
        h.run_cmd(&manifest)
            .args(["--rate", "1000/1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = spawn();
    let b = spawn();
    let outs: Vec<Output> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let mut codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap_or(-1)).collect();
    codes.sort_unstable();
    let texts: Vec<String> = outs.iter().map(stderr).collect();
    assert_eq!(codes, [0, Exit::Locked as i32], "{texts:#?}");
    let loser = outs
        .iter()
        .find(|o| o.status.code() == Some(Exit::Locked as i32))
        .expect("one exited 5");
    let results = h.path("results.csv");
    assert!(
        stderr(loser).contains(&format!("`{}`", results.display())),
        "names the file: {}",
        stderr(loser)
    );
    let stats = h.stats();
    assert_eq!(stats.tasks_created, jobs as u64, "each job created once");
    assert!(stats.tasks_by_fingerprint.values().all(|n| *n == 1));
    assert!(
        h.results()
            .records
            .values()
            .all(|r| r.state() == State::Succeeded)
    );
}

// ---------------------------------------------------------------------------
// 7. Disk
// ---------------------------------------------------------------------------

#[test]
fn a_results_path_that_cannot_be_created_is_a_clear_error_before_sending() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    // A path under a regular file fails for every user, root included.
    h.write("file.txt", "not a directory");
    let results = h.path("file.txt/results.csv");
    let o = bounded(&mut run_cmd_at(&h, &manifest, &results, &h.path("videos")));
    assert_no_panic(&o, "results under a file");
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "`{}` is a file, not a directory",
            h.path("file.txt").display()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.stats().generate_calls, 0);
    assert_eq!(
        std::fs::read_to_string(h.path("file.txt")).expect("file"),
        "not a directory"
    );
}

#[test]
fn a_videos_dir_that_cannot_be_made_stops_the_run_before_anything_is_paid() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    h.write("file.txt", "not a directory");
    let blocked = h.path("file.txt/videos");
    let o = bounded(&mut run_cmd_at(
        &h,
        &manifest,
        &h.path("results.csv"),
        &blocked,
    ));
    assert_no_panic(&o, "videos under a file");
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&blocked.display().to_string()),
        "names the path: {}",
        stderr(&o)
    );
    assert_eq!(h.stats().generate_calls, 0, "nothing was paid for");
    // Given a usable folder, the next run does the whole job.
    let o = run_bounded(&h, &manifest, &[]);
    assert_eq!(o.status.code(), Some(Exit::Ok as i32), "{}", stderr(&o));
    assert_eq!(h.stats().tasks_created, 2);
    assert!(
        h.results()
            .records
            .values()
            .all(|r| r.error_message.is_none() && r.video_paths.len() == 1)
    );
}

#[cfg(unix)]
#[test]
fn read_only_directories_give_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let ro = h.path("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // Root ignores permission bits: then there is nothing to test here (the
    // file-under-a-file tests above cover every user).
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        eprintln!(
            "skipped read_only_directories_give_a_clear_error: running as root, chmod does not stop writes"
        );
        let _ = std::fs::remove_file(ro.join("probe"));
        return;
    }
    let o = bounded(&mut run_cmd_at(
        &h,
        &manifest,
        &ro.join("results.csv"),
        &h.path("videos"),
    ));
    assert_no_panic(&o, "read-only results dir");
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&ro.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.stats().generate_calls, 0);

    let o = bounded(&mut run_cmd_at(
        &h,
        &manifest,
        &h.path("results.csv"),
        &ro.join("v"),
    ));
    assert_no_panic(&o, "read-only videos dir");
    // Found before the first submission: nothing is paid for a video that could not
    // be saved.
    assert_eq!(o.status.code(), Some(Exit::Usage as i32), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&ro.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.stats().generate_calls, 0);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
}

/// No flag value panics: every duration and count flag is range-checked when the
/// command line is read, and a value out of range is a usage error naming the flag
/// (exit 2) before anything is read or sent.
#[test]
fn every_duration_and_count_flag_is_range_checked_at_parse_time() {
    let h = Harness::new(fast_sim());
    let manifest = h.write("b.yaml", &text_jobs(2));
    let cases: &[(&str, &str, &str)] = &[
        (
            "--task-timeout",
            "300000000000y",
            r#""300000000000y" is too long (at most 1y)"#,
        ),
        (
            "--request-timeout",
            "300000000000y",
            r#""300000000000y" is too long (at most 1y)"#,
        ),
        (
            "--poll-interval",
            "300000000000y",
            r#""300000000000y" is too long (at most 1y)"#,
        ),
        ("--poll-interval", "0s", "must be above 0"),
        ("--task-timeout", "0s", "must be above 0"),
        ("--request-timeout", "0ms", "must be above 0"),
        ("--progress-interval", "0s", "must be above 0"),
        ("--upload-ttl", "2y", r#""2y" is too long (at most 1y)"#),
        ("--concurrency", "0", "must be 1 to 1000"),
        ("--concurrency", "100000000000000000", "must be 1 to 1000"),
        ("--max-attempts", "0", "must be 1 to 100"),
        ("--max-attempts", "4294967295", "must be 1 to 100"),
        (
            "--rate",
            "4294967295/1s",
            r#""4294967295/1s" counts too many (at most 100000 per period)"#,
        ),
        (
            "--poll-rate",
            "5/300000000000y",
            r#""5/300000000000y" is not a rate (write it like 20/10s or 5/s)"#,
        ),
        (
            "--max-credits",
            "NaN",
            "must be a number of credits, 0 or more",
        ),
        (
            "--max-run-credits",
            "inf",
            "must be a number of credits, 0 or more",
        ),
        (
            "--confirm-above",
            "-5",
            "must be a number of credits, 0 or more",
        ),
        ("--limit", "many", r#""many" is not a whole number of jobs"#),
    ];
    for (flag, value, why) in cases {
        let placeholder = match *flag {
            "--rate" | "--poll-rate" => "N/DURATION",
            "--concurrency" | "--max-attempts" | "--max-credits" | "--max-run-credits"
            | "--confirm-above" | "--limit" => "N",
            _ => "DURATION",
        };
        let mut cmd = bin();
        cmd.env("KIE_API_KEY", SECRET)
            .current_dir(h.dir.path())
            .arg("run")
            .arg(&manifest)
            .args(["--api-base", &h.sim.base_url(), "-y"])
            .arg(format!("{flag}={value}"));
        assert_cmd::Command::from_std(cmd)
            .timeout(PROCESS_LIMIT)
            .assert()
            .code(i32::from(Exit::Usage.code()))
            .stderr(format!(
                "error: invalid value '{value}' for '{flag} <{placeholder}>': {why}\n\n\
                 For more information, try '--help'.\n"
            ));
    }
    // The manifest's `run:` settings share the ranges.
    let long = h.write(
        "long.yaml",
        "name: b\nrun:\n  task_timeout: 300000000000y\njobs:\n  - id: a\n    prompt: x\n",
    );
    let wide = h.write(
        "wide.yaml",
        "name: b\nrun:\n  concurrency: 5000000000000000000\njobs:\n  - id: a\n    prompt: x\n",
    );
    for (manifest, expected) in [
        (
            &long,
            format!(
                "{}:3:17: task_timeout: \"300000000000y\" is too long (at most 1y)\n\
                 error: manifest `{}` has 1 problem; nothing was sent\n",
                long.display(),
                long.display()
            ),
        ),
        (
            &wide,
            "error: --concurrency: must be 1 to 1000\n".to_owned(),
        ),
    ] {
        let mut cmd = bin();
        cmd.env("KIE_API_KEY", SECRET)
            .current_dir(h.dir.path())
            .arg("run")
            .arg(manifest)
            .args(["--api-base", &h.sim.base_url(), "-y"]);
        assert_cmd::Command::from_std(cmd)
            .timeout(PROCESS_LIMIT)
            .assert()
            .code(i32::from(Exit::Usage.code()))
            .stderr(expected);
    }
    assert_eq!(h.stats().generate_calls, 0, "nothing is sent");
    assert!(!h.path("results.csv").exists(), "nothing is written");
}
