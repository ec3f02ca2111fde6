//! What the simulated receiver holds and what it saw: records upserted by `source_event_id`, the
//! Idempotency-Keys it accepted, and a log of every request with its answer.
//!
//! One mutex guards all of it, so the duplicate-key check, the upsert and the counters of one batch change
//! together: two concurrent sends of the same batch can never both be accepted.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::TokenSplit;

/// One record as the receiver holds it (the last accepted values for its `source_event_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRecord {
    pub usage_date: NaiveDate,
    /// `metadata.source_app_id`.
    pub app_id: String,
    /// `metadata.source_app_name`.
    pub app_name: String,
    /// `metadata.user`; may be empty.
    pub user: String,
    /// `metadata.customer`.
    pub customer: String,
    pub provider: String,
    pub model: String,
    pub currency: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub request_count: u64,
    /// `cost_actual` parsed from the number's text as sent, never through `f64`.
    #[serde(with = "rust_decimal::serde::str")]
    pub cost: Decimal,
    pub token_split: TokenSplit,
    pub source_event_id: String,
}

impl From<HeldRecord> for crate::TruthRecord {
    /// The record in the shape of the Dify simulator's truth, so delivered and true records compare
    /// with `==`.
    fn from(held: HeldRecord) -> Self {
        crate::TruthRecord {
            usage_date: held.usage_date,
            app_id: held.app_id,
            app_name: held.app_name,
            user: held.user,
            provider: held.provider,
            model: held.model,
            currency: held.currency,
            input_tokens: held.input_tokens,
            output_tokens: held.output_tokens,
            total_tokens: held.total_tokens,
            request_count: held.request_count,
            cost: held.cost,
            token_split: held.token_split,
        }
    }
}

impl HeldRecord {
    fn sort_key(&self) -> (NaiveDate, &str, &str, &str, &str, &str, &str) {
        (
            self.usage_date,
            &self.app_id,
            &self.user,
            &self.provider,
            &self.model,
            &self.currency,
            &self.source_event_id,
        )
    }
}

/// One request the receiver saw (`GET /_meter/*` excluded), in arrival order of its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestLog {
    /// The `Idempotency-Key` header as sent, if any.
    pub idempotency_key: Option<String>,
    /// Records in the body, when the body was read and its `records` was an array (not for faulted requests).
    pub record_count: Option<usize>,
    /// Status answered; `None` when the connection was reset or the client gave up on a hung request.
    pub status: Option<u16>,
}

/// What the simulator saw, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MeterStats {
    /// `POST /v1/usage` requests received, faulted ones included.
    pub posts_received: u64,
    /// Batches answered 200.
    pub batches_accepted: u64,
    /// Requests per status answered (`GET /_meter/*` excluded).
    pub by_status: BTreeMap<u16, u64>,
    /// Requests never answered: connections reset, hung requests the client gave up on.
    pub unanswered: u64,
    /// Idempotency-Keys of accepted batches, in the order they were accepted.
    pub accepted_keys: Vec<String>,
    /// Records inserted (new `source_event_id`) and updated (known one) over all accepted batches.
    pub records_inserted: u64,
    pub records_updated: u64,
    /// Largest `records` array seen in any body, accepted or not.
    pub max_batch_seen: usize,
    /// Every request in the order its answer was decided.
    pub requests: Vec<RequestLog>,
}

/// Outcome of offering a validated batch to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// The Idempotency-Key was accepted before; nothing changed.
    Duplicate,
    Done {
        inserted: u64,
        updated: u64,
        /// Records held after the upsert.
        total: usize,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    records: HashMap<String, HeldRecord>,
    keys: HashSet<String>,
    stats: MeterStats,
}

impl Store {
    /// Stores a whole batch under `key`, unless the key was accepted before.
    pub(crate) fn upsert(&mut self, key: &str, batch: Vec<HeldRecord>) -> Upsert {
        if !self.keys.insert(key.to_owned()) {
            return Upsert::Duplicate;
        }
        let (mut inserted, mut updated) = (0, 0);
        for record in batch {
            match self.records.insert(record.source_event_id.clone(), record) {
                Some(_) => updated += 1,
                None => inserted += 1,
            }
        }
        let stats = &mut self.stats;
        stats.batches_accepted += 1;
        stats.accepted_keys.push(key.to_owned());
        stats.records_inserted += inserted;
        stats.records_updated += updated;
        Upsert::Done {
            inserted,
            updated,
            total: self.records.len(),
        }
    }

    pub(crate) fn log(&mut self, entry: RequestLog, is_post: bool) {
        let stats = &mut self.stats;
        if is_post {
            stats.posts_received += 1;
        }
        match entry.status {
            Some(code) => *stats.by_status.entry(code).or_default() += 1,
            None => stats.unanswered += 1,
        }
        if let Some(count) = entry.record_count {
            stats.max_batch_seen = stats.max_batch_seen.max(count);
        }
        stats.requests.push(entry);
    }

    /// Held records sorted by (usage_date, app_id, user, provider, model, currency).
    pub(crate) fn records(&self) -> Vec<HeldRecord> {
        let mut records: Vec<HeldRecord> = self.records.values().cloned().collect();
        records.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        records
    }

    pub(crate) fn stats(&self) -> MeterStats {
        self.stats.clone()
    }
}
