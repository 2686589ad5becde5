//! The checkpoint of a run whose results live in a bucket: an append-only log of
//! small objects, and its compaction into the plain results CSV a data team reads.
//!
//! For results at `s3://b/runs/x.csv`:
//! - `runs/x.csv` is the compacted results: a plain CSV with the local file's
//!   header and rows (one per job), plus the object metadata
//!   `veo-batch-log-through: N`, the last log object it includes;
//! - `runs/x.csv.log/00000000000000000042.csv` is commit 42: a header and the rows
//!   that commit wrote, created with create-if-absent, so a commit costs one small
//!   PUT however big the batch is, and two writers can never both write commit 42.
//!
//! Reading ([`read`]) takes the compacted CSV and then every log object after its
//! `N`, in order, the last row of a job winning, as in a local results file.
//! Compaction writes the CSV whole (one PUT: it appears complete or not at all)
//! before deleting the log objects it covers, so a kill at any point leaves a
//! record that reads the same.

use std::path::PathBuf;

use object_store::path::Path as Key;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStoreExt as _, PutMode, PutOptions,
};

use super::lease::{Fence, Fenced};
use super::{Bucket, StoreError};
use crate::checkpoint::writer::{encode_header, encode_row};
use crate::checkpoint::{CheckpointError, Loaded, Record, parse_reader};

/// The metadata key on the compacted CSV naming the last commit it includes.
pub const THROUGH: &str = "veo-batch-log-through";

/// The record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Fenced(#[from] Fenced),
    #[error(
        "commit {url} was written by another run; this run stops writing the results (is a second run using them without the lease?)"
    )]
    Conflict { url: String },
    #[error("{0}")]
    Malformed(#[from] CheckpointError),
}

/// The results as the bucket holds them.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// The last row of every job.
    pub loaded: Loaded,
    /// The last commit the compacted CSV includes (0: none).
    pub through: u64,
    /// The log objects after it, in commit order.
    pub commits: Vec<u64>,
}

impl Rebuilt {
    /// The number of the next commit.
    pub fn next_commit(&self) -> u64 {
        self.commits.last().copied().unwrap_or(self.through) + 1
    }
}

/// Where the log objects of `results` live.
pub fn log_dir(results: &Key) -> Key {
    Key::from(format!("{results}.log"))
}

fn commit_key(results: &Key, n: u64) -> Key {
    log_dir(results).join(format!("{n:020}.csv"))
}

fn commit_number(key: &Key) -> Option<u64> {
    let name = key.filename()?;
    let digits = name.strip_suffix(".csv")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Reads the results at `results` from the bucket: the compacted CSV and the log
/// after it. Nothing there reads as no rows.
pub async fn read(bucket: &Bucket, results: &Key) -> Result<Rebuilt, LogError> {
    // A commit listed and then gone was compacted meanwhile by the run writing the
    // record: reading again finds it in the compacted CSV.
    for _ in 0..3 {
        if let Some(rebuilt) = read_once(bucket, results).await? {
            return Ok(rebuilt);
        }
    }
    Err(StoreError {
        bucket: bucket.name().to_owned(),
        operation: format!("read {}", bucket.url(results)),
        reason: "its log kept changing while it was read (compacted three times over)".into(),
    }
    .into())
}

/// [`read`] once; None when a commit vanished between the list and its read.
async fn read_once(bucket: &Bucket, results: &Key) -> Result<Option<Rebuilt>, LogError> {
    let mut rebuilt = Rebuilt::default();
    let store = bucket.store();
    match store.get_opts(results, GetOptions::default()).await {
        Ok(got) => {
            rebuilt.through = got
                .attributes
                .get(&Attribute::Metadata(THROUGH.into()))
                .and_then(|v| v.as_ref().parse().ok())
                .unwrap_or(0);
            let bytes = got
                .bytes()
                .await
                .map_err(|e| bucket.error(format!("read {}", bucket.url(results)), &e))?;
            rebuilt.loaded = parse_reader(&bytes[..], &PathBuf::from(bucket.url(results)), false)?;
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            return Err(bucket
                .error(format!("read {}", bucket.url(results)), &e)
                .into());
        }
    }
    let dir = log_dir(results);
    let listed = store
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|e| bucket.error(format!("list {}", bucket.url(&dir)), &e))?;
    let mut commits: Vec<u64> = listed
        .objects
        .iter()
        .filter_map(|meta| commit_number(&meta.location))
        .filter(|&n| n > rebuilt.through)
        .collect();
    commits.sort_unstable();
    for &n in &commits {
        let key = commit_key(results, n);
        let url = bucket.url(&key);
        let bytes = match store.get(&key).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(bucket.error(format!("read {url}"), &e).into()),
        };
        let part = parse_reader(&bytes[..], &PathBuf::from(url), false)?;
        merge(&mut rebuilt.loaded, part);
    }
    rebuilt.commits = commits;
    Ok(Some(rebuilt))
}

/// Adds the rows of `later` to `into`: a job's later row replaces its earlier one.
fn merge(into: &mut Loaded, later: Loaded) {
    let Loaded {
        records,
        order,
        rows,
        warnings,
        ..
    } = later;
    into.rows += rows;
    into.warnings.extend(warnings);
    let mut records = records;
    for id in order {
        if let Some(record) = records.remove(&id)
            && into.records.insert(id.clone(), record).is_none()
        {
            into.order.push(id);
        }
    }
}

fn encode(rows: &[&Record]) -> Result<Vec<u8>, StoreError> {
    let encoding = |e: std::io::Error| StoreError {
        bucket: String::new(),
        operation: "encode rows".into(),
        reason: e.to_string(),
    };
    let mut out = Vec::with_capacity(512 * (rows.len() + 1));
    encode_header(&mut out).map_err(encoding)?;
    for row in rows {
        encode_row(row, &mut out).map_err(encoding)?;
    }
    Ok(out)
}

/// The writer of one results object's log: the only one, while its run holds the
/// lease that `fence` follows. A clone shares the fence and compacts beside the
/// writer (a compaction never takes a commit's number).
#[derive(Debug, Clone)]
pub struct CheckpointLog {
    bucket: Bucket,
    results: Key,
    next: u64,
    fence: Fence,
    /// Set once another writer was seen: nothing more is written.
    conflict: Option<String>,
}

impl CheckpointLog {
    /// Opens the log of `results` for writing after what the bucket holds (read
    /// here and returned, so a run starts from it).
    pub async fn open(
        bucket: &Bucket,
        results: Key,
        fence: Fence,
    ) -> Result<(CheckpointLog, Rebuilt), LogError> {
        let rebuilt = read(bucket, &results).await?;
        let log = CheckpointLog {
            bucket: bucket.clone(),
            results,
            next: rebuilt.next_commit(),
            fence,
            conflict: None,
        };
        Ok((log, rebuilt))
    }

    /// The results object.
    pub fn results(&self) -> &Key {
        &self.results
    }

    /// Writes `rows` as the next commit: one small object, whatever the batch's
    /// size. Once this returns Ok the rows survive a kill of this machine.
    pub async fn commit(&mut self, rows: &[&Record]) -> Result<(), LogError> {
        if rows.is_empty() {
            return self.commit_body(None).await;
        }
        let body = encode(rows)?;
        self.commit_body(Some(body)).await
    }

    /// [`commit`](CheckpointLog::commit) of rows already encoded as a local results
    /// file holds them (the bytes a run's collector appended to its staging file).
    pub async fn commit_encoded(&mut self, rows: &[u8]) -> Result<(), LogError> {
        if rows.is_empty() {
            return self.commit_body(None).await;
        }
        let mut body = Vec::with_capacity(rows.len() + 512);
        encode_header(&mut body).map_err(|e| StoreError {
            bucket: self.bucket.name().to_owned(),
            operation: "encode rows".into(),
            reason: e.to_string(),
        })?;
        body.extend_from_slice(rows);
        self.commit_body(Some(body)).await
    }

    async fn commit_body(&mut self, body: Option<Vec<u8>>) -> Result<(), LogError> {
        if let Some(url) = &self.conflict {
            return Err(LogError::Conflict { url: url.clone() });
        }
        self.fence.check()?;
        let Some(body) = body else {
            return Ok(());
        };
        let key = commit_key(&self.results, self.next);
        let url = self.bucket.url(&key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let store = self.bucket.store();
        match store.put_opts(&key, body.clone().into(), opts).await {
            Ok(_) => {}
            // A PUT the store answered with a 5xx may have landed and been sent
            // again: the object there is ours if it holds exactly these bytes.
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = match store.get(&key).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                }
                .map_err(|e| self.bucket.error(format!("read {url}"), &e))?;
                if there.as_ref() != body.as_slice() {
                    self.conflict = Some(url.clone());
                    return Err(LogError::Conflict { url });
                }
            }
            Err(e) => return Err(self.bucket.error(format!("create {url}"), &e).into()),
        }
        self.next += 1;
        Ok(())
    }

    /// Rewrites the compacted CSV from the bucket's record (one row per job, in the
    /// order jobs first appear) and then deletes the log objects it includes. A
    /// kill at any point leaves a record that reads the same; costs a read of the
    /// whole record, so a run does it at its end and at long intervals.
    pub async fn compact(&mut self) -> Result<Compacted, LogError> {
        self.fence.check()?;
        let rebuilt = read(&self.bucket, &self.results).await?;
        // Nothing to fold in: the CSV there (or none, for no rows) is the record.
        if rebuilt.commits.is_empty() {
            return Ok(Compacted {
                rows: rebuilt.loaded.order.len(),
                bytes: 0,
                commits: 0,
            });
        }
        let through = rebuilt.next_commit() - 1;
        let rows: Vec<&Record> = rebuilt
            .loaded
            .order
            .iter()
            .filter_map(|id| rebuilt.loaded.records.get(id))
            .collect();
        let body = encode(&rows)?;
        let bytes = body.len();
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(THROUGH.into()),
            AttributeValue::from(through.to_string()),
        );
        attributes.insert(Attribute::ContentType, AttributeValue::from("text/csv"));
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let url = self.bucket.url(&self.results);
        // Checked again: reading a large record takes a while.
        self.fence.check()?;
        self.bucket
            .store()
            .put_opts(&self.results, body.into(), opts)
            .await
            .map_err(|e| self.bucket.error(format!("write {url}"), &e))?;
        for &n in &rebuilt.commits {
            let key = commit_key(&self.results, n);
            match self.bucket.store().delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                // Left for the next compaction: the CSV's `through` already
                // tells readers to skip it.
                Err(e) => {
                    tracing::warn!(
                        "{}",
                        self.bucket
                            .error(format!("delete {}", self.bucket.url(&key)), &e)
                    );
                }
            }
        }
        self.next = self.next.max(through + 1);
        Ok(Compacted {
            rows: rows.len(),
            bytes,
            commits: rebuilt.commits.len(),
        })
    }
}

/// What a compaction wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Rows (jobs) in the compacted CSV.
    pub rows: usize,
    pub bytes: usize,
    /// Log objects folded into it.
    pub commits: usize,
}
