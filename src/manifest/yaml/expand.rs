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

impl Cx<'_> {
    /// One entry of `jobs:`, expanded by its matrix and repeat into finished jobs.
    pub(super) fn job(&mut self, n: &Node, defaults: &Draft, extra: &BTreeMap<String, Json>) {
        let Value::Map(entries) = &n.value else {
            let msg = format!(
                "a job must be a mapping with id:, prompt: and other fields, got {}",
                n.value.kind()
            );
            self.err(n, None, None, msg);
            return;
        };
        let id_node = entries
            .iter()
            .find(|(k, _)| k.key_str() == "id")
            .map(|(_, v)| v);
        let id = id_node.and_then(|v| self.text(v, None, "id"));
        let job = id.as_deref();

        let mut base = Draft {
            at: self.at(n),
            id_at: id_node.map(|v| self.at(v)),
            ..Draft::default()
        };
        let mut matrix: Option<&Node> = None;
        let mut repeat: Option<(usize, &Node)> = None;
        let mut seed_list: Option<&Node> = None;
        let mut extend: Option<(String, &Node)> = None;
        for (k, v) in entries {
            let name = k.key_str();
            let name = name.as_ref();
            match name {
                "id" => {}
                "matrix" => matrix = Some(v),
                "repeat" => {
                    if let Some(r) = self.int(v, job, "repeat", 1) {
                        repeat = usize::try_from(r).ok().map(|r| (r, v));
                    } else {
                        base.bad = true;
                    }
                }
                "extend" => match self.text(v, job, "extend") {
                    Some(t) => {
                        base.extend = Some(t.clone());
                        base.extend_at = Some(self.at(v));
                        extend = Some((t, v));
                    }
                    None => base.bad = true,
                },
                "upgrade" => self.set_upgrade(&mut base, v, job),
                "keep_original" => match self.boolean(v, job, name) {
                    Some(b) => base.keep_original = Some(b),
                    None => base.bad = true,
                },
                _ => match Field::from_name(name) {
                    Some(Field::Seeds) if matches!(v.value, Value::Seq(_)) => seed_list = Some(v),
                    Some(f) => {
                        if base.field_at.contains_key(&f) || base.bad_fields.contains(&f) {
                            let msg =
                                format!("is set twice (as {} and another spelling)", f.api_name());
                            self.err(k, job, Some(name), msg);
                            base.bad = true;
                        } else {
                            self.set_field(&mut base, f, v, job);
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

        let keys = match matrix {
            Some(m) => match self.matrix(m, &base, job) {
                Some(keys) => keys,
                // Without a sound matrix, placeholders and ids cannot be judged.
                None => return,
            },
            None => Vec::new(),
        };
        let copies = repeat.map_or(1, |(r, _)| r);
        let seeds = match seed_list {
            Some(s) => match self.seed_list(s, repeat, job) {
                Some(list) => list,
                None => {
                    base.bad = true;
                    Vec::new()
                }
            },
            None => Vec::new(),
        };

        // Placeholders: every {name} must be a matrix key, every placeholder-only key
        // must be used, and a matrix of several combinations needs them in the id.
        let known: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let mut used: Vec<String> = Vec::new();
        let known_list = if known.is_empty() {
            "this job has no matrix".to_owned()
        } else {
            format!("the matrix has: {}", known.join(", "))
        };
        if let (Some(id), Some(idn)) = (&id, id_node) {
            for p in placeholders(id) {
                if known.contains(&p) {
                    used.push(p.to_owned());
                } else {
                    let msg = format!(
                        "unknown placeholder {{{p}}} ({known_list}; write {{{{ for a literal brace)"
                    );
                    self.err(idn, job, Some("id"), msg);
                    base.bad = true;
                }
            }
        }
        if let Some((parent, at)) = &extend {
            for p in placeholders(parent) {
                if known.contains(&p) {
                    used.push(p.to_owned());
                } else {
                    let msg = format!(
                        "unknown placeholder {{{p}}} ({known_list}; write {{{{ for a literal brace)"
                    );
                    self.err(at, job, Some("extend"), msg);
                    base.bad = true;
                }
            }
        }
        let prompt_from_matrix = keys
            .iter()
            .any(|k| k.kind == MatrixKind::Field(Field::Prompt));
        let (prompt, prompt_at) = match (&base.raw.prompt, &defaults.raw.prompt) {
            (Some(p), _) => (Some(p.clone()), base.field_at.get(&Field::Prompt).cloned()),
            (None, Some(p)) => (
                Some(p.clone()),
                defaults.field_at.get(&Field::Prompt).cloned(),
            ),
            (None, None) => (None, None),
        };
        if let Some(p) = prompt.filter(|_| !prompt_from_matrix) {
            for name in placeholders(&p) {
                if known.contains(&name) {
                    used.push(name.to_owned());
                } else {
                    let msg = format!(
                        "unknown placeholder {{{name}}} ({known_list}; write {{{{ for a literal brace)"
                    );
                    let at = prompt_at.clone().unwrap_or_else(|| base.at.clone());
                    self.out.error(diag(at, job, Some("prompt"), msg));
                    base.bad = true;
                }
            }
        }
        // Image paths take placeholders too, so that each combination can name its own
        // file (`shots/{colour}.png`); not when the matrix sets the images itself.
        let images_from_matrix = keys
            .iter()
            .any(|k| k.kind == MatrixKind::Field(Field::ImageUrls));
        let (images, images_at) = match (&base.raw.image_urls, &defaults.raw.image_urls) {
            (Some(urls), _) => (urls.clone(), base.image_at.clone()),
            (None, Some(urls)) => (urls.clone(), defaults.image_at.clone()),
            (None, None) => (Vec::new(), Vec::new()),
        };
        for (i, url) in images.iter().enumerate().filter(|_| !images_from_matrix) {
            for name in placeholders(url) {
                if known.contains(&name) {
                    used.push(name.to_owned());
                } else {
                    let msg = format!(
                        "unknown placeholder {{{name}}} ({known_list}; write {{{{ for a literal brace)"
                    );
                    let at = images_at.get(i).cloned().unwrap_or_else(|| base.at.clone());
                    self.out
                        .error(diag(at, job, Some(Field::ImageUrls.api_name()), msg));
                    base.bad = true;
                }
            }
        }
        for k in &keys {
            if k.kind == MatrixKind::Placeholder && !used.contains(&k.name) {
                let hint = did_you_mean(&k.name, field_names())
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                let msg = format!(
                    "matrix key is not used: it is not a request field and no {{{}}} placeholder \
                     in id, prompt or imageUrls uses it{hint}",
                    k.name
                );
                self.err(k.key, job, Some(&k.name), msg);
                base.bad = true;
            }
        }
        let id_uses: Vec<&str> = id.as_deref().map(placeholders).unwrap_or_default();
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| k.values.len() > 1 && !id_uses.contains(&k.name.as_str()))
            .map(|k| format!("{{{}}}", k.name))
            .collect();
        if let (false, Some(id), Some(idn)) = (missing.is_empty(), &id, id_node) {
            let msg = format!(
                "{id:?} would be the same for several matrix combinations; add {} to it",
                missing.join(" and ")
            );
            self.err(idn, job, Some("id"), msg);
            // Expanding would only add a duplicate-id report per combination.
            return;
        }

        let combos = keys
            .iter()
            .try_fold(1usize, |acc, k| acc.checked_mul(k.values.len()))
            .and_then(|c| c.checked_mul(copies));
        if combos.is_none_or(|c| c > MAX_EXPANSION) {
            let at = matrix.or(repeat.map(|(_, n)| n)).unwrap_or(n);
            let msg = format!("this job would expand to more than {MAX_EXPANSION} jobs; split it");
            self.err(at, job, None, msg);
            return;
        }

        if id.is_none() {
            // Reported once, here, not once per combination (and not again when the
            // id was there but not text: that was reported already).
            if id_node.is_none() {
                let msg = "is required (a short unique name: it names the video file and is \
                           the resume key)";
                self.err(n, None, Some("id"), msg);
            }
            return;
        }

        let mut index = vec![0usize; keys.len()];
        loop {
            let mut d = base.clone();
            let mut values: BTreeMap<&str, String> = BTreeMap::new();
            for (k, &i) in keys.iter().zip(&index) {
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
            if let Some((parent, _)) = &extend {
                d.extend = Some(substitute(parent, &values));
            }
            d.apply_defaults(defaults);
            for (k, v) in extra {
                d.raw.extra.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if !prompt_from_matrix && let Some(p) = &d.raw.prompt {
                d.raw.prompt = Some(substitute(p, &values));
            }
            if !images_from_matrix && let Some(urls) = &mut d.raw.image_urls {
                for url in urls.iter_mut().filter(|u| u.contains('{')) {
                    *url = substitute(url, &values);
                }
            }
            let id = id.as_deref().map(|t| substitute(t, &values));
            for copy in 1..=copies {
                let mut c = d.clone();
                c.id = match (&id, repeat) {
                    (Some(id), Some(_)) => Some(format!("{id}-{copy}")),
                    (id, _) => id.clone(),
                };
                if let Some((seed, at)) = seeds.get(copy - 1) {
                    c.raw.seeds = Some(*seed);
                    c.field_at.insert(Field::Seeds, at.clone());
                }
                self.out.finish(c);
            }
            // Next combination: the last key turns fastest.
            let mut k = keys.len();
            loop {
                if k == 0 {
                    return;
                }
                k -= 1;
                index[k] += 1;
                if index[k] < keys[k].values.len() {
                    break;
                }
                index[k] = 0;
            }
        }
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
