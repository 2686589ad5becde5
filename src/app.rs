//! Dispatch of the subcommands, logging set-up, and the mapping of every outcome to
//! an exit code.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    let _ = cli.command;
    match cli.command {
        Command::Validate(args) => crate::exit::code(crate::validate::run(&args)),
        Command::Run(_) | Command::Simulate(_) => crate::exit::code(crate::exit::USAGE),
    }
}
