//! Recorded paths kept inside the videos folder: a results file is plain text that
//! anyone can edit, so a `video_paths` or `superseded_paths` cell that leads out of
//! the batch's videos folder (`../../victim/important.txt`, an absolute path, a
//! symbolic link out) is taken off the record the run works from, with a warning
//! that says where the cell is (results file, line, column).
//!
//! A warning, not an error: the run loses nothing by leaving such a cell alone. A
//! succeeded job whose cell was dropped has its video downloaded again into the
//! videos folder from its recorded URL (or a fresh one), never generated again; a
//! dropped `superseded_paths` cell only forgets a note. An error would instead stop
//! every run of a batch whose videos folder merely moved (`--videos-dir` changed
//! between runs), for a problem the run can step around without touching the file.

use std::collections::HashMap;
use std::path::Path;

use super::Record;
use crate::paths::{Confiner, Outside};

/// One cell's path that leads outside the videos folder.
#[derive(Debug)]
struct Dropped {
    job_id: String,
    column: &'static str,
    value: String,
    why: Outside,
}

/// The recorded paths of a results file checked one record at a time, as a run
/// reads its records: paths that lead outside the videos folder taken off (see
/// [`confine_paths`]) and, for a run that downloads, the videos gone from disk
/// forgotten (see [`forget_missing_videos`]); each video file is looked at once.
pub struct Confinement {
    /// The results file's folder, which recorded paths are relative to.
    dir: std::path::PathBuf,
    confiner: Confiner,
    /// Whether videos gone from disk are forgotten (a run that downloads).
    download: bool,
    dropped: Vec<Dropped>,
    /// Jobs whose video is gone, as `"id"`.
    missing: Vec<String>,
}

impl Confinement {
    /// Checks the records of the results file `results` against `videos_dir`;
    /// `download`: also forget videos gone from disk.
    pub fn new(results: &Path, videos_dir: &Path, download: bool) -> Confinement {
        Confinement {
            dir: crate::paths::absolute(crate::paths::folder_of(results)),
            confiner: Confiner::new(videos_dir),
            download,
            dropped: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// Takes `r`'s paths that lead outside the videos folder off it and, when
    /// downloading, a done job's videos that are gone; true when `r` changed.
    pub fn check(&mut self, r: &mut Record) -> bool {
        let before = self.dropped.len();
        let done = self.download && r.state() == super::State::Succeeded;
        let mut gone = false;
        let dir = &self.dir;
        let confiner = &mut self.confiner;
        let dropped = &mut self.dropped;
        for (column, cell) in [
            ("video_paths", &mut r.video_paths),
            ("superseded_paths", &mut r.superseded_paths),
        ] {
            let videos = column == "video_paths";
            cell.retain(|p| {
                // `dir` is absolute: a recorded path comes back absolute and
                // normalized, but for a bucket object's URL.
                let path = crate::paths::resolve(dir, p);
                let (inside, there) = if path.is_absolute() {
                    confiner.check_there_absolute(path)
                } else {
                    confiner.check_there(&path)
                };
                if let Err(why) = inside {
                    dropped.push(Dropped {
                        job_id: r.job_id.clone(),
                        column,
                        value: p.clone(),
                        why,
                    });
                    return false;
                }
                // A path an earlier version recorded from the current folder counts too.
                if videos && done && !there && !Path::new(p).try_exists().unwrap_or(true) {
                    gone = true;
                    return false;
                }
                true
            });
        }
        if gone {
            self.missing.push(format!("{:?}", r.job_id));
        }
        gone || self.dropped.len() > before
    }

    /// The warnings of every record checked: each path dropped, located in
    /// `results` (the file the records were read from), then the videos gone.
    pub fn warnings(self, results: &Path) -> Vec<String> {
        let mut warnings = dropped_warnings(results, &self.dropped);
        warnings.extend(missing_warning(&self.missing));
        warnings
    }
}

/// Takes every recorded path of `records` that leads outside `videos_dir` off its
/// record, and says where each was: `results` is the file they were read from
/// (recorded paths are relative to its folder), read again only when a path was
/// dropped, to name its line and column.
pub fn confine_paths(records: &mut [Record], results: &Path, videos_dir: &Path) -> Vec<String> {
    let mut confinement = Confinement::new(results, videos_dir, false);
    for r in records.iter_mut() {
        confinement.check(r);
    }
    confinement.warnings(results)
}

fn dropped_warnings(results: &Path, dropped: &[Dropped]) -> Vec<String> {
    if dropped.is_empty() {
        return Vec::new();
    }
    let places = locate(results, dropped);
    dropped
        .iter()
        .zip(places)
        .map(|(d, place)| {
            let at = match place {
                Some((line, col)) => format!("{}:{line}: column {col}", results.display()),
                None => results.display().to_string(),
            };
            format!(
                "{at} ({}): job {:?}: {}; veo-batch leaves that file alone (it is not \
                 moved, renamed, overwritten or deleted) and does not count it as the \
                 job's{}",
                d.column,
                d.job_id,
                d.why,
                if d.column == "video_paths" {
                    " video (a done job has its video downloaded again into the videos \
                     folder, never generated again)"
                } else {
                    " set-aside video"
                }
            )
        })
        .collect()
}

/// Takes the video files that are gone from disk off the records of done jobs, so
/// that the run downloads them again from their recorded URLs (a fresh one if those
/// expired) instead of taking the job for finished; never generated again. One
/// warning names them, however many they are.
pub fn forget_missing_videos(records: &mut [Record], results: &Path) -> Option<String> {
    let dir = crate::paths::absolute(crate::paths::folder_of(results));
    let mut missing: Vec<String> = Vec::new();
    for r in records
        .iter_mut()
        .filter(|r| r.state() == super::State::Succeeded)
    {
        let before = r.video_paths.len();
        // A path an earlier version recorded from the current folder counts too.
        r.video_paths.retain(|p| {
            let there = |path: &Path| path.try_exists().unwrap_or(true);
            there(&crate::paths::resolve(&dir, p)) || there(Path::new(p))
        });
        if r.video_paths.len() < before {
            missing.push(format!("{:?}", r.job_id));
        }
    }
    missing_warning(&missing)
}

/// The one warning that names the jobs (`"id"`) whose videos are gone.
fn missing_warning(missing: &[String]) -> Option<String> {
    let n = missing.len();
    if n == 0 {
        return None;
    }
    let shown = missing
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if n > 3 {
        format!(" and {} more", n - 3)
    } else {
        String::new()
    };
    Some(format!(
        "{n} job{} recorded as downloaded {} a video file gone from disk ({shown}{more}): \
         downloaded again from the recorded URLs, not generated again",
        if n == 1 { "" } else { "s" },
        if n == 1 { "has" } else { "have" },
    ))
}

/// The line and (1-based) column of each dropped cell: the last row of its job that
/// holds the value, as the last row is the one that counts.
fn locate(results: &Path, dropped: &[Dropped]) -> Vec<Option<(u64, usize)>> {
    let mut found = vec![None; dropped.len()];
    let Ok(file) = std::fs::File::open(results) else {
        return found;
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut rows = rdr.records();
    let Some(Ok(header)) = rows.next() else {
        return found;
    };
    let columns: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let mut by_job: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, d) in dropped.iter().enumerate() {
        by_job.entry(d.job_id.as_str()).or_default().push(i);
    }
    for row in rows.flatten() {
        let Some(wanted) = row.get(0).and_then(|id| by_job.get(id)) else {
            continue;
        };
        let line = row.position().map_or(0, |p| p.line());
        for &i in wanted {
            let d = &dropped[i];
            let Some(&col) = columns.get(d.column) else {
                continue;
            };
            let holds = row.get(col).is_some_and(|cell| {
                cell.split(super::LIST_SEPARATOR)
                    .any(|p| p == d.value.as_str())
            });
            if holds {
                found[i] = Some((line, col + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_videos_folder_are_dropped_and_located() {
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results.csv");
        let videos = tmp.path().join("videos");
        let mut inside = Record {
            job_id: "in".into(),
            video_paths: vec!["videos/in.mp4".into()],
            ..Record::default()
        };
        let mut outside = Record {
            job_id: "out".into(),
            video_paths: vec!["videos/out.mp4".into(), "../victim/important.txt".into()],
            superseded_paths: vec!["/etc/passwd".into()],
            ..Record::default()
        };
        inside.state = Some(super::super::State::Succeeded);
        outside.state = Some(super::super::State::Succeeded);
        crate::checkpoint::writer::rewrite(&results, [&inside, &outside]).unwrap();
        let mut records = vec![inside.clone(), outside];
        let warnings = confine_paths(&mut records, &results, &videos);
        assert_eq!(records[0], inside, "a path inside is kept");
        assert_eq!(records[1].video_paths, ["videos/out.mp4"]);
        assert!(records[1].superseded_paths.is_empty());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let header = crate::checkpoint::HEADER;
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap() + 1;
        let want = format!(
            "{}:3: column {} (video_paths): job \"out\": `",
            results.display(),
            col("video_paths")
        );
        assert!(warnings[0].starts_with(&want), "{}\n{want}", warnings[0]);
        assert!(warnings[0].contains("is outside"), "{}", warnings[0]);
        assert!(
            warnings[1].contains(&format!(
                ":3: column {} (superseded_paths)",
                col("superseded_paths")
            )),
            "{}",
            warnings[1]
        );
    }

    /// One look per video gives what the two passes (paths confined, then videos
    /// gone forgotten) give: the same records, the same warnings.
    #[test]
    fn one_look_per_video_gives_what_the_two_passes_give() {
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results.csv");
        let videos = tmp.path().join("videos");
        std::fs::create_dir_all(&videos).unwrap();
        std::fs::write(videos.join("here.mp4"), b"mp4").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(videos.join("here.mp4"), videos.join("link.mp4")).unwrap();
            std::os::unix::fs::symlink(videos.join("nowhere.mp4"), videos.join("dead.mp4"))
                .unwrap();
        }
        let succeeded = |id: &str, paths: &[&str]| Record {
            job_id: id.into(),
            state: Some(super::super::State::Succeeded),
            video_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            superseded_paths: vec!["../elsewhere.mp4".into()],
            ..Record::default()
        };
        let mut records = vec![
            succeeded("here", &["videos/here.mp4"]),
            succeeded("gone", &["videos/gone.mp4", "videos/here.mp4"]),
            succeeded("out", &["../../victim.txt", "videos/gone.mp4"]),
            succeeded("links", &["videos/link.mp4", "videos/dead.mp4"]),
            Record {
                state: Some(super::super::State::Failed),
                ..succeeded("failed", &["videos/gone.mp4"])
            },
        ];
        crate::checkpoint::writer::rewrite(&results, &records).unwrap();
        let mut two = records.clone();
        let mut warnings = confine_paths(&mut two, &results, &videos);
        warnings.extend(forget_missing_videos(&mut two, &results));

        let mut one = Confinement::new(&results, &videos, true);
        let changed: Vec<bool> = records.iter_mut().map(|r| one.check(r)).collect();
        assert_eq!(records, two);
        assert_eq!(one.warnings(&results), warnings);
        assert_eq!(changed, [true; 5], "every record had a path outside");
        assert_eq!(records[0].video_paths, ["videos/here.mp4"]);
        assert_eq!(records[1].video_paths, ["videos/here.mp4"]);
        assert!(records[2].video_paths.is_empty());
        assert_eq!(
            records[4].video_paths,
            ["videos/gone.mp4"],
            "not a done job's"
        );
    }
}
