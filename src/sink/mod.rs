//! The sink contract: where ledger rows go, and how the outbox hands them over.
//!
//! Sinks are fed from the ledger. When a collected day changes ledger rows, each sink gets, by its
//! [`Kind`], either the changed rows (upsert and append-only receivers) or the whole day again
//! (snapshot receivers, such as files). A sink turns such a batch (one UTC day) into a payload,
//! which is stored in the outbox in the same transaction that writes the ledger and advances the
//! watermark; later it sends that payload and classifies the receiver's answer as one of the
//! [`SendError`] kinds, which decide the batch's fate in the delivery loop ([`outbox`]): sent,
//! queued for a later run, held for a configuration fix, dead-lettered, or split. The outbox never
//! looks into a payload, so a new sink is one module implementing [`Sink`] plus one arm in
//! [`Configured`]. How delivery behaves: `docs/run.md#delivery`; the sinks: `docs/sinks.md`.

pub(crate) mod cloudevents;
pub(crate) mod file;
pub(crate) mod http;
mod outbox;
mod postgres;
pub(crate) mod rows;

use std::future::Future;

use sha2::{Digest as _, Sha256};

pub(crate) use outbox::{Delivery, DeliveryStop, deliver, split};

use crate::config::Config;
use crate::http::HttpClient;
use crate::ledger::{Change, DayMerge};
use crate::state::{Batch, NewBatch};

/// What a sink is handed when rows of a day change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The changed rows, at most `BATCH_SIZE` per batch: the receiver keeps what it was sent.
    Changes,
    /// Every row of the day, in one batch: the receiver replaces the day.
    Days,
}

/// A receiver of ledger rows.
pub(crate) trait Sink {
    /// The name outbox rows carry, e.g. `http`.
    fn name(&self) -> &'static str;

    /// Whether the sink gets the changed rows or whole days.
    fn kind(&self) -> Kind {
        Kind::Changes
    }

    /// The most changed rows one batch carries when `BATCH_SIZE` is `configured`: by default the
    /// configured size, which a receiver's request limit decides.
    fn batch_size(&self, configured: usize) -> usize {
        configured
    }

    /// The payload that carries `changes` (one day's), as the outbox keeps it.
    fn encode(&self, changes: &[Change]) -> String;

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
    // Boxed: its settings and session dwarf the other variants, and there is one per run.
    Postgres(Box<postgres::PostgresSink>),
    CloudEvents(cloudevents::CloudEventsSink),
    File(file::FileSink),
}

impl Configured {
    /// Every configured sink, ready to send through `http`.
    pub(crate) fn all(config: &Config, http: &HttpClient) -> Vec<Configured> {
        let sinks = &config.sinks;
        let mut all = Vec::new();
        if let Some(settings) = &sinks.http {
            all.push(Configured::Http(http::HttpSink::new(settings, http)));
        }
        if let Some(settings) = &sinks.postgres {
            all.push(Configured::Postgres(Box::new(postgres::PostgresSink::new(
                settings,
                &config.masker,
                http.cancel(),
            ))));
        }
        if let Some(settings) = &sinks.cloudevents {
            all.push(Configured::CloudEvents(cloudevents::CloudEventsSink::new(
                settings, http,
            )));
        }
        if let Some(settings) = &sinks.file {
            all.push(Configured::File(file::FileSink::new(settings)));
        }
        all
    }
}

impl Sink for Configured {
    fn name(&self) -> &'static str {
        match self {
            Configured::Http(sink) => sink.name(),
            Configured::Postgres(sink) => sink.name(),
            Configured::CloudEvents(sink) => sink.name(),
            Configured::File(sink) => sink.name(),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Configured::Http(sink) => sink.kind(),
            Configured::Postgres(sink) => sink.kind(),
            Configured::CloudEvents(sink) => sink.kind(),
            Configured::File(sink) => sink.kind(),
        }
    }

    fn batch_size(&self, configured: usize) -> usize {
        match self {
            Configured::Http(sink) => sink.batch_size(configured),
            Configured::Postgres(sink) => sink.batch_size(configured),
            Configured::CloudEvents(sink) => sink.batch_size(configured),
            Configured::File(sink) => sink.batch_size(configured),
        }
    }

    fn encode(&self, changes: &[Change]) -> String {
        match self {
            Configured::Http(sink) => sink.encode(changes),
            Configured::Postgres(sink) => sink.encode(changes),
            Configured::CloudEvents(sink) => sink.encode(changes),
            Configured::File(sink) => sink.encode(changes),
        }
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        match self {
            Configured::Http(sink) => sink.split(payload, size),
            Configured::Postgres(sink) => sink.split(payload, size),
            Configured::CloudEvents(sink) => sink.split(payload, size),
            Configured::File(sink) => sink.split(payload, size),
        }
    }

    async fn send(&self, batch: &Batch, payload: &str) -> Result<(), SendError> {
        match self {
            Configured::Http(sink) => sink.send(batch, payload).await,
            Configured::Postgres(sink) => sink.send(batch, payload).await,
            Configured::CloudEvents(sink) => sink.send(batch, payload).await,
            Configured::File(sink) => sink.send(batch, payload).await,
        }
    }
}

/// The batches that hand `day` to `sink`: its changes in batches of at most its
/// [`Sink::batch_size`] for `BATCH_SIZE` `batch_size`, or, for a sink of whole days, every row of
/// the day once when any changed. Each is encoded only when asked for, so one payload is in memory
/// at once.
pub(crate) fn batches<'a, S: Sink>(
    sink: &'a S,
    day: &'a DayMerge,
    batch_size: usize,
) -> Box<dyn Iterator<Item = NewBatch> + 'a> {
    match sink.kind() {
        Kind::Changes => Box::new(
            day.changes
                .chunks(sink.batch_size(batch_size).max(1))
                .map(move |chunk| new_batch(sink.encode(chunk), chunk)),
        ),
        Kind::Days if day.changes.is_empty() => Box::new(std::iter::empty()),
        Kind::Days => {
            let whole: Vec<Change> = day.rows.iter().cloned().map(Change::whole).collect();
            Box::new(std::iter::once(new_batch(sink.encode(&whole), &whole)))
        }
    }
}

fn new_batch(payload: String, changes: &[Change]) -> NewBatch {
    let day = |change: &Change| change.row.record.key.day;
    NewBatch {
        first_day: changes.first().map(day).unwrap_or_default(),
        last_day: changes.last().map(day).unwrap_or_default(),
        record_count: changes.len() as u64,
        total_tokens: changes.iter().map(|c| c.row.record.total_tokens).sum(),
        idempotency_key: idempotency_key(&payload),
        payload,
    }
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
