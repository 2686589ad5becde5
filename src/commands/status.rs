//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::plan::Standing;
use crate::checkpoint::{self, Record};
use crate::cli::{ReportArgs, StatusArgs};
use crate::cost::{Estimate, credits};
use crate::exit::Exit;
use crate::manifest;
use crate::summary::{self, Outcomes};

/// What `status --json` prints: the tally, the problem lists, and where every job
/// stands with what its record says (docs/results-and-status.md, "`status --json`").
#[derive(Serialize)]
struct StatusJson<'a> {
    results: &'a Path,
    /// How many jobs.
    jobs: usize,
    #[serde(flatten)]
    outcomes: &'a Outcomes,
    /// Credits the results file records as spent, over all runs.
    credits: f64,
    /// Of them, the credits measured from the balance (a job of a kind whose price
    /// the run learned), and those taken from the price table.
    credits_measured: f64,
    credits_table: f64,
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
    /// Why the last step failed, as a stable word (the results file's `error_kind`).
    error_kind: Option<&'static str>,
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
            error_kind: r
                .and_then(Record::error_kind)
                .map(checkpoint::ErrorKind::as_str),
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
pub(super) struct Source {
    pub results: PathBuf,
    pub manifest: Option<manifest::Manifest>,
    pub loaded: checkpoint::Loaded,
}

/// Reads PATH (a results CSV, or a manifest whose results file is `results` or its
/// default) and its results file, printing the loader's warnings.
pub(super) fn read_source(path: &Path, results: Option<&Path>) -> anyhow::Result<Source> {
    // A CSV that is not there is most likely a results file not written yet: a
    // manifest's read error would send the user looking for the wrong file.
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        && std::fs::symlink_metadata(path).is_err()
    {
        anyhow::bail!(
            "no results file at `{}`: nothing has run with it yet (and no CSV manifest is there either)",
            path.display()
        );
    }
    let is_manifest = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) || (path.extension().is_some_and(|e| e == "csv") && !is_results_file(path));

    let (results, manifest) = if is_manifest {
        let m = manifest::load(path)?;
        // The manifest's `output:` paths come resolved against its folder.
        let results = crate::config::results_file(results, &m);
        (results, Some(m))
    } else {
        (path.to_path_buf(), None)
    };

    let Some(loaded) = checkpoint::load(&results)? else {
        anyhow::bail!(
            "no results file at `{}`: nothing has run yet (or pass --results)",
            results.display()
        );
    };
    for w in &loaded.warnings {
        super::warn(w);
    }
    Ok(Source {
        results,
        manifest,
        loaded,
    })
}

/// Runs `status`; it ends with the code the run would have ended with.
pub fn run(args: &StatusArgs) -> anyhow::Result<Exit> {
    let Source {
        results,
        manifest,
        loaded,
    } = read_source(&args.path, args.results.as_deref())?;
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
            credits: loaded.records.values().map(|r| r.credits).sum::<f64>() + 0.0,
            credits_measured: loaded
                .records
                .values()
                .filter(|r| r.credits_source == "measured")
                .map(|r| r.credits)
                .sum::<f64>()
                // An empty sum is -0.0, which must not print as `-0`.
                + 0.0,
            credits_table: loaded
                .records
                .values()
                .filter(|r| r.credits_source != "measured")
                .map(|r| r.credits)
                .sum::<f64>()
                + 0.0,
            job_states,
        };
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else if args.failed {
        for p in &outcomes.failed {
            writeln!(out, "{}\t{}", p.job_id, p.reason.replace(['\t', '\n'], " "))?;
        }
        // A list, read through `| head` as often as not: its code says it was
        // listed, never whether the reader left before its end (which only timing
        // decides). Where the batch stands is the plain `status`'s code.
        return Ok(Exit::Ok);
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
    Ok(Exit::of_tally(&outcomes.tally))
}

/// Runs `report`: writes the page of PATH's batch and prints its path.
pub fn report(args: &ReportArgs) -> anyhow::Result<Exit> {
    let source = read_source(&args.path, args.results.as_deref())?;
    let out = crate::report::write_for(
        source.manifest.as_ref(),
        &source.results,
        &source.loaded,
        args.out.clone(),
    )?;
    super::print_stdout(format!("{}\n", out.display()).as_bytes())
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
