//! A payload of ledger rows, for sinks that write the rows themselves (a table, files) rather than
//! send a receiver's own format: one JSON object per row and line, cost as exact decimal text.
//! Such a sink encodes at queue time with [`encode`] and reads its batch back with [`decode`]
//! when it sends, so what it writes is exactly what the ledger held when the batch was queued.

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::Part;
use crate::ledger::{Change, LedgerRow};
use crate::usage::{RecordKey, UsageRecord};

/// One row as a payload line holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Line<'a> {
    day: NaiveDate,
    #[serde(borrow)]
    app_id: Cow<'a, str>,
    app_name: Cow<'a, str>,
    workspace_id: Option<Cow<'a, str>>,
    user: Cow<'a, str>,
    customer: Cow<'a, str>,
    provider: Cow<'a, str>,
    model: Cow<'a, str>,
    currency: Cow<'a, str>,
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    request_count: u64,
    /// Exact decimal text.
    cost: Cow<'a, str>,
    total_only: bool,
    revision: u64,
    exported_at: DateTime<Utc>,
}

/// `changes` as JSON lines.
pub(crate) fn encode(changes: &[Change]) -> String {
    let mut payload = String::new();
    for change in changes {
        let (row, record) = (&change.row, &change.row.record);
        let cost = record.cost.to_string();
        let line = Line {
            day: record.key.day,
            app_id: (&*record.key.app_id).into(),
            app_name: (&*record.app_name).into(),
            workspace_id: record.workspace_id.as_deref().map(Into::into),
            user: record.key.user.as_str().into(),
            customer: row.customer.as_str().into(),
            provider: record.key.provider.as_str().into(),
            model: record.key.model.as_str().into(),
            currency: record.key.currency.as_str().into(),
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            total_tokens: record.total_tokens,
            request_count: record.request_count,
            cost: cost.into(),
            total_only: record.total_only,
            revision: row.revision,
            exported_at: row.exported_at,
        };
        // Plain strings and numbers always serialize.
        payload.push_str(&serde_json::to_string(&line).unwrap_or_default());
        payload.push('\n');
    }
    payload
}

/// The rows of a payload [`encode`] wrote.
pub(crate) fn decode(payload: &str) -> Result<Vec<LedgerRow>> {
    payload
        .lines()
        .enumerate()
        .map(|(index, text)| {
            let line: Line<'_> = serde_json::from_str(text)
                .with_context(|| format!("line {} of the batch is not a ledger row", index + 1))?;
            let cost: Decimal = line.cost.parse().with_context(|| {
                format!(
                    "line {} of the batch has the cost `{}`",
                    index + 1,
                    line.cost
                )
            })?;
            Ok(LedgerRow {
                record: UsageRecord {
                    key: RecordKey {
                        day: line.day,
                        app_id: Arc::from(&*line.app_id),
                        user: line.user.into_owned(),
                        provider: line.provider.into_owned(),
                        model: line.model.into_owned(),
                        currency: line.currency.into_owned(),
                    },
                    app_name: Arc::from(&*line.app_name),
                    workspace_id: line.workspace_id.map(|w| Arc::from(&*w)),
                    input_tokens: line.input_tokens,
                    output_tokens: line.output_tokens,
                    total_tokens: line.total_tokens,
                    request_count: line.request_count,
                    cost,
                    total_only: line.total_only,
                },
                customer: line.customer.into_owned(),
                revision: line.revision,
                exported_at: line.exported_at,
            })
        })
        .collect()
}

/// A payload cut into parts of at most `size` rows, in row order.
pub(crate) fn split(payload: &str, size: usize) -> Result<Vec<Part>> {
    let rows = decode(payload)?;
    Ok(rows
        .chunks(size.max(1))
        .map(|chunk| {
            let changes: Vec<Change> = chunk.iter().cloned().map(Change::whole).collect();
            Part {
                payload: encode(&changes),
                record_count: chunk.len() as u64,
                total_tokens: chunk.iter().map(|r| r.record.total_tokens).sum(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_exactly_as_they_were_encoded() {
        let row = LedgerRow {
            record: UsageRecord {
                key: RecordKey {
                    day: "2026-11-27".parse().unwrap(),
                    app_id: Arc::from("app"),
                    user: "a \"quoted\" user\nwith a line break".into(),
                    provider: "openai".into(),
                    model: "gpt-4o".into(),
                    currency: "CNY".into(),
                },
                app_name: Arc::from("Support bot"),
                workspace_id: Some(Arc::from("ws")),
                input_tokens: 190,
                output_tokens: 31,
                total_tokens: 221,
                request_count: 3,
                cost: "0.0006280".parse().unwrap(),
                total_only: false,
            },
            customer: "Finance".into(),
            revision: 4,
            exported_at: "2026-11-28T00:00:05.123Z".parse().unwrap(),
        };
        let payload = encode(&[Change::whole(row.clone()), Change::whole(row.clone())]);
        assert_eq!(payload.lines().count(), 2);
        let rows = decode(&payload).unwrap();
        assert_eq!(rows, [row.clone(), row.clone()]);
        assert_eq!(rows[0].record.cost.to_string(), "0.0006280");
        let parts = split(&payload, 1).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].record_count, parts[0].total_tokens), (1, 221));
        assert!(decode("{\"day\":1}\n").is_err());
    }
}
