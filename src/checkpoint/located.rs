//! A results file read for `status`, `report` and the start of a run: where each
//! job's last row is, not the row itself. A job's record is read back from its place
//! when it is looked at, one at a time, so what is held for the whole batch is an
//! id, a place and the credits per job, however long the prompts, URLs and paths in
//! the rows.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::Record;
use super::read::{CheckpointError, Head, Index, Keep, Sizing, open, parse};
use super::rows::RowReader;

/// One job of a [`Located`] file.
#[derive(Debug, Clone)]
pub struct Place {
    pub id: Box<str>,
    /// The byte its last row starts at, and the row's length (see [`Place::row`]).
    at: u64,
    len: u32,
    /// What its last row records as spent.
    pub credits: f64,
    /// Whether those credits were measured from the balance (else: the price table).
    pub measured: bool,
}

/// The last row of every job of a results file, by place, in the order the jobs
/// first appear; read with [`load_located`].
#[derive(Debug, Default)]
pub struct Located {
    pub jobs: Vec<Place>,
    /// Data rows read (a job may have several; the last one counts).
    pub rows: usize,
    pub torn: bool,
    pub old_header: bool,
    pub warnings: Vec<String>,
    index: hashbrown::HashTable<usize>,
    path: PathBuf,
}

impl Keep for Located {
    fn head(&mut self) -> Head<'_> {
        Head {
            rows: &mut self.rows,
            torn: &mut self.torn,
            old_header: &mut self.old_header,
            warnings: &mut self.warnings,
        }
    }

    fn jobs(&self) -> usize {
        self.jobs.len()
    }

    fn reserve(&mut self, more: usize) {
        let _ = self.jobs.try_reserve(more);
        let jobs = &self.jobs;
        let _ = self
            .index
            .try_reserve(more, |&i| jobs.get(i).map_or(0, |p| Index::hash(&p.id)));
    }

    fn keep(&mut self, record: &mut Record, at: u64, len: u64) {
        // A row longer than 4 GiB is not one veo-batch wrote; it reads back as an
        // error, located, when it is looked at.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let hash = Index::hash(&record.job_id);
        let jobs = &mut self.jobs;
        if let Some(&i) = self.index.find(hash, |&i| {
            jobs.get(i).is_some_and(|p| *p.id == *record.job_id)
        }) && let Some(place) = jobs.get_mut(i)
        {
            place.at = at;
            place.len = len;
            place.credits = record.credits;
            place.measured = record.credits_source == "measured";
            return;
        }
        let i = jobs.len();
        jobs.push(Place {
            id: record.job_id.as_str().into(),
            at,
            len,
            credits: record.credits,
            measured: record.credits_source == "measured",
        });
        self.index
            .insert_unique(hash, i, |&i| jobs.get(i).map_or(0, |p| Index::hash(&p.id)));
    }

    fn shrink(&mut self) {
        if self.jobs.capacity() > 2 * self.jobs.len() + 32 {
            self.jobs.shrink_to_fit();
        }
    }
}

impl Place {
    /// Where the job's last row is in the file: its first byte and its length.
    pub fn row(&self) -> (u64, u32) {
        (self.at, self.len)
    }
}

impl Located {
    /// See [`super::Loaded::needs_compaction`].
    pub fn needs_compaction(&self) -> bool {
        self.torn || self.old_header || self.rows != self.jobs.len()
    }

    /// Rewrites the file one row per job (its last), in the order the jobs first
    /// appear, with today's header (see [`super::writer::rewrite_with`]), reading
    /// each record back in turn; gives the file as it reads now.
    pub fn compacted(self) -> Result<Located, CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { path, source }
        };
        let records = self.reader()?;
        super::writer::rewrite_with(&self.path, |out| {
            let mut buf = Vec::with_capacity(1024);
            super::writer::encode_header(&mut buf)?;
            out.write_all(&buf)?;
            records
                .each_owned(
                    self.jobs.iter().map(Some),
                    |r| -> Result<(), CheckpointError> {
                        if let Some(r) = r {
                            buf.clear();
                            super::writer::encode_row(&r, &mut buf)
                                .and_then(|()| out.write_all(&buf))
                                .map_err(io(&self.path))?;
                        }
                        Ok(())
                    },
                )
                .map_err(std::io::Error::other)
        })
        .map_err(io(&self.path))?;
        load_located(&self.path)?.ok_or_else(|| {
            io(&self.path)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file is gone after its rewrite",
            ))
        })
    }

    /// The place of job `id`.
    pub fn get(&self, id: &str) -> Option<&Place> {
        self.index
            .find(Index::hash(id), |&i| {
                self.jobs.get(i).is_some_and(|p| &*p.id == id)
            })
            .and_then(|&i| self.jobs.get(i))
    }

    /// A reader of the records at their places.
    pub fn reader(&self) -> Result<Records, CheckpointError> {
        let file = File::open(&self.path).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(Records {
            file,
            path: self.path.clone(),
        })
    }
}

/// Reads the records of a [`Located`] file back, one at a time.
pub struct Records {
    file: File,
    path: PathBuf,
}

impl Records {
    /// Calls `each` with the record of every place of `places`, read back in turn.
    pub fn each<'a, E: From<CheckpointError>>(
        &self,
        places: impl IntoIterator<Item = Option<&'a Place>>,
        mut each: impl FnMut(Option<&Record>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.each_owned(places, |r| each(r.as_ref()))
    }

    /// [`Records::each`], handing each record over.
    pub fn each_owned<'a, E: From<CheckpointError>>(
        &self,
        places: impl IntoIterator<Item = Option<&'a Place>>,
        mut each: impl FnMut(Option<Record>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rows = RowReader::new(&self.file);
        for place in places {
            let Some(place) = place else {
                each(None)?;
                continue;
            };
            let record = rows
                .read(place.at, place.len)
                .and_then(|()| rows.parse(place.at))
                .map_err(|source| CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            each(Some(record))?;
        }
        Ok(())
    }
}

/// Reads the results file at `path` for `status` (see [`Located`]); `None` when it
/// does not exist yet. Its rows are checked as [`super::load`] checks them.
pub fn load_located(path: &Path) -> Result<Option<Located>, CheckpointError> {
    let Some((file, len, torn)) = open(path)? else {
        return Ok(None);
    };
    let mut located: Located = parse(file, path, torn, Sizing::of_len(len))?;
    located.path = path.to_owned();
    Ok(Some(located))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{HEADER, State, load};

    fn rec(id: &str, state: State, prompt: &str, credits: f64) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            prompt: prompt.into(),
            credits,
            updated_at: "2026-03-01T10:00:00Z".into(),
            ..Record::default()
        }
    }

    #[test]
    fn each_job_is_read_back_from_its_last_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut w = csv::Writer::from_path(&path).unwrap();
        w.write_record(HEADER).unwrap();
        // Several rows per job, as a killed run leaves them; prompts with quotes,
        // commas and a newline, so a row's place is not a line's.
        for r in [
            rec("a", State::Submitting, "one, \"two\"\nthree", 0.0),
            rec("b", State::Submitting, "b", 0.0),
            rec("a", State::Submitted, "one, \"two\"\nthree", 60.0),
            rec("c", State::Failed, "c", 30.0),
            rec("a", State::Succeeded, "one, \"two\"\nthree", 60.0),
        ] {
            w.write_record(r.cells()).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        // A torn last row is dropped, as `load` drops it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"b,succ"))
            .unwrap();

        let located = load_located(&path).unwrap().unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert!(located.torn && loaded.torn);
        assert_eq!(located.rows, 5);
        let ids: Vec<&str> = located.jobs.iter().map(|p| &*p.id).collect();
        assert_eq!(ids, loaded.order);
        let credits: Vec<f64> = located.jobs.iter().map(|p| p.credits).collect();
        assert_eq!(credits, [60.0, 0.0, 30.0]);
        let mut read = Vec::new();
        let places = ["c", "nobody", "a", "b"].map(|id| located.get(id));
        located
            .reader()
            .unwrap()
            .each(places, |r| -> Result<(), CheckpointError> {
                read.push(r.cloned());
                Ok(())
            })
            .unwrap();
        let expected = ["c", "nobody", "a", "b"].map(|id| loaded.records.get(id).cloned());
        assert_eq!(read, expected);
    }
}
