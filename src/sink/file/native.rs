//! The native schema: the ledger's own columns, one row per ledger record, the same names and
//! order in every format (`docs/sink-file.md#native-schema`).

use super::table::{Column, Table, Type, Value, int};
use crate::ledger::LedgerRow;

const COLUMNS: &[Column] = &[
    Column::required("usage_date", Type::Date),
    Column::required("source_event_id", Type::Text),
    Column::required("app_id", Type::Text),
    Column::required("app_name", Type::Text),
    Column::nullable("workspace_id", Type::Text),
    Column::required("user", Type::Text),
    Column::required("customer", Type::Text),
    Column::required("provider", Type::Text),
    Column::required("model", Type::Text),
    Column::required("input_tokens", Type::Int),
    Column::required("output_tokens", Type::Int),
    Column::required("total_tokens", Type::Int),
    Column::required("request_count", Type::Int),
    Column::required("cost", Type::Decimal),
    Column::required("currency", Type::Text),
    Column::required("token_split", Type::Text),
    Column::required("revision", Type::Int),
    Column::required("exported_at", Type::Timestamp),
];

pub(super) fn table(rows: &[LedgerRow]) -> Table {
    let text = |s: &str| Value::Text(s.to_owned());
    Table {
        columns: COLUMNS,
        rows: rows
            .iter()
            .map(|row| {
                let (record, key) = (&row.record, &row.record.key);
                vec![
                    Value::Date(key.day),
                    Value::Text(record.source_event_id()),
                    text(&key.app_id),
                    text(&record.app_name),
                    record.workspace_id.as_deref().map_or(Value::Null, text),
                    text(&key.user),
                    text(&row.customer),
                    text(&key.provider),
                    text(&key.model),
                    int(record.input_tokens),
                    int(record.output_tokens),
                    int(record.total_tokens),
                    int(record.request_count),
                    Value::Decimal(record.cost),
                    text(&key.currency),
                    text(row.record.token_split()),
                    int(row.revision),
                    Value::Timestamp(row.exported_at),
                ]
            })
            .collect(),
    }
}
