//! `veo-batch credits`: the account's remaining credits, as the service says them
//! (with keys of several accounts, each account's on a line and their total),
//! and with a results file or manifest the batch's spend: measured from the
//! balance, taken from the price table, and estimated at the manifest's prices.

use std::fmt::Write as _;

use crate::api::KeyRing;
use crate::cli::CreditsArgs;
use crate::cost::Credits;
use crate::exit::Exit;

/// Runs `credits`. A refused key or exhausted credits end it with
/// [`Exit::ServiceStopped`], any other failure of the call with
/// [`Exit::JobsFailed`] ([`Exit::of_error`] reads the service's error).
pub async fn run(args: CreditsArgs) -> anyhow::Result<Exit> {
    // A bad path is found before the service is asked.
    let batch = match &args.path {
        Some(path) => Some(super::status::read_source(path, args.results.as_deref())?),
        None => None,
    };
    crate::api::check_bases(
        &args.service.api_base,
        None,
        args.service.allow_insecure_http,
    )?;
    let ring = KeyRing::load(args.service.api_key_file.as_deref())?;
    let client = super::run::client(
        args.service.api_base,
        ring.first().clone(),
        crate::config::DEFAULT_REQUEST_TIMEOUT,
        None,
        args.service.allow_insecure_http,
    )?;
    let accounts = ring.accounts();
    let mut out = String::new();
    if accounts.len() == 1 {
        let credits = client
            .credit()
            .await
            .map_err(|e| anyhow::Error::from(e).context("failed to read the credit balance"))?;
        let _ = writeln!(out, "{credits}");
    } else {
        // The balance is the account's: one key of each tells it.
        let mut total = 0.0;
        for account in accounts {
            let Some(key) = ring.keys().iter().find(|k| k.account == account) else {
                continue;
            };
            let shown = if account.is_empty() {
                "(unnamed)"
            } else {
                account
            };
            let credits = client.with_key(key)?.credit().await.map_err(|e| {
                anyhow::Error::from(e).context(format!(
                    "failed to read the credit balance of account {shown} (key id {})",
                    key.id
                ))
            })?;
            total += credits;
            let _ = writeln!(out, "{shown} {credits}");
        }
        let _ = writeln!(out, "total {total}");
    }
    if let Some(batch) = &batch {
        out.push_str(&batch_spend(batch));
    }
    super::print_stdout(out.as_bytes())
}

/// The batch's spend as its results file records it, and, with the manifest, the
/// same jobs at its prices.
fn batch_spend(batch: &super::status::Source) -> String {
    let records = &batch.loaded.records;
    let sum = |measured: bool| {
        records
            .values()
            .filter(|r| (r.credits_source == "measured") == measured)
            .map(|r| r.credits)
            .sum::<f64>()
    };
    let (measured, table) = (sum(true), sum(false));
    let mut out = format!(
        "batch: {} credits spent, {} measured from the balance and {} at the price table\n",
        Credits(measured + table),
        Credits(measured),
        Credits(table)
    );
    if let Some(m) = &batch.manifest {
        let paid = m.jobs.iter().filter(|j| {
            records
                .get(&j.id)
                .is_some_and(|r| r.task_id.is_some() && r.credits > 0.0)
        });
        let estimate = crate::cost::Estimate::of(&m.prices, paid);
        let _ = writeln!(
            out,
            "estimated: {} credits for the same jobs at the manifest's prices ({})",
            Credits(estimate.total()),
            m.prices.describe()
        );
    }
    out
}
