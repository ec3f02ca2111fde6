//! What a run writes to the state database: each collected chunk merged into the ledger, queued
//! for every sink and the watermark moved, in one transaction; and, before collecting, the whole
//! ledger for a sink that is new to it. A SIGKILL at any instant leaves ledger, queues and
//! watermark as they were before the transaction or as they are after it.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use chrono::{Days, NaiveDate, Utc};

use super::window::Window;
use crate::ledger::{Change, DayMerge, LedgerRow, Merger};
use crate::sink::{self, Configured, Sink as _};
use crate::state::{State, Transaction};
use crate::usage::UsageRecord;

/// What committing one chunk did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Committed {
    /// Ledger rows created.
    pub(super) rows_new: u64,
    /// Ledger rows that got a new revision.
    pub(super) rows_revised: u64,
    /// Batches queued, per sink, in the order of the sinks.
    pub(super) batches: usize,
    /// Batches left out because the same payload was already in the sink's outbox.
    pub(super) unchanged: usize,
}

/// Where a chunk goes.
pub(super) struct Commit<'a> {
    pub(super) sinks: &'a [Configured],
    pub(super) run_id: &'a str,
    pub(super) batch_size: usize,
}

impl Commit<'_> {
    /// Merges `records` (all of them days of `chunk`) into the ledger, queues every sink's
    /// batches of what changed, and moves the watermark to `watermark` when given.
    pub(super) fn chunk(
        &self,
        state: &mut State,
        merger: &mut Merger<'_>,
        chunk: Window,
        records: Vec<UsageRecord>,
        watermark: Option<NaiveDate>,
        queued_per_sink: &mut BTreeMap<&'static str, usize>,
    ) -> Result<Committed> {
        let mut collected: BTreeMap<NaiveDate, Vec<UsageRecord>> = BTreeMap::new();
        for record in records {
            if !chunk.contains(record.key.day) {
                bail!(
                    "the source returned usage of {} while collecting {chunk}; nothing of this chunk was recorded",
                    record.key.day
                );
            }
            collected.entry(record.key.day).or_default().push(record);
        }
        let tx = state.transaction()?;
        let mut stored = by_day(tx.ledger_rows(chunk.first, chunk.last)?);
        let mut committed = Committed::default();
        for day in chunk.days() {
            let day_merge = merger.merge_day(
                stored.remove(&day).unwrap_or_default(),
                collected.remove(&day).unwrap_or_default(),
            );
            tx.write_rows(day_merge.changes.iter().map(|change| &change.row))?;
            for change in &day_merge.changes {
                if change.previous.is_some() {
                    committed.rows_revised += 1;
                } else {
                    committed.rows_new += 1;
                }
            }
            self.queue(&tx, &day_merge, &mut committed, queued_per_sink)?;
        }
        if let Some(day) = watermark {
            tx.advance_watermark(day)?;
        }
        tx.commit()?;
        Ok(committed)
    }

    fn queue(
        &self,
        tx: &Transaction<'_>,
        day: &DayMerge,
        committed: &mut Committed,
        queued_per_sink: &mut BTreeMap<&'static str, usize>,
    ) -> Result<()> {
        for sink in self.sinks {
            let queued = tx.queue(
                self.run_id,
                sink::batches(sink, day, self.batch_size).map(|batch| (sink.name(), batch)),
            )?;
            committed.batches += queued.batches;
            committed.unchanged += queued.unchanged;
            *queued_per_sink.entry(sink.name()).or_default() += queued.batches;
        }
        Ok(())
    }

    /// Before collecting: drops ledger days older than `retention_days`, and queues the whole
    /// ledger, day by day, for each sink that has not been handed it yet (a sink added to a
    /// running installation starts with everything the ledger holds). Returns the batches queued.
    pub(super) fn prepare(
        &self,
        state: &mut State,
        retention_days: u32,
        queued_per_sink: &mut BTreeMap<&'static str, usize>,
    ) -> Result<usize> {
        let tx = state.transaction()?;
        let today = Utc::now().date_naive();
        tx.prune_ledger(today - Days::new(u64::from(retention_days)))?;
        let mut committed = Committed::default();
        let days = tx.ledger_days()?;
        for sink in self.sinks {
            if tx.has_joined(sink.name())? {
                continue;
            }
            if let Some((first, last)) = days {
                let one = Commit {
                    sinks: std::slice::from_ref(sink),
                    ..*self
                };
                for day in (Window { first, last }).days() {
                    let rows = tx.ledger_rows(day, day)?;
                    let whole = DayMerge {
                        changes: rows.iter().cloned().map(Change::whole).collect(),
                        rows,
                    };
                    one.queue(&tx, &whole, &mut committed, queued_per_sink)?;
                }
            }
            tx.join(sink.name())?;
        }
        tx.commit()?;
        Ok(committed.batches)
    }
}

fn by_day(rows: Vec<LedgerRow>) -> BTreeMap<NaiveDate, Vec<LedgerRow>> {
    let mut days: BTreeMap<NaiveDate, Vec<LedgerRow>> = BTreeMap::new();
    for row in rows {
        days.entry(row.record.key.day).or_default().push(row);
    }
    days
}
