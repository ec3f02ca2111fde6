//! The request rules of docs/wire-format.md as a validator: headers, the body's envelope, every record and the
//! Idempotency-Key, each violation returned as a reason naming the field (and the record index) at fault.
//!
//! Every JSON field is first taken as raw text (`RawValue`) and only then parsed into its type, for three
//! reasons: a reason can always name the exact field; `cost_actual` is judged and parsed from the number's
//! text as sent (never through `f64`, which would hide an 8th decimal or a rounding error); and the
//! Idempotency-Key is checked against the SHA-256 of the `records` bytes exactly as they appear in the body.
//! Unknown and duplicate fields are rejected (`deny_unknown_fields`) so a typo in the exporter cannot pass.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::store::HeldRecord;
use crate::TokenSplit;

/// Most decimal places of `cost_actual`, as Dify computes prices.
const MAX_COST_DECIMALS: i64 = 7;

/// What a body is checked against besides the fixed rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    /// The Idempotency-Key header as sent.
    pub(crate) key: &'a str,
    pub(crate) tenant_id: Option<&'a str>,
    pub(crate) max_batch: usize,
}

/// Result of checking one body.
#[derive(Debug)]
pub(crate) struct Checked {
    /// Length of the body's `records` array when it was one; logged for rejected batches too.
    pub(crate) record_count: Option<usize>,
    /// The records to upsert, or the reason for a 422.
    pub(crate) outcome: Result<Vec<HeldRecord>, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBody {
    #[serde(default)]
    tenant_id: Option<Box<RawValue>>,
    export_metadata: Box<RawValue>,
    records: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireExportMetadata {
    exporter_version: Box<RawValue>,
    export_timestamp: Box<RawValue>,
    run_id: Box<RawValue>,
    aggregation_period: Box<RawValue>,
    source_system: Box<RawValue>,
    date_range: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDateRange {
    start: Box<RawValue>,
    end: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord {
    usage_date: Box<RawValue>,
    provider: Box<RawValue>,
    model: Box<RawValue>,
    input_tokens: Box<RawValue>,
    output_tokens: Box<RawValue>,
    total_tokens: Box<RawValue>,
    request_count: Box<RawValue>,
    cost_actual: Box<RawValue>,
    currency: Box<RawValue>,
    metadata: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecordMetadata {
    source_system: Box<RawValue>,
    source_event_id: Box<RawValue>,
    source_app_id: Box<RawValue>,
    source_app_name: Box<RawValue>,
    user: Box<RawValue>,
    /// The identity map's customer of `user` (the user itself when unmapped).
    customer: Box<RawValue>,
    token_split: Box<RawValue>,
    /// Optional: sent by sources that know the workspace (the database source).
    #[serde(default)]
    source_workspace_id: Option<Box<RawValue>>,
    aggregation_method: Box<RawValue>,
}

fn header(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `Authorization` is exactly `Bearer <token>`.
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    header(headers, AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")) == Some(token)
}

/// Checks Content-Type, User-Agent and the form of the Idempotency-Key; returns the key.
pub(crate) fn check_headers(headers: &HeaderMap) -> Result<&str, String> {
    let content_type = header(headers, CONTENT_TYPE).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(format!(
            "Content-Type: expected application/json, got {content_type:?}"
        ));
    }
    let agent = header(headers, USER_AGENT).unwrap_or_default();
    if !agent.starts_with("dify-usage-exporter/") {
        return Err(format!(
            "User-Agent: expected dify-usage-exporter/<version>, got {agent:?}"
        ));
    }
    let Some(key) = header(headers, "idempotency-key") else {
        return Err("Idempotency-Key: missing".to_owned());
    };
    if !is_lower_hex(key, 64) {
        return Err(format!(
            "Idempotency-Key: expected 64 lowercase hex characters (SHA-256 of the records), got {:?}",
            excerpt(key)
        ));
    }
    Ok(key)
}

/// Checks a whole body; nothing in it is accepted unless all of it is valid.
pub(crate) fn check_body(body: &[u8], expect: &Expect<'_>) -> Checked {
    let mut record_count = None;
    let outcome = check(body, expect, &mut record_count);
    Checked {
        record_count,
        outcome,
    }
}

fn check(
    body: &[u8],
    expect: &Expect<'_>,
    record_count: &mut Option<usize>,
) -> Result<Vec<HeldRecord>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body: not UTF-8: {e}"))?;
    let body: WireBody = serde_json::from_str(text).map_err(|e| format!("body: {e}"))?;
    let records: Vec<Box<RawValue>> = serde_json::from_str(body.records.get()).map_err(|_| {
        format!(
            "records: expected an array of records, got {}",
            excerpt(body.records.get())
        )
    })?;
    *record_count = Some(records.len());
    let hash = sha256_hex(body.records.get());
    if hash != expect.key {
        return Err(format!(
            "Idempotency-Key: {} is not the SHA-256 of the records as sent ({hash})",
            expect.key
        ));
    }
    if records.is_empty() {
        return Err("records: empty batch".to_owned());
    }
    if records.len() > expect.max_batch {
        return Err(format!(
            "records: {} records, at most {} accepted per batch",
            records.len(),
            expect.max_batch
        ));
    }
    let held = records
        .iter()
        .enumerate()
        .map(|(i, raw)| check_record(i, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = HashMap::new();
    for (i, record) in held.iter().enumerate() {
        if let Some(first) = seen.insert(record.source_event_id.as_str(), i) {
            return Err(format!(
                "records[{i}].metadata.source_event_id: {} repeats records[{first}]",
                record.source_event_id
            ));
        }
    }
    check_export_metadata(&body.export_metadata, &held)?;
    check_tenant(body.tenant_id.as_deref(), expect.tenant_id)?;
    Ok(held)
}

fn check_tenant(sent: Option<&RawValue>, expected: Option<&str>) -> Result<(), String> {
    let sent = sent
        .map(|raw| typed::<String>(raw, "tenant_id", "a string"))
        .transpose()?;
    match (expected, sent) {
        (Some(want), Some(got)) if got != want => Err(format!(
            "tenant_id: {got:?} is not this receiver's tenant {want:?}"
        )),
        (Some(want), None) => Err(format!(
            "tenant_id: missing; this receiver expects {want:?}"
        )),
        _ => Ok(()),
    }
}

fn check_export_metadata(raw: &RawValue, records: &[HeldRecord]) -> Result<(), String> {
    let m: WireExportMetadata =
        serde_json::from_str(raw.get()).map_err(|e| format!("export_metadata: {e}"))?;
    non_empty(&m.exporter_version, "export_metadata.exporter_version")?;
    let timestamp: String = typed(
        &m.export_timestamp,
        "export_metadata.export_timestamp",
        "a string",
    )?;
    match DateTime::parse_from_rfc3339(&timestamp) {
        Ok(t) if t.offset().local_minus_utc() == 0 => {}
        _ => {
            return Err(format!(
                "export_metadata.export_timestamp: {timestamp:?} is not an RFC 3339 UTC timestamp"
            ));
        }
    }
    let run_id: String = typed(&m.run_id, "export_metadata.run_id", "a string")?;
    // `Uuid::try_parse` also takes the simple, braced and urn forms; the exporter writes the hyphenated one.
    if run_id.len() != 36 || Uuid::try_parse(&run_id).is_err() {
        return Err(format!(
            "export_metadata.run_id: {run_id:?} is not a hyphenated UUID"
        ));
    }
    literal(
        &m.aggregation_period,
        "export_metadata.aggregation_period",
        "daily",
    )?;
    literal(&m.source_system, "export_metadata.source_system", "dify")?;
    let range: WireDateRange = serde_json::from_str(m.date_range.get())
        .map_err(|e| format!("export_metadata.date_range: {e}"))?;
    let start: String = typed(&range.start, "export_metadata.date_range.start", "a string")?;
    let end: String = typed(&range.end, "export_metadata.date_range.end", "a string")?;
    // Callers pass a non-empty batch; an empty one has no range to check.
    let (Some(first), Some(last)) = (
        records.iter().map(|r| r.usage_date).min(),
        records.iter().map(|r| r.usage_date).max(),
    ) else {
        return Ok(());
    };
    let want_start = midnight(first);
    if start != want_start {
        return Err(format!(
            "export_metadata.date_range.start: {start:?}, expected {want_start:?} (first record day)"
        ));
    }
    let Some(after_last) = last.succ_opt() else {
        return Err(format!(
            "export_metadata.date_range.end: no day after {last}"
        ));
    };
    let want_end = midnight(after_last);
    if end != want_end {
        return Err(format!(
            "export_metadata.date_range.end: {end:?}, expected {want_end:?} (day after the last record day)"
        ));
    }
    Ok(())
}

fn midnight(day: NaiveDate) -> String {
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

fn check_record(i: usize, raw: &RawValue) -> Result<HeldRecord, String> {
    let at = |field: &str| format!("records[{i}].{field}");
    let r: WireRecord =
        serde_json::from_str(raw.get()).map_err(|e| format!("records[{i}]: {e}"))?;
    let day_text: String = typed(&r.usage_date, &at("usage_date"), "a string")?;
    let usage_date = parse_day(&day_text).ok_or_else(|| {
        format!(
            "{}: {day_text:?} is not a YYYY-MM-DD date",
            at("usage_date")
        )
    })?;
    let provider = non_empty(&r.provider, &at("provider"))?;
    let model = non_empty(&r.model, &at("model"))?;
    let input_tokens = count(&r.input_tokens, &at("input_tokens"))?;
    let output_tokens = count(&r.output_tokens, &at("output_tokens"))?;
    let total_tokens = count(&r.total_tokens, &at("total_tokens"))?;
    if input_tokens.checked_add(output_tokens) != Some(total_tokens) {
        return Err(format!(
            "{}: {total_tokens} is not input_tokens + output_tokens ({input_tokens} + {output_tokens})",
            at("total_tokens")
        ));
    }
    let request_count = count(&r.request_count, &at("request_count"))?;
    let cost = parse_cost(&r.cost_actual, &at("cost_actual"))?;
    let currency: String = typed(&r.currency, &at("currency"), "a string")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{}: {currency:?} is not 3 uppercase letters",
            at("currency")
        ));
    }

    let m: WireRecordMetadata = serde_json::from_str(r.metadata.get())
        .map_err(|e| format!("records[{i}].metadata: {e}"))?;
    literal(&m.source_system, &at("metadata.source_system"), "dify")?;
    let source_event_id: String = typed(
        &m.source_event_id,
        &at("metadata.source_event_id"),
        "a string",
    )?;
    if !is_event_id(&source_event_id, &day_text) {
        return Err(format!(
            "{}: {source_event_id:?} is not dify-{day_text}-<16 lowercase hex>",
            at("metadata.source_event_id")
        ));
    }
    let app_id = non_empty(&m.source_app_id, &at("metadata.source_app_id"))?;
    let app_name: String = typed(
        &m.source_app_name,
        &at("metadata.source_app_name"),
        "a string",
    )?;
    let user: String = typed(&m.user, &at("metadata.user"), "a string")?;
    let customer: String = typed(&m.customer, &at("metadata.customer"), "a string")?;
    let split: String = typed(&m.token_split, &at("metadata.token_split"), "a string")?;
    let token_split = match split.as_str() {
        "exact" => TokenSplit::Exact,
        "total_only" => TokenSplit::TotalOnly,
        other => {
            return Err(format!(
                "{}: {other:?}, expected \"exact\" or \"total_only\"",
                at("metadata.token_split")
            ));
        }
    };
    if let Some(workspace) = &m.source_workspace_id {
        non_empty(workspace, &at("metadata.source_workspace_id"))?;
    }
    // No rule ties `total_only` to `output_tokens == 0`: a record that sums an exact node and a
    // truncated one (docs/run.md#aggregation) keeps the exact node's output tokens and is total_only,
    // because its split is no longer exact.
    literal(
        &m.aggregation_method,
        &at("metadata.aggregation_method"),
        "daily_sum",
    )?;
    Ok(HeldRecord {
        usage_date,
        app_id,
        app_name,
        user,
        customer,
        provider,
        model,
        currency,
        input_tokens,
        output_tokens,
        total_tokens,
        request_count,
        cost,
        token_split,
        source_event_id,
    })
}

/// `cost_actual` from the number's text: a JSON number (not a string), >= 0, at most 7 decimal places as
/// written (an exponent counts: `1e-8` has 8).
fn parse_cost(raw: &RawValue, path: &str) -> Result<Decimal, String> {
    let text = raw.get();
    if text.starts_with('"') {
        return Err(format!(
            "{path}: must be a JSON number, not a string ({})",
            excerpt(text)
        ));
    }
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(format!(
            "{path}: expected a JSON number, got {}",
            excerpt(text)
        ));
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent = text[at + 1..]
                .parse::<i64>()
                .map_err(|_| format!("{path}: exponent of {text} is out of range"))?;
            (&text[..at], exponent)
        }
        None => (text, 0),
    };
    let fraction_digits = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let places = i64::try_from(fraction_digits)
        .unwrap_or(i64::MAX)
        .saturating_sub(exponent);
    if places > MAX_COST_DECIMALS {
        return Err(format!(
            "{path}: {text} has {places} decimal places, at most {MAX_COST_DECIMALS} allowed"
        ));
    }
    let parsed = if mantissa.len() == text.len() {
        Decimal::from_str_exact(text)
    } else {
        Decimal::from_scientific(text)
    };
    let cost = parsed.map_err(|e| format!("{path}: {text} cannot be held exactly: {e}"))?;
    if cost < Decimal::ZERO {
        return Err(format!("{path}: {text} is negative"));
    }
    Ok(cost)
}

fn parse_day(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

/// `dify-<day>-<16 lowercase hex>` for the record's own day.
fn is_event_id(id: &str, day: &str) -> bool {
    id.strip_prefix("dify-")
        .and_then(|rest| rest.strip_prefix(day))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| is_lower_hex(hex, 16))
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// A field parsed into `T`, or a reason naming it and what it should have been.
fn typed<T: DeserializeOwned>(raw: &RawValue, path: &str, expected: &str) -> Result<T, String> {
    serde_json::from_str(raw.get())
        .map_err(|_| format!("{path}: expected {expected}, got {}", excerpt(raw.get())))
}

fn count(raw: &RawValue, path: &str) -> Result<u64, String> {
    typed(raw, path, "a non-negative integer")
}

fn non_empty(raw: &RawValue, path: &str) -> Result<String, String> {
    let value: String = typed(raw, path, "a non-empty string")?;
    if value.is_empty() {
        return Err(format!("{path}: must not be empty"));
    }
    Ok(value)
}

fn literal(raw: &RawValue, path: &str, want: &str) -> Result<(), String> {
    let value: String = typed(raw, path, &format!("{want:?}"))?;
    if value == want {
        Ok(())
    } else {
        Err(format!("{path}: {value:?}, expected {want:?}"))
    }
}

/// At most 60 characters of a value for a reason, cut on a character boundary.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(text: &str) -> Result<Decimal, String> {
        let raw = RawValue::from_string(text.to_owned()).expect("valid JSON");
        parse_cost(&raw, "c")
    }

    #[test]
    fn costs_are_parsed_from_their_text() {
        assert_eq!(
            cost("0.0000001").map(|d| d.to_string()),
            Ok("0.0000001".to_owned())
        );
        assert_eq!(
            cost("12.3456789").map(|d| d.to_string()),
            Ok("12.3456789".to_owned())
        );
        assert_eq!(cost("0").map(|d| d.to_string()), Ok("0".to_owned()));
        assert_eq!(
            cost("1e-7").map(|d| d.to_string()),
            Ok("0.0000001".to_owned())
        );
        assert!(cost("0.00000001").is_err_and(|e| e.contains("8 decimal places")));
        assert!(cost("1e-8").is_err());
        assert!(cost("\"1.5\"").is_err_and(|e| e.contains("not a string")));
        assert!(cost("-0.5").is_err_and(|e| e.contains("negative")));
        assert!(cost("null").is_err());
    }

    #[test]
    fn days_and_event_ids_have_one_form() {
        assert_eq!(
            parse_day("2026-11-27"),
            NaiveDate::from_ymd_opt(2026, 11, 27)
        );
        assert_eq!(parse_day("2026-1-27"), None);
        assert_eq!(parse_day("2026-02-30"), None);
        assert!(is_event_id(
            "dify-2026-11-27-0123456789abcdef",
            "2026-11-27"
        ));
        assert!(!is_event_id(
            "dify-2026-11-27-0123456789ABCDEF",
            "2026-11-27"
        ));
        assert!(!is_event_id(
            "dify-2026-11-28-0123456789abcdef",
            "2026-11-27"
        ));
        assert!(!is_event_id(
            "dify-2026-11-27-0123456789abcde",
            "2026-11-27"
        ));
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        assert_eq!(excerpt("short"), "short");
        assert_eq!(excerpt(&"é".repeat(70)).chars().count(), 61);
    }
}
