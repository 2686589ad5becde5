//! Reading a YAML manifest's text safely: a size cap before the parser sees it,
//! parser budgets that refuse alias bombs and deep nesting, YAML 1.2 booleans, and
//! the parser's errors said in the manifest's own terms (with a hint where a brace
//! started a mapping the user meant as text).

use std::io::Read;
use std::path::Path;

use super::MAX_YAML_BYTES;

pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let cannot =
        |e: std::io::Error| format!("cannot read the manifest: {}", super::super::io_message(&e));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "the manifest is larger than {} MiB, the most a YAML manifest may be \
             (put large batches in a CSV table, which is read row by row)",
            limit / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// 1-based line and column (in characters) just after `valid`.
pub(crate) fn line_col(valid: &[u8]) -> (usize, usize) {
    let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
    let start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&valid[start..]).chars().count() + 1;
    (line, column)
}

/// Parser limits: generous for a 250,000-job manifest, far below what an alias bomb or
/// deep nesting would need, so such a file is refused rather than eating memory.
pub(super) fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(usize::try_from(MAX_YAML_BYTES).unwrap_or(usize::MAX));
    budget.max_nodes = 2_000_000;
    budget.max_events = 5_000_000;
    budget.max_depth = 32;
    budget.max_aliases = 10_000;
    // One more than allowed, so that a second document gets its own clear message.
    budget.max_documents = 2;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.with_snippet = false;
    // YAML 1.2: only true and false are booleans; `yes`, `no`, `on`, `off`, `y` and `n`
    // are words (a matrix key `n`, a colour `no`), as the user wrote them.
    opts.strict_booleans = true;
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts
}

/// Advice for a YAML error on `line` when it holds a `{` outside quotes after a `[`:
/// in a flow list, `[shots/{colour}.png]`, the brace starts a mapping.
pub(super) fn brace_hint(line: &str) -> &'static str {
    let mut quote = None;
    let mut in_list = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '[') => in_list = true,
            (None, '{') if in_list => {
                return "; a `{` inside a [...] list starts a YAML mapping: quote the entry, \
                        like [\"shots/{colour}.png\"]";
            }
            _ => {}
        }
    }
    ""
}

/// The parser's message, without its own position (ours comes first) and with a word
/// on why a budget refusal happened.
pub(super) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let text = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    // One problem per line of output, whatever the parser's message holds.
    let text = text.replace(['\n', '\r'], " ");
    let text = text.as_str();
    let lower = text.to_ascii_lowercase();
    if lower.contains("budget")
        || lower.contains("recursion limit")
        || lower.contains("alias") && lower.contains("limit")
    {
        format!(
            "refused: the YAML is too large or too deeply nested to read safely ({text}); \
             aliases that expand to huge trees are not allowed"
        )
    } else if lower.contains("multiple yaml documents") {
        "a manifest is one YAML document; remove the `---` separators".to_owned()
    } else {
        format!("invalid YAML: {text}")
    }
}
