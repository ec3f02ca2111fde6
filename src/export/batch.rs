//! Splitting a day's records into batches, and the body of the POST that carries one.
//!
//! A batch never spans days and holds at most `BATCH_SIZE` records. Its records are serialized once,
//! when it is queued; those exact bytes are stored, hashed into the `Idempotency-Key` and sent, so
//! the same records always give the same key and any changed total gives a new one.

use chrono::{Days, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use super::UsageRecord;
use crate::state::{Batch, NewBatch};

/// Splits records (sorted by day, as [`super::Aggregator::into_records`] returns them) into
/// batches, serializing each only when it is asked for.
pub fn batches(records: &[UsageRecord], batch_size: usize) -> impl Iterator<Item = NewBatch> + '_ {
    records
        .chunk_by(|a, b| a.key.day == b.key.day)
        .flat_map(move |day| day.chunks(batch_size.max(1)))
        .map(|chunk| {
            let wire: Vec<_> = chunk.iter().map(UsageRecord::to_wire).collect();
            // Serializing plain structs and strings cannot fail.
            let records = serde_json::to_string(&wire).unwrap_or_default();
            NewBatch {
                first_day: chunk[0].key.day,
                last_day: chunk[chunk.len() - 1].key.day,
                record_count: chunk.len(),
                total_tokens: chunk.iter().map(|r| r.total_tokens).sum(),
                idempotency_key: idempotency_key(&records),
                records,
            }
        })
}

/// Lowercase hex SHA-256 of the records array as sent.
#[must_use]
pub fn idempotency_key(records: &str) -> String {
    Sha256::digest(records.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    export_metadata: ExportMetadata<'a>,
    records: &'a RawValue,
}

#[derive(Serialize)]
struct ExportMetadata<'a> {
    exporter_version: &'static str,
    export_timestamp: String,
    run_id: &'a str,
    aggregation_period: &'static str,
    source_system: &'static str,
    date_range: DateRange,
}

#[derive(Serialize)]
struct DateRange {
    start: String,
    end: String,
}

/// The JSON body of the POST for `batch`, whose records array is `records` (WIRE-FORMAT.md).
pub fn body(batch: &Batch, records: &str, tenant_id: Option<&str>) -> anyhow::Result<String> {
    let records: &RawValue = serde_json::from_str(records).map_err(|e| {
        anyhow::anyhow!(
            "batch {} in the outbox holds records that are not JSON: {e}",
            batch.id
        )
    })?;
    let midnight = |day: NaiveDate| format!("{day}T00:00:00Z");
    let body = Body {
        tenant_id,
        export_metadata: ExportMetadata {
            exporter_version: env!("CARGO_PKG_VERSION"),
            export_timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            run_id: &batch.run_id,
            aggregation_period: "daily",
            source_system: "dify",
            date_range: DateRange {
                start: midnight(batch.first_day),
                end: midnight(batch.last_day + Days::new(1)),
            },
        },
        records,
    };
    Ok(serde_json::to_string(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_hash_of_the_records_as_sent() {
        assert_eq!(
            idempotency_key("[]"),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }
}
