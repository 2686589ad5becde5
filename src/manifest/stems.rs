//! Each job's file stem, given once the whole manifest is read: ids are cleaned
//! into names ([`crate::paths`]), ids that would share a file get a short hash, and
//! the clashes no stem can avoid (an id that is another job's upgrade file) are
//! returned for the manifest to refuse.

use std::hash::{BuildHasher as _, Hasher as _};

use rustc_hash::{FxBuildHasher, FxHashMap};

use super::Job;
use crate::paths::{cleaned, short_hash, upgrade_suffix};
use crate::request::Upgrade;

/// A job whose file names clash with another's: `job` would write where `other`
/// does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub job: usize,
    pub other: usize,
    /// The file both would write, without the folder.
    pub file: String,
    /// What `other` keeps there (`its video`, `its 1080p file`).
    pub what: &'static str,
}

/// Hash of a stem as a case-blind disk compares it.
fn key(stem: &str) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    for b in stem.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

/// Gives each job its file stem ([`Job::file_stem`]) and returns the clashes that
/// no stem can avoid. Ids that need no cleaning and meet no other keep their name;
/// the hashes of a group of ids that would share a stem are what keep them apart.
pub fn assign_stems(jobs: &mut [Job]) -> Vec<Clash> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    // Stems as cleaning alone makes them, by their case-blind hash. Ids that are
    // safe already (nearly all) cost no allocation.
    let cleaned: Vec<Option<String>> = jobs.iter().map(|j| cleaned(&j.id)).collect();
    let plain = |i: usize| cleaned[i].as_deref().unwrap_or(&jobs[i].id);
    let mut first: FxHashMap<u64, usize> = FxHashMap::default();
    first.reserve(jobs.len());
    // Jobs whose stem's hash an earlier job's has, by that hash (nearly always none).
    let mut groups: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
    for i in 0..jobs.len() {
        let k = key(plain(i));
        match first.get(&k) {
            Some(&j) => groups.entry(k).or_insert_with(|| vec![j]).push(i),
            None => {
                first.insert(k, i);
            }
        }
    }
    let mut hashed = vec![false; jobs.len()];
    for mut same_hash in groups.into_values() {
        // One hash can stand for several stems: split them into the jobs that
        // really share one.
        while let Some(&lead) = same_hash.first() {
            let (group, rest): (Vec<usize>, Vec<usize>) =
                same_hash.iter().partition(|&&x| eq(plain(x), plain(lead)));
            same_hash = rest;
            if group.len() < 2 {
                continue;
            }
            // An id used as it is keeps its name when it alone of its group is.
            let as_is: Vec<usize> = group
                .iter()
                .copied()
                .filter(|&x| cleaned[x].is_none())
                .collect();
            for x in group {
                hashed[x] = !(as_is.len() == 1 && as_is[0] == x);
            }
        }
    }
    for (i, job) in jobs.iter_mut().enumerate() {
        job.file_stem = match (&cleaned[i], hashed[i]) {
            (None, false) => None,
            (Some(c), false) => Some(c.clone()),
            (c, true) => {
                let base = c.as_deref().unwrap_or(&job.id);
                Some(format!("{base}-{}", short_hash(&job.id)))
            }
        };
    }

    // The stems are final: no two may meet, and none may be another job's upgrade.
    let mut clashes = Vec::new();
    let mut by_stem: FxHashMap<u64, usize> = FxHashMap::default();
    by_stem.reserve(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let k = key(job.stem());
        match by_stem.get(&k) {
            Some(&j) if eq(jobs[j].stem(), job.stem()) => clashes.push(Clash {
                job: i,
                other: j,
                file: format!("{}.mp4", job.stem()),
                what: "its video",
            }),
            _ => {
                by_stem.insert(k, i);
            }
        }
    }
    for (j, job) in jobs.iter().enumerate() {
        let Some(upgrade) = job.upgrade else {
            continue;
        };
        let name = format!("{}{}", job.stem(), upgrade_suffix(Some(upgrade)));
        if let Some(&i) = by_stem.get(&key(&name))
            && i != j
            && eq(jobs[i].stem(), &name)
        {
            clashes.push(Clash {
                job: i,
                other: j,
                file: format!("{name}.mp4"),
                what: match upgrade {
                    Upgrade::Hd1080 => "its 1080p file",
                    Upgrade::Uhd4k => "its 4K file",
                },
            });
        }
    }
    clashes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(specs: &[(&str, Option<Upgrade>)]) -> Vec<Job> {
        let text: String = specs.iter().map(|(id, _)| format!("{id},p\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, format!("id,prompt\n{text}")).unwrap();
        let mut jobs = crate::manifest::load(&path).unwrap().jobs;
        for (job, (_, upgrade)) in jobs.iter_mut().zip(specs) {
            job.upgrade = *upgrade;
        }
        jobs
    }

    fn stems(specs: &[(&str, Option<Upgrade>)]) -> (Vec<String>, Vec<Clash>) {
        let mut jobs = jobs(specs);
        let clashes = assign_stems(&mut jobs);
        (jobs.iter().map(|j| j.stem().to_owned()).collect(), clashes)
    }

    #[test]
    fn ids_are_cleaned_readably_and_hashed_only_where_they_meet() {
        let (s, clashes) = stems(&[
            ("colour-ember-16:9", None),
            ("plain", None),
            ("a:b", None),
            ("a?b", None),
            ("x_y", None),
            ("x:y", None),
        ]);
        assert!(clashes.is_empty(), "{clashes:?}");
        assert_eq!(s[0], "colour-ember-16_9");
        assert_eq!(s[1], "plain");
        assert!(s[2].starts_with("a_b-") && s[3].starts_with("a_b-") && s[2] != s[3]);
        // The id that is a safe name as it is keeps it; the cleaned one gets a hash.
        assert_eq!(s[4], "x_y");
        assert!(s[5].starts_with("x_y-"), "{}", s[5]);
    }

    #[test]
    fn ids_that_differ_only_in_case_get_their_own_files() {
        let (s, clashes) = stems(&[("Hero", None), ("hero", None)]);
        assert!(clashes.is_empty());
        assert!(!s[0].eq_ignore_ascii_case(&s[1]), "{s:?}");
    }

    #[test]
    fn an_id_that_is_another_jobs_upgrade_file_is_a_clash() {
        let (_, clashes) = stems(&[("hero", Some(Upgrade::Hd1080)), ("hero-1080p", None)]);
        assert_eq!(
            clashes,
            [Clash {
                job: 1,
                other: 0,
                file: "hero-1080p.mp4".into(),
                what: "its 1080p file",
            }]
        );
        // Without the upgrade, or with the other one, the names never meet.
        assert!(stems(&[("hero", None), ("hero-1080p", None)]).1.is_empty());
        assert!(
            stems(&[("hero", Some(Upgrade::Uhd4k)), ("hero-1080p", None)])
                .1
                .is_empty()
        );
        // A second result URL never meets another job: `~` is in no stem.
        assert!(stems(&[("shot", None), ("shot-2", None)]).1.is_empty());
    }
}
