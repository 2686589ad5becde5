//! The results CSV: the checkpoint that makes a run resumable.
//!
//! While a run goes, a row is appended at every state change of a job and synced to
//! disk before the step it records is acted on, so the file may hold several rows per
//! job (the last one counts). A run that ends any way but a kill rewrites it, through
//! a temporary file and a rename, to one row per job in manifest order.
//!
//! This module reads the file ([`load`]), writes it ([`writer`]), and decides from it
//! what is left to do for each job ([`plan`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub mod plan;
pub mod rows;
pub mod schema;
pub mod writer;

pub use schema::HEADER;

/// How `error_message` begins when the service refused a job's 1080p or 4K upgrade
/// (after the upgrade's name): such a job keeps its base video and is not asked again.
pub const UPGRADE_FAILED: &str = "upgrade failed";

/// How a recorded download failure starts (in `error_message`), so that a later
/// successful download clears it and nothing else.
pub const DOWNLOAD_FAILED: &str = "download failed";

/// Separates several URLs or paths inside one cell.
pub const LIST_SEPARATOR: char = '|';

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not sent yet, or every send so far was refused without creating a task
    /// (429, 455, 500...): safe to send.
    Pending,
    /// About to send the generate request. Found on resume, it means the request may
    /// have been sent without its answer being recorded: the job is in doubt.
    Submitting,
    /// The service created the task; it is polled, never sent again.
    Submitted,
    Succeeded,
    Failed,
    /// The request was sent and no answer came: a task may exist and be billed.
    InDoubt,
}

impl State {
    pub const ALLOWED: &'static str = "pending, submitting, submitted, succeeded, failed, in_doubt";

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Submitting => "submitting",
            State::Submitted => "submitted",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::InDoubt => "in_doubt",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "submitting" => State::Submitting,
            "submitted" => State::Submitted,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "in_doubt" => State::InDoubt,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the results file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub job_id: String,
    pub state: Option<State>,
    pub task_id: Option<String>,
    /// Generate requests sent for this job, over all runs.
    pub attempts: u32,
    pub model: String,
    pub generation_type: String,
    pub aspect_ratio: String,
    pub prompt: String,
    pub fingerprint: String,
    pub video_urls: Vec<String>,
    /// 1080p or 4K result URLs, once the upgrade is ready.
    pub upgrade_urls: Vec<String>,
    pub video_paths: Vec<String>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub submitted_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// The 1080p or 4K file the job asks for (so that the file alone tells where a
    /// job waiting for it stands).
    pub upgrade: Option<crate::manifest::Upgrade>,
    /// The job keeps its base video beside the upgraded one.
    pub keep_original: bool,
    /// Credits this job's generate calls committed, over all runs: counted when the
    /// call is about to leave, given back when the service refused it without
    /// creating a task. A task that later fails stays counted (the service says
    /// failed tasks are free; the budget errs on the safe side).
    pub credits: f64,
    /// Earlier tasks of this job that a later submission replaced (the manifest
    /// changed, `--retry-failed`, `--resubmit-in-doubt`): their ids, or
    /// [`IN_DOUBT_TASK`] for a call that may have made a task whose id never came.
    pub superseded_tasks: Vec<String>,
    /// Where the videos of superseded tasks were moved to (never overwritten).
    pub superseded_paths: Vec<String>,
    /// The request's seed, empty when the service picks one.
    pub seeds: String,
    /// The resolution asked (`720p` when the request left it to the service).
    pub resolution: String,
    /// Seconds asked (`8` when the request left it to the service).
    pub duration: String,
    /// The request's image URLs.
    pub image_urls: Vec<String>,
}

/// How [`Record::superseded_tasks`] names a call that may have created a task whose
/// id never came back.
pub const IN_DOUBT_TASK: &str = "(in doubt)";

impl Record {
    /// How many files a finished job downloads: its upgraded videos (plus the base
    /// ones when it keeps the original), or else its base videos.
    pub fn files_expected(&self, keep_original: bool) -> usize {
        if self.upgrade_urls.is_empty() {
            self.video_urls.len()
        } else if keep_original {
            self.upgrade_urls.len() + self.video_urls.len()
        } else {
            self.upgrade_urls.len()
        }
    }

    /// True when the service refused this job's upgrade for good.
    pub fn upgrade_refused(&self) -> bool {
        self.error_message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("{UPGRADE_FAILED}: ")))
    }

    /// True when a succeeded job still has files to download.
    pub fn downloads_missing(&self, keep_original: bool) -> bool {
        self.video_paths.len() < self.files_expected(keep_original)
    }

    /// True when the last try to download this job's videos failed.
    pub fn download_failed(&self) -> bool {
        self.error_message
            .as_deref()
            .is_some_and(|m| m.starts_with(DOWNLOAD_FAILED))
    }

    /// The state, which every loaded or written record has.
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Pending)
    }

    /// What the job asks beyond its request, as recorded.
    pub fn wants(&self) -> plan::Wants {
        plan::Wants {
            upgrade: self.upgrade.is_some(),
            keep_original: self.keep_original,
        }
    }

    /// The cells of this row, in [`HEADER`] order.
    pub fn cells(&self) -> Vec<String> {
        schema::COLUMNS
            .iter()
            .map(|c| {
                let mut cell = String::new();
                (c.write)(self, &mut cell);
                cell
            })
            .collect()
    }

    /// Reads the row `cells` (of a file whose header has that many columns) as a
    /// record.
    pub(crate) fn from_cells(
        cells: &csv::StringRecord,
    ) -> Result<Record, (Option<String>, String)> {
        let mut record = Record::default();
        record.fill_from_cells(cells)?;
        Ok(record)
    }

    /// Sets this record to the row `cells`, reusing the record's strings: a results
    /// file a kill left holds several rows per job, and all but the last are
    /// replaced. Columns the row does not have (a file written before they were
    /// added) are set empty. On `Err` the record is left part-filled.
    fn fill_from_cells(
        &mut self,
        cells: &csv::StringRecord,
    ) -> Result<(), (Option<String>, String)> {
        for (i, column) in schema::COLUMNS.iter().enumerate() {
            let cell = cells.get(i).unwrap_or_default();
            (column.read)(self, cell).map_err(|m| (Some(column.name.to_owned()), m))?;
        }
        Ok(())
    }
}

/// A results file as read: the last row of every job.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The last record of each job, by job id.
    pub records: HashMap<String, Record>,
    /// Job ids in the order they first appear.
    pub order: Vec<String>,
    /// Data rows read (without the header), torn row excluded.
    pub rows: usize,
    /// A torn last row was dropped (the process was killed while writing it).
    pub torn: bool,
    /// The header is one an earlier version wrote, with fewer columns.
    pub old_header: bool,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// The same, with every recorded file path (`video_paths`, `superseded_paths`:
    /// relative to the results file's folder) made a path from the current folder,
    /// for `results`, the path the file was read from.
    pub fn with_paths_resolved(mut self, results: &Path) -> Loaded {
        let dir = crate::paths::absolute(
            results
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        );
        for r in self.records.values_mut() {
            for p in r.video_paths.iter_mut().chain(&mut r.superseded_paths) {
                *p = crate::paths::resolve(&dir, p)
                    .to_string_lossy()
                    .into_owned();
            }
        }
        self
    }

    /// True when the file holds more rows than jobs, or a torn row: the shape a kill
    /// leaves, which the run rewrites before appending to it; or when its header is
    /// an earlier version's, which gets today's columns the same way.
    pub fn needs_compaction(&self) -> bool {
        self.torn || self.old_header || self.rows != self.records.len()
    }
}

/// A results file as a run reads it: the last record of every job, in the order
/// the jobs first appear. A run finds its jobs by place when the file lists them in
/// manifest order (as every file a run finished does), so no table keyed by id is
/// built.
#[derive(Debug, Default)]
pub struct Listed {
    /// The last record of each job, in the order the jobs first appear.
    pub records: Vec<Record>,
    /// Data rows read (without the header), torn row excluded.
    pub rows: usize,
    /// A torn last row was dropped (the process was killed while writing it).
    pub torn: bool,
    /// See [`Loaded::old_header`].
    pub old_header: bool,
    pub warnings: Vec<String>,
    index: Index,
}

impl Listed {
    /// The last record of job `id`.
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.position(id).and_then(|at| self.records.get(at))
    }

    /// Where the last record of job `id` is in [`Listed::records`].
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.find(id, &self.records)
    }

    /// See [`Loaded::needs_compaction`].
    pub fn needs_compaction(&self) -> bool {
        self.torn || self.old_header || self.rows != self.records.len()
    }

    /// The same, keyed by id.
    pub fn into_loaded(self) -> Loaded {
        let order = self.records.iter().map(|r| r.job_id.clone()).collect();
        let mut records = HashMap::with_capacity(self.records.len());
        for record in self.records {
            records.insert(record.job_id.clone(), record);
        }
        Loaded {
            records,
            order,
            rows: self.rows,
            torn: self.torn,
            old_header: self.old_header,
            warnings: self.warnings,
        }
    }
}

/// Where each job's record is in [`Listed::records`], by a hash of its id: no copy
/// of the id is kept. Two ids of one hash (which 64 bits make next to impossible)
/// are told apart by comparing the records' ids, as `hashbrown`'s table does.
#[derive(Debug, Default)]
struct Index {
    table: hashbrown::HashTable<usize>,
}

impl Index {
    fn with_capacity(n: usize) -> Index {
        Index {
            table: hashbrown::HashTable::with_capacity(n),
        }
    }

    fn hash(id: &str) -> u64 {
        use std::hash::BuildHasher as _;
        rustc_hash::FxBuildHasher.hash_one(id)
    }

    fn find(&self, id: &str, records: &[Record]) -> Option<usize> {
        self.find_hashed(Index::hash(id), id, records)
    }

    fn find_hashed(&self, hash: u64, id: &str, records: &[Record]) -> Option<usize> {
        self.table
            .find(hash, |&at| records.get(at).is_some_and(|r| r.job_id == id))
            .copied()
    }

    /// Notes that the job at `at` of `records`, whose id hashes to `hash` and is not
    /// in the index yet, is there.
    fn insert_hashed(&mut self, hash: u64, at: usize, records: &[Record]) {
        self.table.insert_unique(hash, at, |&i| {
            records.get(i).map_or(0, |r| Index::hash(&r.job_id))
        });
    }

    fn reserve(&mut self, more: usize, records: &[Record]) {
        let _ = self.table.try_reserve(more, |&i| {
            records.get(i).map_or(0, |r| Index::hash(&r.job_id))
        });
    }
}

/// A results file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("failed to read results file `{}`: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {}{message}", path.display(), field_prefix(field))]
    Malformed {
        path: PathBuf,
        line: u64,
        field: Option<String>,
        message: String,
    },
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

/// A results file whose jobs are none of the manifest's.
#[derive(Debug, thiserror::Error)]
#[error(
    "results file `{}` belongs to another manifest: none of its {rows} jobs are in this one; give this run its own --results",
    path.display()
)]
pub struct ForeignResults {
    pub path: PathBuf,
    pub rows: usize,
}

/// Refuses a results file at `path` holding jobs `ids`, none of which `in_manifest`:
/// it is another manifest's. `run` and `status` both ask this, so that they refuse
/// the same files.
pub fn check_belongs<'a>(
    path: &Path,
    ids: impl ExactSizeIterator<Item = &'a str>,
    in_manifest: impl Fn(&str) -> bool,
) -> Result<(), ForeignResults> {
    let rows = ids.len();
    let mut ids = ids;
    if rows > 0 && !ids.any(in_manifest) {
        return Err(ForeignResults {
            path: path.to_owned(),
            rows,
        });
    }
    Ok(())
}

/// Reads the results file at `path`; `None` when it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Loaded>, CheckpointError> {
    Ok(load_listed(path, 0)?.map(Listed::into_loaded))
}

/// Reads the results file at `path` as a run does (see [`Listed`]), sized at once for
/// `jobs` jobs (the manifest's count, which a run's results file holds); `None` when
/// it does not exist yet.
pub fn load_listed(path: &Path, jobs: usize) -> Result<Option<Listed>, CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().map_err(io_err)?.len();
    // Every row the writer completes ends with a newline: a file that does not end
    // with one was cut while its last row was being written.
    let torn = if len == 0 {
        false
    } else {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1)).map_err(io_err)?;
        file.read_exact(&mut last).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        last[0] != b'\n'
    };
    // The csv reader buffers on its own.
    parse(file, path, torn, Sizing { jobs, len }).map(Some)
}

/// A results file read before its lock was taken, so that reading it overlaps with
/// reading the manifest. What was read is used only if, with the lock held, the file
/// is still the one read (same file, length and time of change): a run that held
/// the lock meanwhile appends (the length changes) or rewrites through a rename (the
/// file changes).
#[derive(Debug)]
pub struct Preloaded {
    path: PathBuf,
    stamp: Option<Stamp>,
    result: Result<Option<Listed>, CheckpointError>,
}

/// What tells a file apart from its next version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Device and inode: a rename puts another file at the path.
    #[cfg(unix)]
    file: (u64, u64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        file: {
            use std::os::unix::fs::MetadataExt as _;
            (m.dev(), m.ino())
        },
    })
}

/// Reads the results file at `path` without its lock (see [`Preloaded`]).
pub fn preload(path: &Path) -> Preloaded {
    let stamp = stamp(path);
    Preloaded {
        path: path.to_owned(),
        stamp,
        // The manifest, read meanwhile, is what would tell the job count.
        result: load_listed(path, 0),
    }
}

impl Preloaded {
    /// What [`load_listed`] of `path` would give now, if this read is still it; `None`
    /// when `path` is another file, or the file changed since. Call with the lock held.
    pub fn take_for(self, path: &Path) -> Option<Result<Option<Listed>, CheckpointError>> {
        (self.path == path && stamp(path) == self.stamp).then_some(self.result)
    }
}

/// Parses a results file from `reader`; `path` names it in messages. When `torn`,
/// the last row is incomplete and is dropped with a warning.
pub fn parse_reader(reader: impl Read, path: &Path, torn: bool) -> Result<Loaded, CheckpointError> {
    parse(reader, path, torn, Sizing::default()).map(Listed::into_loaded)
}

/// What the list of records is sized for before it is read: `jobs` when known (the
/// manifest's count), or else an estimate from the file's length `len` and its first
/// rows. Growing it a doubling at a time copied every record again, a sixth of
/// reading 100,000 rows.
#[derive(Debug, Clone, Copy, Default)]
struct Sizing {
    jobs: usize,
    len: u64,
}

/// Rows read before the rest are estimated from their length.
const SIZING_ROWS: usize = 32;

/// [`parse_reader`], as a run reads it, sized for `jobs` jobs (see [`load_listed`]).
fn parse(
    reader: impl Read,
    path: &Path,
    torn: bool,
    sizing: Sizing,
) -> Result<Listed, CheckpointError> {
    let malformed =
        |line: u64, field: Option<String>, message: String| CheckpointError::Malformed {
            path: path.to_owned(),
            line,
            field,
            message,
        };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut loaded = Listed::default();
    let mut rows = rdr.records();

    let Some(header) = rows.next() else {
        return Ok(loaded);
    };
    // The real header is ASCII, so a cut copy of it always reads: a header that
    // does not read is not ours, torn or not (taking it for torn would overwrite it).
    let header = header.map_err(|e| csv_error(path, &e))?;
    let width = schema::known_width(header.iter());
    let Some(width) = width else {
        let whole_header_torn = torn && HEADER.join(",").starts_with(&header_cells(&header));
        if whole_header_torn {
            loaded.torn = true;
            loaded
                .warnings
                .push("dropped a torn header row (a run was killed while writing it)".into());
            return Ok(loaded);
        }
        return Err(malformed(
            1,
            None,
            format!(
                "not a veo-batch results file: the header is `{}`, expected `{}`",
                truncate(&header_cells(&header), 200),
                HEADER.join(",")
            ),
        ));
    };
    loaded.old_header = width != HEADER.len();

    // Two buffers reused for every row: the current one, and the next, read ahead
    // to know whether the current row is the last.
    drop(rows);
    loaded.records.reserve(sizing.jobs);
    loaded.index = Index::with_capacity(sizing.jobs);
    let mut current = csv::StringRecord::new();
    let mut next = csv::StringRecord::new();
    // The row being parsed. A job's earlier record, replaced by a later row, becomes
    // the next one's: rows of a job seen before cost no allocation.
    let mut scratch = Record::default();
    let mut current_read = rdr.read_record(&mut current);
    loop {
        let current_err = match current_read {
            Ok(false) => break,
            Ok(true) => None,
            Err(e) => Some(e),
        };
        let next_read = rdr.read_record(&mut next);
        let is_last = matches!(next_read, Ok(false));
        let short = current_err.is_none() && current.len() < width;
        let parsed = match current_err {
            Some(e) => Err(csv_error(path, &e)),
            None => parse_row(&current, width, path, &mut scratch),
        };
        // A kill can cut the last row anywhere, even just after a newline inside a
        // quoted prompt (which leaves it short of cells), so such a row is taken for
        // a torn one. Nothing was acted on for it: a row is synced before its step.
        match parsed {
            Ok(()) | Err(_) if is_last && torn => {
                loaded.torn = true;
                loaded.warnings.push(format!(
                    "{}: dropped a torn last row (a run was killed while writing it)",
                    path.display()
                ));
            }
            Err(e) if is_last && short => {
                loaded.torn = true;
                loaded.warnings.push(format!(
                    "dropped an incomplete last row (a run was killed while writing it): {e}"
                ));
            }
            Err(e) => return Err(e),
            Ok(()) => {
                loaded.rows += 1;
                if loaded.rows == SIZING_ROWS
                    && sizing.jobs == 0
                    && let Some(at) = current.position()
                {
                    // A job has a row or more: rows are an upper bound on jobs.
                    let per_row = (at.byte() / SIZING_ROWS as u64).max(1);
                    let rows = usize::try_from(sizing.len / per_row + 1).unwrap_or(0);
                    let more = rows.min(1 << 22).saturating_sub(loaded.records.len());
                    let _ = loaded.records.try_reserve(more);
                    loaded.index.reserve(more, &loaded.records);
                }
                match loaded.index.find(&scratch.job_id, &loaded.records) {
                    Some(at) => std::mem::swap(&mut loaded.records[at], &mut scratch),
                    None => {
                        let at = loaded.records.len();
                        loaded.records.push(std::mem::take(&mut scratch));
                        let id = loaded.records[at].job_id.as_str();
                        let hash = Index::hash(id);
                        loaded.index.insert_hashed(hash, at, &loaded.records);
                    }
                }
            }
        }
        std::mem::swap(&mut current, &mut next);
        current_read = next_read;
    }
    // Jobs with many rows each (a killed run's file) leave the estimate far too high;
    // what is not used was never touched, and shrinking a list this large moves no
    // record (the allocator remaps it).
    if loaded.records.capacity() > 2 * loaded.records.len() + SIZING_ROWS {
        loaded.records.shrink_to_fit();
    }
    Ok(loaded)
}

fn parse_row(
    row: &csv::StringRecord,
    width: usize,
    path: &Path,
    into: &mut Record,
) -> Result<(), CheckpointError> {
    let line = row.position().map_or(0, |p| p.line());
    let malformed = |field, message| CheckpointError::Malformed {
        path: path.to_owned(),
        line,
        field,
        message,
    };
    if row.len() != width {
        return Err(malformed(
            None,
            format!("has {} cells, expected {width}", row.len()),
        ));
    }
    into.fill_from_cells(row).map_err(|(field, message)| {
        let field = match (field, row.get(0)) {
            (Some(f), Some(id)) if !id.is_empty() => Some(format!("job {id:?}: {f}")),
            (f, _) => f,
        };
        malformed(field, message)
    })
}

fn header_cells(header: &csv::StringRecord) -> String {
    header.iter().collect::<Vec<_>>().join(",")
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> CheckpointError {
    let line = e.position().map_or(0, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("is not valid UTF-8 (field {})", err.field() + 1)
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} cells, expected {expected_len}"),
        _ => e.to_string(),
    };
    CheckpointError::Malformed {
        path: path.to_owned(),
        line,
        field: None,
        message,
    }
}

/// The current time, as written in the results file (RFC 3339, UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: State) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            attempts: 1,
            model: "veo3_fast".into(),
            prompt: "a \"dog\", running\nin a park".into(),
            fingerprint: "00ff".into(),
            video_urls: vec!["http://x/1.mp4".into(), "http://x/2.mp4".into()],
            updated_at: "2026-01-01T00:00:00Z".into(),
            ..Record::default()
        }
    }

    fn to_csv(records: &[Record]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(HEADER).unwrap();
        for r in records {
            w.write_record(r.cells()).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn parse(bytes: &[u8]) -> Result<Loaded, CheckpointError> {
        let torn = !bytes.is_empty() && bytes.last() != Some(&b'\n');
        parse_reader(bytes, Path::new("r.csv"), torn)
    }

    #[test]
    fn round_trip_and_last_row_wins() {
        let a1 = record("a", State::Submitting);
        let mut a2 = record("a", State::Submitted);
        a2.task_id = Some("t1".into());
        let b = record("b", State::Failed);
        let loaded = parse(&to_csv(&[a1, a2.clone(), b.clone()])).unwrap();
        assert_eq!(loaded.rows, 3);
        assert_eq!(loaded.order, ["a", "b"]);
        assert_eq!(loaded.records["a"], a2);
        assert_eq!(loaded.records["b"], b);
        assert!(loaded.needs_compaction());
        assert!(!loaded.torn);
    }

    fn record_strategy() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        let cell = "[a-z\",\n ]{1,6}";
        let states = prop::sample::select(vec![
            State::Pending,
            State::Submitting,
            State::Submitted,
            State::Succeeded,
            State::Failed,
            State::InDoubt,
        ]);
        (
            (
                prop::sample::select(vec!["a", "b", "c"]),
                states,
                any::<u32>(),
                cell,
                cell,
            ),
            (
                prop::option::of(cell),
                prop::collection::vec("[a-z:/.]{1,8}", 0..3),
                prop::collection::vec("[a-z:/.]{1,8}", 0..2),
                prop::option::of(any::<i64>()),
                prop::option::of(cell),
                prop::option::of(cell),
            ),
        )
            .prop_map(
                |((id, state, attempts, prompt, fp), (task, videos, paths, code, msg, at))| {
                    Record {
                        job_id: id.into(),
                        state: Some(state),
                        task_id: task,
                        attempts,
                        model: "veo3".into(),
                        prompt,
                        fingerprint: fp,
                        video_urls: videos,
                        video_paths: paths,
                        error_code: code,
                        error_message: msg,
                        finished_at: at,
                        updated_at: "2026-01-01T00:00:00Z".into(),
                        ..Record::default()
                    }
                },
            )
    }

    proptest::proptest! {
        /// Rows parsed into a job's earlier record (to reuse its strings) leave
        /// nothing of it behind: the last row of each job is what loads.
        #[test]
        fn each_job_loads_as_its_last_row(rows in proptest::collection::vec(record_strategy(), 1..12)) {
            let loaded = parse(&to_csv(&rows)).unwrap();
            let mut order: Vec<String> = Vec::new();
            for r in &rows {
                if !order.contains(&r.job_id) {
                    order.push(r.job_id.clone());
                }
            }
            proptest::prop_assert_eq!(&loaded.order, &order);
            proptest::prop_assert_eq!(loaded.rows, rows.len());
            for id in &order {
                let last = rows.iter().rev().find(|r| r.job_id == *id).unwrap();
                proptest::prop_assert_eq!(&loaded.records[id], last);
            }
        }
    }

    #[test]
    fn ids_of_the_same_hash_are_told_apart() {
        let records = [
            record("a", State::Submitted),
            record("b", State::Failed),
            record("c", State::Failed),
        ];
        // Room for all three: a table that grows rehashes by the ids' real hashes,
        // not the forced ones.
        let mut index = Index::with_capacity(16);
        index.insert_hashed(7, 0, &records);
        index.insert_hashed(7, 1, &records);
        index.insert_hashed(8, 2, &records);
        assert_eq!(index.find_hashed(7, "a", &records), Some(0));
        assert_eq!(index.find_hashed(7, "b", &records), Some(1));
        assert_eq!(index.find_hashed(8, "c", &records), Some(2));
        assert_eq!(index.find_hashed(8, "d", &records), None);
        // By their real hashes, as a run looks them up.
        let mut index = Index::default();
        for (at, r) in records.iter().enumerate() {
            index.insert_hashed(Index::hash(&r.job_id), at, &records);
        }
        assert_eq!(index.find("b", &records), Some(1));
        assert_eq!(index.find("z", &records), None);
    }

    #[test]
    fn a_listed_file_finds_each_job_by_id() {
        let rows = [
            record("b", State::Submitting),
            record("a", State::Submitted),
            record("b", State::Failed),
        ];
        let listed = super::parse(
            &to_csv(&rows)[..],
            Path::new("r.csv"),
            false,
            Sizing::default(),
        )
        .unwrap();
        let ids: Vec<&str> = listed.records.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(listed.get("b"), Some(&rows[2]));
        assert_eq!(listed.get("a"), Some(&rows[1]));
        assert_eq!(listed.get("c"), None);
        assert!(listed.needs_compaction());
    }

    #[test]
    fn torn_last_row_is_dropped_with_a_warning() {
        let mut bytes = to_csv(&[
            record("a", State::Submitted),
            record("b", State::Submitting),
        ]);
        let last_row_len = bytes.len() - to_csv(&[record("a", State::Submitted)]).len();
        for cut in 1..last_row_len {
            let torn = &bytes[..bytes.len() - cut];
            let loaded = parse(torn).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert!(loaded.torn);
            assert_eq!(loaded.order, ["a"], "cut {cut}");
            assert_eq!(loaded.warnings.len(), 1);
        }
        bytes.truncate(5);
        let loaded = parse(&bytes).unwrap();
        assert!(loaded.records.is_empty());
    }

    #[test]
    fn bad_header_is_located() {
        let err = parse(b"id,prompt\nx,y\n").unwrap_err().to_string();
        assert!(
            err.starts_with("r.csv:1: not a veo-batch results file: the header is `id,prompt`"),
            "{err}"
        );
    }

    #[test]
    fn bad_cells_are_located() {
        let mut bytes = to_csv(&[record("a", State::Submitted)]);
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace(",submitted,", ",flying,");
        let err = parse(text.as_bytes()).unwrap_err().to_string();
        assert!(
            err.starts_with("r.csv:2: job \"a\": state: \"flying\" is not a state"),
            "{err}"
        );
        let good = to_csv(&[record("c", State::Failed)]);
        let good_row = &good[good.iter().position(|b| *b == b'\n').unwrap() + 1..];
        bytes.extend_from_slice(b"b,submitted\n");
        let mut last_bad = bytes.clone();
        bytes.extend_from_slice(good_row);
        let err = parse(&bytes).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("r.csv:4: has 2 cells, expected {}", HEADER.len())
        );
        // The same row last is what a kill leaves: dropped with a warning.
        let loaded = parse(&last_bad).unwrap();
        assert!(loaded.torn);
        assert_eq!(loaded.order, ["a"]);
        last_bad.clear();
    }

    #[test]
    fn invalid_utf8_is_located() {
        let mut bytes = to_csv(&[record("a", State::Submitted)]);
        bytes.extend_from_slice(b"b\xff,submitted,,1,,,,,,,,,,,,,x\n");
        bytes.extend_from_slice(b"c,failed,,1,,,,,,,,,,,,,x\n");
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.starts_with("r.csv:4: is not valid UTF-8"), "{err}");
    }

    #[test]
    fn a_preload_is_used_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let absent = preload(&path);
        assert!(matches!(absent.take_for(&path), Some(Ok(None))));
        std::fs::write(&path, to_csv(&[record("a", State::Submitted)])).unwrap();
        assert!(preload(&path).take_for(&path).is_some(), "unchanged");
        assert!(
            preload(&path)
                .take_for(&dir.path().join("other.csv"))
                .is_none()
        );
        // Created, appended to, or replaced through a rename since: read again.
        let absent = preload(&dir.path().join("new.csv"));
        std::fs::write(dir.path().join("new.csv"), "").unwrap();
        assert!(absent.take_for(&dir.path().join("new.csv")).is_none());
        let pre = preload(&path);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &to_csv(&[record("b", State::Pending)])[..]).unwrap();
        assert!(pre.take_for(&path).is_none(), "appended");
        let pre = preload(&path);
        let tmp = dir.path().join("tmp.csv");
        std::fs::copy(&path, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(pre.take_for(&path).is_none(), "replaced");
    }

    #[test]
    fn empty_file_has_no_records() {
        let loaded = parse(b"").unwrap();
        assert!(loaded.records.is_empty());
        assert!(!loaded.needs_compaction());
    }

    #[test]
    fn an_unreadable_header_is_refused_even_without_a_final_newline() {
        // Not a cut copy of our header (that is ASCII): a foreign file, which must
        // not be taken for torn and overwritten.
        let e = parse(b"\xff\xfe not ours").unwrap_err();
        assert!(e.to_string().starts_with("r.csv:1: "), "{e}");
        let loaded = parse(b"job_id,sta").unwrap();
        assert!(loaded.torn && loaded.records.is_empty());
    }
}
