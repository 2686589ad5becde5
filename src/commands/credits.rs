//! `veo-batch credits`: the account's remaining credits, as the service says them.

use crate::api::KeyRing;
use crate::cli::CreditsArgs;
use crate::exit::Exit;

/// Runs `credits`. A refused key or exhausted credits end it with
/// [`Exit::ServiceStopped`], any other failure of the call with
/// [`Exit::JobsFailed`] ([`Exit::of_error`] reads the service's error).
pub async fn run(args: CreditsArgs) -> anyhow::Result<Exit> {
    crate::api::check_bases(
        &args.service.api_base,
        None,
        args.service.allow_insecure_http,
    )?;
    let ring = KeyRing::load(args.service.api_key_file.as_deref())?;
    let key = super::run::one_key(ring, "credits")?;
    let client = super::run::client(
        args.service.api_base,
        key,
        crate::config::DEFAULT_REQUEST_TIMEOUT,
        None,
        args.service.allow_insecure_http,
    )?;
    let credits = client
        .credit()
        .await
        .map_err(|e| anyhow::Error::from(e).context("failed to read the credit balance"))?;
    super::print_stdout(format!("{credits}\n").as_bytes())
}
