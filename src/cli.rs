//! The command line as the user typed it: clap types only.
//!
//! Nothing here is validated beyond what clap does; [`crate::config`] turns the environment into a
//! [`crate::config::Config`], and each command in [`crate::commands`] reads the arguments it owns.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

const ENV_HELP: &str = "\
Configuration comes from environment variables (see README.md for the table). Variables may also be \
put in an env file: `.env` in the working directory is read when it exists, or the file named by \
--env-file. Values already set in the process environment win over the file.";

/// Ships LLM usage (tokens and cost per UTC day, app, user and model) from a self-hosted Dify to a
/// metering API. Run it once per schedule tick; it exits with a code that says what happened.
#[derive(Debug, Parser)]
#[command(name = "exporter", version, about, after_help = ENV_HELP)]
pub struct Cli {
    /// Read environment variables from this file (default: `.env` in the working directory, if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, take the run lock, run the export job once, and exit.
    Run(RunArgs),
    /// Validate everything `run` would validate and print the effective configuration (secrets masked).
    ValidateConfig(ValidateConfigArgs),
    /// Print the next fire times of CRON_SCHEDULE in UTC, one RFC 3339 instant per line.
    NextRuns(NextRunsArgs),
    /// Show the watermark, queued and dead batches with their last errors, and the last runs.
    Status(StatusArgs),
    /// Move dead-lettered batches back to the queue and deliver the queue now.
    Resend(ResendArgs),
    /// Show or set the last day whose records are queued (the next run starts after it).
    Watermark(WatermarkArgs),
    /// Give up on dead-lettered batches: they leave the outbox (listed by `status` as discarded)
    /// and no longer make runs fail. Their records are not sent.
    Discard(DiscardArgs),
    /// Show what the ledger holds (what was exported), summed by the chosen keys, per currency.
    /// Reads the state database only: no lock, no network.
    Report(ReportArgs),
    /// Compare the ledger with Dify's own statistics per app and UTC day; exit 1 when an app-day
    /// disagrees beyond the documented rule (docs/reconcile.md).
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// First UTC day (inclusive, YYYY-MM-DD); default: 29 days before --to.
    #[arg(long, value_name = "DAY")]
    pub from: Option<NaiveDate>,
    /// Last UTC day (inclusive); default: the last day the ledger holds.
    #[arg(long, value_name = "DAY")]
    pub to: Option<NaiveDate>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// The dead batch to discard (its id from `exporter status`).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "all_dead",
        conflicts_with = "all_dead"
    )]
    pub batch: Option<i64>,
    /// Discard every dead batch.
    #[arg(long)]
    pub all_dead: bool,
    /// Only the batches of this sink (`http`, `postgres`, `file`).
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
    /// Confirm (there is no interactive prompt); without it, only show what would be discarded.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// First UTC day (inclusive, YYYY-MM-DD); default: 29 days before --to.
    #[arg(long, value_name = "DAY")]
    pub from: Option<NaiveDate>,
    /// Last UTC day (inclusive); default: the last day the ledger holds.
    #[arg(long, value_name = "DAY")]
    pub to: Option<NaiveDate>,
    /// What to sum by, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "user",
        value_name = "KEYS"
    )]
    pub by: Vec<ReportKey>,
    /// Show only the N largest groups of each currency (the total still covers all of them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A key `exporter report` sums by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportKey {
    Day,
    App,
    User,
    Customer,
    Model,
    Provider,
    Workspace,
}

/// How `exporter report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, fitted to the terminal.
    Table,
    /// RFC 4180, one row per group.
    Csv,
    /// One JSON document.
    Json,
    /// One self-contained HTML page with charts (no script, nothing loaded from elsewhere).
    Html,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ResendArgs {
    /// The dead batch to resend (its id from `exporter status`).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "all_dead",
        conflicts_with = "all_dead"
    )]
    pub batch: Option<i64>,
    /// Resend every dead batch.
    #[arg(long)]
    pub all_dead: bool,
    /// Only this sink (`http`, `postgres`, `file`): revive its dead batches and deliver its queue.
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatermarkArgs {
    #[command(subcommand)]
    pub action: WatermarkAction,
}

#[derive(Debug, Subcommand)]
pub enum WatermarkAction {
    /// Print the watermark.
    Show,
    /// Set the watermark to DAY (UTC, YYYY-MM-DD, before today); the next run exports the days after it.
    Set {
        /// The new watermark.
        day: NaiveDate,
        /// Confirm the change (there is no interactive prompt).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Collect and aggregate, print the records as JSON lines on stdout (log on stderr), send
    /// nothing, change no state.
    #[arg(long)]
    pub dry_run: bool,
    /// First UTC day to export (inclusive, YYYY-MM-DD); with --to, backfills those days.
    #[arg(long, value_name = "DAY", requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last UTC day to export (inclusive, YYYY-MM-DD); at most yesterday.
    #[arg(long, value_name = "DAY", requires = "from")]
    pub to: Option<NaiveDate>,
    /// Log in to Dify once even though Dify refused these DIFY_EMAIL/DIFY_PASSWORD before (after
    /// the password was changed in Dify to this one, or the account was unlocked).
    #[arg(long)]
    pub retry_login: bool,
}

#[derive(Debug, Args)]
pub struct ValidateConfigArgs {
    /// Also check that the CronJob and crontab files under DIR carry the schedule of CRON_SCHEDULE.
    #[arg(long, value_name = "DIR")]
    pub check_deploy: Option<PathBuf>,
    /// Output format of the report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct NextRunsArgs {
    /// How many fire times to print.
    #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,
    /// Print fire times strictly after this RFC 3339 instant (default: now).
    #[arg(long, value_name = "INSTANT")]
    pub from: Option<DateTime<Utc>>,
    /// Use this schedule instead of CRON_SCHEDULE (a value may start with `-`, so that a wrong
    /// schedule gets the schedule's own error).
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    pub schedule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}
