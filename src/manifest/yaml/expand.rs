//! Expansion of one `jobs:` entry: its matrix (every combination, placeholders filled
//! in `id` and `prompt`), its `repeat` copies and their seeds, each finished into a
//! job with the manifest's defaults and extra fields.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::request::{Field, did_you_mean, field_names};

use super::super::Origin;
use super::super::job::{Draft, diag, placeholders, substitute};
use super::super::node::{Node, Value, scalar_text};
use super::{Cx, JOB_EXTRA_KEYS, JOB_ONLY_KEYS, MAX_EXPANSION};

/// One matrix key and its values.
pub(super) struct MatrixKey<'n> {
    name: String,
    key: &'n Node,
    kind: MatrixKind,
    values: &'n [Node],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MatrixKind {
    Field(Field),
    Upgrade,
    KeepOriginal,
    Placeholder,
}

/// What one `jobs:` entry says, read key by key, before its matrix is judged.
struct Entry<'n> {
    /// The entry itself, where problems of the whole entry are reported.
    node: &'n Node,
    id: Option<String>,
    id_node: Option<&'n Node>,
    /// The job's own fields, before the matrix, the defaults and the copies.
    base: Draft,
    matrix: Option<&'n Node>,
    repeat: Option<(usize, &'n Node)>,
    seed_list: Option<&'n Node>,
    extend: Option<(String, &'n Node)>,
}

/// The placeholder names the matrix declares, for checking `{name}` in the entry's text.
struct Known<'k> {
    names: Vec<&'k str>,
    /// How the known names are said in a message.
    said: String,
    /// The names some text uses.
    used: Vec<String>,
}

impl Cx<'_> {
    /// One entry of `jobs:`, expanded by its matrix and repeat into finished jobs.
    pub(super) fn job(&mut self, n: &Node, defaults: &Draft, extra: &BTreeMap<String, Json>) {
        let Some(mut entry) = self.read_entry(n) else {
            return;
        };
        let keys = match entry.matrix {
            Some(m) => match self.matrix(m, &entry.base, entry.id.as_deref()) {
                Some(keys) => keys,
                // Without a sound matrix, placeholders and ids cannot be judged.
                None => return,
            },
            None => Vec::new(),
        };
        let seeds = self.seeds(&mut entry);
        let used = self.check_placeholders(&mut entry, &keys, defaults);
        self.check_keys_used(&mut entry, &keys, &used);
        if !self.id_tells_combinations_apart(&entry, &keys)
            || !self.expansion_is_bounded(&entry, &keys)
            || !self.id_is_given(&entry)
        {
            return;
        }
        self.expand(&entry, &keys, &seeds, defaults, extra);
    }

    /// Reads the entry's keys: its fields into a draft, and the keys that shape the
    /// expansion (matrix, repeat, a list of seeds, extend) aside. `None` when the entry
    /// is not a mapping.
    fn read_entry<'n>(&mut self, n: &'n Node) -> Option<Entry<'n>> {
        let Value::Map(entries) = &n.value else {
            let msg = format!(
                "a job must be a mapping with id:, prompt: and other fields, got {}",
                n.value.kind()
            );
            self.err(n, None, None, msg);
            return None;
        };
        let id_node = entries
            .iter()
            .find(|(k, _)| k.key_str() == "id")
            .map(|(_, v)| v);
        let id = id_node.and_then(|v| self.text(v, None, "id"));
        let mut e = Entry {
            node: n,
            base: Draft {
                at: self.at(n),
                id_at: id_node.map(|v| self.at(v)),
                ..Draft::default()
            },
            id,
            id_node,
            matrix: None,
            repeat: None,
            seed_list: None,
            extend: None,
        };
        for (k, v) in entries {
            self.entry_key(&mut e, k, v);
        }
        Some(e)
    }

    /// One key of an entry and its value.
    fn entry_key<'n>(&mut self, e: &mut Entry<'n>, k: &'n Node, v: &'n Node) {
        let job = e.id.as_deref();
        let base = &mut e.base;
        let name = k.key_str();
        let name = name.as_ref();
        match name {
            "id" => {}
            "matrix" => e.matrix = Some(v),
            "repeat" => {
                if let Some(r) = self.int(v, job, "repeat", 1) {
                    e.repeat = usize::try_from(r).ok().map(|r| (r, v));
                } else {
                    base.bad = true;
                }
            }
            "extend" => match self.text(v, job, "extend") {
                Some(t) => {
                    base.extend = Some(t.clone());
                    base.extend_at = Some(self.at(v));
                    e.extend = Some((t, v));
                }
                None => base.bad = true,
            },
            "upgrade" => self.set_upgrade(base, v, job),
            "keep_original" => match self.boolean(v, job, name) {
                Some(b) => base.keep_original = Some(b),
                None => base.bad = true,
            },
            _ => match Field::from_name(name) {
                Some(Field::Seeds) if matches!(v.value, Value::Seq(_)) => e.seed_list = Some(v),
                Some(f) => {
                    if base.field_at.contains_key(&f) || base.bad_fields.contains(&f) {
                        let msg =
                            format!("is set twice (as {} and another spelling)", f.api_name());
                        self.err(k, job, Some(name), msg);
                        base.bad = true;
                    } else {
                        self.set_field(base, f, v, job);
                    }
                }
                None => {
                    let allowed: Vec<&str> = field_names()
                        .chain(JOB_ONLY_KEYS)
                        .chain(JOB_EXTRA_KEYS)
                        .collect();
                    self.unknown_key(k, job, "a job", &allowed);
                    base.bad = true;
                }
            },
        }
    }

    /// The seed of each copy, from a list of seeds; empty without one, or when the
    /// list is refused (the draft is then marked bad).
    fn seeds(&mut self, e: &mut Entry<'_>) -> Vec<(i64, Origin)> {
        let Some(s) = e.seed_list else {
            return Vec::new();
        };
        match self.seed_list(s, e.repeat, e.id.as_deref()) {
            Some(list) => list,
            None => {
                e.base.bad = true;
                Vec::new()
            }
        }
    }

    /// Every `{name}` in the id, the extend parent, the prompt and the image paths must
    /// be a matrix key; returns the names used. The prompt and images are not checked
    /// when the matrix sets them itself.
    fn check_placeholders(
        &mut self,
        e: &mut Entry<'_>,
        keys: &[MatrixKey<'_>],
        defaults: &Draft,
    ) -> Vec<String> {
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let said = if names.is_empty() {
            "this job has no matrix".to_owned()
        } else {
            format!("the matrix has: {}", names.join(", "))
        };
        let mut known = Known {
            names,
            said,
            used: Vec::new(),
        };
        let job = e.id.as_deref();
        if let (Some(id), Some(idn)) = (job, e.id_node) {
            let at = self.at(idn);
            e.base.bad |= !self.placeholders_known(id, &mut known, at, job, "id");
        }
        if let Some((parent, node)) = &e.extend {
            let at = self.at(node);
            e.base.bad |= !self.placeholders_known(parent, &mut known, at, job, "extend");
        }
        let from_matrix = |f: Field| keys.iter().any(|k| k.kind == MatrixKind::Field(f));
        let (prompt, prompt_at) = match (&e.base.raw.prompt, &defaults.raw.prompt) {
            (Some(p), _) => (Some(p), e.base.field_at.get(&Field::Prompt)),
            (None, Some(p)) => (Some(p), defaults.field_at.get(&Field::Prompt)),
            (None, None) => (None, None),
        };
        if let Some(p) = prompt.filter(|_| !from_matrix(Field::Prompt)) {
            let at = prompt_at.cloned().unwrap_or_else(|| e.base.at.clone());
            e.base.bad |= !self.placeholders_known(p, &mut known, at, job, "prompt");
        }
        // Image paths take placeholders too, so that each combination can name its own
        // file (`shots/{colour}.png`); not when the matrix sets the images itself.
        let (images, images_at) = match (&e.base.raw.image_urls, &defaults.raw.image_urls) {
            (Some(urls), _) => (urls.as_slice(), e.base.image_at.as_slice()),
            (None, Some(urls)) => (urls.as_slice(), defaults.image_at.as_slice()),
            (None, None) => (&[][..], &[][..]),
        };
        let field = Field::ImageUrls.api_name();
        for (i, url) in images.iter().enumerate() {
            if from_matrix(Field::ImageUrls) {
                break;
            }
            let at = images_at
                .get(i)
                .cloned()
                .unwrap_or_else(|| e.base.at.clone());
            e.base.bad |= !self.placeholders_known(url, &mut known, at, job, field);
        }
        known.used
    }

    /// Notes each `{name}` of `text` the matrix knows as used and reports each other one
    /// at `at` under `field`; whether all were known.
    fn placeholders_known(
        &mut self,
        text: &str,
        known: &mut Known<'_>,
        at: Origin,
        job: Option<&str>,
        field: &str,
    ) -> bool {
        let mut all = true;
        for p in placeholders(text) {
            if known.names.contains(&p) {
                known.used.push(p.to_owned());
            } else {
                let msg = format!(
                    "unknown placeholder {{{p}}} ({}; write {{{{ for a literal brace)",
                    known.said
                );
                self.out.error(diag(at.clone(), job, Some(field), msg));
                all = false;
            }
        }
        all
    }

    /// A matrix key that is not a field must be used by some placeholder.
    fn check_keys_used(&mut self, e: &mut Entry<'_>, keys: &[MatrixKey<'_>], used: &[String]) {
        for k in keys {
            if k.kind == MatrixKind::Placeholder && !used.contains(&k.name) {
                let hint = did_you_mean(&k.name, field_names())
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                let msg = format!(
                    "matrix key is not used: it is not a request field and no {{{}}} placeholder \
                     in id, prompt or imageUrls uses it{hint}",
                    k.name
                );
                self.err(k.key, e.id.as_deref(), Some(&k.name), msg);
                e.base.bad = true;
            }
        }
    }

    /// A matrix of several combinations needs each varying key in the id, or every
    /// combination would have the same id.
    fn id_tells_combinations_apart(&mut self, e: &Entry<'_>, keys: &[MatrixKey<'_>]) -> bool {
        let id_uses: Vec<&str> = e.id.as_deref().map(placeholders).unwrap_or_default();
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| k.values.len() > 1 && !id_uses.contains(&k.name.as_str()))
            .map(|k| format!("{{{}}}", k.name))
            .collect();
        let (false, Some(id), Some(idn)) = (missing.is_empty(), &e.id, e.id_node) else {
            return true;
        };
        let msg = format!(
            "{id:?} would be the same for several matrix combinations; add {} to it",
            missing.join(" and ")
        );
        self.err(idn, e.id.as_deref(), Some("id"), msg);
        // Expanding would only add a duplicate-id report per combination.
        false
    }

    /// The combinations times the copies stay within [`MAX_EXPANSION`].
    fn expansion_is_bounded(&mut self, e: &Entry<'_>, keys: &[MatrixKey<'_>]) -> bool {
        let copies = e.repeat.map_or(1, |(r, _)| r);
        let combos = keys
            .iter()
            .try_fold(1usize, |acc, k| acc.checked_mul(k.values.len()))
            .and_then(|c| c.checked_mul(copies));
        if combos.is_some_and(|c| c <= MAX_EXPANSION) {
            return true;
        }
        let at = e.matrix.or(e.repeat.map(|(_, n)| n)).unwrap_or(e.node);
        let msg = format!("this job would expand to more than {MAX_EXPANSION} jobs; split it");
        self.err(at, e.id.as_deref(), None, msg);
        false
    }

    /// The entry has an id to expand.
    fn id_is_given(&mut self, e: &Entry<'_>) -> bool {
        if e.id.is_some() {
            return true;
        }
        // Reported once, here, not once per combination (and not again when the
        // id was there but not text: that was reported already).
        if e.id_node.is_none() {
            let msg = "is required (a short unique name: it names the video file and is \
                       the resume key)";
            self.err(e.node, None, Some("id"), msg);
        }
        false
    }

    /// Finishes one job per combination of the matrix and per copy, the last key
    /// turning fastest.
    fn expand(
        &mut self,
        e: &Entry<'_>,
        keys: &[MatrixKey<'_>],
        seeds: &[(i64, Origin)],
        defaults: &Draft,
        extra: &BTreeMap<String, Json>,
    ) {
        let copies = e.repeat.map_or(1, |(r, _)| r);
        let mut index = vec![0usize; keys.len()];
        loop {
            let (d, values) = self.combination(e, keys, &index, defaults, extra);
            let id = e.id.as_deref().map(|t| substitute(t, &values));
            for copy in 1..=copies {
                let mut c = d.clone();
                c.id = match (&id, e.repeat) {
                    (Some(id), Some(_)) => Some(format!("{id}-{copy}")),
                    (id, _) => id.clone(),
                };
                if let Some((seed, at)) = seeds.get(copy - 1) {
                    c.raw.seeds = Some(*seed);
                    c.field_at.insert(Field::Seeds, at.clone());
                }
                self.out.finish(c);
            }
            if !next_combination(&mut index, keys) {
                return;
            }
        }
    }

    /// The draft of one combination (the values of the matrix at `index` set, the
    /// defaults and extras applied, placeholders filled), and the text of each value.
    fn combination<'k>(
        &mut self,
        e: &Entry<'_>,
        keys: &'k [MatrixKey<'_>],
        index: &[usize],
        defaults: &Draft,
        extra: &BTreeMap<String, Json>,
    ) -> (Draft, BTreeMap<&'k str, String>) {
        let job = e.id.as_deref();
        let mut d = e.base.clone();
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        for (k, &i) in keys.iter().zip(index) {
            let Some(v) = k.values.get(i) else { continue };
            match k.kind {
                MatrixKind::Field(f) => self.set_field(&mut d, f, v, job),
                MatrixKind::Upgrade => self.set_upgrade(&mut d, v, job),
                MatrixKind::KeepOriginal => match self.boolean(v, job, &k.name) {
                    Some(b) => d.keep_original = Some(b),
                    None => d.bad = true,
                },
                MatrixKind::Placeholder => {}
            }
            let text = match &v.value {
                Value::Seq(items) => items
                    .iter()
                    .filter_map(|i| scalar_text(i, self.src))
                    .collect::<Vec<_>>()
                    .join("|"),
                _ => scalar_text(v, self.src).unwrap_or_default(),
            };
            values.insert(k.name.as_str(), text);
        }
        if let Some((parent, _)) = &e.extend {
            d.extend = Some(substitute(parent, &values));
        }
        d.apply_defaults(defaults);
        for (k, v) in extra {
            d.raw.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let from_matrix = |f: Field| keys.iter().any(|k| k.kind == MatrixKind::Field(f));
        if !from_matrix(Field::Prompt)
            && let Some(p) = &d.raw.prompt
        {
            d.raw.prompt = Some(substitute(p, &values));
        }
        if !from_matrix(Field::ImageUrls)
            && let Some(urls) = &mut d.raw.image_urls
        {
            for url in urls.iter_mut().filter(|u| u.contains('{')) {
                *url = substitute(url, &values);
            }
        }
        (d, values)
    }

    fn matrix<'n>(
        &mut self,
        m: &'n Node,
        base: &Draft,
        job: Option<&str>,
    ) -> Option<Vec<MatrixKey<'n>>> {
        let Value::Map(entries) = &m.value else {
            let msg = format!(
                "must be a mapping of names to lists of values, got {}",
                m.value.kind()
            );
            self.err(m, job, Some("matrix"), msg);
            return None;
        };
        let mut keys = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (k, v) in entries {
            let name = k.key_text();
            let kind = if let Some(f) = Field::from_name(&name) {
                MatrixKind::Field(f)
            } else if name == "upgrade" {
                MatrixKind::Upgrade
            } else if name == "keep_original" {
                MatrixKind::KeepOriginal
            } else {
                MatrixKind::Placeholder
            };
            if JOB_ONLY_KEYS.contains(&name.as_str()) {
                self.err(k, job, Some(&name), "cannot be a matrix key");
                ok = false;
                continue;
            }
            let ident = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ident {
                let msg =
                    "a matrix key must be a name of letters, digits and _ (it is used as {name})";
                self.err(k, job, Some(&name), msg);
                ok = false;
                continue;
            }
            let set_directly = match kind {
                MatrixKind::Field(f) => {
                    base.field_at.contains_key(&f) || base.bad_fields.contains(&f)
                }
                MatrixKind::Upgrade => base.upgrade.is_some(),
                MatrixKind::KeepOriginal => base.keep_original.is_some(),
                MatrixKind::Placeholder => false,
            };
            if set_directly {
                self.err(
                    k,
                    job,
                    Some(&name),
                    "is set both on the job and in its matrix; keep one",
                );
                ok = false;
                continue;
            }
            if let MatrixKind::Field(f) = kind
                && keys
                    .iter()
                    .any(|k: &MatrixKey<'_>| k.kind == MatrixKind::Field(f))
            {
                self.err(
                    k,
                    job,
                    Some(&name),
                    "is in the matrix twice (under two spellings)",
                );
                ok = false;
                continue;
            }
            match &v.value {
                Value::Seq(values) if !values.is_empty() => keys.push(MatrixKey {
                    name,
                    key: k,
                    kind,
                    values,
                }),
                Value::Seq(_) => {
                    self.err(
                        v,
                        job,
                        Some(&name),
                        "has no values (a matrix key needs a list of one or more values)",
                    );
                    ok = false;
                }
                other => {
                    let msg = format!(
                        "must be a list of values (like [a, b]), got {}",
                        other.kind()
                    );
                    self.err(v, job, Some(&name), msg);
                    ok = false;
                }
            }
        }
        ok.then_some(keys)
    }

    fn seed_list(
        &mut self,
        s: &Node,
        repeat: Option<(usize, &Node)>,
        job: Option<&str>,
    ) -> Option<Vec<(i64, Origin)>> {
        let Value::Seq(items) = &s.value else {
            return None;
        };
        let Some((copies, _)) = repeat.filter(|(r, _)| *r == items.len()) else {
            let msg = format!(
                "a list of {} seeds needs repeat: {} (one seed per copy)",
                items.len(),
                items.len()
            );
            self.err(s, job, Some("seeds"), msg);
            return None;
        };
        let mut seeds = Vec::with_capacity(copies);
        let mut ok = true;
        for item in items {
            match &item.value {
                Value::Int(i) => seeds.push((*i, self.at(item))),
                other => {
                    let msg = format!("must be an integer, got {}", other.kind());
                    self.err(item, job, Some("seeds"), msg);
                    ok = false;
                }
            }
        }
        ok.then_some(seeds)
    }
}

/// Moves `index` to the next combination, the last key turning fastest; `false` after
/// the last one.
fn next_combination(index: &mut [usize], keys: &[MatrixKey<'_>]) -> bool {
    for k in (0..keys.len()).rev() {
        index[k] += 1;
        if index[k] < keys[k].values.len() {
            return true;
        }
        index[k] = 0;
    }
    false
}
