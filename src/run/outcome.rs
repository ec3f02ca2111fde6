//! How a run ended: the pipeline's error type and the outcome with its exit code.
//!
//! A stop signal and a refused login are not failures of the exporter: they are variants of
//! [`JobError`], matched where they are handled (the exit code, the login guard), never found by
//! downcasting an error chain.

use std::fmt;

use crate::exit::Exit;
use crate::shutdown::StopSignal;
use crate::source::console::login_guard::Refusal;

/// Why the job ended before it finished.
#[derive(Debug)]
pub(crate) enum JobError {
    /// A stop signal reached the work at a safe point; what was complete is committed.
    Stopped,
    /// Dify refused the login in a way that trying the same credentials again cannot cure.
    LoginRefused {
        refusal: Refusal,
        /// The whole story, for the log.
        error: anyhow::Error,
    },
    /// Anything else.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for JobError {
    fn from(error: anyhow::Error) -> Self {
        JobError::Failed(error)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Stopped => f.write_str("stopped by a signal"),
            JobError::LoginRefused { error, .. } | JobError::Failed(error) => {
                write!(f, "{error:#}")
            }
        }
    }
}

/// How a run ended, as `run finished` and the run history name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub(crate) enum Outcome {
    /// Done, and nothing left queued or dead.
    Completed,
    /// The job failed, or it left work queued or dead; or it never started.
    #[default]
    Failed,
    /// Stopped early by a signal, with progress saved.
    Stopped(StopSignal),
    /// The graceful stop outlived `GRACEFUL_SHUTDOWN_TIMEOUT`; work was in flight.
    Abandoned,
}

impl Outcome {
    /// The process exit status of a run that ended so.
    pub(crate) fn exit(self) -> Exit {
        match self {
            Outcome::Completed => Exit::Success,
            Outcome::Failed | Outcome::Abandoned => Exit::Failure,
            Outcome::Stopped(signal) => signal.exit(),
        }
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.into())
    }
}
