//! CSV: a header row, RFC 4180 quoting (the `csv` crate quotes fields holding a comma, quote or
//! line break), UTF-8 without a byte-order mark; null is an empty field.

use anyhow::Result;

use super::table::Table;

pub(super) fn write(table: &Table) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(table.columns.iter().map(|c| c.name))?;
    for row in &table.rows {
        writer.write_record(row.iter().map(|v| v.text().unwrap_or_default()))?;
    }
    Ok(writer
        .into_inner()
        .map_err(csv::IntoInnerError::into_error)?)
}
