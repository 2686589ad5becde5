//! Why a job's last step failed, as one stable word in the results file's
//! `error_kind` column: what grouping, `--retry-failed` and a data team filter on,
//! instead of the beginning of a message whose wording is the service's or ours to
//! change. Files written before the column existed have it empty; their kind is
//! told from the message as it was then written ([`ErrorKind::of_legacy`]).

use std::fmt;

use super::{DOWNLOAD_FAILED, UPGRADE_FAILED, UPGRADE_NOT_MADE};

/// Why a job's last step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The service refused the prompt or an image under its content rules.
    ContentPolicy,
    /// The task was made and failed on the service.
    GenerationFailed,
    /// The service refused the request itself (a 4xx such as 400 or 422).
    Refused,
    /// Every try was refused for a reason worth trying again (429, 5xx).
    GaveUp,
    /// The account had no credits for it (a made video's upgrade waits for a top-up).
    Credits,
    /// A local image could not be uploaded.
    Upload,
    /// The task's status could not be read for good.
    StatusCheck,
    /// The video is made and paid for; fetching it failed.
    Download,
    /// The 1080p or 4K upgrade was refused; the base video is kept.
    Upgrade,
    /// An extend job not sent because the job it continues failed.
    Blocked,
    /// A generate call left and no answer came: a task may exist (in doubt).
    NoAnswer,
}

impl ErrorKind {
    /// Every kind, for the column's error message and tests.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::ContentPolicy,
        ErrorKind::GenerationFailed,
        ErrorKind::Refused,
        ErrorKind::GaveUp,
        ErrorKind::Credits,
        ErrorKind::Upload,
        ErrorKind::StatusCheck,
        ErrorKind::Download,
        ErrorKind::Upgrade,
        ErrorKind::Blocked,
        ErrorKind::NoAnswer,
    ];

    /// The word the results file holds.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ContentPolicy => "content_policy",
            ErrorKind::GenerationFailed => "generation_failed",
            ErrorKind::Refused => "refused",
            ErrorKind::GaveUp => "gave_up",
            ErrorKind::Credits => "credits",
            ErrorKind::Upload => "upload",
            ErrorKind::StatusCheck => "status_check",
            ErrorKind::Download => "download",
            ErrorKind::Upgrade => "upgrade",
            ErrorKind::Blocked => "blocked",
            ErrorKind::NoAnswer => "no_answer",
        }
    }

    pub fn parse(word: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// A refusal by the service (`code` and `message`): content rules when the
    /// message says so, else `otherwise`. The service reports content refusals as
    /// a 400 among other 400s (English-only prompt, image fetch failure), so the
    /// message is what tells them apart.
    pub fn of_refusal(message: &str, otherwise: ErrorKind) -> ErrorKind {
        let m = message.to_ascii_lowercase();
        if ["content policy", "policy", "sensitive", "safety", "flagged"]
            .iter()
            .any(|w| m.contains(w))
        {
            ErrorKind::ContentPolicy
        } else {
            otherwise
        }
    }

    /// The kind of a row written before the column existed, from its state and
    /// message as veo-batch then wrote them.
    pub fn of_legacy(state: super::State, message: &str) -> ErrorKind {
        use super::State;
        if message.starts_with(DOWNLOAD_FAILED) {
            ErrorKind::Download
        } else if message.contains(&format!("{UPGRADE_FAILED}: ")) {
            ErrorKind::Upgrade
        } else if message.contains(&format!("{UPGRADE_NOT_MADE}: ")) {
            ErrorKind::Credits
        } else if state == State::Blocked {
            ErrorKind::Blocked
        } else if state == State::InDoubt {
            ErrorKind::NoAnswer
        } else if message.starts_with("gave up after ") {
            ErrorKind::GaveUp
        } else {
            ErrorKind::of_refusal(message, ErrorKind::GenerationFailed)
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::State;

    #[test]
    fn every_word_reads_back_as_its_kind() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::parse("Download"), None);
    }

    #[test]
    fn old_rows_get_their_kind_from_the_message() {
        let of = ErrorKind::of_legacy;
        assert_eq!(
            of(
                State::Succeeded,
                "download failed: download of h/a.mp4 failed: http 404"
            ),
            ErrorKind::Download
        );
        assert_eq!(
            of(State::Succeeded, "1080p upgrade failed: 422: not available"),
            ErrorKind::Upgrade
        );
        assert_eq!(
            of(State::Failed, "content policy"),
            ErrorKind::ContentPolicy
        );
        assert_eq!(
            of(State::Failed, "internal error"),
            ErrorKind::GenerationFailed
        );
        assert_eq!(
            of(State::Blocked, "the job it extends failed"),
            ErrorKind::Blocked
        );
    }
}
