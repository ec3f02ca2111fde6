//! The usage ledger: what was exported, per record, and how a collected day is merged into it
//! (`docs/ledger.md`).
//!
//! Every sink is fed from the ledger, never straight from a collection. Per `source_event_id` it
//! holds the totals exported so far, the record's labels, the customer the identity map gives its
//! user, and a revision that grows by one whenever anything a sink receives changes. That is what
//! lets an upsert sink refuse a replayed batch (its revision is not newer), a snapshot sink rewrite
//! a day from its current truth, and an append-only sink send the difference since the revision it
//! holds.
//!
//! Dify deletes usage after it was billed (a deleted conversation's messages go seconds later;
//! retention and archiving remove old runs), so a day collected again can show less than the day
//! that was exported. [`DecreasePolicy::Keep`] refuses to let billed usage vanish that way; `Follow`
//! mirrors Dify.

mod merge;
mod user_map;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub(crate) use merge::{DayMerge, Merger};
pub(crate) use user_map::UserMap;

use crate::usage::UsageRecord;

/// `USAGE_DECREASES`: what a re-collected record with lower totals, or a vanished one, does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum DecreasePolicy {
    /// The ledger keeps the totals it exported; the decrease is counted and logged.
    Keep,
    /// The ledger takes the lower totals (a vanished record becomes zero) and the sinks are told.
    Follow,
}

/// The figures of a record that are summed: what a revision changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Totals {
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) request_count: u64,
    pub(crate) cost: Decimal,
}

impl Totals {
    /// The totals of `record`.
    pub(crate) fn of(record: &UsageRecord) -> Totals {
        Totals {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            total_tokens: record.total_tokens,
            request_count: record.request_count,
            cost: record.cost,
        }
    }

    /// Sets `record`'s totals to these.
    fn apply(self, record: &mut UsageRecord) {
        record.input_tokens = self.input_tokens;
        record.output_tokens = self.output_tokens;
        record.total_tokens = self.total_tokens;
        record.request_count = self.request_count;
        record.cost = self.cost;
    }
}

/// One ledger row: a record at its current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerRow {
    pub(crate) record: UsageRecord,
    /// The identity map's customer for the record's user (the user itself when unmapped).
    pub(crate) customer: String,
    /// 1 for a new row; grows by one each time anything a sink receives changes.
    pub(crate) revision: u64,
    /// When this revision entered the ledger.
    pub(crate) exported_at: DateTime<Utc>,
}

impl LedgerRow {
    pub(crate) fn totals(&self) -> Totals {
        Totals::of(&self.record)
    }
}

/// A ledger row as a sink is handed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) row: LedgerRow,
    /// What this sink received for the row before this revision; `None` when it gets the row
    /// whole (a new row, a sink that is new to the ledger, a day rewritten whole). An append-only
    /// sink sends the difference from it.
    pub(crate) previous: Option<Previous>,
}

/// A row as it was at the revision before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Previous {
    pub(crate) totals: Totals,
    /// The customer then: a new identity map can move a row to another customer.
    pub(crate) customer: String,
}

impl Change {
    /// A row handed over whole.
    pub(crate) fn whole(row: LedgerRow) -> Change {
        Change {
            row,
            previous: None,
        }
    }
}
