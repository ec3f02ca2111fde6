//! The FOCUS schema: the FinOps Open Cost and Usage Specification's columns, version 1.0 (the
//! version the FinOps Foundation's `focus-validator` 1.0.0 checks), one charge row per ledger
//! record. Every column 1.0 requires is present; the ledger's own fields that FOCUS has no column
//! for go in `x_` columns (the spec's prefix for custom columns) and in `Tags`. The mapping and its
//! reasons: `docs/sink-file.md#focus-schema`.

use chrono::{Datelike as _, Days, Months, NaiveDate, NaiveTime};
use rust_decimal::Decimal;
use serde_json::json;

use super::table::{Column, Table, Type, Value, int};
use crate::ledger::LedgerRow;

const COLUMNS: &[Column] = &[
    Column::nullable("AvailabilityZone", Type::Text),
    Column::required("BilledCost", Type::Decimal),
    Column::required("BillingAccountId", Type::Text),
    Column::nullable("BillingAccountName", Type::Text),
    Column::required("BillingCurrency", Type::Text),
    Column::required("BillingPeriodEnd", Type::Timestamp),
    Column::required("BillingPeriodStart", Type::Timestamp),
    Column::required("ChargeCategory", Type::Text),
    Column::nullable("ChargeClass", Type::Text),
    Column::required("ChargeDescription", Type::Text),
    Column::required("ChargeFrequency", Type::Text),
    Column::required("ChargePeriodEnd", Type::Timestamp),
    Column::required("ChargePeriodStart", Type::Timestamp),
    Column::nullable("CommitmentDiscountCategory", Type::Text),
    Column::nullable("CommitmentDiscountId", Type::Text),
    Column::nullable("CommitmentDiscountName", Type::Text),
    Column::nullable("CommitmentDiscountStatus", Type::Text),
    Column::nullable("CommitmentDiscountType", Type::Text),
    Column::required("ConsumedQuantity", Type::Decimal),
    Column::required("ConsumedUnit", Type::Text),
    Column::required("ContractedCost", Type::Decimal),
    Column::nullable("ContractedUnitPrice", Type::Decimal),
    Column::required("EffectiveCost", Type::Decimal),
    Column::required("InvoiceIssuer", Type::Text),
    Column::required("ListCost", Type::Decimal),
    Column::nullable("ListUnitPrice", Type::Decimal),
    Column::required("PricingCategory", Type::Text),
    Column::required("PricingQuantity", Type::Decimal),
    Column::required("PricingUnit", Type::Text),
    Column::required("Provider", Type::Text),
    Column::required("Publisher", Type::Text),
    Column::nullable("RegionId", Type::Text),
    Column::nullable("RegionName", Type::Text),
    Column::required("ResourceID", Type::Text),
    Column::required("ResourceName", Type::Text),
    Column::required("ResourceType", Type::Text),
    Column::required("ServiceCategory", Type::Text),
    Column::required("ServiceName", Type::Text),
    Column::required("SkuId", Type::Text),
    Column::nullable("SkuPriceId", Type::Text),
    Column::nullable("SubAccountId", Type::Text),
    Column::nullable("SubAccountName", Type::Text),
    Column::required("Tags", Type::Text),
    Column::required("x_SourceEventId", Type::Text),
    Column::required("x_InputTokens", Type::Int),
    Column::required("x_OutputTokens", Type::Int),
    Column::required("x_RequestCount", Type::Int),
    Column::required("x_Revision", Type::Int),
    Column::required("x_ExportedAt", Type::Timestamp),
];

/// The billing account when the source does not know the Dify workspace (the console API).
const DEFAULT_ACCOUNT: &str = "dify";

pub(super) fn table(rows: &[LedgerRow]) -> Table {
    let text = |s: &str| Value::Text(s.to_owned());
    Table {
        columns: COLUMNS,
        rows: rows
            .iter()
            .map(|row| {
                let (record, key) = (&row.record, &row.record.key);
                let cost = Value::Decimal(record.cost);
                let tokens = Value::Decimal(Decimal::from(record.total_tokens));
                let (day_start, day_end) = (midnight(key.day), midnight(next_day(key.day)));
                let month = key.day.with_day(1).unwrap_or(key.day);
                let next_month = month.checked_add_months(Months::new(1)).unwrap_or(month);
                let workspace = record.workspace_id.as_deref();
                let source_event_id = record.source_event_id();
                let tags = json!({
                    "user": key.user,
                    "customer": row.customer,
                    "app_id": &*key.app_id,
                    "app_name": &*record.app_name,
                    "model": key.model,
                    "token_split": row.record.token_split(),
                    "source_event_id": source_event_id,
                    "revision": row.revision.to_string(),
                });
                vec![
                    Value::Null,
                    cost.clone(),
                    text(workspace.unwrap_or(DEFAULT_ACCOUNT)),
                    text("Dify"),
                    text(&key.currency),
                    midnight(next_month),
                    midnight(month),
                    text("Usage"),
                    Value::Null,
                    Value::Text(format!(
                        "{} input and {} output tokens of {} in {} requests by {} in {}",
                        record.input_tokens,
                        record.output_tokens,
                        key.model,
                        record.request_count,
                        key.user,
                        record.app_name
                    )),
                    text("Usage-Based"),
                    day_end,
                    day_start,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    tokens.clone(),
                    text("Tokens"),
                    cost.clone(),
                    Value::Null,
                    cost.clone(),
                    text(&key.provider),
                    cost,
                    Value::Null,
                    text("Standard"),
                    tokens,
                    text("Tokens"),
                    text(&key.provider),
                    text(&key.provider),
                    Value::Null,
                    Value::Null,
                    text(&key.app_id),
                    text(&record.app_name),
                    text("Dify app"),
                    text("AI and Machine Learning"),
                    Value::Text(format!("{}/{}", key.provider, key.model)),
                    text(&key.model),
                    Value::Null,
                    workspace.map_or(Value::Null, text),
                    workspace.map_or(Value::Null, text),
                    Value::Text(tags.to_string()),
                    Value::Text(source_event_id),
                    int(record.input_tokens),
                    int(record.output_tokens),
                    int(record.request_count),
                    int(row.revision),
                    Value::Timestamp(row.exported_at),
                ]
            })
            .collect(),
    }
}

fn midnight(day: NaiveDate) -> Value {
    Value::Timestamp(day.and_time(NaiveTime::MIN).and_utc())
}

fn next_day(day: NaiveDate) -> NaiveDate {
    day.checked_add_days(Days::new(1)).unwrap_or(day)
}
