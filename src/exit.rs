//! The exit codes, in one table: each code is written once, with the line `--help`
//! prints for it (the table in docs/running.md is checked against it), and the mappings from
//! an error or a batch's standing to a code (a run's stop reasons map in
//! `RunReport::exit`, which falls back on [`Exit::of_tally`]).

use std::process::ExitCode;

use crate::checkpoint::CheckpointError;
use crate::checkpoint::writer::LockError;
use crate::summary::Tally;

/// How a command ended, as the process reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Every job succeeded (or, for `validate`, the manifest is valid).
    Ok = 0,
    /// The run finished, and some jobs failed.
    JobsFailed = 1,
    /// Bad usage, manifest, results file or settings: nothing was sent.
    Usage = 2,
    /// The service stopped the run: the key was refused or credits ran out.
    ServiceStopped = 3,
    /// Not finished: jobs are still running on the service or in doubt; run again later.
    NotFinished = 4,
    /// Another run holds the results file.
    Locked = 5,
    /// The run stopped at the spending limit (`--max-credits`).
    Budget = 6,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

/// Every code with the line `--help` shows for it, in order.
const TABLE: [(Exit, &str); 8] = [
    (Exit::Ok, "every job succeeded"),
    (Exit::JobsFailed, "the run finished and some jobs failed"),
    (
        Exit::Usage,
        "usage, manifest, results-file or settings error; nothing was sent",
    ),
    (
        Exit::ServiceStopped,
        "stopped by the service (key refused, credits exhausted)",
    ),
    (
        Exit::NotFinished,
        "not finished: jobs still running on the service or in doubt; run again",
    ),
    (Exit::Locked, "another run holds the results file"),
    (
        Exit::Budget,
        "stopped at the spending limit (--max-credits)",
    ),
    (
        Exit::Interrupted,
        "interrupted (Ctrl-C, SIGTERM); run again to resume",
    ),
];

impl Exit {
    /// The process's exit status.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, as `--help` says it.
    pub fn meaning(self) -> &'static str {
        TABLE
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("", |(_, meaning)| meaning)
    }

    /// Every code, in order.
    pub fn all() -> impl Iterator<Item = Exit> {
        TABLE.iter().map(|(e, _)| *e)
    }

    /// The code a run's jobs call for when nothing stopped it: the worst state wins.
    pub fn of_tally(t: &Tally) -> Exit {
        // A missing video is one to download again, like one never downloaded.
        // An upgrade refused for credits is made by a later run, after a top-up.
        if t.in_doubt
            + t.running
            + t.not_started
            + t.not_downloaded
            + t.video_missing
            + t.upgrade_not_made
            > 0
        {
            Exit::NotFinished
        } else if t.failed + t.download_failed + t.blocked > 0 {
            Exit::JobsFailed
        } else {
            Exit::Ok
        }
    }

    /// The code under `run --running-ok`: a batch whose only unfinished jobs run on
    /// the service (or wait for their download), with nothing else wrong, is 0.
    pub fn running_ok(self, t: &Tally) -> Exit {
        let unfinished = t.in_doubt + t.not_started;
        if self == Exit::NotFinished && unfinished == 0 {
            Exit::of_tally(&Tally {
                running: 0,
                not_downloaded: 0,
                ..t.clone()
            })
        } else {
            self
        }
    }

    /// The code an error that ended a command calls for. A closed stdout (`| head`)
    /// is no failure: the reader had what it wanted.
    pub fn of_error(e: &anyhow::Error) -> Exit {
        if is_broken_pipe(e) {
            return Exit::Ok;
        }
        if e.downcast_ref::<CheckpointError>().is_some()
            || e.downcast_ref::<crate::checkpoint::ForeignResults>()
                .is_some()
        {
            return Exit::Usage;
        }
        let locked = e.chain().any(|c| {
            c.downcast_ref::<LockError>()
                .is_some_and(|l| matches!(l, LockError::Held { .. }))
                || c.downcast_ref::<crate::store::lease::LeaseError>()
                    .is_some_and(|l| matches!(l, crate::store::lease::LeaseError::Held { .. }))
                || c.downcast_ref::<crate::store::lease::Fenced>().is_some()
        });
        if locked {
            return Exit::Locked;
        }
        match e.downcast_ref::<crate::api::ApiError>().map(|a| a.class) {
            Some(crate::api::ErrorClass::Auth | crate::api::ErrorClass::Credits) => {
                Exit::ServiceStopped
            }
            // The service answered, or could not be reached: not a usage error.
            Some(_) => Exit::JobsFailed,
            None => Exit::Usage,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// The status a child process reports, for comparing with `ExitStatus::code`.
impl From<Exit> for i32 {
    fn from(e: Exit) -> i32 {
        i32::from(e.code())
    }
}

/// True when `e` comes from writing into a pipe whose reader closed it.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    // serde_json keeps the I/O error inside its own, out of the source chain.
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
    })
}

/// The table as `--help` shows it.
pub fn help() -> String {
    let mut out = String::from("Exit codes:");
    for (e, meaning) in TABLE {
        out.push_str(&format!("\n  {:<4} {meaning}", e.code()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_every_code_once_in_order() {
        let codes: Vec<u8> = Exit::all().map(Exit::code).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 130]);
        assert!(TABLE.iter().all(|(_, meaning)| !meaning.is_empty()));
    }

    #[test]
    fn help_lists_each_code_with_its_meaning() {
        let help = help();
        assert!(help.starts_with("Exit codes:\n  0    every job succeeded\n"));
        assert!(help.ends_with("\n  130  interrupted (Ctrl-C, SIGTERM); run again to resume"));
        assert_eq!(help.lines().count(), 9);
    }

    #[test]
    fn lock_errors_map_to_exit_5() {
        let e = anyhow::Error::from(LockError::Held {
            results: "r.csv".into(),
            lock: "r.csv.lock".into(),
        });
        assert_eq!(Exit::of_error(&e), Exit::Locked);
        let wrapped = anyhow::Error::from(LockError::Held {
            results: "r.csv".into(),
            lock: "r.csv.lock".into(),
        })
        .context("while starting");
        assert_eq!(Exit::of_error(&wrapped), Exit::Locked);
        let other = anyhow::anyhow!("x").context("y");
        assert_eq!(Exit::of_error(&other), Exit::Usage);
    }

    #[test]
    fn a_closed_pipe_is_no_failure() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("failed to write to stdout");
        assert_eq!(Exit::of_error(&e), Exit::Ok);
    }

    /// `status --json | head -1`: the pipe closes inside serde_json's writer.
    #[test]
    fn a_closed_pipe_under_json_is_no_failure() {
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let Err(e) = serde_json::to_writer_pretty(Closed, &[1, 2, 3]) else {
            panic!("a closed pipe takes nothing");
        };
        let e = anyhow::Error::from(e);
        assert!(is_broken_pipe(&e));
        assert_eq!(Exit::of_error(&e), Exit::Ok);
    }

    /// Running jobs end with 0 under `--running-ok`; doubt, jobs not sent and
    /// failures do not.
    #[test]
    fn running_ok_forgives_only_running_jobs() {
        let running = Tally {
            succeeded: 2,
            running: 3,
            not_downloaded: 1,
            ..Tally::default()
        };
        let ok = |t: &Tally| Exit::of_tally(t).running_ok(t);
        assert_eq!(Exit::of_tally(&running), Exit::NotFinished);
        assert_eq!(ok(&running), Exit::Ok);
        let failed = Tally {
            failed: 1,
            ..running.clone()
        };
        assert_eq!(ok(&failed), Exit::JobsFailed);
        let doubt = Tally {
            in_doubt: 1,
            ..running.clone()
        };
        assert_eq!(ok(&doubt), Exit::NotFinished);
        let unsent = Tally {
            not_started: 1,
            ..running
        };
        assert_eq!(ok(&unsent), Exit::NotFinished);
        assert_eq!(Exit::Budget.running_ok(&unsent), Exit::Budget);
    }

    #[test]
    fn exit_codes_follow_the_worst_state() {
        let mut t = Tally {
            succeeded: 3,
            ..Tally::default()
        };
        assert_eq!(Exit::of_tally(&t), Exit::Ok);
        t.failed = 1;
        assert_eq!(Exit::of_tally(&t), Exit::JobsFailed);
        t.running = 1;
        assert_eq!(Exit::of_tally(&t), Exit::NotFinished);
    }
}
