//! Extend jobs: each one as it is read (only the extend endpoint's fields), and their
//! chains, checked once every job is read: each `extend:` names a job of the
//! manifest, no jobs extend each other in a cycle, no parent is a video the service
//! cannot extend; and each extend job takes from its parent what it continues (the
//! model, unless it sets its own, and the aspect ratio), chain by chain.

use rustc_hash::FxHashMap;

use crate::request::{
    self, ExtendUse, Field, RawRequest, Resolution, Upgrade, did_you_mean, extend_fingerprint,
};

use super::job::{Draft, Gatherer, Link, diag, id_problem, placeholders};
use super::{Diagnostic, Job};

impl Gatherer {
    /// [`Gatherer::finish`] for a job with `extend:`: only the extend endpoint's
    /// fields, each set on the job itself; any other is an error, not dropped. Its
    /// parent is checked, and what it takes from it filled in, once every job is read.
    pub(super) fn finish_extend(&mut self, mut draft: Draft, mut ok: bool) {
        let label = draft.id.clone();
        let label = label.as_deref();
        let parent = draft.extend.take().unwrap_or_default();
        let extend_at = draft.extend_at.take().unwrap_or_else(|| draft.at.clone());
        let taken = Field::extend_taken();
        let not_here = |what: &str| {
            format!(
                "does not apply to an extend job: it continues the video of job {parent:?}, \
                 and the extend endpoint takes only {taken}{what}"
            )
        };
        let not_taken = Field::ALL
            .into_iter()
            .filter(|f| f.extend() == ExtendUse::No && draft.raw.is_set(*f));
        for field in not_taken {
            let at = draft.field_at.get(&field).unwrap_or(&draft.at).clone();
            let d = diag(at, label, Some(field.api_name()), not_here(""));
            self.error(d);
            ok = false;
        }
        if draft.upgrade.flatten().is_some() {
            let why = not_here(" (a 1080p or 4k file of a continuation is not asked here)");
            let d = diag(draft.upgrade_place(), label, Some("upgrade"), why);
            self.error(d);
            ok = false;
        }
        if draft.keep_original == Some(true) {
            let d = diag(draft.at.clone(), label, Some("keep_original"), not_here(""));
            self.error(d);
            ok = false;
        }
        if let Some(why) = id_problem(&parent) {
            let d = diag(extend_at.clone(), label, Some("extend"), why);
            self.error(d);
            ok = false;
        }
        // A parent still holding a placeholder was reported (unknown placeholder).
        let linked = placeholders(&parent).is_empty();
        if let Some(id) = draft.id.as_ref().filter(|_| linked) {
            self.links.push(Link {
                child: id.clone(),
                parent: parent.clone(),
                at: extend_at.clone(),
            });
        }
        // The rules of the fields it takes, the generation's own (prompt, seeds,
        // model, callback URL); what it does not take was reported above.
        let own_model = draft.raw.model.is_some();
        let raw = RawRequest {
            prompt: draft.raw.prompt.take(),
            model: draft.raw.model.take(),
            seeds: draft.raw.seeds,
            watermark: draft.raw.watermark.take(),
            callback_url: draft.raw.callback_url.take(),
            ..RawRequest::default()
        };
        let (decided, _) = request::check_parts(&raw, &|_| false);
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
        let req = decided.into_request(raw);
        let fingerprint = request::extend_fingerprint(&req, &parent);
        let id = match draft.id {
            Some(id) => id,
            None if draft.derive_id => {
                let id = format!("job-{}", &fingerprint[..12.min(fingerprint.len())]);
                if !self.claim_id(&id, &draft.at, true) {
                    return;
                }
                if linked {
                    self.links.push(Link {
                        child: id.clone(),
                        parent: parent.clone(),
                        at: extend_at.clone(),
                    });
                }
                id
            }
            None => {
                self.missing_id(&draft.at);
                return;
            }
        };
        if ok && !self.has_errors() {
            self.jobs.push(Job {
                id,
                request: req,
                fingerprint,
                upgrade: None,
                keep_original: false,
                origin: draft.at,
                file_stem: None,
                local_images: Vec::new(),
                extend: Some(Box::new(super::Extend {
                    parent,
                    parent_index: usize::MAX,
                    own_model,
                    at: extend_at,
                })),
            });
        }
    }
}

/// Reports every `extend:` naming no job of the manifest (with the likeliest id
/// meant) and every cycle (naming each job in it). Run on every link read, whether
/// or not the jobs had other problems, so that one pass reports them all.
pub(crate) fn check_links(out: &mut Gatherer) {
    let links = std::mem::take(&mut out.links);
    let mut found = Vec::new();
    for l in &links {
        if l.parent.trim().is_empty() || out.has_id(&l.parent) {
            continue;
        }
        let hint = did_you_mean(&l.parent, out.ids())
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        found.push(diag(
            l.at.clone(),
            Some(&l.child),
            Some("extend"),
            format!(
                "no job {:?} in this manifest{hint}; extend: names the id of the job whose \
                 video this one continues",
                l.parent
            ),
        ));
    }
    found.extend(cycles(&links));
    for d in found {
        out.error(d);
    }
    out.links = links;
}

/// Every cycle of `links`, once each, at the link of its first job in the file.
fn cycles(links: &[Link]) -> Vec<Diagnostic> {
    // A job has one parent: following parents from any job either ends, or comes
    // back to a job on the path (a cycle), or meets a path already walked.
    let mut by_child: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, l) in links.iter().enumerate() {
        by_child.entry(l.child.as_str()).or_insert(i);
    }
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; links.len()];
    let mut found = Vec::new();
    let mut path = Vec::new();
    for start in 0..links.len() {
        if state[start] != NEW {
            continue;
        }
        path.clear();
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                DONE => break,
                ON_PATH => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    found.push(cycle_message(links, &path[from..]));
                    break;
                }
                _ => {}
            }
            state[i] = ON_PATH;
            path.push(i);
            at = by_child.get(links[i].parent.as_str()).copied();
        }
        for &i in &path {
            state[i] = DONE;
        }
    }
    found
}

fn cycle_message(links: &[Link], cycle: &[usize]) -> Diagnostic {
    // Told from the job written first, so that the message reads the same wherever
    // the walk entered the cycle.
    let first = (0..cycle.len())
        .min_by_key(|&k| {
            let at = &links[cycle[k]].at;
            (at.line, at.column, cycle[k])
        })
        .unwrap_or(0);
    let order: Vec<&Link> = (0..cycle.len())
        .map(|k| &links[cycle[(first + k) % cycle.len()]])
        .collect();
    let head = order[0];
    let message = if order.len() == 1 {
        format!(
            "job {:?} extends itself; a chain starts at a job that generates its video",
            head.child
        )
    } else {
        let steps: Vec<String> = order
            .iter()
            .map(|l| format!("{:?} extends {:?}", l.child, l.parent))
            .collect();
        format!(
            "these {} jobs extend each other in a cycle: {}; a chain starts at a job that \
             generates its video",
            order.len(),
            steps.join(", ")
        )
    };
    diag(head.at.clone(), Some(&head.child), Some("extend"), message)
}

/// Links each extend job to its parent in `jobs` (every parent is there: the links
/// were checked), refuses parents the service cannot extend, and gives each extend
/// job what it takes from its parent, parents first.
pub(crate) fn resolve(jobs: &mut [Job]) -> Vec<Diagnostic> {
    if jobs.iter().all(|j| j.extend.is_none()) {
        return Vec::new();
    }
    let (errors, parents) = parent_problems(jobs);
    if !errors.is_empty() {
        return errors;
    }
    for i in order(&parents) {
        let Some(p) = parents[i] else { continue };
        let (model, aspect_ratio) = (jobs[p].request.model, jobs[p].request.aspect_ratio);
        let job = &mut jobs[i];
        let Some(ext) = &mut job.extend else { continue };
        ext.parent_index = p;
        if !ext.own_model {
            job.request.model = model;
        }
        job.request.aspect_ratio = aspect_ratio;
        job.fingerprint = extend_fingerprint(&job.request, &ext.parent);
    }
    errors
}

/// The places of `jobs` (as [`super::load`] leaves them: parents linked), each
/// extend job after the job it extends.
pub fn parents_first(jobs: &[Job]) -> Vec<usize> {
    let parents: Vec<Option<usize>> = jobs
        .iter()
        .map(|j| j.extend.as_ref().map(|e| e.parent_index))
        .map(|p| p.filter(|&p| p < jobs.len()))
        .collect();
    order(&parents)
}

/// The jobs, parents before their children (the links hold no cycle).
fn order(parents: &[Option<usize>]) -> Vec<usize> {
    let mut depth: Vec<Option<usize>> = vec![None; parents.len()];
    let mut walk = Vec::new();
    for start in 0..parents.len() {
        let mut at = start;
        while depth[at].is_none() {
            match parents[at] {
                Some(p) if walk.len() <= parents.len() => {
                    walk.push(at);
                    at = p;
                }
                _ => {
                    depth[at] = Some(0);
                }
            }
        }
        let mut d = depth[at].unwrap_or(0);
        while let Some(i) = walk.pop() {
            d += 1;
            depth[i] = Some(d);
        }
    }
    let mut order: Vec<usize> = (0..parents.len()).collect();
    order.sort_by_key(|&i| depth[i]);
    order
}

/// How extend jobs chain, for `validate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chains {
    /// Videos generated and then continued by at least one extend.
    pub chains: usize,
    pub extends: usize,
    /// Videos in the longest chain (its first generation included).
    pub longest: usize,
    /// The ids of the longest chain, first to last.
    pub longest_ids: Vec<String>,
}

impl Chains {
    /// The chains of `jobs` (as [`super::load`] leaves them: parents linked).
    pub fn of(jobs: &[Job]) -> Chains {
        let parents: Vec<Option<usize>> = jobs
            .iter()
            .map(|j| j.extend.as_ref().map(|e| e.parent_index))
            .map(|p| p.filter(|&p| p < jobs.len()))
            .collect();
        let mut c = Chains::default();
        let mut roots = rustc_hash::FxHashSet::default();
        let mut depth: Vec<usize> = vec![0; jobs.len()];
        for i in order(&parents) {
            if let Some(p) = parents[i] {
                c.extends += 1;
                depth[i] = depth[p] + 1;
                let mut root = p;
                // Parents come first in `order`: their depth is known, and a walk
                // to the root is as long as the chain.
                while let Some(pp) = parents[root] {
                    root = pp;
                }
                roots.insert(root);
            }
        }
        c.chains = roots.len();
        if let Some(deepest) = (0..jobs.len()).max_by_key(|&i| (depth[i], usize::MAX - i))
            && depth[deepest] > 0
        {
            c.longest = depth[deepest] + 1;
            let mut at = Some(deepest);
            while let Some(i) = at {
                c.longest_ids.push(jobs[i].id.clone());
                at = parents[i];
            }
            c.longest_ids.reverse();
        }
        c
    }
}

/// The rules on an extend's parent that the service sets (no 1080p version made or
/// to be made), and each extend's parent by place (`None`: not among `jobs`, a
/// problem reported where the links were checked). Reads only: it also runs when
/// other problems keep the manifest from being used, so that they are all reported
/// at once.
pub(crate) fn parent_problems(jobs: &[Job]) -> (Vec<Diagnostic>, Vec<Option<usize>>) {
    let index: FxHashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.as_str(), i))
        .collect();
    let mut errors = Vec::new();
    let mut parents: Vec<Option<usize>> = vec![None; jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        let Some(ext) = &job.extend else { continue };
        let Some(&p) = index.get(ext.parent.as_str()) else {
            continue;
        };
        parents[i] = Some(p);
        let parent = &jobs[p];
        if parent.upgrade == Some(Upgrade::Hd1080) {
            errors.push(diag(
                ext.at.clone(),
                Some(&job.id),
                Some("extend"),
                format!(
                    "job {:?} asks for upgrade: 1080p, and the service cannot extend a video \
                     once its 1080p version is made; drop that upgrade, or extend another job",
                    parent.id
                ),
            ));
        }
        if parent.extend.is_none()
            && let Some(r @ (Resolution::Hd1080 | Resolution::Uhd4k)) = parent.request.resolution
        {
            errors.push(diag(
                ext.at.clone(),
                Some(&job.id),
                Some("extend"),
                format!(
                    "job {:?} is generated at resolution {r}, and the service extends a video \
                     only while it has no 1080p version (a video made at 1080p or above has \
                     one); generate it at 720p to extend it",
                    parent.id
                ),
            ));
        }
    }
    (errors, parents)
}
