//! Flags, the manifest's `run:`/`output:` settings and the defaults, resolved into
//! one validated [`RunConfig`] before any work starts. A flag beats the manifest,
//! the manifest beats the default.

use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::plan::ResumeOptions;
use crate::cli::RunArgs;
use crate::cost::PriceTable;
use crate::manifest::{Job, Manifest};
use crate::paths::file_stem;
use crate::progress::Mode;
use crate::retry::RetryPolicy;
use crate::units::Rate;

/// How long an upload lives on the service unless told otherwise (its docs say 24 h
/// in one place and 3 days in another: the shorter one).
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The most requests in flight a run takes: far above any account's limit.
pub const MAX_CONCURRENCY: usize = 1000;
/// The most tries of one request.
pub const MAX_ATTEMPTS: u32 = 100;
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// The shortest wait between two checks of a task.
pub const POLL_MIN: Duration = Duration::from_secs(2);
/// Status checks per run: the service's 10 per second per key, with a margin for
/// the jitter between a send and its arrival.
pub const DEFAULT_POLL_RATE: Rate = Rate {
    count: 8,
    per: Duration::from_secs(1),
};
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// record-info answers "record is null" for a task this young without it being lost.
pub const RECORD_NULL_GRACE: Duration = Duration::from_secs(5 * 60);
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Jobs worked on at once; bounds memory, far above what the rate limit keeps busy.
pub const MAX_ACTIVE: usize = 4096;

/// Everything a run needs, resolved from flags, manifest and defaults.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub jobs: Vec<Job>,
    pub results: PathBuf,
    pub videos_dir: PathBuf,
    pub concurrency: usize,
    pub rate: Rate,
    pub retry: RetryPolicy,
    /// The longest wait between two checks of a task that may be done.
    pub poll_interval: Duration,
    /// The shortest wait between two checks of a task.
    pub poll_min: Duration,
    /// Status checks of the whole run, at most.
    pub poll_rate: Rate,
    /// Learn when to check a task from the tasks of its kind seen done (on by
    /// default); off, every task is checked every `poll_interval`, as before the
    /// schedule existed (the benchmarks compare the two).
    pub learn_schedule: bool,
    pub task_timeout: Duration,
    pub record_null_grace: Duration,
    pub no_wait: bool,
    pub resume: ResumeOptions,
    pub progress: crate::progress::Mode,
    /// Sync every batch of rows to disk before acting on it.
    pub sync: bool,
    /// Jobs worked on at once (waiting on the rate limit, polling, downloading).
    pub max_active: usize,
    pub seed: u64,
    pub prices: PriceTable,
    /// Stop submitting before the batch's spend (what the results file records
    /// plus this run's) would pass this many credits.
    pub max_credits: Option<f64>,
    /// Where `max_credits` was set, as messages name it: the flag, or the manifest's key.
    pub max_credits_setting: &'static str,
    /// Stop submitting before this run's own spend would pass this many credits.
    pub max_run_credits: Option<f64>,
    /// Submit only the first N jobs still to send (jobs already sent always go on).
    pub limit: Option<usize>,
    /// Submit only N jobs still to send, drawn at random (with `seed`).
    pub sample: Option<usize>,
    /// How long an uploaded local image lives on the service (`--upload-ttl`).
    pub upload_ttl: Duration,
    /// Where the results log and the videos go when they live in a bucket; the
    /// run itself works in local staging paths (`results`, `videos_dir`).
    pub bucket: crate::store::run::Hooks,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

/// Where progress goes: decided by the caller from `-q` and whether stderr is a
/// terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Terminal,
    Plain,
    Quiet,
}

/// Settings for the HTTP client, resolved with the rest.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub run: RunConfig,
    pub request_timeout: Duration,
}

/// Resolves `args` and `manifest` into the run's settings; the manifest's jobs move
/// into them, as a copy of 100,000 jobs would cost start-up time and memory. With
/// `time_scale` below 1 (`--simulate`), the manifest's and the default durations and
/// rate window are scaled as the simulator scales the service; flags are taken as
/// given.
pub fn resolve(
    args: &RunArgs,
    manifest: Manifest,
    time_scale: f64,
    output: Output,
) -> Result<Resolved, ConfigError> {
    let m = &manifest.run;
    let scale = |d: Duration| d.mul_f64(time_scale);
    let err = |setting, message: &str| ConfigError {
        setting,
        message: message.to_owned(),
    };

    // Before anything else: a URL taken as a path would create a folder named `s3:`
    // (a bucket URL reaches here only when the run was not set up for it).
    for (setting, value) in [
        ("--results", &args.results),
        ("--videos-dir", &args.videos_dir),
    ] {
        if let Some(value) = value {
            crate::store::refuse_url(&value.to_string_lossy())
                .map_err(|message| ConfigError { setting, message })?;
        }
    }

    let concurrency = args
        .concurrency
        .or(m.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(err("--concurrency", "must be 1 to 1000"));
    }
    let rate = match (args.rate, m.rate) {
        (Some(r), _) => r,
        (None, r) => {
            let r = r.unwrap_or(Rate::KIE_DEFAULT);
            Rate {
                per: scale(r.per),
                ..r
            }
        }
    };
    let poll_rate = match args.poll_rate {
        Some(r) => r,
        None => Rate {
            per: scale(DEFAULT_POLL_RATE.per),
            ..DEFAULT_POLL_RATE
        },
    };
    if poll_rate.count == 0 || poll_rate.per.is_zero() {
        return Err(err(
            "--poll-rate",
            "must allow at least one check per period",
        ));
    }
    let max_attempts = args
        .max_attempts
        .or(m.max_attempts)
        .unwrap_or(RetryPolicy::DEFAULT.max_attempts);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(err("--max-attempts", "must be 1 to 100"));
    }
    let pick = |flag: Option<crate::units::Span>, manifest: Option<crate::units::Span>, default| {
        flag.map(|s| s.0)
            .unwrap_or_else(|| scale(manifest.map_or(default, |s| s.0)))
    };
    let poll_interval = pick(args.poll_interval, m.poll_interval, DEFAULT_POLL_INTERVAL);
    let task_timeout = pick(args.task_timeout, m.task_timeout, DEFAULT_TASK_TIMEOUT);
    let request_timeout = args
        .request_timeout
        .or(m.request_timeout)
        .map_or(DEFAULT_REQUEST_TIMEOUT, |s| s.0);
    if poll_interval.is_zero() {
        return Err(err("--poll-interval", "must be above 0"));
    }
    for (flag, value) in [
        ("--max-credits", args.max_credits.or(m.max_credits)),
        ("--max-run-credits", args.max_run_credits),
    ] {
        if value.is_some_and(|c| c.is_nan() || c < 0.0) {
            return Err(err(flag, "must be a number of credits, 0 or more"));
        }
    }
    if request_timeout.is_zero() {
        return Err(err("--request-timeout", "must be above 0"));
    }
    if args.upload_ttl.is_some_and(|t| t.0.is_zero()) {
        return Err(err("--upload-ttl", "must be above 0"));
    }

    let progress_mode = match output {
        Output::Quiet => Mode::Quiet,
        Output::Terminal => Mode::Bar,
        Output::Plain => Mode::Lines(
            args.progress_interval
                .map_or(PROGRESS_EVERY.mul_f64(time_scale.max(0.1)), |s| s.0),
        ),
    };
    // `output:` paths come from the manifest already resolved against its folder.
    let stem = file_stem(&manifest.name);
    let results = results_file(args.results.as_deref(), &manifest);
    let videos_dir = args
        .videos_dir
        .clone()
        .or_else(|| manifest.output.videos_dir.clone())
        .unwrap_or_else(|| PathBuf::from("videos").join(&stem));

    Ok(Resolved {
        run: RunConfig {
            concurrency,
            rate,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::DEFAULT.scaled(time_scale)
            },
            poll_interval,
            poll_min: scale(POLL_MIN).min(poll_interval),
            poll_rate,
            task_timeout,
            record_null_grace: scale(RECORD_NULL_GRACE),
            no_wait: args.no_wait,
            resume: ResumeOptions {
                retry_failed: args.retry_failed,
                resubmit_in_doubt: args.resubmit_in_doubt,
                download: !args.no_download,
            },
            progress: progress_mode,
            seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
            prices: manifest.prices,
            max_credits: args.max_credits.or(m.max_credits),
            max_credits_setting: credits_setting(args.max_credits, m.max_credits),
            max_run_credits: args.max_run_credits,
            limit: args.limit,
            sample: args.sample,
            upload_ttl: args
                .upload_ttl
                .map_or_else(|| scale(DEFAULT_UPLOAD_TTL), |s| s.0),
            ..RunConfig::with_defaults(manifest.jobs, results, videos_dir)
        },
        request_timeout,
    })
}

impl RunConfig {
    /// A run of `jobs` with every setting at its default: the service's rate, real
    /// time, downloads on, rows synced, no progress output, no spending limit.
    pub fn with_defaults(jobs: Vec<Job>, results: PathBuf, videos_dir: PathBuf) -> RunConfig {
        RunConfig {
            jobs,
            results,
            videos_dir,
            concurrency: DEFAULT_CONCURRENCY,
            rate: Rate::KIE_DEFAULT,
            retry: RetryPolicy::DEFAULT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            poll_min: POLL_MIN,
            poll_rate: DEFAULT_POLL_RATE,
            learn_schedule: true,
            task_timeout: DEFAULT_TASK_TIMEOUT,
            record_null_grace: RECORD_NULL_GRACE,
            no_wait: false,
            resume: ResumeOptions {
                download: true,
                ..ResumeOptions::default()
            },
            progress: Mode::Quiet,
            sync: true,
            max_active: MAX_ACTIVE,
            seed: 1,
            prices: PriceTable::default(),
            max_credits: None,
            max_credits_setting: MAX_CREDITS_FLAG,
            max_run_credits: None,
            limit: None,
            sample: None,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            bucket: crate::store::run::Hooks::default(),
        }
    }
}

/// How messages name `--max-credits`.
pub const MAX_CREDITS_FLAG: &str = "--max-credits";

/// Where the batch's spending limit comes from: the flag wins over the manifest.
pub fn credits_setting(flag: Option<f64>, manifest: Option<f64>) -> &'static str {
    match (flag, manifest) {
        (None, Some(_)) => "the manifest's max_credits",
        _ => MAX_CREDITS_FLAG,
    }
}

/// The results file of a batch: `--results`, else the manifest's `output.results`
/// (already resolved against the manifest's folder), else [`default_results`].
pub fn results_file(flag: Option<&std::path::Path>, manifest: &Manifest) -> PathBuf {
    flag.map(std::path::Path::to_path_buf)
        .or_else(|| manifest.output.results.clone())
        .unwrap_or_else(|| default_results(&manifest.name))
}

/// The results file of a manifest named `name` when neither a flag nor the
/// manifest names one.
pub fn default_results(name: &str) -> PathBuf {
    PathBuf::from("results").join(format!("{}.csv", file_stem(name)))
}
