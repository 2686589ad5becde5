//! The command line: clap derive, where the doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::{Rate, Size, Span};

/// Batch runner for the kie.ai Veo 3.1 video API.
///
/// A YAML or CSV manifest of prompt/image jobs is validated, submitted with bounded
/// concurrency, a rate limit and retries, polled to completion, downloaded, and
/// checkpointed to a results CSV, so that an interrupted run resumes where it stopped
/// without paying twice for a video.
#[derive(Debug, Parser)]
#[command(name = "veo-batch", version, after_help = crate::exit::help())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v: debug, -vv: trace). VEO_BATCH_LOG or RUST_LOG set the filter exactly.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors; no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// When to use colour (NO_COLOR is honoured).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a manifest and print what it would send and cost; sends nothing.
    Validate(ValidateArgs),
    /// Take every job of a manifest to the end: submit, poll, download, record.
    #[command(after_help = crate::exit::help())]
    Run(Box<RunArgs>),
    /// Show where the jobs of a run stand, from its results file; sends nothing.
    Status(StatusArgs),
    /// Write the review gallery of a run: one self-contained HTML page; sends nothing.
    Report(ReportArgs),
    /// Show the account's remaining credits.
    Credits(CreditsArgs),
    /// Serve the kie.ai simulator until stopped.
    Simulate(crate::sim::args::SimArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A results CSV, or the manifest whose results to read.
    pub path: PathBuf,

    /// With a manifest: its results CSV, when not the default.
    #[arg(long, value_name = "PATH")]
    pub results: Option<PathBuf>,

    /// Print JSON for machines.
    #[arg(long)]
    pub json: bool,

    /// List the failed jobs only, one per line: id, a tab, the reason.
    #[arg(long, conflicts_with = "json")]
    pub failed: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results CSV, or the manifest whose results to show.
    pub path: PathBuf,

    /// With a manifest: its results CSV, when not the default.
    #[arg(long, value_name = "PATH")]
    pub results: Option<PathBuf>,

    /// Where to write the page (default: beside the results file, <results name>.html).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CreditsArgs {
    /// A results CSV, or a manifest whose results to read: also print the batch's
    /// spend, measured from the balance and at the price table.
    pub path: Option<PathBuf>,

    /// With a manifest: its results CSV, when not the default.
    #[arg(long, value_name = "PATH", requires = "path")]
    pub results: Option<PathBuf>,

    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Where the service is and how to prove who we are.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service's base URL.
    #[arg(
        long,
        env = "KIE_API_BASE",
        hide_env_values = true,
        default_value = "https://api.kie.ai"
    )]
    pub api_base: String,

    /// Read the API key from this file instead of KIE_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Accept a plain-http API or upload base on a host that is not loopback: the
    /// key then travels in clear. Meant only for a private test server you trust.
    #[arg(long)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The manifest (.yaml, .yml or .csv).
    pub manifest: PathBuf,

    /// Print the JSON body of every request, one per line, on stdout.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,

    /// List every job id the manifest expands to (with its video file name), one per
    /// line; a manifest of 20 jobs or fewer lists them in the summary anyway.
    #[arg(long, conflicts_with = "emit")]
    pub jobs: bool,

    /// The largest local image file accepted, like 8MiB or 20MB [default: 8MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_image_size: Option<Size>,

    /// Compare the estimate with this batch spending limit, as `run --max-credits`
    /// would keep it (instead of the manifest's max_credits).
    #[arg(long, value_name = "N")]
    pub max_credits: Option<f64>,

    /// Compare the estimate with this per-run limit, as `run --max-run-credits`.
    #[arg(long, value_name = "N")]
    pub max_run_credits: Option<f64>,

    /// A folder local images may also come from, besides the manifest's own
    /// (repeat it for more); the manifest's `allow_images_from:` does the same.
    #[arg(long, value_name = "DIR")]
    pub allow_images_from: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    Jsonl,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest (.yaml, .yml or .csv).
    pub manifest: PathBuf,

    /// Run against the embedded simulator (time-scaled), not the real service. Needs no key.
    #[arg(long)]
    pub simulate: bool,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// The results CSV (default: results/<manifest name>.csv).
    #[arg(long, value_name = "PATH")]
    pub results: Option<PathBuf>,

    /// Where videos go (default: videos/<manifest name>/).
    #[arg(long, value_name = "DIR")]
    pub videos_dir: Option<PathBuf>,

    /// With results or videos in a bucket: the local folder the run works in
    /// (default: a temporary folder, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,

    /// Requests in flight at most, and as many status checks [default: 8].
    #[arg(long, value_name = "N", value_parser = parse::concurrency)]
    pub concurrency: Option<usize>,

    /// Generate calls at most, as N/DURATION [default: 20/10s, the account limit].
    #[arg(long, value_name = "N/DURATION")]
    pub rate: Option<Rate>,

    /// Tries per request before giving up [default: 8].
    #[arg(long, value_name = "N", value_parser = parse::max_attempts)]
    pub max_attempts: Option<u32>,

    /// Longest wait between status checks of a task that may be done; the first
    /// check comes when tasks of its kind were done in this run [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse::positive_span)]
    pub poll_interval: Option<Span>,

    /// Status checks of the whole run at most, shared by all its tasks, as
    /// N/DURATION; fewer after a 429 [default: 8/1s, under the service's 10 per second].
    #[arg(long, value_name = "N/DURATION")]
    pub poll_rate: Option<Rate>,

    /// Stop waiting for a task after this long; it is polled again on the next run [default: 30m].
    #[arg(long, value_name = "DURATION", value_parser = parse::positive_span)]
    pub task_timeout: Option<Span>,

    /// Give up on one HTTP request after this long [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse::positive_span)]
    pub request_timeout: Option<Span>,

    /// Submit every job and exit (code 4); a later run polls and downloads.
    #[arg(long)]
    pub no_wait: bool,

    /// For cron: a batch left running on the service is no failure. Exit 0, not 4,
    /// when jobs still running (or made and not downloaded) are all that is left,
    /// and exit 0 quietly when another run holds the results file (it carries the
    /// batch on). Jobs in doubt still end with 4; failures, a refused key and the
    /// spending limit keep their codes.
    #[arg(long)]
    pub running_ok: bool,

    /// Record result URLs, download nothing.
    #[arg(long)]
    pub no_download: bool,

    /// Submit again the jobs whose last run failed.
    #[arg(long)]
    pub retry_failed: bool,

    /// Submit again the jobs recorded in doubt (their first task may exist and be billed).
    #[arg(long)]
    pub resubmit_in_doubt: bool,

    /// Stop submitting before the batch's spend would pass N credits (exit 6):
    /// credits recorded in the results file by earlier runs count.
    #[arg(long, value_name = "N", value_parser = parse::credits)]
    pub max_credits: Option<f64>,

    /// Stop submitting before this invocation's spend would pass N credits (exit 6),
    /// whatever earlier runs spent (an hourly cron job's hourly budget).
    #[arg(long, value_name = "N", value_parser = parse::credits)]
    pub max_run_credits: Option<f64>,

    /// On a terminal, ask before submitting when the estimate is above N credits.
    #[arg(long, value_name = "N", default_value_t = 5000.0, value_parser = parse::credits)]
    pub confirm_above: f64,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Submit only the first N jobs that are still to send (a preview before the full
    /// batch); jobs already sent are always polled and downloaded.
    #[arg(long, value_name = "N", conflicts_with = "sample", value_parser = parse::jobs)]
    pub limit: Option<usize>,

    /// Submit only N jobs still to send, drawn at random; jobs already sent are
    /// always polled and downloaded.
    #[arg(long, value_name = "N", value_parser = parse::jobs)]
    pub sample: Option<usize>,

    /// Seed for --sample (and retry jitter), to repeat a draw.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Print what would be sent, as JSON lines on stdout, and send nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Off a terminal, log a progress line this often.
    #[arg(long, value_name = "DURATION", value_parser = parse::positive_span)]
    pub progress_interval: Option<Span>,

    /// Where local images are uploaded [default: the live upload host, or --api-base
    /// when that is given].
    #[arg(
        long,
        env = "KIE_UPLOAD_BASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub upload_base: Option<String>,

    /// How long an uploaded local image lives on the service; an upload is used
    /// until this less a safety margin (a quarter, at most 1h), then uploaded again
    /// [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = parse::positive_span)]
    pub upload_ttl: Option<Span>,

    /// The largest local image file accepted, like 8MiB or 20MB [default: 8MiB].
    #[arg(long, value_name = "SIZE")]
    pub max_image_size: Option<Size>,

    /// A folder local images may also come from, besides the manifest's own
    /// (repeat it for more); the manifest's `allow_images_from:` does the same.
    #[arg(long, value_name = "DIR")]
    pub allow_images_from: Vec<PathBuf>,

    /// When the run ends, however it ends, POST a JSON summary to this webhook
    /// (repeatable; replaces the manifest's `output: notify:`). A Slack
    /// incoming-webhook URL (https://hooks.slack.com/services/...) gets a Slack message.
    #[arg(long, value_name = "URL", value_parser = crate::notify::parse_url)]
    pub notify: Vec<reqwest::Url>,

    /// Sign notifications with the secret in this file (Standard Webhooks headers;
    /// `whsec_` and base64, or any text).
    #[arg(long, value_name = "PATH")]
    pub notify_secret_file: Option<PathBuf>,

    /// When the run ends, write its figures to this file in the Prometheus text
    /// format (for node exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// Range checks of flag values, at parse time: a bad value is a usage error naming
/// its flag (exit 2), never a panic deep in the run.
mod parse {
    use crate::config::{MAX_ATTEMPTS, MAX_CONCURRENCY};
    use crate::units::Span;

    fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.trim().parse().map_err(|_| format!("{s:?} is not {what}"))
    }

    pub fn concurrency(s: &str) -> Result<usize, String> {
        let n: usize = number(s, "a whole number")?;
        if !(1..=MAX_CONCURRENCY).contains(&n) {
            return Err(format!("must be 1 to {MAX_CONCURRENCY}"));
        }
        Ok(n)
    }

    pub fn max_attempts(s: &str) -> Result<u32, String> {
        let n: u32 = number(s, "a whole number")?;
        if !(1..=MAX_ATTEMPTS).contains(&n) {
            return Err(format!("must be 1 to {MAX_ATTEMPTS}"));
        }
        Ok(n)
    }

    /// A number of jobs: any whole number, 0 included.
    pub fn jobs(s: &str) -> Result<usize, String> {
        number(s, "a whole number of jobs")
    }

    /// A duration above 0 (and, as every [`Span`], at most a year).
    pub fn positive_span(s: &str) -> Result<Span, String> {
        let span: Span = s.parse()?;
        if span.0.is_zero() {
            return Err("must be above 0".into());
        }
        Ok(span)
    }

    /// A number of credits: finite, 0 or more.
    pub fn credits(s: &str) -> Result<f64, String> {
        let n: f64 = number(s, "a number of credits")?;
        if !n.is_finite() || n < 0.0 {
            return Err("must be a number of credits, 0 or more".into());
        }
        Ok(n)
    }
}
