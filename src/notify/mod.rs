//! What a run tells the world when it ends, besides its summary and exit code:
//! a JSON document POSTed to each `--notify` webhook (Slack's own shape for a Slack
//! incoming-webhook URL; signed the Standard Webhooks way with
//! `--notify-secret-file`) and a Prometheus text file (`--metrics-file`).
//!
//! The settings are resolved and checked before the run, so a bad URL or an
//! unreadable secret stops it before anything is sent; telling is done after it, by
//! [`after_run`], and a receiver that is down or slow only costs a warning and a
//! few seconds: the exit code and the results file are the run's, untouched.

mod deliver;
pub mod document;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use base64::Engine as _;
use reqwest::Url;

pub use deliver::{DELIVERY_DEADLINE, Delivered, sign};
pub use document::{Envelope, RunEnd};

use crate::exit::Exit;
use crate::runner::RunReport;

/// What to tell when the run ends, resolved from flags and the manifest.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub urls: Vec<Url>,
    pub secret: Option<Secret>,
    pub metrics_file: Option<PathBuf>,
}

/// The key that signs notifications. Never shown.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret as a signing-secret file holds it: `whsec_` and base64 (the
    /// Standard Webhooks form: the key is the decoded bytes), or any other text,
    /// whose bytes are the key. Surrounding white space is not part of it.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        let key = match text.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("the text after `whsec_` is not base64 ({e})"))?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("it is empty: it must hold the signing secret".to_owned());
        }
        Ok(Secret(key))
    }

    /// Reads the secret file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Secret> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read --notify-secret-file `{}`", path.display()))?;
        Secret::parse(&text)
            .map_err(|e| anyhow::anyhow!("--notify-secret-file `{}`: {e}", path.display()))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A webhook URL as `--notify` and `output: notify:` take it: http or https, with
/// a host.
pub fn parse_url(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` is not an http or https URL with a host"));
    }
    Ok(url)
}

/// True for a Slack incoming-webhook URL: `https://hooks.slack.com/services/...`
/// (or Slack's government host, `hooks.slack-gov.com`). Such a URL gets Slack's
/// shape, a `text` message, instead of the JSON document.
pub fn is_slack(url: &Url) -> bool {
    url.scheme() == "https"
        && matches!(
            url.host_str(),
            Some("hooks.slack.com" | "hooks.slack-gov.com")
        )
        && url.path().starts_with("/services/")
}

/// How a webhook URL is shown in logs: its origin only, since a webhook's path
/// is often its secret (Slack's is).
pub fn shown(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl Settings {
    /// The settings of a run: flags beat the manifest's `output:` settings (the
    /// manifest's URLs are used only when no `--notify` is given). The secret is
    /// read here, so a missing file stops the run before it starts.
    pub fn resolve(
        flag_urls: &[Url],
        flag_secret: Option<&Path>,
        flag_metrics: Option<&Path>,
        manifest: &crate::manifest::OutputSettings,
    ) -> anyhow::Result<Settings> {
        let urls = if flag_urls.is_empty() {
            manifest.notify.clone()
        } else {
            flag_urls.to_vec()
        };
        let secret = flag_secret
            .or(manifest.notify_secret_file.as_deref())
            .map(Secret::load)
            .transpose()?;
        if secret.is_some() && urls.is_empty() {
            anyhow::bail!("--notify-secret-file is given but there is no --notify URL to sign for");
        }
        let metrics_file = flag_metrics
            .map(Path::to_path_buf)
            .or_else(|| manifest.metrics_file.clone());
        if let Some(path) = &metrics_file {
            metrics::check_target(path)?;
        }
        Ok(Settings {
            urls,
            secret,
            metrics_file,
        })
    }

    /// True when nothing is to be told.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.metrics_file.is_none()
    }
}

/// Tells how the run ended: writes the metrics file and POSTs to every webhook.
/// Failures are warnings: they change neither the exit code nor the records, and
/// delivery gives up after [`DELIVERY_DEADLINE`].
pub async fn after_run(
    settings: &Settings,
    name: &str,
    report: &RunReport,
    exit: Exit,
    estimate: f64,
) {
    if settings.is_empty() {
        return;
    }
    let end = RunEnd::new(name, report, exit, estimate, SystemTime::now());
    if let Some(path) = &settings.metrics_file {
        match metrics::write(path, &end) {
            Ok(()) => tracing::info!("metrics written to {}", path.display()),
            Err(e) => tracing::warn!("the metrics file was not written: {e:#}"),
        }
    }
    if !settings.urls.is_empty() {
        deliver::deliver_all(&settings.urls, settings.secret.as_ref(), &end).await;
    }
}

#[cfg(test)]
mod tests;
