//! Writing a file that must never be seen half-written: the one way every such
//! writer (the results file's rewrite, the remembered uploads, the report page)
//! replaces a file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Replaces the file at `path` with what `fill` writes (through a buffer),
/// atomically: a temporary file beside it, synced, renamed over it, and the folder
/// synced, so that after a crash the name holds the old file or the new one, whole.
/// `fill` may read the old file meanwhile: it stays whole under its name until the
/// rename. The folder is made if missing; on failure the temporary file is removed.
pub fn replace(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let dir = crate::paths::folder_of(path);
    fs::create_dir_all(dir)?;
    let tmp = temporary(path);
    let result = (|| {
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        fill(&mut out)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable once the folder is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temporary file [`replace`] writes for `path`: beside it, under one name per
/// file, so that one left by a killed process is taken over by the next replace
/// instead of staying forever. (The results file is locked, so one process at a
/// time replaces it.)
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_replaced_file_is_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        replace(&path, |w| w.write_all(b"one")).unwrap();
        replace(&path, |w| {
            // The old file is still whole under its name while the new one is written.
            assert_eq!(fs::read(&path)?, b"one");
            w.write_all(b"two")
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(leftovers(&dir.path().join("sub")).is_empty());
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, "old").unwrap();
        let failed = replace(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "disk full");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert!(leftovers(dir.path()).is_empty());
    }
}
