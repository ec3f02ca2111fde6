//! The watermark: the last day whose records are durably queued for every sink.

use anyhow::{Context as _, Result};
use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{State, parse_day, unreadable, unwritable};

impl State {
    /// The last day whose records are durably queued.
    pub(crate) fn watermark(&self) -> Result<Option<NaiveDate>> {
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
    pub(crate) fn set_watermark(&self, day: NaiveDate) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO watermark (id, day) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET day = excluded.day",
                params![day.to_string()],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }
}

/// Moves the watermark forward to `day` (never back), inside the caller's transaction.
pub(super) fn advance(conn: &Connection, day: NaiveDate) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO watermark (id, day) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET day = MAX(day, excluded.day)",
        params![day.to_string()],
    )?;
    Ok(())
}
