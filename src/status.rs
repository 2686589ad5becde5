//! `veo-batch status`: where the jobs of a run stand, read from its results file
//! alone. Sends nothing, takes no lock (it only reads).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{self, HEADER};
use crate::cli::StatusArgs;
use crate::exit;
use crate::manifest;
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
            SourceError::Other(e) => {
                eprintln!("error: {e:#}");
                exit::USAGE
            }
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
    }
    Ok(outcomes.tally.exit_code())
}
