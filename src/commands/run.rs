//! `veo-batch run`: read the manifest and the results file, plan, confirm the
//! spend, start the simulator or load the key, run, and tell how it ended.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{ApiKey, Client, ClientConfig, KeyRing, PoolKey};
use crate::checkpoint::{self, Preloaded};
use crate::cli::RunArgs;
use crate::cost::{Count, Credits, Dollars};
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
        // A bucket's results are read once the run holds their lease.
        return crate::store::url_scheme(&r.to_string_lossy())
            .is_none()
            .then(|| r.clone());
    }
    let is_csv = args
        .manifest
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let name = args.manifest.file_stem()?.to_string_lossy();
    is_csv.then(|| crate::config::default_results(&name))
}

/// Runs `run`: against the simulator's scaled clock under `--simulate`, and with
/// the process's Ctrl-C and SIGTERM as its stop signals.
pub async fn run(args: RunArgs, quiet: bool, style: Style) -> anyhow::Result<Exit> {
    let time_scale = if args.simulate {
        SimConfig::demo().time_scale
    } else {
        1.0
    };
    run_at(args, quiet, style, time_scale, None).await
}

/// How a run is driven: the clock of its own delays and, when a caller gives them,
/// its stop signals (the process's Ctrl-C and SIGTERM otherwise).
struct Drive {
    time_scale: f64,
    signals: Option<Signals>,
}

/// Runs `run` with the run's own durations (retry delays, the maintenance floor, the
/// default poll pace) scaled by `time_scale`, as `--simulate` scales them to its
/// simulator; a test drives the whole command in process this way against a simulator
/// of its own. Stopped by `signals` when given, by the process's signals otherwise.
pub async fn run_at(
    args: RunArgs,
    quiet: bool,
    style: Style,
    time_scale: f64,
    signals: Option<Signals>,
) -> anyhow::Result<Exit> {
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
        super::load_options(args.max_image_size, &args.allow_images_from),
    );
    let manifest = manifest?;
    for w in &manifest.warnings {
        tracing::warn!("{w}");
    }
    let drive = Drive {
        time_scale,
        signals,
    };
    let bucket = match crate::store::run::BucketRun::setup(wanted(&args, &manifest)).await {
        Err(e) if args.running_ok && Exit::of_error(&e) == Exit::Locked => {
            tracing::info!("{e:#}; it carries the batch on (--running-ok)");
            return Ok(Exit::Ok);
        }
        setup => setup?,
    };
    let Some(bucket) = bucket else {
        return run_prepared(args, manifest, preloaded, (quiet, style), drive, None).await;
    };
    let mut args = args;
    if let Some(local) = &bucket.local_results {
        args.results = Some(local.clone());
    }
    if let Some(local) = &bucket.local_videos {
        args.videos_dir = Some(local.clone());
    }
    let ran = run_prepared(args, manifest, None, (quiet, style), drive, Some(&bucket)).await;
    let url = bucket.results_url().cloned();
    match (bucket.finish().await, url) {
        (Ok(Some(c)), Some(url)) if c.commits > 0 => tracing::info!(
            "results compacted into {url}: {} jobs, {} bytes, {} log objects folded in",
            Count(c.rows),
            Count(c.bytes),
            c.commits
        ),
        (Ok(_), _) => {}
        (Err(e), _) if ran.is_err() => tracing::error!("{e:#}"),
        (Err(e), _) => return Err(e),
    }
    ran
}

/// Where the run's results and videos go, as the flags and the manifest say.
fn wanted<'a>(args: &'a RunArgs, manifest: &'a Manifest) -> crate::store::run::Wanted<'a> {
    let pick = |flag: &'static str,
                given: &'a Option<PathBuf>,
                key: &'static str,
                from: &'a Option<PathBuf>| {
        given
            .as_deref()
            .map(|p| (flag, p))
            .or_else(|| from.as_deref().map(|p| (key, p)))
            .and_then(|(setting, p)| p.to_str().map(|v| (setting, v)))
    };
    crate::store::run::Wanted {
        results: pick(
            "--results",
            &args.results,
            "output.results",
            &manifest.output.results,
        ),
        videos: pick(
            "--videos-dir",
            &args.videos_dir,
            "output.videos_dir",
            &manifest.output.videos_dir,
        ),
        staging_dir: args.staging_dir.as_deref(),
        times: crate::store::lease::LeaseTimes::default(),
        policy: crate::store::video::UploadPolicy::default(),
    }
}

/// [`run`] once the results and videos are local paths (staging ones for a bucket).
async fn run_prepared(
    args: RunArgs,
    manifest: Manifest,
    preloaded: Option<Preloaded>,
    (quiet, style): (bool, Style),
    drive: Drive,
    bucket: Option<&crate::store::run::BucketRun>,
) -> anyhow::Result<Exit> {
    let Drive {
        time_scale,
        signals,
    } = drive;
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
    let mut resolved = crate::config::resolve(&args, manifest, time_scale, output)?;
    if let Some(bucket) = bucket {
        resolved.run.bucket = bucket.hooks();
    }
    let request_timeout = resolved.request_timeout;
    let prepared = match runner::prepare_from(resolved.run, preloaded) {
        Err(e) if args.running_ok && Exit::of_error(&e) == Exit::Locked => {
            // Under cron the run that holds the file is the batch going on.
            tracing::info!("{e:#}; it carries the batch on (--running-ok)");
            return Ok(Exit::Ok);
        }
        prepared => prepared?,
    };
    let estimated = prepared.estimate();
    let estimate = estimated.total();
    let prices = prepared.config.prices;
    let jobs = crate::summary::jobs(prepared.config.jobs.len());
    let to_submit = prepared.submissions();
    let to_resume = prepared.plan.len() - to_submit;
    let held_back = prepared.held_back;
    tracing::info!(
        "{name}: {jobs}; {} to submit, {} to resume{}; estimated cost {} credits ({}){}; results in {}, videos in {}",
        Count(to_submit),
        Count(to_resume),
        if held_back > 0 {
            format!(", {} held back by --limit/--sample", Count(held_back))
        } else {
            String::new()
        },
        Credits(estimate),
        Dollars(prices.usd(estimate)),
        estimated.unpriced_note(),
        bucket
            .and_then(|b| b.results_url().map(ToString::to_string))
            .unwrap_or_else(|| prepared.config.results.display().to_string()),
        bucket
            .and_then(crate::store::run::BucketRun::videos_url)
            .unwrap_or_else(|| prepared.config.videos_dir.display().to_string())
    );
    if args.dry_run {
        return print_dry_run(&prepared);
    }
    let limit = match (prepared.config.max_credits, prepared.config.max_run_credits) {
        (Some(max), _) => Some((prepared.config.max_credits_setting, max)),
        (None, Some(max)) => Some(("--max-run-credits", max)),
        (None, None) => None,
    };
    if let Some((setting, max)) = limit
        && !estimated.unpriced.is_empty()
    {
        let what: Vec<String> = estimated.unpriced.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "{setting} {} cannot be kept: the price table ({}) has no price for {} ({} job{} to submit); \
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
    if asks(&args, estimate) && !confirm(estimate, prices.usd(estimate)) {
        anyhow::bail!("the run was not confirmed: nothing was sent (--yes skips the question)");
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

    let planned = run_summary::Planned {
        prices: &prices,
        estimate,
        held_by: match (args.limit, args.sample) {
            (Some(n), _) => Some(("--limit", n)),
            (None, Some(n)) => Some(("--sample", n)),
            (None, None) => None,
        },
        superseded_videos: prepared
            .superseding
            .iter()
            .filter(|s| s.state == crate::checkpoint::State::Succeeded)
            .count(),
    };
    let (signals, watcher) = match signals {
        Some(given) => (given, None),
        None => {
            let signals = Signals::default();
            let watcher = tokio::spawn(watch_signals(signals.clone()));
            (signals, Some(watcher))
        }
    };
    let fence = bucket.and_then(crate::store::run::BucketRun::fence);
    let fenced = fence
        .clone()
        .map(|f| tokio::spawn(watch_fence(f, signals.clone())));
    let outcome = runner::execute(prepared, client, signals).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(w) = fenced {
        w.abort();
    }
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    let mut report = outcome?;
    // Said as the user gave them, not as the staging paths the run worked in.
    if let Some(b) = bucket {
        if let Some(url) = b.results_url() {
            report.results = PathBuf::from(url.to_string());
        }
        if let Some(url) = b.videos_url() {
            report.videos_dir = PathBuf::from(url);
        }
    }
    // The page is a convenience: failing to write it fails nothing. A bucket's
    // batch has its page from `report`, whose links last beyond the staging folder.
    let page = match bucket.and_then(|b| b.results_url()) {
        Some(url) => Err(format!(
            "the results are in a bucket: `veo-batch report {url}` writes the page"
        )),
        None => {
            crate::report::after_run(&args.manifest, &report.results).map_err(|e| format!("{e:#}"))
        }
    };
    let exit = if args.running_ok {
        report.exit().running_ok(&report.outcomes.tally)
    } else {
        report.exit()
    };
    run_summary::print(&name, &report, exit, style, &page, planned);
    crate::notify::after_run(&notify, &name, &report, exit, estimate).await;
    // Another run holds the results now: this one ends as a second run does.
    if let Some(Err(lost)) = fence.map(|f| f.check()) {
        return Err(lost.into());
    }
    Ok(exit)
}

/// A run that loses its lease stops at once: another run may be writing the
/// results now, and this one's rows would be refused anyway.
async fn watch_fence(fence: crate::store::lease::Fence, signals: Signals) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(lost) = fence.check() {
            tracing::error!("{lost}");
            signals.drain.cancel();
            signals.abort.cancel();
            return;
        }
    }
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

/// Whether the run asks before sending: not under `--yes`, not under `--simulate`
/// (nothing is billed), and only above `--confirm-above`.
fn asks(args: &RunArgs, estimate: f64) -> bool {
    !args.yes && !args.simulate && estimate > args.confirm_above
}

/// Asks on the terminal; never when stdin or stderr is not one (cron, pipes).
fn confirm(credits: f64, usd: f64) -> bool {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return true;
    }
    ask(
        &mut std::io::stdin().lock(),
        &mut std::io::stderr().lock(),
        credits,
        usd,
    )
}

/// Asks `output` whether to spend about `credits`, reading the answer from `input`:
/// only `y` or `yes` goes on. An end of input (Ctrl-D) is a no, and ends the
/// prompt's line so that what follows starts on its own.
fn ask(
    input: &mut impl std::io::BufRead,
    output: &mut impl std::io::Write,
    credits: f64,
    usd: f64,
) -> bool {
    let _ = write!(
        output,
        "This run will spend about {} credits ({}). Go on? [y/N] (--yes skips this question) ",
        Credits(credits),
        Dollars(usd)
    );
    let _ = output.flush();
    let mut answer = String::new();
    match input.read_line(&mut answer) {
        Ok(0) | Err(_) => {
            let _ = writeln!(output);
            false
        }
        Ok(_) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

/// The signal that asked a run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    CtrlC,
    Term,
}

/// First Ctrl-C or SIGTERM: drain. Second: abort.
async fn watch_signals(signals: Signals) {
    let next = || async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Asked::CtrlC,
                () = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => Asked::Term,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Asked::CtrlC
        }
    };
    let first = next().await;
    tracing::warn!("{}", draining(first));
    signals.drain.cancel();
    next().await;
    tracing::warn!("stopping at once; the results file stays loadable, run again to resume");
    signals.abort.cancel();
}

/// What the first stop signal makes the run say: a service manager's SIGTERM has
/// no Ctrl-C to press again.
fn draining(asked: Asked) -> &'static str {
    match asked {
        Asked::CtrlC => {
            "stopping: no new submissions; waiting for requests in flight (press Ctrl-C again to stop at once)"
        }
        Asked::Term => {
            "stopping (SIGTERM): no new submissions; waiting for requests in flight (a second SIGTERM stops at once)"
        }
    }
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
    /// The question names `--yes`; only yes goes on; an end of input is a no that
    /// ends the prompt's line.
    #[test]
    fn the_prompt_names_yes_and_an_end_of_input_ends_its_line() {
        let asked = |answer: &str| {
            let mut out = Vec::new();
            let go = ask(&mut answer.as_bytes(), &mut out, 6000.0, 60.0);
            (go, String::from_utf8(out).unwrap())
        };
        let (go, said) = asked("");
        assert!(!go);
        assert!(said.contains("(--yes skips this question)"), "{said}");
        assert!(said.ends_with('\n'), "EOF ends the line: {said:?}");
        assert!(asked("y\n").0);
        assert!(asked("YES\n").0);
        assert!(!asked("n\n").0);
        assert!(!asked("\n").0);
    }

    /// Nothing is billed under `--simulate`: no question; `--yes` and a small
    /// estimate ask none either.
    #[test]
    fn the_simulator_is_never_asked_about() {
        let big = 1e6;
        assert!(asks(&run_args(&["veo-batch", "run", "m.yaml"]), big));
        assert!(!asks(
            &run_args(&["veo-batch", "run", "m.yaml", "--simulate"]),
            big
        ));
        assert!(!asks(
            &run_args(&["veo-batch", "run", "m.yaml", "--yes"]),
            big
        ));
        assert!(!asks(&run_args(&["veo-batch", "run", "m.yaml"]), 10.0));
    }

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
