//! The state database: one SQLite file in `STATE_DIR`, opened and migrated once per command and
//! passed down to whatever needs it.
//!
//! It is what makes the exporter impossible to lose data with: a day's records enter the ledger,
//! and the batches made from them every sink's outbox, in the same [`Transaction`] that advances
//! the watermark, so after that commit the day cannot be lost, and a batch leaves the queue only
//! when its sink has acknowledged it. SQLite in WAL mode with
//! `synchronous=FULL` survives a SIGKILL at any instant. A database that cannot be read is reported
//! with its path and never replaced; one written by a newer exporter is refused, not downgraded.
//! The store knows no wire format: a batch's payload is whatever its sink encoded.
//!
//! - [`watermark`]: the last day whose records are durably in the ledger;
//! - [`ledger`]: every exported record at its current revision, and the sinks handed the ledger;
//! - [`outbox`]: the batches per sink (queued, sent, dead) and the discarded ones;
//! - [`runs`]: the run history and the last success;
//! - [`login_verdict`]: the login guard's verdict.

mod ledger;
mod login_verdict;
mod outbox;
mod runs;
mod scan;
mod watermark;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags};

pub(crate) use login_verdict::LoginVerdictRecord;
pub(crate) use outbox::{Batch, BatchState, Counts, NewBatch};
pub(crate) use runs::RunRecord;
pub(crate) use scan::{LedgerLabel, LedgerScan, LedgerView};

use crate::environment::io_cause;

/// The database's name inside `STATE_DIR`.
pub(crate) const DATABASE_FILE: &str = "state.db";

/// `discarded`: the dead batches an operator gave up on (`exporter discard`), kept so that `status`
/// shows them and a lookback day with the same records is not queued again.
macro_rules! discarded_table {
    () => {
        r"
    CREATE TABLE IF NOT EXISTS discarded (
        batch_id INTEGER PRIMARY KEY,
        discarded_at TEXT NOT NULL,
        queued_at TEXT NOT NULL,
        first_day TEXT NOT NULL,
        last_day TEXT NOT NULL,
        record_count INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX IF NOT EXISTS discarded_by_key ON discarded (idempotency_key);
"
    };
}

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied. The schema
/// they build:
///
/// - `watermark`: one row, the last day whose records are durably queued;
/// - `batches`: the outbox. Per batch: the `sink` it is for, its days, record and token counts,
///   the `idempotency_key` (SHA-256 of the payload), the `payload` as the sink encoded it (emptied
///   once sent), its `state` (`queued`, `sent`, `dead`), failed runs and the last error;
/// - `discarded`: dead batches the operator gave up on, without their payload;
/// - `runs`: the last runs with their report; `last_success`: the end of the last run that exited 0;
/// - `login_verdict`: the last credentials Dify refused, as a salted argon2id hash (never the
///   password).
///
/// - `ledger`: per `source_event_id` the record's labels, its customer, the totals exported so far
///   (cost as decimal text), the revision and when it was recorded;
/// - `sinks`: the sinks that have been handed the whole ledger once (a sink new to the ledger is).
///
/// Migration 3 creates each of its tables only if it is missing: a database at version 2 may hold
/// `discarded` or the other two.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE watermark (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        day TEXT NOT NULL
    );
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        first_day TEXT NOT NULL,
        last_day TEXT NOT NULL,
        record_count INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        records TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        first_attempt_at TEXT,
        last_attempt_at TEXT,
        last_error TEXT,
        finished_at TEXT
    );
    CREATE INDEX batches_by_state ON batches (state, id);
    CREATE INDEX batches_by_key ON batches (idempotency_key);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        exit_code INTEGER NOT NULL,
        summary TEXT NOT NULL
    );
",
    discarded_table!(),
    concat!(
        r"
    CREATE TABLE IF NOT EXISTS last_success (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        finished_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS login_verdict (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        dify_url TEXT NOT NULL,
        email TEXT NOT NULL,
        credentials_hash TEXT NOT NULL,
        verdict TEXT NOT NULL,
        detail TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
",
        discarded_table!()
    ),
    r"
    ALTER TABLE batches RENAME COLUMN records TO payload;
    ALTER TABLE batches ADD COLUMN sink TEXT NOT NULL DEFAULT 'http';
    ALTER TABLE discarded ADD COLUMN sink TEXT NOT NULL DEFAULT 'http';
    DROP INDEX batches_by_state;
    DROP INDEX batches_by_key;
    DROP INDEX discarded_by_key;
    CREATE INDEX batches_by_sink_state ON batches (sink, state, id);
    CREATE INDEX batches_by_sink_key ON batches (sink, idempotency_key);
    CREATE INDEX discarded_by_sink_key ON discarded (sink, idempotency_key);
",
    r"
    CREATE TABLE ledger (
        source_event_id TEXT PRIMARY KEY,
        day TEXT NOT NULL,
        app_id TEXT NOT NULL,
        app_name TEXT NOT NULL,
        workspace_id TEXT,
        user TEXT NOT NULL,
        customer TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        currency TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        request_count INTEGER NOT NULL,
        cost TEXT NOT NULL,
        total_only INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        exported_at TEXT NOT NULL
    );
    CREATE INDEX ledger_by_day ON ledger (day);
    CREATE TABLE sinks (
        name TEXT PRIMARY KEY,
        joined_at TEXT NOT NULL
    );
",
];

/// One write transaction: what it writes is all there after [`Transaction::commit`], or none of it.
pub(crate) struct Transaction<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl Transaction<'_> {
    /// Moves the watermark forward to `day` (never back).
    pub(crate) fn advance_watermark(&self, day: NaiveDate) -> Result<()> {
        watermark::advance(&self.tx, day).with_context(|| unwritable(self.path))
    }

    pub(crate) fn commit(self) -> Result<()> {
        self.tx.commit().with_context(|| unwritable(self.path))
    }
}

/// An open state database.
pub(crate) struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    /// Opens (creating if needed) `STATE_DIR/state.db` for reading and writing, and migrates it.
    pub(crate) fn open(state_dir: &Path) -> Result<State> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .with_context(|| format!("cannot create STATE_DIR {}", state_dir.display()))?;
        let path = state_dir.join(DATABASE_FILE);
        // Created here first so that it gets mode 0600 whatever the umask.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot open the state database {} for writing",
                    path.display()
                )
            })?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|err| open_failure(&path, err))?;
        let mut state = State { conn, path };
        // The version is read before anything is written (WAL mode rewrites the header), so a
        // database of a newer exporter stays byte for byte as it was.
        state.refuse_newer()?;
        state
            .configure()
            .map_err(|err| open_failure(&state.path, err))?;
        state.migrate()?;
        Ok(state)
    }

    /// Opens an existing database without writing to it; `None` when there is none yet.
    pub(crate) fn open_read_only(state_dir: &Path) -> Result<Option<State>> {
        let path = state_dir.join(DATABASE_FILE);
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // "No state yet" would be a lie when the directory cannot even be looked into.
            Err(err) => bail!(
                "cannot look into STATE_DIR {}: {}",
                state_dir.display(),
                io_cause(&err)
            ),
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|err| open_failure(&path, err))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|err| open_failure(&path, err))?;
        let state = State { conn, path };
        let version = state.schema_version()?;
        if version == 0 {
            // Created a moment ago by a run that has not committed its schema yet: nothing to show.
            return Ok(None);
        }
        if version != MIGRATIONS.len() {
            bail!(
                "the state database {} has schema version {version}, this exporter reads version {}; {}",
                state.path.display(),
                MIGRATIONS.len(),
                if version > MIGRATIONS.len() {
                    "use the newer exporter that wrote it"
                } else {
                    "run `exporter run` once to upgrade it"
                }
            );
        }
        Ok(Some(state))
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction.
    pub(crate) fn transaction(&mut self) -> Result<Transaction<'_>> {
        let tx = self
            .conn
            .transaction()
            .with_context(|| unwritable(&self.path))?;
        Ok(Transaction {
            tx,
            path: &self.path,
        })
    }

    fn configure(&self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        // Reading the journal mode is also the first read of the file: garbage fails here.
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
    }

    fn schema_version(&self) -> Result<usize> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|err| open_failure(&self.path, err))?;
        Ok(usize::try_from(version).unwrap_or(usize::MAX))
    }

    fn refuse_newer(&self) -> Result<()> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() {
            bail!(
                "the state database {} was written by a newer exporter (schema version {version}, this one knows {}); \
                 it was left untouched: run the newer exporter",
                self.path.display(),
                MIGRATIONS.len()
            );
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let version = self.schema_version()?;
        let path = self.path.clone();
        let tx = self.conn.transaction().with_context(|| unreadable(&path))?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration)
                .and_then(|()| {
                    tx.pragma_update(
                        None,
                        "user_version",
                        i64::try_from(index + 1).unwrap_or(i64::MAX),
                    )
                })
                .with_context(|| {
                    format!(
                        "cannot migrate the state database {} to schema version {}",
                        path.display(),
                        index + 1
                    )
                })?;
        }
        tx.commit().with_context(|| unreadable(&path))
    }
}

/// The current time as stored: RFC 3339 UTC with milliseconds (sorts as text).
pub(crate) fn now_text() -> String {
    time_text(Utc::now())
}

/// A time as stored.
fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_day(text: &str) -> Result<NaiveDate> {
    text.parse()
        .with_context(|| format!("`{text}` in the state database is not a day"))
}

fn unreadable(path: &Path) -> String {
    format!(
        "the state database {} is unreadable; it was left untouched (restore a backup, or move it aside to start \
         over: the next run then exports the last DIFY_FETCH_DAYS days again)",
        path.display()
    )
}

/// Why the database could not be opened or first read: only a damaged file gets the advice to move
/// it aside; a file that merely cannot be accessed is named as such, since moving it aside would
/// export every day again.
fn open_failure(path: &Path, err: rusqlite::Error) -> anyhow::Error {
    let damaged = matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    );
    let context = if damaged {
        unreadable(path)
    } else if let Some(free) = disk_full(path, &err) {
        format!(
            "cannot open the state database {}: the file system of STATE_DIR is full ({free} bytes free); the \
             database itself was not touched: free space there and run again",
            path.display()
        )
    } else {
        format!(
            "cannot open the state database {}: {}; the database itself was not touched: give the user running \
             the exporter read and write access to it and to STATE_DIR",
            path.display(),
            access_problem(path, &err)
        )
    };
    anyhow::Error::new(err).context(context)
}

/// Less free space than this in STATE_DIR's file system counts as a full disk: SQLite needs a few
/// pages for the write-ahead log and its index even to read.
const FULL_DISK_BYTES: u64 = 64 * 1024;

/// The free bytes of STATE_DIR's file system when it is full. A full disk fails the creation of
/// state.db-wal like a read-only directory would, and is the more common cause.
fn disk_full(path: &Path, err: &rusqlite::Error) -> Option<u64> {
    let directory = path.parent().unwrap_or(Path::new("."));
    let free = fs4::available_space(directory).ok();
    let full = err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        || free.is_some_and(|free| free < FULL_DISK_BYTES);
    full.then(|| free.unwrap_or(0))
}

/// What this process lacks to use the database file.
fn access_problem(path: &Path, err: &rusqlite::Error) -> String {
    if let Err(err) = std::fs::File::open(path) {
        return io_cause(&err);
    }

    if let rusqlite::Error::SqliteFailure(failure, _) = err
        && failure.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY
    {
        return READ_ONLY_DIRECTORY.to_owned();
    }
    match OpenOptions::new().write(true).open(path) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            "the file is read-only for this user".to_owned()
        }
        Err(err) => io_cause(&err),
        Ok(_) => READ_ONLY_DIRECTORY.to_owned(),
    }
}

const READ_ONLY_DIRECTORY: &str = "STATE_DIR is read-only for this user (SQLite creates state.db-wal and \
                                   state.db-shm beside the database, even to read it)";

fn unwritable(path: &Path) -> String {
    format!("cannot write the state database {}", path.display())
}

#[cfg(test)]
mod tests;
