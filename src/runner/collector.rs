//! The one task that owns the results file and the counters. Job tasks send it
//! events; it appends their rows in batches (one sync covers every row that arrived
//! together: group commit) and only then tells each job it may act.
//!
//! It keeps no copy of the rows it writes: per job only where its last row lies in
//! the file and the progress bucket it counts in, so memory follows the number of
//! jobs, not the rows or retries of their history. When the run ends, [`finish`]
//! reads those last rows back to rewrite the file to one row per job and to count
//! the outcomes.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::job::JobHandle;
use crate::checkpoint::writer::{Appender, encode_header, encode_row, rewrite_with};
use crate::checkpoint::{Record, State};
use crate::manifest::Job;
use crate::progress::{self, Bucket, Mode, Reporter};
use crate::summary::{JobRef, Outcomes};

/// What a job tells the collector.
#[derive(Debug)]
pub enum Event {
    /// A new row for a job; `ack` hears back once it is on disk.
    Row {
        row: Row,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// A request will be retried after `delay`.
    Retry { code: Option<i64> },
}

/// A job's new row, encoded by the job task (so that encoding runs on every
/// worker, not on the one collector), with what the counters need to know of it.
#[derive(Debug)]
pub struct Row {
    pub job: JobHandle,
    /// The row as [`encode_row`] writes it, line end included.
    pub bytes: Vec<u8>,
    pub state: State,
    pub bucket: Bucket,
    /// How long the service took to generate, when this row records it.
    pub generation: Option<Duration>,
}

impl Row {
    /// Encodes `record`, the new last record of `job`.
    pub fn new(job: JobHandle, record: &Record, download: bool) -> io::Result<Row> {
        let mut bytes = Vec::with_capacity(512);
        encode_row(record, &mut bytes)?;
        Ok(Row {
            job,
            bytes,
            state: record.state(),
            bucket: progress::bucket(Some(record), download),
            generation: generation_time(record),
        })
    }
}

/// Counts of what happened during the run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub retries: u64,
    pub rate_limited: u64,
    pub submitted: u64,
}

/// Where a job's last record is.
#[derive(Debug)]
pub enum Entry {
    /// Loaded from the results file before the run and not changed since: its place
    /// in the run's list of loaded records (shared with the runner, not copied).
    Loaded(usize),
    /// Written by this run: `len` bytes at `offset` in the results file.
    Logged {
        offset: u64,
        len: u32,
        bucket: Bucket,
    },
}

/// The collector's state, handed back when the run ends.
#[derive(Debug)]
pub struct Collected {
    /// Where the last record of every job is, this run's and earlier ones'.
    pub entries: HashMap<String, Entry>,
    pub counters: Counters,
    /// The first write that failed: the run cannot go on without its checkpoint.
    pub write_error: Option<String>,
}

/// How progress is shown, and what it needs to estimate the time left.
pub struct Progress {
    pub mode: Mode,
    pub total: usize,
    pub download: bool,
    /// Generate calls per second the run may make.
    pub rate_per_second: f64,
}

/// Receives events until every sender is gone.
pub async fn collect(
    mut rx: mpsc::Receiver<Event>,
    mut appender: Appender,
    records: Arc<Vec<Record>>,
    progress: Progress,
) -> Collected {
    let mut counters = Counters::default();
    let mut write_error: Option<String> = None;
    let mut batch: Vec<Event> = Vec::with_capacity(256);
    let mut counts = progress::counts(&records, progress.total, progress.download);
    let mut entries: HashMap<String, Entry> = HashMap::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        entries.insert(record.job_id.clone(), Entry::Loaded(i));
    }
    let mut reporter = Reporter::new(progress.mode, progress.total);
    let mut last_update = Instant::now();
    let mut generation = (Duration::ZERO, 0u32);
    // Progress is redrawn on a timer too: a long wait on the service changes no row.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        batch.clear();
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, 1024) => Some(n),
            _ = tick.tick() => None,
        };
        if received == Some(0) {
            break;
        }
        let mut rows: Vec<&[u8]> = Vec::new();
        for event in &batch {
            match event {
                Event::Row { row, .. } => rows.push(&row.bytes),
                Event::Retry { code } => {
                    counters.retries += 1;
                    if *code == Some(429) {
                        counters.rate_limited += 1;
                    }
                }
            }
        }
        let result: Result<u64, String> = match &write_error {
            Some(e) => Err(e.clone()),
            None => appender.append_encoded(rows).map_err(|e: io::Error| {
                let msg = format!(
                    "failed to write results file `{}`: {e}",
                    appender.path().display()
                );
                tracing::error!("{msg}");
                write_error = Some(msg.clone());
                msg
            }),
        };
        let mut offset = result.as_ref().copied().unwrap_or_default();
        for event in batch.drain(..) {
            let Event::Row { row, ack } = event else {
                continue;
            };
            if result.is_ok() {
                if row.state == State::Submitted {
                    counters.submitted += 1;
                }
                if let Some(d) = row.generation {
                    generation.0 += d;
                    generation.1 += 1;
                }
                let len = row.bytes.len() as u64;
                let entry = Entry::Logged {
                    offset,
                    // A row is a few hundred bytes: far from 4 GiB.
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                    bucket: row.bucket,
                };
                offset += len;
                counts.shift(row.bucket, 1);
                let old = match entries.get_mut(row.job.id.as_str()) {
                    Some(slot) => Some(std::mem::replace(slot, entry)),
                    None => {
                        entries.insert(row.job.id.clone(), entry);
                        None
                    }
                };
                let old_bucket = match &old {
                    None => Bucket::Queued,
                    Some(Entry::Loaded(i)) => progress::bucket(records.get(*i), progress.download),
                    Some(Entry::Logged { bucket, .. }) => *bucket,
                };
                counts.shift(old_bucket, -1);
            }
            if let Some(ack) = ack {
                // A job that stopped waiting has nothing more to do with the answer.
                let _ = ack.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }
        if last_update.elapsed() >= Duration::from_millis(200) {
            last_update = Instant::now();
            let eta = (progress.rate_per_second > 0.0).then(|| {
                let mean = generation.0.checked_div(generation.1).unwrap_or_default();
                let to_send = counts.queued as f64 / progress.rate_per_second;
                let in_flight = counts.queued + counts.submitting + counts.running;
                Duration::from_secs_f64(to_send) + if in_flight > 0 { mean } else { Duration::ZERO }
            });
            reporter.update(&counts, counters.submitted, eta);
        }
    }
    reporter.finish();
    Collected {
        entries,
        counters,
        write_error,
    }
}

/// Counts the outcome of every job of `jobs` from its last record and, when
/// `rewrite`, replaces the results file with one row per job: `jobs` in order, then
/// the rows of `foreign` jobs (no longer in the manifest). Rows are read back from
/// the file one at a time; the rewrite is atomic (see [`rewrite_with`]).
pub fn finish(
    path: &Path,
    jobs: &[Job],
    foreign: &[String],
    entries: &HashMap<String, Entry>,
    loaded: &[Record],
    rewrite: bool,
    download: bool,
) -> io::Result<Outcomes> {
    let source = File::open(path)?;
    let mut reader = RowReader::new(&source);
    let mut outcomes = Outcomes::default();
    // One pass over the last rows: each job's is counted and, into `out` when
    // rewriting, copied; rows of jobs no longer in the manifest are only copied.
    let mut pass = |mut out: Option<&mut dyn Write>| -> io::Result<()> {
        let rewriting = out.is_some();
        let mut buf = Vec::new();
        if let Some(out) = out.as_mut() {
            encode_header(&mut buf)?;
            out.write_all(&buf)?;
        }
        let ids = jobs.iter().map(|j| (Some(JobRef::from(j)), &j.id));
        let foreign = foreign.iter().map(|id| (None, id));
        for (job, id) in ids.chain(foreign.filter(|_| rewriting)) {
            let read_back;
            let record = match entries.get(id) {
                None => None,
                Some(&Entry::Loaded(i)) => {
                    let r = loaded.get(i);
                    if let (Some(out), Some(r)) = (out.as_mut(), r) {
                        buf.clear();
                        encode_row(r, &mut buf)?;
                        out.write_all(&buf)?;
                    }
                    r
                }
                Some(&Entry::Logged { offset, len, .. }) => {
                    reader.read(offset, len)?;
                    if let Some(out) = out.as_mut() {
                        out.write_all(&reader.bytes)?;
                    }
                    if job.is_some() {
                        read_back = reader.parse(offset)?;
                        Some(&read_back)
                    } else {
                        None
                    }
                }
            };
            if let Some(job) = job {
                outcomes.count(job, record, download);
            }
        }
        Ok(())
    };
    if rewrite {
        rewrite_with(path, |out| pass(Some(out)))?;
    } else {
        pass(None)?;
    }
    Ok(outcomes)
}

/// Reads single rows of the results file back by their place in it.
struct RowReader<'a> {
    source: &'a File,
    bytes: Vec<u8>,
    /// One csv reader for every row: building one costs more than parsing a row.
    rdr: csv::Reader<Feed>,
    feed: Rc<RefCell<VecDeque<u8>>>,
    cells: csv::StringRecord,
}

/// The bytes handed to [`RowReader`]'s csv reader, one row at a time.
struct Feed(Rc<RefCell<VecDeque<u8>>>);

impl io::Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl RowReader<'_> {
    fn new(source: &File) -> RowReader<'_> {
        let feed = Rc::new(RefCell::new(VecDeque::new()));
        RowReader {
            source,
            bytes: Vec::with_capacity(1024),
            rdr: csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(Feed(feed.clone())),
            feed,
            cells: csv::StringRecord::new(),
        }
    }

    /// Reads the `len` bytes at `offset` into `bytes`.
    fn read(&mut self, offset: u64, len: u32) -> io::Result<()> {
        self.bytes.resize(len as usize, 0);
        read_exact_at(self.source, &mut self.bytes, offset)
    }

    /// The record of the row in `bytes`, read from `offset`.
    fn parse(&mut self, offset: u64) -> io::Result<Record> {
        let row_at = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the row at byte {offset} does not read back: {why}"),
            )
        };
        // The row ends with its line end, so the reader stops right after it and
        // keeps nothing of it for the next row.
        self.feed.borrow_mut().extend(&self.bytes);
        let read = self.rdr.read_record(&mut self.cells);
        let leftover = !self.feed.borrow().is_empty();
        self.feed.borrow_mut().clear();
        if !read.map_err(|e| row_at(e.to_string()))? {
            return Err(row_at("it is empty".into()));
        }
        if leftover {
            return Err(row_at("it holds more than one row".into()));
        }
        Record::from_cells(&self.cells).map_err(|(_, why)| row_at(why))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// How long the service took to generate, for a row that records a success.
fn generation_time(r: &Record) -> Option<Duration> {
    if r.state != Some(State::Succeeded) || !r.video_paths.is_empty() {
        return None;
    }
    let start = humantime::parse_rfc3339(r.submitted_at.as_deref()?).ok()?;
    let end = humantime::parse_rfc3339(r.finished_at.as_deref()?).ok()?;
    end.duration_since(start).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::writer::encode_row;
    use crate::manifest::Origin;
    use crate::request::{RawRequest, check};

    fn job(i: usize) -> Job {
        let raw = RawRequest {
            prompt: Some(format!("clip {i}")),
            ..RawRequest::default()
        };
        let request = check(&raw).result.unwrap();
        Job {
            id: format!("job-{i}"),
            fingerprint: request.fingerprint(),
            request,
            upgrade: None,
            keep_original: false,
            origin: Origin::default(),
        }
    }

    #[tokio::test]
    async fn many_rows_per_job_leave_one_entry_and_one_row_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let jobs = Arc::new((0..3).map(job).collect::<Vec<_>>());
        let appender = Appender::open(&path, false).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let progress = Progress {
            mode: Mode::Quiet,
            total: jobs.len(),
            download: false,
            rate_per_second: 0.0,
        };
        let collector = tokio::spawn(collect(rx, appender, Arc::default(), progress));
        let send = |i: usize, state: State, attempts: u32, message: Option<&str>| {
            let handle = JobHandle::new(jobs.clone(), i).unwrap();
            let record = Record {
                job_id: handle.id.clone(),
                state: Some(state),
                attempts,
                fingerprint: handle.fingerprint.clone(),
                error_message: message.map(str::to_owned),
                updated_at: "t".into(),
                ..Record::default()
            };
            let row = Row::new(handle, &record, false).unwrap();
            let (ack, heard) = oneshot::channel();
            (
                Event::Row {
                    row,
                    ack: Some(ack),
                },
                heard,
            )
        };
        // A long history of retries for every job: memory must not follow it.
        for attempt in 1..=200 {
            for i in 0..3 {
                let (event, heard) = send(i, State::Pending, attempt, Some("429: busy"));
                tx.send(event).await.unwrap();
                heard.await.unwrap().unwrap();
            }
        }
        for (i, state, message) in [
            (0, State::Succeeded, None),
            (1, State::Failed, Some("bad prompt")),
        ] {
            let (event, heard) = send(i, state, 201, message);
            tx.send(event).await.unwrap();
            heard.await.unwrap().unwrap();
        }
        drop(tx);
        let collected = collector.await.unwrap();
        assert_eq!(collected.entries.len(), 3);
        assert!(
            collected
                .entries
                .values()
                .all(|e| matches!(e, Entry::Logged { .. }))
        );
        let before = crate::checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(before.rows, 3 * 200 + 2);

        let outcomes = finish(&path, &jobs, &[], &collected.entries, &[], true, false).unwrap();
        assert_eq!(outcomes.tally.succeeded, 1);
        assert_eq!(outcomes.tally.failed, 1);
        assert_eq!(outcomes.tally.not_started, 1);
        let after = crate::checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(after.rows, 3);
        assert_eq!(after.order, ["job-0", "job-1", "job-2"]);
        assert_eq!(after.records, before.records);
        assert_eq!(after.records["job-2"].attempts, 200);
    }

    fn rec(id: &str, state: State, message: &str) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            prompt: "a \"quoted\", multi\nline prompt".into(),
            error_message: Some(message.to_owned()).filter(|m| !m.is_empty()),
            video_urls: vec!["http://h/a".into(), "http://h/b".into()],
            updated_at: "t".into(),
            ..Record::default()
        }
    }

    #[test]
    fn rows_read_back_one_after_another_are_the_records_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let records = [
            rec("a", State::Submitted, ""),
            rec("b,c", State::Failed, "bad \"thing\""),
            rec("d", State::Succeeded, "x"),
        ];
        let mut bytes = Vec::new();
        let mut places = Vec::new();
        for r in &records {
            let start = bytes.len();
            encode_row(r, &mut bytes).unwrap();
            places.push((start as u64, (bytes.len() - start) as u32));
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = RowReader::new(&file);
        // Out of order, and twice: each read stands alone.
        for i in [2, 0, 1, 2] {
            let (offset, len) = places[i];
            reader.read(offset, len).unwrap();
            assert_eq!(reader.parse(offset).unwrap(), records[i]);
        }
    }
}
