//! The page's data: a [`Card`] per job, built from its last results record and, when
//! the manifest is known, its job; and the [`Header`] of counts, credits and times.
//!
//! Everything here is plain text; the templates escape it. A new thing to show on
//! a card is one line in [`card`]: a [`Fact`] pushed onto the card's list.

use std::path::{Path, PathBuf};

use crate::checkpoint::plan::Standing;
use crate::checkpoint::{Record, State};
use crate::cost::{Count, Credits, Dollars, PriceTable};
use crate::manifest::{Job, Upgrade};
use crate::request::{Model, Resolution};
use crate::summary::{self, JobRef};

use super::links;

/// One job as the page sees it: its id, its manifest job when known, its last record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CardSource<'a> {
    pub id: &'a str,
    pub job: Option<&'a Job>,
    pub record: Option<&'a Record>,
}

impl CardSource<'_> {
    pub fn standing(&self) -> Standing {
        let job = match self.job {
            Some(job) => JobRef::from(job),
            None => JobRef {
                id: self.id,
                fingerprint: None,
                wants: None,
            },
        };
        summary::standing_of(job, self.record)
    }

    /// The record, when it is of the job's current request (not of an edited one).
    fn current(&self) -> Option<&Record> {
        self.record
            .filter(|r| self.job.is_none_or(|j| j.fingerprint == r.fingerprint))
    }

    /// Credits this job costs when it runs, at `prices`.
    pub fn estimate(&self, prices: &PriceTable) -> f64 {
        match self.job {
            Some(job) => prices.job(job).unwrap_or(0.0),
            None => self.record.map_or(0.0, |r| recorded_generation(r, prices)),
        }
    }

    /// Credits this job has cost so far: its generation once the service made a
    /// task, plus its upgrade once the upgraded file exists. A job in doubt may have
    /// cost its generation too; that is not counted, as it is not known.
    pub fn spent(&self, prices: &PriceTable) -> f64 {
        // A failed task costs what the results file records for it: 0 unless the
        // balance showed it billed (`spend::failed_task_cost`), never a price
        // guessed here.
        if self.standing() == Standing::Failed {
            return self.record.map_or(0.0, |r| r.credits);
        }
        // What the results file records the job's calls committed, when it does.
        if let Some(r) = self.record.filter(|r| r.credits > 0.0) {
            return r.credits;
        }
        let Some(r) = self.record.filter(|r| r.task_id.is_some()) else {
            return 0.0;
        };
        let generation = match self.job {
            Some(job) => prices.job_generation(job).unwrap_or(0.0),
            None => recorded_generation(r, prices),
        };
        let upgrade = match (r.upgrade_urls.is_empty(), self.upgrade(r)) {
            (false, Some(Upgrade::Hd1080)) => prices.upgrade_1080p,
            (false, Some(Upgrade::Uhd4k)) => prices.upgrade_4k,
            _ => 0.0,
        };
        generation + upgrade
    }

    /// The job's upgrade: from the manifest, or else read off the names of the
    /// files the run saved (`<id>-1080p.mp4`, `<id>-4k.mp4`).
    fn upgrade(&self, r: &Record) -> Option<Upgrade> {
        if let Some(job) = self.job {
            return job.upgrade;
        }
        r.upgrade
            .or_else(|| r.video_paths.iter().find_map(|p| upgrade_in_name(p)))
    }
}

/// The generation price of what a record says was asked (model and resolution).
fn recorded_generation(r: &Record, prices: &PriceTable) -> f64 {
    let resolution = Resolution::parse(&r.resolution).unwrap_or_default();
    Model::parse(&r.model)
        .and_then(|m| prices.generation(m, resolution))
        .unwrap_or(0.0)
}

fn upgrade_in_name(path: &str) -> Option<Upgrade> {
    let stem = Path::new(path).file_stem()?.to_str()?;
    // `<id>-4k.mp4`, or `<id>-4k~2.mp4` for a second result.
    let stem = match stem.rsplit_once('~') {
        Some((head, n)) if n.parse::<u32>().is_ok() => head,
        _ => stem,
    };
    if stem.ends_with("-1080p") {
        Some(Upgrade::Hd1080)
    } else if stem.ends_with("-4k") {
        Some(Upgrade::Uhd4k)
    } else {
        None
    }
}

/// How a state looks: a key for styles and filters, a word, and an icon, so that
/// colour is never the only sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Look {
    pub key: &'static str,
    pub label: &'static str,
    pub icon: &'static str,
}

/// Every state, in the order the header counts them.
pub(crate) const STANDINGS: [Standing; 10] = [
    Standing::Succeeded,
    Standing::VideoMissing,
    Standing::UpgradeNotMade,
    Standing::Failed,
    Standing::Blocked,
    Standing::NotDownloaded,
    Standing::DownloadFailed,
    Standing::InDoubt,
    Standing::Running,
    Standing::NotStarted,
];

pub(crate) fn look(s: Standing) -> Look {
    let (key, label, icon) = match s {
        Standing::Succeeded => ("succeeded", "succeeded", "✓"),
        Standing::Failed => ("failed", "failed", "✕"),
        Standing::NotDownloaded => ("not-downloaded", "not downloaded", "↓"),
        Standing::DownloadFailed => ("download-failed", "download failed", "⚠"),
        Standing::InDoubt => ("in-doubt", "in doubt", "?"),
        Standing::Running => ("running", "running", "◔"),
        Standing::NotStarted => ("not-started", "not started", "○"),
        Standing::Blocked => ("blocked", "blocked", "⊘"),
        Standing::VideoMissing => ("video-missing", "video missing", "↓"),
        Standing::UpgradeNotMade => ("upgrade-not-made", "upgrade not made", "⚠"),
    };
    Look { key, label, icon }
}

/// One labelled line of a card's details: one value, or several (images).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fact {
    pub label: &'static str,
    pub items: Vec<Item>,
    /// Ids, task ids: in a fixed-width face.
    pub code: bool,
}

/// One value of a [`Fact`]; with `href`, a link (which loads nothing until clicked).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub text: String,
    pub href: Option<String>,
}

impl Fact {
    pub fn text(label: &'static str, text: impl Into<String>) -> Fact {
        Fact {
            label,
            items: vec![Item {
                text: text.into(),
                href: None,
            }],
            code: false,
        }
    }

    pub fn code(label: &'static str, text: impl Into<String>) -> Fact {
        Fact {
            code: true,
            ..Fact::text(label, text)
        }
    }

    /// A list of URLs, each a link; an entry that is not an http(s) URL (a local
    /// image's path, relative to where the run was started) is shown as text.
    pub fn links(label: &'static str, urls: &[String]) -> Fact {
        Fact {
            label,
            items: urls
                .iter()
                .map(|u| Item {
                    text: u.clone(),
                    href: (!crate::manifest::images::is_local(u)).then(|| u.clone()),
                })
                .collect(),
            code: false,
        }
    }
}

/// A downloaded video file, as the card offers it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Video {
    /// URL relative to the page.
    pub src: String,
    /// Which file this is: `video`, `original`, `1080p`, `4k`, `take 2`...
    pub label: String,
    /// The file's name, as recorded.
    pub name: String,
}

/// One job's card.
#[derive(Debug)]
pub(crate) struct Card {
    pub id: String,
    pub look: Look,
    pub prompt: String,
    /// What went wrong, or what is left to do.
    pub note: Option<String>,
    /// The downloaded files, the one shown first.
    pub videos: Vec<Video>,
    /// Result URLs on the service, when no file was downloaded.
    pub remote: Vec<String>,
    pub facts: Vec<Fact>,
    /// When it finished (or was last touched), RFC 3339: the time sort key.
    pub time: String,
    /// Whether the video is portrait (9:16), for its frame.
    pub portrait: bool,
}

/// What the cards need to know about where the page is.
#[derive(Debug, Clone)]
pub(crate) struct PageDirs {
    /// The folder the page is written to (absolute).
    pub page_dir: PathBuf,
    /// The current folder (absolute), against which recorded paths are read.
    pub cwd: PathBuf,
    /// The results file's folder (absolute).
    pub results_dir: PathBuf,
}

/// The card of `entry`.
pub(crate) fn card(entry: CardSource<'_>, place: &PageDirs, prices: &PriceTable) -> Card {
    let standing = entry.standing();
    let record = entry.record;
    let job = entry.job;
    let request = job.map(|j| &j.request);
    let mut facts = Vec::new();

    let model = request.map_or_else(
        || record.map(|r| r.model.clone()).unwrap_or_default(),
        |q| q.model.as_str().to_owned(),
    );
    let aspect = request.map_or_else(
        || record.map(|r| r.aspect_ratio.clone()).unwrap_or_default(),
        |q| q.aspect_ratio.as_str().to_owned(),
    );
    // An extend is sent to its own endpoint, not as a generation type.
    let extends = match job {
        Some(j) => j.extend.is_some(),
        None => record.is_some_and(|r| !r.extends.is_empty()),
    };
    let mode = if extends {
        "EXTEND".to_owned()
    } else {
        request.map_or_else(
            || {
                record
                    .map(|r| r.generation_type.clone())
                    .unwrap_or_default()
            },
            |q| q.generation_type.as_str().to_owned(),
        )
    };
    // What the service makes when the request leaves them out: 720p, 8 seconds.
    let resolution = request.map_or_else(
        || record.map(|r| r.resolution.clone()).unwrap_or_default(),
        |q| q.resolution.unwrap_or_default().as_str().to_owned(),
    );
    let duration = request.map_or_else(
        || record.map(|r| r.duration.clone()).unwrap_or_default(),
        |q| q.duration.unwrap_or(8).to_string(),
    );
    if !model.is_empty() {
        facts.push(Fact::text("Model", model));
    }
    if !aspect.is_empty() {
        facts.push(Fact::text("Aspect ratio", aspect.clone()));
    }
    if !mode.is_empty() {
        facts.push(Fact::code("Mode", mode));
    }
    if !resolution.is_empty() {
        facts.push(Fact::text("Resolution", resolution));
    }
    if !duration.is_empty() {
        facts.push(Fact::text("Duration", format!("{duration} s")));
    }
    // An extend's card names the job whose video it continues (its kept file is the
    // stitched whole, so the parent's card is where the first part shows alone).
    let continues = job
        .and_then(|j| j.extend.as_ref())
        .map(|e| e.parent.clone())
        .or_else(|| record.map(|r| r.extends.clone()))
        .filter(|p| !p.is_empty());
    if let Some(parent) = continues {
        facts.push(Fact::text("Continues", parent));
    }
    if let Some(q) = request {
        if let Some(seed) = q.seeds {
            facts.push(Fact::text("Seed", seed.to_string()));
        }
        if !q.image_urls.is_empty() {
            facts.push(Fact::links("Images", &q.image_urls));
        }
        if let Some(w) = &q.watermark {
            facts.push(Fact::text("Watermark", w.clone()));
        }
    }
    if let Some(j) = job.filter(|j| j.upgrade.is_some()) {
        let kept = if j.keep_original {
            ", original kept"
        } else {
            ""
        };
        let up = j.upgrade.map_or("", Upgrade::as_str);
        facts.push(Fact::text("Upgrade", format!("{up}{kept}")));
    }
    if let Some(r) = record {
        if let Some(task) = &r.task_id {
            facts.push(Fact::code("Task", task.clone()));
        }
        if r.attempts > 1 {
            facts.push(Fact::text("Attempts", r.attempts.to_string()));
        }
        if let Some(at) = &r.submitted_at {
            facts.push(Fact::text("Submitted", show_time(at)));
        }
        if let Some(at) = &r.finished_at {
            facts.push(Fact::text("Finished", show_time(at)));
        }
        if let (Some(a), Some(b)) = (&r.submitted_at, &r.finished_at)
            && let Some(took) = between(a, b)
        {
            facts.push(Fact::text("Took", took));
        }
    }
    let spent = entry.spent(prices);
    let cost = if standing == Standing::Failed {
        "none (the service refunds a failed task)".to_owned()
    } else if spent > 0.0 {
        format!("{} credits", Credits(spent))
    } else {
        format!("{} credits (estimated)", Credits(entry.estimate(prices)))
    };
    facts.push(Fact::text("Cost", cost));

    let (videos, remote) = match entry.current() {
        Some(r) => (videos(r, &entry, place), remote(r, standing)),
        None => (Vec::new(), Vec::new()),
    };
    let prompt = request.map_or_else(
        || record.map(|r| r.prompt.clone()).unwrap_or_default(),
        |q| q.prompt.clone(),
    );
    let time = record
        .map(|r| r.finished_at.as_deref().unwrap_or(&r.updated_at).to_owned())
        .unwrap_or_default();
    Card {
        id: entry.id.to_owned(),
        look: look(standing),
        prompt,
        note: note(&entry, standing),
        videos,
        remote,
        facts,
        time,
        portrait: aspect == "9:16",
    }
}

/// What a card says beside its state: the service's reason and what to do.
fn note(entry: &CardSource<'_>, standing: Standing) -> Option<String> {
    let r = entry.record;
    let why = r.map(summary::reason);
    match standing {
        Standing::Succeeded => r
            .filter(|r| r.upgrade_refused())
            .and_then(|r| r.error_message.clone()),
        Standing::Failed => Some(format!(
            "{}. Fix the cause, then run again with --retry-failed.",
            why.unwrap_or_default()
        )),
        Standing::VideoMissing => Some(
            "Recorded as downloaded, but its video file is gone: run the same command again \
             to download it again (it is not generated again)."
                .into(),
        ),
        Standing::UpgradeNotMade => Some(
            "The video is made and kept; the service refused its upgrade for want of \
             credits: top up, then run the same command again to make the upgrade (the \
             video is not generated again)."
                .into(),
        ),
        Standing::NotDownloaded => Some(
            "Made and paid for, not downloaded yet: run the same command again (without \
             --no-download) to download it."
                .into(),
        ),
        Standing::DownloadFailed => Some(format!(
            "{}. The video is paid for: run the same command again to download it.",
            why.unwrap_or_default()
        )),
        Standing::InDoubt => Some(format!(
            "{}. A task may exist and be billed: check the kie.ai logs, then --resubmit-in-doubt sends it again.",
            why.unwrap_or_default()
        )),
        Standing::Running => {
            Some("Still running on the service: run the same command again to collect it.".into())
        }
        Standing::Blocked => Some(format!(
            "Not sent: {}. Once that job succeeds (--retry-failed retries it), this one follows.",
            r.and_then(|r| r.error_message.clone()).unwrap_or_default()
        )),
        Standing::NotStarted => Some(match r {
            Some(_) if entry.current().is_none() => {
                "The manifest changed this job since it ran: the next run sends it again.".into()
            }
            Some(r) if r.state() == State::Pending && r.error_message.is_some() => format!(
                "Not sent yet: {}. The next run tries again.",
                summary::reason(r)
            ),
            _ => "Not sent yet: the next run sends it.".into(),
        }),
    }
}

/// The downloaded files of record `r`, the upgraded one first, each labelled.
fn videos(r: &Record, entry: &CardSource<'_>, place: &PageDirs) -> Vec<Video> {
    let upgrade = entry.upgrade(r);
    let upgraded = !r.upgrade_urls.is_empty();
    // The run saves the base files first, then the upgraded ones (see
    // runner::job's `files`); the base ones only without an upgrade, or when the job
    // keeps the original.
    let base = if !upgraded {
        r.video_paths.len()
    } else if entry.job.is_some_and(|j| j.keep_original)
        || r.video_paths.len() >= r.video_urls.len() + r.upgrade_urls.len()
    {
        r.video_urls.len()
    } else {
        0
    };
    let mut files: Vec<Video> = r
        .video_paths
        .iter()
        .enumerate()
        .map(|(i, recorded)| {
            let label = if i < base {
                let word = if upgraded { "original" } else { "video" };
                take(word, i)
            } else {
                let word = upgrade
                    .or_else(|| upgrade_in_name(recorded))
                    .map_or("upgraded", Upgrade::as_str);
                take(word, i - base)
            };
            // A bucket batch's page links its objects by presigned URL.
            if let Some(link) = recorded
                .strip_prefix("https://")
                .or_else(|| recorded.strip_prefix("http://"))
            {
                let path = link.split(['?', '#']).next().unwrap_or_default();
                return Video {
                    src: recorded.clone(),
                    label,
                    name: path.rsplit('/').next().unwrap_or(path).to_owned(),
                };
            }
            let at = links::locate(recorded, &place.cwd, &place.results_dir);
            Video {
                src: links::relative_url(&place.page_dir, &at),
                label,
                name: Path::new(recorded)
                    .file_name()
                    .map_or_else(|| recorded.clone(), |n| n.to_string_lossy().into_owned()),
            }
        })
        .collect();
    if base < files.len() {
        files.rotate_left(base);
    }
    files
}

fn take(word: &str, i: usize) -> String {
    if i == 0 {
        word.to_owned()
    } else {
        format!("{word} {}", i + 1)
    }
}

/// Result URLs to offer as links when the files are not on disk.
fn remote(r: &Record, standing: Standing) -> Vec<String> {
    let done = matches!(standing, Standing::Succeeded | Standing::NotDownloaded);
    if !done || !r.video_paths.is_empty() {
        return Vec::new();
    }
    let mut urls = r.upgrade_urls.clone();
    urls.extend(r.video_urls.iter().cloned());
    urls
}

/// An RFC 3339 time as people read it: `2026-03-01 14:05:09 UTC`.
pub(crate) fn show_time(at: &str) -> String {
    match at.strip_suffix('Z') {
        Some(t) => format!("{} UTC", t.replacen('T', " ", 1)),
        None => at.replacen('T', " ", 1),
    }
}

/// The time from `a` to `b` (RFC 3339), as `4m 12s`.
pub(crate) fn between(a: &str, b: &str) -> Option<String> {
    let a = humantime::parse_rfc3339_weak(a).ok()?;
    let b = humantime::parse_rfc3339_weak(b).ok()?;
    let d = b.duration_since(a).ok()?;
    Some(humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string())
}

/// The page's header: the batch at a glance.
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub name: String,
    pub total: Count,
    /// Jobs per state, in [`STANDINGS`] order, the empty ones left out.
    pub counts: Vec<(Look, Count)>,
    pub spent: String,
    pub estimated: String,
    /// The first submission to the last finish, when anything ran.
    pub span: Option<String>,
    pub results: String,
    pub manifest: Option<String>,
    /// When the page was made.
    pub made: String,
    /// The manifest's own prices, or the defaults (no manifest given).
    pub default_prices: bool,
    /// Jobs per state by the account that made their task (`18 succeeded, 2
    /// failed`); shown only when there is more than one.
    pub accounts: Vec<(String, String)>,
}

/// The header's figures, added up one job at a time (the records of a big batch
/// are read back one by one and not kept, so the times and accounts are copied).
#[derive(Default)]
pub(crate) struct Tally {
    counts: [usize; STANDINGS.len()],
    by_account: std::collections::BTreeMap<String, [usize; STANDINGS.len()]>,
    spent: f64,
    estimated: f64,
    first: Option<String>,
    last: Option<String>,
}

impl Tally {
    pub fn add(&mut self, e: &CardSource<'_>, prices: &PriceTable) {
        let s = e.standing();
        if let Some(i) = STANDINGS.iter().position(|x| *x == s) {
            self.counts[i] += 1;
            if let Some(account) = e.record.and_then(summary::account_of) {
                if let Some(n) = self.by_account.get_mut(account) {
                    n[i] += 1;
                } else {
                    let mut n = [0; STANDINGS.len()];
                    n[i] = 1;
                    self.by_account.insert(account.to_owned(), n);
                }
            }
        }
        self.spent += e.spent(prices);
        self.estimated += e.estimate(prices);
        if let Some(r) = e.record {
            if let Some(at) = r.submitted_at.as_deref()
                && self.first.as_deref().is_none_or(|f| at < f)
            {
                self.first = Some(at.to_owned());
            }
            if let Some(at) = r.finished_at.as_deref()
                && self.last.as_deref().is_none_or(|l| at > l)
            {
                self.last = Some(at.to_owned());
            }
        }
    }

    pub fn header(&self, prices: &PriceTable) -> Header {
        let Tally {
            counts,
            spent,
            estimated,
            ..
        } = *self;
        let (first, last) = (self.first.as_deref(), self.last.as_deref());
        let span = first.map(|a| {
            let b = last.unwrap_or(a);
            let took = between(a, b).map(|t| format!(" ({t})")).unwrap_or_default();
            format!("{} to {}{took}", show_time(a), show_time(b))
        });
        Header {
            total: Count(counts.iter().sum()),
            counts: STANDINGS
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (look(*s), Count(n)))
                .collect(),
            spent: format!(
                "{} credits ({})",
                Credits(spent),
                Dollars(prices.usd(spent))
            ),
            estimated: format!(
                "{} credits ({})",
                Credits(estimated),
                Dollars(prices.usd(estimated))
            ),
            span,
            accounts: if self.by_account.len() > 1 {
                self.by_account
                    .iter()
                    .map(|(account, n)| {
                        let line: Vec<String> = STANDINGS
                            .iter()
                            .zip(n)
                            .filter(|(_, n)| **n > 0)
                            .map(|(s, n)| format!("{} {}", Count(*n), look(*s).label))
                            .collect();
                        (account.clone(), line.join(", "))
                    })
                    .collect()
            } else {
                Vec::new()
            },
            ..Header::default()
        }
    }
}
