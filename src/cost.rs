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
