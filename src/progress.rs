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

/// Progress lines are events with a field per count (`--log-format json`), not prose.
static STRUCTURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes progress lines structured events (for JSON logs) or prose.
pub fn set_structured(structured: bool) {
    STRUCTURED.store(structured, std::sync::atomic::Ordering::Relaxed);
}

/// True when log lines are JSON events (`--log-format json`): then everything
/// on stderr goes through `tracing`, errors included, never as prose.
pub fn structured() -> bool {
    STRUCTURED.load(std::sync::atomic::Ordering::Relaxed)
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
pub struct PhaseCounts {
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
pub fn counts<'a>(
    records: impl IntoIterator<Item = Option<&'a Record>>,
    download: bool,
) -> PhaseCounts {
    let mut c = PhaseCounts::default();
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
        Standing::Running | Standing::UpgradeNotMade => Bucket::Running,
        Standing::InDoubt => Bucket::InDoubt,
        Standing::Failed | Standing::DownloadFailed | Standing::Blocked => Bucket::Failed,
        Standing::NotDownloaded | Standing::VideoMissing if download => Bucket::Downloading,
        Standing::NotDownloaded | Standing::Succeeded | Standing::VideoMissing => Bucket::Done,
    }
}

impl PhaseCounts {
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

    /// What the progress bar says after its count: the buckets that hold jobs,
    /// short, then the submit rate and the time left when it can be told. Short
    /// enough that the whole bar fits 80 columns; the bar's template truncates
    /// what would not.
    pub fn compact(&self, submits_per_second: f64, eta: Option<Duration>) -> String {
        let mut parts: Vec<String> = Vec::new();
        // The time left first: a narrow terminal cuts the end of the line.
        if let Some(d) = eta {
            parts.push(format!("~{} left", short_duration(d)));
        }
        parts.extend(
            [
                (self.queued, "queued"),
                (self.submitting, "sending"),
                (self.running, "running"),
                (self.downloading, "downloading"),
                (self.failed, "failed"),
                (self.in_doubt, "doubt"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, label)| format!("{n} {label}")),
        );
        if submits_per_second > 0.0 {
            parts.push(format!("{submits_per_second:.1} submits/s"));
        }
        parts.join(", ")
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

/// `d` as its largest unit or two (`45s`, `3m`, `1h20m`).
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", (s + 30) / 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A bar drawn to `target`: elapsed time, the bar, the count done and the
/// [`PhaseCounts::compact`] message, cut to the terminal's width.
fn new_bar(total: usize, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:20}] {pos}/{len} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The time left as shown: an estimate that would end later than the one shown is
/// taken only once the submit rate moved by more than [`RATE_CHANGE`] since that one
/// was taken, or once its end has passed; so while the rate holds, the time left
/// only counts down (the mean generation time creeping up as slower tasks finish
/// would otherwise push it back every few seconds).
#[derive(Debug, Default, Clone)]
pub struct EtaClock {
    /// When the run is expected to end, and the submit rate then.
    shown: Option<(Instant, f64)>,
}

/// How far the submit rate may move, as a share of its value, and still "hold".
const RATE_CHANGE: f64 = 0.2;

impl EtaClock {
    /// The time left to show at `now`, given the newest `estimate` and the run's
    /// submit rate so far (submits per second).
    pub fn update(
        &mut self,
        now: Instant,
        estimate: Option<Duration>,
        rate: f64,
    ) -> Option<Duration> {
        let Some(estimate) = estimate else {
            self.shown = None;
            return None;
        };
        let end = now + estimate;
        let keep = self.shown.is_some_and(|(shown, at_rate)| {
            let holds = (rate - at_rate).abs() <= RATE_CHANGE * at_rate.max(f64::EPSILON);
            end > shown && shown > now && holds
        });
        if !keep {
            self.shown = Some((end, rate));
        }
        self.shown
            .map(|(end, _)| end.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// Shows progress the way `mode` says.
pub struct Reporter {
    mode: Mode,
    bar: Option<ProgressBar>,
    last_line: Instant,
    started: Instant,
    eta: EtaClock,
}

impl Reporter {
    pub fn new(mode: Mode, total: usize) -> Reporter {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = new_bar(total, ProgressDrawTarget::stderr());
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
            eta: EtaClock::default(),
        }
    }

    /// Updates the display; `submitted` is this run's submissions so far and
    /// `eta` the estimate of the time left, when there is one.
    pub fn update(&mut self, c: &PhaseCounts, submitted: u64, eta: Option<Duration>) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = submitted as f64 / elapsed;
        let eta = self.eta.update(Instant::now(), eta, rate);
        let eta_secs = eta.map(|d| d.as_secs());
        match self.mode {
            Mode::Quiet => {}
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position((c.done + c.failed + c.in_doubt) as u64);
                    bar.set_message(c.compact(rate, eta));
                }
            }
            Mode::Lines(every) => {
                if self.last_line.elapsed() >= every {
                    self.last_line = Instant::now();
                    if !STRUCTURED.load(std::sync::atomic::Ordering::Relaxed) {
                        let eta = eta.map_or(String::new(), |d| {
                            format!(", about {} left", short_duration(d))
                        });
                        tracing::info!("progress: {}; {rate:.2} submits/s{eta}", c.line());
                        return;
                    }
                    tracing::info!(
                        queued = c.queued,
                        submitting = c.submitting,
                        running = c.running,
                        downloading = c.downloading,
                        done = c.done,
                        failed = c.failed,
                        in_doubt = c.in_doubt,
                        submits_per_second = (rate * 100.0).round() / 100.0,
                        eta_seconds = eta_secs,
                        "progress"
                    );
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

    /// While the submit rate holds, a later estimate does not push the time left
    /// back; an earlier one is taken at once, and so is a later one once the rate
    /// moved or the shown end passed.
    #[test]
    fn the_time_left_counts_down_while_the_rate_holds() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let secs = Duration::from_secs;
        let mut clock = EtaClock::default();
        assert_eq!(clock.update(at(0), Some(secs(100)), 2.0), Some(secs(100)));
        // The mean generation time grew: the estimate says 105 s left at 10 s.
        assert_eq!(clock.update(at(10), Some(secs(105)), 2.1), Some(secs(90)));
        assert_eq!(clock.update(at(20), Some(secs(95)), 1.9), Some(secs(80)));
        // Better news is taken.
        assert_eq!(clock.update(at(30), Some(secs(40)), 2.0), Some(secs(40)));
        // The rate halved (rate limited): the later end is believed.
        assert_eq!(clock.update(at(40), Some(secs(90)), 1.0), Some(secs(90)));
        // The shown end passed: the new estimate stands.
        assert_eq!(clock.update(at(140), Some(secs(20)), 1.0), Some(secs(20)));
        assert_eq!(clock.update(at(141), None, 1.0), None);
    }

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

    /// A terminal 80 columns wide that keeps what is drawn on it.
    #[derive(Debug, Default)]
    struct Screen(Mutex<Vec<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            if !s.is_empty() {
                self.0.lock().unwrap().push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug, Clone, Default)]
    struct Shared(std::sync::Arc<Screen>);

    impl indicatif::TermLike for Shared {
        fn width(&self) -> u16 {
            self.0.width()
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            self.0.move_cursor_up(n)
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.0.move_cursor_down(n)
        }
        fn move_cursor_right(&self, n: usize) -> io::Result<()> {
            self.0.move_cursor_right(n)
        }
        fn move_cursor_left(&self, n: usize) -> io::Result<()> {
            self.0.move_cursor_left(n)
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.0.write_line(s)
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.0.write_str(s)
        }
        fn clear_line(&self) -> io::Result<()> {
            self.0.clear_line()
        }
        fn flush(&self) -> io::Result<()> {
            self.0.flush()
        }
    }

    #[test]
    fn the_bar_fits_80_columns() {
        // The widest a run of 10,000 jobs shows: every bucket busy, an ETA.
        let c = PhaseCounts {
            queued: 9999,
            submitting: 20,
            running: 9999,
            downloading: 999,
            done: 9999,
            failed: 9999,
            in_doubt: 999,
        };
        let msg = c.compact(2.04, Some(Duration::from_secs(4 * 3600 + 50 * 60)));
        insta::assert_snapshot!(msg);
        let screen = Shared::default();
        let bar = new_bar(
            10_000,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_position(5000);
        bar.set_message(msg);
        bar.tick();
        let lines = screen.0.0.lock().unwrap().clone();
        let drawn = lines.last().cloned().unwrap_or_default();
        assert!(drawn.starts_with("00:00:00 [=========="), "{lines:?}");
        assert!(drawn.contains("5000/10000 ~4h50m left"), "{drawn}");
        for line in &lines {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        let quiet = PhaseCounts {
            queued: 3,
            ..PhaseCounts::default()
        };
        assert_eq!(
            quiet.compact(0.0, None),
            "3 queued",
            "no ETA until one is known"
        );
    }
}
