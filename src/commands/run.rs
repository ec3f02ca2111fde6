//! `exporter run`: configuration, lock, the state database (opened once), the login guard, the job
//! under signal handling (with a progress line at a terminal), the `run finished` line, the run's
//! entry in the history, the metrics, and the exit code.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use tracing::{error, info, warn};

use super::frame;
use crate::cli::RunArgs;
use crate::config::{Config, SourceConfig};
use crate::environment::Environment;
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::logging::Json;
use crate::metrics;
use crate::progress;
use crate::run::window::Window;
use crate::run::{self, Days, JobError, JobPlan, Outcome, RunReport};
use crate::source::console::login_guard::{self, Refusal};
use crate::state::{RunRecord, State, now_text};

/// Runs the export once and returns the exit status. Once the configuration is valid, a real run
/// leaves its metrics whatever the outcome.
pub(super) fn run(environment: &Environment, args: &RunArgs, run_id: &str) -> Exit {
    let started = Instant::now();
    let config = match frame::config(environment) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let mut report = RunReport {
        dry_run: args.dry_run,
        ..RunReport::default()
    };
    // Held until the metrics are written, so that two runs never write them at once.
    let mut lock = None;
    let mut state = None;
    let started_at = now_text();
    let exit = match run_configured(&config, args, run_id, &mut report, &mut lock, &mut state) {
        Ok(outcome) => {
            report.outcome = outcome;
            report.exit_code = outcome.exit().code();
            report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            info!(fields = ?Json(&report), "run finished");
            if let Some(state) = state
                .as_ref()
                .filter(|_| !args.dry_run && outcome != Outcome::Abandoned)
            {
                record_run(state, run_id, started_at, &report);
            }
            outcome.exit()
        }
        // Ended before the job could start; already logged.
        Err(exit) => exit,
    };
    if !args.dry_run {
        report.exit_code = exit.code();
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics::publish(&config, &report, state.as_ref());
    }
    drop(lock);
    exit
}

/// The run up to its outcome, or `Err` when it ended before the job could even start.
fn run_configured(
    config: &Config,
    args: &RunArgs,
    run_id: &str,
    report: &mut RunReport,
    lock: &mut Option<RunLock>,
    state: &mut Option<State>,
) -> Result<Outcome, Exit> {
    let days = match (args.from, args.to) {
        (Some(from), Some(to)) => match Window::backfill(from, to, Utc::now().date_naive()) {
            Ok(window) => Days::Backfill(window),
            Err(err) => {
                error!(error = %err, "invalid --from/--to");
                return Err(Exit::Failure);
            }
        },
        _ => Days::Scheduled,
    };
    let plan = JobPlan {
        days,
        dry_run: args.dry_run,
        run_id: run_id.to_owned(),
    };

    // A dry run changes no state, so it neither creates STATE_DIR nor waits for a real run.
    if !plan.dry_run {
        *lock = Some(frame::lock(config)?);
    }
    let opened = if plan.dry_run {
        State::open_read_only(&config.state_dir)
    } else {
        State::open(&config.state_dir).map(Some)
    };
    let window = opened.and_then(|opened| {
        *state = opened;
        let watermark = state.as_ref().map(State::watermark).transpose()?.flatten();
        plan.window(config, watermark)
    });
    log_start(config, window.as_ref().ok().copied().flatten());
    let window = match window {
        Ok(window) => window,
        Err(err) => {
            error!(error = format!("{err:#}"), "run failed");
            return Ok(Outcome::Failed);
        }
    };
    report.set_window(window);
    // The guard is asked before any request to Dify.
    if let Some(refusal) = check_login_guard(config, args, state.as_ref()) {
        error!(error = refusal, "run failed");
        return Ok(Outcome::Failed);
    }
    run_job(config, &plan, window, state.as_mut(), report)
}

/// Runs the job under signal handling, with a progress line at a terminal (gone before the
/// summary), and turns how it ended into the outcome; `Err` when the runtime could not even start
/// (already logged).
fn run_job(
    config: &Config,
    plan: &JobPlan,
    window: Option<Window>,
    mut state: Option<&mut State>,
    report: &mut RunReport,
) -> Result<Outcome, Exit> {
    // A dry run's log is on stderr, where the line would be drawn: it gets none.
    let line = if plan.dry_run {
        None
    } else {
        progress::start("exporting")
    };
    let guarded = frame::guarded(config, |http, cancel| {
        let (report, state) = (&mut *report, state.as_deref_mut());
        async move { run::run(config, &http, plan, window, state, &cancel, report).await }
    });
    drop(line);
    let guarded = guarded?;
    // Retries of the sinks' requests; the source's are already counted.
    report.retries += guarded.http.stats().retries();
    Ok(match (guarded.result, guarded.signal) {
        (None, _) => Outcome::Abandoned,
        // Stopped by a signal with what was complete committed: batches left in the queue are
        // the expected result, not a failure.
        (Some(Ok(()) | Err(JobError::Stopped)), Some(signal)) => Outcome::Stopped(signal),
        (Some(Ok(())), None) => match report.problem() {
            Some(problem) => {
                error!(error = problem, "run failed");
                Outcome::Failed
            }
            None => Outcome::Completed,
        },
        (Some(Err(err)), _) => {
            error!(error = %err, "run failed");
            if let (JobError::LoginRefused { refusal, .. }, Some(state)) = (&err, state) {
                keep_login_refusal(config, state, refusal);
            }
            Outcome::Failed
        }
    })
}

/// The `run starting` line: version, configuration (secrets masked), next fire time and the days.
fn log_start(config: &Config, window: Option<Window>) {
    let next_fire_time = config
        .schedule
        .fire_times_after(Utc::now())
        .next()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let (from, to, days) = (
        window.map(|w| w.first.to_string()),
        window.map(|w| w.last.to_string()),
        window.map(Window::day_count),
    );
    // A person reads the source and the sinks; the whole configuration is `validate-config`'s
    // product, and would make this one line about a thousand characters long.
    if crate::logging::writes_text() {
        info!(
            version = env!("CARGO_PKG_VERSION"),
            source = config.source.name(),
            sinks = config.sinks.names().join(","),
            next_fire_time,
            from,
            to,
            days,
            "run starting"
        );
    } else {
        let masked: BTreeMap<_, _> = config.masked().iter().cloned().collect();
        info!(
            version = env!("CARGO_PKG_VERSION"),
            config = ?Json(&masked),
            next_fire_time,
            from,
            to,
            days,
            "run starting"
        );
    }
}

/// Why the run must stop before any request to Dify, when the configured login is one Dify
/// already refused (see [`login_guard`]). A dry run reads the verdict but never clears it.
fn check_login_guard(config: &Config, args: &RunArgs, state: Option<&State>) -> Option<String> {
    let SourceConfig::Console { url, auth } = &config.source else {
        return None; // the database source does not log in
    };
    let state = state?;
    // The state database was opened a moment ago; if it fails now, the job fails on it too,
    // before any request to Dify, and says why.
    login_guard::login_guard(state, url, auth, args.retry_login, !args.dry_run).unwrap_or_default()
}

/// Keeps Dify's refusal of the login, so that later runs with the same credentials do not try
/// again. Only a real run gets here with a writable state.
fn keep_login_refusal(config: &Config, state: &State, refusal: &Refusal) {
    let SourceConfig::Console { url, auth } = &config.source else {
        return;
    };
    match login_guard::keep_refusal(state, url, auth, refusal) {
        Ok(true) => warn!(
            "login guard: runs with the same DIFY_EMAIL and DIFY_PASSWORD will not log in again; change them (or see `exporter status`)"
        ),
        Ok(false) => {}
        Err(err) => warn!(
            error = format!("{err:#}"),
            "cannot keep the refused login in the state database; the next run will try it again"
        ),
    }
}

/// Keeps the run in the state database's history; a failure here is only worth a warning.
fn record_run(state: &State, run_id: &str, started_at: String, report: &RunReport) {
    let recorded = serde_json::to_string(report)
        .map_err(anyhow::Error::from)
        .and_then(|summary| {
            state.record_run(&RunRecord {
                run_id: run_id.to_owned(),
                started_at,
                finished_at: now_text(),
                outcome: <&str>::from(report.outcome).to_owned(),
                exit_code: report.exit_code,
                summary,
            })
        });
    if let Err(err) = recorded {
        warn!(
            error = format!("{err:#}"),
            "cannot record the run in the state database"
        );
    }
}
