//! One module per subcommand, and [`execute`], which loads the environment, starts logging on the
//! right stream and dispatches.

mod discard;
mod frame;
mod next_runs;
mod reconcile;
mod report;
mod resend;
mod run;
mod status;
mod validate_config;
mod watermark;

use std::io::Write as _;

use tracing::{error, warn};

use crate::cli::{Cli, Command};
use crate::config::Problems;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::logging::{self, Json, LogStream};

/// Runs the parsed command line to its exit status. Errors are logged here, once.
#[must_use]
pub fn execute(cli: Cli) -> std::process::ExitCode {
    dispatch(cli).into()
}

fn dispatch(cli: Cli) -> Exit {
    if clock_before_1970() {
        // Not through the logger: its timestamps would read the same clock. One line in its shape.
        let line = serde_json::json!({
            "level": "error",
            "message": "the system clock reads a time before 1970; set the clock right (log timestamps, run ids, the state database and every UTC day count from 1970)",
        });
        let _ = writeln!(std::io::stderr(), "{line}");
        return Exit::Failure;
    }
    let environment = Environment::load(cli.env_file.as_deref());
    let settings = environment
        .as_ref()
        .map(crate::config::log_settings)
        .unwrap_or_default();
    // `run` logs to stdout; commands whose product is stdout (`--dry-run` records too) log to stderr.
    let (stream, run_id) = match &cli.command {
        Command::Run(args) => {
            let stream = if args.dry_run {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            };
            (stream, Some(run_id()))
        }
        Command::Resend(_) => (LogStream::Stdout, Some(run_id())),
        Command::ValidateConfig(_)
        | Command::NextRuns(_)
        | Command::Status(_)
        | Command::Watermark(_)
        | Command::Discard(_)
        | Command::Report(_)
        | Command::Reconcile(_) => (LogStream::Stderr, None),
    };
    logging::init(settings, stream, run_id.clone());

    let environment = match environment {
        Ok(environment) => environment,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot load the environment");
            return Exit::Failure;
        }
    };
    logging::mask_secrets(crate::config::masker(&environment));
    if !environment.missing_example_keys.is_empty() {
        warn!(
            keys = ?Json(&environment.missing_example_keys),
            "variables listed in .env.example are not set in .env or the environment"
        );
    }
    let placeholders = crate::config::placeholders(&environment);
    if !placeholders.is_empty() {
        warn!(
            placeholders = ?Json(&placeholders),
            "values are still placeholders of .env.example; set your own"
        );
    }

    match cli.command {
        Command::Run(args) => run::run(&environment, &args, run_id.as_deref().unwrap_or_default()),
        Command::ValidateConfig(args) => validate_config::validate_config(&environment, &args),
        Command::NextRuns(args) => next_runs::next_runs(&environment, &args),
        Command::Status(args) => status::status(&environment, &args),
        Command::Resend(args) => resend::resend(&environment, &args),
        Command::Watermark(args) => watermark::watermark(&environment, &args),
        Command::Discard(args) => discard::discard(&environment, &args),
        Command::Report(args) => report::report(&environment, &args),
        Command::Reconcile(args) => reconcile::reconcile(&environment, &args),
    }
}

/// chrono's `Utc::now` and uuid's v7 ids panic on a clock before the Unix epoch, so such a clock
/// is refused before anything reads it.
fn clock_before_1970() -> bool {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_err()
}

/// A new run id, time-ordered (UUIDv7).
fn run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Prints a command's product and ends with `exit`; a reader that went away is no failure, any
/// other write error is.
fn print(text: &str, exit: Exit) -> Exit {
    match crate::stdout::print(text) {
        Ok(()) => exit,
        Err(err) => {
            error!(error = %err, "cannot write to stdout");
            Exit::Failure
        }
    }
}

/// Logs every configuration problem in one `error` line.
fn log_problems(problems: &Problems) {
    let list: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    error!(
        problems = ?Json(&list),
        "configuration is invalid; fix the variables named in `problems`"
    );
}
