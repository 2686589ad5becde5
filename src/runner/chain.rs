//! Extend jobs in a run's plan: which go at once (their parent's video is made, in
//! an earlier run), which wait for a parent this run works on, which are blocked by
//! a parent that failed, which wait for a parent stuck in doubt, and which are sent
//! again because their parent's video was made again. Decided from the results
//! file alone: an extend's row records the task of the video it continued.

use crate::checkpoint::plan::SubmitReason;
use crate::checkpoint::{Record, State, now};
use crate::manifest::Job;

use super::RunConfig;
use super::job::Start;
use super::planned::{Planned, fresh_record, resumed_record};

/// Where a job's video stands for the jobs that extend it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Made, by this task, and not to be made again in this run.
    Done(String),
    /// This run sends it, polls it, or waits to send it.
    Coming,
    /// It failed, or is blocked: the phrase that follows the job's id.
    Failed(String),
    /// Neither made nor coming (in doubt, or left out of this run).
    Stuck,
}

/// A row the plan decides before anything is sent: a job now blocked, or a child
/// whose parent is made again in this run (its video continued the old one, so it is
/// pending again, its task kept among its superseded ones).
#[derive(Debug, Clone)]
pub struct Decided {
    pub index: usize,
    pub record: Record,
}

/// The fate of a job that is not an extend, or of an extend once its own plan is
/// settled: from its step in this run, or else its last record.
fn own_fate(start: Option<&Start>, record: Option<&Record>) -> Fate {
    match start {
        Some(Start::Submit(_) | Start::Poll(_)) => return Fate::Coming,
        Some(Start::Upgrade(task)) => return Fate::Done(task.clone()),
        Some(Start::Download) | None => {}
    }
    match record {
        Some(r) if r.state() == State::Succeeded => {
            r.task_id.clone().map_or(Fate::Stuck, Fate::Done)
        }
        Some(r) if r.state() == State::Failed => {
            Fate::Failed(format!("failed: {}", crate::summary::reason(r)))
        }
        Some(r) if r.state() == State::Blocked => Fate::Failed(format!(
            "is blocked: {}",
            r.error_message.as_deref().unwrap_or("its parent failed")
        )),
        _ => Fate::Stuck,
    }
}

/// The record a blocked job's row holds: the job as the manifest has it, not sent,
/// with why; a task it had for an earlier video of its parent stays on record
/// among its superseded tasks.
pub fn blocked_record(last: Option<&Record>, job: &Job, reason: String) -> Record {
    let mut record = match last {
        Some(last) => resumed_record(last, &Start::Submit(SubmitReason::Changed), job),
        None => fresh_record(job),
    };
    record.state = Some(State::Blocked);
    record.task_id = None;
    record.parent_task_id = None;
    record.set_failure(crate::checkpoint::ErrorKind::Blocked, None, reason);
    record.updated_at = now();
    record
}

/// The record of a child sent before whose parent is made again: pending, as the
/// manifest has it, its task among its superseded ones and its video still listed
/// (it moves aside when the child is sent again). So `status` and the summary say it
/// is not started, whatever happens to the run meanwhile.
fn pending_again(last: &Record, job: &Job) -> Record {
    let mut record = resumed_record(last, &Start::Submit(SubmitReason::Changed), job);
    record.state = Some(State::Pending);
    record.task_id = None;
    record.parent_task_id = None;
    record.updated_at = now();
    record
}

/// Why a job is blocked, told from its parent's fate.
fn because(parent: &Job, why: &str) -> String {
    format!("the job it extends, {:?}, {why}", parent.id)
}

/// Adjusts `plan` (one step per job that has one, in manifest order) for the jobs
/// that extend others, parents first; the rows it decides (jobs now blocked, children
/// pending again behind a parent made again); and how many jobs are sent again
/// because their parent's video was made again.
pub(super) fn plan_chains(
    config: &RunConfig,
    records: &[Record],
    last: &[Option<usize>],
    plan: &mut Vec<Planned>,
) -> (Vec<Decided>, usize) {
    let jobs = &config.jobs;
    let mut at: Vec<Option<usize>> = vec![None; jobs.len()];
    for (k, p) in plan.iter().enumerate() {
        at[p.index] = Some(k);
    }
    let record_of = |i: usize| last[i].and_then(|r| records.get(r));
    let mut fate: Vec<Fate> = (0..jobs.len())
        .map(|i| own_fate(at[i].map(|k| &plan[k].start), record_of(i)))
        .collect();
    let mut removed = vec![false; plan.len()];
    let mut added: Vec<Planned> = Vec::new();
    let mut blocked = Vec::new();
    let mut changed = 0;
    for i in crate::manifest::parents_first(jobs) {
        let job = &jobs[i];
        let Some(ext) = &job.extend else { continue };
        let Some(parent) = jobs.get(ext.parent_index) else {
            continue;
        };
        let record = record_of(i);
        // Sent for the request it has now: a task exists, or may, for that video.
        let sent = record.filter(|r| {
            r.fingerprint == job.fingerprint
                && !matches!(r.state(), State::Pending | State::Blocked)
        });
        let planned = at[i].filter(|&k| !removed[k]);
        // Sends it again (its parent's video is not the one it continued), now
        // with `task` or after its parent, superseding what it had.
        // The account that made the parent's task: the extend goes with its key.
        let parent_account = record_of(ext.parent_index).map(|r| r.account.clone());
        let mut again = |plan: &mut Vec<Planned>, task: Option<String>, after: Option<usize>| {
            let step = Planned {
                index: i,
                start: Start::Submit(SubmitReason::Changed),
                from: last[i],
                after,
                parent_account: task.as_ref().and(parent_account.clone()),
                parent_task: task,
            };
            match planned {
                Some(k) => {
                    if !matches!(plan[k].start, Start::Submit(SubmitReason::Changed)) {
                        changed += 1;
                    }
                    plan[k] = step;
                }
                None => {
                    changed += 1;
                    added.push(step);
                }
            }
        };
        match fate[ext.parent_index].clone() {
            Fate::Done(task) => match sent.map(|r| r.parent_task_id.as_deref()) {
                Some(Some(continued)) if continued == task => {
                    // Sent with the parent's video as it is: its own step stands
                    // (a retry of it continues the same video).
                    if let Some(k) = planned {
                        plan[k].parent_task = Some(task);
                        plan[k].parent_account.clone_from(&parent_account);
                    }
                }
                Some(_) => again(plan, Some(task), None),
                None => {
                    if let Some(k) = planned {
                        plan[k].parent_task = Some(task);
                        plan[k].parent_account.clone_from(&parent_account);
                    }
                }
            },
            Fate::Coming => match sent {
                Some(last) => {
                    again(plan, None, Some(ext.parent_index));
                    blocked.push(Decided {
                        index: i,
                        record: pending_again(last, job),
                    });
                }
                None => {
                    if let Some(k) = planned {
                        plan[k].after = Some(ext.parent_index);
                    }
                }
            },
            Fate::Failed(why) => {
                if let Some(k) = planned {
                    removed[k] = true;
                }
                let reason = because(parent, &why);
                let already = record.is_some_and(|r| {
                    r.state() == State::Blocked
                        && r.fingerprint == job.fingerprint
                        && r.error_message.as_deref() == Some(reason.as_str())
                });
                if !already {
                    blocked.push(Decided {
                        index: i,
                        record: blocked_record(record, job, reason.clone()),
                    });
                }
                fate[i] = Fate::Failed(format!("is blocked: {reason}"));
                continue;
            }
            Fate::Stuck => {
                if sent.is_none()
                    && let Some(k) = planned
                {
                    removed[k] = true;
                }
                fate[i] = Fate::Stuck;
                continue;
            }
        }
        let step = at[i]
            .filter(|&k| !removed[k])
            .map(|k| &plan[k])
            .or_else(|| added.iter().rev().find(|p| p.index == i));
        fate[i] = match step {
            Some(p) if p.after.is_some() => Fate::Coming,
            step => own_fate(step.map(|p| &p.start), record),
        };
    }
    if removed.iter().any(|r| *r) || !added.is_empty() {
        let mut k = 0;
        plan.retain(|_| {
            k += 1;
            !removed[k - 1]
        });
        plan.extend(added);
        plan.sort_by_key(|p| p.index);
    }
    (blocked, changed)
}
