//! SIGTERM and SIGINT become a cancellation handed down to the job.
//!
//! Kubernetes stops a pod with SIGTERM (and SIGKILL after `terminationGracePeriodSeconds`), a person
//! with Ctrl-C. Either one cancels a [`CancellationToken`] that the job checks at its safe points: no
//! new request is started, the one in flight may finish, progress is saved. Nothing global is set;
//! whoever starts work passes the token down (the mini-redis pattern).

use std::io;

use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};

use crate::exit::Exit;

/// The signal that asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub(crate) enum StopSignal {
    #[strum(serialize = "SIGINT")]
    Interrupt,
    #[strum(serialize = "SIGTERM")]
    Terminate,
}

impl StopSignal {
    /// The exit status of a run stopped early by this signal.
    #[must_use]
    pub(crate) fn exit(self) -> Exit {
        match self {
            StopSignal::Interrupt => Exit::Interrupted,
            StopSignal::Terminate => Exit::Terminated,
        }
    }

    /// The signal's usual name, for the log.
    #[must_use]
    pub(crate) fn name(self) -> &'static str {
        self.into()
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is created.
pub(crate) struct StopSignals {
    interrupt: UnixSignal,
    terminate: UnixSignal,
}

impl StopSignals {
    /// Installs the handlers. From here on the signals no longer kill the process.
    pub(crate) fn install() -> io::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next stop signal.
    pub(crate) async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}
