use std::sync::Arc;

use super::*;
use crate::usage::{RecordKey, UsageRecord};

fn row(user: &str, cost: &str, workspace: Option<&str>) -> LedgerRow {
    LedgerRow {
        record: UsageRecord {
            key: RecordKey {
                day: "2026-11-27".parse().unwrap(),
                app_id: Arc::from("app-1"),
                user: user.into(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                currency: "USD".into(),
            },
            app_name: Arc::from("Support, \"bot\""),
            workspace_id: workspace.map(Arc::from),
            input_tokens: 190,
            output_tokens: 31,
            total_tokens: 221,
            request_count: 3,
            cost: cost.parse().unwrap(),
            total_only: false,
        },
        customer: "Finance".into(),
        revision: 2,
        exported_at: "2026-11-28T00:00:05.123Z".parse().unwrap(),
    }
}

fn sink(format: FileFormat, schema: FileSchema) -> FileSink {
    FileSink::new(&FileSinkConfig {
        dir: PathBuf::from("unused"),
        format,
        schema,
    })
}

#[test]
fn every_schema_has_a_value_per_column() {
    let rows = [row("u", "0.0006280", None), row("v", "1", Some("ws"))];
    for table in [native::table(&rows), focus::table(&rows)] {
        assert!(table.rows.iter().all(|r| r.len() == table.columns.len()));
        for r in &table.rows {
            for (column, value) in table.columns.iter().zip(r) {
                assert!(
                    column.nullable || *value != table::Value::Null,
                    "{}",
                    column.name
                );
            }
        }
    }
}

#[test]
fn csv_and_json_lines_keep_text_and_cost_exact() {
    let rows = [row("a \"quoted\"\nuser", "0.0006280", None)];
    let csv = sink(FileFormat::Csv, FileSchema::Native)
        .render(&rows)
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("usage_date,source_event_id,app_id,app_name,workspace_id,user,"));
    assert!(csv.contains(",\"Support, \"\"bot\"\"\",,\"a \"\"quoted\"\"\nuser\",Finance,"));
    assert!(csv.contains(",0.0006280,USD,exact,2,2026-11-28T00:00:05.123Z\n"));
    let json = sink(FileFormat::Jsonl, FileSchema::Native)
        .render(&rows)
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(line["cost"], "0.0006280");
    assert_eq!(line["total_tokens"], 221);
    assert_eq!(line["workspace_id"], serde_json::Value::Null);
}

#[test]
fn a_cost_parquet_cannot_hold_is_refused_not_rounded() {
    let parquet = sink(FileFormat::Parquet, FileSchema::Native);
    assert!(parquet.render(&[row("u", "0.0006280", None)]).is_ok());
    let error = parquet.render(&[row("u", "0.00000001", None)]).unwrap_err();
    assert!(
        format!("{error:#}").contains("cost = 0.00000001 does not fit DECIMAL(18,7)"),
        "{error:#}"
    );
}

#[test]
fn a_day_is_never_split() {
    let file = sink(FileFormat::Csv, FileSchema::Native);
    let payload = rows::encode(&[
        Change::whole(row("u", "1", None)),
        Change::whole(row("v", "1", None)),
    ]);
    assert!(file.split(&payload, 1).is_err());
    assert_eq!(file.split(&payload, 2).unwrap().len(), 1);
}
