//! YAML campaign manifests: the top-level keys, `defaults`, `jobs` with `matrix` and
//! `repeat`, `include`d CSV tables, and the `run`, `output`, `prices` and `extra`
//! settings. The file is read into located nodes under a parsing budget (so an alias
//! bomb or absurd nesting is refused, not expanded) and walked by hand so that every
//! problem is reported, each at its line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::cost::PriceTable;
use crate::request::{Field, FieldValue, Kind, did_you_mean, field_names};
use crate::units::{Rate, Span};

use super::job::{Draft, Gatherer, diag};
use super::node::{Node, Value, scalar_text};
use super::table::{self, TableInput, upgrade_refused, upgrade_value};
use super::{Origin, OutputSettings, RunSettings};

mod expand;
mod output;
mod parse;
mod prices;

use parse::{brace_hint, options, yaml_message};
pub(crate) use parse::{line_col, read_capped};

/// The largest YAML manifest read; bigger batches belong in a CSV table, which streams.
pub(crate) const MAX_YAML_BYTES: u64 = 64 * 1024 * 1024;
/// The most jobs one job entry may expand to (matrix combinations times repeat).
pub(crate) const MAX_EXPANSION: usize = 100_000;

const TOP_KEYS: [&str; 9] = [
    "name",
    "defaults",
    "jobs",
    "include",
    "output",
    "run",
    "prices",
    "extra",
    "allow_images_from",
];
const JOB_ONLY_KEYS: [&str; 4] = ["id", "matrix", "repeat", "extend"];
const JOB_EXTRA_KEYS: [&str; 2] = ["upgrade", "keep_original"];
const RUN_KEYS: [&str; 7] = [
    "concurrency",
    "rate",
    "max_attempts",
    "poll_interval",
    "task_timeout",
    "request_timeout",
    "max_credits",
];

/// What a YAML manifest sets besides its jobs.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub name: Option<String>,
    pub run: RunSettings,
    pub output: OutputSettings,
    pub prices: PriceTable,
}

/// Reads the YAML manifest at `path`; jobs and problems go to `out`.
pub(crate) fn read(path: &Path, out: &mut Gatherer) -> Settings {
    let mut settings = Settings::default();
    let file_at = Origin {
        file: path.to_path_buf(),
        line: None,
        column: None,
    };
    let bytes = match read_capped(path, MAX_YAML_BYTES) {
        Ok(b) => b,
        Err(msg) => {
            out.error(diag(file_at, None, None, msg));
            return settings;
        }
    };
    let src = match std::str::from_utf8(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let (line, column) = line_col(&bytes[..e.valid_up_to()]);
            let at = Origin {
                file: path.to_path_buf(),
                line: Some(line),
                column: Some(column),
            };
            out.error(diag(
                at,
                None,
                None,
                "is not valid UTF-8 (save the file as UTF-8)",
            ));
            return settings;
        }
    };
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut root: Node = match serde_saphyr::from_str_with_options(src, options()) {
        Ok(n) => n,
        Err(e) => {
            let loc = e.location();
            let at = Origin {
                file: path.to_path_buf(),
                line: loc
                    .and_then(|l| usize::try_from(l.line()).ok())
                    .filter(|l| *l > 0),
                column: loc
                    .and_then(|l| usize::try_from(l.column()).ok())
                    .filter(|c| *c > 0),
            };
            let hint = at
                .line
                .and_then(|l| src.lines().nth(l - 1))
                .map_or("", brace_hint);
            out.error(diag(at, None, None, format!("{}{hint}", yaml_message(&e))));
            return settings;
        }
    };
    super::node::keys_as_written(&mut root, src);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Cx {
        src,
        file: path.to_path_buf(),
        dir,
        out,
    };
    cx.manifest(&root, &mut settings);
    settings
}

struct Cx<'a> {
    src: &'a str,
    file: PathBuf,
    dir: PathBuf,
    out: &'a mut Gatherer,
}

impl Cx<'_> {
    fn at(&self, n: &Node) -> Origin {
        Origin {
            file: self.file.clone(),
            line: (n.line > 0).then_some(n.line),
            column: (n.column > 0).then_some(n.column),
        }
    }

    fn err(&mut self, n: &Node, job: Option<&str>, field: Option<&str>, msg: impl Into<String>) {
        let d = diag(self.at(n), job, field, msg);
        self.out.error(d);
    }

    fn entries<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n [(Node, Node)]> {
        match &n.value {
            Value::Map(e) => Some(e),
            Value::Null => Some(&[]),
            other => {
                let msg = format!("must be a mapping of keys to values, got {}", other.kind());
                self.err(n, None, Some(what), msg);
                None
            }
        }
    }

    fn unknown_key(&mut self, key: &Node, job: Option<&str>, section: &str, allowed: &[&str]) {
        let name = key.key_text();
        let msg = match did_you_mean(&name, allowed.iter().copied()) {
            Some(s) => format!("unknown key in {section} (did you mean {s}?)"),
            None => format!("unknown key in {section} (allowed: {})", allowed.join(", ")),
        };
        self.err(key, job, Some(&name), msg);
    }

    fn text(&mut self, n: &Node, job: Option<&str>, field: &str) -> Option<String> {
        match scalar_text(n, self.src) {
            Some(t) => Some(t),
            None => {
                // `{colour}` unquoted is a mapping of one key without a value.
                let hint = match &n.value {
                    Value::Map(entries)
                        if entries.len() == 1 && entries[0].1.value == Value::Null =>
                    {
                        format!(
                            " (unquoted, {{{0}}} is a YAML mapping: write \"{{{0}}}\" in quotes)",
                            entries[0].0.key_text()
                        )
                    }
                    _ => String::new(),
                };
                let msg = format!("must be text, got {}{hint}", n.value.kind());
                self.err(n, job, Some(field), msg);
                None
            }
        }
    }

    fn int(&mut self, n: &Node, job: Option<&str>, field: &str, min: i64) -> Option<i64> {
        match &n.value {
            Value::Int(i) if *i >= min => Some(*i),
            Value::Int(_) | Value::BigInt(_) => {
                let msg = format!(
                    "{} is out of range (a whole number, {min} or more)",
                    n.value
                );
                self.err(n, job, Some(field), msg);
                None
            }
            other => {
                let msg = format!("must be a whole number, got {}", other.kind());
                self.err(n, job, Some(field), msg);
                None
            }
        }
    }

    fn number(&mut self, n: &Node, field: &str) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "prices are far below 2^52")]
        let x = match &n.value {
            Value::Int(i) => *i as f64,
            Value::Float(x) => *x,
            other => {
                let msg = format!("must be a number, got {}", other.kind());
                self.err(n, None, Some(field), msg);
                return None;
            }
        };
        if x.is_finite() && x >= 0.0 {
            Some(x)
        } else {
            self.err(
                n,
                None,
                Some(field),
                format!("{x} is not allowed (a number, 0 or more)"),
            );
            None
        }
    }

    fn boolean(&mut self, n: &Node, job: Option<&str>, field: &str) -> Option<bool> {
        match &n.value {
            Value::Bool(b) => Some(*b),
            Value::Str(word)
                if ["yes", "no", "on", "off", "y", "n"]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(word)) =>
            {
                let msg = format!(
                    "must be true or false, got the word {word:?} (YAML 1.2, which manifests \
                     follow, reads it as text)"
                );
                self.err(n, job, Some(field), msg);
                None
            }
            other => {
                let msg = format!("must be true or false, got {}", other.kind());
                self.err(n, job, Some(field), msg);
                None
            }
        }
    }

    fn span(&mut self, n: &Node, field: &str) -> Option<Span> {
        let t = self.text(n, None, field)?;
        match t.parse::<Span>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(n, None, Some(field), e);
                None
            }
        }
    }

    fn manifest(&mut self, root: &Node, settings: &mut Settings) {
        let entries = match &root.value {
            Value::Map(e) => e.as_slice(),
            Value::Null => {
                let msg = "the manifest is empty (it needs jobs: or include:)";
                self.err(root, None, None, msg);
                return;
            }
            other => {
                let msg = format!(
                    "a manifest must be a mapping with keys like name:, defaults: and jobs:, got {}",
                    other.kind()
                );
                self.err(root, None, None, msg);
                return;
            }
        };
        let mut top: BTreeMap<String, &Node> = BTreeMap::new();
        for (k, v) in entries {
            let name = k.key_text();
            if TOP_KEYS.contains(&name.as_str()) {
                top.insert(name, v);
            } else {
                self.unknown_key(k, None, "the manifest", &TOP_KEYS);
            }
        }
        if let Some(n) = top.get("name") {
            settings.name = self.text(n, None, "name");
            if let Some(name) = &settings.name
                && let Some(why) = super::job::id_problem(name)
            {
                self.err(n, None, Some("name"), why);
            }
        }
        if let Some(n) = top.get("prices") {
            self.prices(n, &mut settings.prices);
        }
        // Read before the jobs, which are checked against it as they are finished.
        self.out.prices = settings.prices;
        if let Some(n) = top.get("run") {
            self.run(n, &mut settings.run);
        }
        if let Some(n) = top.get("output") {
            self.output(n, &mut settings.output);
        }
        if let Some(n) = top.get("allow_images_from") {
            self.allow_images_from(n);
        }
        let extra = top.get("extra").map(|n| self.extra(n)).unwrap_or_default();
        let defaults = match top.get("defaults") {
            Some(n) => self.defaults(n),
            None => Draft::default(),
        };
        if let Some(n) = top.get("jobs") {
            match &n.value {
                Value::Seq(jobs) => {
                    for j in jobs {
                        self.job(j, &defaults, &extra);
                    }
                }
                Value::Null => {}
                other => {
                    let msg = format!(
                        "must be a list of jobs (each starting with -), got {}",
                        other.kind()
                    );
                    self.err(n, None, Some("jobs"), msg);
                }
            }
        }
        if let Some(n) = top.get("include") {
            let items: Vec<&Node> = match &n.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![n],
            };
            for item in items {
                self.include(item, &defaults, &extra);
            }
        }
        if !top.contains_key("jobs") && !top.contains_key("include") {
            self.err(
                root,
                None,
                None,
                "the manifest has no jobs (add jobs: or include:)",
            );
        }
    }

    fn run(&mut self, n: &Node, run: &mut RunSettings) {
        for (k, v) in self.entries(n, "run").unwrap_or_default() {
            let name = k.key_text();
            match name.as_str() {
                "concurrency" => {
                    run.concurrency = self
                        .int(v, None, &name, 1)
                        .and_then(|i| usize::try_from(i).ok());
                }
                "max_attempts" => {
                    run.max_attempts = self
                        .int(v, None, &name, 1)
                        .and_then(|i| u32::try_from(i).ok());
                }
                "rate" => {
                    if let Some(t) = self.text(v, None, &name) {
                        match t.parse::<Rate>() {
                            Ok(r) => run.rate = Some(r),
                            Err(e) => self.err(v, None, Some(&name), e),
                        }
                    }
                }
                "poll_interval" => run.poll_interval = self.span(v, &name),
                "task_timeout" => run.task_timeout = self.span(v, &name),
                "request_timeout" => run.request_timeout = self.span(v, &name),
                "max_credits" => run.max_credits = self.number(v, &name),
                _ => self.unknown_key(k, None, "run", &RUN_KEYS),
            }
        }
    }

    /// `allow_images_from:`: folders (relative to the manifest) that its local images
    /// may also come from; read before the jobs, whose images are checked against them.
    fn allow_images_from(&mut self, n: &Node) {
        let items: Vec<&Node> = match &n.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            let Some(t) = self.text(item, None, "allow_images_from") else {
                continue;
            };
            if t.trim().is_empty() {
                self.err(item, None, Some("allow_images_from"), "must not be blank");
            } else if let Some(roots) = &mut self.out.images.roots {
                roots.push(self.dir.join(t));
            }
        }
    }

    fn extra(&mut self, n: &Node) -> BTreeMap<String, Json> {
        let mut extra = BTreeMap::new();
        for (k, v) in self.entries(n, "extra").unwrap_or_default() {
            let name = k.key_text();
            if Field::from_name(&name).is_some() {
                let msg = "is a request field; set it in defaults: or on jobs, not under extra:";
                self.err(k, None, Some(&name), msg);
                continue;
            }
            match to_json(v) {
                Ok(j) => {
                    extra.insert(name, j);
                }
                Err(msg) => self.err(v, None, Some(&name), msg),
            }
        }
        extra
    }

    fn defaults(&mut self, n: &Node) -> Draft {
        let mut d = Draft {
            at: self.at(n),
            ..Draft::default()
        };
        for (k, v) in self.entries(n, "defaults").unwrap_or_default() {
            let name = k.key_text();
            if let Some(f) = Field::from_name(&name) {
                self.set_field(&mut d, f, v, None);
            } else if name == "upgrade" {
                self.set_upgrade(&mut d, v, None);
            } else if name == "keep_original" {
                d.keep_original = self.boolean(v, None, &name);
            } else if JOB_ONLY_KEYS.contains(&name.as_str()) {
                let msg = "cannot be a default (it belongs on each job)";
                self.err(k, None, Some(&name), msg);
            } else {
                let allowed: Vec<&str> = field_names().chain(JOB_EXTRA_KEYS).collect();
                self.unknown_key(k, None, "defaults", &allowed);
            }
        }
        d
    }

    /// Sets a request field from a YAML value, read as the field's kind; a value of the
    /// wrong type is reported and marks the draft bad.
    fn set_field(&mut self, d: &mut Draft, f: Field, v: &Node, job: Option<&str>) {
        if v.value == Value::Null {
            return;
        }
        let name = f.api_name();
        let value = match f.kind() {
            Kind::Text | Kind::Token => self.text(v, job, name).map(FieldValue::Text),
            Kind::Urls => match &v.value {
                Value::Seq(items) => {
                    let mut urls = Vec::with_capacity(items.len());
                    let mut at = Vec::with_capacity(items.len());
                    let mut ok = true;
                    for item in items {
                        match self.text(item, job, name) {
                            Some(t) => {
                                urls.push(t);
                                at.push(self.at(item));
                            }
                            None => ok = false,
                        }
                    }
                    d.image_at = at;
                    if ok {
                        Some(FieldValue::Urls(urls))
                    } else {
                        // Kept for the rules, whose complaints about the field are
                        // left out now that it was reported.
                        d.raw.image_urls = Some(urls);
                        None
                    }
                }
                other => {
                    let msg = format!(
                        "must be a list of image URLs (like [\"https://...\"]), got {}",
                        other.kind()
                    );
                    self.err(v, job, Some(name), msg);
                    None
                }
            },
            Kind::Int => match &v.value {
                Value::Int(i) => Some(FieldValue::Int(*i)),
                Value::BigInt(b) => {
                    let msg = format!("{b} is out of range ({})", f.int_range());
                    self.err(v, job, Some(name), msg);
                    None
                }
                other => {
                    let msg = format!("must be {}, got {}", f.int_range(), other.kind());
                    self.err(v, job, Some(name), msg);
                    None
                }
            },
            Kind::Bool => self.boolean(v, job, name).map(FieldValue::Bool),
        };
        let set = match value {
            Some(value) => d
                .raw
                .set(f, value)
                .map_err(|msg| self.err(v, job, Some(name), msg)),
            None => Err(()),
        };
        if set.is_ok() {
            d.field_at.insert(f, self.at(v));
        } else {
            d.bad = true;
            d.bad_fields.push(f);
        }
    }

    fn set_upgrade(&mut self, d: &mut Draft, v: &Node, job: Option<&str>) {
        let Some(t) = self.text(v, job, "upgrade") else {
            d.bad = true;
            return;
        };
        match upgrade_value(&t) {
            Some(u) => {
                d.upgrade = Some(u);
                d.upgrade_at = Some(self.at(v));
            }
            None => {
                self.err(v, job, Some("upgrade"), upgrade_refused(&t));
                d.bad = true;
            }
        }
    }

    fn include(&mut self, item: &Node, defaults: &Draft, extra: &BTreeMap<String, Json>) {
        let Some(rel) = self.text(item, None, "include") else {
            return;
        };
        let path = self.dir.join(&rel);
        let is_csv = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if !is_csv {
            let msg = format!("{rel:?} is not a CSV table (only .csv files can be included)");
            self.err(item, None, Some("include"), msg);
            return;
        }
        let input = TableInput {
            path: &path,
            defaults: Some(defaults),
            extra,
        };
        if let Err(e) = table::read(&input, self.out) {
            let msg = format!("cannot read {}: {}", path.display(), super::io_message(&e));
            self.err(item, None, Some("include"), msg);
        }
    }
}

/// An `extra:` value as JSON, for the request body.
fn to_json(n: &Node) -> Result<Json, String> {
    Ok(match &n.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::BigInt(s) | Value::Str(s) => Json::from(s.as_str()),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .ok_or_else(|| format!("{x} cannot be sent as JSON"))?,
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.key_text(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
