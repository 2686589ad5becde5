//! A results file read for `status`: where each job's last row is, not the row
//! itself. A job's record is read back from its place when it is looked at, one at
//! a time, so what is held for the whole batch is an id, a place and the credits
//! per job, however long the prompts, URLs and paths in the rows.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::read::{CheckpointError, Head, Index, Keep, Sizing, open, parse};
use super::rows::RowReader;
use super::Record;

/// One job of a [`Located`] file.
#[derive(Debug, Clone)]
pub struct Place {
    pub id: Box<str>,
    /// The byte its last row starts at, and the row's length.
    at: u64,
    len: u32,
    /// What its last row records as spent.
    pub credits: f64,
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
        if let Some(&i) = self
            .index
            .find(hash, |&i| jobs.get(i).is_some_and(|p| *p.id == *record.job_id))
            && let Some(place) = jobs.get_mut(i)
        {
            place.at = at;
            place.len = len;
            place.credits = record.credits;
            return;
        }
        let i = jobs.len();
        jobs.push(Place {
            id: record.job_id.as_str().into(),
            at,
            len,
            credits: record.credits,
        });
        self.index.insert_unique(hash, i, |&i| {
            jobs.get(i).map_or(0, |p| Index::hash(&p.id))
        });
    }

    fn shrink(&mut self) {
        if self.jobs.capacity() > 2 * self.jobs.len() + 32 {
            self.jobs.shrink_to_fit();
        }
    }
}

impl Located {
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
            each(Some(&record))?;
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
