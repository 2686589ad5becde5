//! Shared set-up for tests that run the `veo-batch` binary against an in-process
//! simulator: a temp directory, a simulator on 127.0.0.1:0, and the one command
//! builder ([`veo_batch`], [`Harness::cmd`]) with a cleared environment so results
//! never depend on the developer's machine; the kill loop the storms share
//! ([`run_then_kill`]); and `run` driven in process ([`Harness::run_in_process`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use veo_batch::checkpoint::{self, Loaded};
use veo_batch::sim::{self, SimConfig, SimHandle, SimStats};

/// The one way a test starts `veo-batch` (xh's style): the built binary with a
/// cleared environment, so nothing on the developer's machine (a key, a proxy, a log
/// filter, colours) changes what it does. Error cases chain `assert_cmd`'s
/// `.assert()` with the exit code and the exact stderr.
pub fn veo_batch() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("veo-batch"));
    cmd.env_clear().env("NO_COLOR", "1");
    cmd
}

pub struct Harness {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    /// Serves the simulator from its worker threads while the test blocks on the
    /// `veo-batch` process; dropped last.
    _rt: tokio::runtime::Runtime,
}

/// Whether the tests run under CI, where a test whose tool is missing fails
/// instead of skipping. CI services set `CI` to `true`, some to `1` or their own
/// name; empty, `0` and `false` say no.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A simulator that answers fast: generation takes 0.1-0.3 s, no rate limit.
pub fn fast_sim() -> SimConfig {
    SimConfig {
        generation_time: (Duration::from_millis(100), Duration::from_millis(300)),
        time_scale: 1.0,
        rate: None,
        // The live service's "record ..." answers after success, kept short.
        record_lag: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

impl Harness {
    pub fn new(config: SimConfig) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = rt
            .block_on(sim::start(config, "127.0.0.1:0".parse().expect("addr")))
            .expect("simulator starts");
        Harness {
            _rt: rt,
            sim,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// [`veo_batch`] in the temp directory, with the demo key and this simulator's
    /// address in its environment (`KIE_API_KEY`, `KIE_API_BASE`): any subcommand
    /// that calls the service reaches the simulator.
    pub fn cmd(&self) -> Command {
        let mut cmd = veo_batch();
        cmd.env("KIE_API_KEY", sim::DEMO_KEY)
            .env("KIE_API_BASE", self.sim.base_url())
            .current_dir(self.dir.path());
        cmd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in the temp directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// `veo-batch run MANIFEST` against the simulator, fast polling, results and
    /// videos in the temp directory, at the default rate unless told otherwise.
    pub fn run_cmd(&self, manifest: &Path) -> Command {
        self.run_cmd_at(manifest, &self.path("results.csv"), &self.path("videos"))
    }

    /// [`run_cmd`](Harness::run_cmd) with the results file and videos folder given.
    pub fn run_cmd_at(&self, manifest: &Path, results: &Path, videos: &Path) -> Command {
        let mut cmd = self.cmd();
        cmd.arg("run")
            .arg(manifest)
            .args(["--api-base", &self.sim.base_url()])
            .arg("--results")
            .arg(results)
            .arg("--videos-dir")
            .arg(videos)
            .args(["--poll-interval", "30ms"])
            // Tests poll fast; the run's pace of checks is tested on its own.
            .args(["--poll-rate", "1000/1s"])
            .args(["--request-timeout", "2s"]);
        cmd
    }

    /// Runs to the end with `extra` flags; at a rate the simulator does not limit
    /// unless `extra` sets one.
    pub fn run(&self, manifest: &Path, extra: &[&str]) -> Output {
        let mut cmd = self.run_cmd(manifest);
        if !extra.contains(&"--rate") {
            cmd.args(["--rate", "1000/1s"]);
        }
        cmd.args(extra).output().expect("veo-batch runs")
    }

    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    pub fn results(&self) -> Loaded {
        checkpoint::load(&self.path("results.csv"))
            .expect("results file loads")
            .expect("results file exists")
            .with_paths_resolved(&self.path("results.csv"))
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A manifest of `n` text jobs `job-1 .. job-n`, each with its own prompt.
pub fn text_jobs(n: usize) -> String {
    let mut s = String::from("name: batch\njobs:\n");
    for i in 1..=n {
        s.push_str(&format!(
            "  - id: job-{i}\n    prompt: \"clip number {i}\"\n"
        ));
    }
    s
}

impl Harness {
    /// `veo-batch status ARGS` in the temp directory, with a cleared environment.
    pub fn status(&self, args: &[&str]) -> Output {
        veo_batch()
            .current_dir(self.dir.path())
            .arg("status")
            .args(args)
            .output()
            .expect("veo-batch status runs")
    }
}

impl Harness {
    /// Drives `veo-batch run MANIFEST FLAGS` in this process (oha's style), where a
    /// subprocess is not what a test is about: the same command line as
    /// [`run`](Harness::run) (its flags unless `flags` sets them), parsed as the
    /// binary parses it, the key from a file (nothing read from this process's
    /// environment), the run's own durations (retry delays, the maintenance floor)
    /// scaled by `time_scale` as `--simulate` scales them, and its log lines appended
    /// to [`run_log`](Harness::run_log). The exit code.
    pub fn run_in_process(&self, manifest: &Path, flags: &[&str], time_scale: f64) -> i32 {
        use clap::Parser as _;
        use veo_batch::cli::{Cli, Command};

        let key_file = self.write("api-key", sim::DEMO_KEY);
        let mut argv: Vec<std::ffi::OsString> = ["veo-batch", "run"].map(Into::into).into();
        argv.push(manifest.into());
        for (flag, value) in [
            ("--api-base", self.sim.base_url().into()),
            ("--api-key-file", key_file.into_os_string()),
            ("--results", self.path("results.csv").into_os_string()),
            ("--videos-dir", self.path("videos").into_os_string()),
            ("--poll-interval", "30ms".into()),
            ("--poll-rate", "1000/1s".into()),
            ("--request-timeout", "2s".into()),
            ("--rate", "1000/1s".into()),
        ] {
            if !flags.contains(&flag) {
                argv.push(flag.into());
                argv.push(value);
            }
        }
        argv.extend(flags.iter().map(Into::into));
        let cli = Cli::try_parse_from(argv).expect("the run's flags parse");
        let Command::Run(mut args) = cli.command else {
            unreachable!("parsed as run")
        };
        // Clap fills this flag from the environment; a test names its own.
        if !flags.contains(&"--upload-base") {
            args.upload_base = None;
        }
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.path("run.log"))
            .expect("open the run log");
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(log_file))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let runtime = veo_batch::runner::runtime().expect("runtime");
        let signals = veo_batch::runner::Signals::default();
        let run = veo_batch::commands::run::run_at(
            *args,
            true,
            veo_batch::commands::Style::Quiet,
            time_scale,
            Some(signals),
        );
        let ended = tracing::subscriber::with_default(subscriber, || runtime.block_on(run));
        match ended {
            Ok(exit) => exit.into(),
            Err(e) => veo_batch::commands::report_error(&e, true).into(),
        }
    }

    /// [`run_in_process`](Harness::run_in_process) with the run's retry delays a
    /// tenth of the real ones (0.2 s doubling), for tests of what is retried, not of
    /// how long the waits are.
    pub fn run_quick_retries(&self, manifest: &Path, flags: &[&str]) -> i32 {
        self.run_in_process(manifest, flags, QUICK_RETRIES)
    }

    /// What the runs driven in process logged.
    pub fn run_log(&self) -> String {
        std::fs::read_to_string(self.path("run.log")).unwrap_or_default()
    }
}

/// The clock of a run's own delays in [`Harness::run_quick_retries`].
pub const QUICK_RETRIES: f64 = 0.1;

/// How one round of a kill loop ended.
pub enum Round {
    /// It exited on its own before its kill was due.
    Ended(ExitStatus),
    /// It was SIGKILLed; the results file `results` as the kill left it (it must
    /// load).
    Killed(Loaded),
}

/// One round of the kill loop the storms share: `cmd` spawned, SIGKILLed `after`
/// this long unless it ends first, then the results file at `results` it left.
pub fn run_then_kill(cmd: &mut Command, after: Duration, results: &Path) -> Round {
    let mut child = cmd.spawn().expect("spawn veo-batch");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Round::Ended(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL veo-batch");
    let _ = child.wait();
    match checkpoint::load(results) {
        Ok(loaded) => Round::Killed(loaded.unwrap_or_default()),
        Err(e) => panic!("after a kill, the results file must load: {e}"),
    }
}
