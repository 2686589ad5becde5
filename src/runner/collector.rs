//! The one task that owns the results file and the counters. Job tasks send it
//! events; it appends their rows in batches (one sync covers every row that arrived
//! together: group commit) and only then tells each job it may act.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::writer::Appender;
use crate::checkpoint::{Record, State};
use crate::progress::{self, Mode, Reporter};

/// What a job tells the collector.
#[derive(Debug)]
pub enum Event {
    /// A new row for a job; `ack` hears back once it is on disk.
    Row {
        record: Box<Record>,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// A request will be retried after `delay`.
    Retry { code: Option<i64> },
}

/// Counts of what happened during the run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub retries: u64,
    pub rate_limited: u64,
    pub submitted: u64,
}

/// The collector's state, handed back when the run ends.
#[derive(Debug)]
pub struct Collected {
    /// Last record of every job, this run's and earlier ones'.
    pub records: HashMap<String, Record>,
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
    mut records: HashMap<String, Record>,
    progress: Progress,
) -> Collected {
    let mut counters = Counters::default();
    let mut write_error: Option<String> = None;
    let mut batch: Vec<Event> = Vec::with_capacity(256);
    let mut counts = progress::counts(&records, progress.total, progress.download);
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
        let mut rows: Vec<&Record> = Vec::new();
        for event in &batch {
            match event {
                Event::Row { record, .. } => rows.push(&**record),
                Event::Retry { code } => {
                    counters.retries += 1;
                    if *code == Some(429) {
                        counters.rate_limited += 1;
                    }
                }
            }
        }
        let result: Result<(), String> = match &write_error {
            Some(e) => Err(e.clone()),
            None => appender.append(rows).map_err(|e: io::Error| {
                let msg = format!(
                    "failed to write results file `{}`: {e}",
                    appender.path().display()
                );
                tracing::error!("{msg}");
                write_error = Some(msg.clone());
                msg
            }),
        };
        for event in batch.drain(..) {
            if let Event::Row { record, ack } = event {
                if result.is_ok() {
                    if record.state == Some(State::Submitted) {
                        counters.submitted += 1;
                    }
                    if let Some(d) = generation_time(&record) {
                        generation.0 += d;
                        generation.1 += 1;
                    }
                    counts.add(Some(&record), 1, progress.download);
                    let old = records.insert(record.job_id.clone(), *record);
                    counts.add(old.as_ref(), -1, progress.download);
                }
                if let Some(ack) = ack {
                    // A job that stopped waiting has nothing more to do with the answer.
                    let _ = ack.send(result.clone());
                }
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
        records,
        counters,
        write_error,
    }
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
