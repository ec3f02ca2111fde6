//! Delivering one sink's outbox, oldest batch first (`docs/run.md#delivery`).
//!
//! | the sink says | what happens to the batch | the pass |
//! |---|---|---|
//! | sent | sent (its payload is dropped) | goes on |
//! | transient | stays queued; dead after `DEAD_LETTER_AFTER` failed runs | stops, the run fails |
//! | configuration | stays queued, no failed run counted | stops, the run fails |
//! | too large | split in halves, which are sent at once (a single record is rejected instead) | goes on |
//! | rejected | dead, with the receiver's answer | goes on, the run fails |
//!
//! A queued batch older than 7 days is dead-lettered before it is tried. Dead batches wait for
//! `exporter resend` or `exporter discard`. Each answer is written to the state database before the
//! next batch is sent, so a kill at any moment loses at most the knowledge that the last batch
//! arrived, which the batch's idempotency key makes harmless.

use std::collections::VecDeque;

use anyhow::Result;
use chrono::{Duration as ChronoDuration, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{SendError, Sink};
use crate::state::{Batch, BatchState, NewBatch, State};

/// A queued batch older than this is dead-lettered.
const MAX_AGE_DAYS: i64 = 7;

/// What one delivery pass did.
#[derive(Debug, Default, Clone)]
pub(crate) struct Delivery {
    pub(crate) batches_sent: u64,
    pub(crate) records_sent: u64,
    /// Batches dead-lettered in this pass.
    pub(crate) batches_dead_now: u64,
    /// What stopped the pass before the queue was empty, if anything did.
    pub(crate) stopped_by: Option<DeliveryStop>,
}

impl Delivery {
    /// Adds another pass (another sink's) to this one; the first stop is kept.
    pub(crate) fn merge(&mut self, other: Delivery) {
        self.batches_sent += other.batches_sent;
        self.records_sent += other.records_sent;
        self.batches_dead_now += other.batches_dead_now;
        self.stopped_by = self.stopped_by.take().or(other.stopped_by);
    }
}

/// Why a delivery pass stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeliveryStop {
    /// The configuration is wrong; delivery is pointless until it is fixed.
    Configuration(String),
    /// The receiver is unwell; the queue waits for the next run.
    Transient(String),
}

/// Sends every batch queued for `sink`, oldest first, until done, a stop signal, or a failure that
/// makes further sending pointless.
pub(crate) async fn deliver<S: Sink>(
    state: &State,
    sink: &S,
    dead_letter_after: u32,
    cancel: &CancellationToken,
) -> Result<Delivery> {
    let mut delivery = Delivery::default();
    let mut pending: VecDeque<Batch> = state.batches(sink.name(), BatchState::Queued)?.into();
    while let Some(batch) = pending.pop_front() {
        if cancel.is_cancelled() {
            break;
        }
        if Utc::now() - batch.created_at > ChronoDuration::days(MAX_AGE_DAYS) {
            let reason = format!(
                "not delivered within {MAX_AGE_DAYS} days (queued at {})",
                batch.created_at
            );
            dead_letter(state, &batch, &reason)?;
            delivery.batches_dead_now += 1;
            continue;
        }
        let failure = match sink.send(&batch, &state.payload(batch.id)?).await {
            Ok(()) => {
                state.mark_sent(batch.id)?;
                crate::progress::batch_sent();
                delivery.batches_sent += 1;
                delivery.records_sent += batch.record_count;
                info!(
                    sink = sink.name(),
                    batch_id = batch.id,
                    records = batch.record_count,
                    "batch delivered"
                );
                continue;
            }
            Err(failure) => failure,
        };
        match failure {
            SendError::Stopped => break,
            SendError::TooLarge(answer) if batch.record_count > 1 => {
                let parts = split(state, sink, &batch, batch.record_count.div_ceil(2))?;
                info!(
                    sink = sink.name(),
                    batch_id = batch.id,
                    records = batch.record_count,
                    parts = ?parts.iter().map(|p| p.id).collect::<Vec<_>>(),
                    answer,
                    "batch too large for the receiver; split in halves and sent again"
                );
                for part in parts.into_iter().rev() {
                    pending.push_front(part);
                }
            }
            SendError::TooLarge(answer) | SendError::Rejected(answer) => {
                dead_letter(state, &batch, &answer)?;
                delivery.batches_dead_now += 1;
            }
            SendError::Configuration(message) => {
                state.note_error(batch.id, &message)?;
                delivery.stopped_by = Some(DeliveryStop::Configuration(message));
                break;
            }
            SendError::Transient(message) => {
                let failed_runs = state.mark_failed(batch.id, &message)?;
                if failed_runs >= dead_letter_after {
                    let reason = format!(
                        "failed in {failed_runs} runs (DEAD_LETTER_AFTER); last: {message}"
                    );
                    dead_letter(state, &batch, &reason)?;
                    delivery.batches_dead_now += 1;
                } else {
                    warn!(sink = sink.name(), batch_id = batch.id, failed_runs, error = %message, "batch stays queued for the next run");
                }
                // The receiver is unwell: the rest would fail the same way after their retries.
                delivery.stopped_by = Some(DeliveryStop::Transient(message));
                break;
            }
        }
    }
    Ok(delivery)
}

/// Replaces a queued batch by `sink`'s parts of at most `size` records each; returns the parts
/// queued, in record order.
pub(crate) fn split<S: Sink>(
    state: &State,
    sink: &S,
    batch: &Batch,
    size: u64,
) -> Result<Vec<Batch>> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let parts = sink
        .split(&state.payload(batch.id)?, size)?
        .into_iter()
        .map(|part| NewBatch {
            first_day: batch.first_day,
            last_day: batch.last_day,
            record_count: part.record_count,
            total_tokens: part.total_tokens,
            idempotency_key: super::idempotency_key(&part.payload),
            payload: part.payload,
        });
    state.replace(batch, parts)
}

fn dead_letter(state: &State, batch: &Batch, reason: &str) -> Result<()> {
    state.mark_dead(batch.id, reason)?;
    error!(
        sink = %batch.sink,
        batch_id = batch.id,
        records = batch.record_count,
        first_day = %batch.first_day,
        reason,
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`"
    );
    Ok(())
}
