//! One record in the wire format of WIRE-FORMAT.md, and its deterministic `source_event_id`.

use std::fmt::Write as _;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use super::UsageRecord;

/// Dify computes prices to 7 decimal places; sums of such prices need no more.
const COST_DECIMALS: u32 = 7;

/// A record as the metering API receives it.
#[derive(Debug, Serialize)]
pub struct WireRecord<'a> {
    pub usage_date: NaiveDate,
    pub provider: &'a str,
    pub model: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub request_count: u64,
    /// The exact decimal written as a JSON number, never through binary floating point.
    pub cost_actual: Box<RawValue>,
    pub currency: &'a str,
    pub metadata: WireMetadata<'a>,
}

#[derive(Debug, Serialize)]
pub struct WireMetadata<'a> {
    pub source_system: &'static str,
    pub source_event_id: String,
    pub source_app_id: &'a str,
    pub source_app_name: &'a str,
    pub user: &'a str,
    pub token_split: &'static str,
    /// Present when the source knows the workspace (the database source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_workspace_id: Option<&'a str>,
    pub aggregation_method: &'static str,
}

impl UsageRecord {
    /// `dify-<day>-<first 16 hex of SHA-256 of day|app_id|user|provider|model|currency>`: the same key
    /// always gets the same id, so a receiver that upserts on it stays right when a day is resent.
    #[must_use]
    pub fn source_event_id(&self) -> String {
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

    /// The record in the wire format.
    #[must_use]
    pub fn to_wire(&self) -> WireRecord<'_> {
        WireRecord {
            usage_date: self.key.day,
            provider: &self.key.provider,
            model: &self.key.model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            total_tokens: self.total_tokens,
            request_count: self.request_count,
            cost_actual: json_number(self.cost),
            currency: &self.key.currency,
            metadata: WireMetadata {
                source_system: "dify",
                source_event_id: self.source_event_id(),
                source_app_id: &self.key.app_id,
                source_app_name: &self.app_name,
                user: &self.key.user,
                token_split: if self.total_only {
                    "total_only"
                } else {
                    "exact"
                },
                source_workspace_id: self.workspace_id.as_deref(),
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
    use crate::export::aggregate::RecordKey;

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
        let json = serde_json::to_string(&record("0.0006280").to_wire()).unwrap();
        let id = record("0").source_event_id();
        assert_eq!(
            json,
            format!(
                r#"{{"usage_date":"2026-11-27","provider":"openai","model":"gpt-4o","input_tokens":190,"output_tokens":31,"total_tokens":221,"request_count":3,"cost_actual":0.000628,"currency":"USD","metadata":{{"source_system":"dify","source_event_id":"{id}","source_app_id":"a1","source_app_name":"Support bot","user":"u","token_split":"exact","aggregation_method":"daily_sum"}}}}"#
            )
        );
    }

    #[test]
    fn the_event_id_is_deterministic_and_keyed() {
        let id = record("1").source_event_id();
        assert_eq!(
            id,
            record("2").source_event_id(),
            "the cost is not part of the key"
        );
        assert!(
            id.starts_with("dify-2026-11-27-") && id.len() == "dify-2026-11-27-".len() + 16,
            "{id}"
        );
        let mut other = record("1");
        other.key.user = "v".into();
        assert_ne!(id, other.source_event_id());
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
