//! Dispatch of the subcommands, logging set-up, signals, and the mapping of every
//! outcome to an exit code. Nothing below this module ends the process.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::api::{ApiKey, Client, ClientConfig};
use crate::checkpoint::writer::LockError;
use crate::checkpoint::{self, CheckpointError, Preloaded};
use crate::cli::{Cli, ColorChoice, Command, CreditsArgs, LogFormat, RunArgs};
use crate::cost::{Credits, Dollars};
use crate::exit;
use crate::manifest::{self, Manifest, ManifestError};
use crate::runner::{self, ForeignResults, RunReport, Signals};
use crate::sim::{self, SimConfig};

/// Runs the parsed command line to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli);
    let code = match cli.command {
        Command::Validate(args) => crate::validate::run(&args),
        Command::Run(args) => {
            let style = match (cli.log_format, cli.quiet) {
                (LogFormat::Json, _) => SummaryStyle::Json,
                (LogFormat::Text, true) => SummaryStyle::Quiet,
                (LogFormat::Text, false) => SummaryStyle::Text,
            };
            with_runtime(runner::runtime(), || run_command(*args, cli.quiet, style))
        }
        Command::Status(args) => crate::status::run(&args),
        Command::Report(args) => crate::report::run(&args),
        Command::Credits(args) => with_runtime(runner::runtime(), || credits_command(args)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "veo-batch", &mut script);
            print_stdout(&script)
        }
        // The simulator serves many clients at once: every core is its to use.
        Command::Simulate(args) => with_runtime(multi_thread(), || async move {
            match sim::serve(args).await {
                Ok(()) => exit::OK,
                Err(e) => report_error(&e),
            }
        }),
    };
    exit::code(code)
}

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn with_runtime<F, Fut>(runtime: std::io::Result<tokio::runtime::Runtime>, f: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = u8>,
{
    match runtime {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            exit::USAGE
        }
    }
}

fn init_logging(cli: &Cli) {
    // veo-batch's own lines at the level asked; the libraries under it (hyper,
    // reqwest, rustls) stay at warn until -vvv, so -v shows what veo-batch does.
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "warn,veo_batch=debug",
        (false, 2) => "info,veo_batch=trace",
        (false, _) => "trace",
    };
    let filter = std::env::var("VEO_BATCH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter)
        .with_target(false);
    crate::progress::set_structured(cli.log_format == LogFormat::Json);
    // A second init (tests driving `main` twice in one process) is harmless.
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(ansi).without_time().try_init(),
    };
}

/// Prints an error the cargo way (`error:` then `Caused by:` lines) and picks the
/// exit code its kind calls for. A cause whose text the lines above already say
/// (an I/O error a message quotes) is not printed again.
pub(crate) fn report_error(e: &anyhow::Error) -> u8 {
    if is_broken_pipe(e) {
        // The reader went away (`| head`): what it wanted was written.
        return exit::OK;
    }
    eprintln!("error: {e}");
    let mut said = e.to_string();
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(ToString::to_string)
        .filter(|c| {
            let new = !said.contains(c.as_str());
            said.push('\n');
            said.push_str(c);
            new
        })
        .collect();
    if !causes.is_empty() {
        eprintln!("\nCaused by:");
        for c in causes {
            eprintln!("    {c}");
        }
    }
    if e.downcast_ref::<LockError>()
        .is_some_and(|l| matches!(l, LockError::Held { .. }))
    {
        exit::LOCKED
    } else {
        exit::USAGE
    }
}

/// Writes `bytes` to stdout; a reader that closed the pipe is not an error.
fn print_stdout(bytes: &[u8]) -> u8 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => report_error(&anyhow::Error::from(e).context("failed to write to stdout")),
    }
}

/// True when `e` comes from writing into a pipe whose reader closed it.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints every located problem of a manifest, then the count.
pub fn report_manifest_error(e: &ManifestError) -> u8 {
    for d in &e.diagnostics {
        eprintln!("{d}");
    }
    eprintln!("error: {e}; nothing was sent");
    exit::USAGE
}

/// Reads the manifest and, at the same time on a second thread, the results file at
/// `results` (where it is known before the manifest is read: see [`results_path`]).
/// Nothing is locked or written; [`runner::prepare_from`] takes the lock and uses
/// the read only if the file is still the one read.
pub fn load_for_run(
    manifest_path: &Path,
    results: Option<&Path>,
) -> (Result<Manifest, ManifestError>, Option<Preloaded>) {
    load_for_run_with(manifest_path, results, manifest::LoadOptions::default())
}

/// [`load_for_run`], reading the manifest with `options`.
pub fn load_for_run_with(
    manifest_path: &Path,
    results: Option<&Path>,
    options: manifest::LoadOptions,
) -> (Result<Manifest, ManifestError>, Option<Preloaded>) {
    std::thread::scope(|s| {
        let preload = results.map(|r| s.spawn(move || checkpoint::preload(r)));
        let manifest = manifest::load_with(manifest_path, options);
        // A panicked read is read again, under the lock.
        (manifest, preload.and_then(|h| h.join().ok()))
    })
}

/// The results file of a run, when it follows from the command line alone: the
/// `--results` flag, or for a CSV manifest (which has no `output:` settings) the
/// default named after the file, as [`crate::config::resolve`] makes it.
pub fn results_path(args: &RunArgs) -> Option<PathBuf> {
    if let Some(r) = &args.results {
        return Some(r.clone());
    }
    let is_csv = args
        .manifest
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let name = args.manifest.file_stem()?.to_string_lossy();
    is_csv.then(|| crate::config::default_results(&name))
}

async fn run_command(args: RunArgs, quiet: bool, style: SummaryStyle) -> u8 {
    let results = results_path(&args);
    let (manifest, preloaded) = load_for_run_with(
        &args.manifest,
        results.as_deref(),
        load_options(args.max_image_size),
    );
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => return report_manifest_error(&e),
    };
    for w in &manifest.warnings {
        tracing::warn!("{w}");
    }
    let time_scale = if args.simulate {
        SimConfig::demo().time_scale
    } else {
        1.0
    };
    let output = if quiet {
        crate::config::Output::Quiet
    } else if std::io::stderr().is_terminal() {
        crate::config::Output::Terminal
    } else {
        crate::config::Output::Plain
    };
    let name = manifest.name.clone();
    let resolved = match crate::config::resolve(&args, manifest, time_scale, output) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let request_timeout = resolved.request_timeout;
    let prepared = match runner::prepare_from(resolved.run, preloaded) {
        Ok(p) => p,
        Err(e) => return report_run_error(&e),
    };
    let estimated = prepared.estimate();
    let estimate = estimated.total();
    let prices = prepared.config.prices;
    let jobs = crate::summary::jobs(prepared.config.jobs.len());
    let to_submit = prepared.submissions();
    let to_resume = prepared.plan.len() - to_submit;
    let held_back = prepared.held_back;
    tracing::info!(
        "{name}: {jobs}; {to_submit} to submit, {to_resume} to resume{}; estimated cost {} credits ({}){}; results in {}, videos in {}",
        if held_back > 0 {
            format!(", {held_back} held back by --limit/--sample")
        } else {
            String::new()
        },
        Credits(estimate),
        Dollars(prices.usd(estimate)),
        estimated.unpriced_note(),
        prepared.config.results.display(),
        prepared.config.videos_dir.display()
    );
    if args.dry_run {
        return print_dry_run(&prepared);
    }
    if let Some(max) = prepared
        .config
        .max_credits
        .or(prepared.config.max_run_credits)
        && !estimated.unpriced.is_empty()
    {
        let what: Vec<String> = estimated.unpriced.iter().map(ToString::to_string).collect();
        eprintln!(
            "error: --max-credits {} cannot be kept: the price table ({}) has no price for {} ({} job{} to submit); \
             set it under prices: in the manifest (like `veo3_fast: {{720p: 60}}`; a CSV table can be \
             included from a YAML manifest that sets prices)",
            Credits(max),
            prices.describe(),
            what.join(", "),
            estimated.unpriced_jobs(),
            if estimated.unpriced_jobs() == 1 {
                ""
            } else {
                "s"
            },
        );
        return exit::USAGE;
    }
    if !args.yes && estimate > args.confirm_above && !confirm(estimate, prices.usd(estimate)) {
        eprintln!("nothing was sent");
        return exit::OK;
    }

    let mut simulator = None;
    let (base_url, key, upload_base) = if args.simulate {
        let config = SimConfig::demo();
        let key = ApiKey::new(config.api_key.clone());
        match sim::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
            Ok(handle) => {
                tracing::info!(
                    "simulating the kie.ai service at {} (time-scaled; nothing is billed)",
                    handle.base_url()
                );
                let url = handle.base_url();
                simulator = Some(handle);
                // The simulator serves uploads too.
                (url, key, None)
            }
            Err(e) => return report_error(&e.context("failed to start the simulator")),
        }
    } else {
        match ApiKey::load(args.service.api_key_file.as_deref()) {
            Ok(key) => (
                args.service.api_base.clone(),
                key,
                Some(crate::api::upload_base(
                    &args.service.api_base,
                    args.upload_base.as_deref(),
                )),
            ),
            Err(e) => return report_error(&e),
        }
    };
    let client = match client(base_url, key, request_timeout, upload_base) {
        Ok(c) => c,
        Err(e) => return report_error(&e),
    };
    if prepared.submissions() > 0 {
        match client.credit().await {
            Ok(balance) if balance < estimate => tracing::warn!(
                "the estimate ({} credits) is above the account's balance ({}): the run will stop when credits run out",
                Credits(estimate),
                Credits(balance)
            ),
            Ok(balance) => tracing::debug!("credit balance {balance}"),
            Err(e) => tracing::debug!("could not read the credit balance: {e}"),
        }
    }

    let signals = Signals::default();
    let watcher = tokio::spawn(watch_signals(signals.clone()));
    let outcome = runner::execute(prepared, client, signals).await;
    watcher.abort();
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    match outcome {
        Ok(report) => {
            // The page is a convenience: failing to write it fails nothing.
            let page = crate::report::after_run(&args.manifest, &report.results)
                .map_err(|e| format!("{e:#}"));
            print_summary(&name, &report, &prices, estimate, style, &page);
            report.exit_code()
        }
        Err(e) => report_run_error(&e),
    }
}

/// A client of `base_url`; uploads go to `upload_base` (`None`: `base_url`).
fn client(
    base_url: String,
    key: ApiKey,
    request_timeout: Duration,
    upload_base: Option<String>,
) -> anyhow::Result<Client> {
    Client::new(ClientConfig {
        connect_timeout: crate::config::CONNECT_TIMEOUT,
        request_timeout,
        upload_base_url: upload_base,
        ..ClientConfig::new(base_url, key)
    })
}

/// How a manifest is read, from `--max-image-size`.
pub(crate) fn load_options(max_image_size: Option<crate::units::Size>) -> manifest::LoadOptions {
    manifest::LoadOptions {
        max_image_bytes: max_image_size.map_or(manifest::images::DEFAULT_MAX_IMAGE_BYTES, |s| s.0),
    }
}

fn report_run_error(e: &anyhow::Error) -> u8 {
    let code = report_error(e);
    if e.downcast_ref::<CheckpointError>().is_some() || e.downcast_ref::<ForeignResults>().is_some()
    {
        exit::USAGE
    } else {
        code
    }
}

/// `--dry-run`: one JSON line per step this run would take.
fn print_dry_run(prepared: &runner::Prepared) -> u8 {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for p in &prepared.plan {
        let job = prepared.job(p);
        let line = match &p.start {
            runner::Start::Submit(_) => {
                let supersedes = prepared
                    .superseding
                    .iter()
                    .find(|s| s.index == p.index)
                    .map(|s| s.task.clone());
                // An extend waiting for its parent has no task to name yet.
                let parent_task = p.parent_task.clone().or_else(|| {
                    job.extend
                        .as_ref()
                        .map(|e| format!("(the task of job {:?}, once made)", e.parent))
                });
                serde_json::json!({
                    "job_id": job.id, "action": "submit",
                    "body": job.body(parent_task.as_deref().unwrap_or_default()),
                    "supersedes": supersedes,
                })
            }
            runner::Start::Poll(task) => serde_json::json!({
                "job_id": job.id, "action": "poll", "task_id": task,
            }),
            runner::Start::Upgrade(task) => serde_json::json!({
                "job_id": job.id, "action": "upgrade", "task_id": task,
            }),
            runner::Start::Download => serde_json::json!({
                "job_id": job.id, "action": "download", "urls": prepared.record(p).map(|r| r.video_urls.clone()).unwrap_or_default(),
            }),
        };
        if let Err(e) = writeln!(out, "{line}") {
            return report_error(&anyhow::Error::from(e).context("failed to write to stdout"));
        }
    }
    exit::OK
}

/// Asks on the terminal; never when stdin or stderr is not one (cron, pipes).
fn confirm(credits: f64, usd: f64) -> bool {
    use std::io::Write as _;
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return true;
    }
    eprint!(
        "This run will spend about {} credits ({}). Go on? [y/N] ",
        Credits(credits),
        Dollars(usd)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}

async fn credits_command(args: CreditsArgs) -> u8 {
    let key = match ApiKey::load(args.service.api_key_file.as_deref()) {
        Ok(key) => key,
        Err(e) => return report_error(&e),
    };
    let client = match client(
        args.service.api_base,
        key,
        crate::config::DEFAULT_REQUEST_TIMEOUT,
        None,
    ) {
        Ok(c) => c,
        Err(e) => return report_error(&e),
    };
    match client.credit().await {
        Ok(credits) => print_stdout(format!("{credits}\n").as_bytes()),
        Err(e) => {
            eprintln!("error: failed to read the credit balance: {e}");
            match e.class {
                crate::api::ErrorClass::Auth | crate::api::ErrorClass::Credits => {
                    exit::SERVICE_STOPPED
                }
                _ => exit::JOBS_FAILED,
            }
        }
    }
}

/// First Ctrl-C or SIGTERM: drain. Second: abort.
async fn watch_signals(signals: Signals) {
    let next = || async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    next().await;
    tracing::warn!(
        "stopping: no new submissions; waiting for requests in flight (press Ctrl-C again to stop at once)"
    );
    signals.drain.cancel();
    next().await;
    tracing::warn!("stopping at once; the results file stays loadable, run again to resume");
    signals.abort.cancel();
}

/// How the end of a run is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SummaryStyle {
    Text,
    /// `-q`: nothing when every job succeeded; the exit code speaks.
    Quiet,
    /// `--log-format json`: one `run summary` event holding the tally and spend.
    Json,
}

fn print_summary(
    name: &str,
    r: &RunReport,
    prices: &crate::cost::PriceTable,
    estimate: f64,
    style: SummaryStyle,
    page: &Result<PathBuf, String>,
) {
    use std::fmt::Write as _;
    let code = r.exit_code();
    let t = &r.outcomes.tally;
    match style {
        SummaryStyle::Quiet if code == exit::OK => return,
        SummaryStyle::Json => {
            tracing::info!(
                batch = name,
                jobs = t.total(),
                succeeded = t.succeeded,
                failed = t.failed,
                not_downloaded = t.not_downloaded,
                download_failed = t.download_failed,
                in_doubt = t.in_doubt,
                running = t.running,
                not_started = t.not_started,
                blocked = t.blocked,
                submitted = r.counters.submitted,
                retries = r.counters.retries,
                rate_limited = r.counters.rate_limited,
                superseded = r.superseded,
                spent_credits = r.spent,
                batch_credits = r.recorded_spend + r.spent,
                estimated_credits = estimate,
                elapsed_ms = r.elapsed.as_millis() as u64,
                interrupted = r.interrupted,
                stopped = r.fatal.as_ref().map(describe_fatal).as_deref(),
                results = %r.results.display(),
                exit_code = code,
                "run summary"
            );
            return;
        }
        SummaryStyle::Text | SummaryStyle::Quiet => {}
    }
    let mut out = String::new();
    // Why the run stopped comes first: the summary after it says what it means.
    if let Some(f) = &r.fatal {
        let _ = writeln!(out, "error: {}", describe_fatal(f));
    }
    let _ = writeln!(
        out,
        "\n{name}: {}, {:.1}s{}",
        crate::summary::jobs(t.total()),
        r.elapsed.as_secs_f64(),
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  submitted this run {}, retries {} (rate-limited {}){}",
        r.counters.submitted,
        r.counters.retries,
        r.counters.rate_limited,
        if r.changed > 0 {
            format!("; {} resubmitted because the manifest changed", r.changed)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  spent about {} credits ({}) on this run's submissions (estimated {}); {} recorded for the batch",
        Credits(r.spent),
        Dollars(prices.usd(r.spent)),
        Credits(estimate),
        Credits(r.recorded_spend + r.spent)
    );
    if r.superseded > 0 {
        let _ = writeln!(
            out,
            "  {} paid task{} superseded (listed in the results file's superseded_tasks; their videos kept in {})",
            r.superseded,
            if r.superseded == 1 { "" } else { "s" },
            r.videos_dir.join("superseded").display()
        );
    }
    if r.held_back > 0 {
        let _ = writeln!(
            out,
            "  {} held back by --limit/--sample",
            crate::summary::jobs(r.held_back)
        );
    }
    let _ = writeln!(out, "  results: {}", r.results.display());
    let _ = writeln!(out, "  videos:  {}", r.videos_dir.display());
    if let Ok(page) = page {
        let _ = writeln!(out, "  report:  {}", page.display());
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Err(e) = page {
        let _ = writeln!(out, "warning: the report page was not written: {e}");
    }
    let hint = match &r.fatal {
        Some(runner::job::Fatal::Budget(_)) => crate::summary::NotStartedHint::Budget,
        Some(runner::job::Fatal::Auth(_)) => crate::summary::NotStartedHint::Key,
        _ => crate::summary::NotStartedHint::RunAgain,
    };
    out.push_str(&crate::summary::render_with(&r.outcomes, hint));
    eprint!("{out}");
}

fn describe_fatal(f: &runner::job::Fatal) -> String {
    match f {
        runner::job::Fatal::Auth(m) if m.contains("KIE_API_KEY") => {
            format!("the service refused the API key ({m})")
        }
        runner::job::Fatal::Auth(m) => {
            format!("the service refused the API key ({m}); check KIE_API_KEY (or --api-key-file)")
        }
        runner::job::Fatal::Credits(m) => {
            format!("the service has no credits left for this key ({m}); top up, then run again")
        }
        runner::job::Fatal::Budget(m) => format!("{m}; raise that limit to go on"),
        runner::job::Fatal::Checkpoint(m) => {
            format!("{m}; nothing more was sent, fix the disk problem and run again")
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(args)) => *args,
            other => panic!("not a run: {other:?}"),
        }
    }

    /// The results file read ahead is the one the settings resolve to, or none.
    #[test]
    fn the_results_path_known_early_is_the_resolved_one() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("My Batch.CSV");
        std::fs::write(&csv, "id,prompt\na,x\n").unwrap();
        let yaml = dir.path().join("m.yaml");
        std::fs::write(
            &yaml,
            "output:\n  results: r/out.csv\njobs:\n  - id: a\n    prompt: x\n",
        )
        .unwrap();
        let resolved = |args: &RunArgs| {
            let m = manifest::load(&args.manifest).unwrap();
            crate::config::resolve(args, m, 1.0, crate::config::Output::Quiet)
                .unwrap()
                .run
                .results
        };
        let csv_path = csv.to_str().unwrap();
        let args = run_args(&["veo-batch", "run", csv_path]);
        assert_eq!(results_path(&args), Some(resolved(&args)));
        let args = run_args(&["veo-batch", "run", csv_path, "--results", "x.csv"]);
        assert_eq!(results_path(&args), Some(PathBuf::from("x.csv")));
        assert_eq!(resolved(&args), PathBuf::from("x.csv"));
        // A YAML manifest can name its own: known only once it is read.
        let args = run_args(&["veo-batch", "run", yaml.to_str().unwrap()]);
        assert_eq!(results_path(&args), None);
    }

    #[test]
    fn lock_errors_map_to_exit_5() {
        let e = anyhow::Error::from(LockError::Held {
            results: "r.csv".into(),
            lock: "r.csv.lock".into(),
        });
        assert_eq!(report_error(&e), exit::LOCKED);
        let other = anyhow::anyhow!("x").context("y");
        assert_eq!(report_error(&other), exit::USAGE);
    }
}
