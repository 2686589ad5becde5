//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).
//!
//! The results file is read for where each job's last row is ([`checkpoint::Located`]),
//! then each job's record is read back, counted (and for `--json`, printed) and
//! dropped in turn: a batch of 1,000,000 jobs holds an id and a place per job, not
//! its prompts, URLs and paths.

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
use crate::store::fetch::Fetched;
use crate::summary::{self, Outcomes};

/// What `status --json` prints before its `job_states`: the tally, the problem
/// lists, and the credits (docs/results-and-status.md, "`status --json`"). Every job follows, where it
/// stands with what its record says ([`JobStatus`]), written as it is read.
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
    fn new(job: summary::JobRef<'a>, r: Option<&'a Record>, results_dir: &Path) -> JobStatus<'a> {
        const NONE: &[String] = &[];
        JobStatus {
            id: job.id,
            state: summary::standing_on_disk(job, r, results_dir),
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

/// Where PATH's results file is (PATH itself, or the results file of the manifest
/// PATH names: `results` or its default), and the manifest when PATH is one. When
/// the results are in a bucket, the path is a local copy of them, which lives as
/// long as the [`Fetched`] (`links`: with presigned links to the videos, for a page).
fn source(
    path: &Path,
    results: Option<&Path>,
    links: bool,
) -> anyhow::Result<(PathBuf, Option<manifest::Manifest>, Option<Fetched>)> {
    if let Some(fetched) = crate::store::fetch::fetch("PATH", path, links)? {
        return Ok((fetched.path.clone(), None, Some(fetched)));
    }
    let (results, manifest) = local_source(path, results)?;
    match crate::store::fetch::fetch("--results", &results, links)? {
        Some(fetched) => Ok((fetched.path.clone(), manifest, Some(fetched))),
        None => Ok((results, manifest, None)),
    }
}

fn local_source(
    path: &Path,
    results: Option<&Path>,
) -> anyhow::Result<(PathBuf, Option<manifest::Manifest>)> {
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
        let m = manifest::load_with(path, manifest::LoadOptions::sending_nothing())?;
        // The manifest's `output:` paths come resolved against its folder.
        let results = crate::config::results_file(results, &m);
        (results, Some(m))
    } else {
        (path.to_path_buf(), None)
    };
    Ok((results, manifest))
}

/// What `credits` reads: a results file, and the manifest when PATH named one
/// rather than the results file itself.
pub(super) struct Source {
    pub manifest: Option<manifest::Manifest>,
    pub loaded: checkpoint::Loaded,
}

/// Reads PATH (see [`source_paths`]) and its whole results file, printing the
/// loader's warnings.
pub(super) fn read_source(path: &Path, results: Option<&Path>) -> anyhow::Result<Source> {
    let (results, manifest, _fetched) = source(path, results, false)?;
    let Some(loaded) = checkpoint::load(&results)? else {
        return Err(no_results(&results));
    };
    for w in &loaded.warnings {
        super::warn(w);
    }
    Ok(Source { manifest, loaded })
}

fn no_results(results: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no results file at `{}`: nothing has run yet (or pass --results)",
        results.display()
    )
}

/// Runs `status`; it ends with the code the run would have ended with.
pub fn run(args: &StatusArgs) -> anyhow::Result<Exit> {
    let (results, manifest, fetched) = source(&args.path, args.results.as_deref(), false)?;
    // Said as the user named them: the local copy goes away.
    let shown = fetched
        .as_ref()
        .map_or_else(|| results.clone(), |f| PathBuf::from(f.url.to_string()));
    let Some(located) = checkpoint::load_located(&results)? else {
        return Err(no_results(&results));
    };
    for w in &located.warnings {
        super::warn(w);
    }
    // Recorded video paths are relative to the results file's folder; a done job
    // whose file is gone is told apart ("video missing").
    let results_dir = crate::paths::absolute(crate::paths::folder_of(&results));
    let jobs = Walk {
        manifest: manifest.as_ref(),
        located: &located,
    };
    if let Some(m) = &manifest {
        let ids: std::collections::HashSet<&str> = m.jobs.iter().map(|j| j.id.as_str()).collect();
        checkpoint::check_belongs(&results, located.jobs.iter().map(|p| &*p.id), |id| {
            ids.contains(id)
        })?;
    }
    let records = located.reader()?;
    let mut outcomes = Outcomes::default();
    // Where each manifest job stands, for the credits line.
    let mut standings = Vec::new();
    records.each(jobs.places(), |r| -> anyhow::Result<()> {
        let job = jobs.job(standings.len(), r);
        let standing = summary::standing_on_disk(job, r, &results_dir);
        outcomes.count_as(job, r, standing);
        standings.push(standing);
        Ok(())
    })?;
    // An empty sum is -0.0, which must not print as `-0`.
    let spent: f64 = located.jobs.iter().map(|p| p.credits).sum::<f64>() + 0.0;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        let head = StatusJson {
            results: &shown,
            jobs: outcomes.tally.total(),
            outcomes: &outcomes,
            credits: spent,
            credits_measured: located
                .jobs
                .iter()
                .filter(|p| p.measured)
                .map(|p| p.credits)
                .sum::<f64>()
                + 0.0,
            credits_table: located
                .jobs
                .iter()
                .filter(|p| !p.measured)
                .map(|p| p.credits)
                .sum::<f64>()
                + 0.0,
        };
        let head = serde_json::to_string_pretty(&head)?;
        // The document as one pretty-printed object: the head's fields, then
        // `job_states`, each job written as its record is read back.
        let open = head.strip_suffix("\n}").unwrap_or(&head);
        write!(out, "{open},\n  \"job_states\": [")?;
        let mut n = 0;
        records.each(jobs.places(), |r| -> anyhow::Result<()> {
            let job = jobs.job(n, r);
            let state = JobStatus::new(job, r, &results_dir);
            let text = serde_json::to_string_pretty(&state)?;
            let sep = if n == 0 { "" } else { "," };
            write!(out, "{sep}\n    {}", text.replace('\n', "\n    "))?;
            n += 1;
            Ok(())
        })?;
        let close = if n == 0 { "" } else { "\n  " };
        writeln!(out, "{close}]\n}}")?;
    } else if args.failed {
        for p in &outcomes.failed {
            writeln!(out, "{}\t{}", p.job_id, p.reason.replace(['\t', '\n'], " "))?;
        }
        // A list, read through `| head` as often as not: its code says it was
        // listed, never whether the reader left before its end (which only timing
        // decides). Where the batch stands is the plain `status`'s code.
        out.flush()?;
        return Ok(Exit::Ok);
    } else {
        writeln!(
            out,
            "{}: {}",
            shown.display(),
            summary::jobs(outcomes.tally.total())
        )?;
        write!(out, "{}", summary::render(&outcomes))?;
        if let Some(m) = &manifest {
            write!(out, "{}", credits_line(m, &standings, spent))?;
        }
    }
    out.flush()?;
    Ok(Exit::of_tally(&outcomes.tally))
}

/// The jobs `status` walks: the manifest's, in its order, or else the results
/// file's, in the order they first appear.
struct Walk<'a> {
    manifest: Option<&'a manifest::Manifest>,
    located: &'a checkpoint::Located,
}

impl<'a> Walk<'a> {
    /// Where each job's last row is (`None`: the job has none).
    fn places(&self) -> Box<dyn Iterator<Item = Option<&'a checkpoint::Place>> + 'a> {
        let located = self.located;
        match self.manifest {
            Some(m) => Box::new(m.jobs.iter().map(move |j| located.get(&j.id))),
            None => Box::new(located.jobs.iter().map(Some)),
        }
    }

    /// The `n`th job, read with its record `r`.
    fn job<'r>(&self, n: usize, r: Option<&'r Record>) -> summary::JobRef<'r>
    where
        'a: 'r,
    {
        match (self.manifest, r) {
            (Some(m), _) => m.jobs.get(n).map_or(
                summary::JobRef {
                    id: "",
                    fingerprint: None,
                    wants: None,
                },
                summary::JobRef::from,
            ),
            (None, Some(r)) => summary::JobRef::recorded(r),
            (None, None) => summary::JobRef {
                id: self.located.jobs.get(n).map_or("", |p| &p.id),
                fingerprint: None,
                wants: None,
            },
        }
    }
}

/// Runs `report`: writes the page of PATH's batch and prints its path.
pub fn report(args: &ReportArgs) -> anyhow::Result<Exit> {
    let (results, manifest, fetched) = source(&args.path, args.results.as_deref(), true)?;
    if !results.exists() {
        return Err(no_results(&results));
    }
    // A bucket batch's page goes in the current folder (its results' copy is
    // temporary); its links are presigned and expire.
    let out = args.out.clone().or_else(|| {
        fetched
            .as_ref()
            .map(|_| crate::report::page_path(Path::new(results.file_name().unwrap_or_default())))
    });
    if let Some(f) = &fetched {
        super::warn(&format!(
            "the page links the videos of {} by presigned URLs that work for whoever has the page, for {} days",
            f.url,
            crate::store::fetch::LINKS_LAST.as_secs() / 86_400
        ));
    }
    let out = crate::report::write_for(manifest.as_ref(), &results, out)?;
    super::print_stdout(format!("{}\n", out.display()).as_bytes())
}

/// What the batch cost and will cost: `spent`, the credits the results file
/// records, and the jobs still to submit at the manifest's prices. Where a job
/// stands (`standings`, in manifest order) is [`summary::standing_of`]'s answer, as
/// everywhere else.
fn credits_line(m: &manifest::Manifest, standings: &[Standing], spent: f64) -> String {
    let mut paid = Vec::new();
    let mut to_come = Vec::new();
    for (job, standing) in m.jobs.iter().zip(standings) {
        match standing {
            Standing::NotStarted => to_come.push(job),
            Standing::Running
            | Standing::NotDownloaded
            | Standing::DownloadFailed
            | Standing::Succeeded
            | Standing::VideoMissing
            | Standing::UpgradeNotMade => paid.push(job),
            Standing::InDoubt | Standing::Failed | Standing::Blocked => {}
        }
    }
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
