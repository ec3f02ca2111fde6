//! The sink contract: where records go, and how the outbox hands them over.
//!
//! A sink turns a batch of records (one UTC day, at most `BATCH_SIZE`) into a payload, which is
//! stored in the outbox in the same transaction that advances the watermark; later it sends that
//! payload and classifies the receiver's answer as one of the [`SendError`] kinds, which decide the
//! batch's fate in the delivery loop ([`outbox`]): sent, queued for a later run, held for a
//! configuration fix, dead-lettered, or split. The outbox never looks into a payload, so a new sink
//! is one module implementing [`Sink`] plus one arm in [`Configured`]. How delivery behaves:
//! `docs/run.md#delivery`.

pub(crate) mod http;
mod outbox;

use std::future::Future;

use sha2::{Digest as _, Sha256};

pub(crate) use outbox::{Delivery, DeliveryStop, deliver, split};

use crate::config::Config;
use crate::http::HttpClient;
use crate::state::{Batch, NewBatch};
use crate::usage::UsageRecord;

/// A receiver of records.
pub(crate) trait Sink {
    /// The name outbox rows carry, e.g. `http`.
    fn name(&self) -> &'static str;

    /// The payload that carries `records` (one day's, at most `BATCH_SIZE`), as the outbox keeps it.
    fn encode(&self, records: &[UsageRecord]) -> String;

    /// `payload` cut into parts of at most `size` records, in record order.
    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>>;

    /// Sends one batch; `Ok` once the receiver has it.
    fn send(&self, batch: &Batch, payload: &str) -> impl Future<Output = Result<(), SendError>>;
}

/// One part of a split payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) payload: String,
    pub(crate) record_count: u64,
    pub(crate) total_tokens: u64,
}

/// Why a batch was not delivered: each kind decides what the delivery loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The stop signal came before the batch was sent; it stays queued.
    Stopped,
    /// Worth another try in a later run (unreachable, timed out, 429, 5xx): the batch stays
    /// queued and counts a failed run; the rest of the queue waits.
    Transient(String),
    /// The configuration is wrong (the message names the variable): the batch stays queued, no
    /// failed run is counted, delivery stops.
    Configuration(String),
    /// The receiver refused this batch and always will: dead letter, with its answer.
    Rejected(String),
    /// Too large for the receiver: split in halves and sent again (a single record is rejected).
    TooLarge(String),
}

/// The sinks the configuration enables.
pub(crate) enum Configured {
    Http(http::HttpSink),
}

impl Configured {
    /// Every configured sink, ready to send through `http`.
    pub(crate) fn all(config: &Config, http: &HttpClient) -> Vec<Configured> {
        vec![Configured::Http(http::HttpSink::new(
            &config.http_sink,
            http,
        ))]
    }
}

impl Sink for Configured {
    fn name(&self) -> &'static str {
        match self {
            Configured::Http(sink) => sink.name(),
        }
    }

    fn encode(&self, records: &[UsageRecord]) -> String {
        match self {
            Configured::Http(sink) => sink.encode(records),
        }
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        match self {
            Configured::Http(sink) => sink.split(payload, size),
        }
    }

    async fn send(&self, batch: &Batch, payload: &str) -> Result<(), SendError> {
        match self {
            Configured::Http(sink) => sink.send(batch, payload).await,
        }
    }
}

/// `records` (sorted by day) as `sink`'s batches: a batch never spans days and holds at most
/// `batch_size` records. Each is encoded only when asked for, so one payload is in memory at once.
pub(crate) fn batches<'a, S: Sink>(
    sink: &'a S,
    records: &'a [UsageRecord],
    batch_size: usize,
) -> impl Iterator<Item = NewBatch> + 'a {
    records
        .chunk_by(|a, b| a.key.day == b.key.day)
        .flat_map(move |day| day.chunks(batch_size.max(1)))
        .map(|chunk| {
            let payload = sink.encode(chunk);
            NewBatch {
                first_day: chunk[0].key.day,
                last_day: chunk[chunk.len() - 1].key.day,
                record_count: chunk.len() as u64,
                total_tokens: chunk.iter().map(|r| r.total_tokens).sum(),
                idempotency_key: idempotency_key(&payload),
                payload,
            }
        })
}

/// Lowercase hex SHA-256 of a payload: the same records always give the same key, any changed total
/// a new one, so a batch already in the outbox is never queued twice.
pub(crate) fn idempotency_key(payload: &str) -> String {
    Sha256::digest(payload.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests;
