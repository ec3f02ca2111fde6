//! `dify-usage-exporter`: ships LLM usage out of a self-hosted Dify into a metering API.
//!
//! The binary (`src/main.rs`) only parses the command line and maps the outcome to an exit code;
//! everything else lives here so integration tests and benchmarks drive the same code.
//!
//! # Layout
//! - [`cli`]: clap types, nothing resolved.
//! - [`commands`]: one module per subcommand; loads the environment and starts logging.
//! - [`config`]: environment variables to a validated [`config::Config`], all problems at once.
//! - [`deliver`]: sending the outbox to the metering API, and what each answer means.
//! - [`deploy_check`]: do the CronJob and crontab files carry the configured schedule?
//! - [`dify`]: Dify's console API: auth for every version, client, typed answers, collectors.
//! - [`difydb`]: Dify's PostgreSQL: read-only snapshot, queries, the rules of DIFY-DB.md.
//! - [`environment`]: process environment merged with the env file.
//! - [`exit`]: every exit code, in one enum.
//! - [`export`]: usage summed into records, and the wire format.
//! - [`http`]: HTTP with retries, backoff, `Retry-After` and cancellation.
//! - [`job`]: the export job that one run performs.
//! - [`lock`]: the run lock in `STATE_DIR`.
//! - [`logging`]: one JSON object per log line.
//! - [`metrics`]: Prometheus metrics of each run, to a textfile and/or a Pushgateway.
//! - [`progress`]: the live progress line on a terminal's stderr.
//! - [`schedule`]: the portable cron grammar and UTC fire times.
//! - [`secret`]: strings that print as `***`.
//! - [`shutdown`]: SIGTERM/SIGINT to a cancellation token.
//! - [`state`]: the SQLite state database: watermark, outbox, run history.
//! - [`window`]: the UTC days a run covers.

pub mod cli;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod deploy_check;
pub mod dify;
pub mod difydb;
pub mod environment;
pub mod exit;
pub mod export;
pub mod http;
pub mod job;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod state;
pub mod window;
