//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint;
use crate::cli::StatusArgs;
use crate::exit;
use crate::manifest;
use crate::paths::file_stem;
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
    checkpoint::schema::is_header_line(first.trim_end())
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
    }
    Ok(outcomes.tally.exit_code())
}
