//! File names: a job id or a batch name becomes a name that cannot leave its folder
//! (no `..`, no separators, no control characters), and no two jobs, upgrades or
//! result URLs ever share a video file.
//!
//! A job's video is `<stem>.mp4`; its 1080p or 4K file `<stem>-1080p.mp4` or
//! `<stem>-4k.mp4`; a second result URL `<stem>~2.mp4`. A stem never holds `~`, so
//! extra URLs cannot meet another job's file; two ids that clean to one stem (`a:b`
//! and `a?b`, or `Hero` and `hero` on a case-blind disk) get a short hash of the id;
//! and an id that is another job's upgrade name (`hero-1080p` beside `hero` with
//! `upgrade: 1080p`) is a manifest error naming both
//! ([`crate::manifest::stems::assign_stems`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::request::Upgrade;

const MAX_STEM: usize = 120;

fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `id` made safe as a file name, deterministically (`16:9` becomes `16_9`),
/// without a hash: `None` when `id` is already safe as it is.
pub(crate) fn cleaned(id: &str) -> Option<String> {
    let unchanged = !id.is_empty()
        && id.len() <= MAX_STEM
        && !id.starts_with('.')
        && !id.contains("..")
        && id.chars().all(is_safe);
    if unchanged {
        return None;
    }
    let clean: String = id
        .chars()
        .map(|c| if is_safe(c) { c } else { '_' })
        .collect();
    let mut stem: String = clean
        .trim_start_matches('.')
        .replace("..", "_")
        .chars()
        .take(MAX_STEM)
        .collect();
    if stem.is_empty() {
        stem.push_str("job");
    }
    Some(stem)
}

pub(crate) fn short_hash(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A file-name stem for a batch `name` (its results file): the name itself when it
/// is already safe, else a cleaned copy with a short hash of the name appended.
pub fn file_stem(name: &str) -> String {
    match cleaned(name) {
        None => name.to_owned(),
        Some(stem) => format!("{stem}-{}", short_hash(name)),
    }
}

/// The suffix of a job's upgraded file.
pub fn upgrade_suffix(upgrade: Option<Upgrade>) -> &'static str {
    match upgrade {
        Some(Upgrade::Hd1080) => "-1080p",
        Some(Upgrade::Uhd4k) => "-4k",
        None => "-upgraded",
    }
}

/// Where result `index` (0-based) of the job whose file stem is `stem` is saved:
/// `<stem><suffix>.mp4`, then `<stem><suffix>~2.mp4`, ...
pub fn video_path(dir: &Path, stem: &str, index: usize, suffix: &str) -> PathBuf {
    let name = match index {
        0 => format!("{stem}{suffix}.mp4"),
        n => format!("{stem}{suffix}~{}.mp4", n + 1),
    };
    dir.join(name)
}

/// Where a superseded video at `path` is kept: `superseded/<name>.<label>.mp4`
/// beside it (`label` names its task), never over an existing file.
pub fn superseded_path(path: &Path, label: &str) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(".")).join("superseded");
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label: String = label
        .chars()
        .map(|c| if is_safe(c) { c } else { '_' })
        .collect();
    let label = label.trim_matches(['_', '.']);
    let mut candidate = dir.join(format!("{stem}.{label}.mp4"));
    let mut n = 2;
    while candidate.exists() {
        candidate = dir.join(format!("{stem}.{label}~{n}.mp4"));
        n += 1;
    }
    candidate
}

/// The folder `path` is in: its parent, or `.` for a bare file name (whose
/// parent is the empty path, which no file call takes).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` without `.` components and with each `..` taking off the name before
/// it, by its text alone (no file is looked at, so a symlink is not followed).
/// The project's one normaliser: the run, the confinement checks and the report
/// page all place files by it.
pub fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // At the root `..` is the root, as the system resolves it.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                // Nothing left to take off: the path climbs above where it starts.
                None | Some(Component::ParentDir | Component::CurDir) => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The absolute, normalized form of `path` (the current directory before a
/// relative one); `path` itself if the current directory cannot be read.
pub fn absolute(path: &Path) -> PathBuf {
    normalized(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// How the results file whose folder is `dir` (absolute) records the file at
/// `path` (absolute): relative to that folder, so that the folder can be moved or
/// shared with its videos (`videos/a.mp4`, `../videos/a.mp4`).
pub fn recorded(dir: &Path, path: &Path) -> String {
    let from: Vec<_> = dir.components().collect();
    let to: Vec<_> = path.components().collect();
    let same = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    // Different roots (another drive): only the absolute path can say where.
    if same == 0 {
        return path.to_string_lossy().into_owned();
    }
    let mut rel = PathBuf::new();
    for _ in same..from.len() {
        rel.push("..");
    }
    for c in &to[same..] {
        rel.push(c.as_os_str());
    }
    rel.to_string_lossy().into_owned()
}

/// Where a path that a results file in `dir` (absolute) records is: relative
/// paths are the results folder's; an absolute one is as it is.
pub fn resolve(dir: &Path, recorded: &str) -> PathBuf {
    if is_bucket_url(recorded) {
        return PathBuf::from(recorded);
    }
    normalized(&dir.join(recorded))
}

/// Whether a recorded video is an object in a bucket (`s3://bucket/key`), which a
/// run with its videos in a bucket records instead of a path.
pub fn is_bucket_url(recorded: &str) -> bool {
    recorded
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("s3://"))
}

/// Why a path read from a file may not be used: it leads out of the folder it must
/// stay in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    /// The path as it was resolved.
    pub path: PathBuf,
    /// The folder it must stay in.
    pub root: PathBuf,
    /// Set when the path's text stays inside but a symbolic link on the way leads out:
    /// where it really leads.
    pub through_link: Option<PathBuf>,
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.through_link {
            None => write!(
                f,
                "`{}` is outside `{}`",
                self.path.display(),
                self.root.display()
            ),
            Some(real) => write!(
                f,
                "`{}` leads through a symbolic link to `{}`, outside `{}`",
                self.path.display(),
                real.display(),
                self.root.display()
            ),
        }
    }
}

/// `path` when it really is inside the folder `root`: where it leads once every
/// symbolic link on its way is followed, compared with where `root` really is (both
/// made absolute first, `..` taken by its text as every caller opens the path). A path
/// that does not exist yet is judged by the deepest folder of it that does: nothing
/// written there can land outside. An [`Outside`] otherwise.
///
/// This is the one check made wherever a path comes from a file that someone else
/// may have written (a results file's recorded videos, a manifest's local images).
pub fn confined(root: &Path, path: &Path) -> Result<PathBuf, Outside> {
    let root = absolute(root);
    let path = absolute(path);
    // The root itself may be reached through a link (a temp folder, a mounted
    // share): what counts is where it really is.
    let real_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
    let real = real_location(&path);
    if real.starts_with(&real_root) {
        return Ok(path);
    }
    Err(Outside {
        through_link: (path.starts_with(&root) && real != path).then_some(real),
        path,
        root,
    })
}

/// [`confined`] for many paths under one root, as a results file lists them: the
/// root and each folder are resolved once, so that a path costs one look at the file
/// itself (is it a link?) rather than one per component.
#[derive(Debug)]
pub struct Confiner {
    root: PathBuf,
    real_root: PathBuf,
    /// Where each folder seen really is, and whether that is inside the root.
    folders: std::collections::HashMap<PathBuf, (PathBuf, bool)>,
    /// Each folder's entries, listed once many of its files have been looked at.
    listings: std::collections::HashMap<PathBuf, Listing>,
}

/// What is known of a folder's entries: looks counted until it is worth listing
/// the whole folder, then its entries and which of them are symbolic links.
#[derive(Debug)]
enum Listing {
    Looks(usize),
    Listed(std::collections::HashMap<std::ffi::OsString, bool>),
    /// The folder could not be listed: each file is looked at on its own.
    Unlisted,
}

/// How many files of one folder are looked at one by one before the folder is
/// listed instead: a results file of 100,000 videos in one folder then costs one
/// listing rather than 100,000 lookups of a name among 100,000 (each of which
/// walks the whole path again), while a folder holding a few of the batch's
/// videos among many other files is never listed.
const LIST_AFTER: usize = 64;

impl Confiner {
    pub fn new(root: &Path) -> Confiner {
        let root = absolute(root);
        let real_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Confiner {
            root,
            real_root,
            folders: std::collections::HashMap::new(),
            listings: std::collections::HashMap::new(),
        }
    }

    /// The same answer as [`confined`] gives for `path` under this root.
    pub fn check(&mut self, path: &Path) -> Result<PathBuf, Outside> {
        let path = absolute(path);
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        self.check_looked(path, is_link)
    }

    /// [`Confiner::check`], and whether the file is there (an error other than "not
    /// found" counts as there): the one look at the file serves both, so a resumed
    /// run of 100,000 videos looks at each once.
    pub fn check_there(&mut self, path: &Path) -> (Result<PathBuf, Outside>, bool) {
        self.check_there_absolute(absolute(path))
    }

    /// [`Confiner::check_there`] of a `path` already made absolute and normalized
    /// (as [`resolve`] gives it from an absolute folder): a resumed run of 100,000
    /// videos then normalizes each path once.
    pub fn check_there_absolute(&mut self, path: PathBuf) -> (Result<PathBuf, Outside>, bool) {
        // A plain file (not a link) found in its folder's listing, or a name absent
        // from it, needs no look of its own; a link is looked at as ever.
        if let Some(is_link) = self.listed(&path) {
            match is_link {
                Some(false) => return (self.check_looked(path, false), true),
                None => return (self.check_looked(path, false), false),
                Some(true) => {}
            }
        }
        let look = std::fs::symlink_metadata(&path);
        let is_link = look.as_ref().is_ok_and(|m| m.file_type().is_symlink());
        let there = match &look {
            // A link is there when what it leads to is.
            Ok(_) if is_link => path.try_exists().unwrap_or(true),
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        };
        (self.check_looked(path, is_link), there)
    }

    /// What the listing of `path`'s folder says of it, once the folder is listed:
    /// `Some(Some(is_link))` for an entry, `Some(None)` for a name not in it; `None`
    /// while the folder is not (or cannot be) listed.
    fn listed(&mut self, path: &Path) -> Option<Option<bool>> {
        let (folder, name) = (path.parent()?, path.file_name()?);
        let listing = match self.listings.get_mut(folder) {
            Some(listing) => listing,
            None => self
                .listings
                .entry(folder.to_path_buf())
                .or_insert(Listing::Looks(0)),
        };
        if let Listing::Looks(n) = listing {
            *n += 1;
            if *n <= LIST_AFTER {
                return None;
            }
            *listing = list(folder).map_or(Listing::Unlisted, Listing::Listed);
        }
        match listing {
            Listing::Listed(entries) => Some(entries.get(name).copied()),
            Listing::Looks(_) | Listing::Unlisted => None,
        }
    }

    /// [`Confiner::check`] of the absolute `path`; `is_link`: whether the file
    /// itself is a symbolic link.
    fn check_looked(&mut self, path: PathBuf, is_link: bool) -> Result<PathBuf, Outside> {
        let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
            return confined(&self.root, &path);
        };
        // A link at the file itself leads wherever it says: the whole walk.
        if is_link {
            return confined(&self.root, &path);
        }
        let (real_folder, folder_inside) = match self.folders.get(folder) {
            Some(known) => known,
            None => {
                let real = real_location(folder);
                let inside = real.starts_with(&self.real_root);
                self.folders
                    .entry(folder.to_path_buf())
                    .or_insert((real, inside))
            }
        };
        // A name (never `..`: the path is normalized) in a folder inside the root is
        // inside it too; the folder's own check then serves all its files.
        if *folder_inside || real_folder.join(name).starts_with(&self.real_root) {
            return Ok(path);
        }
        let real_folder = real_folder.clone();
        Err(Outside {
            through_link: path.starts_with(&self.root).then(|| real_folder.join(name)),
            path,
            root: self.root.clone(),
        })
    }
}

/// The entries of `folder`, each with whether it is a symbolic link.
fn list(folder: &Path) -> std::io::Result<std::collections::HashMap<std::ffi::OsString, bool>> {
    let mut entries = std::collections::HashMap::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let is_link = entry.file_type()?.is_symlink();
        entries.insert(entry.file_name(), is_link);
    }
    Ok(entries)
}

/// Where the absolute `path` really leads: its deepest existing part resolved (every
/// symbolic link followed), with the rest of it after.
fn real_location(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => return rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c)),
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return path.to_path_buf(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn safe_names_are_kept() {
        assert_eq!(file_stem("spring-hero_01.v2"), "spring-hero_01.v2");
        assert_eq!(
            video_path(Path::new("v"), "a", 1, ""),
            Path::new("v/a~2.mp4")
        );
    }

    #[test]
    fn unsafe_names_are_cleaned_and_kept_apart() {
        let a = file_stem("../etc/passwd");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_ne!(file_stem("a/b"), file_stem("a?b"));
        assert!(file_stem("").starts_with("job-"));
        assert!(file_stem(&"x".repeat(500)).len() < 140);
    }

    #[test]
    fn normalized_takes_dots_out_by_text_alone() {
        for (given, expected) in [
            ("a/./b/../c", "a/c"),
            ("./a", "a"),
            ("a/..", ""),
            ("../a", "../a"),
            // A `..` never takes off another `..`: that would climb less than asked.
            ("../../a", "../../a"),
            ("a/../../b", "../b"),
            // `..` at the root stays at the root, as the system resolves it.
            ("/../a", "/a"),
            ("/a/../../b", "/b"),
        ] {
            assert_eq!(normalized(Path::new(given)), Path::new(expected), "{given}");
        }
    }

    #[test]
    fn recorded_paths_are_relative_to_the_results_folder() {
        let dir = Path::new("/work/out/results");
        for (file, rec) in [
            ("/work/out/results/videos/a.mp4", "videos/a.mp4"),
            ("/work/out/videos/a.mp4", "../videos/a.mp4"),
            ("/elsewhere/a.mp4", "../../../elsewhere/a.mp4"),
        ] {
            assert_eq!(recorded(dir, Path::new(file)), rec);
            assert_eq!(resolve(dir, rec), Path::new(file));
        }
        assert_eq!(normalized(Path::new("/a/./b/../c")), Path::new("/a/c"));
    }

    #[test]
    fn confined_paths_stay_in_their_folder_by_text_and_by_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("videos");
        std::fs::create_dir_all(root.join("inner")).unwrap();
        std::fs::create_dir_all(tmp.path().join("victim")).unwrap();
        std::fs::write(tmp.path().join("victim/important.txt"), "x").unwrap();
        assert!(confined(&root, &root.join("a.mp4")).is_ok());
        assert!(confined(&root, &root.join("inner/new/b.mp4")).is_ok());
        assert!(confined(&root, &root.join("inner/../a.mp4")).is_ok());
        let out = confined(&root, &root.join("../victim/important.txt")).unwrap_err();
        assert_eq!(out.through_link, None);
        assert!(out.to_string().contains("is outside"), "{out}");
        assert!(confined(&root, Path::new("/etc/passwd")).is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(tmp.path().join("victim"), root.join("link")).unwrap();
            let out = confined(&root, &root.join("link/important.txt")).unwrap_err();
            assert!(out.through_link.is_some(), "{out}");
            assert!(confined(&root, &root.join("link/not-yet.mp4")).is_err());
            std::os::unix::fs::symlink(
                tmp.path().join("victim/important.txt"),
                root.join("file-link.mp4"),
            )
            .unwrap();
            assert!(confined(&root, &root.join("file-link.mp4")).is_err());
            let mut many = Confiner::new(&root);
            for p in [
                root.join("a.mp4"),
                root.join("inner/new/b.mp4"),
                root.join("../victim/important.txt"),
                root.join("link/important.txt"),
                root.join("link/not-yet.mp4"),
                root.join("file-link.mp4"),
                PathBuf::from("/etc/passwd"),
            ] {
                assert_eq!(many.check(&p), confined(&root, &p), "{}", p.display());
            }
            // A root reached through a link is judged where it really is.
            std::os::unix::fs::symlink(&root, tmp.path().join("alias")).unwrap();
            let alias = tmp.path().join("alias");
            assert!(confined(&alias, &alias.join("a.mp4")).is_ok());
        }
    }

    /// The answer for `path` looked at on its own: confined or not, and there
    /// (a link when what it leads to is).
    fn looked_alone(root: &Path, path: &Path) -> (Result<PathBuf, Outside>, bool) {
        (confined(root, path), path.try_exists().unwrap_or(true))
    }

    #[cfg(unix)]
    #[test]
    fn a_listed_folder_answers_as_one_look_per_file_does() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("videos");
        let outside = tmp.path().join("victim");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("important.txt"), "x").unwrap();
        std::fs::write(root.join("real.mp4"), "").unwrap();
        for i in 0..2 * LIST_AFTER {
            std::fs::write(root.join(format!("{i}.mp4")), "").unwrap();
        }
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, root.join(name)).unwrap();
        link(&outside.join("important.txt"), "out.mp4");
        link(&root.join("real.mp4"), "in.mp4");
        link(&root.join("gone.mp4"), "dangling.mp4");
        link(&outside, "dir-link");
        let mut paths: Vec<PathBuf> = (0..2 * LIST_AFTER + 10)
            .map(|i| root.join(format!("{i}.mp4")))
            .collect();
        // After the folder is listed: files there, names missing, links in and
        // out, a dangling link, a folder link out, and a path that climbs out.
        for name in [
            "real.mp4",
            "missing.mp4",
            "out.mp4",
            "in.mp4",
            "dangling.mp4",
            "dir-link/important.txt",
            "../victim/important.txt",
        ] {
            paths.push(root.join(name));
        }
        let mut many = Confiner::new(&root);
        for p in &paths {
            assert_eq!(
                many.check_there(p),
                looked_alone(&root, p),
                "{}",
                p.display()
            );
        }
        assert!(
            many.listings
                .values()
                .any(|l| matches!(l, Listing::Listed(_))),
            "the folder was never listed"
        );
    }

    proptest! {
        #[test]
        fn no_name_escapes_the_directory(id in any::<String>(), index in 0usize..4) {
            let dir = Path::new("videos/batch");
            let stem = cleaned(&id).unwrap_or(id.clone());
            let path = video_path(dir, &stem, index, "");
            prop_assert_eq!(path.parent(), Some(dir));
            let name = path.file_name().unwrap().to_str().unwrap();
            prop_assert!(!name.starts_with('.'));
            prop_assert!(name.chars().all(|c| c.is_ascii_graphic()));
            prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
            let kept = superseded_path(&path, &id);
            let aside = dir.join("superseded");
            prop_assert_eq!(kept.parent(), Some(aside.as_path()));
            prop_assert!(kept.components().all(|c| matches!(c, Component::Normal(_))));
        }
    }
}
