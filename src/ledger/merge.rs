//! Merging one collected day into the ledger's rows of that day.
//!
//! A collected record with totals at least the ledger's replaces them; a lower one, or a record the
//! ledger has that the collection no longer shows, is a decrease, which [`DecreasePolicy`] decides.
//! Under `keep` every figure keeps the larger of the two values, so a record that lost deleted
//! messages but gained late runs keeps the usage that was billed and still takes what is new.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{Change, DecreasePolicy, LedgerRow, Previous, Totals, UserMap};
use crate::usage::{RecordKey, UsageRecord};

/// Usage that Dify showed before and no longer shows, over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Decreases {
    /// Records whose collected totals were lower than the ledger's, or that vanished.
    pub(crate) keys: u64,
    /// Tokens the ledger holds beyond what Dify shows now.
    pub(crate) tokens: u64,
    /// Cost the ledger holds beyond what Dify shows now, per currency.
    pub(crate) cost: BTreeMap<String, Decimal>,
}

impl Decreases {
    fn add(&mut self, ledger: &UsageRecord, now: Totals) {
        self.keys += 1;
        self.tokens += ledger.total_tokens.saturating_sub(now.total_tokens);
        let lost = ledger.cost - now.cost;
        if lost > Decimal::ZERO {
            *self.cost.entry(ledger.key.currency.clone()).or_default() += lost;
        }
    }

    /// The cost as `12.34 USD, 5 CNY` (`0` when none).
    pub(crate) fn cost_text(&self) -> String {
        if self.cost.is_empty() {
            return "0".to_owned();
        }
        self.cost
            .iter()
            .map(|(currency, cost)| format!("{} {currency}", cost.normalize()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One day after merging.
#[derive(Debug, Default)]
pub(crate) struct DayMerge {
    /// Every row of the day at its current revision, sorted by key.
    pub(crate) rows: Vec<LedgerRow>,
    /// The rows that are new or got a new revision, sorted by key.
    pub(crate) changes: Vec<Change>,
}

/// Merges collected days into the ledger and keeps the run's figures about it.
#[derive(Debug)]
pub(crate) struct Merger<'a> {
    policy: DecreasePolicy,
    users: &'a UserMap,
    now: DateTime<Utc>,
    /// Decreases seen (kept under `keep`, followed under `follow`).
    pub(crate) decreases: Decreases,
    /// Users the identity map does not name (only counted when a map is configured).
    pub(crate) unmapped: HashSet<String>,
}

impl<'a> Merger<'a> {
    pub(crate) fn new(policy: DecreasePolicy, users: &'a UserMap, now: DateTime<Utc>) -> Self {
        Merger {
            policy,
            users,
            now,
            decreases: Decreases::default(),
            unmapped: HashSet::new(),
        }
    }

    /// Merges one day's collected records into the ledger's rows of that day.
    pub(crate) fn merge_day(
        &mut self,
        stored: Vec<LedgerRow>,
        collected: Vec<UsageRecord>,
    ) -> DayMerge {
        let mut stored: HashMap<RecordKey, LedgerRow> = stored
            .into_iter()
            .map(|row| (row.record.key.clone(), row))
            .collect();
        let mut day = DayMerge::default();
        for record in collected {
            let customer = self.customer(&record.key.user);
            match stored.remove(&record.key) {
                None => {
                    let row = LedgerRow {
                        record,
                        customer,
                        revision: 1,
                        exported_at: self.now,
                    };
                    day.changes.push(Change::whole(row.clone()));
                    day.rows.push(row);
                }
                Some(old) => {
                    let record = self.merged(&old.record, record);
                    self.revise(&mut day, old, record, customer);
                }
            }
        }
        for (_, old) in stored {
            self.vanished(&mut day, old);
        }
        day.rows.sort_by(|a, b| a.record.key.cmp(&b.record.key));
        day.changes
            .sort_by(|a, b| a.row.record.key.cmp(&b.row.record.key));
        day
    }

    fn customer(&mut self, user: &str) -> String {
        if let Some(customer) = self.users.customer(user) {
            return customer.to_owned();
        }
        if self.users.is_configured() && !self.unmapped.contains(user) {
            self.unmapped.insert(user.to_owned());
        }
        user.to_owned()
    }

    /// What a re-collected record leaves in the ledger.
    fn merged(&mut self, ledger: &UsageRecord, mut collected: UsageRecord) -> UsageRecord {
        if collected.workspace_id.is_none() {
            collected.workspace_id.clone_from(&ledger.workspace_id);
        }
        let (old, new) = (Totals::of(ledger), Totals::of(&collected));
        let lower = new.input_tokens < old.input_tokens
            || new.output_tokens < old.output_tokens
            || new.total_tokens < old.total_tokens
            || new.request_count < old.request_count
            || new.cost < old.cost;
        if lower {
            self.decreases.add(ledger, new);
            if self.policy == DecreasePolicy::Keep {
                let (totals, total_only) = keep_larger(ledger, &collected);
                totals.apply(&mut collected);
                collected.total_only = total_only;
            }
        }
        collected
    }

    /// A record the collection no longer shows.
    fn vanished(&mut self, day: &mut DayMerge, old: LedgerRow) {
        if old.totals() == Totals::default() {
            day.rows.push(old);
            return;
        }
        self.decreases.add(&old.record, Totals::default());
        match self.policy {
            DecreasePolicy::Keep => day.rows.push(old),
            DecreasePolicy::Follow => {
                let mut record = old.record.clone();
                Totals::default().apply(&mut record);
                let customer = old.customer.clone();
                self.revise(day, old, record, customer);
            }
        }
    }

    /// `old` becomes `record` for `customer`: a new revision when anything differs.
    fn revise(&self, day: &mut DayMerge, old: LedgerRow, record: UsageRecord, customer: String) {
        if record == old.record && customer == old.customer {
            day.rows.push(old);
            return;
        }
        let row = LedgerRow {
            record,
            customer,
            revision: old.revision + 1,
            exported_at: self.now,
        };
        day.changes.push(Change {
            row: row.clone(),
            previous: Some(Previous {
                totals: old.totals(),
                customer: old.customer.clone(),
            }),
        });
        day.rows.push(row);
    }
}

/// Each figure the larger of the two. Records of one kind (both with an input/output split, or
/// both totals only) take the larger input and the larger output; otherwise the record with more
/// tokens keeps its split, so that a total is never counted once as input and again as output.
fn keep_larger(ledger: &UsageRecord, collected: &UsageRecord) -> (Totals, bool) {
    let (input_tokens, output_tokens, total_only) = if ledger.total_only == collected.total_only {
        (
            ledger.input_tokens.max(collected.input_tokens),
            ledger.output_tokens.max(collected.output_tokens),
            ledger.total_only,
        )
    } else if ledger.total_tokens >= collected.total_tokens {
        (ledger.input_tokens, ledger.output_tokens, ledger.total_only)
    } else {
        (
            collected.input_tokens,
            collected.output_tokens,
            collected.total_only,
        )
    };
    let totals = Totals {
        input_tokens,
        output_tokens,
        total_tokens: input_tokens + output_tokens,
        request_count: ledger.request_count.max(collected.request_count),
        cost: ledger.cost.max(collected.cost),
    };
    (totals, total_only)
}

#[cfg(test)]
mod tests;
