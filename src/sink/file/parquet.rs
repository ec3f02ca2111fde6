//! Parquet through the `parquet` crate's column writers (no Arrow: it would double the build).
//! Real types: days are `DATE`, whole numbers `INT64`, decimals `DECIMAL(18,7)` on `INT64` (Dify
//! prices have at most 7 decimals; 11 digits before the point is far past any day's bill),
//! instants `TIMESTAMP(MICROS, UTC)`, text `STRING`; nullable columns are `OPTIONAL`. One row
//! group per file (a file is one day), Snappy-compressed.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use chrono::NaiveDate;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rust_decimal::Decimal;

use super::table::{Column, Table, Type, Value};

/// The scale of every decimal column.
const SCALE: u32 = 7;

/// Why a table cannot be written: a value this file's types cannot hold exactly.
#[derive(Debug, thiserror::Error)]
#[error("{column} = {value} does not fit DECIMAL(18,{SCALE}) exactly; it is not rounded")]
pub(super) struct DoesNotFit {
    column: &'static str,
    value: Decimal,
}

pub(super) fn write(table: &Table) -> Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(&message(table.columns))?);
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let mut group = writer.next_row_group()?;
    for (index, column) in table.columns.iter().enumerate() {
        let cells = table.rows.iter().map(|row| &row[index]);
        let mut out = group
            .next_column()?
            .context("the Parquet schema has fewer columns than the table")?;
        match column.kind {
            Type::Date => {
                let epoch = NaiveDate::default();
                write_column::<Int32Type, _>(&mut out, column, cells, |v| match v {
                    Value::Date(day) => i32::try_from((*day - epoch).num_days()).ok(),
                    _ => None,
                })?;
            }
            Type::Int => write_column::<Int64Type, _>(&mut out, column, cells, |v| match v {
                Value::Int(n) => Some(*n),
                _ => None,
            })?,
            Type::Timestamp => {
                write_column::<Int64Type, _>(&mut out, column, cells, |v| match v {
                    Value::Timestamp(at) => Some(at.timestamp_micros()),
                    _ => None,
                })?;
            }
            Type::Text => write_column::<ByteArrayType, _>(&mut out, column, cells, |v| match v {
                Value::Text(text) => Some(ByteArray::from(text.as_str())),
                _ => None,
            })?,
            Type::Decimal => {
                let cells: Vec<&Value> = cells.collect();
                for cell in &cells {
                    if let Value::Decimal(value) = cell {
                        unscaled(*value).ok_or(DoesNotFit {
                            column: column.name,
                            value: *value,
                        })?;
                    }
                }
                write_column::<Int64Type, _>(&mut out, column, cells.into_iter(), |v| match v {
                    Value::Decimal(value) => unscaled(*value),
                    _ => None,
                })?;
            }
        }
        out.close()?;
    }
    group.close()?;
    Ok(writer.into_inner()?)
}

/// The Parquet message type of `columns`.
fn message(columns: &[Column]) -> String {
    let mut message = String::from("message dify_usage {\n");
    for column in columns {
        let repetition = if column.nullable {
            "OPTIONAL"
        } else {
            "REQUIRED"
        };
        let physical = match column.kind {
            Type::Date => "INT32",
            Type::Text => "BYTE_ARRAY",
            Type::Int | Type::Decimal | Type::Timestamp => "INT64",
        };
        let logical = match column.kind {
            Type::Date => " (DATE)".to_owned(),
            Type::Text => " (STRING)".to_owned(),
            Type::Int => String::new(),
            Type::Decimal => format!(" (DECIMAL(18,{SCALE}))"),
            Type::Timestamp => " (TIMESTAMP(MICROS,true))".to_owned(),
        };
        let _ = writeln!(
            message,
            "  {repetition} {physical} {}{logical};",
            column.name
        );
    }
    message.push('}');
    message
}

/// `value` × 10^7 when that is a whole number that fits 18 digits.
fn unscaled(value: Decimal) -> Option<i64> {
    let value = value.normalize();
    if value.scale() > SCALE {
        return None;
    }
    let mut scaled = value;
    scaled.rescale(SCALE);
    let unscaled = i64::try_from(scaled.mantissa()).ok()?;
    (unscaled.unsigned_abs() < 10u64.pow(18)).then_some(unscaled)
}

/// One column's values, with definition levels when the column is nullable.
fn write_column<'a, T: DataType, I: Iterator<Item = &'a Value>>(
    out: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    column: &Column,
    cells: I,
    value: impl Fn(&Value) -> Option<T::T>,
) -> Result<()> {
    let mut values = Vec::new();
    let mut levels = Vec::new();
    for cell in cells {
        match (cell, value(cell)) {
            (Value::Null, _) if column.nullable => levels.push(0),
            (_, Some(v)) => {
                values.push(v);
                levels.push(1);
            }
            (other, None) => bail!("column {} cannot hold {other:?}", column.name),
        }
    }
    let levels = column.nullable.then_some(levels.as_slice());
    out.typed::<T>().write_batch(&values, levels, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_seven_places_or_are_refused() {
        assert_eq!(unscaled("0.0006280".parse().unwrap()), Some(6280));
        assert_eq!(unscaled("-1.5".parse().unwrap()), Some(-15_000_000));
        assert_eq!(unscaled("0.00000001".parse().unwrap()), None);
        assert_eq!(unscaled("100000000000".parse().unwrap()), None);
        assert_eq!(
            unscaled("99999999999.9999999".parse().unwrap()),
            Some(999_999_999_999_999_999)
        );
    }
}
