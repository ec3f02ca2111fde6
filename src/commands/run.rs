//! `exporter run`: configuration, lock, the login guard, the job under signal handling (with a
//! progress line at a terminal), the summary line, the run's entry in the state database, the
//! metrics, and the exit code.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Error;
use chrono::{SecondsFormat, Utc};
use serde_json::json;
use tracing::{error, info, warn};

use super::frame;
use crate::cli::RunArgs;
use crate::config::{Config, DifySource};
use crate::dify;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::job::{self, Days, JobPlan, JobReport};
use crate::lock::RunLock;
use crate::logging::Json;
use crate::metrics::{self, RunFigures};
use crate::progress;
use crate::state::{RunRecord, State, now_text};
use crate::window::Window;

/// Runs the export once and returns the exit status. Once the configuration is valid, a real run
/// leaves its metrics whatever the outcome.
#[must_use]
pub(super) fn run(environment: &Environment, args: &RunArgs, run_id: &str) -> Exit {
    let started = Instant::now();
    let config = match frame::config(environment) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let mut figures = RunFigures::default();
    // Held until the metrics are written, so that two runs never write them at once.
    let mut lock = None;
    let exit = run_configured(&config, args, run_id, started, &mut figures, &mut lock);
    if !args.dry_run {
        figures.exit_code = exit.code();
        figures.duration = started.elapsed();
        metrics::publish(&config, &figures);
    }
    drop(lock);
    exit
}

fn run_configured(
    config: &Config,
    args: &RunArgs,
    run_id: &str,
    started: Instant,
    figures: &mut RunFigures,
    lock: &mut Option<RunLock>,
) -> Exit {
    let started_at = now_text();
    let days = match (args.from, args.to) {
        (Some(from), Some(to)) => match Window::backfill(from, to, Utc::now().date_naive()) {
            Ok(window) => Days::Backfill(window),
            Err(err) => {
                error!(error = %err, "invalid --from/--to");
                return Exit::Failure;
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
        match frame::lock(config) {
            Ok(held) => *lock = Some(held),
            Err(exit) => return exit,
        }
    }
    let opened = job::open(config, &plan);
    let window = opened.as_ref().ok().and_then(|opened| opened.window);
    log_start(config, window);

    // `report` holds what the job did even when it failed or was stopped.
    let mut report = JobReport {
        window,
        ..JobReport::default()
    };
    // The guard is asked only when the job could start: before any request to Dify.
    let refusal = opened
        .is_ok()
        .then(|| check_login_guard(config, args))
        .flatten();
    let (outcome, exit, delivery_retries) = match (opened, refusal) {
        (Err(err), _) => {
            error!(error = format!("{err:#}"), "run failed");
            ("failed", Exit::Failure, 0)
        }
        (Ok(_), Some(refusal)) => {
            error!(error = refusal, "run failed");
            ("failed", Exit::Failure, 0)
        }
        (Ok(opened), None) => match run_job(config, &plan, opened, &mut report) {
            Ok(ended) => ended,
            Err(exit) => return exit,
        },
    };

    *figures = RunFigures {
        records: u64::try_from(report.records).unwrap_or(u64::MAX),
        tokens: report.total_tokens,
        cost: report.cost.clone(),
        dify_requests: report.dify_requests,
        retries: report.dify_retries + delivery_retries,
        ..RunFigures::default()
    };
    let summary = json!({
        "outcome": outcome,
        "exit_code": exit.code(),
        "dry_run": args.dry_run,
        "from": report.window.map(|w| w.first.to_string()),
        "to": report.window.map(|w| w.last.to_string()),
        "apps": report.apps(),
        "apps_skipped": report.apps_skipped(),
        "records": report.records,
        "total_tokens": report.total_tokens,
        "cost": report.cost_by_currency(),
        "batches_queued_now": report.batches_queued_now,
        "batches_sent": report.delivery.batches_sent,
        "records_sent": report.delivery.records_sent,
        "batches_queued": report.outbox.queued,
        "batches_dead": report.outbox.dead,
        "dify_requests": report.dify_requests,
        "retries": figures.retries,
        "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    info!(fields = ?Json(&summary), "run finished");
    if !args.dry_run && outcome != "abandoned" {
        record_run(
            &config.state_dir,
            run_id,
            started_at,
            outcome,
            exit,
            &summary,
        );
    }
    exit
}

/// Runs the job under signal handling, with a progress line at a terminal (gone before the
/// summary): the outcome word, the exit status and the retries made outside Dify (delivery), or
/// `Err` when the runtime could not even start (already logged).
fn run_job(
    config: &Config,
    plan: &JobPlan,
    opened: job::Opened,
    report: &mut JobReport,
) -> Result<(&'static str, Exit, u64), Exit> {
    // A dry run's log is on stderr, where the line would be drawn: it gets none.
    let line = if plan.dry_run {
        None
    } else {
        progress::start("exporting")
    };
    let guarded = frame::guarded(config, |http, cancel| {
        let report = &mut *report;
        async move { job::run(config, &http, plan, opened, &cancel, report).await }
    });
    drop(line);
    let guarded = guarded?;
    let retries = guarded.http.stats().retries();
    let (outcome, exit) = match guarded.stopped_or_timed_out() {
        Some((exit, outcome)) => (outcome, exit),
        None => match (guarded.result, guarded.signal) {
            // Stopped by a signal with what was complete committed: batches left in the queue are
            // the expected result, not a failure.
            (Some(Ok(())), Some(signal)) => ("stopped", signal.exit()),
            (Some(Ok(())), None) => match report.problem() {
                Some(problem) => {
                    error!(error = problem, "run failed");
                    ("failed", Exit::Failure)
                }
                None => ("completed", Exit::Success),
            },
            (Some(Err(err)), _) => {
                error!(error = format!("{err:#}"), "run failed");
                if !plan.dry_run {
                    keep_login_refusal(config, &err);
                }
                ("failed", Exit::Failure)
            }
            (None, _) => ("abandoned", Exit::Failure),
        },
    };
    Ok((outcome, exit, retries))
}

/// The `run starting` line: version, configuration (secrets masked), next fire time and the days.
fn log_start(config: &Config, window: Option<Window>) {
    let masked: BTreeMap<_, _> = config.masked().into_iter().collect();
    let next_fire_time = config
        .schedule
        .fire_times_after(Utc::now())
        .next()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = ?Json(&masked),
        next_fire_time,
        from = window.map(|w| w.first.to_string()),
        to = window.map(|w| w.last.to_string()),
        days = window.map(Window::day_count),
        "run starting"
    );
}

/// Why the run must stop before any request to Dify, when the configured login is one Dify
/// already refused (see [`dify::login_guard`]).
fn check_login_guard(config: &Config, args: &RunArgs) -> Option<String> {
    let DifySource::Console { url, auth } = &config.dify_source else {
        return None; // the database source does not log in
    };
    let state = if args.dry_run {
        State::open_read_only(&config.state_dir)
    } else {
        State::open(&config.state_dir).map(Some)
    };
    let refusal = state.and_then(|state| {
        let Some(state) = state else { return Ok(None) };
        dify::login_guard(&state, url, auth, args.retry_login, !args.dry_run)
    });
    // A state database that cannot be read or written was already opened by the job a moment
    // ago; if it fails now, the job fails on it too, before any request to Dify, and says why.
    refusal.ok().flatten()
}

/// Keeps Dify's refusal of the login, if that is why the job failed, so that later runs with the
/// same credentials do not try again.
fn keep_login_refusal(config: &Config, err: &Error) {
    let DifySource::Console { url, auth } = &config.dify_source else {
        return;
    };
    if dify::login_refusal(err).is_none() {
        return;
    }
    let kept = State::open(&config.state_dir)
        .and_then(|state| dify::record_login_refusal(&state, url, auth, err));
    match kept {
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
fn record_run(
    state_dir: &std::path::Path,
    run_id: &str,
    started_at: String,
    outcome: &str,
    exit: Exit,
    summary: &serde_json::Value,
) {
    let recorded = State::open(state_dir).and_then(|state| {
        state.record_run(&RunRecord {
            run_id: run_id.to_owned(),
            started_at,
            finished_at: now_text(),
            outcome: outcome.to_owned(),
            exit_code: exit.code(),
            summary: summary.to_string(),
        })
    });
    if let Err(err) = recorded {
        warn!(
            error = format!("{err:#}"),
            "cannot record the run in the state database"
        );
    }
}
