//! The `output:` section of a YAML manifest: where the results file and videos go,
//! and what is told when the run ends (`notify:` webhook URLs, the signing secret's
//! file, the metrics file). Paths are relative to the manifest.

use super::super::OutputSettings;
use super::super::node::{Node, Value};
use super::Cx;

const OUTPUT_KEYS: [&str; 5] = [
    "results",
    "videos_dir",
    "notify",
    "notify_secret_file",
    "metrics_file",
];

impl Cx<'_> {
    pub(super) fn output(&mut self, n: &Node, output: &mut OutputSettings) {
        for (k, v) in self.entries(n, "output").unwrap_or_default() {
            let name = k.key_text();
            let slot = match name.as_str() {
                "results" => &mut output.results,
                "videos_dir" => &mut output.videos_dir,
                "notify_secret_file" => &mut output.notify_secret_file,
                "metrics_file" => &mut output.metrics_file,
                "notify" => {
                    self.notify(v, &mut output.notify);
                    continue;
                }
                _ => {
                    self.unknown_key(k, None, "output", &OUTPUT_KEYS);
                    continue;
                }
            };
            if let Some(t) = self.text(v, None, &name) {
                if t.trim().is_empty() {
                    self.err(v, None, Some(&name), "must not be blank");
                } else if matches!(name.as_str(), "results" | "videos_dir")
                    && crate::store::url_scheme(t.trim()).is_some()
                {
                    // A bucket URL is kept as written (not joined to the manifest's
                    // folder); the run reads it, and refuses any other scheme, with
                    // the setting named.
                    match crate::store::parse_location(&name, t.trim()) {
                        Ok(_) => *slot = Some(std::path::PathBuf::from(t.trim())),
                        Err(e) => {
                            let shown = e.to_string();
                            let msg = shown.strip_prefix(&format!("{name}: ")).unwrap_or(&shown);
                            self.err(v, None, Some(&name), msg.to_owned());
                        }
                    }
                } else if let Some(Err(msg)) =
                    (name != "notify_secret_file").then(|| crate::store::refuse_url(t.trim()))
                {
                    self.err(v, None, Some(&name), msg);
                } else {
                    // Like include:, relative to the manifest, so it works from any folder.
                    *slot = Some(self.dir.join(t));
                }
            }
        }
    }

    /// `notify:` is one URL or a list of them.
    fn notify(&mut self, v: &Node, urls: &mut Vec<reqwest::Url>) {
        let items: Vec<&Node> = match &v.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![v],
        };
        for item in items {
            let Some(t) = self.text(item, None, "notify") else {
                continue;
            };
            match crate::notify::parse_url(&t) {
                Ok(url) => urls.push(url),
                Err(e) => self.err(item, None, Some("notify"), e),
            }
        }
    }
}
