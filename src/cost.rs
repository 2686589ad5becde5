//! Prices in credits, in one table a manifest can override (`prices:`), and the
//! estimate of what a batch will cost.
//!
//! A generation's price depends on the model and the resolution (and may depend on
//! the video's length: a manifest can price one duration apart), and is often
//! fractional (22.5, 232.5). The defaults are the table read off the provider's
//! pricing page on [`PRICES_DATE`]; a cell that table does not list stays empty,
//! and a job that needs it is reported rather than counted as free.
//!
//! Beside the table stand the highest prices any source reported for each kind
//! ([`HIGHS_DATE`]): what the first task of a kind is reserved at under a
//! spending limit, before the balance has told its real price.

use std::fmt;

use crate::request::{GenerateRequest, Model, Resolution, Upgrade};

/// What a price is asked of: a checked request, and the upgrade asked after it (a
/// manifest's job). Prices depend on nothing else, so the price table needs nothing
/// of the manifest.
pub trait Priced {
    fn request(&self) -> &GenerateRequest;
    fn upgrade(&self) -> Option<Upgrade>;
    /// The request continues another video (`POST /api/v1/veo/extend`).
    fn is_extend(&self) -> bool {
        false
    }
}

/// When the default prices were read off the provider's pricing page.
pub const PRICES_DATE: &str = "2026-09-08";

/// When the highest reported prices ([`PriceTable::highest`]) were gathered.
pub const HIGHS_DATE: &str = "2026-09-08";

const MODELS: usize = Model::ALL.len();
const RESOLUTIONS: usize = Resolution::ALL.len();

/// The lengths in seconds a video may be asked at (`duration`).
pub const SECONDS: [u8; 3] = [4, 6, 8];
/// The service's length of a video when none is asked.
pub const DEFAULT_SECONDS: u8 = 8;

fn seconds_index(seconds: u8) -> Option<usize> {
    SECONDS.iter().position(|s| *s == seconds)
}

/// Credits per item. `Default` is the [`PRICES_DATE`] table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceTable {
    /// Credits of one generation, by model then resolution; `None`: not listed.
    generation: [[Option<f64>; RESOLUTIONS]; MODELS],
    /// Credits of one generation of a given length, by model, resolution and
    /// [`SECONDS`], where the manifest set one; it wins over `generation`.
    by_seconds: [[[Option<f64>; SECONDS.len()]; RESOLUTIONS]; MODELS],
    pub upgrade_1080p: f64,
    pub upgrade_4k: f64,
    /// One extend (`POST /api/v1/veo/extend`), by model.
    extend: [f64; MODELS],
    /// Dollars per credit.
    pub usd_per_credit: f64,
    /// How many prices the manifest set (0: the defaults as they are).
    pub overrides: usize,
    /// The highest price any source reported, by kind.
    pub highest: Highs,
}

/// The highest price any source reported for each kind of billed call, gathered
/// on [`HIGHS_DATE`] (kie-api reference, "Cost": the pricing page, a second 2026
/// report, and balance drops measured on 2026-06-01). A manifest overrides them
/// under `prices: highest:`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Highs {
    /// By model then resolution, for every duration; `None`: no report.
    generation: [[Option<f64>; RESOLUTIONS]; MODELS],
    /// By model.
    extend: [f64; MODELS],
    pub upgrade_1080p: f64,
    pub upgrade_4k: f64,
}

impl Default for Highs {
    fn default() -> Highs {
        let mut generation = [[None; RESOLUTIONS]; MODELS];
        // veo3 720p: 250 measured from the balance (the page says 225).
        generation[Model::Veo3.index()] = [Some(250.0), Some(232.5), Some(285.0)];
        // veo3_fast: 168 measured at 720p; the second report's 65 and 180 above
        // the page's 37.5 and 90.
        generation[Model::Veo3Fast.index()] = [Some(168.0), Some(65.0), Some(180.0)];
        // veo3_lite: 30 measured at 720p, the second report's 35 at 1080p; lite
        // has no 4k outside reference mode, and the rules refuse it.
        generation[Model::Veo3Lite.index()] = [Some(30.0), Some(35.0), None];
        Highs {
            generation,
            // Only lite's extend was reported (about 15); an extend renders one
            // more clip, so each model's stands at its highest 720p generation.
            extend: [250.0, 168.0, 30.0],
            upgrade_1080p: 5.0,
            upgrade_4k: 120.0,
        }
    }
}

impl Highs {
    /// The highest reported price of one generation with `model` at `resolution`.
    pub fn generation(&self, model: Model, resolution: Resolution) -> Option<f64> {
        self.generation[model.index()][resolution.index()]
    }

    pub fn set_generation(&mut self, model: Model, resolution: Resolution, credits: f64) {
        self.generation[model.index()][resolution.index()] = Some(credits);
    }

    pub fn extend(&self, model: Model) -> f64 {
        self.extend[model.index()]
    }

    pub fn set_extend(&mut self, model: Model, credits: f64) {
        self.extend[model.index()] = credits;
    }

    pub fn upgrade(&self, upgrade: Upgrade) -> f64 {
        match upgrade {
            Upgrade::Hd1080 => self.upgrade_1080p,
            Upgrade::Uhd4k => self.upgrade_4k,
        }
    }
}

impl Default for PriceTable {
    fn default() -> PriceTable {
        let mut generation = [[None; RESOLUTIONS]; MODELS];
        generation[Model::Veo3.index()] = [Some(225.0), Some(232.5), Some(285.0)];
        // 720p is not listed for veo3_fast on that page. The default model at the
        // default resolution must not count as free, nor stop every --max-credits
        // run: the other 2026 report's 60 stands in, above the page's 1080p price,
        // so the estimate and the cap err on the safe side.
        generation[Model::Veo3Fast.index()] = [Some(60.0), Some(37.5), Some(90.0)];
        // The page lists 75 for lite at 4k in reference mode only, and lite has no
        // 4k otherwise (reported): the rules refuse it, so it has no price here.
        generation[Model::Veo3Lite.index()] = [Some(15.0), Some(22.5), None];
        PriceTable {
            generation,
            by_seconds: [[[None; SECONDS.len()]; RESOLUTIONS]; MODELS],
            upgrade_1080p: 5.0,
            upgrade_4k: 120.0,
            // One report: lite about 15. An extend renders one more clip, so each
            // model's extend stands at its 720p generation (lite's is that 15).
            extend: [225.0, 60.0, 15.0],
            usd_per_credit: 0.005,
            overrides: 0,
            highest: Highs::default(),
        }
    }
}

impl PriceTable {
    /// Credits of one generation with `model` at `resolution`, whatever its
    /// length; `None` when the table has no price for it.
    pub fn generation(&self, model: Model, resolution: Resolution) -> Option<f64> {
        self.generation[model.index()][resolution.index()]
    }

    /// Credits of one generation `seconds` long with `model` at `resolution`: the
    /// manifest's price for that length, or the one for every length.
    pub fn generation_of(&self, model: Model, resolution: Resolution, seconds: u8) -> Option<f64> {
        seconds_index(seconds)
            .and_then(|i| self.by_seconds[model.index()][resolution.index()][i])
            .or_else(|| self.generation(model, resolution))
    }

    /// Sets the price of a generation `seconds` long (a manifest's override); a
    /// length the service does not offer is refused before this is asked.
    pub fn set_generation_of(
        &mut self,
        model: Model,
        resolution: Resolution,
        seconds: u8,
        credits: f64,
    ) {
        if let Some(i) = seconds_index(seconds) {
            self.by_seconds[model.index()][resolution.index()][i] = Some(credits);
            self.overrides += 1;
        }
    }

    /// The same table without a price for `model` at `resolution` (for tests of
    /// what a missing price does).
    #[cfg(test)]
    pub(crate) fn without(mut self, model: Model, resolution: Resolution) -> PriceTable {
        self.generation[model.index()][resolution.index()] = None;
        self
    }

    /// Sets the price of `model` at `resolution` (a manifest's override).
    pub fn set_generation(&mut self, model: Model, resolution: Resolution, credits: f64) {
        self.generation[model.index()][resolution.index()] = Some(credits);
        self.overrides += 1;
    }

    /// Credits of one extend with `model`.
    pub fn extend(&self, model: Model) -> f64 {
        self.extend[model.index()]
    }

    /// Sets the price of an extend with `model` (a manifest's override).
    pub fn set_extend(&mut self, model: Model, credits: f64) {
        self.extend[model.index()] = credits;
    }

    /// Credits of the 1080p or 4K upgrade.
    pub fn upgrade(&self, upgrade: Upgrade) -> f64 {
        match upgrade {
            Upgrade::Hd1080 => self.upgrade_1080p,
            Upgrade::Uhd4k => self.upgrade_4k,
        }
    }

    /// Credits of a job's generation (or extend); `None` when the table has no price
    /// for it.
    pub fn job_generation(&self, job: &impl Priced) -> Option<f64> {
        let r = job.request();
        if job.is_extend() {
            return Some(self.extend(r.model));
        }
        self.generation_of(
            r.model,
            r.resolution.unwrap_or_default(),
            r.duration.unwrap_or(DEFAULT_SECONDS),
        )
    }

    /// Credits one job costs: its generation, plus its upgrade if it asks for one.
    /// `None` when the table has no price for its generation.
    pub fn job(&self, job: &impl Priced) -> Option<f64> {
        Some(self.job_generation(job)? + job.upgrade().map_or(0.0, |u| self.upgrade(u)))
    }

    pub fn usd(&self, credits: f64) -> f64 {
        credits * self.usd_per_credit
    }

    /// Which table this is, for `validate`: the date, and how many prices the
    /// manifest set.
    pub fn describe(&self) -> String {
        match self.overrides {
            0 => format!("the {PRICES_DATE} table"),
            1 => format!("the {PRICES_DATE} table, 1 price set by the manifest"),
            n => format!("the {PRICES_DATE} table, {n} prices set by the manifest"),
        }
    }

    /// The cheaper way to a resolution, when the table says so: a job that asks for
    /// `upgrade` after generating at its own resolution pays more than asking for
    /// the upgrade's resolution at generation.
    pub fn native_is_cheaper(&self, job: &impl Priced) -> Option<Cheaper> {
        let upgrade = job.upgrade()?;
        let target = match upgrade {
            Upgrade::Hd1080 => Resolution::Hd1080,
            Upgrade::Uhd4k => Resolution::Uhd4k,
        };
        let model = job.request().model;
        if !model.offers(target) {
            return None;
        }
        let seconds = job.request().duration.unwrap_or(DEFAULT_SECONDS);
        let native = self.generation_of(model, target, seconds)?;
        let base = self.job_generation(job);
        // An unlisted base price is at least 0: the upgrade alone is a lower bound.
        let paid = base.unwrap_or(0.0) + self.upgrade(upgrade);
        (native < paid).then_some(Cheaper {
            resolution: target,
            native,
            paid,
            base_priced: base.is_some(),
        })
    }
}

/// A resolution asked at generation that costs less than an upgrade to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cheaper {
    pub resolution: Resolution,
    /// Credits of the generation at `resolution`.
    pub native: f64,
    /// Credits of the job as written (a lower bound when its base has no price).
    pub paid: f64,
    pub base_priced: bool,
}

/// What a list of jobs costs at a price table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub generation: f64,
    pub upgrades: f64,
    /// Credits of the extend jobs (not in `generation`).
    pub extends: f64,
    /// Jobs whose generation the table has no price for, by model and resolution,
    /// with the index of the first of them; they count 0 in the sums.
    pub unpriced: Vec<Unpriced>,
}

/// Jobs of one model and resolution that the table has no price for.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpriced {
    pub model: Model,
    pub resolution: Resolution,
    pub jobs: usize,
    /// The first such job, by its place in the list.
    pub first: usize,
}

impl Estimate {
    pub fn of<'a, J: Priced + 'a>(
        prices: &PriceTable,
        jobs: impl IntoIterator<Item = &'a J>,
    ) -> Estimate {
        let mut e = Estimate::default();
        for (i, job) in jobs.into_iter().enumerate() {
            e.upgrades += job.upgrade().map_or(0.0, |u| prices.upgrade(u));
            if job.is_extend() {
                e.extends += prices.extend(job.request().model);
                continue;
            }
            match prices.job_generation(job) {
                Some(credits) => e.generation += credits,
                None => {
                    let (model, resolution) = (
                        job.request().model,
                        job.request().resolution.unwrap_or_default(),
                    );
                    match e
                        .unpriced
                        .iter_mut()
                        .find(|u| u.model == model && u.resolution == resolution)
                    {
                        Some(u) => u.jobs += 1,
                        None => e.unpriced.push(Unpriced {
                            model,
                            resolution,
                            jobs: 1,
                            first: i,
                        }),
                    }
                }
            }
        }
        e
    }

    pub fn total(&self) -> f64 {
        self.generation + self.upgrades + self.extends
    }

    /// How many jobs have no price.
    pub fn unpriced_jobs(&self) -> usize {
        self.unpriced.iter().map(|u| u.jobs).sum()
    }

    /// ` (3 jobs not priced: veo3_fast at 720p)`, or nothing when every job is priced.
    pub fn unpriced_note(&self) -> String {
        if self.unpriced.is_empty() {
            return String::new();
        }
        let n = self.unpriced_jobs();
        let what: Vec<String> = self.unpriced.iter().map(ToString::to_string).collect();
        format!(
            " ({n} job{} not priced, counted as 0: {})",
            if n == 1 { "" } else { "s" },
            what.join(", ")
        )
    }
}

impl fmt::Display for Unpriced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.model.as_str(), self.resolution.as_str())
    }
}

/// Credits as a person reads them: whole numbers without decimals, others with up
/// to two, thousands grouped (`447.5`, `5,916.25`, `6,000,000`).
pub fn credits(x: f64) -> String {
    Credits(x).to_string()
}

/// Credits as a file records them: [`Credits`] without the thousands grouping, so
/// that a results file reads back as the number it wrote (`5916.25`).
pub fn credits_cell(x: f64) -> String {
    let x = (x * 100.0).round() / 100.0;
    // `-0.0 == 0.0`: both print as 0.
    let x = if x == 0.0 { 0.0 } else { x };
    format!("{x}")
}

/// A count as a person reads it, thousands grouped: `100,000 jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Count<T = usize>(pub T);

impl<T: fmt::Display> fmt::Display for Count<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&grouped(&self.0.to_string()))
    }
}

/// `digits` (a plain decimal number, maybe signed, maybe with a fraction) with its
/// whole part grouped by thousands: `1234567.5` gives `1,234,567.5`.
fn grouped(digits: &str) -> String {
    let (sign, rest) = match digits.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", digits),
    };
    let (whole, fraction) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    // Float formatting never uses an exponent, but a whole part that is not all
    // digits (`inf`, `NaN`) is left as it is.
    if !whole.bytes().all(|b| b.is_ascii_digit()) {
        return digits.to_owned();
    }
    let mut out = String::with_capacity(digits.len() + whole.len() / 3);
    out.push_str(sign);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_dated_table() {
        let p = PriceTable::default();
        assert_eq!(p.generation(Model::Veo3, Resolution::Hd1080), Some(232.5));
        assert_eq!(p.generation(Model::Veo3Fast, Resolution::Uhd4k), Some(90.0));
        assert_eq!(p.generation(Model::Veo3Lite, Resolution::Hd720), Some(15.0));
        // Not on the page: the other report's figure stands in (see `Default`).
        assert_eq!(p.generation(Model::Veo3Fast, Resolution::Hd720), Some(60.0));
        assert_eq!(p.describe(), "the 2026-09-08 table");
    }

    #[test]
    fn a_duration_priced_apart_wins_over_its_resolution() {
        let mut p = PriceTable::default();
        p.set_generation_of(Model::Veo3Fast, Resolution::Hd720, 8, 168.0);
        assert_eq!(
            p.generation_of(Model::Veo3Fast, Resolution::Hd720, 8),
            Some(168.0)
        );
        assert_eq!(
            p.generation_of(Model::Veo3Fast, Resolution::Hd720, 4),
            Some(60.0)
        );
        assert_eq!(p.generation(Model::Veo3Fast, Resolution::Hd720), Some(60.0));
        assert_eq!(p.overrides, 1);
    }

    #[test]
    fn credits_show_their_fraction() {
        assert_eq!(credits(447.5), "447.5");
        assert_eq!(credits(5916.25), "5,916.25");
        assert_eq!(credits(1655.0), "1,655");
        assert_eq!(credits(0.0), "0");
        assert_eq!(credits(0.1 + 0.2), "0.3");
    }

    #[test]
    fn numbers_people_read_are_grouped_by_thousands() {
        assert_eq!(credits(6_000_000.0), "6,000,000");
        assert_eq!(credits(3157.5), "3,157.5");
        assert_eq!(credits(-1234.25), "-1,234.25");
        assert_eq!(credits(999.0), "999");
        assert_eq!(Count(100_000).to_string(), "100,000");
        assert_eq!(Count(1000).to_string(), "1,000");
        assert_eq!(Count(12).to_string(), "12");
        assert_eq!(format!("{:>9}", Count(1_000_000)), "1,000,000");
        assert_eq!(format!("{:>7}", Count(1234)), "  1,234");
        // What a file records reads back as a number.
        assert_eq!(credits_cell(5916.25), "5916.25");
        assert_eq!(credits_cell(-0.0), "0");
        assert_eq!(credits_cell(0.1 + 0.2), "0.3");
    }

    #[test]
    fn dollars_never_show_minus_zero() {
        assert_eq!(Dollars(-0.0).to_string(), "$0.00");
        assert_eq!(Dollars(-0.001).to_string(), "$0.00");
        assert_eq!(Dollars(2.235).to_string(), "$2.24");
        assert_eq!(Dollars(31_575.0).to_string(), "$31,575.00");
    }

    #[test]
    fn credits_print_as_people_write_them() {
        assert_eq!(Credits(60.0).to_string(), "60");
        assert_eq!(Credits(447.5).to_string(), "447.5");
        assert_eq!(Credits(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(Credits(-0.0).to_string(), "0");
        assert_eq!(Credits(22.5 - 22.5).to_string(), "0");
    }
}

/// Credits as people write them, to the hundredth: `60`, `22.5`, `447.5`,
/// `5,916.25`; never `-0`, and no float noise from sums (`0.1 + 0.2` shows `0.3`).
/// Every credit figure a person reads (terminal, report page) is written by this.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Credits(pub f64);

impl std::fmt::Display for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&grouped(&credits_cell(self.0)))
    }
}

/// Dollars to the cent (`$0.30`), never `$-0.00`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Dollars(pub f64);

impl std::fmt::Display for Dollars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cents = (self.0 * 100.0).round() / 100.0;
        let cents = if cents == 0.0 { 0.0 } else { cents };
        f.pad(&format!("${}", grouped(&format!("{cents:.2}"))))
    }
}
