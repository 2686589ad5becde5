//! Writing the results file: appending rows durably (from a thread of its own during
//! a run, so that no job waits on the disk), rewriting it whole through a temporary
//! file and a rename, and the lock that keeps two runs off one file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use super::schema::COLUMNS;
use super::{HEADER, Record};

/// Appends rows to a results file.
#[derive(Debug)]
pub struct Appender {
    file: File,
    path: PathBuf,
    sync: bool,
    buf: Vec<u8>,
    /// The file's length: where the next row starts (this run holds the lock, so
    /// nothing else appends).
    len: u64,
}

impl Appender {
    /// Opens `path` for appending, writing the header when the file is new or empty.
    /// With `sync`, every [`append`](Appender::append) reaches the disk before it returns.
    pub fn open(path: &Path, sync: bool) -> io::Result<Appender> {
        fs::create_dir_all(crate::paths::folder_of(path))?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut appender = Appender {
            file,
            path: path.to_owned(),
            sync,
            buf: Vec::with_capacity(64 * 1024),
            len: 0,
        };
        appender.len = appender.file.metadata()?.len();
        if appender.len == 0 {
            let mut header = Vec::new();
            encode_header(&mut header)?;
            appender.append_encoded([header.as_slice()])?;
        }
        Ok(appender)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rows` in one write, then syncs: a kill can cut only the last row, and
    /// a row that `append` returned for is on disk (group commit: one sync covers all
    /// the rows passed together).
    pub fn append<'a>(&mut self, rows: impl IntoIterator<Item = &'a Record>) -> io::Result<()> {
        let mut encoded = Vec::new();
        for row in rows {
            encode_row(row, &mut encoded)?;
        }
        self.append_encoded([encoded.as_slice()]).map(|_| ())
    }

    /// Appends rows already encoded by [`encode_row`] the way [`append`](Appender::append)
    /// does; the offset in the file where the first one starts (the others follow
    /// it in order).
    pub fn append_encoded<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<u64> {
        let start = self.len;
        self.buf.clear();
        for row in rows {
            self.buf.extend_from_slice(row);
        }
        if self.buf.is_empty() {
            return Ok(start);
        }
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        if self.sync {
            self.file.sync_data()?;
        }
        // A burst of rows must not keep a burst-sized buffer for the whole run.
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::with_capacity(64 * 1024);
        }
        Ok(start)
    }
}

/// A batch's write as the writer thread hands it back: the buffer, to be reused,
/// and where the batch starts in the file.
pub struct Written {
    /// The buffer handed in, to be reused.
    pub buf: Vec<u8>,
    /// Where the batch starts in the file.
    pub result: io::Result<u64>,
}

/// The thread that appends and syncs batches of rows, one at a time.
pub struct Writer {
    batches: std::sync::mpsc::Sender<(Vec<u8>, oneshot::Sender<Written>)>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(mut appender: Appender) -> io::Result<Writer> {
        let (batches, rx) = std::sync::mpsc::channel::<(Vec<u8>, oneshot::Sender<Written>)>();
        let thread = std::thread::Builder::new()
            .name("results-writer".into())
            .spawn(move || {
                for (buf, done) in rx {
                    let result = appender.append_encoded([buf.as_slice()]);
                    let _ = done.send(Written { buf, result });
                }
            })?;
        Ok(Writer { batches, thread })
    }

    /// Hands `buf` (whole rows) to the thread; the receiver hears when it is on disk.
    pub fn write(&self, buf: Vec<u8>) -> oneshot::Receiver<Written> {
        let (done, heard) = oneshot::channel();
        // A thread that is gone drops `done`, which the receiver hears as an error.
        let _ = self.batches.send((buf, done));
        heard
    }

    /// Lets the thread end once its last batch is written, and waits for it.
    pub async fn stop(self) {
        let Writer { batches, thread } = self;
        drop(batches);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// A csv writer into `out` with a small buffer: rows are a few hundred bytes.
fn row_writer(out: &mut Vec<u8>) -> csv::Writer<&mut Vec<u8>> {
    csv::WriterBuilder::new()
        .buffer_capacity(1024)
        .from_writer(out)
}

/// Adds the header row to `out`.
pub fn encode_header(out: &mut Vec<u8>) -> io::Result<()> {
    let mut w = row_writer(out);
    w.write_record(HEADER).map_err(io::Error::other)?;
    w.flush()
}

/// Adds `record` to `out` as one row, line end included: the same bytes as
/// `Record::cells` written by a csv writer, through one reused cell buffer.
pub fn encode_row(record: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let mut w = row_writer(out);
    let mut cell = String::with_capacity(256);
    for column in &COLUMNS {
        cell.clear();
        (column.write)(record, &mut cell);
        clip_cell(&mut cell);
        w.write_field(&cell).map_err(io::Error::other)?;
    }
    w.write_record(None::<&[u8]>).map_err(io::Error::other)?;
    w.flush()
}

/// The longest cell written, in bytes: Python's `csv` module refuses a field over
/// 131,072 characters by default, and a data team reads this file with it. Only a
/// prompt (or a service's message) that long is cut; the request fingerprint
/// covers the whole prompt, so resuming is not affected.
pub const MAX_CELL: usize = 100_000;

fn clip_cell(cell: &mut String) {
    if cell.len() <= MAX_CELL {
        return;
    }
    let total = cell.len();
    let mut end = MAX_CELL - 100;
    while !cell.is_char_boundary(end) {
        end -= 1;
    }
    cell.truncate(end);
    cell.push_str(&format!(
        "... [cut: {total} bytes in all; the results file keeps cells under {MAX_CELL} bytes]"
    ));
}

/// Replaces the file at `path` with `rows`, atomically: readers see the old file or
/// the new one, never a mix.
pub fn rewrite<'a>(path: &Path, rows: impl IntoIterator<Item = &'a Record>) -> io::Result<()> {
    rewrite_with(path, |out| {
        let mut buf = Vec::with_capacity(1024);
        encode_header(&mut buf)?;
        out.write_all(&buf)?;
        for row in rows {
            buf.clear();
            encode_row(row, &mut buf)?;
            out.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Replaces the file at `path` with what `fill` writes, atomically (see
/// [`crate::durable::replace`]). `fill` may read the old file meanwhile: it stays
/// whole under its name until the rename.
pub fn rewrite_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    crate::durable::replace(path, fill)
}

/// An exclusive hold on a results file, released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another run is using results file `{}` (it holds `{}`); wait for it to finish, or give this run its own --results",
        results.display(), lock.display()
    )]
    Held { results: PathBuf, lock: PathBuf },
    #[error("failed to lock `{}`: {source}", lock.display())]
    Io { lock: PathBuf, source: io::Error },
}

/// Takes the lock `<results>.lock`, or says which run holds it.
pub fn lock(results: &Path) -> Result<Lock, LockError> {
    let mut name = results.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    let lock_path = results.with_file_name(name);
    let io_err = |source| LockError::Io {
        lock: lock_path.clone(),
        source,
    };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_err(not_a_directory(dir).unwrap_or(e)))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => Ok(Lock {
            _file: file,
            path: lock_path,
        }),
        Err(TryLockError::WouldBlock) => Err(LockError::Held {
            results: results.to_owned(),
            lock: lock_path,
        }),
        Err(TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// When a file stands where `dir` or one of its parents should be, says which: the
/// OS only says "file exists" or "not a directory" without naming it.
fn not_a_directory(dir: &Path) -> Option<io::Error> {
    let file = dir
        .ancestors()
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())?;
    Some(io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("`{}` is a file, not a directory", file.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{State, load};

    fn rec(id: &str, state: State) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            prompt: "multi\nline, \"quoted\"".into(),
            updated_at: "t".into(),
            ..Record::default()
        }
    }

    #[test]
    fn a_file_in_the_way_of_the_results_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.txt");
        std::fs::write(&file, "x").unwrap();
        let e = lock(&file.join("deeper/results.csv")).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("`{}` is a file, not a directory", file.display())),
            "{shown}"
        );
    }

    #[test]
    fn append_then_load_then_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.csv");
        let mut w = Appender::open(&path, true).unwrap();
        w.append([&rec("a", State::Submitting)]).unwrap();
        w.append([&rec("a", State::Submitted), &rec("b", State::Failed)])
            .unwrap();
        drop(w);
        // Reopening does not write a second header.
        let mut w = Appender::open(&path, false).unwrap();
        w.append([&rec("c", State::Pending)]).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.rows, 4);
        assert_eq!(loaded.order, ["a", "b", "c"]);
        assert!(loaded.needs_compaction());

        rewrite(&path, loaded.order.iter().map(|id| &loaded.records[id])).unwrap();
        let again = load(&path).unwrap().unwrap();
        assert_eq!(again.rows, 3);
        assert_eq!(again.records, loaded.records);
        assert!(!again.needs_compaction());
        assert!(!dir.path().join("sub/results.csv.tmp").exists());
    }

    #[test]
    fn encoded_rows_are_the_cells_a_csv_writer_writes() {
        let mut full = Record {
            task_id: Some("t1".into()),
            attempts: 3,
            video_urls: vec!["http://a/1".into(), "http://a/2".into()],
            video_paths: vec!["v/a.mp4".into()],
            error_code: Some(-7),
            error_message: Some("bad, \"really\"".into()),
            submitted_at: Some("s".into()),
            ..rec("a,b", State::Succeeded)
        };
        for r in [rec("plain", State::Pending), full.clone(), {
            full.upgrade_urls = vec!["u".into()];
            full
        }] {
            let mut want = Vec::new();
            {
                let mut w = csv::Writer::from_writer(&mut want);
                w.write_record(r.cells()).unwrap();
                w.flush().unwrap();
            }
            let mut got = Vec::new();
            encode_row(&r, &mut got).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn a_huge_prompt_is_cut_so_pythons_csv_reads_the_row() {
        let mut r = Record {
            job_id: "big".into(),
            state: Some(crate::checkpoint::State::Pending),
            prompt: "é".repeat(200_000),
            ..Record::default()
        };
        let mut row = Vec::new();
        encode_row(&r, &mut row).unwrap();
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(row.as_slice());
        let cells = rdr.records().next().unwrap().unwrap();
        let prompt = &cells[7];
        assert!(prompt.chars().count() < 131_072, "{}", prompt.len());
        assert!(
            prompt.ends_with("bytes]"),
            "{}",
            &prompt[prompt.len() - 80..]
        );
        r.prompt = "short".into();
        row.clear();
        encode_row(&r, &mut row).unwrap();
        assert!(String::from_utf8(row).unwrap().contains(",short,"));
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let held = lock(&path).unwrap();
        let err = lock(&path).unwrap_err().to_string();
        assert!(err.contains("another run is using results file"), "{err}");
        assert!(err.contains("r.csv.lock"), "{err}");
        drop(held);
        assert!(lock(&path).is_ok());
    }
}
