//! A job's videos on disk: downloading them (fresh URLs when they expired),
//! and setting aside the files of a task the job no longer stands for.

use super::*;

impl JobRunner {
    /// How the results record the local file at `path` (absolute): relative to the
    /// results file's folder, or whole when the results live in a bucket (each
    /// run rebuilds them in a staging folder of its own).
    fn recorded(&self, path: &Path) -> String {
        let settings = &self.shared.settings;
        if settings.results_in_bucket {
            path.to_string_lossy().into_owned()
        } else {
            crate::paths::recorded(&settings.results_dir, path)
        }
    }

    /// True when the file at `path` was last written after this job's task was sent.
    pub(super) fn written_since_submission(&self, path: &Path) -> bool {
        let sent = self
            .record
            .submitted_at
            .as_deref()
            .and_then(|at| humantime::parse_rfc3339(at).ok());
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        matches!((sent, written), (Some(sent), Some(written)) if written >= sent)
    }

    /// The files to download, with the name each gets: the upgraded videos
    /// (`<stem>-1080p.mp4`), and the base ones (`<stem>.mp4`) when there is no upgrade
    /// or the job keeps the original.
    pub(super) fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        let dir = &self.shared.settings.videos_dir;
        let stem = self.job.stem();
        let mut files = Vec::new();
        if self.record.upgrade_urls.is_empty() || self.job.keep_original {
            for (i, url) in self.record.video_urls.iter().enumerate() {
                files.push((url.clone(), video_path(dir, stem, i, "")));
            }
        }
        let suffix = upgrade_suffix(self.job.upgrade);
        for (i, url) in self.record.upgrade_urls.iter().enumerate() {
            files.push((url.clone(), video_path(dir, stem, i, suffix)));
        }
        files
    }

    /// Before a job is sent again, moves the videos of the task it supersedes (the
    /// files its record still lists) to `superseded/` beside them, and records where:
    /// a paid video is never left under the name of the task that replaces it, and
    /// never overwritten. Nothing is sent before this is recorded with the job's
    /// next row.
    pub(super) async fn set_aside_superseded_videos(&mut self) {
        let label = self
            .record
            .superseded_tasks
            .last()
            .cloned()
            .unwrap_or_else(|| "unrecorded".to_owned());
        for recorded in std::mem::take(&mut self.record.video_paths) {
            if let Some(target) = &self.shared.settings.videos_bucket
                && target.holds(&recorded)
            {
                match target.set_aside(&recorded, &label).await {
                    Ok(to) => self.record.superseded_paths.push(to),
                    Err(e) => tracing::warn!(
                        "job {:?}: could not move the superseded video aside ({e}); it stays where it is",
                        self.job.id
                    ),
                }
                continue;
            }
            // A file recorded by a version that wrote paths from the current folder
            // is found there.
            let path = crate::paths::resolve(&self.shared.settings.results_dir, &recorded);
            let path = if path.exists() || !Path::new(&recorded).exists() {
                path
            } else {
                PathBuf::from(&recorded)
            };
            // The run's preparation dropped recorded paths that lead out; the folder
            // found here (the old current-folder reading) is held to the same rule.
            match crate::paths::confined(&self.shared.settings.videos_dir, &path) {
                Ok(path) => self.set_aside(&path, &label),
                Err(why) => tracing::warn!(
                    "job {:?}: the recorded video {why}; it is left where it is",
                    self.job.id
                ),
            }
        }
    }

    /// Moves the video at `path` (if there is one) to `superseded/` beside it, named
    /// after `label`, and records the move.
    pub(super) fn set_aside(&mut self, path: &std::path::Path, label: &str) {
        if !path.try_exists().unwrap_or(false) {
            return;
        }
        let to = superseded_path(path, label);
        let moved = to
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(path, &to));
        match moved {
            Ok(()) => {
                tracing::info!(
                    "job {:?}: kept the superseded video {} as {}",
                    self.job.id,
                    path.display(),
                    to.display()
                );
                self.record
                    .superseded_paths
                    .push(self.recorded(&crate::paths::absolute(&to)));
            }
            Err(e) => tracing::warn!(
                "job {:?}: could not move the superseded video {} aside ({e}); it stays where it is",
                self.job.id,
                path.display()
            ),
        }
    }

    /// Asks the service for the task's result URLs again: they expire, and a run
    /// resumed later may hold ones that no longer answer (or, for `--simulate`, that
    /// named the port of the simulator before). True when new URLs came.
    pub(super) async fn refresh_urls(&mut self) -> bool {
        let Some(task_id) = self.record.task_id.clone() else {
            return false;
        };
        let shared = self.shared.clone();
        let Some(permit) = slot(&shared).await else {
            return false;
        };
        let answer = self.shared.client.record_info(&task_id).await;
        drop(permit);
        let Ok(TaskState::Succeeded {
            result_urls,
            full_result_urls,
        }) = answer
        else {
            return false;
        };
        let Some(result_urls) = self.kept_urls(result_urls, full_result_urls) else {
            return false;
        };
        tracing::debug!(task = %task_id, "asked the service for fresh result URLs");
        self.record.video_urls = result_urls;
        if !self.record.upgrade_urls.is_empty() {
            // The upgrade is made already: asking again gives its URL, not a charge.
            self.record.upgrade_urls.clear();
            if self.upgrade(&task_id).await.is_err() {
                return false;
            }
        }
        true
    }

    pub(super) async fn download(&mut self) -> JobEnd {
        let settings = self.shared.settings.clone();
        let mut refreshed = false;
        'again: loop {
            let files = self.files();
            if !settings.download || files.is_empty() {
                return JobEnd::Succeeded;
            }
            let mut paths = Vec::with_capacity(files.len());
            let bucket = settings.videos_bucket.as_ref();
            for (url, dest) in &files {
                if let Some(target) = bucket {
                    let (_, object) = target.object_for(dest);
                    if self.record.video_paths.contains(&object) {
                        paths.push(object);
                        continue;
                    }
                    // Staging holds only what this run downloads: a file left there
                    // by a killed run may be partial or another task's.
                    match std::fs::remove_file(dest) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(
                            "could not clear the staging file {}: {e}",
                            dest.display()
                        ),
                    }
                }
                // A file already at `dest` is this task's when the record lists it, or
                // when it was written after the task was sent (a kill came between its
                // download and the row recording it). Any other file there (a
                // superseded task's, or one from a results file since deleted) is kept
                // aside, never overwritten and never left under this task's row.
                let dir = &settings.results_dir;
                let dest_abs = crate::paths::absolute(dest);
                let ours = bucket.is_some()
                    || self
                        .record
                        .video_paths
                        .iter()
                        .any(|p| crate::paths::resolve(dir, p) == dest_abs)
                    || self.written_since_submission(dest);
                if !ours {
                    let label = format!("unrecorded-{}", now().replace(':', ""));
                    self.set_aside(dest, &label);
                }
                // Files only reach their final name complete (temp file, then rename).
                // A stat of a local file is quicker than the trip to the blocking pool
                // that `tokio::fs` would make for it.
                if !dest.try_exists().unwrap_or(false) {
                    let mut delays = settings.retry.nominal_delays();
                    loop {
                        let shared = self.shared.clone();
                        let Some(permit) = slot(&shared).await else {
                            return JobEnd::Unfinished;
                        };
                        let got = self.shared.client.download(url, dest).await;
                        drop(permit);
                        let e = match got {
                            Ok(_) => break,
                            Err(e) => e,
                        };
                        let next = match e.class {
                            ErrorClass::Retryable | ErrorClass::InDoubt => delays.next(),
                            _ => None,
                        };
                        let Some(nominal) = next else {
                            // Once per job: the URLs may have expired, or a resumed run
                            // may hold ones that no longer answer.
                            if !refreshed && self.refresh_urls().await {
                                refreshed = true;
                                continue 'again;
                            }
                            tracing::warn!(url = %url, code = e.code, error = %e.message, "download failed; the next run tries again");
                            self.record.set_failure(
                                ErrorKind::Download,
                                e.code,
                                format!("{DOWNLOAD_FAILED}: {}", e.message),
                            );
                            // The files already fetched are this task's: recorded, so
                            // that the next try keeps them.
                            self.record.video_paths = paths;
                            return match self.save(State::Succeeded).await {
                                Ok(()) => JobEnd::Failed,
                                Err(end) => end,
                            };
                        };
                        self.retry_event("download", &e);
                        let delay = settings.retry.delay(nominal, &e, &mut self.rng);
                        if let Err(end) = self.sleep_or_stop(delay).await {
                            return end;
                        }
                    }
                }
                let Some(target) = bucket else {
                    paths.push(self.recorded(&dest_abs));
                    continue;
                };
                // Recorded `downloaded` only once the object is whole in the bucket.
                match target.put(dest).await {
                    Ok(object) => paths.push(object),
                    Err(e) => {
                        tracing::warn!(url = %target.object_for(dest).1, error = %e, "upload to the bucket failed; the next run downloads and uploads it again");
                        self.record.set_failure(
                            ErrorKind::Download,
                            None,
                            format!("{DOWNLOAD_FAILED}: the upload to the bucket failed: {e}"),
                        );
                        self.record.video_paths = paths;
                        return match self.save(State::Succeeded).await {
                            Ok(()) => JobEnd::Failed,
                            Err(end) => end,
                        };
                    }
                }
            }
            self.record.video_paths = paths;
            // A download failure recorded by an earlier try is resolved now; the reason
            // an upgrade failed is not, and stays on the record.
            if self.record.download_failed() {
                self.record.clear_failure();
            }
            return match self.save(State::Succeeded).await {
                Ok(()) => JobEnd::Succeeded,
                Err(end) => end,
            };
        }
    }
}
