//! `veo-batch validate`: reads a manifest and either lists every problem (exit 2) or
//! prints what the batch would do and cost, or with `--emit jsonl` the exact request
//! bodies. Nothing is sent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use crate::cli::{Emit, ValidateArgs};
use crate::cost::{Estimate, credits};
use crate::exit::Exit;
use crate::manifest::{self, Manifest};
use crate::request::Resolution;
use crate::runner::spend::Kind;
use crate::units::Size;

/// Runs `validate`: a manifest with problems ends it with [`Exit::Usage`].
pub fn run(args: &ValidateArgs) -> anyhow::Result<Exit> {
    let options = super::load_options(args.max_image_size, &args.allow_images_from);
    let manifest = manifest::load_with(&args.manifest, options)?;
    let mut stderr = std::io::stderr().lock();
    for w in &manifest.warnings {
        super::warn(&w.to_string());
    }
    for h in &manifest.hints {
        let _ = writeln!(stderr, "hint: {h}");
    }
    let mut text = summary(&manifest);
    let limits = limit_lines(&manifest, args.max_credits, args.max_run_credits);
    // Up front: right under the manifest's own line.
    if let Some(first) = text.find('\n') {
        text.insert_str(first + 1, &limits);
    }
    match args.emit {
        Some(Emit::Jsonl) => {
            let _ = stderr.write_all(text.as_bytes());
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            // The body's text written directly (the same bytes as its JSON value
            // printed), into one buffer reused for every job.
            let mut line = Vec::with_capacity(1024);
            for job in &manifest.jobs {
                line.clear();
                // An extend's task is its parent's, known once that is made.
                let parent_task = job
                    .extend
                    .as_ref()
                    .map(|e| format!("(the task of job {:?})", e.parent))
                    .unwrap_or_default();
                job.write_body(&parent_task, &mut line);
                line.push(b'\n');
                // A closed pipe (`| head`) is not a manifest problem: stop quietly.
                if out.write_all(&line).is_err() {
                    return Ok(Exit::Ok);
                }
            }
            let _ = out.flush();
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut listing = text.into_bytes();
            if args.jobs || manifest.jobs.len() <= JOBS_LISTED {
                listing.extend_from_slice(job_table(&manifest).as_bytes());
            }
            // A closed pipe (`| head`) is not a manifest problem: stop quietly.
            let _ = out.write_all(&listing).and_then(|()| out.flush());
        }
    }
    Ok(Exit::Ok)
}

/// The estimate against each spending limit set (the manifest's `max_credits` or
/// `--max-credits`, and `--max-run-credits`), one line each, naming the setting.
fn limit_lines(m: &Manifest, max_credits: Option<f64>, max_run_credits: Option<f64>) -> String {
    let estimate = Estimate::of(&m.prices, &m.jobs);
    let total = estimate.total();
    let batch = max_credits.or(m.run.max_credits).map(|max| {
        (
            crate::config::credits_setting(max_credits, m.run.max_credits),
            max,
            "the batch's spend, earlier runs' included",
        )
    });
    let run = max_run_credits.map(|max| ("--max-run-credits", max, "each run's spend"));
    let mut s = String::new();
    for (setting, max, counts) in batch.into_iter().chain(run) {
        let said = if !estimate.unpriced.is_empty() {
            format!(
                "cannot be kept: the price table has no price for {} job{}; a run refuses to start (exit 2)",
                estimate.unpriced_jobs(),
                if estimate.unpriced_jobs() == 1 {
                    ""
                } else {
                    "s"
                }
            )
        } else if total > max + 1e-9 {
            format!(
                "is below the estimate ({} credits): a run stops submitting before passing it (exit 6), with jobs left unsent",
                credits(total)
            )
        } else if let Some((kind, first)) = first_reservation(m).filter(|(_, r)| *r > max + 1e-9) {
            format!(
                "keeps the estimate ({} credits), but a first {kind} task is reserved at {} credits \
                 (the highest price reported for its kind or twice its table price) until the \
                 balance tells its real price: a run sends none of that kind and stops (exit 6)",
                credits(total),
                credits(first)
            )
        } else {
            format!("keeps the estimate ({} credits)", credits(total))
        };
        let _ = writeln!(
            s,
            "spending limit: {setting} {} ({counts}) {said}",
            credits(max)
        );
    }
    s
}

/// The most one job reserves against a limit while the prices of its kinds are
/// not learned yet (a run's first task of a kind), and the kind of that job.
fn first_reservation(m: &Manifest) -> Option<(Kind, f64)> {
    m.jobs
        .iter()
        .map(|j| {
            let kind = Kind::of(j);
            let upgrade = j
                .upgrade
                .map_or(0.0, |u| Kind::upgrade(u).unlearned(&m.prices));
            (kind, kind.unlearned(&m.prices) + upgrade)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// A manifest of this many jobs or fewer lists them in its summary.
const JOBS_LISTED: usize = 20;

/// The expanded jobs, one per line: id, model, resolution, aspect ratio, and the
/// name of its video file.
fn job_table(m: &Manifest) -> String {
    let mut s = String::from("jobs:\n");
    let width = m
        .jobs
        .iter()
        .map(|j| j.id.chars().count())
        .max()
        .unwrap_or(0);
    for j in &m.jobs {
        let r = &j.request;
        let _ = writeln!(
            s,
            "  {:<width$}  {:<9}  {:<5}  {:<4}  {}.mp4{}",
            j.id,
            r.model.as_str(),
            r.resolution.unwrap_or_default().as_str(),
            r.aspect_ratio.as_str(),
            j.stem(),
            match (&j.extend, j.upgrade) {
                (Some(e), _) => format!(" (extends {})", e.parent),
                (None, Some(u)) => format!(
                    " (+{}{}.mp4)",
                    j.stem(),
                    crate::paths::upgrade_suffix(Some(u))
                ),
                (None, None) => String::new(),
            }
        );
    }
    s
}

/// The summary `validate` prints: counts by model, resolution, length, mode, aspect
/// ratio and upgrade, and the estimated cost from the manifest's price table.
pub fn summary(m: &Manifest) -> String {
    let mut by_model: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_resolution: BTreeMap<Resolution, usize> = BTreeMap::new();
    let mut by_duration: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_mode: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_ratio: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_upgrade: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &m.jobs {
        let r = &job.request;
        *by_model.entry(r.model.as_str()).or_default() += 1;
        *by_resolution
            .entry(r.resolution.unwrap_or_default())
            .or_default() += 1;
        *by_duration.entry(duration_label(r.duration)).or_default() += 1;
        *by_mode.entry(job.mode()).or_default() += 1;
        *by_ratio.entry(r.aspect_ratio.as_str()).or_default() += 1;
        if let Some(u) = job.upgrade {
            *by_upgrade.entry(u.as_str()).or_default() += 1;
        }
    }
    // In the resolutions' own order, not the spellings'.
    let by_resolution: Vec<(&str, usize)> = by_resolution
        .into_iter()
        .map(|(r, n)| (r.as_str(), n))
        .collect();
    let estimate = Estimate::of(&m.prices, &m.jobs);
    let n = m.jobs.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "manifest {}: batch {:?}, {n} job{}",
        m.path.display(),
        m.name,
        if n == 1 { "" } else { "s" }
    );
    let mut table = |title: &str, rows: &mut dyn Iterator<Item = (&str, usize)>| {
        let rows: Vec<(&str, usize)> = rows.collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(s, "{title}:");
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<width$}  {v:>6}");
        }
    };
    table("by model", &mut by_model.into_iter());
    table("by resolution", &mut by_resolution.into_iter());
    table("by length", &mut by_duration.into_iter());
    table("by generation mode", &mut by_mode.into_iter());
    table("by aspect ratio", &mut by_ratio.into_iter());
    table("upgrades", &mut by_upgrade.into_iter());
    chains(&mut s, m);
    let total = estimate.total();
    let _ = writeln!(s, "prices: {}", m.prices.describe());
    let _ = writeln!(
        s,
        "estimated cost: {} credits (${:.2}): generation {}, upgrades {}{}{}",
        credits(total),
        m.prices.usd(total),
        credits(estimate.generation),
        credits(estimate.upgrades),
        if estimate.extends > 0.0 {
            format!(", extends {}", credits(estimate.extends))
        } else {
            String::new()
        },
        estimate.unpriced_note()
    );
    local_images(&mut s, m);
    if !m.warnings.is_empty() {
        let _ = writeln!(s, "warnings: {} (printed to stderr)", m.warnings.len());
    }
    if !m.hints.is_empty() {
        let _ = writeln!(s, "hints: {} (printed to stderr)", m.hints.len());
    }
    s
}

/// The extend chains: how many videos are continued, by how many extends, and the
/// longest chain.
fn chains(s: &mut String, m: &Manifest) {
    let c = manifest::Chains::of(&m.jobs);
    if c.extends == 0 {
        return;
    }
    let _ = writeln!(
        s,
        "extend chains: {} (a generated video and its continuations), {} extend{}; the \
         longest is {} videos: {}",
        c.chains,
        c.extends,
        if c.extends == 1 { "" } else { "s" },
        c.longest,
        c.longest_ids.join(" -> ")
    );
}

/// A length as the summary shows it; the service's default is 8 s.
fn duration_label(d: Option<u8>) -> &'static str {
    match d {
        Some(4) => "4s",
        Some(6) => "6s",
        Some(8) | None => "8s",
        Some(_) => "other",
    }
}

/// The local image files the jobs name, with their sizes and how many jobs use each:
/// what `run` uploads (each file once, when the first job that needs it is sent).
fn local_images(s: &mut String, m: &Manifest) {
    let mut files: BTreeMap<&std::path::Path, (u64, &str, usize)> = BTreeMap::new();
    for job in &m.jobs {
        for l in &job.local_images {
            files
                .entry(l.image.path.as_path())
                .or_insert((l.image.size, l.image.sha256.as_str(), 0))
                .2 += 1;
        }
    }
    if files.is_empty() {
        return;
    }
    let total: u64 = files.values().map(|(size, _, _)| size).sum();
    let distinct: std::collections::BTreeSet<&str> =
        files.values().map(|(_, sha, _)| *sha).collect();
    let n = files.len();
    let _ = writeln!(
        s,
        "local images: {n} file{}, {} in all{}; uploaded when a job that uses them is sent",
        if n == 1 { "" } else { "s" },
        Size(total),
        if distinct.len() < n {
            format!(" ({} distinct)", distinct.len())
        } else {
            String::new()
        }
    );
    let width = files
        .keys()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    for (path, (size, _, jobs)) in files {
        let path = path.display().to_string();
        let _ = writeln!(
            s,
            "  {path:<width$}  {:>9}  {jobs} job{}",
            Size(size).to_string(),
            if jobs == 1 { "" } else { "s" }
        );
    }
}
