//! One record in the wire format of `docs/wire-format.md`.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::usage::UsageRecord;

/// Dify computes prices to 7 decimal places; sums of such prices need no more.
const COST_DECIMALS: u32 = 7;

/// A record as the metering API receives it.
#[derive(Debug, Serialize)]
pub(crate) struct WireRecord<'a> {
    pub(crate) usage_date: NaiveDate,
    pub(crate) provider: &'a str,
    pub(crate) model: &'a str,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) request_count: u64,
    /// The exact decimal written as a JSON number, never through binary floating point.
    pub(crate) cost_actual: Box<RawValue>,
    pub(crate) currency: &'a str,
    pub(crate) metadata: WireMetadata<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WireMetadata<'a> {
    pub(crate) source_system: &'static str,
    pub(crate) source_event_id: String,
    pub(crate) source_app_id: &'a str,
    pub(crate) source_app_name: &'a str,
    pub(crate) user: &'a str,
    /// The identity map's customer for `user` (the user itself when unmapped).
    pub(crate) customer: &'a str,
    pub(crate) token_split: &'static str,
    /// Present when the source knows the workspace (the database source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_workspace_id: Option<&'a str>,
    pub(crate) aggregation_method: &'static str,
}

impl<'a> WireRecord<'a> {
    /// `record` of `customer` in the wire format.
    #[must_use]
    pub(crate) fn new(record: &'a UsageRecord, customer: &'a str) -> Self {
        WireRecord {
            usage_date: record.key.day,
            provider: &record.key.provider,
            model: &record.key.model,
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            total_tokens: record.total_tokens,
            request_count: record.request_count,
            cost_actual: json_number(record.cost),
            currency: &record.key.currency,
            metadata: WireMetadata {
                source_system: "dify",
                source_event_id: record.source_event_id(),
                source_app_id: &record.key.app_id,
                source_app_name: &record.app_name,
                user: &record.key.user,
                customer,
                token_split: record.token_split(),
                source_workspace_id: record.workspace_id.as_deref(),
                aggregation_method: "daily_sum",
            },
        }
    }
}

/// A decimal as JSON number text: at most 7 decimals, no trailing zeros (`0.0012890` → `0.001289`).
fn json_number(value: Decimal) -> Box<RawValue> {
    let text = value.round_dp(COST_DECIMALS).normalize().to_string();
    // A Decimal always prints as a plain decimal number, which is valid JSON.
    RawValue::from_string(text)
        .unwrap_or_else(|_| RawValue::from_string("0".to_owned()).expect("0 is JSON"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::usage::RecordKey;

    fn record(cost: &str) -> UsageRecord {
        UsageRecord {
            key: RecordKey {
                day: "2026-11-27".parse().unwrap(),
                app_id: Arc::from("a1"),
                user: "u".into(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                currency: "USD".into(),
            },
            app_name: Arc::from("Support bot"),
            input_tokens: 190,
            output_tokens: 31,
            total_tokens: 221,
            request_count: 3,
            cost: cost.parse().unwrap(),
            total_only: false,
            workspace_id: None,
        }
    }

    #[test]
    fn the_wire_record_matches_the_format() {
        let json =
            serde_json::to_string(&WireRecord::new(&record("0.0006280"), "Finance")).unwrap();
        let id = record("0").source_event_id();
        assert_eq!(
            json,
            format!(
                r#"{{"usage_date":"2026-11-27","provider":"openai","model":"gpt-4o","input_tokens":190,"output_tokens":31,"total_tokens":221,"request_count":3,"cost_actual":0.000628,"currency":"USD","metadata":{{"source_system":"dify","source_event_id":"{id}","source_app_id":"a1","source_app_name":"Support bot","user":"u","customer":"Finance","token_split":"exact","aggregation_method":"daily_sum"}}}}"#
            )
        );
    }

    #[test]
    fn costs_are_exact_numbers() {
        assert_eq!(json_number("0E-7".parse().unwrap_or_default()).get(), "0");
        assert_eq!(
            json_number(Decimal::from_scientific("0E-7").unwrap()).get(),
            "0"
        );
        assert_eq!(
            json_number("12.3456789".parse().unwrap()).get(),
            "12.3456789"
        );
        assert_eq!(json_number("0.00000001".parse().unwrap()).get(), "0");
    }
}
