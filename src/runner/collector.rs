//! The one task that owns the results file and the progress counts. The
//! dispatcher hands it the jobs' rows; its writer thread appends their rows in batches (one sync covers every
//! row that arrived together: group commit) and only then does it tell each job it
//! may act.
//!
//! It keeps no copy of the rows it writes: per job only where its last row lies in
//! the file and the progress bucket it counts in, so memory follows the number of
//! jobs, not the rows or retries of their history. When the run ends, [`finish`]
//! reads those last rows back to rewrite the file to one row per job and to count
//! the outcomes.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::rows::RowReader;
use crate::checkpoint::writer::{
    Appender, Writer, Written, encode_header, encode_row, rewrite_with,
};
use crate::checkpoint::{Record, State};
use crate::manifest::Job;
use crate::progress::{self, Bucket, Mode, Reporter};
use crate::runner::spend::Source;
use crate::summary::{JobRef, Outcomes};

/// What the dispatcher hands the collector.
#[derive(Debug)]
pub enum Event {
    /// A new row for a job; `ack` hears back once it is on disk.
    Row {
        row: Row,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
}

/// A job's new row, encoded by the job task (a row, not a copy of the record, is
/// what crosses to the collector), with what the counters need to know of it.
#[derive(Debug)]
pub struct Row {
    /// The job's place in the run's job list (the manifest's order).
    pub index: usize,
    /// The row as [`encode_row`] writes it, line end included.
    pub bytes: Vec<u8>,
    pub state: State,
    pub bucket: Bucket,
    /// How long the service took to generate, when this row records it.
    pub generation: Option<Duration>,
}

impl Row {
    /// Encodes `record`, the new last record of the job at `index` of the run's
    /// job list.
    pub fn new(index: usize, record: &Record, download: bool) -> io::Result<Row> {
        let mut bytes = Vec::with_capacity(512);
        encode_row(record, &mut bytes)?;
        Ok(Row {
            index,
            bytes,
            state: record.state(),
            bucket: progress::bucket(Some(record), download),
            generation: generation_time(record),
        })
    }
}

/// Counts of what happened during the run: the retries as the dispatcher heard
/// them, the submissions as the collector wrote them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallCounts {
    pub retries: u64,
    pub rate_limited: u64,
    pub submitted: u64,
}

/// Where a job's last record is.
#[derive(Debug, Clone, Copy)]
pub enum LastRow {
    /// Loaded from the results file before the run and not changed since: its place
    /// in the run's list of loaded records (shared with the runner, not copied).
    Loaded(usize),
    /// In the results file before the run, left as it was and not held in memory (a
    /// settled job's): `len` bytes at `offset`, read back at the end.
    Kept {
        offset: u64,
        len: u32,
        bucket: Bucket,
        /// The credits it records, and whether the job stands succeeded: such a
        /// row is counted without being read back (the most common row of a big
        /// finished batch, which has no problem to list).
        credits: f64,
        succeeded: bool,
    },
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
    /// Where the last record of every job is, this run's and earlier ones', by the
    /// job's place in the manifest (`None`: the job has no record).
    pub entries: Vec<Option<LastRow>>,
    /// Rows written that record a submission (a task made).
    pub submitted: u64,
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

/// Receives events until every sender is gone. `entries` holds, for each job of
/// the run in manifest order, where its last record is before the run: a place in
/// `loaded` or none.
///
/// Rows are written and synced by a thread of their own ([`Writer`]) so that no
/// runtime thread ever waits on the disk; while it syncs one batch, the rows that
/// arrive meanwhile gather into the next (group commit).
pub async fn collect(
    mut rx: mpsc::UnboundedReceiver<Event>,
    appender: Appender,
    loaded: Arc<Vec<Record>>,
    entries: Vec<Option<LastRow>>,
    progress: Progress,
    mirror: Option<crate::store::run::LogMirror>,
) -> Collected {
    let mut tally = Ledger::new(loaded, entries, &progress);
    let path = appender.path().to_owned();
    let writer = match Writer::start(appender) {
        Ok(writer) => Some(writer),
        Err(e) => {
            tally.failed(format!(
                "failed to start the writer of results file `{}`: {e}",
                path.display()
            ));
            None
        }
    };
    // Rows received and not yet handed to the writer, and the batch it is writing.
    let mut incoming: Vec<Event> = Vec::with_capacity(256);
    let mut gathering: Vec<Event> = Vec::with_capacity(256);
    let mut writing: Vec<Event> = Vec::with_capacity(256);
    let mut written: Option<oneshot::Receiver<Written>> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut open = true;
    let mut reporter = Reporter::new(progress.mode, progress.total);
    let mut last_update = Instant::now();
    // Progress is redrawn on a timer too: a long wait on the service changes no row.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut incoming, 1024), if open => {
                open = n > 0;
                gathering.append(&mut incoming);
            }
            done = async {
                match written.as_mut() {
                    Some(heard) => heard.await,
                    None => std::future::pending().await,
                }
            }, if written.is_some() => {
                written = None;
                let result = match done {
                    Ok(Written { buf: back, result }) => {
                        buf = back;
                        result.map_err(|e| {
                            format!("failed to write results file `{}`: {e}", path.display())
                        })
                    }
                    Err(_) => Err(format!(
                        "the writer of results file `{}` stopped",
                        path.display()
                    )),
                };
                tally.settle(&mut writing, result);
            }
            _ = tick.tick() => {}
        }
        if written.is_none() && !gathering.is_empty() {
            std::mem::swap(&mut gathering, &mut writing);
            match (&tally.write_error, &writer) {
                (None, Some(w)) => {
                    buf.clear();
                    for event in &writing {
                        let Event::Row { row, .. } = event;
                        buf.extend_from_slice(&row.bytes);
                    }
                    let local = w.write(std::mem::take(&mut buf));
                    // Results in a bucket: the batch is safe once the bucket has it.
                    written = Some(match &mirror {
                        Some(m) => m.after(local),
                        None => local,
                    });
                }
                // Nothing more is written once a write failed (or the writer never
                // started, which set the error too).
                (e, _) => {
                    let e = e.clone().unwrap_or_default();
                    tally.settle(&mut writing, Err(e));
                }
            }
        }
        if last_update.elapsed() >= Duration::from_millis(200) {
            last_update = Instant::now();
            reporter.update(&tally.counts, tally.submitted, tally.eta(&progress));
        }
        if !open && written.is_none() && gathering.is_empty() {
            break;
        }
    }
    reporter.finish();
    if let Some(writer) = writer {
        writer.stop().await;
    }
    Collected {
        entries: tally.entries,
        submitted: tally.submitted,
        write_error: tally.write_error,
    }
}

/// What the collector knows of the run: every job's last row, the counters and the
/// first write that failed.
struct Ledger {
    entries: Vec<Option<LastRow>>,
    /// The records loaded before the run, which [`LastRow::Loaded`] points into.
    loaded: Arc<Vec<Record>>,
    submitted: u64,
    counts: progress::PhaseCounts,
    /// The generation times seen: their sum and how many.
    generation: (Duration, u32),
    download: bool,
    write_error: Option<String>,
}

impl Ledger {
    fn new(loaded: Arc<Vec<Record>>, entries: Vec<Option<LastRow>>, progress: &Progress) -> Ledger {
        let mut counts = progress::counts(
            entries.iter().map(|e| record_of(e.as_ref(), &loaded)),
            progress.download,
        );
        // A kept row was counted as queued above (it has no record here).
        for e in entries.iter().flatten() {
            if let LastRow::Kept { bucket, .. } = e {
                counts.shift(Bucket::Queued, -1);
                counts.shift(*bucket, 1);
            }
        }
        Ledger {
            entries,
            loaded,
            submitted: 0,
            counts,
            generation: (Duration::ZERO, 0),
            download: progress.download,
            write_error: None,
        }
    }

    /// Remembers the first failed write: the run cannot go on without its checkpoint.
    fn failed(&mut self, why: String) -> String {
        tracing::error!("{why}");
        self.write_error.get_or_insert(why).clone()
    }

    /// Takes in the rows of `batch` once their write ended with `result` (the
    /// offset of the first row), and tells each job.
    fn settle(&mut self, batch: &mut Vec<Event>, result: Result<u64, String>) {
        let result = result.map_err(|e| {
            if self.write_error.is_some() {
                e
            } else {
                self.failed(e)
            }
        });
        let mut offset = result.as_ref().copied().unwrap_or_default();
        for event in batch.drain(..) {
            let Event::Row { row, ack } = event;
            if result.is_ok() {
                offset += self.logged(row, offset);
            }
            if let Some(ack) = ack {
                // A job that stopped waiting has nothing more to do with the answer.
                let _ = ack.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
        }
    }

    /// Takes in `row`, written at `offset`; its length.
    fn logged(&mut self, row: Row, offset: u64) -> u64 {
        if row.state == State::Submitted {
            self.submitted += 1;
        }
        if let Some(d) = row.generation {
            self.generation.0 += d;
            self.generation.1 += 1;
        }
        let len = row.bytes.len() as u64;
        let entry = LastRow::Logged {
            offset,
            // A row is a few hundred bytes: far from 4 GiB.
            len: u32::try_from(len).unwrap_or(u32::MAX),
            bucket: row.bucket,
        };
        self.counts.shift(row.bucket, 1);
        let index = row.index;
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, || None);
        }
        let old = self.entries[index].replace(entry);
        let old_bucket = match &old {
            None => Bucket::Queued,
            Some(LastRow::Loaded(i)) => progress::bucket(self.loaded.get(*i), self.download),
            Some(LastRow::Logged { bucket, .. } | LastRow::Kept { bucket, .. }) => *bucket,
        };
        self.counts.shift(old_bucket, -1);
        len
    }

    /// The time left: the jobs still to send at the run's rate, plus one mean
    /// generation time while any job is still to finish. `None` until it can be
    /// told: while jobs run and none has finished yet (no generation time seen), or
    /// when the sum says nothing is left though jobs are (an upgrade pending).
    fn eta(&self, progress: &Progress) -> Option<Duration> {
        if progress.rate_per_second <= 0.0 {
            return None;
        }
        let c = &self.counts;
        let to_send = Duration::from_secs_f64(c.queued as f64 / progress.rate_per_second);
        let unfinished = c.queued + c.submitting + c.running + c.downloading;
        let eta = match (unfinished, self.generation.0.checked_div(self.generation.1)) {
            (0, _) => return None,
            (_, None) => return None,
            (_, Some(mean)) => to_send + mean,
        };
        (!eta.is_zero()).then_some(eta)
    }
}

/// A loaded record an entry points at (`None` for a row this run wrote).
fn record_of<'a>(entry: Option<&LastRow>, loaded: &'a [Record]) -> Option<&'a Record> {
    match entry {
        Some(&LastRow::Loaded(i)) => loaded.get(i),
        _ => None,
    }
}

/// Where the jobs stand after the run, read from the results file as `status`
/// reads it.
#[derive(Debug)]
pub struct Finished {
    pub outcomes: Outcomes,
    /// Credits the file records as spent, over all its rows (the jobs' and those of
    /// jobs no longer in the manifest).
    pub credits: f64,
}

/// Counts the outcome of every job of `jobs` from its last record (`entries`, by
/// the job's place) and, when `rewrite` and this run appended rows, replaces the
/// results file with one row per job: `jobs` in order, then the rows of `foreign`
/// jobs (no longer in the manifest). Rows are read back from the file one at a
/// time; the rewrite is atomic (see [`rewrite_with`]). `billed_failures` are the
/// jobs (by place) whose failed task this run's balance showed billed, with its
/// cost: their last rows count it again, as measured (see
/// [`spend::failed_task_cost`](crate::runner::spend::failed_task_cost)).
pub fn finish(
    path: &Path,
    jobs: &[Job],
    foreign: &[LastRow],
    entries: &[Option<LastRow>],
    loaded: &[Record],
    rewrite: bool,
    billed_failures: &[(usize, f64)],
) -> io::Result<Finished> {
    let source = File::open(path)?;
    let mut reader = RowReader::new(&source);
    let mut outcomes = Outcomes::default();
    // Rows of jobs no longer in the manifest are the loaded ones, unchanged.
    let mut credits = 0.0;
    for row in foreign {
        credits += match *row {
            LastRow::Loaded(i) => loaded.get(i).map_or(0.0, |r| r.credits),
            LastRow::Kept { credits, .. } => credits,
            LastRow::Logged { offset, len, .. } => {
                reader.read(offset, len)?;
                reader.parse(offset)?.credits
            }
        };
    }
    // One pass over the last rows: each job's is counted and, into `out` when
    // rewriting, copied; rows of jobs no longer in the manifest are only copied.
    let mut pass = |mut out: Option<&mut dyn Write>| -> io::Result<()> {
        let rewriting = out.is_some();
        let mut buf = Vec::new();
        if let Some(out) = out.as_mut() {
            encode_header(&mut buf)?;
            out.write_all(&buf)?;
        }
        let jobs = jobs.iter().enumerate().map(|(i, j)| {
            let billed = billed_failures
                .iter()
                .find(|(at, _)| *at == i)
                .map(|(_, c)| *c);
            (
                Some(JobRef::from(j)),
                entries.get(i).copied().flatten(),
                billed,
            )
        });
        let foreign = foreign.iter().map(|&row| (None, Some(row), None));
        for (job, entry, billed) in jobs.chain(foreign.filter(|_| rewriting)) {
            if let (
                Some(_),
                Some(LastRow::Kept {
                    offset,
                    len,
                    credits: c,
                    succeeded: true,
                    ..
                }),
                None,
            ) = (job, entry, billed)
            {
                if let Some(out) = out.as_mut() {
                    reader.read(offset, len)?;
                    out.write_all(&reader.bytes)?;
                }
                credits += c;
                outcomes.count_succeeded();
                continue;
            }
            let read_back;
            let record = match entry {
                None => None,
                Some(LastRow::Loaded(i)) => {
                    let r = loaded.get(i);
                    if let (Some(out), Some(r)) = (out.as_mut(), r) {
                        buf.clear();
                        encode_row(r, &mut buf)?;
                        out.write_all(&buf)?;
                    }
                    r
                }
                Some(LastRow::Logged { offset, len, .. } | LastRow::Kept { offset, len, .. })
                    if billed.is_some() && rewriting =>
                {
                    reader.read(offset, len)?;
                    let mut r = reader.parse(offset)?;
                    r.credits += billed.unwrap_or(0.0);
                    r.credits_source = Source::Measured.as_str().to_owned();
                    read_back = r;
                    if let Some(out) = out.as_mut() {
                        buf.clear();
                        encode_row(&read_back, &mut buf)?;
                        out.write_all(&buf)?;
                    }
                    Some(&read_back)
                }
                Some(LastRow::Logged { offset, len, .. } | LastRow::Kept { offset, len, .. }) => {
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
                credits += record.map_or(0.0, |r| r.credits);
                outcomes.count(job, record);
            }
        }
        Ok(())
    };
    // A run that appended no row has no row to drop: the file is as the run before
    // left it (one row per job, compacted at this run's start if it was not), and
    // a cron job on a finished batch writes nothing.
    let appended = entries
        .iter()
        .flatten()
        .any(|e| matches!(e, LastRow::Logged { .. }));
    if rewrite && appended {
        rewrite_with(path, |out| pass(Some(out)))?;
    } else {
        pass(None)?;
    }
    Ok(Finished { outcomes, credits })
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
            file_stem: None,
            local_images: Vec::new(),
            extend: None,
        }
    }

    /// A row of job `i` for the collector, and where its ack will be heard.
    fn row_event(
        jobs: &Arc<Vec<Job>>,
        i: usize,
        state: State,
        attempts: u32,
        message: Option<&str>,
    ) -> (Event, oneshot::Receiver<Result<(), String>>) {
        let job = &jobs[i];
        let record = Record {
            job_id: job.id.clone(),
            state: Some(state),
            attempts,
            fingerprint: job.fingerprint.clone(),
            error_message: message.map(str::to_owned),
            updated_at: "t".into(),
            ..Record::default()
        };
        let row = Row::new(i, &record, false).unwrap();
        let (ack, heard) = oneshot::channel();
        (
            Event::Row {
                row,
                ack: Some(ack),
            },
            heard,
        )
    }

    /// A collector of `jobs` jobs with no record yet, appending to `path`.
    fn spawn_collector(
        path: &Path,
        jobs: usize,
        sync: bool,
    ) -> (
        mpsc::UnboundedSender<Event>,
        tokio::task::JoinHandle<Collected>,
    ) {
        let appender = Appender::open(path, sync).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Progress {
            mode: Mode::Quiet,
            total: jobs,
            download: false,
            rate_per_second: 0.0,
        };
        let entries = vec![None; jobs];
        let collector = tokio::spawn(collect(
            rx,
            appender,
            Arc::default(),
            entries,
            progress,
            None,
        ));
        (tx, collector)
    }

    /// Rows sent without waiting are written in batches while earlier ones sync;
    /// each is acknowledged only once it is in the file, and in the order sent.
    #[tokio::test]
    async fn a_row_is_acknowledged_only_once_it_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let jobs = Arc::new((0..50).map(job).collect::<Vec<_>>());
        let (tx, collector) = spawn_collector(&path, jobs.len(), true);
        let mut heard = Vec::new();
        for i in 0..jobs.len() {
            let (event, ack) = row_event(&jobs, i, State::Submitting, 1, None);
            tx.send(event).unwrap();
            heard.push(ack);
        }
        for (i, ack) in heard.into_iter().enumerate() {
            ack.await.unwrap().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.lines().any(|l| l.starts_with(&format!("job-{i},"))),
                "job-{i} acknowledged before its row was written"
            );
        }
        drop(tx);
        let collected = collector.await.unwrap();
        assert_eq!(collected.write_error, None);
        assert_eq!(collected.entries.len(), jobs.len());
        assert!(
            collected
                .entries
                .iter()
                .all(|e| matches!(e, Some(LastRow::Logged { .. })))
        );
        let loaded = crate::checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.rows, jobs.len());
    }

    #[tokio::test]
    async fn many_rows_per_job_leave_one_entry_and_one_row_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        let jobs = Arc::new((0..3).map(job).collect::<Vec<_>>());
        let (tx, collector) = spawn_collector(&path, jobs.len(), false);
        let send = |i, state, attempts, message| row_event(&jobs, i, state, attempts, message);
        // A long history of retries for every job: memory must not follow it.
        for attempt in 1..=200 {
            for i in 0..3 {
                let (event, heard) = send(i, State::Pending, attempt, Some("429: busy"));
                tx.send(event).unwrap();
                heard.await.unwrap().unwrap();
            }
        }
        for (i, state, message) in [
            (0, State::Succeeded, None),
            (1, State::Failed, Some("bad prompt")),
        ] {
            let (event, heard) = send(i, state, 201, message);
            tx.send(event).unwrap();
            heard.await.unwrap().unwrap();
        }
        drop(tx);
        let collected = collector.await.unwrap();
        assert_eq!(collected.entries.len(), 3);
        assert!(
            collected
                .entries
                .iter()
                .all(|e| matches!(e, Some(LastRow::Logged { .. })))
        );
        let before = crate::checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(before.rows, 3 * 200 + 2);

        let outcomes = finish(&path, &jobs, &[], &collected.entries, &[], true, &[])
            .unwrap()
            .outcomes;
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
