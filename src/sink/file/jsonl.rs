//! JSON lines: one object per row, keys in column order. Whole numbers are JSON numbers; a
//! decimal is a JSON *string* of its exact text (`"0.0006280"`), because a JSON number is read as
//! a binary double by most readers (DuckDB's `read_json` among them) before any cast to DECIMAL,
//! while a string cast to DECIMAL is exact. Days and instants are strings too; null is `null`.

use std::fmt::Write as _;

use anyhow::Result;

use super::table::{Table, Value};

pub(super) fn write(table: &Table) -> Result<Vec<u8>> {
    let mut out = String::new();
    for row in &table.rows {
        out.push('{');
        for (index, (column, value)) in table.columns.iter().zip(row).enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(column.name)?);
            out.push(':');
            match value {
                Value::Null => out.push_str("null"),
                Value::Int(number) => {
                    let _ = write!(out, "{number}");
                }
                other => out.push_str(&serde_json::to_string(&other.text().unwrap_or_default())?),
            }
        }
        out.push_str("}\n");
    }
    Ok(out.into_bytes())
}
