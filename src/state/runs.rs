//! The run history `exporter status` shows, and the end of the last successful run (monitoring).

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension as _, params};

use super::{State, unreadable, unwritable};

/// Runs kept in the history.
const RUNS_KEPT: i64 = 50;
/// Sent batches are kept this long (their keys stop lookback days from being sent twice).
const SENT_KEPT_DAYS: i64 = 35;

/// One finished run, for `status`.
#[derive(Debug, Clone)]
pub(crate) struct RunRecord {
    pub(crate) run_id: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub(crate) outcome: String,
    pub(crate) exit_code: u8,
    /// The run report as a JSON object.
    pub(crate) summary: String,
}

impl State {
    /// Records a finished run and forgets old runs and old sent batches.
    pub(crate) fn record_run(&self, run: &RunRecord) -> Result<()> {
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
    pub(crate) fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
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

    /// The end of the last run that exited 0, if any.
    pub(crate) fn last_success(&self) -> Result<Option<DateTime<Utc>>> {
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
    pub(crate) fn set_last_success(&self, at: DateTime<Utc>) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO last_success (id, finished_at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at",
                params![at.to_rfc3339_opts(SecondsFormat::Millis, true)],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }
}
