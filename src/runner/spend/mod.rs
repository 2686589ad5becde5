//! What a run spends as the service bills it, not as the price table says: each
//! account's balance read at the start and at the end (the run's measured spend is
//! the sum of their falls), the sending account's after the first task of each
//! kind; each kind's real price learned from the balance's fall; the price a
//! send reserves against the spending limit; and the reconciliation the summary
//! prints.
//!
//! How a price is learned while other jobs run: the first send of a kind whose
//! price is not known yet takes the run's send gate alone (every other generate,
//! extend and upgrade call takes it shared), reads the balance, sends, and reads
//! the balance again once the service answered. No other billed call is in flight
//! between the two readings, so the fall is that one task's price (only a failed
//! task's refund, or other use of the same account, can land in between). Sends of
//! kinds already known overlap as before; a second task of an unknown kind waits
//! behind the first one's measurement, so under a limit it is reserved at the
//! learned price.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::api::Client;
use crate::cost::{Credits, PriceTable};

/// How much a kind whose price is not learned is reserved at, against the limit,
/// over its table price, at least (see [`Kind::unlearned`]).
pub const UNLEARNED_MARGIN: f64 = 2.0;

/// A measured price differing from the table by more than this share is warned of.
const DRIFT: f64 = 0.25;

mod kind;

use kind::paste_lines;
pub use kind::{Kind, Price, Source, UpgradeKind, failed_task_cost};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Learned {
    Price(f64),
    /// The balance could not be read around its first task, or did not fall.
    Not,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Tasks (or upgrades) this run had billed.
    made: usize,
    /// Of them, tasks that failed.
    failed: usize,
}

/// A task made this run that the service reported failed.
#[derive(Debug, Clone, Copy)]
struct Failure {
    /// The job's place in the run's job list.
    job: usize,
    kind: Kind,
    /// What the task cost when it was sent (the record gave it back).
    credits: f64,
}

#[derive(Debug, Default)]
struct Ledger {
    failures: Vec<Failure>,
    /// Credits the records of earlier runs' tasks gave back when they failed.
    earlier_refunded: f64,
    start: Option<f64>,
    /// Each account's balance at the start, by name (a run over several keys).
    starts: Vec<(String, f64)>,
    /// Why the spend could not be measured, when it could not.
    problem: Option<String>,
    learned: HashMap<Kind, Learned>,
    counts: HashMap<Kind, Count>,
    upgrades_not_made: usize,
}

/// The run's measured spend (shared by every job).
pub struct Spend {
    table: PriceTable,
    gate: tokio::sync::RwLock<()>,
    ledger: Mutex<Ledger>,
}

/// A billed call's pass through the send gate.
pub enum Entry<'a> {
    /// The kind's price is known (or cannot be learned): other calls overlap.
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    /// The first call of its kind: alone, the balance read before it.
    Learning {
        spend: &'a Spend,
        kind: Kind,
        before: Result<f64, String>,
        _alone: tokio::sync::RwLockWriteGuard<'a, ()>,
    },
}

impl Entry<'_> {
    /// The call answered; `billed` says whether the service charged it. The price
    /// this call measured, when it measured one.
    pub async fn done(self, client: &Client, billed: bool) -> Option<f64> {
        let Entry::Learning {
            spend,
            kind,
            before,
            ..
        } = self
        else {
            return None;
        };
        if !billed {
            return None;
        }
        let after = client.credit().await.map_err(|e| e.to_string());
        spend.learn(kind, before, after)
    }
}

/// One kind in the reconciliation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KindSpend {
    pub kind: String,
    /// Tasks (or upgrades) of this kind this run had billed.
    pub count: usize,
    pub failed: usize,
    pub table: Option<f64>,
    pub measured: Option<f64>,
    /// The `prices:` line to paste, when the measured price differs from the table
    /// by more than a quarter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paste: Option<String>,
}

/// What the run spent, measured and estimated, for the summary.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpendReport {
    pub balance_start: Option<f64>,
    pub balance_end: Option<f64>,
    /// The balance's fall over the run; `None` when a reading failed.
    pub measured: Option<f64>,
    /// The same tasks at the price table's prices (a failed task only when the
    /// balance shows it billed).
    pub estimated: f64,
    /// The fall that the tasks made (at their measured prices) do not explain.
    pub unexplained: Option<f64>,
    pub kinds: Vec<KindSpend>,
    /// Why the spend could not be measured.
    pub problem: Option<String>,
    /// 1080p/4K upgrades the service refused for want of credits.
    pub upgrades_not_made: usize,
    /// The `prices:` lines to paste for every kind in `kinds` with a `paste`, one
    /// line a model (kinds of one model merged), so that pasted together they are
    /// one valid mapping.
    pub paste: Vec<String>,
    /// Credits the records of earlier runs' tasks that failed this run gave back:
    /// they come off what the earlier runs spent, not what this run did.
    pub earlier_refunded: f64,
    /// Credits of the failed tasks the unexplained fall counts as billed.
    pub failed_billed: f64,
    /// The jobs (by place) whose failed task the balance showed billed, with what
    /// the task cost: their records count it again.
    #[serde(skip)]
    pub billed_failures: Vec<(usize, f64)>,
    /// Each account's balance and fall, when the run used several accounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountSpend>,
}

/// One account's part of the measured spend.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AccountSpend {
    pub account: String,
    pub balance_start: f64,
    pub balance_end: Option<f64>,
    /// The fall of its balance over the run; `None` when the end was not read.
    pub measured: Option<f64>,
}

impl SpendReport {
    /// The kinds whose measured price differs from the table by more than 25%.
    pub fn drifted(&self) -> impl Iterator<Item = &KindSpend> {
        self.kinds.iter().filter(|k| k.paste.is_some())
    }
}

/// A figure never shown as `-0`, rounded to the cent.
fn clean(x: f64) -> f64 {
    let x = (x * 100.0).round() / 100.0;
    if x == 0.0 { 0.0 } else { x }
}

impl Spend {
    pub fn new(table: PriceTable) -> Spend {
        Spend {
            table,
            gate: tokio::sync::RwLock::new(()),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the starting balance of every account (a client of each, by name);
    /// a failure leaves the run on the table's prices. Their sum, when read.
    pub async fn start(&self, accounts: &[(String, Client)]) -> Option<f64> {
        let mut starts = Vec::with_capacity(accounts.len());
        for (name, client) in accounts {
            match client.credit().await {
                Ok(b) => starts.push((name.clone(), b)),
                // A refused key is the first send's to report: it stops the run
                // (or, in a pool, sends that account's jobs to the others).
                Err(e) if e.class == crate::api::ErrorClass::Auth => return None,
                Err(e) => {
                    let problem = format!("the balance could not be read at the start ({e})");
                    tracing::warn!(
                        "{problem}: the spend is not measured; prices are the table's, and under a limit a kind is reserved at {}",
                        reserved_at()
                    );
                    self.ledger().problem = Some(problem);
                    return None;
                }
            }
        }
        let total = starts.iter().map(|(_, b)| b).sum();
        let mut ledger = self.ledger();
        ledger.start = Some(total);
        ledger.starts = starts;
        Some(total)
    }

    /// Each account's balance as read at the start.
    pub fn starts(&self) -> Vec<(String, f64)> {
        self.ledger().starts.clone()
    }

    /// The price of `kind` now.
    pub fn price(&self, kind: Kind) -> Price {
        let table = kind.table(&self.table).unwrap_or(0.0);
        let ledger = self.ledger();
        let learned = ledger.learned.get(&kind).copied();
        drop(ledger);
        match learned {
            Some(Learned::Price(m)) => Price {
                reserve: m.max(table),
                billed: m,
                source: Source::Measured,
            },
            // Not learned yet (the first task of the kind), or not learnable: the
            // service may bill far above the table (168 for a fast 720p video the
            // table puts at 60), so the limit reserves the worst price known.
            Some(Learned::Not) | None => Price {
                reserve: kind.unlearned(&self.table),
                billed: table,
                source: Source::Table,
            },
        }
    }

    /// Waits for the send gate before a billed call of `kind`: alone when the
    /// kind's price is to be learned (the balance is read then), shared otherwise.
    /// The price to reserve is asked after this, so that a task waiting behind the
    /// first of its kind is reserved at the learned price.
    pub async fn enter(&self, client: &Client, kind: Kind) -> Entry<'_> {
        if !self.to_learn(kind) {
            return Entry::Shared(self.gate.read().await);
        }
        let alone = self.gate.write().await;
        // Another call may have learned it while this one waited.
        if !self.to_learn(kind) {
            return Entry::Shared(alone.downgrade());
        }
        let before = client.credit().await.map_err(|e| e.to_string());
        Entry::Learning {
            spend: self,
            kind,
            before,
            _alone: alone,
        }
    }

    /// Records what the balance's fall after a billed call says of its kind's price.
    fn learn(
        &self,
        kind: Kind,
        before: Result<f64, String>,
        after: Result<f64, String>,
    ) -> Option<f64> {
        let learned = match (before, after) {
            (Ok(b), Ok(a)) if b - a > 0.0 => Learned::Price(b - a),
            // Asked again for an upgrade paid for before: the next one tells.
            (Ok(_), Ok(_)) if matches!(kind, Kind::Upgrade(_)) => return None,
            (Ok(_), Ok(_)) => {
                tracing::warn!(
                    "the balance did not fall when a {kind} task was created: its price is taken from the table{}",
                    limit_note()
                );
                Learned::Not
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(
                    "the price of {kind} could not be learned: the balance could not be read ({e}); it is taken from the table{}",
                    limit_note()
                );
                Learned::Not
            }
        };
        self.ledger().learned.insert(kind, learned);
        let Learned::Price(p) = learned else {
            return None;
        };
        tracing::info!(
            "{kind}: the service billed {} credits (table: {})",
            Credits(p),
            kind.table(&self.table)
                .map_or_else(|| "no price".to_owned(), |t| Credits(t).to_string())
        );
        Some(p)
    }

    fn to_learn(&self, kind: Kind) -> bool {
        let ledger = self.ledger();
        ledger.start.is_some() && !ledger.learned.contains_key(&kind)
    }

    /// A task (or upgrade) of `kind` was billed.
    pub fn made(&self, kind: Kind) {
        self.ledger().counts.entry(kind).or_default().made += 1;
    }

    /// A task of `kind` made this run for the job at place `job` failed; its record
    /// gave back `credits`.
    pub fn failed(&self, kind: Kind, job: usize, credits: f64) {
        let mut ledger = self.ledger();
        ledger.counts.entry(kind).or_default().failed += 1;
        ledger.failures.push(Failure { job, kind, credits });
    }

    /// A task an earlier run made failed; its record gave back `credits`.
    pub fn earlier_failed(&self, credits: f64) {
        self.ledger().earlier_refunded += credits;
    }

    /// The service refused an upgrade for want of credits.
    pub fn upgrade_not_made(&self) {
        self.ledger().upgrades_not_made += 1;
    }

    /// Reads every account's final balance and reconciles: the run's measured
    /// spend is the sum of each account's fall.
    pub async fn finish(&self, accounts: &[(String, Client)]) -> SpendReport {
        let (start, starts) = {
            let ledger = self.ledger();
            (ledger.start, ledger.starts.clone())
        };
        let mut ends = Vec::with_capacity(starts.len());
        let mut problem = None;
        for (name, _) in &starts {
            let client = accounts.iter().find(|(n, _)| n == name).map(|(_, c)| c);
            let read = match client {
                Some(c) => c.credit().await.map_err(|e| e.to_string()),
                None => Err("no key of the account is left".to_owned()),
            };
            match read {
                Ok(b) => ends.push(Some(b)),
                Err(e) => {
                    problem.get_or_insert(e);
                    ends.push(None);
                }
            }
        }
        let end = match problem {
            None if start.is_some() => Some(ends.iter().flatten().sum()),
            None => None,
            Some(e) => {
                let problem = format!("the balance could not be read at the end ({e})");
                tracing::warn!("{problem}: the spend is not measured");
                self.ledger().problem = Some(problem);
                None
            }
        };
        let mut report = self.report(start, end);
        if starts.len() > 1 {
            report.accounts = starts
                .into_iter()
                .zip(ends)
                .map(|((account, s), e)| AccountSpend {
                    account,
                    balance_start: s,
                    balance_end: e,
                    measured: e.map(|e| clean(s - e)),
                })
                .collect();
        }
        report
    }

    fn report(&self, start: Option<f64>, end: Option<f64>) -> SpendReport {
        let ledger = self.ledger();
        let measured = start.zip(end).map(|(s, e)| clean(s - e));
        let mut kinds: Vec<(&Kind, &Count)> = ledger.counts.iter().collect();
        kinds.sort_by_key(|(k, _)| **k);
        let mut estimated = 0.0;
        let mut explained = 0.0;
        let mut lines = Vec::new();
        let mut drifted = Vec::new();
        for (kind, count) in kinds {
            let table = kind.table(&self.table);
            let learned = match ledger.learned.get(kind) {
                Some(Learned::Price(p)) => Some(*p),
                _ => None,
            };
            // Failed tasks are refunded, as documented: what they explain, and cost
            // at the table, is 0 (those the balance shows billed are added below).
            let ok = count.made.saturating_sub(count.failed) as f64;
            estimated += table.unwrap_or(0.0) * ok;
            explained += learned.or(table).unwrap_or(0.0) * ok;
            let drift = learned.filter(|m| table.is_none_or(|t| (m - t).abs() > DRIFT * t));
            drifted.extend(drift.map(|m| (*kind, m)));
            let paste = drift.map(|m| kind.prices_line(m));
            lines.push(KindSpend {
                kind: kind.to_string(),
                count: count.made,
                failed: count.failed,
                table,
                measured: learned.map(clean),
                paste,
            });
        }
        let unexplained = measured
            .map(|m| clean(m - explained))
            .filter(|u| *u >= 0.01);
        let paste = paste_lines(drifted.into_iter());
        let billed = billed_failures(&ledger.failures, unexplained.unwrap_or(0.0));
        estimated += billed
            .iter()
            .filter_map(|f| f.kind.table(&self.table))
            .sum::<f64>();
        let billed_failures: Vec<(usize, f64)> =
            billed.iter().map(|f| (f.job, f.credits)).collect();
        let failed_billed = clean(billed_failures.iter().map(|(_, c)| c).sum());
        SpendReport {
            balance_start: start,
            balance_end: end,
            measured,
            estimated: clean(estimated),
            unexplained,
            kinds: lines,
            problem: ledger.problem.clone(),
            upgrades_not_made: ledger.upgrades_not_made,
            accounts: Vec::new(),
            paste,
            earlier_refunded: clean(ledger.earlier_refunded),
            failed_billed,
            billed_failures,
        }
    }
}

/// Which failed tasks a fall of `unexplained` credits beyond what the other tasks
/// explain shows billed: each in turn, while what is left covers its cost. Other
/// use of the account counts in the fall too, so this errs towards counting a
/// failed task spent, the side a limit over runs must err on.
fn billed_failures(failures: &[Failure], unexplained: f64) -> Vec<Failure> {
    let mut left = unexplained;
    let mut billed = Vec::new();
    for f in failures.iter().filter(|f| f.credits > 0.0) {
        if left + 0.005 < f.credits {
            continue;
        }
        left -= f.credits;
        billed.push(*f);
    }
    billed
}

fn limit_note() -> String {
    format!(
        "; under a spending limit each further one is reserved at {}",
        reserved_at()
    )
}

/// What a kind whose price is not learned is reserved at, as the warnings say it.
fn reserved_at() -> String {
    format!(
        "the highest price reported for it or {UNLEARNED_MARGIN} times its table price, whichever is larger"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Model, Resolution, Upgrade};

    fn fast720() -> Kind {
        Kind::Generation {
            model: Model::Veo3Fast,
            resolution: Resolution::Hd720,
            seconds: 8,
        }
    }

    #[test]
    fn a_learned_price_is_reserved_at_the_larger_of_it_and_the_table() {
        let spend = Spend::new(PriceTable::default());
        spend.ledger().start = Some(1000.0);
        // Before its first task, the highest price reported for the kind (168,
        // measured from a balance) stands above twice the table (120).
        assert_eq!(
            spend.price(fast720()),
            Price {
                reserve: 168.0,
                billed: 60.0,
                source: Source::Table
            }
        );
        spend
            .ledger()
            .learned
            .insert(fast720(), Learned::Price(168.0));
        assert_eq!(spend.price(fast720()).reserve, 168.0);
        assert_eq!(spend.price(fast720()).source, Source::Measured);
        spend
            .ledger()
            .learned
            .insert(fast720(), Learned::Price(30.0));
        let p = spend.price(fast720());
        assert_eq!((p.reserve, p.billed), (60.0, 30.0));
        spend.ledger().learned.insert(fast720(), Learned::Not);
        assert_eq!(spend.price(fast720()).reserve, 168.0);
    }

    #[test]
    fn an_unlearned_kind_is_reserved_at_its_highest_report_or_twice_the_table() {
        let mut table = PriceTable::default();
        let veo3 = |resolution| Kind::Generation {
            model: Model::Veo3,
            resolution,
            seconds: 8,
        };
        // veo3 720p: 250 reported, 450 twice the table: the margin is larger.
        assert_eq!(veo3(Resolution::Hd720).unlearned(&table), 450.0);
        assert_eq!(fast720().unlearned(&table), 168.0);
        assert_eq!(Kind::upgrade(Upgrade::Uhd4k).unlearned(&table), 240.0);
        assert_eq!(Kind::Extend(Model::Veo3Lite).unlearned(&table), 30.0);
        // The highs are overridable, and a table price above them raises it.
        table
            .highest
            .set_generation(Model::Veo3Fast, Resolution::Hd720, 400.0);
        assert_eq!(fast720().unlearned(&table), 400.0);
        table.set_generation(Model::Veo3Fast, Resolution::Hd720, 250.0);
        assert_eq!(fast720().unlearned(&table), 500.0);
    }

    #[test]
    fn without_a_balance_every_kind_is_reserved_with_the_margin() {
        let spend = Spend::new(PriceTable::default());
        spend.ledger().problem = Some("no".into());
        assert_eq!(spend.price(fast720()).reserve, 168.0);
        assert_eq!(spend.price(fast720()).billed, 60.0);
    }

    #[test]
    fn the_report_warns_of_drift_and_unexplained_falls() {
        let spend = Spend::new(PriceTable::default());
        {
            let mut l = spend.ledger();
            l.learned.insert(fast720(), Learned::Price(168.0));
            l.counts.insert(
                fast720(),
                Count {
                    made: 10,
                    failed: 2,
                },
            );
        }
        let r = spend.report(Some(5000.0), Some(5000.0 - 1680.0));
        assert_eq!(r.measured, Some(1680.0));
        // The eight successes at the table; the failed tasks count 0.
        assert_eq!(r.estimated, 480.0);
        // Two failed tasks billed: 336 the successes do not explain.
        assert_eq!(r.unexplained, Some(336.0));
        let drifted: Vec<_> = r.drifted().collect();
        assert_eq!(drifted.len(), 1);
        assert_eq!(drifted[0].kind, "veo3_fast 720p 8s");
        assert_eq!(
            drifted[0].paste.as_deref(),
            Some("veo3_fast: {720p: {8s: 168}}")
        );
        // Within a quarter of the table: no warning; a fall the tasks explain: none.
        spend
            .ledger()
            .learned
            .insert(fast720(), Learned::Price(70.0));
        spend
            .ledger()
            .counts
            .insert(fast720(), Count { made: 2, failed: 0 });
        let r = spend.report(Some(140.0), Some(0.0));
        assert_eq!(r.drifted().count(), 0);
        assert_eq!(r.unexplained, None);
    }

    #[test]
    fn a_failed_task_is_counted_back_only_as_far_as_the_balance_shows() {
        // The record keeps what it had before the task (an earlier task's video).
        assert_eq!(failed_task_cost(65.0, 5.0), (5.0, 60.0));
        assert_eq!(failed_task_cost(60.0, -3.0), (0.0, 60.0));
        let spend = Spend::new(PriceTable::default());
        {
            let mut l = spend.ledger();
            l.learned.insert(fast720(), Learned::Price(60.0));
            l.counts.insert(fast720(), Count { made: 4, failed: 0 });
        }
        for job in [2, 5, 7] {
            spend.failed(fast720(), job, 60.0);
        }
        // One success (60) and two failures billed (120); 30 more is not a task.
        let r = spend.report(Some(1000.0), Some(1000.0 - 210.0));
        assert_eq!(r.unexplained, Some(150.0));
        assert_eq!(r.billed_failures, [(2, 60.0), (5, 60.0)]);
        assert_eq!(r.failed_billed, 120.0);
        // The success and the two billed failures at the table's 60.
        assert_eq!(r.estimated, 180.0);
        // A fall the successes explain counts no failure.
        let r = spend.report(Some(1000.0), Some(940.0));
        assert!(r.billed_failures.is_empty());
    }

    #[test]
    fn the_lines_to_paste_merge_the_kinds_of_a_model_into_one_mapping() {
        let video = |model, resolution, seconds| Kind::Generation {
            model,
            resolution,
            seconds,
        };
        let lines = paste_lines(
            [
                (video(Model::Veo3Fast, Resolution::Hd720, 8), 168.0),
                (Kind::upgrade(Upgrade::Uhd4k), 130.0),
                (video(Model::Veo3Fast, Resolution::Hd1080, 8), 70.5),
                (Kind::Extend(Model::Veo3), 300.0),
                (video(Model::Veo3Fast, Resolution::Hd720, 4), 84.0),
                (video(Model::Veo3, Resolution::Hd720, 8), 250.0),
                (Kind::Extend(Model::Veo3Lite), 30.0),
            ]
            .into_iter(),
        );
        assert_eq!(
            lines,
            [
                "veo3: {720p: {8s: 250}}",
                "veo3_fast: {720p: {4s: 84, 8s: 168}, 1080p: {8s: 70.5}}",
                "extend: {veo3: 300, veo3_lite: 30}",
                "upgrade_4k: 130",
            ]
        );
    }

    #[test]
    fn figures_are_never_negative_zero() {
        let spend = Spend::new(PriceTable::default());
        let r = spend.report(Some(0.1 + 0.2), Some(0.3));
        assert_eq!(r.measured.map(f64::to_bits), Some(0.0f64.to_bits()));
    }
}
