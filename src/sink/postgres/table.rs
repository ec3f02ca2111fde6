//! The sink's table: its columns, creating it when missing, and refusing one that does not fit
//! before any row is written, so a wrong table costs a configuration fix and never a batch.

use std::fmt::Write as _;

use tokio_postgres::Client;

use super::{TABLE_VARIABLE, classify};
use crate::config::TableName;
use crate::sink::SendError;

/// Every column the sink writes: name, type as `CREATE TABLE` gives it, and as `format_type` shows it.
pub(super) const COLUMNS: [(&str, &str, &str); 18] = [
    ("source_event_id", "text PRIMARY KEY", "text"),
    ("usage_date", "date NOT NULL", "date"),
    ("app_id", "text NOT NULL", "text"),
    ("app_name", "text NOT NULL", "text"),
    ("workspace_id", "text NULL", "text"),
    ("dify_user", "text NOT NULL", "text"),
    ("customer", "text NOT NULL", "text"),
    ("provider", "text NOT NULL", "text"),
    ("model", "text NOT NULL", "text"),
    ("input_tokens", "bigint NOT NULL", "bigint"),
    ("output_tokens", "bigint NOT NULL", "bigint"),
    ("total_tokens", "bigint NOT NULL", "bigint"),
    ("request_count", "bigint NOT NULL", "bigint"),
    ("cost", "numeric NOT NULL", "numeric"),
    ("currency", "char(3) NOT NULL", "character(3)"),
    ("token_split", "text NOT NULL", "text"),
    ("revision", "bigint NOT NULL", "bigint"),
    (
        "exported_at",
        "timestamptz NOT NULL",
        "timestamp with time zone",
    ),
];

const SCHEMA_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";

const TABLE_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/// Whether the table exists, has a one-column unique index on `source_event_id` (which `ON CONFLICT`
/// needs), and which of the privileges an upsert needs the role holds.
const TABLE_FACTS: &str = "SELECT to_regclass($1) IS NOT NULL, \
       EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
               WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 \
                 AND a.attname = 'source_event_id'), \
       COALESCE(has_table_privilege(to_regclass($1), 'SELECT'), false), \
       COALESCE(has_table_privilege(to_regclass($1), 'INSERT'), false), \
       COALESCE(has_table_privilege(to_regclass($1), 'UPDATE'), false), \
       current_schema()::text, current_user::text";

/// Creates the table when it is missing and checks that it fits: every column with its type, the
/// unique key, and the privileges of the role.
pub(super) async fn prepare(client: &Client, table: &TableName) -> Result<(), SendError> {
    let name = table.to_string();
    if let Some(schema) = &table.schema {
        let exists: bool = client
            .query_one(SCHEMA_EXISTS, &[schema])
            .await
            .map_err(failed("cannot look up the schema"))?
            .get(0);
        if !exists {
            return Err(SendError::Configuration(format!(
                "{TABLE_VARIABLE} names the schema `{schema}`, which does not exist; create it \
                 (CREATE SCHEMA {schema}) or name another table"
            )));
        }
    }
    let facts = client
        .query_one(TABLE_FACTS, &[&name])
        .await
        .map_err(failed("cannot look up the table"))?;
    let (exists, schema, role): (bool, Option<String>, String) =
        (facts.get(0), facts.get(5), facts.get(6));
    let schema = table.schema.clone().or(schema).unwrap_or_default();
    if !exists {
        return create(client, table, &schema, &role).await;
    }
    let present: Vec<(String, String)> = client
        .query(TABLE_COLUMNS, &[&name])
        .await
        .map_err(failed("cannot read the table's columns"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut problems = column_problems(&present);
    if !facts.get::<_, bool>(1) {
        problems.push("source_event_id is not its primary key (nor unique on its own)".to_owned());
    }
    if !problems.is_empty() {
        return Err(SendError::Configuration(format!(
            "{TABLE_VARIABLE}: the table {name} does not fit the sink: {}; fix the table (docs/sink-postgres.md \
             lists the columns) or name another",
            problems.join("; ")
        )));
    }
    let missing: Vec<&str> = [(2, "SELECT"), (3, "INSERT"), (4, "UPDATE")]
        .into_iter()
        .filter(|&(index, _)| !facts.get::<_, bool>(index))
        .map(|(_, privilege)| privilege)
        .collect();
    if !missing.is_empty() {
        return Err(SendError::Configuration(format!(
            "{TABLE_VARIABLE}: the role {role} lacks {} on {name}; run as its owner: GRANT SELECT, INSERT, UPDATE ON {name} TO {role};",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// A driver error of `what`, sorted.
fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SendError {
    move |e| classify(&e, what)
}

/// What is wrong with the columns `present` (name, type): missing or of another type.
fn column_problems(present: &[(String, String)]) -> Vec<String> {
    COLUMNS
        .iter()
        .filter_map(|&(column, _, expected)| {
            match present.iter().find(|(name, _)| name == column) {
                None => Some(format!("column {column} ({expected}) is missing")),
                Some((_, actual)) if actual != expected => {
                    Some(format!("column {column} is {actual}, expected {expected}"))
                }
                Some(_) => None,
            }
        })
        .collect()
}

async fn create(
    client: &Client,
    table: &TableName,
    schema: &str,
    role: &str,
) -> Result<(), SendError> {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {table} (");
    for (index, (column, definition, _)) in COLUMNS.iter().enumerate() {
        let comma = if index == 0 { "" } else { ", " };
        let _ = write!(sql, "{comma}{column} {definition}");
    }
    sql.push(')');
    client.batch_execute(&sql).await.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
            SendError::Configuration(format!(
                "{TABLE_VARIABLE}: the table {table} does not exist and the role {role} may not create it; \
                 run as an administrator: GRANT CREATE ON SCHEMA {schema} TO {role}; or create the table \
                 as docs/sink-postgres.md shows"
            ))
        } else {
            classify(&e, "cannot create the table")
        }
    })?;
    tracing::info!(table = %table, "postgres sink table created");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_mistyped_columns_are_named() {
        let mut present: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|(c, _, t)| ((*c).to_owned(), (*t).to_owned()))
            .collect();
        assert!(column_problems(&present).is_empty());
        present.retain(|(c, _)| c != "revision");
        present[13].1 = "text".to_owned();
        assert_eq!(
            column_problems(&present),
            [
                "column cost is text, expected numeric",
                "column revision (bigint) is missing"
            ]
        );
    }
}
