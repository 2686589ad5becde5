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
use crate::exit;
use crate::manifest::{self, Manifest, ManifestError};
use crate::runner::{self, ForeignResults, RunReport, Signals};
use crate::sim::{self, SimConfig};

/// Runs the parsed command line to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli);
    let code = match cli.command {
        Command::Validate(args) => crate::validate::run(&args),
        Command::Run(args) => with_runtime(runner::runtime(), || run_command(*args, cli.quiet)),
        Command::Status(args) => crate::status::run(&args),
        Command::Report(args) => crate::report::run(&args),
        Command::Credits(args) => with_runtime(runner::runtime(), || credits_command(args)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "veo-batch", &mut std::io::stdout());
            exit::OK
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
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
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
    // A second init (tests driving `main` twice in one process) is harmless.
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(ansi).without_time().try_init(),
    };
}

/// Prints an error the cargo way (`error:` then `Caused by:` lines) and picks the
/// exit code its kind calls for.
fn report_error(e: &anyhow::Error) -> u8 {
    eprintln!("error: {e}");
    let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
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
    std::thread::scope(|s| {
        let preload = results.map(|r| s.spawn(move || checkpoint::preload(r)));
        let manifest = manifest::load(manifest_path);
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

async fn run_command(args: RunArgs, quiet: bool) -> u8 {
    let results = results_path(&args);
    let (manifest, preloaded) = load_for_run(&args.manifest, results.as_deref());
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
    let estimate = prepared.estimate();
    let prices = prepared.config.prices;
    tracing::info!(
        "{}: {} jobs; {} to submit, {} to resume{}; estimated cost {estimate} credits (${:.2}); results in {}, videos in {}",
        name,
        prepared.config.jobs.len(),
        prepared.submissions(),
        prepared.plan.len() - prepared.submissions(),
        if prepared.held_back > 0 {
            format!(", {} held back by --limit/--sample", prepared.held_back)
        } else {
            String::new()
        },
        prices.usd(estimate),
        prepared.config.results.display(),
        prepared.config.videos_dir.display()
    );
    if args.dry_run {
        return print_dry_run(&prepared);
    }
    if !args.yes && estimate > args.confirm_above && !confirm(estimate, prices.usd(estimate)) {
        eprintln!("nothing was sent");
        return exit::OK;
    }

    let mut simulator = None;
    let (base_url, key) = if args.simulate {
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
                (url, key)
            }
            Err(e) => return report_error(&e.context("failed to start the simulator")),
        }
    } else {
        match ApiKey::load(args.service.api_key_file.as_deref()) {
            Ok(key) => (args.service.api_base.clone(), key),
            Err(e) => return report_error(&e),
        }
    };
    let client = match client(base_url, key, request_timeout) {
        Ok(c) => c,
        Err(e) => return report_error(&e),
    };
    if prepared.submissions() > 0 {
        match client.credit().await {
            Ok(balance) if balance < estimate => tracing::warn!(
                "the estimate ({estimate} credits) is above the account's balance ({balance}): the run will stop when credits run out"
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
            print_summary(&name, &report, &prices, estimate, &page);
            report.exit_code()
        }
        Err(e) => report_run_error(&e),
    }
}

fn client(base_url: String, key: ApiKey, request_timeout: Duration) -> anyhow::Result<Client> {
    Client::new(ClientConfig {
        connect_timeout: crate::config::CONNECT_TIMEOUT,
        request_timeout,
        ..ClientConfig::new(base_url, key)
    })
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
            runner::Start::Submit => serde_json::json!({
                "job_id": job.id, "action": "submit", "body": job.request.to_body(),
            }),
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
        if writeln!(out, "{line}").is_err() {
            return exit::JOBS_FAILED;
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
    eprint!("This run will spend about {credits} credits (${usd:.2}). Go on? [y/N] ");
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
    ) {
        Ok(c) => c,
        Err(e) => return report_error(&e),
    };
    match client.credit().await {
        Ok(credits) => {
            println!("{credits}");
            exit::OK
        }
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

fn print_summary(
    name: &str,
    r: &RunReport,
    prices: &crate::cost::PriceTable,
    estimate: f64,
    page: &Result<PathBuf, String>,
) {
    use std::fmt::Write as _;
    let t = &r.outcomes.tally;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{name}: {} jobs, {:.1}s{}",
        t.total(),
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
        "  spent about {} credits (${:.2}) on this run's submissions; estimated {} before it",
        r.spent,
        prices.usd(r.spent),
        estimate
    );
    if r.held_back > 0 {
        let _ = writeln!(out, "  {} jobs held back by --limit/--sample", r.held_back);
    }
    let _ = writeln!(out, "  results: {}", r.results.display());
    let _ = writeln!(out, "  videos:  {}", r.videos_dir.display());
    if let Ok(page) = page {
        let _ = writeln!(out, "  report:  {}", page.display());
    }
    out.push_str(&crate::summary::render(&r.outcomes));
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Err(e) = page {
        let _ = writeln!(out, "warning: the report page was not written: {e}");
    }
    if let Some(f) = &r.fatal {
        let _ = writeln!(out, "stopped: {}", describe_fatal(f));
    }
    eprint!("{out}");
}

fn describe_fatal(f: &runner::job::Fatal) -> String {
    match f {
        runner::job::Fatal::Auth(m) => {
            format!("the service refused the API key ({m}); check KIE_API_KEY (or --api-key-file)")
        }
        runner::job::Fatal::Credits(m) => {
            format!("the service has no credits left for this key ({m}); top up, then run again")
        }
        runner::job::Fatal::Budget(m) => {
            format!("{m}; raise --max-credits (or max_credits in the manifest) to go on")
        }
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
