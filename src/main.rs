use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    veo_batch::app::main(veo_batch::cli::Cli::parse())
}
