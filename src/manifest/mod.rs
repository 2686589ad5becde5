//! Manifests: YAML campaigns and CSV job tables, read, expanded (defaults, matrix,
//! repeat, include) and validated into the list of jobs a run works through.
//!
//! Reading is synchronous and does no I/O beyond reading the files. Every problem in
//! a manifest is collected, located (file, line, column) and reported in one pass.

mod chains;
pub mod images;
mod job;
mod node;
pub mod stems;
mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_extend;
#[cfg(test)]
mod tests_images;
#[cfg(test)]
mod tests_resolution;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::cost::PriceTable;
pub use crate::manifest::images::{LocalImage, LocalRef};
use crate::request::GenerateRequest;
use crate::units::{Rate, Span};

pub use crate::request::Upgrade;
pub use chains::{Chains, parents_first};

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
    /// The stem of its video files when it is not the id itself (an id that had to
    /// be cleaned, or that would share a file with another); see [`crate::paths`].
    pub file_stem: Option<String>,
    /// The request's images that are local files (uploaded just before it is sent).
    pub local_images: Vec<LocalRef>,
    /// Set when the job continues another job's video (`extend:`): its request then
    /// holds the extend endpoint's fields (prompt, model, seeds, watermark, callback).
    /// Boxed: most jobs are not extends, and every job would carry its size.
    pub extend: Option<Box<Extend>>,
}

/// What an extend job continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Extend {
    /// The id of the job whose video this one continues.
    pub parent: String,
    /// The parent's place in the manifest's jobs.
    pub parent_index: usize,
    /// The job sets its own model (otherwise it is the parent's).
    pub own_model: bool,
    /// Where `extend:` was written.
    pub at: Origin,
}

/// How the results file and `validate` name the mode of an extend job.
pub const EXTEND_MODE: &str = "EXTEND";

impl Job {
    /// The stem of the job's video files: `<stem>.mp4`, `<stem>-1080p.mp4`, ...
    pub fn stem(&self) -> &str {
        self.file_stem.as_deref().unwrap_or(&self.id)
    }

    /// The job's mode: its generation type, or [`EXTEND_MODE`].
    pub fn mode(&self) -> &'static str {
        match self.extend {
            Some(_) => EXTEND_MODE,
            None => self.request.generation_type.as_str(),
        }
    }

    /// The body the job sends; an extend's names `parent_task`, the task of the
    /// video it continues.
    pub fn body(&self, parent_task: &str) -> serde_json::Value {
        match self.extend {
            Some(_) => crate::request::extend_body(&self.request, parent_task),
            None => self.request.to_body(),
        }
    }

    /// Appends the text of [`Job::body`] to `out`.
    pub fn write_body(&self, parent_task: &str, out: &mut Vec<u8>) {
        match self.extend {
            Some(_) => crate::request::write_extend_body(&self.request, parent_task, out),
            None => self.request.write_body(out),
        }
    }
}

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
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
    /// Webhook URLs told when the run ends.
    pub notify: Vec<reqwest::Url>,
    /// The file holding the secret that signs notifications.
    pub notify_secret_file: Option<PathBuf>,
    /// The Prometheus text file written when the run ends.
    pub metrics_file: Option<PathBuf>,
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
    /// Problems that do not stop the run (a deprecated field, a job without a price).
    pub warnings: Vec<Diagnostic>,
    /// Advice (a resolution asked at generation would cost less than an upgrade).
    pub hints: Vec<Diagnostic>,
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
            write!(f, "job {:?}: ", clip(job, MAX_SHOWN_NAME))?;
        }
        if let Some(field) = &self.field {
            write!(f, "{}: ", clip(field, MAX_SHOWN_NAME))?;
        }
        f.write_str(&clip(&self.message, MAX_SHOWN_MESSAGE))
    }
}

/// Longest job id or field name a diagnostic shows, in characters.
const MAX_SHOWN_NAME: usize = 200;
/// Longest message a diagnostic shows: a hostile file can put megabytes in one
/// cell or key, and its error must stay a readable line.
const MAX_SHOWN_MESSAGE: usize = 2000;

fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}... ({} bytes in all)", &s[..i], s.len()).into(),
        None => s.into(),
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

/// What reading a manifest may be told besides its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The largest local image file accepted (`--max-image-size`).
    pub max_image_bytes: u64,
    /// Folders besides the manifest's own that local images may be in
    /// (`--allow-images-from`); `None` reads images from anywhere, for commands that
    /// send nothing (`status`, `report`), which must read what a run was allowed to.
    pub image_roots: Option<Vec<PathBuf>>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            max_image_bytes: images::DEFAULT_MAX_IMAGE_BYTES,
            image_roots: Some(Vec::new()),
        }
    }
}

impl LoadOptions {
    /// Options for a command that sends nothing: local images are read wherever
    /// they are (a run allowed them, maybe with a flag this command has not got).
    pub fn sending_nothing() -> LoadOptions {
        LoadOptions {
            image_roots: None,
            ..LoadOptions::default()
        }
    }
}

/// Reads, expands and validates the manifest at `path` (`.yaml`, `.yml` or `.csv`).
///
/// Every problem is collected; the error lists them all, each located.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    load_with(path, LoadOptions::default())
}

/// [`load`] with `options`.
pub fn load_with(path: &Path, options: LoadOptions) -> Result<Manifest, ManifestError> {
    let mut out = job::Gatherer::default();
    out.images.max_bytes = options.max_image_bytes;
    // The manifest's own folder, then what the user widened it to (the manifest's
    // `allow_images_from:` adds its own as it is read, before its jobs).
    out.images.roots = options.image_roots.map(|extra| {
        let own = crate::paths::folder_of(path);
        std::iter::once(own.to_path_buf()).chain(extra).collect()
    });
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file_at = Origin {
        file: path.to_path_buf(),
        line: None,
        column: None,
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".to_owned());
    let mut name = stem;
    let mut run = RunSettings::default();
    let mut output = OutputSettings::default();
    let mut prices = PriceTable::default();
    match ext.as_deref() {
        Some("yaml" | "yml") => {
            let settings = yaml::read(path, &mut out);
            if let Some(n) = settings.name {
                name = n;
            }
            run = settings.run;
            output = settings.output;
            prices = settings.prices;
        }
        Some("csv") => {
            let input = table::TableInput {
                path,
                defaults: None,
                extra: &BTreeMap::new(),
            };
            if let Err(e) = table::read(&input, &mut out) {
                let msg = format!("cannot read the manifest: {}", io_message(&e));
                out.error(job::diag(file_at.clone(), None, None, msg));
            }
        }
        _ => out.error(job::diag(
            file_at.clone(),
            None,
            None,
            "is not a manifest: its name must end in .yaml, .yml or .csv",
        )),
    }
    chains::check_links(&mut out);
    let hints = out.take_hints();
    let (mut jobs, mut errors, mut warnings) = out.into_parts();
    if errors.is_empty() {
        errors.extend(chains::resolve(&mut jobs));
    } else {
        errors.extend(chains::parent_problems(&jobs).0);
    }
    warnings.extend(unpriced_warnings(&jobs, &prices));
    for clash in stems::assign_stems(&mut jobs) {
        let (job, other) = (&jobs[clash.job], &jobs[clash.other]);
        errors.push(job::diag(
            job.origin.clone(),
            Some(&job.id),
            Some("id"),
            format!(
                "its video file {} is where job {:?} ({}) keeps {}; rename one of them",
                clash.file, other.id, other.origin, clash.what
            ),
        ));
    }
    if errors.is_empty() && jobs.is_empty() {
        errors.push(job::diag(file_at, None, None, "the manifest has no jobs"));
    }
    if !errors.is_empty() {
        return Err(ManifestError {
            path: path.to_path_buf(),
            diagnostics: errors,
        });
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        name,
        jobs,
        run,
        output,
        prices,
        warnings,
        hints,
    })
}

/// One warning per model and resolution the price table has no price for, at the
/// first job that needs it: its cost is not counted, and `--max-credits` cannot be kept.
fn unpriced_warnings(jobs: &[Job], prices: &PriceTable) -> Vec<Diagnostic> {
    let estimate = crate::cost::Estimate::of(prices, jobs);
    estimate
        .unpriced
        .iter()
        .map(|u| {
            let first = &jobs[u.first];
            let which = match u.jobs - 1 {
                0 => "this job counts".to_owned(),
                1 => "this job and 1 more count".to_owned(),
                n => format!("this job and {n} more count"),
            };
            job::diag(
                first.origin.clone(),
                Some(&first.id),
                None,
                format!(
                    "the price table ({}) has no price for {u}: {which} as 0 \
                     credits in the estimate, and --max-credits cannot be kept; set it under \
                     prices: (`{}: {{{}: CREDITS}}`)",
                    prices.describe(),
                    u.model,
                    u.resolution
                ),
            )
        })
        .collect()
}

/// A file error as a short lowercase phrase (`no such file`), without the OS code.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "no such file".to_owned(),
        ErrorKind::PermissionDenied => "permission denied".to_owned(),
        ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => {
            let s = e.to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_owned();
            let mut c = s.chars();
            match c.next() {
                Some(first) => first.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

impl crate::cost::Priced for Job {
    fn request(&self) -> &GenerateRequest {
        &self.request
    }

    fn upgrade(&self) -> Option<Upgrade> {
        self.upgrade
    }

    fn is_extend(&self) -> bool {
        self.extend.is_some()
    }
}
