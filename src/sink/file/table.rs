//! A sink-neutral table: typed columns and rows of values. A schema ([`super::native`],
//! [`super::focus`]) builds one from ledger rows; a format ([`super::csv`], [`super::jsonl`],
//! [`super::parquet`]) writes one, so every schema is available in every format without twins.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

/// What a column holds; each format maps it to its own type (see `docs/sink-file.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    /// A calendar day (UTC).
    Date,
    Text,
    /// A whole number (tokens, requests, revisions).
    Int,
    /// An exact decimal (money, quantities).
    Decimal,
    /// An instant, UTC.
    Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) kind: Type,
    /// Whether the column may hold [`Value::Null`].
    pub(super) nullable: bool,
}

impl Column {
    pub(super) const fn required(name: &'static str, kind: Type) -> Column {
        Column {
            name,
            kind,
            nullable: false,
        }
    }

    pub(super) const fn nullable(name: &'static str, kind: Type) -> Column {
        Column {
            name,
            kind,
            nullable: true,
        }
    }
}

/// One cell; its variant matches its column's [`Type`] (or is `Null` in a nullable column).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Date(NaiveDate),
    Text(String),
    Int(i64),
    Decimal(Decimal),
    Timestamp(DateTime<Utc>),
}

impl Value {
    /// The value as CSV writes it and JSON lines quotes it: days as `YYYY-MM-DD`, instants as
    /// RFC 3339 with `Z`, decimals as their exact text; `None` for null.
    pub(super) fn text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Date(day) => day.to_string(),
            Value::Text(text) => text.clone(),
            Value::Int(number) => number.to_string(),
            Value::Decimal(decimal) => decimal.to_string(),
            Value::Timestamp(at) => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        })
    }
}

/// A whole file's content before it is written in a format.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) columns: &'static [Column],
    pub(super) rows: Vec<Vec<Value>>,
}

/// A count as a signed 64-bit value, which is what every format's integer type holds; a count
/// past `i64::MAX` (never seen: nine quintillion tokens) saturates rather than wraps.
pub(super) fn int(count: u64) -> Value {
    Value::Int(i64::try_from(count).unwrap_or(i64::MAX))
}
