use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    veo_batch::commands::main(veo_batch::cli::Cli::parse())
}
