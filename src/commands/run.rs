//! `exporter run`: the frame around the job — configuration, lock, signals, summary, exit code.
//!
//! The job gets a [`CancellationToken`]; a stop signal cancels it and the frame then waits up to
//! `GRACEFUL_SHUTDOWN_TIMEOUT` for the job to reach a safe point. The lock guard lives until the
//! job future is gone, so a second run can never overlap this one's work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Error;
use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::config::Config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::http::{HttpClient, RequestError};
use crate::job::{self, JobPlan, JobReport};
use crate::lock::{LockError, RunLock};
use crate::logging::Json;
use crate::shutdown::StopSignals;
use crate::window::Window;

/// Runs the export once and returns the exit status.
#[must_use]
pub(super) fn run(environment: &Environment, args: &RunArgs) -> Exit {
    let started = Instant::now();
    let config = match Config::from_env(environment) {
        Ok(config) => config,
        Err(problems) => {
            super::log_problems(&problems);
            return Exit::Failure;
        }
    };
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
        "run starting"
    );

    let today = Utc::now().date_naive();
    let window = match (args.from, args.to) {
        (Some(from), Some(to)) => match Window::backfill(from, to, today) {
            Ok(window) => window,
            Err(err) => {
                error!(error = %err, "invalid --from/--to");
                return Exit::Failure;
            }
        },
        _ => Window::last_days(today, config.dify_fetch_days),
    };
    let plan = JobPlan {
        window,
        dry_run: args.dry_run,
    };

    // A dry run changes no state, so it neither creates STATE_DIR nor waits for a real run.
    let _lock = match (!plan.dry_run)
        .then(|| RunLock::acquire(&config.state_dir))
        .transpose()
    {
        Ok(lock) => lock,
        Err(err @ LockError::Held { .. }) => {
            error!(error = %err, "run lock is held by another run");
            return Exit::Failure;
        }
        Err(err) => {
            error!(
                error = format!("{:#}", Error::new(err)),
                "cannot take the run lock; check STATE_DIR"
            );
            return Exit::Failure;
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return Exit::Failure;
        }
    };
    let exit = runtime.block_on(run_job(&config, plan, started));
    // A request abandoned at the shutdown timeout may leave a DNS lookup on the blocking pool;
    // do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    exit
}

async fn run_job(config: &Config, plan: JobPlan, started: Instant) -> Exit {
    let mut signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(err) => {
            error!(error = %err, "cannot install signal handlers");
            return Exit::Failure;
        }
    };
    let cancel = CancellationToken::new();
    let http = match HttpClient::new(config.http_timeout, config.max_retry, cancel.clone()) {
        Ok(http) => http,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot build the HTTP client");
            return Exit::Failure;
        }
    };
    let job = job::run(config, &http, plan);
    tokio::pin!(job);

    let (result, signal) = tokio::select! {
        result = &mut job => (Some(result), None),
        signal = signals.recv() => {
            let timeout = config.graceful_shutdown_timeout;
            warn!(
                signal = signal.name(),
                timeout_s = timeout.as_secs(),
                "stop requested; letting in-flight work finish"
            );
            cancel.cancel();
            let result = tokio::time::timeout(timeout, &mut job).await.ok();
            if result.is_none() {
                error!(
                    signal = signal.name(),
                    timeout_s = timeout.as_secs(),
                    "graceful stop did not finish within GRACEFUL_SHUTDOWN_TIMEOUT; exiting with work in flight"
                );
            }
            (result, Some(signal))
        }
    };

    let (outcome, exit, report) = match (result, signal) {
        (None, _) => ("abandoned", Exit::Failure, JobReport::default()),
        (Some(Ok(report)), None) => ("completed", Exit::Success, report),
        (Some(Ok(report)), Some(signal)) => ("stopped", signal.exit(), report),
        (Some(Err(err)), Some(signal)) if is_cancellation(&err) => {
            ("stopped", signal.exit(), JobReport::default())
        }
        (Some(Err(err)), _) => {
            error!(error = format!("{err:#}"), "run failed");
            ("failed", Exit::Failure, JobReport::default())
        }
    };
    let stats = http.stats();
    info!(
        outcome,
        exit_code = exit.code(),
        dry_run = plan.dry_run,
        from = %plan.window.first,
        to = %plan.window.last,
        apps = report.apps(),
        records = report.records,
        total_tokens = report.total_tokens,
        cost = ?Json(&report.cost_by_currency()),
        dify_requests = stats.requests(),
        retries = stats.retries(),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "run finished"
    );
    exit
}

/// Whether the job ended because it saw the stop token.
fn is_cancellation(error: &Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<RequestError>(),
            Some(RequestError::Cancelled { .. })
        )
    })
}
