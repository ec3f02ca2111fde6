//! The outbox: batches per sink, queued in the transaction that advances the watermark, and the
//! dead batches an operator discarded. A batch's payload is opaque here; only its sink reads it.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Row, params};

use super::{State, Transaction, now_text, parse_day, unreadable, unwritable};

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub(crate) enum BatchState {
    Queued,
    Sent,
    Dead,
}

/// A batch about to be queued.
#[derive(Debug, Clone)]
pub(crate) struct NewBatch {
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
    pub(crate) record_count: u64,
    pub(crate) total_tokens: u64,
    /// Hex SHA-256 of `payload`.
    pub(crate) idempotency_key: String,
    /// What the sink will send, as it encoded it.
    pub(crate) payload: String,
}

/// A batch in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) id: i64,
    /// The sink it is for.
    pub(crate) sink: String,
    pub(crate) run_id: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) first_day: NaiveDate,
    pub(crate) last_day: NaiveDate,
    pub(crate) record_count: u64,
    pub(crate) total_tokens: u64,
    pub(crate) idempotency_key: String,
    /// Runs in which delivery failed.
    pub(crate) attempts: u32,
    pub(crate) last_attempt_at: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// Batches per state, over every sink.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) queued: u64,
    pub(crate) sent: u64,
    pub(crate) dead: u64,
}

/// What queueing did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Queued {
    pub(crate) batches: usize,
    /// Batches left out because one with the same idempotency key is already in the sink's outbox.
    pub(crate) unchanged: usize,
}

const BATCH_COLUMNS: &str = "id, sink, run_id, created_at, first_day, last_day, record_count, total_tokens, \
                             idempotency_key, attempts, last_attempt_at, last_error";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Transaction<'_> {
    /// Queues each (sink, batch). A batch whose idempotency key is already in its sink's outbox
    /// (or discarded) is left out: it would send nothing new. The batches are taken one at a
    /// time, so only one payload is in memory at once.
    pub(crate) fn queue<'s>(
        &self,
        run_id: &str,
        batches: impl IntoIterator<Item = (&'s str, NewBatch)>,
    ) -> Result<Queued> {
        let now = now_text();
        let path = self.path;
        let mut outcome = Queued::default();
        let mut exists = self
            .tx
            .prepare_cached(
                "SELECT 1 FROM batches WHERE sink = ?1 AND idempotency_key = ?2 \
                 UNION ALL SELECT 1 FROM discarded WHERE sink = ?1 AND idempotency_key = ?2 LIMIT 1",
            )
            .with_context(|| unwritable(path))?;
        let mut insert = self
            .tx
            .prepare_cached(
                "INSERT INTO batches (sink, run_id, created_at, first_day, last_day, record_count, total_tokens, \
                 idempotency_key, payload, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued')",
            )
            .with_context(|| unwritable(path))?;
        for (sink, batch) in batches {
            if exists
                .exists(params![sink, batch.idempotency_key])
                .with_context(|| unwritable(path))?
            {
                outcome.unchanged += 1;
                continue;
            }
            insert
                .execute(params![
                    sink,
                    run_id,
                    now,
                    batch.first_day.to_string(),
                    batch.last_day.to_string(),
                    count(batch.record_count),
                    count(batch.total_tokens),
                    batch.idempotency_key,
                    batch.payload,
                ])
                .with_context(|| unwritable(path))?;
            outcome.batches += 1;
        }
        Ok(outcome)
    }
}

impl State {
    /// Queues each (sink, batch) in a transaction of its own, moving the watermark to `watermark`
    /// when given.
    #[cfg(test)]
    pub(crate) fn queue<'s>(
        &mut self,
        run_id: &str,
        batches: impl IntoIterator<Item = (&'s str, NewBatch)>,
        watermark: Option<NaiveDate>,
    ) -> Result<Queued> {
        let tx = self.transaction()?;
        let queued = tx.queue(run_id, batches)?;
        if let Some(day) = watermark {
            tx.advance_watermark(day)?;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// `sink`'s batches in `state`, oldest first, without their payload (see [`State::payload`]).
    pub(crate) fn batches(&self, sink: &str, state: BatchState) -> Result<Vec<Batch>> {
        self.batches_where(
            "sink = ?1 AND state = ?2",
            params![sink, <&str>::from(state)],
        )
    }

    /// Every sink's batches in `state`, oldest first.
    pub(crate) fn all_batches(&self, state: BatchState) -> Result<Vec<Batch>> {
        self.batches_where("state = ?1", params![<&str>::from(state)])
    }

    fn batches_where(&self, condition: &str, values: impl rusqlite::Params) -> Result<Vec<Batch>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE {condition} ORDER BY id"
            ))
            .with_context(|| unreadable(&self.path))?;
        let mut rows = statement
            .query(values)
            .with_context(|| unreadable(&self.path))?;
        let mut batches = Vec::new();
        while let Some(row) = rows.next().with_context(|| unreadable(&self.path))? {
            batches.push(self.batch(row)?);
        }
        Ok(batches)
    }

    fn batch(&self, row: &Row<'_>) -> Result<Batch> {
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
        Ok(Batch {
            id,
            sink: text(1)?,
            run_id: text(2)?,
            created_at: DateTime::parse_from_rfc3339(&text(3)?)
                .with_context(|| {
                    format!("batch {id} has a bad created_at in {}", self.path.display())
                })?
                .with_timezone(&Utc),
            first_day: parse_day(&text(4)?)?,
            last_day: parse_day(&text(5)?)?,
            record_count: u64::try_from(number(6)?).unwrap_or(0),
            total_tokens: u64::try_from(number(7)?).unwrap_or(0),
            idempotency_key: text(8)?,
            attempts: u32::try_from(number(9)?).unwrap_or(u32::MAX),
            last_attempt_at: optional(10)?,
            last_error: optional(11)?,
        })
    }

    /// The payload of a queued or dead batch, exactly as its sink encoded it. Read one batch at a
    /// time so that a long outbox never sits in memory whole.
    pub(crate) fn payload(&self, id: i64) -> Result<String> {
        self.conn
            .query_row(
                "SELECT payload FROM batches WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .with_context(|| unreadable(&self.path))
    }

    /// The sink acknowledged the batch: it leaves the queue and its payload is dropped.
    pub(crate) fn mark_sent(&self, id: i64) -> Result<()> {
        let now = now_text();
        self.conn
            .execute(
                "UPDATE batches SET state = 'sent', payload = '', finished_at = ?2, \
                 first_attempt_at = COALESCE(first_attempt_at, ?2), last_attempt_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Delivery failed in this run; the batch stays queued. Returns the runs failed so far.
    pub(crate) fn mark_failed(&self, id: i64, error: &str) -> Result<u32> {
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
    pub(crate) fn note_error(&self, id: i64, error: &str) -> Result<()> {
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
    pub(crate) fn mark_dead(&self, id: i64, error: &str) -> Result<()> {
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

    /// Moves dead batches back to the queue, one (`Some(id)`) or all, of one sink or of every
    /// sink, with a fresh count of failed runs and a fresh 7-day clock: the operator has looked at
    /// them. Returns how many moved.
    pub(crate) fn revive(&self, id: Option<i64>, sink: Option<&str>) -> Result<usize> {
        let moved = self
            .conn
            .execute(
                "UPDATE batches SET state = 'queued', attempts = 0, finished_at = NULL, created_at = ?1 \
                 WHERE state = 'dead' AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR sink = ?3)",
                params![now_text(), id, sink],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(moved)
    }

    /// Replaces a queued batch by `parts`, in one transaction; the parts keep the batch's sink,
    /// run, queue time and failed runs. A part whose key is already in the sink's outbox is left
    /// out. Returns the parts queued, in order.
    pub(crate) fn replace(
        &self,
        batch: &Batch,
        parts: impl IntoIterator<Item = NewBatch>,
    ) -> Result<Vec<Batch>> {
        let path = self.path.clone();
        let tx = self
            .conn
            .unchecked_transaction()
            .with_context(|| unwritable(&path))?;
        let mut queued = Vec::new();
        for part in parts {
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM batches WHERE sink = ?1 AND idempotency_key = ?2 AND id != ?3)",
                    params![batch.sink, part.idempotency_key, batch.id],
                    |row| row.get(0),
                )
                .with_context(|| unwritable(&path))?;
            if known {
                continue;
            }
            tx.execute(
                "INSERT INTO batches (sink, run_id, created_at, first_day, last_day, record_count, total_tokens, \
                 idempotency_key, payload, state, attempts, first_attempt_at, last_attempt_at, last_error) \
                 SELECT sink, run_id, created_at, first_day, last_day, ?2, ?3, ?4, ?5, 'queued', attempts, \
                 first_attempt_at, last_attempt_at, last_error FROM batches WHERE id = ?1",
                params![
                    batch.id,
                    count(part.record_count),
                    count(part.total_tokens),
                    part.idempotency_key,
                    part.payload
                ],
            )
            .with_context(|| unwritable(&path))?;
            queued.push(Batch {
                id: tx.last_insert_rowid(),
                record_count: part.record_count,
                total_tokens: part.total_tokens,
                idempotency_key: part.idempotency_key,
                ..batch.clone()
            });
        }
        tx.execute("DELETE FROM batches WHERE id = ?1", params![batch.id])
            .with_context(|| unwritable(&path))?;
        tx.commit().with_context(|| unwritable(&path))?;
        Ok(queued)
    }

    /// Gives up on dead batches, one (`Some(id)`) or all, of one sink or of every sink: they leave the outbox for the
    /// `discarded` list, so they no longer fail every run. Returns the batches discarded.
    pub(crate) fn discard(&mut self, id: Option<i64>, sink: Option<&str>) -> Result<Vec<Batch>> {
        let dead: Vec<Batch> = self
            .all_batches(BatchState::Dead)?
            .into_iter()
            .filter(|b| id.is_none_or(|id| b.id == id) && sink.is_none_or(|s| b.sink == s))
            .collect();
        let path = self.path.clone();
        let tx = self.conn.transaction().with_context(|| unwritable(&path))?;
        let now = now_text();
        for batch in &dead {
            tx.execute(
                "INSERT INTO discarded (batch_id, sink, discarded_at, queued_at, first_day, last_day, record_count, \
                 total_tokens, idempotency_key, last_error) SELECT id, sink, ?2, created_at, first_day, last_day, \
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
    pub(crate) fn discarded(&self, limit: usize) -> Result<Vec<(Batch, String)>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT batch_id, sink, '', queued_at, first_day, last_day, record_count, total_tokens, \
                 idempotency_key, 0, NULL, last_error, discarded_at FROM discarded \
                 ORDER BY discarded_at DESC, batch_id DESC LIMIT ?1",
            )
            .with_context(|| unreadable(&self.path))?;
        let mut rows = statement
            .query(params![i64::try_from(limit).unwrap_or(i64::MAX)])
            .with_context(|| unreadable(&self.path))?;
        let mut list = Vec::new();
        while let Some(row) = rows.next().with_context(|| unreadable(&self.path))? {
            let discarded_at = row.get(12).with_context(|| unreadable(&self.path))?;
            list.push((self.batch(row)?, discarded_at));
        }
        Ok(list)
    }

    /// How many batches are in each state, over every sink.
    pub(crate) fn counts(&self) -> Result<Counts> {
        let per_sink = self.counts_per_sink()?;
        Ok(Counts {
            queued: per_sink.values().map(|c| c.queued).sum(),
            sent: per_sink.values().map(|c| c.sent).sum(),
            dead: per_sink.values().map(|c| c.dead).sum(),
        })
    }

    /// How many batches are in each state, per sink that has any.
    pub(crate) fn counts_per_sink(&self) -> Result<BTreeMap<String, Counts>> {
        let mut per_sink: BTreeMap<String, Counts> = BTreeMap::new();
        let mut statement = self
            .conn
            .prepare_cached("SELECT sink, state, COUNT(*) FROM batches GROUP BY sink, state")
            .with_context(|| unreadable(&self.path))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .with_context(|| unreadable(&self.path))?;
        for row in rows {
            let (sink, state, n) = row.with_context(|| unreadable(&self.path))?;
            let n = u64::try_from(n).unwrap_or(0);
            let counts = per_sink.entry(sink).or_default();
            match state.parse() {
                Ok(BatchState::Queued) => counts.queued = n,
                Ok(BatchState::Sent) => counts.sent = n,
                Ok(BatchState::Dead) => counts.dead = n,
                Err(_) => bail!("unknown batch state `{state}` in the state database"),
            }
        }
        Ok(per_sink)
    }
}
