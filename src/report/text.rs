//! The report for scripts: CSV (RFC 4180, one row per group, no total rows: a script sums the rows
//! itself and would count a total twice) and one JSON document (the groups and each currency's
//! total).

use std::io::Write;

use anyhow::{Context as _, Result};
use serde_json::{Map, Value, json};

use super::{Group, Key, Report, Sums};

/// The columns before the sums: the currency, then each key (an app also by name).
fn label_columns(report: &Report) -> Vec<&'static str> {
    let mut columns = vec!["currency"];
    for key in &report.keys {
        match key {
            Key::App => columns.extend(["app_id", "app_name"]),
            other => columns.push(other.into()),
        }
    }
    columns
}

const SUM_COLUMNS: [&str; 6] = [
    "records",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "requests",
    "cost",
];

fn sum_values(sums: &Sums) -> [String; 6] {
    [
        sums.records.to_string(),
        sums.input_tokens.to_string(),
        sums.output_tokens.to_string(),
        sums.total_tokens.to_string(),
        sums.requests.to_string(),
        sums.cost.normalize().to_string(),
    ]
}

fn labels(report: &Report, group: &Group) -> Vec<String> {
    let mut values = Vec::new();
    for (i, key) in report.keys.iter().enumerate() {
        values.push(group.labels[i].clone());
        if *key == Key::App {
            values.push(report.shown(i, group).to_owned());
        }
    }
    values
}

/// The report as CSV with a header row.
pub(crate) fn csv(report: &Report, out: impl Write) -> Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    let mut header = label_columns(report);
    header.extend(SUM_COLUMNS);
    writer
        .write_record(&header)
        .context("cannot write the report")?;
    for currency in &report.currencies {
        for group in &currency.groups {
            let mut row = vec![currency.code.clone()];
            row.extend(labels(report, group));
            row.extend(sum_values(&group.sums));
            writer
                .write_record(&row)
                .context("cannot write the report")?;
        }
    }
    writer.flush().context("cannot write the report")
}

/// The report as one JSON document.
pub(crate) fn json(report: &Report, mut out: impl Write) -> Result<()> {
    let columns = label_columns(report);
    let currencies: Vec<Value> = report
        .currencies
        .iter()
        .map(|currency| {
            let groups: Vec<Value> = currency
                .groups
                .iter()
                .map(|group| {
                    let mut object = Map::new();
                    for (column, value) in columns[1..].iter().zip(labels(report, group)) {
                        object.insert((*column).to_owned(), value.into());
                    }
                    if let Value::Object(sums) = json!(group.sums) {
                        object.extend(sums);
                    }
                    Value::Object(object)
                })
                .collect();
            json!({
                "currency": currency.code,
                "groups": groups,
                "group_count": currency.group_count,
                "total": currency.total,
            })
        })
        .collect();
    let document = json!({
        "from": report.first.to_string(),
        "to": report.last.to_string(),
        "by": report.keys.iter().map(|k| <&str>::from(*k)).collect::<Vec<_>>(),
        "currencies": currencies,
    });
    serde_json::to_writer_pretty(&mut out, &document).context("cannot write the report")?;
    out.write_all(b"\n").context("cannot write the report")
}
