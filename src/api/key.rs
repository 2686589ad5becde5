//! The API key: read from `--api-key-file` or `KIE_API_KEY`, never a flag, and
//! never shown (its `Debug` is redacted; errors name the source, not the key).

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};

/// The environment variable the key is read from when no key file is given.
pub const KEY_ENV: &str = "KIE_API_KEY";

/// The API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads the key from `file` (the `--api-key-file` path) when given, else
    /// from `KIE_API_KEY`. Never a flag: a flag would land in shell history and
    /// in `ps` output.
    pub fn load(file: Option<&Path>) -> anyhow::Result<ApiKey> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read api key file `{}`", path.display()))?;
                ApiKey::from_source(&text, &format!("api key file `{}`", path.display()))
            }
            None => match std::env::var(KEY_ENV) {
                Ok(text) => ApiKey::from_source(&text, KEY_ENV),
                Err(std::env::VarError::NotPresent) => bail!(
                    "no api key: set {KEY_ENV} or pass --api-key-file PATH \
                     (or use --simulate to run without one)"
                ),
                Err(std::env::VarError::NotUnicode(_)) => {
                    bail!("{KEY_ENV} is not valid utf-8")
                }
            },
        }
    }

    /// Trims and checks a key read from `source` (named in errors; the key never is).
    fn from_source(text: &str, source: &str) -> anyhow::Result<ApiKey> {
        let key = text.trim();
        if key.is_empty() {
            bail!("{source} is empty: it must hold the kie.ai api key");
        }
        // The key goes into an HTTP header: anything but visible ASCII would
        // fail later with a less helpful message.
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            bail!(
                "{source} holds characters that cannot be sent in an http header \
                 (spaces, control or non-ascii characters inside the key)"
            );
        }
        Ok(ApiKey(key.to_owned()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_source_trims_and_rejects_empty() {
        let k = ApiKey::from_source("  abc123\n", "x").unwrap();
        assert_eq!(k.expose(), "abc123");
        let e = ApiKey::from_source(" \n\t", "KIE_API_KEY").unwrap_err();
        assert_eq!(
            e.to_string(),
            "KIE_API_KEY is empty: it must hold the kie.ai api key"
        );
        let e = ApiKey::from_source("ab cd", "KIE_API_KEY").unwrap_err();
        assert!(!e.to_string().contains("ab cd"), "{e}");
    }

    #[test]
    fn key_file_errors_name_the_file_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let e = ApiKey::load(Some(&path)).unwrap_err();
        assert!(
            format!("{e:#}").contains("failed to read api key file"),
            "{e:#}"
        );
        std::fs::write(&path, "\n").unwrap();
        let e = ApiKey::load(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, "secret-key-42\n").unwrap();
        let k = ApiKey::load(Some(&path)).unwrap();
        assert_eq!(k.expose(), "secret-key-42");
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
    }
}
