//! The subcommands, one file each. Each returns how it ended as an
//! `anyhow::Result<Exit>`; [`main`] prints an error in exactly one place
//! ([`report_error`]) and turns it into its code ([`Exit::of_error`]). Nothing below
//! this module ends the process.

mod credits;
pub mod run;
mod run_summary;

pub use run_summary::Style;
pub mod status;
pub mod validate;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, ColorChoice, Command, LogFormat};
use crate::exit::Exit;
use crate::manifest::{self, ManifestError};

/// Runs the parsed command line to an exit code.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli);
    // `validate` sends nothing by design; elsewhere a bad manifest is said to have
    // stopped the command before anything was sent.
    let sends = !matches!(cli.command, Command::Validate(_));
    let ended = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Run(args) => {
            let style = match (cli.log_format, cli.quiet) {
                (LogFormat::Json, _) => run_summary::Style::Json,
                (LogFormat::Text, true) => run_summary::Style::Quiet,
                (LogFormat::Text, false) => run_summary::Style::Text,
            };
            block_on(crate::runner::runtime(), run::run(*args, cli.quiet, style))
        }
        Command::Status(args) => status::run(&args),
        Command::Report(args) => status::report(&args),
        Command::Credits(args) => block_on(crate::runner::runtime(), credits::run(args)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "veo-batch", &mut script);
            print_stdout(&script)
        }
        // The simulator serves many clients at once: every core is its to use.
        Command::Simulate(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            block_on(runtime, async {
                crate::sim::serve(args).await.map(|()| Exit::Ok)
            })
        }
    };
    match ended {
        Ok(exit) => exit.into(),
        Err(e) => report_error(&e, sends).into(),
    }
}

/// Runs `command` to its end on `runtime`.
fn block_on(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    command: impl Future<Output = anyhow::Result<Exit>>,
) -> anyhow::Result<Exit> {
    let runtime =
        runtime.map_err(|e| anyhow::Error::from(e).context("failed to start the async runtime"))?;
    runtime.block_on(command)
}

fn init_logging(cli: &Cli) {
    // veo-batch's own lines at the level asked; the libraries under it (hyper,
    // reqwest, rustls) stay at warn until -vvv, so -v shows what veo-batch does.
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "warn,veo_batch=debug",
        (false, 2) => "info,veo_batch=trace",
        (false, _) => "trace",
    };
    let filter = std::env::var("VEO_BATCH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter)
        .with_target(false);
    crate::progress::set_structured(cli.log_format == LogFormat::Json);
    // A second init (tests driving `main` twice in one process) is harmless.
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(ansi).without_time().try_init(),
    };
}

/// Prints an error and gives its exit code. A manifest's problems are listed one
/// by one, located; anything else the cargo way (`error:` then `Caused by:` lines),
/// leaving out a cause whose text the lines above already say (an I/O error a
/// message quotes). A closed stdout prints nothing. `sends`: the command would
/// have sent requests, so a manifest's problems say nothing was.
pub fn report_error(e: &anyhow::Error, sends: bool) -> Exit {
    let exit = Exit::of_error(e);
    if crate::exit::is_broken_pipe(e) {
        return exit;
    }
    let structured = crate::progress::structured();
    if let Some(m) = e.downcast_ref::<ManifestError>() {
        let note = if sends { "; nothing was sent" } else { "" };
        if structured {
            for d in &m.diagnostics {
                tracing::error!(
                    location = %d.origin,
                    job = d.job.as_deref(),
                    field = d.field.as_deref(),
                    "{}",
                    d.message
                );
            }
            tracing::error!(exit_code = exit.code(), "{m}{note}");
            return exit;
        }
        for d in &m.diagnostics {
            eprintln!("{d}");
        }
        eprintln!("error: {m}{note}");
        return exit;
    }
    let mut said = e.to_string();
    let causes: Vec<String> = e
        .chain()
        .skip(1)
        .map(ToString::to_string)
        .filter(|c| {
            let new = !said.contains(c.as_str());
            said.push('\n');
            said.push_str(c);
            new
        })
        .collect();
    if structured {
        let caused_by = (!causes.is_empty()).then(|| causes.join("; "));
        tracing::error!(
            exit_code = exit.code(),
            caused_by = caused_by.as_deref(),
            "{e}"
        );
        return exit;
    }
    eprintln!("error: {e}");
    if !causes.is_empty() {
        eprintln!("\nCaused by:");
        for c in causes {
            eprintln!("    {c}");
        }
    }
    exit
}

/// Says `text` as a warning on stderr: a `warning:` line, or a WARN event in
/// JSON logs.
pub(crate) fn warn(text: &str) {
    if crate::progress::structured() {
        tracing::warn!("{text}");
    } else {
        eprintln!("warning: {text}");
    }
}

/// Writes `bytes` to stdout.
fn print_stdout(bytes: &[u8]) -> anyhow::Result<Exit> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::Error::from(e).context("failed to write to stdout"))?;
    Ok(Exit::Ok)
}

/// How a manifest is read, from `--max-image-size` and `--allow-images-from`.
fn load_options(
    max_image_size: Option<crate::units::Size>,
    allow_images_from: &[std::path::PathBuf],
) -> manifest::LoadOptions {
    manifest::LoadOptions {
        max_image_bytes: max_image_size.map_or(manifest::images::DEFAULT_MAX_IMAGE_BYTES, |s| s.0),
        image_roots: Some(allow_images_from.to_vec()),
    }
}
