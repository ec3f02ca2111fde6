//! The one integration-test binary: every test drives the built `exporter` binary, against real
//! HTTP servers on 127.0.0.1, real files in temporary directories and real signals.

mod support;

// Every token attributed to its user, against hand-written Dify answers.
mod attribution;
// `run --dry-run` against the Dify simulator: exact records for every auth variant and mode.
mod collect;
// The cloudevents sink against a simulated OpenMeter collector: deltas, replays, kills, the Python SDK.
mod cloudevents;
// The whole product against both simulators: delivery, outages, kills, concurrency, bad state.
mod deliver;
// Configuration: required variables, malformed values, masking, env files.
mod config;
// Hostile inputs and a broken network (issue 9): headers, echoed secrets, windows, 413, messages.
mod hardening;
// A misbehaving Dify (issue 9 items 2-4): endless lists, shifted pages, negative prices, currencies.
mod robustness;
// The run lock: held, contended, and after SIGKILL.
mod lock;
// The login guard: one failed login per wrong password across runs, cleared by new credentials.
mod login_guard;
// Metrics to a real Pushgateway and a textfile that promtool accepts; the alert rules.
mod metrics;
// The progress line: drawn under a pseudo-terminal, absent when stderr is piped.
mod progress;
// `exporter run` against a fake Dify: log schema, app counts, auth headers, retries, errors.
mod run;
// Fire times against the reference data, rejections, and --check-deploy.
mod schedule;
// SIGTERM/SIGINT while a request is in flight, and the shutdown timeout.
mod shutdown;
// The database source against a real PostgreSQL started by the tests (tests/pg).
mod difydb;
// Several sessions on one snapshot, fallbacks, archived runs (tests/pg and the simulator).
mod difydb_sessions;
// The MySQL dialect against real MariaDB servers started by the tests (tests/mariadb).
mod difydb_mysql;
mod mariadb;
// The ledger: usage Dify deletes or adds after an export, customers, currencies.
mod ledger;
// `exporter report` over the ledger.
mod report;
// The postgres sink against a real PostgreSQL started by the tests (tests/pg).
mod pg;
mod sinkpg;
// The file sink, read back by DuckDB and checked by the FOCUS validator.
mod file_sink;
// Several sinks at once, one of them down.
mod sinks;
// `exporter reconcile`: the ledger beside Dify's own statistics.
mod reconcile;
// The crontab files' command lines, run as a non-root user through runuser.
mod crontab;
// The operator's first hour: log format at a terminal, the unedited example, quotes, addresses, noise.
mod operator;
