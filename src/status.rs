//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{self, HEADER, Record, State};
use crate::cli::StatusArgs;
use crate::cost::{Estimate, credits};
use crate::exit;
use crate::manifest;
use crate::runner::paths::file_stem;
use crate::summary::{self, Outcomes};

#[derive(Serialize)]
struct StatusJson<'a> {
    results: &'a Path,
    jobs: usize,
    #[serde(flatten)]
    outcomes: &'a Outcomes,
}

/// Runs `status`; the exit code is the one the run would have ended with.
pub fn run(args: &StatusArgs) -> u8 {
    match status(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::USAGE
        }
    }
}

fn is_results_file(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let _ = BufReader::new(file).read_line(&mut first);
    first.trim_end() == HEADER.join(",")
}

fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    let is_manifest = matches!(
        args.path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) || (args.path.extension().is_some_and(|e| e == "csv")
        && !is_results_file(&args.path));

    let (results, manifest) = if is_manifest {
        let m = match manifest::load(&args.path) {
            Ok(m) => m,
            Err(e) => return Ok(crate::app::report_manifest_error(&e)),
        };
        // The manifest's `output:` paths come resolved against its folder.
        let results = args
            .results
            .clone()
            .or_else(|| m.output.results.clone())
            .unwrap_or_else(|| {
                PathBuf::from("results").join(format!("{}.csv", file_stem(&m.name)))
            });
        (results, Some(m))
    } else {
        (args.path.clone(), None)
    };

    let Some(loaded) = checkpoint::load(&results)? else {
        anyhow::bail!(
            "no results file at `{}`: nothing has run yet (or pass --results)",
            results.display()
        );
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let outcomes = match &manifest {
        Some(m) => summary::outcomes(
            m.jobs.iter().map(summary::JobRef::from),
            &loaded.records,
            true,
        ),
        None => summary::outcomes(
            loaded.order.iter().map(|id| summary::JobRef {
                id,
                fingerprint: None,
                keep_original: false,
                upgrade: false,
            }),
            &loaded.records,
            true,
        ),
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = StatusJson {
            results: &results,
            jobs: outcomes.tally.total(),
            outcomes: &outcomes,
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
            "{}: {} jobs",
            results.display(),
            outcomes.tally.total()
        )?;
        write!(out, "{}", summary::render(&outcomes))?;
        if let Some(m) = &manifest {
            write!(out, "{}", credits_line(m, &loaded.records))?;
        }
    }
    Ok(outcomes.tally.exit_code())
}

/// What the manifest's jobs cost at its prices: those with a task that has not
/// failed (failed tasks are free), and those still to submit. Jobs in doubt are
/// in neither: whether they were charged is what nobody knows.
fn credits_line(m: &manifest::Manifest, records: &HashMap<String, Record>) -> String {
    let mut paid = Vec::new();
    let mut to_come = Vec::new();
    for job in &m.jobs {
        match records
            .get(&job.id)
            .filter(|r| r.fingerprint == job.fingerprint)
        {
            Some(r) => match r.state() {
                State::Submitted | State::Succeeded if r.task_id.is_some() => paid.push(job),
                State::Pending => to_come.push(job),
                _ => {}
            },
            None => to_come.push(job),
        }
    }
    let (paid_n, to_come_n) = (paid.len(), to_come.len());
    let both = Estimate::of(&m.prices, paid.iter().chain(&to_come).copied());
    let paid = Estimate::of(&m.prices, paid);
    let to_come = Estimate::of(&m.prices, to_come);
    let jobs = |n: usize| if n == 1 { "job" } else { "jobs" };
    format!(
        "credits at the manifest's prices ({}): about {} for the {paid_n} {} with a task, \
         {} for the {to_come_n} {} still to submit{}\n",
        m.prices.describe(),
        credits(paid.total()),
        jobs(paid_n),
        credits(to_come.total()),
        jobs(to_come_n),
        both.unpriced_note()
    )
}
