//! Every exit code the program can return, in one place.
//!
//! Operators page on these numbers, so they are part of the contract (`docs/run.md#exit-codes`).
//! clap's own usage errors never reach this type: clap exits with its code 2 by itself.

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The command did what it was asked.
    Success,
    /// Invalid configuration, lock held, job failed, or the graceful stop took too long.
    Failure,
    /// Stopped early by SIGINT, with progress saved.
    Interrupted,
    /// Stopped early by SIGTERM, with progress saved.
    Terminated,
}

impl Exit {
    /// The process exit status.
    #[must_use]
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            // The shell convention 128 + signal number, which is what a signal-killed process reports.
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}
