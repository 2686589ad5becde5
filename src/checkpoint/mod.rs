//! The results CSV: the checkpoint that makes a run resumable.
//!
//! While a run goes, a row is appended at every state change of a job and synced to
//! disk before the step it records is acted on, so the file may hold several rows per
//! job (the last one counts). A run that ends any way but a kill rewrites it, through
//! a temporary file and a rename, to one row per job in manifest order.
//!
//! This module reads the file ([`load`]), writes it ([`writer`]), and decides from it
//! what is left to do for each job ([`plan`]).

use std::fmt;

mod confine;
mod error_kind;
mod located;
pub mod plan;
mod read;
pub mod rows;
pub mod schema;
pub mod writer;

pub use confine::{Confinement, confine_paths, forget_missing_videos};
pub use error_kind::ErrorKind;
pub use located::{Located, Place, Records, load_located};
pub use read::{
    CheckpointError, ForeignResults, Listed, Loaded, Preloaded, check_belongs, load, load_listed,
    parse_reader, preload,
};
pub use schema::HEADER;

/// How `error_message` begins when the service refused a job's 1080p or 4K upgrade
/// (after the upgrade's name): such a job keeps its base video and is not asked again.
pub const UPGRADE_FAILED: &str = "upgrade failed";

/// How a record says the service refused its upgrade for want of credits: the base
/// video is kept, and the next run asks for the upgrade again.
pub const UPGRADE_NOT_MADE: &str = "upgrade not made";

/// How a recorded download failure starts (in `error_message`), so that a later
/// successful download clears it and nothing else.
pub const DOWNLOAD_FAILED: &str = "download failed";

/// Separates several URLs or paths inside one cell.
pub const LIST_SEPARATOR: char = '|';

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not sent yet, or every send so far was refused without creating a task
    /// (429, 455, 500...): safe to send.
    Pending,
    /// About to send the generate request. Found on resume, it means the request may
    /// have been sent without its answer being recorded: the job is in doubt.
    Submitting,
    /// The service created the task; it is polled, never sent again.
    Submitted,
    Succeeded,
    Failed,
    /// The request was sent and no answer came: a task may exist and be billed.
    InDoubt,
    /// An extend job not sent because the job it continues failed (`error_message`
    /// says which, and why). Nothing was sent for it; it is sent once its parent
    /// succeeds (`--retry-failed` retries the parent).
    Blocked,
}

impl State {
    pub const ALLOWED: &'static str =
        "pending, submitting, submitted, succeeded, failed, in_doubt, blocked";

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Submitting => "submitting",
            State::Submitted => "submitted",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::InDoubt => "in_doubt",
            State::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "submitting" => State::Submitting,
            "submitted" => State::Submitted,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "in_doubt" => State::InDoubt,
            "blocked" => State::Blocked,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the results file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub job_id: String,
    pub state: Option<State>,
    pub task_id: Option<String>,
    /// Generate requests sent for this job, over all runs.
    pub attempts: u32,
    pub model: String,
    pub generation_type: String,
    pub aspect_ratio: String,
    pub prompt: String,
    pub fingerprint: String,
    pub video_urls: Vec<String>,
    /// 1080p or 4K result URLs, once the upgrade is ready.
    pub upgrade_urls: Vec<String>,
    pub video_paths: Vec<String>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub submitted_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    /// The 1080p or 4K file the job asks for (so that the file alone tells where a
    /// job waiting for it stands).
    pub upgrade: Option<crate::manifest::Upgrade>,
    /// The job keeps its base video beside the upgraded one.
    pub keep_original: bool,
    /// Credits this job's generate calls committed, over all runs: counted when the
    /// call is about to leave (at the measured price of its kind once known),
    /// given back when the service refused it without creating a task, and the
    /// upgrade's part given back when the service refused the upgrade for want of
    /// credits. A task that later fails stays counted (the service says failed
    /// tasks are free; the budget errs on the safe side).
    pub credits: f64,
    /// Earlier tasks of this job that a later submission replaced (the manifest
    /// changed, `--retry-failed`, `--resubmit-in-doubt`): their ids, or
    /// [`IN_DOUBT_TASK`] for a call that may have made a task whose id never came.
    pub superseded_tasks: Vec<String>,
    /// Where the videos of superseded tasks were moved to (never overwritten).
    pub superseded_paths: Vec<String>,
    /// The request's seed, empty when the service picks one.
    pub seeds: String,
    /// The resolution asked (`720p` when the request left it to the service).
    pub resolution: String,
    /// Seconds asked (`8` when the request left it to the service).
    pub duration: String,
    /// The request's image URLs.
    pub image_urls: Vec<String>,
    /// For an extend job: the id of the job whose video it continues.
    pub extends: String,
    /// For an extend job sent: the task of the video it continued. A parent whose
    /// task is another one now (generated again) has its children sent again.
    pub parent_task_id: Option<String>,
    /// Where `credits` comes from: `measured` (the balance's fall after a task of
    /// its kind) or `table` (the price table); empty in files written before.
    pub credits_source: String,
    /// Why the last step failed, with `error_message`; `None` with no error, or in
    /// a row written before the column existed (see [`Record::error_kind`]).
    pub error_kind: Option<ErrorKind>,
    /// The account of the key that made the task (empty: the unnamed account, or
    /// no task yet).
    pub account: String,
    /// The id ([`crate::api::KeyId`]) of the key that made the task, never the key.
    pub key_id: String,
}

/// How [`Record::superseded_tasks`] names a call that may have created a task whose
/// id never came back.
pub const IN_DOUBT_TASK: &str = "(in doubt)";

impl Record {
    /// How many files a finished job downloads: its upgraded videos (plus the base
    /// ones when it keeps the original), or else its base videos.
    pub fn files_expected(&self, keep_original: bool) -> usize {
        if self.upgrade_urls.is_empty() {
            self.video_urls.len()
        } else if keep_original {
            self.upgrade_urls.len() + self.video_urls.len()
        } else {
            self.upgrade_urls.len()
        }
    }

    /// Why the last step failed: the `error_kind` column, or in a row from before
    /// it, what its message says; `None` without an error message.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        let message = self.error_message.as_deref()?;
        Some(
            self.error_kind
                .unwrap_or_else(|| ErrorKind::of_legacy(self.state(), message)),
        )
    }

    /// Records a failure: its kind, the service's code and the message.
    pub fn set_failure(&mut self, kind: ErrorKind, code: Option<i64>, message: String) {
        self.error_kind = Some(kind);
        self.error_code = code;
        self.error_message = Some(message);
    }

    /// Forgets the last failure.
    pub fn clear_failure(&mut self) {
        self.error_kind = None;
        self.error_code = None;
        self.error_message = None;
    }

    /// True when the service refused this job's upgrade for good.
    pub fn upgrade_refused(&self) -> bool {
        self.error_kind() == Some(ErrorKind::Upgrade)
    }

    /// True when the service refused this job's upgrade for want of credits (the
    /// next run asks again).
    pub fn upgrade_not_made(&self) -> bool {
        // A made video's record; a submission refused for credits stays pending.
        self.upgrade_urls.is_empty()
            && self.state() == State::Succeeded
            && self.error_kind() == Some(ErrorKind::Credits)
    }

    /// True when a succeeded job still has files to download.
    pub fn downloads_missing(&self, keep_original: bool) -> bool {
        self.video_paths.len() < self.files_expected(keep_original)
    }

    /// True when the last try to download this job's videos failed.
    pub fn download_failed(&self) -> bool {
        self.error_kind() == Some(ErrorKind::Download)
    }

    /// The state, which every loaded or written record has.
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Pending)
    }

    /// What the job asks beyond its request, as recorded.
    pub fn wants(&self) -> plan::Wants {
        plan::Wants {
            upgrade: self.upgrade.is_some(),
            keep_original: self.keep_original,
        }
    }

    /// The cells of this row, in [`HEADER`] order.
    pub fn cells(&self) -> Vec<String> {
        schema::COLUMNS
            .iter()
            .map(|c| {
                let mut cell = String::new();
                (c.write)(self, &mut cell);
                cell
            })
            .collect()
    }

    /// Reads the row `cells` (of a file whose header has that many columns) as a
    /// record.
    pub(crate) fn from_cells(
        cells: &csv::StringRecord,
    ) -> Result<Record, (Option<String>, String)> {
        let mut record = Record::default();
        record.fill_from_cells(cells)?;
        Ok(record)
    }

    /// Sets this record to the row `cells`, reusing the record's strings: a results
    /// file a kill left holds several rows per job, and all but the last are
    /// replaced. Columns the row does not have (a file written before they were
    /// added) are set empty. On `Err` the record is left part-filled.
    fn fill_from_cells(
        &mut self,
        cells: &csv::StringRecord,
    ) -> Result<(), (Option<String>, String)> {
        for (i, column) in schema::COLUMNS.iter().enumerate() {
            let cell = cells.get(i).unwrap_or_default();
            (column.read)(self, cell).map_err(|m| (Some(column.name.to_owned()), m))?;
        }
        Ok(())
    }
}

/// The current time, as written in the results file (RFC 3339, UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::read::{Index, Sizing};
    use super::*;

    fn record(id: &str, state: State) -> Record {
        Record {
            job_id: id.into(),
            state: Some(state),
            attempts: 1,
            model: "veo3_fast".into(),
            prompt: "a \"dog\", running\nin a park".into(),
            fingerprint: "00ff".into(),
            video_urls: vec!["http://x/1.mp4".into(), "http://x/2.mp4".into()],
            updated_at: "2026-01-01T00:00:00Z".into(),
            ..Record::default()
        }
    }

    fn to_csv(records: &[Record]) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(HEADER).unwrap();
        for r in records {
            w.write_record(r.cells()).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn parse(bytes: &[u8]) -> Result<Loaded, CheckpointError> {
        let torn = !bytes.is_empty() && bytes.last() != Some(&b'\n');
        parse_reader(bytes, Path::new("r.csv"), torn)
    }

    #[test]
    fn round_trip_and_last_row_wins() {
        let a1 = record("a", State::Submitting);
        let mut a2 = record("a", State::Submitted);
        a2.task_id = Some("t1".into());
        let b = record("b", State::Failed);
        let loaded = parse(&to_csv(&[a1, a2.clone(), b.clone()])).unwrap();
        assert_eq!(loaded.rows, 3);
        assert_eq!(loaded.order, ["a", "b"]);
        assert_eq!(loaded.records["a"], a2);
        assert_eq!(loaded.records["b"], b);
        assert!(loaded.needs_compaction());
        assert!(!loaded.torn);
    }

    fn record_strategy() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        let cell = "[a-z\",\n ]{1,6}";
        let states = prop::sample::select(vec![
            State::Pending,
            State::Submitting,
            State::Submitted,
            State::Succeeded,
            State::Failed,
            State::InDoubt,
        ]);
        (
            (
                prop::sample::select(vec!["a", "b", "c"]),
                states,
                any::<u32>(),
                cell,
                cell,
            ),
            (
                prop::option::of(cell),
                prop::collection::vec("[a-z:/.]{1,8}", 0..3),
                prop::collection::vec("[a-z:/.]{1,8}", 0..2),
                prop::option::of(any::<i64>()),
                prop::option::of(cell),
                prop::option::of(cell),
            ),
        )
            .prop_map(
                |((id, state, attempts, prompt, fp), (task, videos, paths, code, msg, at))| {
                    Record {
                        job_id: id.into(),
                        state: Some(state),
                        task_id: task,
                        attempts,
                        model: "veo3".into(),
                        prompt,
                        fingerprint: fp,
                        video_urls: videos,
                        video_paths: paths,
                        error_code: code,
                        error_message: msg,
                        finished_at: at,
                        updated_at: "2026-01-01T00:00:00Z".into(),
                        ..Record::default()
                    }
                },
            )
    }

    proptest::proptest! {
        /// Rows parsed into a job's earlier record (to reuse its strings) leave
        /// nothing of it behind: the last row of each job is what loads.
        #[test]
        fn each_job_loads_as_its_last_row(rows in proptest::collection::vec(record_strategy(), 1..12)) {
            let loaded = parse(&to_csv(&rows)).unwrap();
            let mut order: Vec<String> = Vec::new();
            for r in &rows {
                if !order.contains(&r.job_id) {
                    order.push(r.job_id.clone());
                }
            }
            proptest::prop_assert_eq!(&loaded.order, &order);
            proptest::prop_assert_eq!(loaded.rows, rows.len());
            for id in &order {
                let last = rows.iter().rev().find(|r| r.job_id == *id).unwrap();
                proptest::prop_assert_eq!(&loaded.records[id], last);
            }
        }
    }

    #[test]
    fn ids_of_the_same_hash_are_told_apart() {
        let records = [
            record("a", State::Submitted),
            record("b", State::Failed),
            record("c", State::Failed),
        ];
        // Room for all three: a table that grows rehashes by the ids' real hashes,
        // not the forced ones.
        let mut index = Index::with_capacity(16);
        index.insert_hashed(7, 0, &records);
        index.insert_hashed(7, 1, &records);
        index.insert_hashed(8, 2, &records);
        assert_eq!(index.find_hashed(7, "a", &records), Some(0));
        assert_eq!(index.find_hashed(7, "b", &records), Some(1));
        assert_eq!(index.find_hashed(8, "c", &records), Some(2));
        assert_eq!(index.find_hashed(8, "d", &records), None);
        // By their real hashes, as a run looks them up.
        let mut index = Index::default();
        for (at, r) in records.iter().enumerate() {
            index.insert_hashed(Index::hash(&r.job_id), at, &records);
        }
        assert_eq!(index.find("b", &records), Some(1));
        assert_eq!(index.find("z", &records), None);
    }

    #[test]
    fn a_listed_file_finds_each_job_by_id() {
        let rows = [
            record("b", State::Submitting),
            record("a", State::Submitted),
            record("b", State::Failed),
        ];
        let listed: Listed = super::read::parse(
            &to_csv(&rows)[..],
            Path::new("r.csv"),
            false,
            Sizing::default(),
        )
        .unwrap();
        let ids: Vec<&str> = listed.records.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert_eq!(listed.get("b"), Some(&rows[2]));
        assert_eq!(listed.get("a"), Some(&rows[1]));
        assert_eq!(listed.get("c"), None);
        assert!(listed.needs_compaction());
    }

    #[test]
    fn torn_last_row_is_dropped_with_a_warning() {
        let mut bytes = to_csv(&[
            record("a", State::Submitted),
            record("b", State::Submitting),
        ]);
        let last_row_len = bytes.len() - to_csv(&[record("a", State::Submitted)]).len();
        for cut in 1..last_row_len {
            let torn = &bytes[..bytes.len() - cut];
            let loaded = parse(torn).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert!(loaded.torn);
            assert_eq!(loaded.order, ["a"], "cut {cut}");
            assert_eq!(loaded.warnings.len(), 1);
        }
        bytes.truncate(5);
        let loaded = parse(&bytes).unwrap();
        assert!(loaded.records.is_empty());
    }

    #[test]
    fn bad_header_is_located() {
        let err = parse(b"id,prompt\nx,y\n").unwrap_err().to_string();
        assert!(
            err.starts_with("r.csv:1: not a veo-batch results file: the header is `id,prompt`"),
            "{err}"
        );
    }

    #[test]
    fn bad_cells_are_located() {
        let mut bytes = to_csv(&[record("a", State::Submitted)]);
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace(",submitted,", ",flying,");
        let err = parse(text.as_bytes()).unwrap_err().to_string();
        assert!(
            err.starts_with("r.csv:2: job \"a\": state: \"flying\" is not a state"),
            "{err}"
        );
        let good = to_csv(&[record("c", State::Failed)]);
        let good_row = &good[good.iter().position(|b| *b == b'\n').unwrap() + 1..];
        bytes.extend_from_slice(b"b,submitted\n");
        let mut last_bad = bytes.clone();
        bytes.extend_from_slice(good_row);
        let err = parse(&bytes).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("r.csv:4: has 2 cells, expected {}", HEADER.len())
        );
        // The same row last is what a kill leaves: dropped with a warning.
        let loaded = parse(&last_bad).unwrap();
        assert!(loaded.torn);
        assert_eq!(loaded.order, ["a"]);
        last_bad.clear();
    }

    #[test]
    fn invalid_utf8_is_located() {
        let mut bytes = to_csv(&[record("a", State::Submitted)]);
        bytes.extend_from_slice(b"b\xff,submitted,,1,,,,,,,,,,,,,x\n");
        bytes.extend_from_slice(b"c,failed,,1,,,,,,,,,,,,,x\n");
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.starts_with("r.csv:4: is not valid UTF-8"), "{err}");
    }

    #[test]
    fn a_preload_is_used_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let absent = preload(&path);
        assert!(matches!(absent.take_for(&path), Some(Ok(None))));
        std::fs::write(&path, to_csv(&[record("a", State::Submitted)])).unwrap();
        assert!(preload(&path).take_for(&path).is_some(), "unchanged");
        assert!(
            preload(&path)
                .take_for(&dir.path().join("other.csv"))
                .is_none()
        );
        // Created, appended to, or replaced through a rename since: read again.
        let absent = preload(&dir.path().join("new.csv"));
        std::fs::write(dir.path().join("new.csv"), "").unwrap();
        assert!(absent.take_for(&dir.path().join("new.csv")).is_none());
        let pre = preload(&path);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &to_csv(&[record("b", State::Pending)])[..]).unwrap();
        assert!(pre.take_for(&path).is_none(), "appended");
        let pre = preload(&path);
        let tmp = dir.path().join("tmp.csv");
        std::fs::copy(&path, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(pre.take_for(&path).is_none(), "replaced");
    }

    #[test]
    fn a_file_from_before_extend_jobs_loads_with_their_columns_empty() {
        let r = record("a", State::Succeeded);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&HEADER[..26]).unwrap();
        w.write_record(&r.cells()[..26]).unwrap();
        let loaded = parse(&w.into_inner().unwrap()).unwrap();
        assert!(
            loaded.old_header,
            "rewritten with today's header by the next run"
        );
        assert_eq!(loaded.records["a"], r);
        assert_eq!(loaded.records["a"].parent_task_id, None);
        // And an extend's row round-trips with its own.
        let mut e = record("e", State::Blocked);
        e.extends = "a".into();
        e.parent_task_id = Some("t9".into());
        let loaded = parse(&to_csv(&[e.clone()])).unwrap();
        assert_eq!(loaded.records["e"], e);
    }

    /// A file from before error kinds loads; its failures get their kind from the
    /// message, and a row of today round-trips its kind.
    #[test]
    fn a_file_from_before_error_kinds_loads_and_tells_kinds_from_messages() {
        let mut r = record("a", State::Succeeded);
        r.error_code = Some(404);
        r.error_message = Some("download failed: download of h/a.mp4 failed: http 404".into());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&HEADER[..28]).unwrap();
        w.write_record(&r.cells()[..28]).unwrap();
        let loaded = parse(&w.into_inner().unwrap()).unwrap();
        assert!(loaded.old_header);
        let old = &loaded.records["a"];
        assert_eq!(old.error_kind, None);
        assert_eq!(old.error_kind(), Some(ErrorKind::Download));
        assert!(old.download_failed());
        // A row with the column says its kind; the message does not decide it.
        r.error_kind = Some(ErrorKind::GenerationFailed);
        let loaded = parse(&to_csv(std::slice::from_ref(&r))).unwrap();
        assert_eq!(loaded.records["a"], r);
        assert!(!loaded.records["a"].download_failed());
        let mut bad = to_csv(&[r]);
        let text = String::from_utf8(bad.clone())
            .unwrap()
            .replace(",generation_failed,,\n", ",exploded,,\n");
        bad = text.into_bytes();
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("error_kind: \"exploded\" is not an error kind"),
            "{e}"
        );
    }

    #[test]
    fn a_file_from_before_key_pools_loads_with_their_columns_empty() {
        let mut r = record("a", State::Succeeded);
        r.extends = "z".into();
        r.parent_task_id = Some("t1".into());
        r.credits_source = "table".into();
        r.error_kind = Some(ErrorKind::Download);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&HEADER[..30]).unwrap();
        w.write_record(&r.cells()[..30]).unwrap();
        let loaded = parse(&w.into_inner().unwrap()).unwrap();
        assert!(loaded.old_header, "rewritten with today's header");
        assert_eq!(loaded.records["a"], r);
        assert_eq!(loaded.records["a"].key_id, "");
        // A row of a task made by a pool's key round-trips with its account and id.
        r.account = "acme-b".into();
        r.key_id = "d40a2817".into();
        let text = to_csv(&[r.clone()]);
        assert!(
            String::from_utf8_lossy(&text).contains(",acme-b,d40a2817\n"),
            "the last two columns"
        );
        assert_eq!(parse(&text).unwrap().records["a"], r);
    }

    #[test]
    fn empty_file_has_no_records() {
        let loaded = parse(b"").unwrap();
        assert!(loaded.records.is_empty());
        assert!(!loaded.needs_compaction());
    }

    #[test]
    fn an_unreadable_header_is_refused_even_without_a_final_newline() {
        // Not a cut copy of our header (that is ASCII): a foreign file, which must
        // not be taken for torn and overwritten.
        let e = parse(b"\xff\xfe not ours").unwrap_err();
        assert!(e.to_string().starts_with("r.csv:1: "), "{e}");
        let loaded = parse(b"job_id,sta").unwrap();
        assert!(loaded.torn && loaded.records.is_empty());
    }
}
