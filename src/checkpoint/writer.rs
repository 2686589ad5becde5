//! Writing the results file: appending rows durably, rewriting it whole through a
//! temporary file and a rename, and the lock that keeps two runs off one file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{HEADER, Record};

/// Appends rows to a results file.
#[derive(Debug)]
pub struct Appender {
    file: File,
    path: PathBuf,
    sync: bool,
    buf: Vec<u8>,
}

impl Appender {
    /// Opens `path` for appending, writing the header when the file is new or empty.
    /// With `sync`, every [`append`](Appender::append) reaches the disk before it returns.
    pub fn open(path: &Path, sync: bool) -> io::Result<Appender> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut appender = Appender {
            file,
            path: path.to_owned(),
            sync,
            buf: Vec::with_capacity(64 * 1024),
        };
        if appender.file.metadata()?.len() == 0 {
            appender.write(None, &[])?;
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
        let rows: Vec<&Record> = rows.into_iter().collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.write(Some(()), &rows)
    }

    fn write(&mut self, data: Option<()>, rows: &[&Record]) -> io::Result<()> {
        self.buf.clear();
        {
            let mut w = csv::Writer::from_writer(&mut self.buf);
            if data.is_none() {
                w.write_record(HEADER).map_err(io::Error::other)?;
            }
            for row in rows {
                w.write_record(row.cells()).map_err(io::Error::other)?;
            }
            w.flush()?;
        }
        self.file.write_all(&self.buf)?;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Replaces the file at `path` with `rows`, atomically: readers see the old file or
/// the new one, never a mix.
pub fn rewrite<'a>(path: &Path, rows: impl IntoIterator<Item = &'a Record>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = csv::Writer::from_writer(io::BufWriter::new(file));
        w.write_record(HEADER).map_err(io::Error::other)?;
        for row in rows {
            w.write_record(row.cells()).map_err(io::Error::other)?;
        }
        let file = w
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
