//! `dify-usage-exporter`: ships LLM usage out of a self-hosted Dify into the places a team bills.
//!
//! The binary (`src/main.rs`) only parses the command line and turns the outcome into an exit
//! code. Only [`cli`] and [`commands`] are public: nothing outside the crate uses the rest, so the
//! compiler sees every unused item. How a run works: `docs/run.md`; the design choices and the module
//! map: `docs/design.md`.
//!
//! # Layout
//! - [`cli`]: clap types, nothing resolved.
//! - [`commands`]: one module per subcommand, and the frame they share (configuration, logging,
//!   lock, signals).
//! - `config`: the variable table, the checker, source and sink selection, the masked view.
//! - `run`: the export job of one `exporter run`: window, chunks, the run report and its outcome.
//! - `source`: the source contract over the two sources, `console` (Dify's console API) and
//!   `database` (Dify's PostgreSQL).
//! - `usage`: usage observations summed into records, and the records' keys.
//! - `ledger`: merging records into the ledger, the decrease policy, the identity map.
//! - `sink`: the sink contract, the outbox delivery loop, and the sinks.
//! - `report`: the ledger summed for `exporter report`.
//! - `state`: the SQLite state database: open and migrate, watermark, ledger, outbox, runs, login
//!   verdict.
//! - `postgres`: PostgreSQL sessions (TLS, connect timeout, error sorting) for the database source
//!   and the `postgres` sink.
//! - `http`: HTTP with retries, backoff, `Retry-After` and cancellation.
//! - `environment`: process environment merged with the env file.
//! - `exit`: every exit code, in one enum.
//! - `lock`, `shutdown`: the run lock, and SIGTERM/SIGINT to a cancellation token.
//! - `logging`, `progress`, `metrics`: one JSON object per log line, the progress line at a
//!   terminal, Prometheus metrics of each run.
//! - `schedule`, `deploy_check`: the portable cron grammar, and whether the deployment files carry it.
//! - `secret`: strings that print as `***`, and the masker for text from elsewhere.
//! - `stdout`: a command's product, ended quietly when the reader goes away.

pub mod cli;
pub mod commands;
mod config;
mod deploy_check;
mod environment;
mod exit;
mod http;
mod ledger;
mod lock;
mod logging;
mod metrics;
mod postgres;
mod progress;
mod reconcile;
mod report;
mod run;
mod schedule;
mod secret;
mod shutdown;
mod sink;
mod source;
mod state;
mod stdout;
mod usage;
