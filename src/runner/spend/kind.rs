//! What the service may price differently (a kind), where a job's credits figure
//! comes from, the one rule for what a failed task costs, a kind's price for the
//! limit and the record, and the `prices:` lines that set measured prices.

use std::fmt;

use super::UNLEARNED_MARGIN;
use crate::cost::{Credits, DEFAULT_SECONDS, PriceTable, Priced};
use crate::request::{Model, Resolution, Upgrade};

/// What the service may price differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Generation {
        model: Model,
        resolution: Resolution,
        seconds: u8,
    },
    Extend(Model),
    Upgrade(UpgradeKind),
}

/// [`Upgrade`], ordered for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpgradeKind {
    Hd1080,
    Uhd4k,
}

impl From<Upgrade> for UpgradeKind {
    fn from(u: Upgrade) -> UpgradeKind {
        match u {
            Upgrade::Hd1080 => UpgradeKind::Hd1080,
            Upgrade::Uhd4k => UpgradeKind::Uhd4k,
        }
    }
}

impl Kind {
    /// The kind of a job's generate (or extend) call.
    pub fn of(job: &impl Priced) -> Kind {
        let r = job.request();
        if job.is_extend() {
            return Kind::Extend(r.model);
        }
        Kind::Generation {
            model: r.model,
            resolution: r.resolution.unwrap_or_default(),
            seconds: r.duration.unwrap_or(DEFAULT_SECONDS),
        }
    }

    pub fn upgrade(u: Upgrade) -> Kind {
        Kind::Upgrade(u.into())
    }

    /// The table's price; `None` when the table has none.
    pub fn table(self, table: &PriceTable) -> Option<f64> {
        match self {
            Kind::Generation {
                model,
                resolution,
                seconds,
            } => table.generation_of(model, resolution, seconds),
            Kind::Extend(m) => Some(table.extend(m)),
            Kind::Upgrade(UpgradeKind::Hd1080) => Some(table.upgrade(Upgrade::Hd1080)),
            Kind::Upgrade(UpgradeKind::Uhd4k) => Some(table.upgrade(Upgrade::Uhd4k)),
        }
    }

    /// What a send of a kind whose price is not learned reserves against the
    /// limit: the highest price any source reported for it, or its table price
    /// times [`UNLEARNED_MARGIN`], whichever is larger. A first task billed above
    /// both can still pass the limit, by the difference; nothing else can.
    pub fn unlearned(self, table: &PriceTable) -> f64 {
        let high = match self {
            Kind::Generation {
                model, resolution, ..
            } => table.highest.generation(model, resolution),
            Kind::Extend(m) => Some(table.highest.extend(m)),
            Kind::Upgrade(UpgradeKind::Hd1080) => Some(table.highest.upgrade(Upgrade::Hd1080)),
            Kind::Upgrade(UpgradeKind::Uhd4k) => Some(table.highest.upgrade(Upgrade::Uhd4k)),
        };
        let margin = self.table(table).unwrap_or(0.0) * UNLEARNED_MARGIN;
        high.map_or(margin, |h| h.max(margin))
    }

    /// The manifest's `prices:` line that sets this kind's price to `credits`,
    /// exactly: a generation's for its duration only.
    pub fn prices_line(self, credits: f64) -> String {
        // Written as a file records credits, so that it reads back as the figure
        // measured (no thousands grouping in YAML).
        let c = crate::cost::credits_cell(credits);
        match self {
            Kind::Generation {
                model,
                resolution,
                seconds,
            } => format!("{model}: {{{resolution}: {{{seconds}s: {c}}}}}"),
            Kind::Extend(m) => format!("extend: {{{m}: {c}}}"),
            Kind::Upgrade(UpgradeKind::Hd1080) => format!("upgrade_1080p: {c}"),
            Kind::Upgrade(UpgradeKind::Uhd4k) => format!("upgrade_4k: {c}"),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Generation {
                model,
                resolution,
                seconds,
            } => write!(f, "{model} {resolution} {seconds}s"),
            Kind::Extend(m) => write!(f, "extend {m}"),
            Kind::Upgrade(UpgradeKind::Hd1080) => f.write_str("1080p upgrade"),
            Kind::Upgrade(UpgradeKind::Uhd4k) => f.write_str("4k upgrade"),
        }
    }
}

/// Where a job's credits figure comes from (the results file's `credits_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The balance's fall after a task of its kind.
    Measured,
    /// The price table (the manifest's `prices:` over the dated defaults).
    Table,
    /// A task the service reported failed, counted 0 (see [`failed_task_cost`]).
    Refunded,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::Table => "table",
            Source::Refunded => "refunded",
        }
    }
}

/// The one rule for what a failed task costs, which the results file records and
/// so every figure read from it follows (the summary, `status`, the report page,
/// the notification, the batch's limit over runs): a task the service reported
/// failed costs 0, as the service documents failed tasks free, unless the balance
/// showed it billed (then [`SpendReport::billed_failures`] counts it back).
///
/// `credits` is the record's figure with the task's cost in it, `before` what it
/// was before the task was sent; gives the record's new figure and what the task
/// had added (what the run's end counts back if the balance says it was billed).
pub fn failed_task_cost(credits: f64, before: f64) -> (f64, f64) {
    let before = before.clamp(0.0, credits.max(0.0));
    (before, credits - before)
}

/// A kind's price, for the limit and for the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// What a send reserves against the limit: the larger of the table and the
    /// measured price, or [`Kind::unlearned`] while it is not learned.
    pub reserve: f64,
    /// What the job's record says it cost.
    pub billed: f64,
    pub source: Source,
}

impl Price {
    /// Why a send of `kind` reserves more than its table price, for the message of
    /// a limit it would pass; empty when it does not.
    pub fn why_reserved(&self, kind: Kind) -> String {
        if self.source == Source::Table && self.reserve > self.billed {
            format!(
                ": a {kind} task is reserved at the highest price reported for its kind or {UNLEARNED_MARGIN} times its table price of {}, whichever is larger, until the balance tells its real price",
                Credits(self.billed)
            )
        } else {
            String::new()
        }
    }
}

/// The `prices:` lines that set each of `measured` (kinds and their prices), one
/// line a model or section: `veo3_fast: {720p: {4s: 84, 8s: 168}}`,
/// `extend: {veo3: 300}`, `upgrade_4k: 130`.
pub(super) fn paste_lines(measured: impl Iterator<Item = (Kind, f64)>) -> Vec<String> {
    let mut measured: Vec<(Kind, f64)> = measured.collect();
    measured.sort_by_key(|(k, _)| *k);
    let cell = crate::cost::credits_cell;
    let mut lines = Vec::new();
    let mut at = 0;
    while let Some(&(kind, price)) = measured.get(at) {
        match kind {
            Kind::Generation { model, .. } => {
                // This model's resolutions, each with its lengths, in order.
                let mut resolutions: Vec<(Resolution, Vec<String>)> = Vec::new();
                while let Some(&(
                    Kind::Generation {
                        model: m,
                        resolution,
                        seconds,
                    },
                    p,
                )) = measured.get(at)
                    && m == model
                {
                    let length = format!("{seconds}s: {}", cell(p));
                    match resolutions.last_mut() {
                        Some((r, lengths)) if *r == resolution => lengths.push(length),
                        _ => resolutions.push((resolution, vec![length])),
                    }
                    at += 1;
                }
                let by: Vec<String> = resolutions
                    .iter()
                    .map(|(r, lengths)| format!("{r}: {{{}}}", lengths.join(", ")))
                    .collect();
                lines.push(format!("{model}: {{{}}}", by.join(", ")));
            }
            Kind::Extend(_) => {
                let mut by = Vec::new();
                while let Some(&(Kind::Extend(m), p)) = measured.get(at) {
                    by.push(format!("{m}: {}", cell(p)));
                    at += 1;
                }
                lines.push(format!("extend: {{{}}}", by.join(", ")));
            }
            Kind::Upgrade(_) => {
                lines.push(kind.prices_line(price));
                at += 1;
            }
        }
    }
    lines
}
