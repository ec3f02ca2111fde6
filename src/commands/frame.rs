//! What every command that does remote work shares: a validated configuration, the run lock, a
//! tokio runtime, and the stop-signal handling that hands a [`CancellationToken`] down to the work
//! and waits up to `GRACEFUL_SHUTDOWN_TIMEOUT` for it to reach a safe point.

use std::future::Future;
use std::time::Duration;

use anyhow::Error;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::config::Config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::http::HttpClient;
use crate::lock::{LockError, RunLock};
use crate::run::JobError;
use crate::shutdown::{StopSignal, StopSignals};

/// The configuration, or `Exit::Failure` after logging every problem.
pub(super) fn config(environment: &Environment) -> Result<Config, Exit> {
    Config::from_env(environment).map_err(|problems| {
        super::log_problems(&problems);
        Exit::Failure
    })
}

/// The run lock, or `Exit::Failure` after logging why not.
pub(super) fn lock(config: &Config) -> Result<RunLock, Exit> {
    RunLock::acquire(&config.state_dir).map_err(lock_error)
}

/// Logs why the lock could not be taken.
pub(super) fn lock_error(err: LockError) -> Exit {
    match err {
        LockError::Held { .. } => error!(error = %err, "run lock is held by another run"),
        LockError::Io { .. } => {
            error!(
                error = format!("{:#}", Error::new(err)),
                "cannot take the run lock; check STATE_DIR"
            );
        }
    }
    Exit::Failure
}

/// How guarded work ended.
pub(super) struct Guarded<T> {
    /// The work's result; `None` when it outlived the shutdown timeout.
    pub(super) result: Option<Result<T, JobError>>,
    /// The stop signal received, if any.
    pub(super) signal: Option<StopSignal>,
    /// The HTTP client the work used (for its counters).
    pub(super) http: HttpClient,
}

/// Runs `work` on a fresh runtime with stop signals wired to its cancellation token.
pub(super) fn guarded<T, F, Fut>(config: &Config, work: F) -> Result<Guarded<T>, Exit>
where
    F: FnOnce(HttpClient, CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, JobError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            error!(error = %err, "cannot start the async runtime");
            Exit::Failure
        })?;
    let guarded = runtime.block_on(async {
        let mut signals = StopSignals::install().map_err(|err| {
            error!(error = %err, "cannot install signal handlers");
            Exit::Failure
        })?;
        let cancel = CancellationToken::new();
        let http = HttpClient::new(config.http_timeout, config.max_retry, cancel.clone(), config.masker.clone()).map_err(|err| {
            error!(error = format!("{err:#}"), "cannot build the HTTP client");
            Exit::Failure
        })?;
        let work = work(http.clone(), cancel.clone());
        tokio::pin!(work);
        let (result, signal) = tokio::select! {
            result = &mut work => (Some(result), None),
            signal = signals.recv() => {
                let timeout = config.graceful_shutdown_timeout;
                warn!(signal = signal.name(), timeout_s = timeout.as_secs(), "stop requested; letting in-flight work finish");
                cancel.cancel();
                let result = tokio::time::timeout(timeout, &mut work).await.ok();
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
        Ok(Guarded { result, signal, http })
    });
    // A request abandoned at the shutdown timeout may leave a DNS lookup on the blocking pool;
    // do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    guarded
}
