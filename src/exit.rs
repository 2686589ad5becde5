//! The exit-code table, in one place. The README and `--help` print the same table.

use std::process::ExitCode;

/// Every job succeeded (or, for `validate`, the manifest is valid).
pub const OK: u8 = 0;
/// The run finished, and some jobs failed.
pub const JOBS_FAILED: u8 = 1;
/// Bad usage, manifest, results file or settings: nothing was sent.
pub const USAGE: u8 = 2;
/// The service stopped the run: the key was refused or credits ran out.
pub const SERVICE_STOPPED: u8 = 3;
/// Not finished: jobs are still running on the service or in doubt; run again later.
pub const NOT_FINISHED: u8 = 4;
/// Another run holds the results file.
pub const LOCKED: u8 = 5;
/// The run stopped at the spending limit (`--max-credits`).
pub const BUDGET: u8 = 6;
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// The table as `--help` shows it.
pub const TABLE: &str = "\
Exit codes:
  0    every job succeeded
  1    the run finished and some jobs failed
  2    usage, manifest, results-file or settings error; nothing was sent
  3    stopped by the service (key refused, credits exhausted)
  4    not finished: jobs still running on the service or in doubt; run again
  5    another run holds the results file
  6    stopped at the spending limit (--max-credits)
  130  interrupted (Ctrl-C, SIGTERM); run again to resume";

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
