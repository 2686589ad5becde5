//! Dispatch of the subcommands, logging set-up, and the mapping of every outcome to
//! an exit code.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Simulate(args) => simulate(args),
        Command::Validate(_) | Command::Run(_) => crate::exit::code(crate::exit::USAGE),
    }
}

fn simulate(args: crate::sim::args::SimArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(crate::sim::serve(args)));
    match result {
        Ok(()) => crate::exit::code(crate::exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            crate::exit::code(crate::exit::USAGE)
        }
    }
}
