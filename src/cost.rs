//! Prices in credits, in one table a manifest can override (`prices:`), and the
//! estimate of what a batch will cost.

use serde::Deserialize;

use crate::manifest::{Job, Upgrade};
use crate::request::Model;

/// Credits per item; defaults are the reported prices of the service.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceTable {
    pub veo3: f64,
    pub veo3_fast: f64,
    pub upgrade_1080p: f64,
    pub upgrade_4k: f64,
    /// Dollars per credit.
    pub usd_per_credit: f64,
}

impl Default for PriceTable {
    fn default() -> PriceTable {
        PriceTable {
            veo3: 250.0,
            veo3_fast: 60.0,
            upgrade_1080p: 5.0,
            upgrade_4k: 120.0,
            usd_per_credit: 0.005,
        }
    }
}

impl PriceTable {
    pub fn generation(&self, model: Model) -> f64 {
        match model {
            Model::Veo3 => self.veo3,
            Model::Veo3Fast => self.veo3_fast,
        }
    }

    /// Credits one job costs: its generation, plus its upgrade if it asks for one.
    pub fn job(&self, job: &Job) -> f64 {
        self.generation(job.request.model)
            + match job.upgrade {
                None => 0.0,
                Some(Upgrade::Hd1080) => self.upgrade_1080p,
                Some(Upgrade::Uhd4k) => self.upgrade_4k,
            }
    }

    pub fn usd(&self, credits: f64) -> f64 {
        credits * self.usd_per_credit
    }
}

/// Credits as people write them: `60`, `22.5`, `447.5`; never `-0`, and no float
/// noise from sums (`0.1 + 0.2` shows `0.3`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Credits(pub f64);

impl std::fmt::Display for Credits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = (self.0 * 10_000.0).round() / 10_000.0;
        // `-0.0 == 0.0`: both print as 0.
        let x = if x == 0.0 { 0.0 } else { x };
        write!(f, "{x}")
    }
}

/// Dollars to the cent (`$0.30`), never `$-0.00`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Dollars(pub f64);

impl std::fmt::Display for Dollars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cents = (self.0 * 100.0).round() / 100.0;
        let cents = if cents == 0.0 { 0.0 } else { cents };
        write!(f, "${cents:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::{Credits, Dollars};

    #[test]
    fn dollars_never_show_minus_zero() {
        assert_eq!(Dollars(-0.0).to_string(), "$0.00");
        assert_eq!(Dollars(-0.001).to_string(), "$0.00");
        assert_eq!(Dollars(2.235).to_string(), "$2.24");
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
