//! Reading a results file: the last record of every job, as `status` reads it
//! (keyed by id) or as a run reads it (a list in the order jobs first appear, found
//! by a hash of their ids), with located errors for anything malformed, a torn last
//! row tolerated, and a read made ahead on another thread used only if the file is
//! still the same.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{HEADER, Record, schema};

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
        let dir = crate::paths::absolute(crate::paths::folder_of(results));
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
pub(super) struct Index {
    table: hashbrown::HashTable<usize>,
}

impl Index {
    #[cfg(test)]
    pub(super) fn with_capacity(n: usize) -> Index {
        Index {
            table: hashbrown::HashTable::with_capacity(n),
        }
    }

    pub(super) fn hash(id: &str) -> u64 {
        use std::hash::BuildHasher as _;
        rustc_hash::FxBuildHasher.hash_one(id)
    }

    pub(super) fn find(&self, id: &str, records: &[Record]) -> Option<usize> {
        self.find_hashed(Index::hash(id), id, records)
    }

    pub(super) fn find_hashed(&self, hash: u64, id: &str, records: &[Record]) -> Option<usize> {
        self.table
            .find(hash, |&at| records.get(at).is_some_and(|r| r.job_id == id))
            .copied()
    }

    /// Notes that the job at `at` of `records`, whose id hashes to `hash` and is not
    /// in the index yet, is there.
    pub(super) fn insert_hashed(&mut self, hash: u64, at: usize, records: &[Record]) {
        self.table.insert_unique(hash, at, |&i| {
            records.get(i).map_or(0, |r| Index::hash(&r.job_id))
        });
    }

    pub(super) fn reserve(&mut self, more: usize, records: &[Record]) {
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
    let Some((file, len, torn)) = open(path)? else {
        return Ok(None);
    };
    // The csv reader buffers on its own.
    parse(file, path, torn, Sizing { jobs, len }).map(Some)
}

/// Opens the results file at `path`: the file, its length, and whether its last
/// row is torn; `None` when it does not exist yet.
pub(super) fn open(path: &Path) -> Result<Option<(File, u64, bool)>, CheckpointError> {
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
    Ok(Some((file, len, torn)))
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
    result: Result<Option<super::Located>, CheckpointError>,
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
        result: super::load_located(path),
    }
}

impl Preloaded {
    /// What [`super::load_located`] of `path` would give now, if this read is still
    /// it; `None` when `path` is another file, or the file changed since. Call with
    /// the lock held.
    pub fn take_for(self, path: &Path) -> Option<Result<Option<super::Located>, CheckpointError>> {
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
pub(super) struct Sizing {
    jobs: usize,
    len: u64,
}

impl Sizing {
    /// For a file of `len` bytes whose job count is not known.
    pub(super) fn of_len(len: u64) -> Sizing {
        Sizing { jobs: 0, len }
    }
}

/// Rows read before the rest are estimated from their length.
const SIZING_ROWS: usize = 32;

/// What a reading keeps of each job's last row: its record ([`Listed`]) or where
/// it is in the file ([`super::located::Located`]).
pub(super) trait Keep: Default {
    /// The counts and notes of the reading.
    fn head(&mut self) -> Head<'_>;
    /// How many jobs are kept.
    fn jobs(&self) -> usize;
    /// Makes room for `more` jobs.
    fn reserve(&mut self, more: usize);
    /// Keeps `record`, read from the row at byte `at` of `len` bytes (0 when not
    /// known), as its job's last; may leave another record in its place.
    fn keep(&mut self, record: &mut Record, at: u64, len: u64);
    /// Gives back room reserved for jobs the file did not hold.
    fn shrink(&mut self) {}
}

/// The counts and notes every reading keeps, as [`Keep::head`] lends them.
pub(super) struct Head<'a> {
    pub rows: &'a mut usize,
    pub torn: &'a mut bool,
    pub old_header: &'a mut bool,
    pub warnings: &'a mut Vec<String>,
}

impl Keep for Listed {
    fn head(&mut self) -> Head<'_> {
        Head {
            rows: &mut self.rows,
            torn: &mut self.torn,
            old_header: &mut self.old_header,
            warnings: &mut self.warnings,
        }
    }

    fn jobs(&self) -> usize {
        self.records.len()
    }

    fn reserve(&mut self, more: usize) {
        let _ = self.records.try_reserve(more);
        self.index.reserve(more, &self.records);
    }

    fn keep(&mut self, record: &mut Record, _at: u64, _len: u64) {
        match self.index.find(&record.job_id, &self.records) {
            Some(at) => std::mem::swap(&mut self.records[at], record),
            None => {
                let at = self.records.len();
                self.records.push(std::mem::take(record));
                let id = self.records[at].job_id.as_str();
                let hash = Index::hash(id);
                self.index.insert_hashed(hash, at, &self.records);
            }
        }
    }

    fn shrink(&mut self) {
        // Jobs with many rows each (a killed run's file) leave the estimate far too
        // high; what is not used was never touched, and shrinking a list this large
        // moves no record (the allocator remaps it).
        if self.records.capacity() > 2 * self.records.len() + SIZING_ROWS {
            self.records.shrink_to_fit();
        }
    }
}

/// [`parse_reader`], as a run reads it, sized for `jobs` jobs (see [`load_listed`]).
pub(super) fn parse<K: Keep>(
    reader: impl Read,
    path: &Path,
    torn: bool,
    sizing: Sizing,
) -> Result<K, CheckpointError> {
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
    let mut loaded = K::default();
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
            let head = loaded.head();
            *head.torn = true;
            head.warnings
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
    *loaded.head().old_header = width != HEADER.len();

    // Two buffers reused for every row: the current one, and the next, read ahead
    // to know whether the current row is the last.
    drop(rows);
    loaded.reserve(sizing.jobs);
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
                let head = loaded.head();
                *head.torn = true;
                head.warnings.push(format!(
                    "{}: dropped a torn last row (a run was killed while writing it)",
                    path.display()
                ));
            }
            Err(e) if is_last && short => {
                let head = loaded.head();
                *head.torn = true;
                head.warnings.push(format!(
                    "dropped an incomplete last row (a run was killed while writing it): {e}"
                ));
            }
            Err(e) => return Err(e),
            Ok(()) => {
                let rows = {
                    let head = loaded.head();
                    *head.rows += 1;
                    *head.rows
                };
                if rows == SIZING_ROWS
                    && sizing.jobs == 0
                    && let Some(at) = current.position()
                {
                    // A job has a row or more: rows are an upper bound on jobs.
                    let per_row = (at.byte() / SIZING_ROWS as u64).max(1);
                    let rows = usize::try_from(sizing.len / per_row + 1).unwrap_or(0);
                    let more = rows.min(1 << 22).saturating_sub(loaded.jobs());
                    loaded.reserve(more);
                }
                let at = current.position().map_or(0, csv::Position::byte);
                // The row ends where the next begins, or at the end of the file.
                let end = match (&next_read, next.position()) {
                    (Ok(true), Some(p)) => p.byte(),
                    _ => sizing.len,
                };
                loaded.keep(&mut scratch, at, end.saturating_sub(at));
            }
        }
        std::mem::swap(&mut current, &mut next);
        current_read = next_read;
    }
    loaded.shrink();
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
