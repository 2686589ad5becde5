//! How the page points at the videos: a recorded path is found on disk, then
//! written as a URL relative to the page, so the folder can be moved, zipped or
//! opened from a shared drive and the page still plays its videos.

use std::path::{Component, Path, PathBuf};

use crate::paths::normalized;

/// Where the video recorded as `recorded` is. A relative path is relative to the
/// results file's folder (`results_dir`), as `run` records it. A results file
/// written by an earlier version recorded paths from the folder `run` ran in: the
/// current one (`cwd`) is looked in next, then the folder above the results file,
/// where the default layout (`results/NAME.csv` beside `videos/NAME/`) puts the
/// videos. When no candidate exists the first one is taken, and the page says the
/// file is missing.
pub(crate) fn locate(recorded: &str, cwd: &Path, results_dir: &Path) -> PathBuf {
    let path = Path::new(recorded);
    if path.is_absolute() {
        return normalized(path);
    }
    let first = normalized(&results_dir.join(path));
    if first.exists() {
        return first;
    }
    let others = [Some(cwd), results_dir.parent()];
    others
        .into_iter()
        .flatten()
        .map(|dir| normalized(&dir.join(path)))
        .find(|p| p.exists())
        .unwrap_or(first)
}

/// `path` with `.` and `..` taken out without asking the disk (the file may not
/// exist), made absolute against `cwd` first if it is relative.
pub(crate) fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        normalized(path)
    } else {
        normalized(&cwd.join(path))
    }
}

/// The URL of `to` as seen from a page in the folder `from`, both absolute and
/// normalized: `../videos/batch/a.mp4`, each byte outside the unreserved set
/// percent-encoded (a `#`, `?`, `%` or space in a name stays part of the name).
/// Paths on different roots (Windows drives) get an absolute `file:` URL.
pub(crate) fn relative_url(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to_parts: Vec<Component> = to.components().collect();
    if from.first() != to_parts.first() {
        return file_url(to);
    }
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut segments: Vec<String> = vec!["..".to_owned(); from.len() - common];
    segments.extend(to_parts[common..].iter().map(|c| encode(c.as_os_str())));
    segments.join("/")
}

fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Prefix(p) => {
                url.push('/');
                url.push_str(&p.as_os_str().to_string_lossy().replace('\\', "/"));
            }
            other => {
                url.push('/');
                url.push_str(&encode(other.as_os_str()));
            }
        }
    }
    url
}

fn encode(segment: &std::ffi::OsStr) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for &b in segment.as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_relative_to_the_page_and_encoded() {
        let url = |from: &str, to: &str| relative_url(Path::new(from), Path::new(to));
        assert_eq!(
            url("/w/results", "/w/videos/batch/a.mp4"),
            "../videos/batch/a.mp4"
        );
        assert_eq!(url("/w", "/w/videos/a.mp4"), "videos/a.mp4");
        assert_eq!(url("/w/out", "/w/out/a.mp4"), "a.mp4");
        assert_eq!(
            url("/w/r", "/w/my videos/#1?x%.mp4"),
            "../my%20videos/%231%3Fx%25.mp4"
        );
        assert_eq!(url("/w", "/w/é:.mp4"), "%C3%A9%3A.mp4");
    }

    #[test]
    fn paths_are_normalized_without_the_disk() {
        let cwd = Path::new("/w/run");
        assert_eq!(
            absolute(Path::new("../x/./y.html"), cwd),
            Path::new("/w/x/y.html")
        );
        assert_eq!(absolute(Path::new("/../a"), cwd), Path::new("/a"));
    }

    #[test]
    fn a_video_is_found_where_the_run_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("results")).unwrap();
        std::fs::create_dir_all(root.join("videos/b")).unwrap();
        std::fs::write(root.join("videos/b/a.mp4"), b"x").unwrap();
        let results_dir = root.join("results");
        // From the folder the run ran in, and from anywhere else.
        assert_eq!(
            locate("videos/b/a.mp4", root, &results_dir),
            root.join("videos/b/a.mp4")
        );
        assert_eq!(
            locate("videos/b/a.mp4", Path::new("/nowhere"), &results_dir),
            root.join("videos/b/a.mp4")
        );
        // As run records it today: relative to the results file's folder.
        assert_eq!(
            locate("../videos/b/a.mp4", Path::new("/nowhere"), &results_dir),
            root.join("videos/b/a.mp4")
        );
        // Missing everywhere: where the results file says it is.
        assert_eq!(
            locate("../videos/b/gone.mp4", root, &results_dir),
            root.join("videos/b/gone.mp4")
        );
        let abs = root.join("videos/b/a.mp4");
        assert_eq!(
            locate(abs.to_str().unwrap(), Path::new("/x"), &results_dir),
            abs
        );
    }
}
