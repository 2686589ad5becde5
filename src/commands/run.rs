//! `veo-batch run`: read the manifest and the results file, plan, confirm the
//! spend, start the simulator or load the key, run, and tell how it ended.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{ApiKey, Client, ClientConfig, KeyRing, PoolKey};
use crate::checkpoint::{self, Preloaded};
use crate::cli::RunArgs;
use crate::cost::{Credits, Dollars};
use crate::exit::Exit;
use crate::manifest::{self, Manifest, ManifestError};
use crate::runner::{self, Signals};
use crate::sim::{self, SimConfig};

use super::run_summary::{self, Style};

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

/// Runs `run`.
pub async fn run(args: RunArgs, quiet: bool, style: Style) -> anyhow::Result<Exit> {
    if !args.simulate {
        crate::api::check_bases(
            &args.service.api_base,
            args.upload_base.as_deref(),
            args.service.allow_insecure_http,
        )?;
    }
    let results = results_path(&args);
    let (manifest, preloaded) = load_for_run_with(
        &args.manifest,
        results.as_deref(),
        super::load_options(args.max_image_size),
    );
    let manifest = manifest?;
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
    let notify = crate::notify::Settings::resolve(
        &args.notify,
        args.notify_secret_file.as_deref(),
        args.metrics_file.as_deref(),
        &manifest.output,
    )?;
    let resolved = crate::config::resolve(&args, manifest, time_scale, output)?;
    let request_timeout = resolved.request_timeout;
    let prepared = runner::prepare_from(resolved.run, preloaded)?;
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
        anyhow::bail!(
            "--max-credits {} cannot be kept: the price table ({}) has no price for {} ({} job{} to submit); \
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
    }
    if !args.yes && estimate > args.confirm_above && !confirm(estimate, prices.usd(estimate)) {
        eprintln!("nothing was sent");
        return Ok(Exit::Ok);
    }

    let mut simulator = None;
    let (base_url, key, upload_base) = if args.simulate {
        let config = SimConfig::demo();
        let key = KeyRing::single(ApiKey::new(config.api_key.clone()))
            .first()
            .clone();
        let handle = sim::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| e.context("failed to start the simulator"))?;
        tracing::info!(
            "simulating the kie.ai service at {} (time-scaled; nothing is billed)",
            handle.base_url()
        );
        let url = handle.base_url();
        simulator = Some(handle);
        // The simulator serves uploads too.
        (url, key, None)
    } else {
        let key = one_key(KeyRing::load(args.service.api_key_file.as_deref())?, "run")?;
        let uploads = crate::api::upload_base(&args.service.api_base, args.upload_base.as_deref());
        (args.service.api_base.clone(), key, Some(uploads))
    };
    let client = client(
        base_url,
        key,
        request_timeout,
        upload_base,
        args.service.allow_insecure_http,
    )?;
    // The balance is read by the run itself (runner::spend), which warns when the
    // estimate is above it.
    let signals = Signals::default();
    let watcher = tokio::spawn(watch_signals(signals.clone()));
    let outcome = runner::execute(prepared, client, signals).await;
    watcher.abort();
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    let report = outcome?;
    // The page is a convenience: failing to write it fails nothing.
    let page =
        crate::report::after_run(&args.manifest, &report.results).map_err(|e| format!("{e:#}"));
    run_summary::print(&name, &report, &prices, estimate, style, &page);
    crate::notify::after_run(&notify, &name, &report, estimate).await;
    Ok(report.exit())
}

/// The one key of `ring`: `command` does not use a pool of several keys yet, and
/// picking one silently would leave the others' accounts unused without a word.
pub(super) fn one_key(ring: KeyRing, command: &str) -> anyhow::Result<PoolKey> {
    if ring.len() > 1 {
        let ids: Vec<String> = ring
            .keys()
            .iter()
            .map(|k| match k.account.as_str() {
                "" => k.id.to_string(),
                account => format!("{account}/{}", k.id),
            })
            .collect();
        anyhow::bail!(
            "{} api keys were given ({}): `{command}` calls with one key, since \
             spreading a batch over a pool of keys is not available yet; keep one key",
            ring.len(),
            ids.join(", ")
        );
    }
    Ok(ring.first().clone())
}

/// A client of `base_url`; uploads go to `upload_base` (`None`: `base_url`).
pub(super) fn client(
    base_url: String,
    key: PoolKey,
    request_timeout: Duration,
    upload_base: Option<String>,
    allow_insecure_http: bool,
) -> anyhow::Result<Client> {
    Client::new(ClientConfig {
        connect_timeout: crate::config::CONNECT_TIMEOUT,
        request_timeout,
        upload_base_url: upload_base,
        allow_insecure_http,
        ..ClientConfig::new(base_url, key.key.clone())
    })?
    .with_key(&key)
}

/// `--dry-run`: one JSON line per step this run would take.
fn print_dry_run(prepared: &runner::Prepared) -> anyhow::Result<Exit> {
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
        writeln!(out, "{line}")
            .map_err(|e| anyhow::Error::from(e).context("failed to write to stdout"))?;
    }
    Ok(Exit::Ok)
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

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
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
}
