//! What is left to do for a job, decided from its last recorded row alone.
//!
//! This is the rule that keeps a resumed run from paying twice: a job whose task
//! exists is polled, never submitted again; a job whose request may have created a
//! task (in doubt) is only sent again when the user says so.

use super::{Record, State};

/// Choices the user makes about jobs that ended badly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeOptions {
    /// Submit again the jobs whose last run failed (`--retry-failed`).
    pub retry_failed: bool,
    /// Submit again the jobs recorded in doubt (`--resubmit-in-doubt`).
    pub resubmit_in_doubt: bool,
    /// Download results (not `--no-download`).
    pub download: bool,
}

/// Why a job is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitReason {
    /// Never sent, or every send was refused before a task was created.
    New,
    /// The manifest changed the request since it was recorded.
    Changed,
    RetryFailed,
    ResubmitInDoubt,
}

/// Why a job needs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Succeeded,
    Failed,
    InDoubt,
}

/// What the manifest asks of a job beyond its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    /// A 1080p or 4K file once the task succeeds.
    pub upgrade: bool,
    /// Keep the base video beside the upgraded one.
    pub keep_original: bool,
}

/// The next step for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Submit(SubmitReason),
    Poll {
        task_id: String,
    },
    /// The task succeeded; ask for its 1080p or 4K file.
    Upgrade {
        task_id: String,
    },
    Download,
    Nothing(Settled),
}

/// Decides the next step for a job with request fingerprint `fingerprint`, whose last
/// recorded row (if any) is `last`.
pub fn next_action(
    fingerprint: &str,
    wants: Wants,
    last: Option<&Record>,
    opts: ResumeOptions,
) -> Action {
    let Some(last) = last else {
        return Action::Submit(SubmitReason::New);
    };
    if last.fingerprint != fingerprint {
        return Action::Submit(SubmitReason::Changed);
    }
    match (last.state(), &last.task_id) {
        // Never sent: a blocked extend goes once its parent succeeded (which the
        // runner's plan of the chain decides).
        (State::Pending | State::Blocked, _) => Action::Submit(SubmitReason::New),
        (State::Submitting | State::Submitted, Some(task_id)) => Action::Poll {
            task_id: task_id.clone(),
        },
        (State::Submitted, None) | (State::Submitting, None) | (State::InDoubt, _) => {
            if opts.resubmit_in_doubt {
                Action::Submit(SubmitReason::ResubmitInDoubt)
            } else {
                Action::Nothing(Settled::InDoubt)
            }
        }
        (State::Succeeded, Some(task_id))
            if wants.upgrade && last.upgrade_urls.is_empty() && !last.upgrade_refused() =>
        {
            Action::Upgrade {
                task_id: task_id.clone(),
            }
        }
        (State::Succeeded, _) => {
            if opts.download && last.downloads_missing(wants.keep_original) {
                Action::Download
            } else {
                Action::Nothing(Settled::Succeeded)
            }
        }
        (State::Failed, _) if opts.retry_failed => Action::Submit(SubmitReason::RetryFailed),
        (State::Failed, _) => Action::Nothing(Settled::Failed),
    }
}

/// Where a job stands, whatever this run was asked to do with it: the one answer
/// that the progress counts, the end-of-run summary, `status`, `status --json` and
/// the exit code all come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// No task for the current request yet (never sent, refused before a task was
    /// made, or the manifest changed it since).
    NotStarted,
    /// A task is running on the service (or its 1080p/4K file is being made).
    Running,
    /// A generate call may have made a task whose id never came back.
    InDoubt,
    Failed,
    /// The video is made and paid for, and not downloaded yet: no download was
    /// tried (`--no-download`, or the run stopped first).
    NotDownloaded,
    /// The video is made and paid for; downloading it failed.
    DownloadFailed,
    /// Done: every file the job asks for is downloaded.
    Succeeded,
    /// Recorded as downloaded, but a file the record lists is gone from disk: the
    /// next run downloads it again from its recorded URL, never generating it again.
    /// Only `status` looks at the disk ([`crate::summary::standing_on_disk`]).
    VideoMissing,
    /// An extend job not sent because the job whose video it continues failed.
    Blocked,
    /// The video is made and kept; the service refused its 1080p/4K upgrade for
    /// want of credits. The next run (after a top-up) asks for the upgrade again and
    /// generates nothing.
    UpgradeNotMade,
}

impl Standing {
    /// How summaries name it.
    pub fn label(self) -> &'static str {
        match self {
            Standing::NotStarted => "not started",
            Standing::Running => "running",
            Standing::InDoubt => "in doubt",
            Standing::Failed => "failed",
            Standing::NotDownloaded => "not downloaded",
            Standing::DownloadFailed => "download failed",
            Standing::Succeeded => "succeeded",
            Standing::Blocked => "blocked",
            Standing::VideoMissing => "video missing",
            Standing::UpgradeNotMade => "upgrade not made",
        }
    }
}

/// Where a job stands: `fingerprint` is its request's as the manifest has it now
/// (`None` when only the results file is known), `wants` what it asks beyond the
/// request, `last` its last recorded row. It is what a run that downloads would do
/// next with the job ([`next_action`]), so `status` and the next run never disagree.
pub fn standing(fingerprint: Option<&str>, wants: Wants, last: Option<&Record>) -> Standing {
    let Some(last) = last else {
        return Standing::NotStarted;
    };
    let fingerprint = fingerprint.unwrap_or(&last.fingerprint);
    if last.state() == State::Blocked && last.fingerprint == fingerprint {
        return Standing::Blocked;
    }
    if last.upgrade_not_made() && last.fingerprint == fingerprint {
        return Standing::UpgradeNotMade;
    }
    let opts = ResumeOptions {
        download: true,
        ..ResumeOptions::default()
    };
    match next_action(fingerprint, wants, Some(last), opts) {
        Action::Submit(_) => Standing::NotStarted,
        Action::Poll { .. } | Action::Upgrade { .. } => Standing::Running,
        Action::Download if last.download_failed() => Standing::DownloadFailed,
        Action::Download => Standing::NotDownloaded,
        Action::Nothing(Settled::Succeeded) => Standing::Succeeded,
        Action::Nothing(Settled::Failed) => Standing::Failed,
        Action::Nothing(Settled::InDoubt) => Standing::InDoubt,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn state() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::Pending),
            Just(State::Submitting),
            Just(State::Submitted),
            Just(State::Succeeded),
            Just(State::Failed),
            Just(State::InDoubt),
            Just(State::Blocked),
        ]
    }

    prop_compose! {
        fn record()(
            state in state(),
            task in proptest::option::of("[a-z0-9]{1,8}"),
            fp in prop_oneof![Just("fp".to_owned()), Just("other".to_owned())],
            urls in 0usize..3,
            paths in 0usize..3,
        ) -> Record {
            Record {
                job_id: "j".into(),
                state: Some(state),
                task_id: task,
                fingerprint: fp,
                video_urls: vec!["u".into(); urls],
                video_paths: vec!["p".into(); paths],
                ..Record::default()
            }
        }
    }

    fn opts() -> impl Strategy<Value = ResumeOptions> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, i, d)| ResumeOptions {
            retry_failed: r,
            resubmit_in_doubt: i,
            download: d,
        })
    }

    proptest! {
        /// A task that exists for the current request is never paid for again.
        #[test]
        fn a_created_task_is_never_resubmitted(last in record(), opts in opts()) {
            let action = next_action("fp", Wants::default(), Some(&last), opts);
            if last.fingerprint == "fp" && last.task_id.is_some()
                && matches!(last.state(), State::Submitting | State::Submitted)
            {
                prop_assert_eq!(action, Action::Poll { task_id: last.task_id.clone().unwrap() });
            }
        }

        /// A job that may have a task is sent again only when the user asks.
        #[test]
        fn in_doubt_needs_the_flag(last in record(), opts in opts()) {
            let action = next_action("fp", Wants::default(), Some(&last), opts);
            let in_doubt = last.state() == State::InDoubt
                || (matches!(last.state(), State::Submitting | State::Submitted)
                    && last.task_id.is_none());
            if last.fingerprint == "fp" && in_doubt {
                prop_assert_eq!(
                    matches!(action, Action::Submit(_)),
                    opts.resubmit_in_doubt
                );
            }
        }

        /// A submission happens only for a reason the user can see in the summary.
        #[test]
        fn every_submit_has_its_reason(last in record(), opts in opts()) {
            if let Action::Submit(reason) = next_action("fp", Wants::default(), Some(&last), opts) {
                let expected = if last.fingerprint != "fp" {
                    SubmitReason::Changed
                } else {
                    match last.state() {
                        State::Pending | State::Blocked => SubmitReason::New,
                        State::Failed => SubmitReason::RetryFailed,
                        _ => SubmitReason::ResubmitInDoubt,
                    }
                };
                prop_assert_eq!(reason, expected);
                if reason == SubmitReason::RetryFailed {
                    prop_assert!(opts.retry_failed);
                }
            }
        }

        /// Succeeded jobs are done once their files are, and are never submitted again.
        #[test]
        fn succeeded_is_final(last in record(), opts in opts()) {
            if last.fingerprint == "fp" && last.state() == State::Succeeded {
                let action = next_action("fp", Wants::default(), Some(&last), opts);
                let missing = last.downloads_missing(false);
                let expected = if opts.download && missing {
                    Action::Download
                } else {
                    Action::Nothing(Settled::Succeeded)
                };
                prop_assert_eq!(action, expected);
            }
        }

        /// Planning is a function of the row: the same row, the same answer.
        #[test]
        fn deterministic(last in record(), opts in opts()) {
            prop_assert_eq!(
                next_action("fp", Wants::default(), Some(&last), opts),
                next_action("fp", Wants::default(), Some(&last.clone()), opts)
            );
        }
    }

    #[test]
    fn an_upgrade_is_asked_for_once_the_task_succeeded() {
        let wants = Wants {
            upgrade: true,
            keep_original: true,
        };
        let mut r = Record {
            job_id: "j".into(),
            state: Some(State::Succeeded),
            task_id: Some("t".into()),
            fingerprint: "fp".into(),
            video_urls: vec!["base".into()],
            ..Record::default()
        };
        let opts = ResumeOptions {
            download: true,
            ..ResumeOptions::default()
        };
        assert_eq!(
            next_action("fp", wants, Some(&r), opts),
            Action::Upgrade {
                task_id: "t".into()
            }
        );
        // Refused for good: the base video is downloaded, the upgrade not asked again.
        let mut refused = r.clone();
        refused.error_message = Some("1080p upgrade failed: 422: not available".into());
        assert_eq!(
            next_action("fp", wants, Some(&refused), opts),
            Action::Download
        );
        r.upgrade_urls = vec!["hd".into()];
        r.video_paths = vec!["hd.mp4".into()];
        assert_eq!(next_action("fp", wants, Some(&r), opts), Action::Download);
        r.video_paths.push("base.mp4".into());
        assert_eq!(
            next_action("fp", wants, Some(&r), opts),
            Action::Nothing(Settled::Succeeded)
        );
    }

    #[test]
    fn a_blocked_extend_stands_blocked_and_is_sent_once_unblocked() {
        let r = Record {
            job_id: "j".into(),
            state: Some(State::Blocked),
            fingerprint: "fp".into(),
            ..Record::default()
        };
        assert_eq!(
            standing(Some("fp"), Wants::default(), Some(&r)),
            Standing::Blocked
        );
        assert_eq!(
            standing(None, Wants::default(), Some(&r)),
            Standing::Blocked
        );
        assert_eq!(
            standing(Some("other"), Wants::default(), Some(&r)),
            Standing::NotStarted
        );
        // Never sent: the plan of its chain decides when (see runner::chain).
        assert_eq!(
            next_action("fp", Wants::default(), Some(&r), ResumeOptions::default()),
            Action::Submit(SubmitReason::New)
        );
    }

    #[test]
    fn a_new_job_is_submitted() {
        assert_eq!(
            next_action("fp", Wants::default(), None, ResumeOptions::default()),
            Action::Submit(SubmitReason::New)
        );
    }
}
