//! The `prices:` section of a YAML manifest: a model's price as one number (every
//! resolution it offers), a mapping by resolution, or, under a resolution, a
//! mapping by duration (`veo3_fast: {720p: {8s: 168}}`, the lines a run's drift
//! warning prints); extends, upgrades, dollars per credit; and `highest:`, the
//! highest reported prices the first task of a kind is reserved at.

use crate::cost::{PriceTable, SECONDS};
use crate::request::{Model, Resolution, did_you_mean};

use super::super::node::{Node, Value};
use super::Cx;

/// The keys of `prices:` besides the model names.
const PRICE_KEYS: [&str; 5] = [
    "upgrade_1080p",
    "upgrade_4k",
    "extend",
    "usd_per_credit",
    "highest",
];
/// The keys of `prices: highest:` besides the model names.
const HIGHEST_KEYS: [&str; 3] = ["upgrade_1080p", "upgrade_4k", "extend"];

/// Which prices a `prices:` mapping sets.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The price table: estimates, and the records of prices not measured.
    Table,
    /// The highest reported prices (`highest:`).
    Highest,
}

impl Target {
    fn section(self) -> &'static str {
        match self {
            Target::Table => "prices",
            Target::Highest => "prices.highest",
        }
    }

    /// The field name a person reads in an error: `veo3.720p`, `highest.veo3.720p`.
    fn field(self, name: &str) -> String {
        match self {
            Target::Table => name.to_owned(),
            Target::Highest => format!("highest.{name}"),
        }
    }
}

impl Cx<'_> {
    pub(super) fn prices(&mut self, n: &Node, prices: &mut PriceTable) {
        self.price_entries(n, prices, Target::Table);
    }

    fn price_entries(&mut self, n: &Node, prices: &mut PriceTable, target: Target) {
        for (k, v) in self.entries(n, target.section()).unwrap_or_default() {
            let name = k.key_text();
            if let Some(model) = Model::parse(&name) {
                self.model_prices(model, v, prices, target);
                continue;
            }
            match (name.as_str(), target) {
                ("extend", _) => {
                    self.extend_prices(v, prices, target);
                    continue;
                }
                ("highest", Target::Table) => {
                    self.price_entries(v, prices, Target::Highest);
                    continue;
                }
                _ => {}
            }
            let slot = match (name.as_str(), target) {
                ("upgrade_1080p", Target::Table) => &mut prices.upgrade_1080p,
                ("upgrade_4k", Target::Table) => &mut prices.upgrade_4k,
                ("usd_per_credit", Target::Table) => &mut prices.usd_per_credit,
                ("upgrade_1080p", Target::Highest) => &mut prices.highest.upgrade_1080p,
                ("upgrade_4k", Target::Highest) => &mut prices.highest.upgrade_4k,
                _ => {
                    let keys: &[&str] = match target {
                        Target::Table => &PRICE_KEYS,
                        Target::Highest => &HIGHEST_KEYS,
                    };
                    let allowed: Vec<&str> = Model::ALL
                        .iter()
                        .map(|m| m.as_str())
                        .chain(keys.iter().copied())
                        .collect();
                    self.unknown_key(k, None, target.section(), &allowed);
                    continue;
                }
            };
            if let Some(x) = self.number(v, &target.field(&name)) {
                *slot = x;
                prices.overrides += 1;
            }
        }
    }

    /// `extend:` under `prices:`: one number (every model) or a mapping by model.
    fn extend_prices(&mut self, v: &Node, prices: &mut PriceTable, target: Target) {
        let set = |prices: &mut PriceTable, model: Model, x: f64| match target {
            Target::Table => prices.set_extend(model, x),
            Target::Highest => prices.highest.set_extend(model, x),
        };
        if let Value::Map(entries) = &v.value {
            for (k, cell) in entries {
                let key = k.key_text();
                let field = target.field(&format!("extend.{key}"));
                let Some(model) = Model::parse(&key) else {
                    let msg = match did_you_mean(&key, Model::ALL.map(Model::as_str)) {
                        Some(s) => format!("unknown model (did you mean {s}?)"),
                        None => format!("unknown model (allowed: {})", Model::ALLOWED),
                    };
                    self.err(k, None, Some(&field), msg);
                    continue;
                };
                if let Some(x) = self.number(cell, &field) {
                    set(prices, model, x);
                    prices.overrides += 1;
                }
            }
        } else if let Some(x) = self.number(v, &target.field("extend")) {
            for m in Model::ALL {
                set(prices, m, x);
            }
            prices.overrides += 1;
        }
    }

    fn model_prices(&mut self, model: Model, v: &Node, prices: &mut PriceTable, target: Target) {
        let name = model.as_str();
        let set = |prices: &mut PriceTable, r: Resolution, x: f64| match target {
            Target::Table => prices.set_generation(model, r, x),
            Target::Highest => {
                prices.highest.set_generation(model, r, x);
                prices.overrides += 1;
            }
        };
        if let Value::Map(entries) = &v.value {
            for (k, cell) in entries {
                let key = k.key_text();
                let field = target.field(&format!("{name}.{key}"));
                let Some(resolution) = Resolution::parse(&key) else {
                    let msg = match did_you_mean(&key, Resolution::ALL.map(Resolution::as_str)) {
                        Some(s) => format!("unknown resolution (did you mean {s}?)"),
                        None => format!("unknown resolution (allowed: {})", Resolution::ALLOWED),
                    };
                    self.err(k, None, Some(&field), msg);
                    continue;
                };
                if !model.offers(resolution) {
                    let msg = format!("{name} has no {key}, so it has no price");
                    self.err(k, None, Some(&field), msg);
                    continue;
                }
                if target == Target::Table
                    && let Value::Map(by_seconds) = &cell.value
                {
                    self.seconds_prices(model, resolution, by_seconds, &field, prices);
                } else if let Some(x) = self.number(cell, &field) {
                    set(prices, resolution, x);
                }
            }
        } else if let Some(x) = self.number(v, &target.field(name)) {
            for r in Resolution::ALL.into_iter().filter(|r| model.offers(*r)) {
                set(prices, r, x);
            }
        }
    }

    /// A resolution's prices by duration: `{8s: 168}` (`4s`, `6s` or `8s`).
    fn seconds_prices(
        &mut self,
        model: Model,
        resolution: Resolution,
        entries: &[(Node, Node)],
        field: &str,
        prices: &mut PriceTable,
    ) {
        for (k, cell) in entries {
            let key = k.key_text();
            let field = format!("{field}.{key}");
            let seconds = key
                .strip_suffix('s')
                .and_then(|d| d.parse::<u8>().ok())
                .filter(|d| SECONDS.contains(d));
            let Some(seconds) = seconds else {
                let allowed: Vec<String> = SECONDS.iter().map(|s| format!("{s}s")).collect();
                let msg = format!("unknown duration (allowed: {})", allowed.join(", "));
                self.err(k, None, Some(&field), msg);
                continue;
            };
            if let Some(x) = self.number(cell, &field) {
                prices.set_generation_of(model, resolution, seconds, x);
            }
        }
    }
}
