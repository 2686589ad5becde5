//! `veo-batch report`: the review gallery of a batch, one self-contained HTML page
//! beside its results file (`results/NAME.html`), which `run` also refreshes at the
//! end of every run. Reads the results file (and the manifest, when known); sends
//! nothing.
//!
//! The page loads nothing from the network: its style and script are inline, allowed
//! by their hashes in its Content-Security-Policy, and videos are files named by
//! URLs relative to the page. Every user-written string goes through askama's HTML
//! escaping (`page.html`, `card.html`); only the page's own style, script and the
//! cards it rendered itself are written unescaped. Cards are rendered one at a time
//! straight into the file, so a batch of 100,000 jobs never holds its page in memory.

mod links;
mod view;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use anyhow::Context as _;
use askama::Template;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Listed, Loaded, Record};
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
    csp: &'a str,
    css: &'a str,
    js: &'a str,
    version: &'a str,
}

/// A results file as read: keyed by id (as `status` reads it), or a list in the
/// order the jobs first appear (as a run reads it, without a copy of every id).
#[derive(Clone, Copy)]
pub(crate) enum Records<'a> {
    Table(&'a Loaded),
    List(&'a Listed),
}

impl<'a> Records<'a> {
    fn get(self, id: &str) -> Option<&'a Record> {
        match self {
            Records::Table(t) => t.records.get(id),
            Records::List(l) => l.get(id),
        }
    }

    /// Every job's record, in the order the jobs first appear.
    fn in_order(self) -> Box<dyn Iterator<Item = &'a Record> + 'a> {
        match self {
            Records::Table(t) => Box::new(t.order.iter().filter_map(|id| t.records.get(id))),
            Records::List(l) => Box::new(l.records.iter()),
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

    fn entries(&self) -> Box<dyn Iterator<Item = CardSource<'a>> + '_> {
        let records = self.records;
        match self.jobs {
            Some(jobs) => Box::new(jobs.iter().map(move |j| CardSource {
                id: &j.id,
                job: Some(j),
                record: records.get(&j.id),
            })),
            None => Box::new(records.in_order().map(|r| CardSource {
                id: &r.job_id,
                job: None,
                record: Some(r),
            })),
        }
    }
}

/// The cards, rendered one by one as the page is written.
struct Cards<'a> {
    batch: &'a Batch<'a>,
    place: &'a PageDirs,
}

impl fmt::Display for Cards<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.batch.entries().enumerate() {
            let card = view::card(i + 1, entry, self.place, &self.batch.prices);
            card.render_into(f).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

/// Where the page of results file `results` goes by default: beside it, `NAME.html`.
pub fn page_path(results: &Path) -> PathBuf {
    results.with_extension("html")
}

/// Writes the page of `batch` to `out`, atomically ([`crate::durable::replace`]): a
/// reader never sees half a page.
pub(crate) fn write(out: &Path, batch: &Batch<'_>) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("failed to read the current folder")?;
    let out_abs = links::absolute(out, &cwd);
    let page_dir = out_abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let results_abs = links::absolute(batch.results, &cwd);
    let place = PageDirs {
        page_dir: page_dir.clone(),
        results_dir: results_abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        cwd,
    };
    std::fs::create_dir_all(&page_dir)
        .with_context(|| format!("failed to create folder `{}`", page_dir.display()))?;
    let made = crate::checkpoint::now();
    let written = crate::durable::replace(out, |mut w| {
        render(&mut w, batch, &place, &made).map_err(|e| std::io::Error::other(format!("{e:#}")))
    });
    written.with_context(|| format!("failed to write the report page `{}`", out.display()))
}

/// Renders the page of `batch`, made at `made` (RFC 3339), into `w`.
fn render(
    w: &mut impl std::io::Write,
    batch: &Batch<'_>,
    place: &PageDirs,
    made: &str,
) -> std::io::Result<()> {
    let mut header = view::header(batch.entries(), &batch.prices);
    header.name = batch.name.to_owned();
    header.results = batch.results.display().to_string();
    header.manifest = batch.manifest.map(|m| m.display().to_string());
    header.made = view::show_time(made);
    header.default_prices = batch.jobs.is_none();
    let page = Page {
        header: &header,
        cards: Cards { batch, place },
        csp: &CSP,
        css: CSS,
        js: JS,
        version: env!("CARGO_PKG_VERSION"),
    };
    page.write_into(w)
}

/// Writes the page of a batch read from `results` (and its manifest, when known)
/// to `out`, by default beside the results file; gives the page's path.
pub fn write_for(
    manifest: Option<&Manifest>,
    results: &Path,
    loaded: &crate::checkpoint::Loaded,
    out: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let name = batch_name(manifest, results);
    let out = out.unwrap_or_else(|| page_path(results));
    let batch = Batch::new(&name, manifest, Records::Table(loaded), results);
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
pub fn after_run(manifest: &Path, results: &Path) -> anyhow::Result<PathBuf> {
    let manifest =
        crate::manifest::load_with(manifest, crate::manifest::LoadOptions::sending_nothing()).ok();
    let jobs = manifest.as_ref().map_or(0, |m| m.jobs.len());
    let listed = crate::checkpoint::load_listed(results, jobs)?
        .with_context(|| format!("no results file at `{}`", results.display()))?;
    let name = batch_name(manifest.as_ref(), results);
    let out = page_path(results);
    let batch = Batch::new(&name, manifest.as_ref(), Records::List(&listed), results);
    write(&out, &batch)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
