//! The one task that owns the results file and the counters. Job tasks send it
//! events; it appends their rows in batches (one sync covers every row that arrived
//! together: group commit) and only then tells each job it may act.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::writer::Appender;
use crate::checkpoint::{Record, State};

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
    pub rows_written: u64,
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

/// How often a plain progress line is logged.
pub struct Progress {
    pub every: Duration,
    pub total: usize,
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
    let mut last_progress = Instant::now();
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, 1024).await == 0 {
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
                    counters.rows_written += 1;
                    if record.state == Some(State::Submitted) {
                        counters.submitted += 1;
                    }
                    records.insert(record.job_id.clone(), *record);
                }
                if let Some(ack) = ack {
                    // A job that stopped waiting has nothing more to do with the answer.
                    let _ = ack.send(result.clone());
                }
            }
        }
        if last_progress.elapsed() >= progress.every {
            last_progress = Instant::now();
            log_progress(&records, progress.total, &counters);
        }
    }
    Collected {
        records,
        counters,
        write_error,
    }
}

fn log_progress(records: &HashMap<String, Record>, total: usize, counters: &Counters) {
    let mut by_state: HashMap<State, usize> = HashMap::new();
    for r in records.values() {
        *by_state.entry(r.state()).or_default() += 1;
    }
    let n = |s| by_state.get(&s).copied().unwrap_or(0);
    tracing::info!(
        "progress: {} of {total} succeeded, {} running, {} failed, {} in doubt; {} retries ({} rate-limited)",
        n(State::Succeeded),
        n(State::Submitted) + n(State::Submitting),
        n(State::Failed),
        n(State::InDoubt),
        counters.retries,
        counters.rate_limited,
    );
}
