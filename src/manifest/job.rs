//! The part both formats share: a job as read (a [`Draft`], every value with the place
//! it was written), defaults, placeholders, and the [`Gatherer`] that checks each draft
//! with the one set of request rules, assigns ids, catches duplicates and gathers every
//! problem located.

use std::collections::{BTreeMap, HashMap};

use crate::cost::{PriceTable, credits};
use crate::request::{self, Field, RawRequest, Resolution};

use super::images::{self, Images, LocalRef};
use super::{Diagnostic, Job, Origin, Upgrade};

/// One job as read, before any rule is checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Draft {
    pub id: Option<String>,
    /// Where the id was written (or the job starts).
    pub id_at: Option<Origin>,
    /// Where the job starts.
    pub at: Origin,
    pub raw: RawRequest,
    /// Where each set request field was written (the job, its matrix, or `defaults:`).
    pub field_at: BTreeMap<Field, Origin>,
    /// Where each image URL was written, parallel to `raw.image_urls` when known.
    pub image_at: Vec<Origin>,
    /// `Some(None)`: explicitly no upgrade (`upgrade: none`), overriding a default.
    pub upgrade: Option<Option<Upgrade>>,
    /// Where the upgrade was written.
    pub upgrade_at: Option<Origin>,
    pub keep_original: Option<bool>,
    /// Without an id, take one from the request's content (CSV tables).
    pub derive_id: bool,
    /// A value could not be read (reported already): the job is not kept, and the rules'
    /// complaints about these fields (now unset) are not repeated.
    pub bad: bool,
    pub bad_fields: Vec<Field>,
    /// `extend:`: the id of the job whose video this one continues.
    pub extend: Option<String>,
    /// Where `extend:` was written.
    pub extend_at: Option<Origin>,
}

impl Draft {
    /// Fills what this draft leaves unset from `defaults`, with the defaults' places.
    /// An extend job takes only the defaults that apply to it ([`Field::extend_same`]):
    /// a campaign's defaults for generations keep working beside its extends.
    pub fn apply_defaults(&mut self, defaults: &Draft) {
        if self.extend.is_some() {
            self.apply_extend_defaults(defaults);
            return;
        }
        for f in Field::ALL {
            if !self.field_at.contains_key(&f)
                && let Some(at) = defaults.field_at.get(&f)
            {
                self.field_at.insert(f, at.clone());
            }
        }
        if self.raw.image_urls.is_none() && defaults.raw.image_urls.is_some() {
            self.image_at.clone_from(&defaults.image_at);
        }
        self.raw.apply_defaults(&defaults.raw);
        if self.upgrade.is_none() {
            self.upgrade = defaults.upgrade;
            self.upgrade_at.clone_from(&defaults.upgrade_at);
        }
        if self.keep_original.is_none() {
            self.keep_original = defaults.keep_original;
        }
        for f in &defaults.bad_fields {
            if !self.field_at.contains_key(f) && !self.bad_fields.contains(f) {
                self.bad_fields.push(*f);
            }
        }
        self.bad |= defaults.bad;
    }

    fn apply_extend_defaults(&mut self, defaults: &Draft) {
        let applicable = defaults
            .raw
            .only(|f| f.extend() == crate::request::ExtendUse::Same);
        for f in Field::extend_same() {
            if !self.field_at.contains_key(&f)
                && let Some(at) = defaults.field_at.get(&f)
            {
                self.field_at.insert(f, at.clone());
            }
        }
        self.raw.apply_defaults(&applicable);
        for f in &defaults.bad_fields {
            if f.extend() == crate::request::ExtendUse::Same
                && !self.field_at.contains_key(f)
                && !self.bad_fields.contains(f)
            {
                self.bad_fields.push(*f);
            }
        }
        self.bad |= defaults.bad;
    }

    pub(super) fn upgrade_place(&self) -> Origin {
        self.upgrade_at.as_ref().unwrap_or(&self.at).clone()
    }

    pub(super) fn place_of(&self, field: Option<Field>, message: &str) -> Origin {
        if field == Some(Field::ImageUrls)
            && let Some(urls) = &self.raw.image_urls
        {
            for (url, at) in urls.iter().zip(&self.image_at) {
                if message.starts_with(&format!("{url:?} ")) {
                    return at.clone();
                }
            }
        }
        field
            .and_then(|f| self.field_at.get(&f))
            .unwrap_or(&self.at)
            .clone()
    }
}

/// Why an id cannot be used, if it cannot.
pub(crate) fn id_problem(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        return Some("must not be blank".into());
    }
    if id.trim() != id {
        return Some(format!(
            "{id:?} has leading or trailing spaces (remove them)"
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Some(format!(
            "{id:?} contains the control character U+{:04X} (use letters, digits, - and _)",
            u32::from(c)
        ));
    }
    None
}

/// One `extend:` as read: the job that has it, the id it names, and where.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub child: String,
    pub parent: String,
    pub at: Origin,
}

/// Gathers jobs and problems as drafts are finished, in one pass.
#[derive(Debug, Default)]
pub(crate) struct Gatherer {
    pub jobs: Vec<Job>,
    errors: Vec<(Diagnostic, usize)>,
    warnings: Vec<(Diagnostic, usize)>,
    hints: Vec<(Diagnostic, usize)>,
    /// The manifest's prices, for the hints (set before any job is finished).
    pub prices: PriceTable,
    /// Local image files, each checked once.
    pub images: Images,
    /// The same problem at the same place (a bad default, a matrix job's field) is
    /// reported once, with how many more jobs share it, not once per job.
    seen_errors: HashMap<(Origin, Option<String>, String), usize>,
    seen_warnings: HashMap<(Origin, Option<String>, String), usize>,
    seen_hints: HashMap<(Origin, Option<String>, String), usize>,
    /// Where each id was first used, keyed by the id's hash (Fx: ids come from the
    /// user's own file, so no one else can choose them to collide). The place holds
    /// an index into `files` and the id's range in `id_text`, so that no path or id
    /// is copied per job; two ids of one hash are told apart by their text.
    ids: hashbrown::HashTable<IdSite>,
    /// Every claimed id, one after another (see [`IdSite::id`]).
    id_text: String,
    files: Vec<std::path::PathBuf>,
    /// Every `extend:` read, checked once all jobs are (see [`super::chains`]).
    pub links: Vec<Link>,
}

/// An [`Origin`] whose file is an index into [`Gatherer::files`].
#[derive(Debug, Clone)]
struct IdSite {
    file: usize,
    line: Option<usize>,
    column: Option<usize>,
    /// Where the id is in [`Gatherer::id_text`].
    id: std::ops::Range<usize>,
}

impl Gatherer {
    /// Reports the problems of a draft's request that its fields did not report
    /// already, and, for a draft without an id that cannot derive one, the id.
    pub(super) fn request_problems(
        &mut self,
        draft: &Draft,
        label: Option<&str>,
        issues: Vec<crate::request::FieldIssue>,
    ) {
        let fresh = issues
            .into_iter()
            .filter(|i| !i.field.is_some_and(|f| draft.bad_fields.contains(&f)));
        for i in fresh {
            let at = draft.place_of(i.field, &i.message);
            let d = diag(at, label, i.field.map(Field::api_name), i.message);
            self.error(d);
        }
        if draft.id.is_none() && !draft.derive_id {
            self.missing_id(&draft.at);
        }
    }

    pub fn error(&mut self, d: Diagnostic) {
        push(&mut self.errors, &mut self.seen_errors, d);
    }

    pub fn warn(&mut self, d: Diagnostic) {
        push(&mut self.warnings, &mut self.seen_warnings, d);
    }

    /// Makes room for about `rows` more jobs (a table's estimate of its size).
    pub fn reserve_rows(&mut self, rows: usize) {
        // Only an estimate: what cannot be had now is grown into later.
        let rows = rows.min(1 << 22);
        let _ = self.jobs.try_reserve(rows);
        let text = &self.id_text;
        let _ = self.ids.try_reserve(rows, |p| {
            id_hash(text.get(p.id.clone()).unwrap_or_default())
        });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Advice that is no problem (a cheaper way to the same video).
    pub fn hint(&mut self, d: Diagnostic) {
        push(&mut self.hints, &mut self.seen_hints, d);
    }

    /// The hints given, folded like problems.
    pub fn take_hints(&mut self) -> Vec<Diagnostic> {
        self.seen_hints.clear();
        fold(std::mem::take(&mut self.hints))
    }

    /// The problems found, with shared ones folded (`(and 3 more jobs)`).
    pub fn into_parts(self) -> (Vec<Job>, Vec<Diagnostic>, Vec<Diagnostic>) {
        (self.jobs, fold(self.errors), fold(self.warnings))
    }

    /// Checks a draft with the request rules and keeps the job, or its problems.
    pub fn finish(&mut self, draft: Draft) {
        let id_at = draft.id_at.as_ref().unwrap_or(&draft.at);
        let mut ok = !draft.bad;
        if let Some(id) = &draft.id {
            if let Some(why) = id_problem(id) {
                self.error(diag(id_at.clone(), Some(id), Some("id"), why));
                ok = false;
            } else if !self.claim_id(id, id_at, false) {
                ok = false;
            }
        }
        if draft.extend.is_some() {
            self.finish_extend(draft, ok);
            return;
        }
        let label = draft.id.as_deref();
        let resolution = draft.raw.resolution.as_deref().and_then(Resolution::parse);
        if let Some(why) = upgrade_conflict(draft.upgrade.flatten(), resolution) {
            let d = diag(draft.upgrade_place(), label, Some("upgrade"), why);
            self.error(d);
            ok = false;
        }
        let local = self.local_images(&draft, label);
        ok &= local.is_some();
        let (decided, warnings) = request::check_parts(&draft.raw, &images::is_local);
        for w in &warnings {
            let at = draft.place_of(w.field, &w.message);
            let d = diag(at, label, w.field.map(Field::api_name), w.message.clone());
            self.warn(d);
        }
        let decided = match decided {
            Ok(decided) => decided,
            Err(issues) => {
                self.request_problems(&draft, label, issues);
                return;
            }
        };
        if draft.bad {
            return;
        }
        // Only jobs with an upgrade can get a hint, which is placed at the upgrade.
        let upgrade_at = draft.upgrade.flatten().map(|_| draft.upgrade_place());
        // The draft is done with: its strings move into the request.
        let mut req = decided.into_request(draft.raw);
        let local = local.unwrap_or_default();
        let fingerprint = images::fingerprint(&req, &local);
        for l in &local {
            if let Some(slot) = req.image_urls.get_mut(l.index) {
                *slot = l.image.shown();
            }
        }
        let id = match draft.id {
            Some(id) => id,
            None if draft.derive_id => {
                let id = format!("job-{}", &fingerprint[..12.min(fingerprint.len())]);
                if !self.claim_id(&id, &draft.at, true) {
                    return;
                }
                id
            }
            None => {
                self.missing_id(&draft.at);
                return;
            }
        };
        if ok && !self.has_errors() {
            let job = Job {
                id,
                request: req,
                fingerprint,
                upgrade: draft.upgrade.flatten(),
                keep_original: draft.keep_original.unwrap_or(false),
                origin: draft.at,
                file_stem: None,
                local_images: local,
                extend: None,
            };
            if let Some(upgrade_at) = upgrade_at
                && let Some(c) = self.prices.native_is_cheaper(&job)
            {
                let why = format!(
                    "resolution: {} at generation costs {} credits, less than {} then upgrade: {} \
                     ({}{} credits; prices: {})",
                    c.resolution,
                    credits(c.native),
                    job.request.resolution.unwrap_or_default(),
                    c.resolution,
                    if c.base_priced { "" } else { "at least " },
                    credits(c.paid),
                    self.prices.describe()
                );
                self.hint(diag(upgrade_at, Some(&job.id), Some("upgrade"), why));
            }
            self.jobs.push(job);
        }
    }

    /// Whether `id` is the id of a job read so far (kept or not).
    pub fn has_id(&self, id: &str) -> bool {
        let text = &self.id_text;
        self.ids
            .find(id_hash(id), |p| text.get(p.id.clone()) == Some(id))
            .is_some()
    }

    /// Every id read so far, for suggestions.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids
            .iter()
            .filter_map(|p| self.id_text.get(p.id.clone()))
    }

    /// The draft's images that are local files, each checked (relative paths against
    /// the file that wrote them); `None`, with each problem reported, when one fails.
    fn local_images(&mut self, draft: &Draft, label: Option<&str>) -> Option<Vec<LocalRef>> {
        let urls = draft.raw.image_urls.as_deref().unwrap_or_default();
        let mut local = Vec::new();
        let mut ok = true;
        for (index, url) in urls.iter().enumerate() {
            if !images::is_local(url) {
                continue;
            }
            let at = draft.image_at.get(index).unwrap_or(&draft.at);
            let dir = at.file.parent().unwrap_or(std::path::Path::new(""));
            match self.images.check(url, dir) {
                Ok(image) => local.push(LocalRef { index, image }),
                Err(why) => {
                    self.error(diag(
                        at.clone(),
                        label,
                        Some(Field::ImageUrls.api_name()),
                        why,
                    ));
                    ok = false;
                }
            }
        }
        ok.then_some(local)
    }

    pub(super) fn missing_id(&mut self, at: &Origin) {
        self.error(diag(
            at.clone(),
            None,
            Some("id"),
            "is required (a short unique name: it names the video file and is the resume key)",
        ));
    }

    /// Records `id` as used at `at`; false (and an error naming both places) if it was.
    pub(super) fn claim_id(&mut self, id: &str, at: &Origin, derived: bool) -> bool {
        self.claim_hashed(id_hash(id), id, at, derived)
    }

    /// [`Gatherer::claim_id`], with the id's `hash` given (tests give two ids one).
    fn claim_hashed(&mut self, hash: u64, id: &str, at: &Origin, derived: bool) -> bool {
        let text = &self.id_text;
        let first = self
            .ids
            .find(hash, |p| text.get(p.id.clone()) == Some(id))
            .cloned();
        if let Some(first) = first {
            let first = Origin {
                file: self.files.get(first.file).cloned().unwrap_or_default(),
                line: first.line,
                column: first.column,
            };
            let why = if derived {
                format!(
                    "duplicate id {id:?}: this row asks for exactly the same video as {first} \
                     (change one, or give them ids)"
                )
            } else {
                format!("duplicate id {id:?}, first used at {first} (ids must be unique)")
            };
            let d = diag(at.clone(), Some(id), Some("id"), why);
            push(&mut self.errors, &mut self.seen_errors, d);
            return false;
        }
        // Rows of one file come one after another: the last file is the usual one.
        let file = match self.files.iter().rposition(|f| *f == at.file) {
            Some(i) => i,
            None => {
                self.files.push(at.file.clone());
                self.files.len() - 1
            }
        };
        let start = self.id_text.len();
        self.id_text.push_str(id);
        let place = IdSite {
            file,
            line: at.line,
            column: at.column,
            id: start..self.id_text.len(),
        };
        let text = &self.id_text;
        self.ids.insert_unique(hash, place, |p| {
            id_hash(text.get(p.id.clone()).unwrap_or_default())
        });
        true
    }
}

/// The hash an id is kept under in [`Gatherer::ids`].
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher as _;
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// Why a job's upgrade would pay twice for the resolution it asks at generation.
fn upgrade_conflict(upgrade: Option<Upgrade>, resolution: Option<Resolution>) -> Option<String> {
    match (upgrade?, resolution?) {
        (Upgrade::Uhd4k, Resolution::Uhd4k) => Some(
            "4k on a video already asked at resolution 4k pays twice for it (drop the upgrade)"
                .to_owned(),
        ),
        (Upgrade::Hd1080, r @ (Resolution::Hd1080 | Resolution::Uhd4k)) => Some(format!(
            "1080p on a video already asked at resolution {r} pays again for what it has \
             (drop the upgrade)"
        )),
        _ => None,
    }
}

type Seen = HashMap<(Origin, Option<String>, String), usize>;

fn push(list: &mut Vec<(Diagnostic, usize)>, seen: &mut Seen, d: Diagnostic) {
    let key = (d.origin.clone(), d.field.clone(), d.message.clone());
    if let Some(&i) = seen.get(&key)
        && let Some(entry) = list.get_mut(i)
    {
        entry.1 += 1;
        return;
    }
    seen.insert(key, list.len());
    list.push((d, 0));
}

/// Folds repeats into their first report, and orders the reports by file (in the
/// order files were read) then line and column.
fn fold(list: Vec<(Diagnostic, usize)>) -> Vec<Diagnostic> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut out: Vec<(usize, Diagnostic)> = list
        .into_iter()
        .map(|(mut d, more)| {
            if more > 0 {
                let what = match (d.job.is_some(), more) {
                    (true, 1) => "job",
                    (true, _) => "jobs",
                    (false, 1) => "time",
                    (false, _) => "times",
                };
                d.message = format!("{} (and {more} more {what})", d.message);
            }
            let file = match files.iter().position(|f| *f == d.origin.file) {
                Some(i) => i,
                None => {
                    files.push(d.origin.file.clone());
                    files.len() - 1
                }
            };
            (file, d)
        })
        .collect();
    out.sort_by_key(|(file, d)| (*file, d.origin.line, d.origin.column));
    out.into_iter().map(|(_, d)| d).collect()
}

pub(crate) fn diag(
    origin: Origin,
    job: Option<&str>,
    field: Option<&str>,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        origin,
        job: job.map(str::to_owned),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

/// A `{name}` in an id or a prompt, or a literal piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a template into text and `{name}` placeholders (`name`: letters, digits, `_`).
/// `{{` and `}}` stand for literal braces; any other brace is literal text.
pub(crate) fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let two = bytes.get(i + 1).copied();
        if (bytes[i] == b'{' && two == Some(b'{')) || (bytes[i] == b'}' && two == Some(b'}')) {
            out.push(Piece::Text(&s[start..=i]));
            i += 2;
            start = i;
            continue;
        }
        if bytes[i] == b'{'
            && let Some(len) = s[i + 1..].find('}')
        {
            let name = &s[i + 1..i + 1 + len];
            let ident = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if ident {
                if start < i {
                    out.push(Piece::Text(&s[start..i]));
                }
                out.push(Piece::Placeholder(name));
                i += len + 2;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    if start < s.len() {
        out.push(Piece::Text(&s[start..]));
    }
    out
}

/// The placeholders a template uses, in order.
pub(crate) fn placeholders(s: &str) -> Vec<&str> {
    pieces(s)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Fills the placeholders of `s` from `values`; unknown ones stay as written (they
/// were reported before expansion).
pub(crate) fn substitute(s: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(s.len());
    for p in pieces(s) {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(n) => match values.get(n) {
                Some(v) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(n);
                    out.push('}');
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize) -> Origin {
        Origin {
            file: "m.yaml".into(),
            line: Some(line),
            column: None,
        }
    }

    fn draft(id: &str, prompt: &str, line: usize) -> Draft {
        let mut d = Draft {
            id: Some(id.into()),
            id_at: Some(at(line)),
            at: at(line),
            ..Draft::default()
        };
        d.raw.prompt = Some(prompt.into());
        d.field_at.insert(Field::Prompt, at(line + 1));
        d
    }

    #[test]
    fn placeholders_and_escapes() {
        assert_eq!(
            placeholders("a {x} and {y_2} {{z}} {not valid} {}"),
            ["x", "y_2"]
        );
        let mut v = BTreeMap::new();
        v.insert("x", "1".to_owned());
        assert_eq!(substitute("{x}-{{x}}-{y}", &v), "1-{x}-{y}");
        assert_eq!(substitute("json {\"a\": 1}", &v), "json {\"a\": 1}");
    }

    #[test]
    fn id_rules() {
        assert_eq!(id_problem("ok-1"), None);
        assert!(id_problem("  ").unwrap().contains("blank"));
        assert!(id_problem(" a").unwrap().contains("leading or trailing"));
        assert!(id_problem("a\tb").unwrap().contains("U+0009"));
    }

    #[test]
    fn duplicates_name_both_places() {
        let mut c = Gatherer::default();
        c.finish(draft("a", "x", 3));
        c.finish(draft("a", "y", 9));
        let (_, errors, _) = c.into_parts();
        assert_eq!(
            errors[0].to_string(),
            "m.yaml:9: job \"a\": id: duplicate id \"a\", first used at m.yaml:3 (ids must be unique)"
        );
    }

    #[test]
    fn ids_of_the_same_hash_are_told_apart() {
        let mut c = Gatherer::default();
        // Room for every id: a table that grows rehashes by the ids' real hashes,
        // not the forced ones.
        c.reserve_rows(16);
        assert!(c.claim_hashed(7, "a", &at(3), false));
        assert!(
            c.claim_hashed(7, "b", &at(4), false),
            "another id, the same hash"
        );
        assert!(c.claim_hashed(8, "c", &at(5), false));
        assert!(!c.claim_hashed(7, "b", &at(9), false));
        assert!(!c.claim_hashed(7, "a", &at(10), false));
        let (_, errors, _) = c.into_parts();
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "m.yaml:9: job \"b\": id: duplicate id \"b\", first used at m.yaml:4 (ids must be unique)",
                "m.yaml:10: job \"a\": id: duplicate id \"a\", first used at m.yaml:3 (ids must be unique)",
            ]
        );
    }

    #[test]
    fn issues_are_located_at_their_field_and_shared_ones_fold() {
        let mut c = Gatherer::default();
        for i in 0..3 {
            let mut d = draft(&format!("j{i}"), "x", 10 + i * 5);
            d.raw.model = Some("veo4".into());
            d.field_at.insert(Field::Model, at(2));
            c.finish(d);
        }
        let (jobs, errors, _) = c.into_parts();
        assert!(jobs.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "m.yaml:2: job \"j0\": model: \"veo4\" is not allowed (veo3, veo3_fast, veo3_lite) (and 2 more jobs)"
        );
    }

    #[test]
    fn derived_ids_come_from_content() {
        let mut c = Gatherer::default();
        let mut d = Draft {
            derive_id: true,
            at: at(2),
            ..Draft::default()
        };
        d.raw.prompt = Some("a dog".into());
        c.finish(d.clone());
        let id = c.jobs[0].id.clone();
        assert!(id.starts_with("job-") && id.len() == 16, "{id}");
        assert_eq!(&id[4..], &c.jobs[0].fingerprint[..12]);
        d.at = at(5);
        c.finish(d);
        let (_, errors, _) = c.into_parts();
        assert!(
            errors[0]
                .message
                .contains("exactly the same video as m.yaml:2")
        );
    }
}
