//! The state database: one SQLite file in `STATE_DIR` holding the watermark, the outbox of batches
//! and a short history of runs.
//!
//! It is what makes the exporter impossible to lose data with: a day's records enter the outbox in
//! the same transaction that advances the watermark, so after that commit the day cannot be lost,
//! and a batch leaves the queue only when the receiver has acknowledged it. SQLite in WAL mode with
//! `synchronous=FULL` survives a SIGKILL at any instant. A database that cannot be read is reported
//! with its path and never replaced; one written by a newer exporter is refused, not downgraded.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::environment::io_cause;

/// The database's name inside `STATE_DIR`.
pub const DATABASE_FILE: &str = "state.db";

/// Migration 2, harmless to run again (migration 3 repeats it; see [`MIGRATIONS`]).
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

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
///
/// 2: `discarded`, the dead letters an operator gave up on (`exporter discard`), kept so that
/// `status` shows them and a lookback day with the same records is not queued again.
///
/// 3: `last_success` (monitoring) and `login_verdict` (the login guard). Issue 10 was first built
/// with these tables as migration 2, next to issue 9's; a database made by that build is at
/// version 2 without `discarded`. Migration 3 therefore creates every table of 2 and 3 only if it
/// is missing, so that such a database, like one at main's version 2, ends with all of them.
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
    -- For monitoring: the end of the last run that exited 0 (kept when later runs fail).
    CREATE TABLE IF NOT EXISTS last_success (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        finished_at TEXT NOT NULL
    );
    -- The login guard: the last credentials Dify refused, as a salted argon2id hash (never the
    -- password), so that later runs with the same credentials do not spend the lockout budget.
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
];

/// Runs kept in the history.
const RUNS_KEPT: i64 = 50;
/// Sent batches are kept this long (their keys stop lookback days from being sent twice).
const SENT_KEPT_DAYS: i64 = 35;

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    Queued,
    Sent,
    Dead,
}

impl BatchState {
    fn as_str(self) -> &'static str {
        match self {
            BatchState::Queued => "queued",
            BatchState::Sent => "sent",
            BatchState::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "queued" => Ok(BatchState::Queued),
            "sent" => Ok(BatchState::Sent),
            "dead" => Ok(BatchState::Dead),
            other => bail!("unknown batch state `{other}` in the state database"),
        }
    }
}

/// A batch about to be queued.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub record_count: usize,
    pub total_tokens: u64,
    /// Hex SHA-256 of `records`.
    pub idempotency_key: String,
    /// The records array exactly as it will be sent.
    pub records: String,
}

/// A batch in the outbox.
#[derive(Debug, Clone)]
pub struct Batch {
    pub id: i64,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub record_count: u64,
    pub total_tokens: u64,
    pub idempotency_key: String,
    pub state: BatchState,
    /// Runs in which delivery failed.
    pub attempts: u32,
    pub first_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// Batches per state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub queued: u64,
    pub sent: u64,
    pub dead: u64,
}

/// One finished run, for `status`.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub exit_code: u8,
    /// The summary line's figures as a JSON object.
    pub summary: String,
}

/// Dify's refusal of a login, as the login guard keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginVerdictRecord {
    /// `DIFY_API_URL` of the refusal (masked).
    pub dify_url: String,
    pub email: String,
    /// PHC string of the salted argon2id hash of URL, email and password.
    pub credentials_hash: String,
    /// `wrong_password` or `account_locked`.
    pub verdict: String,
    /// Dify's answer, for the operator.
    pub detail: String,
    /// RFC 3339 UTC.
    pub recorded_at: String,
}

/// What queueing did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Queued {
    pub batches: usize,
    /// Batches left out because one with the same idempotency key is already in the outbox.
    pub unchanged: usize,
}

/// An open state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    /// Opens (creating if needed) `STATE_DIR/state.db` for reading and writing, and migrates it.
    pub fn open(state_dir: &Path) -> Result<State> {
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
    pub fn open_read_only(state_dir: &Path) -> Result<Option<State>> {
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
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
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

    /// The last day whose records are durably queued.
    pub fn watermark(&self) -> Result<Option<NaiveDate>> {
        let day: Option<String> = self
            .conn
            .query_row("SELECT day FROM watermark WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()
            .with_context(|| unreadable(&self.path))?;
        day.map(|d| parse_day(&d)).transpose()
    }

    /// Sets the watermark (operator command).
    pub fn set_watermark(&self, day: NaiveDate) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO watermark (id, day) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET day = excluded.day",
                params![day.to_string()],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Queues `batches` and, when given, moves the watermark to `watermark`, in one transaction.
    /// A batch whose idempotency key is already in the outbox is left out: it would send nothing new.
    /// The batches are taken one at a time, so only one is serialized in memory at once.
    pub fn queue(
        &mut self,
        run_id: &str,
        batches: impl IntoIterator<Item = NewBatch>,
        watermark: Option<NaiveDate>,
    ) -> Result<Queued> {
        let now = now_text();
        let path = self.path.clone();
        let tx = self.conn.transaction().with_context(|| unwritable(&path))?;
        let mut outcome = Queued::default();
        {
            let mut exists = tx
                .prepare_cached(
                    "SELECT 1 FROM batches WHERE idempotency_key = ?1 \
                     UNION ALL SELECT 1 FROM discarded WHERE idempotency_key = ?1 LIMIT 1",
                )
                .with_context(|| unwritable(&path))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO batches (run_id, created_at, first_day, last_day, record_count, total_tokens, \
                     idempotency_key, records, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued')",
                )
                .with_context(|| unwritable(&path))?;
            for batch in batches {
                if exists
                    .exists(params![batch.idempotency_key])
                    .with_context(|| unwritable(&path))?
                {
                    outcome.unchanged += 1;
                    continue;
                }
                insert
                    .execute(params![
                        run_id,
                        now,
                        batch.first_day.to_string(),
                        batch.last_day.to_string(),
                        i64::try_from(batch.record_count).unwrap_or(i64::MAX),
                        i64::try_from(batch.total_tokens).unwrap_or(i64::MAX),
                        batch.idempotency_key,
                        batch.records,
                    ])
                    .with_context(|| unwritable(&path))?;
                outcome.batches += 1;
            }
        }
        if let Some(day) = watermark {
            tx.execute(
                "INSERT INTO watermark (id, day) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET day = MAX(day, excluded.day)",
                params![day.to_string()],
            )
            .with_context(|| unwritable(&path))?;
        }
        tx.commit().with_context(|| unwritable(&path))?;
        Ok(outcome)
    }

    /// Batches in `state`, oldest first, without their payload (see [`State::records`]).
    pub fn batches(&self, state: BatchState) -> Result<Vec<Batch>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT id, run_id, created_at, first_day, last_day, record_count, total_tokens, idempotency_key, \
                 attempts, first_attempt_at, last_attempt_at, last_error FROM batches WHERE state = ?1 ORDER BY id",
            )
            .with_context(|| unreadable(&self.path))?;
        let mut rows = statement
            .query(params![state.as_str()])
            .with_context(|| unreadable(&self.path))?;
        let mut batches = Vec::new();
        while let Some(row) = rows.next().with_context(|| unreadable(&self.path))? {
            let text = |i: usize| {
                row.get::<_, String>(i)
                    .with_context(|| unreadable(&self.path))
            };
            let number = |i: usize| row.get::<_, i64>(i).with_context(|| unreadable(&self.path));
            let optional = |i: usize| {
                row.get::<_, Option<String>>(i)
                    .with_context(|| unreadable(&self.path))
            };
            let id = number(0)?;
            batches.push(Batch {
                id,
                run_id: text(1)?,
                created_at: DateTime::parse_from_rfc3339(&text(2)?)
                    .with_context(|| {
                        format!("batch {id} has a bad created_at in {}", self.path.display())
                    })?
                    .with_timezone(&Utc),
                first_day: parse_day(&text(3)?)?,
                last_day: parse_day(&text(4)?)?,
                record_count: u64::try_from(number(5)?).unwrap_or(0),
                total_tokens: u64::try_from(number(6)?).unwrap_or(0),
                idempotency_key: text(7)?,
                state,
                attempts: u32::try_from(number(8)?).unwrap_or(u32::MAX),
                first_attempt_at: optional(9)?,
                last_attempt_at: optional(10)?,
                last_error: optional(11)?,
            });
        }
        Ok(batches)
    }

    /// The records array of a queued or dead batch, exactly as it is sent. Read one batch at a
    /// time so that a long outbox never sits in memory whole.
    pub fn records(&self, id: i64) -> Result<String> {
        self.conn
            .query_row(
                "SELECT records FROM batches WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .with_context(|| unreadable(&self.path))
    }

    /// The receiver acknowledged the batch: it leaves the queue and its payload is dropped.
    pub fn mark_sent(&self, id: i64) -> Result<()> {
        let now = now_text();
        self.conn
            .execute(
                "UPDATE batches SET state = 'sent', records = '', finished_at = ?2, \
                 first_attempt_at = COALESCE(first_attempt_at, ?2), last_attempt_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Delivery failed in this run; the batch stays queued. Returns the runs failed so far.
    pub fn mark_failed(&self, id: i64, error: &str) -> Result<u32> {
        let now = now_text();
        let attempts: i64 = self
            .conn
            .query_row(
                "UPDATE batches SET attempts = attempts + 1, first_attempt_at = COALESCE(first_attempt_at, ?2), \
                 last_attempt_at = ?2, last_error = ?3 WHERE id = ?1 RETURNING attempts",
                params![id, now, error],
                |row| row.get(0),
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(u32::try_from(attempts).unwrap_or(u32::MAX))
    }

    /// Notes an error that is not the batch's fault (a configuration problem): no attempt is counted.
    pub fn note_error(&self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE batches SET first_attempt_at = COALESCE(first_attempt_at, ?2), last_attempt_at = ?2, \
                 last_error = ?3 WHERE id = ?1",
                params![id, now_text(), error],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// The batch will not be delivered without an operator: `resend` brings it back.
    pub fn mark_dead(&self, id: i64, error: &str) -> Result<()> {
        let now = now_text();
        self.conn
            .execute(
                "UPDATE batches SET state = 'dead', finished_at = ?2, last_error = ?3, \
                 first_attempt_at = COALESCE(first_attempt_at, ?2), last_attempt_at = ?2 WHERE id = ?1",
                params![id, now, error],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Moves dead batches back to the queue, one (`Some(id)`) or all, with a fresh count of failed
    /// runs and a fresh 7-day clock: the operator has looked at them. Returns how many moved.
    pub fn revive(&self, id: Option<i64>) -> Result<usize> {
        let revive = "UPDATE batches SET state = 'queued', attempts = 0, finished_at = NULL, created_at = ?1 \
                      WHERE state = 'dead'";
        let moved = match id {
            Some(id) => self
                .conn
                .execute(&format!("{revive} AND id = ?2"), params![now_text(), id]),
            None => self.conn.execute(revive, params![now_text()]),
        }
        .with_context(|| unwritable(&self.path))?;
        Ok(moved)
    }

    /// Replaces a queued batch by batches of at most `size` records each, in one transaction; the
    /// parts keep the batch's day, run, queue time and failed runs, and get the idempotency keys of
    /// their own records (the receiver upserts on `source_event_id`, so the records may arrive
    /// again under new keys). A part whose key is already in the outbox is left out. Returns the
    /// parts queued, in record order.
    pub fn split(&self, batch: &Batch, size: usize) -> Result<Vec<Batch>> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            total_tokens: u64,
        }
        let records = self.records(batch.id)?;
        let list: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(&records).with_context(|| {
                format!(
                    "batch {} in {} holds records that are not a JSON array",
                    batch.id,
                    self.path.display()
                )
            })?;
        let path = self.path.clone();
        let tx = self
            .conn
            .unchecked_transaction()
            .with_context(|| unwritable(&path))?;
        let mut parts = Vec::new();
        for chunk in list.chunks(size.max(1)) {
            let text = format!(
                "[{}]",
                chunk.iter().map(|r| r.get()).collect::<Vec<_>>().join(",")
            );
            let total_tokens = chunk
                .iter()
                .map(|r| serde_json::from_str::<Tokens>(r.get()).map(|t| t.total_tokens))
                .sum::<serde_json::Result<u64>>()
                .with_context(|| {
                    format!(
                        "batch {} in {} holds a record without total_tokens",
                        batch.id,
                        path.display()
                    )
                })?;
            let key = crate::export::batch::idempotency_key(&text);
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM batches WHERE idempotency_key = ?1 AND id != ?2)",
                    params![key, batch.id],
                    |row| row.get(0),
                )
                .with_context(|| unwritable(&path))?;
            if known {
                continue;
            }
            tx.execute(
                "INSERT INTO batches (run_id, created_at, first_day, last_day, record_count, total_tokens, \
                 idempotency_key, records, state, attempts, first_attempt_at, last_attempt_at, last_error) \
                 SELECT run_id, created_at, first_day, last_day, ?2, ?3, ?4, ?5, 'queued', attempts, \
                 first_attempt_at, last_attempt_at, last_error FROM batches WHERE id = ?1",
                params![
                    batch.id,
                    i64::try_from(chunk.len()).unwrap_or(i64::MAX),
                    i64::try_from(total_tokens).unwrap_or(i64::MAX),
                    key,
                    text
                ],
            )
            .with_context(|| unwritable(&path))?;
            parts.push(Batch {
                id: tx.last_insert_rowid(),
                record_count: u64::try_from(chunk.len()).unwrap_or(u64::MAX),
                total_tokens,
                idempotency_key: key,
                state: BatchState::Queued,
                ..batch.clone()
            });
        }
        tx.execute("DELETE FROM batches WHERE id = ?1", params![batch.id])
            .with_context(|| unwritable(&path))?;
        tx.commit().with_context(|| unwritable(&path))?;
        Ok(parts)
    }

    /// Gives up on dead batches, one (`Some(id)`) or all: they leave the outbox for the
    /// `discarded` list, so they no longer fail every run. Returns the batches discarded.
    pub fn discard(&mut self, id: Option<i64>) -> Result<Vec<Batch>> {
        let dead: Vec<Batch> = self
            .batches(BatchState::Dead)?
            .into_iter()
            .filter(|b| id.is_none_or(|id| b.id == id))
            .collect();
        let path = self.path.clone();
        let tx = self.conn.transaction().with_context(|| unwritable(&path))?;
        let now = now_text();
        for batch in &dead {
            tx.execute(
                "INSERT INTO discarded (batch_id, discarded_at, queued_at, first_day, last_day, record_count, \
                 total_tokens, idempotency_key, last_error) SELECT id, ?2, created_at, first_day, last_day, \
                 record_count, total_tokens, idempotency_key, last_error FROM batches WHERE id = ?1",
                params![batch.id, now],
            )
            .and_then(|_| tx.execute("DELETE FROM batches WHERE id = ?1", params![batch.id]))
            .with_context(|| unwritable(&path))?;
        }
        tx.commit().with_context(|| unwritable(&path))?;
        Ok(dead)
    }

    /// The most recently discarded batches, newest first, as (batch, when discarded).
    pub fn discarded(&self, limit: usize) -> Result<Vec<(Batch, String)>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT batch_id, queued_at, first_day, last_day, record_count, total_tokens, idempotency_key, \
                 last_error, discarded_at FROM discarded ORDER BY discarded_at DESC, batch_id DESC LIMIT ?1",
            )
            .with_context(|| unreadable(&self.path))?;
        let mut rows = statement
            .query(params![i64::try_from(limit).unwrap_or(i64::MAX)])
            .with_context(|| unreadable(&self.path))?;
        let mut list = Vec::new();
        while let Some(row) = rows.next().with_context(|| unreadable(&self.path))? {
            let text = |i: usize| {
                row.get::<_, String>(i)
                    .with_context(|| unreadable(&self.path))
            };
            let number = |i: usize| row.get::<_, i64>(i).with_context(|| unreadable(&self.path));
            let batch = Batch {
                id: number(0)?,
                run_id: String::new(),
                created_at: DateTime::parse_from_rfc3339(&text(1)?)
                    .map_or_else(|_| DateTime::<Utc>::UNIX_EPOCH, |t| t.with_timezone(&Utc)),
                first_day: parse_day(&text(2)?)?,
                last_day: parse_day(&text(3)?)?,
                record_count: u64::try_from(number(4)?).unwrap_or(0),
                total_tokens: u64::try_from(number(5)?).unwrap_or(0),
                idempotency_key: text(6)?,
                state: BatchState::Dead,
                attempts: 0,
                first_attempt_at: None,
                last_attempt_at: None,
                last_error: row.get(7).with_context(|| unreadable(&self.path))?,
            };
            list.push((batch, text(8)?));
        }
        Ok(list)
    }

    /// How many batches are in each state.
    pub fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        let mut statement = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM batches GROUP BY state")
            .with_context(|| unreadable(&self.path))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .with_context(|| unreadable(&self.path))?;
        for row in rows {
            let (state, n) = row.with_context(|| unreadable(&self.path))?;
            let n = u64::try_from(n).unwrap_or(0);
            match BatchState::parse(&state)? {
                BatchState::Queued => counts.queued = n,
                BatchState::Sent => counts.sent = n,
                BatchState::Dead => counts.dead = n,
            }
        }
        Ok(counts)
    }

    /// Records a finished run and forgets old runs and old sent batches.
    pub fn record_run(&self, run: &RunRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs (run_id, started_at, finished_at, outcome, exit_code, summary) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run.run_id, run.started_at, run.finished_at, run.outcome, run.exit_code, run.summary],
            )
            .and_then(|_| {
                self.conn.execute(
                    "DELETE FROM runs WHERE run_id NOT IN (SELECT run_id FROM runs ORDER BY finished_at DESC LIMIT ?1)",
                    params![RUNS_KEPT],
                )
            })
            .and_then(|_| {
                self.conn.execute(
                    "DELETE FROM batches WHERE state = 'sent' AND finished_at < ?1",
                    params![(Utc::now() - chrono::Duration::days(SENT_KEPT_DAYS)).to_rfc3339_opts(SecondsFormat::Millis, true)],
                )
            })
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT run_id, started_at, finished_at, outcome, exit_code, summary FROM runs ORDER BY finished_at DESC LIMIT ?1",
            )
            .with_context(|| unreadable(&self.path))?;
        let rows = statement
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(RunRecord {
                    run_id: row.get(0)?,
                    started_at: row.get(1)?,
                    finished_at: row.get(2)?,
                    outcome: row.get(3)?,
                    exit_code: row.get(4)?,
                    summary: row.get(5)?,
                })
            })
            .with_context(|| unreadable(&self.path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| unreadable(&self.path))
    }
}

impl State {
    /// The end of the last run that exited 0, if any.
    pub fn last_success(&self) -> Result<Option<DateTime<Utc>>> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT finished_at FROM last_success WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .with_context(|| unreadable(&self.path))?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| format!("`{t}` in the state database is not an instant"))
        })
        .transpose()
    }

    /// Keeps `at` as the end of the last successful run.
    pub fn set_last_success(&self, at: DateTime<Utc>) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO last_success (id, finished_at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at",
                params![at.to_rfc3339_opts(SecondsFormat::Millis, true)],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// The login guard's verdict, if Dify refused the last credentials tried.
    pub fn login_verdict(&self) -> Result<Option<LoginVerdictRecord>> {
        self.conn
            .query_row(
                "SELECT dify_url, email, credentials_hash, verdict, detail, recorded_at FROM login_verdict WHERE id = 1",
                [],
                |row| {
                    Ok(LoginVerdictRecord {
                        dify_url: row.get(0)?,
                        email: row.get(1)?,
                        credentials_hash: row.get(2)?,
                        verdict: row.get(3)?,
                        detail: row.get(4)?,
                        recorded_at: row.get(5)?,
                    })
                },
            )
            .optional()
            .with_context(|| unreadable(&self.path))
    }

    /// Replaces the login guard's verdict.
    pub fn set_login_verdict(&self, record: &LoginVerdictRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO login_verdict (id, dify_url, email, credentials_hash, verdict, detail, recorded_at) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.dify_url,
                    record.email,
                    record.credentials_hash,
                    record.verdict,
                    record.detail,
                    record.recorded_at
                ],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Forgets the login guard's verdict (new credentials, or a successful login).
    pub fn clear_login_verdict(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_verdict", [])
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }
}

/// The current time as stored: RFC 3339 UTC with milliseconds (sorts as text).
#[must_use]
pub fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
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
mod tests {
    use super::*;

    fn batch(key: &str, day: &str) -> NewBatch {
        NewBatch {
            first_day: day.parse().unwrap(),
            last_day: day.parse().unwrap(),
            record_count: 2,
            total_tokens: 10,
            idempotency_key: key.to_owned(),
            records: "[]".to_owned(),
        }
    }

    #[test]
    fn queueing_moves_the_watermark_forward_only_and_skips_known_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        assert_eq!(state.watermark().unwrap(), None);
        let queued = state
            .queue(
                "r1",
                [batch("k1", "2026-11-26"), batch("k2", "2026-11-27")],
                Some("2026-11-27".parse().unwrap()),
            )
            .unwrap();
        assert_eq!((queued.batches, queued.unchanged), (2, 0));
        let again = state
            .queue(
                "r2",
                [batch("k2", "2026-11-27")],
                Some("2026-11-20".parse().unwrap()),
            )
            .unwrap();
        assert_eq!((again.batches, again.unchanged), (0, 1));
        assert_eq!(
            state.watermark().unwrap(),
            Some("2026-11-27".parse().unwrap())
        );
        assert_eq!(
            state.counts().unwrap(),
            Counts {
                queued: 2,
                sent: 0,
                dead: 0
            }
        );
    }

    #[test]
    fn a_batch_moves_through_its_states() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        state
            .queue(
                "r1",
                [batch("k1", "2026-11-26"), batch("k2", "2026-11-26")],
                None,
            )
            .unwrap();
        let queued = state.batches(BatchState::Queued).unwrap();
        assert_eq!(state.mark_failed(queued[0].id, "503").unwrap(), 1);
        assert_eq!(state.mark_failed(queued[0].id, "503 again").unwrap(), 2);
        state.mark_dead(queued[0].id, "422 bad").unwrap();
        state.mark_sent(queued[1].id).unwrap();
        assert_eq!(
            state.counts().unwrap(),
            Counts {
                queued: 0,
                sent: 1,
                dead: 1
            }
        );
        let dead = &state.batches(BatchState::Dead).unwrap()[0];
        assert_eq!(
            (dead.attempts, dead.last_error.as_deref()),
            (2, Some("422 bad"))
        );
        assert_eq!(state.revive(None).unwrap(), 1);
        assert_eq!(state.batches(BatchState::Queued).unwrap()[0].attempts, 0);
    }

    #[test]
    fn a_split_keeps_every_record_once_and_a_discard_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let records = r#"[{"total_tokens":1},{"total_tokens":2},{"total_tokens":3}]"#;
        let whole = NewBatch {
            record_count: 3,
            total_tokens: 6,
            idempotency_key: crate::export::batch::idempotency_key(records),
            records: records.to_owned(),
            ..batch("unused", "2026-11-26")
        };
        state.queue("r1", [whole.clone()], None).unwrap();
        let queued = state.batches(BatchState::Queued).unwrap();
        let parts = state.split(&queued[0], 2).unwrap();
        let shape: Vec<_> = parts
            .iter()
            .map(|p| (p.record_count, p.total_tokens))
            .collect();
        assert_eq!(shape, [(2, 3), (1, 3)]);
        assert_eq!(
            state.records(parts[1].id).unwrap(),
            r#"[{"total_tokens":3}]"#
        );
        assert_eq!(state.counts().unwrap().queued, 2, "the whole batch is gone");

        state.mark_dead(parts[0].id, "422 too large").unwrap();
        assert_eq!(
            state.discard(Some(parts[1].id)).unwrap().len(),
            0,
            "only dead batches"
        );
        let discarded = state.discard(None).unwrap();
        assert_eq!(discarded[0].id, parts[0].id);
        let (listed, _) = &state.discarded(10).unwrap()[0];
        assert_eq!(listed.last_error.as_deref(), Some("422 too large"));
        // The same records collected again are not queued again.
        let again = NewBatch {
            record_count: 2,
            total_tokens: 3,
            idempotency_key: parts[0].idempotency_key.clone(),
            records: String::new(),
            ..batch("unused", "2026-11-26")
        };
        assert_eq!(state.queue("r2", [again], None).unwrap().unchanged, 1);
    }

    #[test]
    fn a_database_at_version_2_of_either_build_gets_every_table() {
        // Main's version 2 has `discarded`; the first build of issue 10 had `last_success` and
        // `login_verdict` at version 2 instead (the same tables as migration 3, without `discarded`).
        for (build, version_2) in [
            ("main", MIGRATIONS[1].to_owned()),
            (
                "issue 10",
                format!("{} DROP TABLE IF EXISTS discarded;", MIGRATIONS[2]),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            conn.execute_batch(&format!(
                "{} {version_2} PRAGMA user_version = 2;",
                MIGRATIONS[0]
            ))
            .unwrap();
            drop(conn);
            let mut state = State::open(dir.path()).unwrap();
            assert_eq!(state.schema_version().unwrap(), MIGRATIONS.len(), "{build}");
            state
                .queue("r1", [batch("k1", "2026-11-26")], None)
                .unwrap();
            let queued = state.batches(BatchState::Queued).unwrap();
            state.mark_dead(queued[0].id, "boom").unwrap();
            assert_eq!(state.discard(None).unwrap().len(), 1, "{build}");
            let at = "2026-11-27T00:00:00Z".parse().unwrap();
            state.set_last_success(at).unwrap();
            assert_eq!(state.last_success().unwrap(), Some(at), "{build}");
            assert!(state.login_verdict().unwrap().is_none(), "{build}");
        }
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        State::open(&state_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir), 0o700);
        assert_eq!(mode(&state_dir.join(DATABASE_FILE)), 0o600);
    }
}
