//! Summing usage as it streams in.
//!
//! Memory grows with the number of distinct records (day × app × user × model), never with the
//! number of runs or nodes: each observation is folded into its record and dropped.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// One observation: a node's model call, or a chat app's day from the statistics endpoints.
#[derive(Debug, Clone)]
pub struct Usage {
    pub day: NaiveDate,
    pub app_id: Arc<str>,
    pub app_name: Arc<str>,
    pub user: String,
    /// As Dify names it (`langgenius/openai/openai`); normalised here.
    pub provider: String,
    pub model: String,
    pub currency: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub cost: Decimal,
    pub requests: u64,
    /// Only a total is known (no input/output split).
    pub total_only: bool,
}

/// What identifies a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub day: NaiveDate,
    pub app_id: Arc<str>,
    pub user: String,
    pub provider: String,
    pub model: String,
    pub currency: String,
}

/// One aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub key: RecordKey,
    pub app_name: Arc<str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub request_count: u64,
    pub cost: Decimal,
    pub total_only: bool,
    /// The Dify workspace (tenant) of the app, when the source knows it (the database source).
    pub workspace_id: Option<Arc<str>>,
}

/// Records by key, summed as usage arrives.
#[derive(Debug, Default)]
pub struct Aggregator {
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

impl Aggregator {
    /// Folds one observation into its record.
    pub fn add(&mut self, usage: Usage) {
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
            currency: if usage.currency.is_empty() {
                "USD".to_owned()
            } else {
                usage.currency
            },
        };
        let record = self.records.entry(key).or_insert_with(|| Totals {
            app_name: usage.app_name,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            request_count: 0,
            cost: Decimal::ZERO,
            total_only: false,
        });
        record.input_tokens += usage.input_tokens;
        record.output_tokens += usage.output_tokens;
        record.total_tokens += usage.total_tokens;
        record.request_count += usage.requests;
        record.cost += usage.cost;
        record.total_only |= usage.total_only;
    }

    /// Records of `app_id` will carry `workspace_id` (`metadata.source_workspace_id`).
    pub fn set_workspace(&mut self, app_id: Arc<str>, workspace_id: Arc<str>) {
        self.workspaces.insert(app_id, workspace_id);
    }

    /// Distinct records so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, sorted by key (day first).
    #[must_use]
    pub fn into_records(self) -> Vec<UsageRecord> {
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

/// `langgenius/openai/openai` → `openai`; empty → `unknown`.
#[must_use]
pub fn normalize_provider(provider: &str) -> String {
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
        aggregator.add(usage("langgenius/openai/openai", 100, 20, "0.0000001"));
        aggregator.add(usage("openai", 90, 11, "0.0006279"));
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
    fn providers_are_normalised() {
        assert_eq!(normalize_provider("langgenius/openai/openai"), "openai");
        assert_eq!(normalize_provider("anthropic"), "anthropic");
        assert_eq!(normalize_provider(""), "unknown");
    }
}
