//! One job's place in a run's plan, and the record it starts from: its last one
//! resumed, or a fresh one.

use crate::checkpoint::{self, Record, State};
use crate::manifest::Job;

use super::job::Start;

/// One job's place in this run.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index of the job in the manifest.
    pub index: usize,
    pub start: Start,
    /// The job's last record, which it starts from, as its place in the results
    /// file's records ([`Prepared::record`]); `None` for a fresh start. The record is
    /// copied when the job starts, so that no record is held twice for the run.
    pub from: Option<usize>,
    /// An extend job that waits for the job at this place to make its video in this
    /// run before it is sent.
    pub after: Option<usize>,
    /// An extend job sent with this task of its parent's (made in an earlier run).
    pub parent_task: Option<String>,
    /// The account that made `parent_task`: the extend goes with one of its keys.
    pub parent_account: Option<String>,
}

/// The record a job starts from when it resumes from `last`: the same, or, when it
/// is submitted again, a record of the job's request as the manifest has it now
/// that keeps what the job's history must not lose: its attempts and credits, the
/// tasks it superseded (with the one it supersedes now), and, while the request is
/// the one recorded, the last error. The superseded task's files stay listed in
/// `video_paths` until the job moves them aside, before it sends anything.
pub(super) fn resumed_record(last: &Record, start: &Start, job: &Job) -> Record {
    match start {
        Start::Submit(_) => {
            let mut record = fresh_record(job);
            record.attempts = last.attempts;
            record.credits = last.credits;
            record.credits_source.clone_from(&last.credits_source);
            record.superseded_tasks.clone_from(&last.superseded_tasks);
            record.superseded_tasks.extend(superseded_task(last));
            record.superseded_paths.clone_from(&last.superseded_paths);
            record.video_paths.clone_from(&last.video_paths);
            record.updated_at.clone_from(&last.updated_at);
            if last.fingerprint == job.fingerprint {
                record.error_code = last.error_code;
                record.error_message.clone_from(&last.error_message);
                record.error_kind = last.error_kind;
            }
            record
        }
        Start::Poll(_) | Start::Upgrade(_) | Start::Download => {
            let mut record = last.clone();
            // What the job asks beyond its request is the manifest's to say.
            record.upgrade = job.upgrade;
            record.keep_original = job.keep_original;
            record
        }
    }
}

pub(super) fn fresh_record(job: &Job) -> Record {
    Record {
        job_id: job.id.clone(),
        state: Some(State::Pending),
        model: job.request.model.as_str().to_owned(),
        aspect_ratio: job.request.aspect_ratio.as_str().to_owned(),
        prompt: job.request.prompt.clone(),
        fingerprint: job.fingerprint.clone(),
        upgrade: job.upgrade,
        keep_original: job.keep_original,
        seeds: job.request.seeds.map(|s| s.to_string()).unwrap_or_default(),
        resolution: job
            .request
            .resolution
            .unwrap_or_default()
            .as_str()
            .to_owned(),
        duration: job.request.duration.unwrap_or(8).to_string(),
        image_urls: job.request.image_urls.clone(),
        generation_type: job.mode().to_owned(),
        extends: job
            .extend
            .as_ref()
            .map(|e| e.parent.clone())
            .unwrap_or_default(),
        ..Record::default()
    }
}

/// The task a submission replaces, if the last record has one (or may have one).
pub(super) fn superseded_task(last: &Record) -> Option<String> {
    match (&last.task_id, last.state()) {
        (Some(task), _) => Some(task.clone()),
        (None, State::Submitting | State::Submitted | State::InDoubt) => {
            Some(checkpoint::IN_DOUBT_TASK.to_owned())
        }
        (None, State::Pending | State::Succeeded | State::Failed | State::Blocked) => None,
    }
}
