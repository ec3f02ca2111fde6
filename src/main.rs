//! The `exporter` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2; everything after this returns an exit code
    // instead of calling `process::exit`, so destructors (the run lock) still run.
    let cli = dify_usage_exporter::cli::Cli::parse();
    dify_usage_exporter::commands::execute(cli)
}
