//! File names for videos: a job id becomes a name that cannot leave the videos
//! directory (no `..`, no separators, no control characters), and two ids never
//! share a name.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAX_STEM: usize = 120;

/// A file-name stem for `id`: the id itself when it is already safe, else a cleaned
/// copy with a short hash of the id appended, so distinct ids stay distinct.
pub fn file_stem(id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let clean: String = id.chars().map(|c| if safe(c) { c } else { '_' }).collect();
    let clean = clean.trim_start_matches('.');
    let unchanged = clean == id && !id.is_empty() && id.len() <= MAX_STEM && !id.contains("..");
    if unchanged {
        return id.to_owned();
    }
    let mut stem: String = clean.replace("..", "_").chars().take(MAX_STEM).collect();
    if stem.is_empty() {
        stem.push_str("job");
    }
    let digest = Sha256::digest(id.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stem}-{hash}")
}

/// Where result `index` (0-based) of job `id` is saved: `<id>.mp4`, `<id>-2.mp4`, ...
pub fn video_path(dir: &Path, id: &str, index: usize, suffix: &str) -> PathBuf {
    let stem = file_stem(id);
    let name = match index {
        0 => format!("{stem}{suffix}.mp4"),
        n => format!("{stem}{suffix}-{}.mp4", n + 1),
    };
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn safe_ids_are_kept() {
        assert_eq!(file_stem("spring-hero_01.v2"), "spring-hero_01.v2");
        assert_eq!(
            video_path(Path::new("v"), "a", 1, ""),
            Path::new("v/a-2.mp4")
        );
    }

    #[test]
    fn unsafe_ids_are_cleaned_and_kept_apart() {
        let a = file_stem("../etc/passwd");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_ne!(file_stem("a/b"), file_stem("a?b"));
        assert!(file_stem("").starts_with("job-"));
        assert!(file_stem(&"x".repeat(500)).len() < 140);
    }

    proptest! {
        #[test]
        fn no_id_escapes_the_directory(id in any::<String>(), index in 0usize..4) {
            let dir = Path::new("videos/batch");
            let path = video_path(dir, &id, index, "");
            prop_assert_eq!(path.parent(), Some(dir));
            let name = path.file_name().unwrap().to_str().unwrap();
            prop_assert!(!name.starts_with('.'));
            prop_assert!(name.chars().all(|c| c.is_ascii_graphic()));
            prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
        }
    }
}
