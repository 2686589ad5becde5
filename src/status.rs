//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::plan::Standing;
use crate::checkpoint::{self, Record};
use crate::cli::StatusArgs;
use crate::cost::{Estimate, credits};
use crate::manifest;
use crate::summary::{self, Outcomes};

/// What `status --json` prints: the tally, the problem lists, and where every job
/// stands with what its record says (README, "`status --json`").
#[derive(Serialize)]
struct StatusJson<'a> {
    results: &'a Path,
    /// How many jobs.
    jobs: usize,
    #[serde(flatten)]
    outcomes: &'a Outcomes,
    /// Credits the results file records as spent, over all runs.
    credits: f64,
    /// Every job, in manifest order (or the results file's, without a manifest).
    job_states: Vec<JobStatus<'a>>,
}

/// One job in `status --json`.
#[derive(Serialize)]
struct JobStatus<'a> {
    id: &'a str,
    /// Where it stands: the same word as the summary's counts.
    state: Standing,
    /// The state its last row records.
    recorded_state: Option<&'static str>,
    task_id: Option<&'a str>,
    superseded_tasks: &'a [String],
    attempts: u32,
    error_code: Option<i64>,
    error_message: Option<&'a str>,
    video_urls: &'a [String],
    upgrade_urls: &'a [String],
    video_paths: &'a [String],
    superseded_paths: &'a [String],
    credits: f64,
    submitted_at: Option<&'a str>,
    finished_at: Option<&'a str>,
    updated_at: Option<&'a str>,
}

impl<'a> JobStatus<'a> {
    fn new(job: summary::JobRef<'a>, r: Option<&'a Record>) -> JobStatus<'a> {
        const NONE: &[String] = &[];
        JobStatus {
            id: job.id,
            state: summary::standing_of(job, r),
            recorded_state: r.map(|r| r.state().as_str()),
            task_id: r.and_then(|r| r.task_id.as_deref()),
            superseded_tasks: r.map_or(NONE, |r| &r.superseded_tasks),
            attempts: r.map_or(0, |r| r.attempts),
            error_code: r.and_then(|r| r.error_code),
            error_message: r.and_then(|r| r.error_message.as_deref()),
            video_urls: r.map_or(NONE, |r| &r.video_urls),
            upgrade_urls: r.map_or(NONE, |r| &r.upgrade_urls),
            video_paths: r.map_or(NONE, |r| &r.video_paths),
            superseded_paths: r.map_or(NONE, |r| &r.superseded_paths),
            credits: r.map_or(0.0, |r| r.credits),
            submitted_at: r.and_then(|r| r.submitted_at.as_deref()),
            finished_at: r.and_then(|r| r.finished_at.as_deref()),
            updated_at: r.map(|r| r.updated_at.as_str()),
        }
    }
}

/// Runs `status`; the exit code is the one the run would have ended with.
pub fn run(args: &StatusArgs) -> u8 {
    match status(args) {
        Ok(code) => code,
        Err(e) => crate::app::report_error(&e),
    }
}

fn is_results_file(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let _ = BufReader::new(file).read_line(&mut first);
    checkpoint::schema::is_header_line(first.trim_end())
}

/// What `status` and `report` read: a results file, and the manifest when PATH
/// named one rather than the results file itself.
pub(crate) struct Source {
    pub results: PathBuf,
    pub manifest: Option<manifest::Manifest>,
    pub loaded: checkpoint::Loaded,
}

/// Why a [`Source`] could not be read.
pub(crate) enum SourceError {
    /// The manifest has problems, each located.
    Manifest(manifest::ManifestError),
    Other(anyhow::Error),
}

impl SourceError {
    /// Prints the error and gives the exit code for it.
    pub(crate) fn report(&self) -> u8 {
        match self {
            SourceError::Manifest(e) => crate::app::report_manifest_error(e),
            SourceError::Other(e) => crate::app::report_error(e),
        }
    }
}

/// Reads PATH (a results CSV, or a manifest whose results file is `results` or its
/// default) and its results file, printing the loader's warnings.
pub(crate) fn read_source(path: &Path, results: Option<&Path>) -> Result<Source, SourceError> {
    let is_manifest = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) || (path.extension().is_some_and(|e| e == "csv") && !is_results_file(path));

    let (results, manifest) = if is_manifest {
        let m = manifest::load(path).map_err(SourceError::Manifest)?;
        // The manifest's `output:` paths come resolved against its folder.
        let results = results
            .map(Path::to_path_buf)
            .or_else(|| m.output.results.clone())
            .unwrap_or_else(|| crate::config::default_results(&m.name));
        (results, Some(m))
    } else {
        (path.to_path_buf(), None)
    };

    let loaded = match checkpoint::load(&results) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            return Err(SourceError::Other(anyhow::anyhow!(
                "no results file at `{}`: nothing has run yet (or pass --results)",
                results.display()
            )));
        }
        Err(e) => return Err(SourceError::Other(e.into())),
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Source {
        results,
        manifest,
        loaded,
    })
}

fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    let Source {
        results,
        manifest,
        loaded,
    } = match read_source(&args.path, args.results.as_deref()) {
        Ok(source) => source,
        Err(e) => return Ok(e.report()),
    };
    let outcomes = match &manifest {
        Some(m) => {
            let ids: std::collections::HashSet<&str> =
                m.jobs.iter().map(|j| j.id.as_str()).collect();
            checkpoint::check_belongs(&results, loaded.order.iter().map(String::as_str), |id| {
                ids.contains(id)
            })?;
            summary::outcomes(m.jobs.iter().map(summary::JobRef::from), &loaded.records)
        }
        None => summary::outcomes(
            loaded
                .order
                .iter()
                .filter_map(|id| loaded.records.get(id))
                .map(summary::JobRef::recorded),
            &loaded.records,
        ),
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        let job_states = match &manifest {
            Some(m) => m
                .jobs
                .iter()
                .map(|j| JobStatus::new(summary::JobRef::from(j), loaded.records.get(&j.id)))
                .collect(),
            None => loaded
                .order
                .iter()
                .filter_map(|id| loaded.records.get(id))
                .map(|r| JobStatus::new(summary::JobRef::recorded(r), Some(r)))
                .collect(),
        };
        let json = StatusJson {
            results: &results,
            jobs: outcomes.tally.total(),
            outcomes: &outcomes,
            credits: loaded.records.values().map(|r| r.credits).sum(),
            job_states,
        };
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else if args.failed {
        for p in &outcomes.failed {
            writeln!(out, "{}\t{}", p.job_id, p.reason.replace(['\t', '\n'], " "))?;
        }
    } else {
        writeln!(
            out,
            "{}: {}",
            results.display(),
            summary::jobs(outcomes.tally.total())
        )?;
        write!(out, "{}", summary::render(&outcomes))?;
        if let Some(m) = &manifest {
            write!(out, "{}", credits_line(m, &loaded.records))?;
        }
    }
    Ok(outcomes.tally.exit_code())
}

/// What the batch cost and will cost: the credits the results file records as
/// spent, and the jobs still to submit at the manifest's prices. Where a job stands
/// is [`summary::standing_of`]'s answer, as everywhere else.
fn credits_line(m: &manifest::Manifest, records: &HashMap<String, Record>) -> String {
    let mut paid = Vec::new();
    let mut to_come = Vec::new();
    for job in &m.jobs {
        let record = records.get(&job.id);
        match summary::standing_of(summary::JobRef::from(job), record) {
            Standing::NotStarted => to_come.push(job),
            Standing::Running
            | Standing::NotDownloaded
            | Standing::DownloadFailed
            | Standing::Succeeded => paid.push(job),
            Standing::InDoubt | Standing::Failed | Standing::Blocked => {}
        }
    }
    let spent: f64 = records.values().map(|r| r.credits).sum();
    let (paid_n, to_come_n) = (paid.len(), to_come.len());
    let both = Estimate::of(&m.prices, paid.iter().chain(&to_come).copied());
    let paid = Estimate::of(&m.prices, paid);
    let to_come = Estimate::of(&m.prices, to_come);
    let jobs = |n: usize| if n == 1 { "job" } else { "jobs" };
    format!(
        "credits: {} recorded as spent by the batch; at the manifest's prices ({}): about {} for the {paid_n} {} with a task, \
         {} for the {to_come_n} {} still to submit{}\n",
        credits(spent),
        m.prices.describe(),
        credits(paid.total()),
        jobs(paid_n),
        credits(to_come.total()),
        jobs(to_come_n),
        both.unpriced_note()
    )
}
