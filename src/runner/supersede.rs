//! The warning said before a run sends anything about the paid tasks it replaces:
//! one line per reason and former state, however many jobs share it, so that a
//! `--retry-failed` over hundreds of jobs does not print hundreds of lines.

use crate::checkpoint::State;
use crate::checkpoint::plan::SubmitReason;
use crate::manifest::Job;

use super::Superseding;

/// Superseded jobs of one reason and former state: each job's id and the task it
/// replaces.
type Group<'a> = ((SubmitReason, State), Vec<(&'a str, &'a str)>);

/// How many job ids one line names before it says how many more.
const IDS_SHOWN: usize = 5;

/// The lines to warn with, one per reason and former state, in the order their
/// first job comes.
pub(super) fn lines(superseding: &[Superseding], jobs: &[Job]) -> Vec<String> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for s in superseding {
        let Some(job) = jobs.get(s.index) else {
            continue;
        };
        let key = (s.reason, s.state);
        let entry = (job.id.as_str(), s.task.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ids)) => ids.push(entry),
            None => groups.push((key, vec![entry])),
        }
    }
    groups
        .into_iter()
        .map(|((reason, state), ids)| line(reason, state, &ids))
        .collect()
}

/// The line for jobs `ids` (each with the task it replaces).
fn line(reason: SubmitReason, state: State, ids: &[(&str, &str)]) -> String {
    let why = match reason {
        SubmitReason::Changed => "the manifest changed the request",
        SubmitReason::RetryFailed => "--retry-failed",
        SubmitReason::ResubmitInDoubt => "--resubmit-in-doubt",
        SubmitReason::New => "sent again",
    };
    let n = ids.len();
    let shown: Vec<String> = ids
        .iter()
        .take(IDS_SHOWN)
        .map(|(id, task)| format!("{id:?} (task {task})"))
        .collect();
    let more = match n.saturating_sub(IDS_SHOWN) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    // Only a task that made a video has one to keep; a failed or doubtful one had none.
    let videos = match (state, n) {
        (State::Succeeded, 1) => "; its video moves to the videos folder's superseded/",
        (State::Succeeded, _) => "; their videos move to the videos folder's superseded/",
        _ => "",
    };
    format!(
        "{why}: a new task replaces the {} task of {} (kept on record in superseded_tasks){videos}: {}{more}",
        state.as_str(),
        crate::summary::jobs(n),
        shown.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_and_state_with_videos_only_where_there_were_some() {
        let ids: Vec<String> = (1..=7).map(|i| format!("job-{i}")).collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "t")).collect();
        let failed = line(SubmitReason::RetryFailed, State::Failed, &ids);
        assert_eq!(
            failed,
            "--retry-failed: a new task replaces the failed task of 7 jobs (kept on record in \
             superseded_tasks): \"job-1\" (task t), \"job-2\" (task t), \"job-3\" (task t), \
             \"job-4\" (task t), \"job-5\" (task t) and 2 more"
        );
        let changed = line(SubmitReason::Changed, State::Succeeded, &[("hero", "t9")]);
        assert_eq!(
            changed,
            "the manifest changed the request: a new task replaces the succeeded task of 1 job \
             (kept on record in superseded_tasks); its video moves to the videos folder's \
             superseded/: \"hero\" (task t9)"
        );
    }
}
