//! The run lock: one `STATE_DIR/exporter.lock`, held with an exclusive OS lock (flock) for as long
//! as a run writes state.
//!
//! The kernel drops the lock when the process dies, however it dies, so a killed run never leaves a
//! stale lock behind and there is nothing to clean up. For the same reason the file is never
//! deleted: unlinking a locked path races with the next process opening it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name inside `STATE_DIR`.
pub(crate) const LOCK_FILE: &str = "exporter.lock";

/// Why the lock could not be taken. Callers branch on `Held` (another run is busy) versus the rest.
#[derive(Debug, Error)]
pub(crate) enum LockError {
    #[error("another exporter holds the run lock {}; it is still running (this run does nothing)", .path.display())]
    Held { path: PathBuf },
    #[error("cannot create or open the lock file {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock; released when dropped (the file stays).
#[derive(Debug)]
pub(crate) struct RunLock {
    // Kept open only to hold the lock.
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting, creating `state_dir` (mode 0700) and the file (0600) if needed.
    pub(crate) fn acquire(state_dir: &Path) -> Result<RunLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_error)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error)?;
        // Called through the trait on purpose: since Rust 1.89 `file.try_lock()` would resolve to
        // std's inherent method instead of fs4's.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs4::TryLockError::WouldBlock) => Err(LockError::Held { path }),
            Err(fs4::TryLockError::Error(source)) => Err(io_error(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = RunLock::acquire(&state).unwrap();
        assert!(matches!(
            RunLock::acquire(&state),
            Err(LockError::Held { .. })
        ));
        drop(first);
        let again = RunLock::acquire(&state).unwrap();
        assert!(state.join(LOCK_FILE).exists());
        drop(again);
    }
}
