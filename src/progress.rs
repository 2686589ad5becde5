//! Progress output: an `indicatif` bar on a terminal, a plain line every
//! `--progress-interval` elsewhere (cron, CI, pipes: never control characters), or
//! nothing with `-q`. Log lines go through [`LogWriter`] so they print above the
//! bar instead of through it.

use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::plan::{Standing, standing};
use crate::checkpoint::{Record, State};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Lines(Duration),
    Quiet,
}

static ACTIVE_BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active() -> &'static Mutex<Option<ProgressBar>> {
    ACTIVE_BAR.get_or_init(|| Mutex::new(None))
}

/// Writes log lines to stderr, above the progress bar when one is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = active().lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// Counts of jobs by where they stand, for progress output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub submitting: usize,
    pub running: usize,
    pub downloading: usize,
    pub done: usize,
    pub failed: usize,
    pub in_doubt: usize,
}

/// Counts jobs by their last records, one item per job (`None`: no record yet, so
/// the job is queued).
pub fn counts<'a>(records: impl IntoIterator<Item = Option<&'a Record>>, download: bool) -> Counts {
    let mut c = Counts::default();
    for r in records {
        c.add(r, 1, download);
    }
    c
}

/// Where one job is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Queued,
    Submitting,
    Running,
    Downloading,
    Done,
    Failed,
    InDoubt,
}

/// The bucket of a job whose last record is `record` (`None`: the job has no
/// record yet, so it is queued): where the job stands ([`standing`]), with the
/// live step of a run (a generate call leaving) and, when the run does not
/// download, made videos counted done.
pub fn bucket(record: Option<&Record>, download: bool) -> Bucket {
    let Some(r) = record else {
        return Bucket::Queued;
    };
    match r.state() {
        State::Pending => return Bucket::Queued,
        State::Submitting => return Bucket::Submitting,
        _ => {}
    }
    match standing(None, r.wants(), Some(r)) {
        Standing::NotStarted => Bucket::Queued,
        Standing::Running => Bucket::Running,
        Standing::InDoubt => Bucket::InDoubt,
        Standing::Failed | Standing::DownloadFailed => Bucket::Failed,
        Standing::NotDownloaded if download => Bucket::Downloading,
        Standing::NotDownloaded | Standing::Succeeded => Bucket::Done,
    }
}

impl Counts {
    /// Moves one job in or out of its bucket (`None`: the job has no record yet,
    /// so it is queued).
    pub fn add(&mut self, record: Option<&Record>, delta: isize, download: bool) {
        self.shift(bucket(record, download), delta);
    }

    /// Moves one job in or out of `bucket`.
    pub fn shift(&mut self, bucket: Bucket, delta: isize) {
        let n = match bucket {
            Bucket::Queued => &mut self.queued,
            Bucket::Submitting => &mut self.submitting,
            Bucket::Running => &mut self.running,
            Bucket::Downloading => &mut self.downloading,
            Bucket::Done => &mut self.done,
            Bucket::Failed => &mut self.failed,
            Bucket::InDoubt => &mut self.in_doubt,
        };
        *n = n.saturating_add_signed(delta);
    }

    /// One line, no control characters.
    pub fn line(&self) -> String {
        format!(
            "{} queued, {} submitting, {} running, {} downloading, {} done, {} failed, {} in doubt",
            self.queued,
            self.submitting,
            self.running,
            self.downloading,
            self.done,
            self.failed,
            self.in_doubt
        )
    }
}

/// Shows progress the way `mode` says.
pub struct Reporter {
    mode: Mode,
    bar: Option<ProgressBar>,
    last_line: Instant,
    started: Instant,
}

impl Reporter {
    pub fn new(mode: Mode, total: usize) -> Reporter {
        let bar = (mode == Mode::Bar).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut slot) = active().lock() {
                *slot = Some(bar.clone());
            }
            bar
        });
        Reporter {
            mode,
            bar,
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Updates the display; `submitted` is this run's submissions so far and
    /// `eta` the estimate of the time left, when there is one.
    pub fn update(&mut self, c: &Counts, submitted: u64, eta: Option<Duration>) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = submitted as f64 / elapsed;
        let eta = eta.map_or(String::new(), |d| {
            format!(
                ", about {} left",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        });
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position((c.done + c.failed + c.in_doubt) as u64);
                    bar.set_message(format!("{}; {rate:.2} submits/s{eta}", c.line()));
                }
            }
            Mode::Lines(every) => {
                if self.last_line.elapsed() >= every {
                    self.last_line = Instant::now();
                    tracing::info!("progress: {}; {rate:.2} submits/s{eta}", c.line());
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Ok(mut slot) = active().lock() {
                *slot = None;
            }
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cover_every_job() {
        let mut records = vec![None, None];
        for (id, state, urls, paths) in [
            ("a", State::Succeeded, 1, 1),
            ("b", State::Succeeded, 1, 0),
            ("c", State::Submitted, 0, 0),
            ("d", State::InDoubt, 0, 0),
        ] {
            records.push(Some(Record {
                job_id: id.into(),
                state: Some(state),
                video_urls: vec!["u".into(); urls],
                video_paths: vec!["p".into(); paths],
                // A task id, as every submitted row has one.
                task_id: (state != State::InDoubt).then(|| "t".into()),
                ..Record::default()
            }));
        }
        let c = counts(records.iter().map(Option::as_ref), true);
        assert_eq!(
            c.line(),
            "2 queued, 0 submitting, 1 running, 1 downloading, 1 done, 0 failed, 1 in doubt"
        );
        assert!(c.line().chars().all(|ch| !ch.is_control()));
    }
}
