//! Usage observations summed into records, and the key that identifies a record.
//!
//! Every source yields [`Usage`] observations; the [`Aggregator`] sums them per (UTC day, app,
//! user, provider, model, currency) with exact decimals. Memory grows with the number of distinct records (day × app × user × model), never with the
//! number of runs or nodes: each observation is folded into its record and dropped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sha2::{Digest as _, Sha256};

/// One observation: a node's model call, or a chat app's day from the statistics endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub(crate) day: NaiveDate,
    pub(crate) app_id: Arc<str>,
    pub(crate) app_name: Arc<str>,
    pub(crate) user: String,
    /// As Dify names it (`langgenius/openai/openai`); normalised here.
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) currency: String,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) cost: Decimal,
    pub(crate) requests: u64,
    /// Only a total is known (no input/output split).
    pub(crate) total_only: bool,
}

/// What identifies a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RecordKey {
    pub(crate) day: NaiveDate,
    pub(crate) app_id: Arc<str>,
    pub(crate) user: String,
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) currency: String,
}

/// One aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsageRecord {
    pub(crate) key: RecordKey,
    pub(crate) app_name: Arc<str>,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) request_count: u64,
    pub(crate) cost: Decimal,
    pub(crate) total_only: bool,
    /// The Dify workspace (tenant) of the app, when the source knows it (the database source).
    pub(crate) workspace_id: Option<Arc<str>>,
}

impl UsageRecord {
    /// How the tokens are known, as every sink writes it: `exact` (an input/output split) or
    /// `total_only`.
    #[must_use]
    pub(crate) fn token_split(&self) -> &'static str {
        if self.total_only {
            "total_only"
        } else {
            "exact"
        }
    }

    /// `dify-<day>-<first 16 hex of SHA-256 of day|app_id|user|provider|model|currency>`: the same key
    /// always gets the same id, so a receiver that upserts on it stays right when a day is resent.
    pub(crate) fn source_event_id(&self) -> String {
        let k = &self.key;
        let digest = Sha256::digest(format!(
            "{}|{}|{}|{}|{}|{}",
            k.day, k.app_id, k.user, k.provider, k.model, k.currency
        ));
        let mut hex = String::with_capacity(16);
        for byte in &digest[..8] {
            let _ = write!(hex, "{byte:02x}");
        }
        format!("dify-{}-{hex}", k.day)
    }
}

/// Records by key, summed as usage arrives.
#[derive(Debug, Default)]
pub(crate) struct Aggregator {
    records: HashMap<RecordKey, Totals>,
    /// Workspace of each app, for sources that know it.
    workspaces: HashMap<Arc<str>, Arc<str>>,
}

/// The sums of one record while it is being aggregated.
#[derive(Debug)]
struct Totals {
    app_name: Arc<str>,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    request_count: u64,
    cost: Decimal,
    total_only: bool,
}

/// A sum that no longer fits its type: 2^64 tokens or requests, or a cost beyond what an exact
/// decimal holds. Wrapping would turn it into a small, wrong number; the run stops instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {field} of {day}, app {app_id}, user {user}, model {model} overflow when summed; \
     Dify holds an impossible value there"
)]
pub(crate) struct SumOverflow {
    pub(crate) field: &'static str,
    day: NaiveDate,
    app_id: Arc<str>,
    user: String,
    model: String,
}

/// `a + b`, or the name of the field that overflowed.
pub(crate) fn sum(a: u64, b: u64, field: &'static str) -> Result<u64, &'static str> {
    a.checked_add(b).ok_or(field)
}

impl Aggregator {
    /// Folds one observation into its record; every sum is checked.
    pub(crate) fn add(&mut self, usage: Usage) -> Result<(), SumOverflow> {
        let key = RecordKey {
            day: usage.day,
            app_id: usage.app_id,
            user: usage.user,
            provider: normalize_provider(&usage.provider),
            model: if usage.model.is_empty() {
                "unknown".to_owned()
            } else {
                usage.model
            },
            currency: iso_currency(usage.currency),
        };
        self.fold(
            key,
            Totals {
                app_name: usage.app_name,
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                total_tokens: usage.total_tokens,
                request_count: usage.requests,
                cost: usage.cost,
                total_only: usage.total_only,
            },
        )
    }

    fn fold(&mut self, key: RecordKey, totals: Totals) -> Result<(), SumOverflow> {
        let mut entry = match self.records.entry(key) {
            Entry::Vacant(entry) => {
                entry.insert(totals);
                return Ok(());
            }
            Entry::Occupied(entry) => entry,
        };
        let record = entry.get_mut();
        // Summed into copies first, so that a failed sum leaves the record as it was.
        let summed = (|| {
            Ok((
                sum(record.input_tokens, totals.input_tokens, "input tokens")?,
                sum(record.output_tokens, totals.output_tokens, "output tokens")?,
                sum(record.total_tokens, totals.total_tokens, "total tokens")?,
                sum(record.request_count, totals.request_count, "requests")?,
                record.cost.checked_add(totals.cost).ok_or("cost")?,
            ))
        })();
        let key = entry.key();
        let overflow = |field| SumOverflow {
            field,
            day: key.day,
            app_id: key.app_id.clone(),
            user: key.user.clone(),
            model: key.model.clone(),
        };
        let summed = summed.map_err(overflow)?;
        let record = entry.get_mut();
        (
            record.input_tokens,
            record.output_tokens,
            record.total_tokens,
            record.request_count,
            record.cost,
        ) = summed;
        record.total_only |= totals.total_only;
        Ok(())
    }

    /// Folds in every record of `other` (summed where both hold the same key), as if its
    /// observations had been added here: sums of exact integers and decimals do not depend on the order.
    pub(crate) fn absorb(&mut self, other: Aggregator) -> Result<(), SumOverflow> {
        for (key, totals) in other.records {
            self.fold(key, totals)?;
        }
        self.workspaces.extend(other.workspaces);
        Ok(())
    }

    /// Records of `app_id` will carry `workspace_id` (`metadata.source_workspace_id`).
    pub(crate) fn set_workspace(&mut self, app_id: Arc<str>, workspace_id: Arc<str>) {
        self.workspaces.insert(app_id, workspace_id);
    }

    /// The records, sorted by key (day first).
    #[must_use]
    pub(crate) fn into_records(self) -> Vec<UsageRecord> {
        let workspaces = self.workspaces;
        let mut records: Vec<UsageRecord> = self
            .records
            .into_iter()
            .map(|(key, t)| UsageRecord {
                workspace_id: workspaces.get(&key.app_id).cloned(),
                key,
                app_name: t.app_name,
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                total_tokens: t.total_tokens,
                request_count: t.request_count,
                cost: t.cost,
                total_only: t.total_only,
            })
            .collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        records
    }
}

/// The ISO 4217 code of a currency as Dify writes it: upper case, Dify's `RMB` as `CNY`, none as
/// `USD` (Dify's default price currency). Amounts are never converted.
fn iso_currency(mut currency: String) -> String {
    currency.make_ascii_uppercase();
    match currency.as_str() {
        "" => "USD".to_owned(),
        "RMB" => "CNY".to_owned(),
        _ => currency,
    }
}

/// `langgenius/openai/openai` → `openai`; empty → `unknown`.
#[must_use]
pub(crate) fn normalize_provider(provider: &str) -> String {
    match provider.trim().rsplit('/').next() {
        Some(last) if !last.is_empty() => last.to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(provider: &str, input: u64, output: u64, cost: &str) -> Usage {
        Usage {
            day: "2026-11-27".parse().unwrap(),
            app_id: "app".into(),
            app_name: "App".into(),
            user: "u".into(),
            provider: provider.into(),
            model: "gpt-4o".into(),
            currency: "USD".into(),
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            cost: cost.parse().unwrap(),
            requests: 1,
            total_only: false,
        }
    }

    #[test]
    fn observations_of_one_key_are_summed_exactly() {
        let mut aggregator = Aggregator::default();
        aggregator
            .add(usage("langgenius/openai/openai", 100, 20, "0.0000001"))
            .unwrap();
        aggregator
            .add(usage("openai", 90, 11, "0.0006279"))
            .unwrap();
        let records = aggregator.into_records();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.key.provider, "openai");
        assert_eq!(
            (
                record.input_tokens,
                record.output_tokens,
                record.total_tokens
            ),
            (190, 31, 221)
        );
        assert_eq!(record.cost.to_string(), "0.0006280");
        assert_eq!(record.request_count, 2);
    }

    #[test]
    fn currencies_leave_as_iso_codes() {
        for (dify, iso) in [
            ("RMB", "CNY"),
            ("rmb", "CNY"),
            ("usd", "USD"),
            ("", "USD"),
            ("EUR", "EUR"),
        ] {
            assert_eq!(iso_currency(dify.to_owned()), iso);
        }
    }

    #[test]
    fn providers_are_normalised() {
        assert_eq!(normalize_provider("langgenius/openai/openai"), "openai");
        assert_eq!(normalize_provider("anthropic"), "anthropic");
        assert_eq!(normalize_provider(""), "unknown");
    }

    fn record(cost: &str, tokens: u64) -> UsageRecord {
        let mut aggregator = Aggregator::default();
        aggregator
            .add(Usage {
                cost: cost.parse().unwrap(),
                ..usage("openai", tokens, 0, "0")
            })
            .unwrap();
        aggregator.into_records().remove(0)
    }

    #[test]
    fn a_sum_that_overflows_is_an_error_naming_the_field() {
        let mut aggregator = Aggregator::default();
        aggregator
            .add(usage("openai", u64::MAX - 1, 0, "1"))
            .unwrap();
        let err = aggregator.add(usage("openai", 2, 0, "1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the input tokens of 2026-11-27, app app, user u, model gpt-4o overflow when summed; \
             Dify holds an impossible value there"
        );
        let mut aggregator = Aggregator::default();
        aggregator.add(usage("openai", 1, 0, "0")).unwrap();
        let huge = Usage {
            cost: Decimal::MAX,
            ..usage("openai", 1, 0, "0")
        };
        aggregator.add(huge.clone()).unwrap();
        assert_eq!(aggregator.add(huge).unwrap_err().field, "cost");
        let records = aggregator.into_records();
        assert_eq!(
            (records[0].input_tokens, records[0].cost),
            (2, Decimal::MAX),
            "a failed sum leaves the record as it was"
        );
    }

    #[test]
    fn the_event_id_is_deterministic_and_keyed() {
        let id = record("1", 0).source_event_id();
        assert_eq!(
            id,
            record("2", 0).source_event_id(),
            "the cost is not part of the key"
        );
        assert!(
            id.starts_with("dify-2026-11-27-") && id.len() == "dify-2026-11-27-".len() + 16,
            "{id}"
        );
        let mut other = record("1", 0);
        other.key.user = "v".into();
        assert_ne!(id, other.source_event_id());
    }
}
