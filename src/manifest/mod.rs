//! Manifests: YAML campaigns and CSV job tables, read, expanded (defaults, matrix,
//! repeat, include) and validated into the list of jobs a run works through.
//!
//! Reading is synchronous and does no I/O beyond reading the files. Every problem in
//! a manifest is collected, located (file, line, column) and reported in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cost::PriceTable;
use crate::request::GenerateRequest;
use crate::units::{Rate, Span};

/// After the task succeeds, ask for a higher-resolution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upgrade {
    Hd1080,
    Uhd4k,
}

/// One job: a validated request and the id that is its resume key.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub request: GenerateRequest,
    /// Hash of the request body; see [`GenerateRequest::fingerprint`].
    pub fingerprint: String,
    pub upgrade: Option<Upgrade>,
    /// Keep the base video beside the upgraded one.
    pub keep_original: bool,
    /// Where the job was written (for messages).
    pub origin: Origin,
}

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

/// `run:` settings of a manifest; every one can be overridden by a flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSettings {
    pub concurrency: Option<usize>,
    pub rate: Option<Rate>,
    pub max_attempts: Option<u32>,
    pub poll_interval: Option<Span>,
    pub task_timeout: Option<Span>,
    pub request_timeout: Option<Span>,
    pub max_credits: Option<f64>,
}

/// `output:` settings of a manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputSettings {
    pub results: Option<PathBuf>,
    pub videos_dir: Option<PathBuf>,
}

/// A manifest read and validated: everything a run needs from the file.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    /// The batch's name: the `name:` of a YAML manifest, the file stem of a CSV one.
    pub name: String,
    pub jobs: Vec<Job>,
    pub run: RunSettings,
    pub output: OutputSettings,
    pub prices: PriceTable,
    /// Problems that do not stop the run (a deprecated field).
    pub warnings: Vec<Diagnostic>,
}

/// One located problem: `FILE:LINE[:COL]: job "ID": FIELD: what is wrong (what is allowed)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    pub job: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(job) = &self.job {
            write!(f, "job {job:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(
            f,
            "manifest `{}` has {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ManifestError {}

/// Reads, expands and validates the manifest at `path` (`.yaml`, `.yml` or `.csv`).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let _ = path;
    todo!("manifest helper")
}
