//! The ledger's tables: one row per exported record at its current revision, and the sinks that
//! have been handed the ledger. Written only inside a [`Transaction`], together with the batches
//! queued from it and the watermark. The merge rules live in `crate::ledger`.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Row, params};

use super::{State, Transaction, parse_day, unreadable, unwritable};
use crate::ledger::LedgerRow;
use crate::usage::{RecordKey, UsageRecord};

const ROW_COLUMNS: &str = "day, app_id, app_name, workspace_id, user, customer, provider, model, currency, \
                           input_tokens, output_tokens, total_tokens, request_count, cost, total_only, \
                           revision, exported_at";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Transaction<'_> {
    /// The ledger's rows of the days `first..=last`, sorted by day and key.
    pub(crate) fn ledger_rows(&self, first: NaiveDate, last: NaiveDate) -> Result<Vec<LedgerRow>> {
        rows_between(&self.tx, self.path, first, last)
    }

    /// Writes each row at its revision, replacing the row of its `source_event_id`.
    pub(crate) fn write_rows<'r>(
        &self,
        rows: impl IntoIterator<Item = &'r LedgerRow>,
    ) -> Result<()> {
        let mut upsert = self
            .tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO ledger (source_event_id, {ROW_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ))
            .with_context(|| unwritable(self.path))?;
        for row in rows {
            let r = &row.record;
            upsert
                .execute(params![
                    r.source_event_id(),
                    r.key.day.to_string(),
                    &*r.key.app_id,
                    &*r.app_name,
                    r.workspace_id.as_deref(),
                    r.key.user,
                    row.customer,
                    r.key.provider,
                    r.key.model,
                    r.key.currency,
                    count(r.input_tokens),
                    count(r.output_tokens),
                    count(r.total_tokens),
                    count(r.request_count),
                    r.cost.to_string(),
                    r.total_only,
                    count(row.revision),
                    super::time_text(row.exported_at),
                ])
                .with_context(|| unwritable(self.path))?;
        }
        Ok(())
    }

    /// Drops the rows of days before `day`; returns how many went.
    pub(crate) fn prune_ledger(&self, day: NaiveDate) -> Result<usize> {
        self.tx
            .execute(
                "DELETE FROM ledger WHERE day < ?1",
                params![day.to_string()],
            )
            .with_context(|| unwritable(self.path))
    }

    /// The first and last day the ledger holds, if any.
    pub(crate) fn ledger_days(&self) -> Result<Option<(NaiveDate, NaiveDate)>> {
        day_range(&self.tx, self.path)
    }

    /// Whether `sink` has been handed the ledger before.
    pub(crate) fn has_joined(&self, sink: &str) -> Result<bool> {
        self.tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sinks WHERE name = ?1)",
                params![sink],
                |row| row.get(0),
            )
            .with_context(|| unreadable(self.path))
    }

    /// Notes that `sink` has been handed the ledger: from now on it gets the changes only.
    pub(crate) fn join(&self, sink: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR IGNORE INTO sinks (name, joined_at) VALUES (?1, ?2)",
                params![sink, super::now_text()],
            )
            .with_context(|| unwritable(self.path))?;
        Ok(())
    }
}

/// How much the ledger holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerSummary {
    pub(crate) rows: u64,
    /// The first and last day, when it holds any.
    pub(crate) days: Option<(NaiveDate, NaiveDate)>,
}

impl State {
    /// How many rows the ledger holds, over which days.
    pub(crate) fn ledger_summary(&self) -> Result<LedgerSummary> {
        let rows: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM ledger", [], |row| row.get(0))
            .with_context(|| unreadable(&self.path))?;
        Ok(LedgerSummary {
            rows: u64::try_from(rows).unwrap_or(0),
            days: self.ledger_days()?,
        })
    }

    /// The ledger's first and last day, when it holds any (two index lookups, whatever its size).
    pub(crate) fn ledger_days(&self) -> Result<Option<(NaiveDate, NaiveDate)>> {
        day_range(&self.conn, &self.path)
    }
}

fn day_range(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
) -> Result<Option<(NaiveDate, NaiveDate)>> {
    let (first, last): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT (SELECT MIN(day) FROM ledger), (SELECT MAX(day) FROM ledger)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .with_context(|| unreadable(path))?;
    Ok(match (first, last) {
        (Some(first), Some(last)) => Some((parse_day(&first)?, parse_day(&last)?)),
        _ => None,
    })
}

fn rows_between(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<Vec<LedgerRow>> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM ledger WHERE day BETWEEN ?1 AND ?2 \
             ORDER BY day, app_id, user, provider, model, currency"
        ))
        .with_context(|| unreadable(path))?;
    let mut rows = statement
        .query(params![first.to_string(), last.to_string()])
        .with_context(|| unreadable(path))?;
    let mut ledger = Vec::new();
    while let Some(row) = rows.next().with_context(|| unreadable(path))? {
        ledger.push(ledger_row(row).with_context(|| unreadable(path))?);
    }
    Ok(ledger)
}

fn ledger_row(row: &Row<'_>) -> Result<LedgerRow> {
    let number = |i: usize| -> Result<u64> {
        let n: i64 = row.get(i)?;
        u64::try_from(n).with_context(|| format!("ledger column {i} holds the negative number {n}"))
    };
    let cost: String = row.get(13)?;
    let exported_at: String = row.get(16)?;
    Ok(LedgerRow {
        record: UsageRecord {
            key: RecordKey {
                day: parse_day(&row.get::<_, String>(0)?)?,
                app_id: Arc::from(row.get::<_, String>(1)?),
                user: row.get(4)?,
                provider: row.get(6)?,
                model: row.get(7)?,
                currency: row.get(8)?,
            },
            app_name: Arc::from(row.get::<_, String>(2)?),
            workspace_id: row.get::<_, Option<String>>(3)?.map(Arc::from),
            input_tokens: number(9)?,
            output_tokens: number(10)?,
            total_tokens: number(11)?,
            request_count: number(12)?,
            cost: cost
                .parse()
                .with_context(|| format!("the ledger holds the cost `{cost}`, not a decimal"))?,
            total_only: row.get(14)?,
        },
        customer: row.get(5)?,
        revision: number(15)?,
        exported_at: DateTime::parse_from_rfc3339(&exported_at)
            .with_context(|| format!("the ledger holds the time `{exported_at}`"))?
            .with_timezone(&Utc),
    })
}
