//! `veo-batch report`: the review gallery of a batch, one self-contained HTML page
//! beside its results file (`results/NAME.html`), which `run` also refreshes at the
//! end of every run. Reads the results file (and the manifest, when known); sends
//! nothing.
//!
//! The page loads nothing from the network: its style and script are inline, allowed
//! by their hashes in its Content-Security-Policy, and videos are files named by
//! URLs relative to the page. The header's strings go through askama's HTML
//! escaping (`page.html`); the cards are data, one compact JSON block ([`data`])
//! that the page's script shows a screenful at a time, writing every text as text.
//! Cards are encoded one at a time straight into the file, so a batch of 100,000
//! jobs never holds its page in memory.
//!
//! The page is veo-batch's own file: it names its maker in a `generator` meta tag,
//! and a file at its path without that tag is never replaced. It also carries a
//! hash of what it was made from (results file, manifest, places, version), so a
//! run that changed nothing leaves it as it is.

mod data;
mod links;
mod view;

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context as _;
use askama::Template;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Listed, Loaded, Located, Record};
use crate::cost::PriceTable;
use crate::manifest::{Job, Manifest};

use view::{CardSource, Header, PageDirs};

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The page's Content-Security-Policy: nothing from anywhere but its own inline
/// style and script (by hash, so injected markup could run nothing even if it got
/// past the escaping) and media and images from files.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         media-src 'self' file:; img-src 'self' file: data:; base-uri 'none'; form-action 'none'",
        hash(JS),
        hash(CSS)
    )
});

#[derive(Template)]
#[template(path = "page.html")]
struct Page<'a> {
    header: &'a Header,
    cards: Cards<'a>,
    inputs: &'a str,
    csp: &'a str,
    css: &'a str,
    js: &'a str,
    version: &'a str,
}

/// A results file as read: keyed by id (as the page's unit tests build it), a list
/// in the order the jobs first appear, or where each job's last row is
/// ([`Located`], as `report` and the end of a run read it: each record is read back
/// when its card is drawn, so the batch's prompts, URLs and paths are never all
/// held at once).
#[derive(Clone, Copy)]
pub(crate) enum Records<'a> {
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the page's unit tests build their batches as tables"
        )
    )]
    Table(&'a Loaded),
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the page's unit tests compare a list with a located file"
        )
    )]
    List(&'a Listed),
    Located(&'a Located),
}

/// Why a page could not be drawn: its results file no longer reads back.
type Failed = anyhow::Error;

impl<'a> Records<'a> {
    /// The last record of job `id` (a located file's are read back instead, by
    /// [`Batch::each`]).
    fn get(self, id: &str) -> Option<&'a Record> {
        match self {
            Records::Table(t) => t.records.get(id),
            Records::List(l) => l.get(id),
            Records::Located(_) => None,
        }
    }

    /// Every job's record, in the order the jobs first appear (of a table or list).
    fn in_order(self) -> Box<dyn Iterator<Item = &'a Record> + 'a> {
        match self {
            Records::Table(t) => Box::new(t.order.iter().filter_map(|id| t.records.get(id))),
            Records::List(l) => Box::new(l.records.iter()),
            Records::Located(_) => Box::new(std::iter::empty()),
        }
    }
}

/// A batch as the page shows it.
pub(crate) struct Batch<'a> {
    pub name: &'a str,
    /// The manifest's jobs, in order; without them, the results file's order.
    pub jobs: Option<&'a [Job]>,
    pub manifest: Option<&'a Path>,
    pub records: Records<'a>,
    pub results: &'a Path,
    pub prices: PriceTable,
}

impl<'a> Batch<'a> {
    fn new(
        name: &'a str,
        manifest: Option<&'a Manifest>,
        records: Records<'a>,
        results: &'a Path,
    ) -> Batch<'a> {
        Batch {
            name,
            jobs: manifest.map(|m| m.jobs.as_slice()),
            manifest: manifest.map(|m| m.path.as_path()),
            records,
            results,
            prices: manifest.map(|m| m.prices).unwrap_or_default(),
        }
    }

    /// Calls `each` with every job the page shows, in its order: the manifest's jobs
    /// with their records, or without the manifest every record in the results
    /// file's order. A located file's records are read back one at a time.
    fn each(
        &self,
        mut each: impl FnMut(CardSource<'_>) -> Result<(), Failed>,
    ) -> Result<(), Failed> {
        match (self.jobs, self.records) {
            (Some(jobs), Records::Located(located)) => {
                let mut job = jobs.iter();
                located
                    .reader()?
                    .each(
                        jobs.iter().map(|j| located.get(&j.id)),
                        |record| match job.next() {
                            Some(j) => each(CardSource {
                                id: &j.id,
                                job: Some(j),
                                record,
                            }),
                            None => Ok(()),
                        },
                    )
            }
            (None, Records::Located(located)) => {
                located
                    .reader()?
                    .each(located.jobs.iter().map(Some), |record| match record {
                        Some(r) => each(CardSource {
                            id: &r.job_id,
                            job: None,
                            record: Some(r),
                        }),
                        None => Ok(()),
                    })
            }
            (Some(jobs), records) => jobs.iter().try_for_each(|j| {
                each(CardSource {
                    id: &j.id,
                    job: Some(j),
                    record: records.get(&j.id),
                })
            }),
            (None, records) => records.in_order().try_for_each(|r| {
                each(CardSource {
                    id: &r.job_id,
                    job: None,
                    record: Some(r),
                })
            }),
        }
    }
}

/// The cards' data, encoded one by one as the page is written.
struct Cards<'a> {
    batch: &'a Batch<'a>,
    place: &'a PageDirs,
    /// Why the cards stopped, when a record did not read back: a `fmt::Error`
    /// carries no message, so it waits here for [`render`].
    failed: std::cell::RefCell<Option<Failed>>,
}

impl fmt::Display for Cards<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoder = data::Encoder::new();
        encoder.head(f)?;
        let drawn = self.batch.each(|entry| {
            let card = view::card(entry, self.place, &self.batch.prices);
            encoder
                .card(&card, f)
                .map_err(|_| anyhow::anyhow!("failed to write a card"))
        });
        if let Err(e) = drawn {
            *self.failed.borrow_mut() = Some(e);
            return Err(fmt::Error);
        }
        encoder.tail(f)
    }
}

/// How a page veo-batch wrote begins: its `generator` tag.
const GENERATOR: &str = "<meta name=\"generator\" content=\"veo-batch ";

/// The tag that carries the hash of a page's inputs.
const INPUTS: &str = "<meta name=\"veo-batch-inputs\" content=\"";

/// What is at a page's path before it is written.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    /// A page veo-batch wrote, made from inputs of this hash (empty when it does
    /// not say).
    Ours(String),
    /// Some other file, which is not ours to replace.
    Foreign,
}

/// Reads the head of the file at `out`: the tags come in its first lines.
fn existing(out: &Path) -> std::io::Result<Existing> {
    let file = match File::open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(e),
    };
    let mut head = Vec::with_capacity(4096);
    file.take(4096).read_to_end(&mut head)?;
    let head = String::from_utf8_lossy(&head);
    if !head.contains(GENERATOR) {
        return Ok(Existing::Foreign);
    }
    let hash = head
        .split_once(INPUTS)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(hash, _)| hash.to_owned())
        .unwrap_or_default();
    Ok(Existing::Ours(hash))
}

/// The hash of everything the page at `out` of the batch of `results` and
/// `manifest` shows: the results file's and the manifest's bytes, where the page, the results file and the
/// current folder are (the videos' links are relative to them), and the version
/// that renders it. The time the page was made is left out: it changes nothing
/// the page shows about the batch.
fn inputs_hash(
    out: &Path,
    place: &PageDirs,
    results: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(out.as_os_str().as_encoded_bytes());
    field(place.cwd.as_os_str().as_encoded_bytes());
    field(place.results_dir.as_os_str().as_encoded_bytes());
    field(results.as_os_str().as_encoded_bytes());
    // The batch's name and prices come from the manifest's bytes, or else the
    // results file's name and the defaults.
    field(manifest.map_or(&[][..], |m| m.as_os_str().as_encoded_bytes()));
    for file in std::iter::once(results).chain(manifest) {
        let mut f =
            File::open(file).with_context(|| format!("failed to read `{}`", file.display()))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("failed to read `{}`", file.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update(b"\0end");
    }
    Ok(h.finalize().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// Where the page of results file `results` goes by default: beside it, `NAME.html`.
pub fn page_path(results: &Path) -> PathBuf {
    results.with_extension("html")
}

/// Where the page `out` of the results file `results` is, made absolute, and what
/// its cards need to know of the folders.
fn places(out: &Path, results: &Path) -> anyhow::Result<(PathBuf, PageDirs)> {
    let cwd = std::env::current_dir().context("failed to read the current folder")?;
    let out_abs = links::absolute(out, &cwd);
    let page_dir = out_abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let results_abs = links::absolute(results, &cwd);
    let place = PageDirs {
        page_dir,
        results_dir: results_abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        cwd,
    };
    Ok((out_abs, place))
}

/// True when the page at `out` is veo-batch's, made from the inputs it would be
/// made from now: nothing to write. A file there that veo-batch did not write is
/// an error (see [`write`]).
fn unchanged(out: &Path, results: &Path, manifest: Option<&Path>) -> anyhow::Result<bool> {
    let before = existing(out)
        .with_context(|| format!("failed to write the report page `{}`", out.display()))?;
    match before {
        Existing::Nothing => Ok(false),
        Existing::Foreign => Err(foreign(out)),
        Existing::Ours(hash) => {
            let (out_abs, place) = places(out, results)?;
            Ok(hash == inputs_hash(&out_abs, &place, results, manifest)?)
        }
    }
}

fn foreign(out: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "`{}` is not a page veo-batch wrote (it has no `<meta name=\"generator\" content=\"veo-batch ...\">`): \
         not replacing it; move it away, or write the page elsewhere with --out",
        out.display()
    )
}

/// Writes the page of `batch` to `out`, atomically ([`crate::durable::replace`]): a
/// reader never sees half a page. A page made from the same inputs is left as it
/// is; a file at `out` that veo-batch did not write is refused, never replaced.
pub(crate) fn write(out: &Path, batch: &Batch<'_>) -> anyhow::Result<()> {
    let (out_abs, place) = places(out, batch.results)?;
    let page_dir = place.page_dir.clone();
    let before = existing(out)
        .with_context(|| format!("failed to write the report page `{}`", out.display()))?;
    if before == Existing::Foreign {
        return Err(foreign(out));
    }
    let inputs = inputs_hash(&out_abs, &place, batch.results, batch.manifest)?;
    if before == Existing::Ours(inputs.clone()) {
        return Ok(());
    }
    std::fs::create_dir_all(&page_dir)
        .with_context(|| format!("failed to create folder `{}`", page_dir.display()))?;
    let made = crate::checkpoint::now();
    let written = crate::durable::replace(out, |mut w| {
        render(&mut w, batch, &place, &made, &inputs)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
    });
    written.with_context(|| format!("failed to write the report page `{}`", out.display()))
}

/// Renders the page of `batch`, made at `made` (RFC 3339) from inputs of hash
/// `inputs`, into `w`.
fn render(
    w: &mut impl std::io::Write,
    batch: &Batch<'_>,
    place: &PageDirs,
    made: &str,
    inputs: &str,
) -> std::io::Result<()> {
    let mut tally = view::Tally::default();
    batch
        .each(|e| {
            tally.add(&e, &batch.prices);
            Ok(())
        })
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let mut header = tally.header(&batch.prices);
    header.name = batch.name.to_owned();
    header.results = batch.results.display().to_string();
    header.manifest = batch.manifest.map(|m| m.display().to_string());
    header.made = view::show_time(made);
    header.default_prices = batch.jobs.is_none();
    let cards = Cards {
        batch,
        place,
        failed: std::cell::RefCell::new(None),
    };
    let page = Page {
        header: &header,
        cards,
        inputs,
        csp: &CSP,
        css: CSS,
        js: JS,
        version: env!("CARGO_PKG_VERSION"),
    };
    let written = page.write_into(w);
    if let Some(e) = page.cards.failed.take() {
        return Err(std::io::Error::other(format!("{e:#}")));
    }
    written
}

/// Writes the page of a batch read from `results` (and its manifest, when known)
/// to `out`, by default beside the results file; gives the page's path.
pub fn write_for(
    manifest: Option<&Manifest>,
    results: &Path,
    out: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let out = out.unwrap_or_else(|| page_path(results));
    if unchanged(&out, results, manifest.map(|m| m.path.as_path()))? {
        return Ok(out);
    }
    let located = crate::checkpoint::load_located(results)?
        .with_context(|| format!("no results file at `{}`", results.display()))?;
    for w in &located.warnings {
        eprintln!("warning: {w}");
    }
    let name = batch_name(manifest, results);
    let batch = Batch::new(&name, manifest, Records::Located(&located), results);
    write(&out, &batch)?;
    Ok(out)
}

fn batch_name(manifest: Option<&Manifest>, results: &Path) -> String {
    match manifest {
        Some(m) => m.name.clone(),
        None => results
            .file_stem()
            .map_or_else(|| "batch".into(), |s| s.to_string_lossy().into_owned()),
    }
}

/// The page `run` leaves at the end: of the manifest at `manifest` (read again, as
/// the run's own copy of its jobs is gone; without it if it no longer reads) and
/// the results file `results`. Returns where it is.
pub fn after_run(manifest_path: &Path, results: &Path) -> anyhow::Result<PathBuf> {
    // A run that changed nothing finds that out before reading anything again.
    let page = page_path(results);
    if unchanged(&page, results, Some(manifest_path))? {
        return Ok(page);
    }
    let manifest = crate::manifest::load_with(
        manifest_path,
        crate::manifest::LoadOptions::sending_nothing(),
    )
    .ok();
    let located = crate::checkpoint::load_located(results)?
        .with_context(|| format!("no results file at `{}`", results.display()))?;
    let name = batch_name(manifest.as_ref(), results);
    let out = page_path(results);
    let batch = Batch::new(
        &name,
        manifest.as_ref(),
        Records::Located(&located),
        results,
    );
    write(&out, &batch)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
