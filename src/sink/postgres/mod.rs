//! The `postgres` sink: the ledger's rows upserted into one table of a PostgreSQL database
//! (`docs/sink-postgres.md`), for dashboards and SQL that want the usage where their data is.
//!
//! Each batch is one transaction with one statement: the batch's columns go as arrays and are
//! `UNNEST`ed into `INSERT … ON CONFLICT (source_event_id) DO UPDATE … WHERE revision < EXCLUDED.revision`.
//! A row only ever moves to a higher revision, so a batch sent twice (a kill after the commit but
//! before the outbox knew, `exporter resend`) changes nothing, and an older batch can never undo a
//! newer one. One statement per batch keeps the round trips to one, whatever the batch size; the
//! server's work per row is then the upsert itself (`COPY … BINARY` into a temporary table and one
//! `INSERT … SELECT` was measured slower on the server, 1.26 s against 1.05 s for 100,000 rows, as
//! it writes every row twice). A batch holds up to [`BATCH_ROWS`] changed rows, not `BATCH_SIZE`:
//! what a batch costs beyond its rows is its commits, and they are the part worth amortising.
//!
//! The session is opened at the first send of a run (a run with nothing to deliver never connects)
//! with the database source's connection code, and the table is created or checked then: a table
//! that does not fit is a configuration error before any row is written.
//!
//! | what went wrong | kind |
//! |---|---|
//! | refused, reset, timed out, server shutting down or starting, too many connections, statement timeout, deadlock, out of resources | transient |
//! | authentication, database missing, read-only session, TLS, missing privilege, table or schema missing or not fitting | configuration |
//! | a row the server refuses (data or integrity) | rejected |

mod table;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

use super::{Part, SendError, Sink, rows};
use crate::config::{PostgresSinkConfig, TableName};
use crate::ledger::{Change, LedgerRow};
use crate::postgres::{ConnectError, describe, is_transient};
use crate::secret::Masker;
use crate::source::database::DatabaseSource;
use crate::state::Batch;

const URL_VARIABLE: &str = "SINK_POSTGRES_URL";
const TABLE_VARIABLE: &str = "SINK_POSTGRES_TABLE";

/// The one upsert statement would not wait for a lock forever: a run-once job that hangs helps no one.
const STATEMENT_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// Changed rows per batch, whatever `BATCH_SIZE` (sized for a receiver's request limit) says. A
/// batch is one transaction, and what it costs beyond its rows is two commits that each wait for a
/// disk flush (the server's WAL, then the outbox's `mark_sent` in the state database) plus a few
/// round trips: milliseconds, where a row costs the server about ten microseconds. At 500 rows
/// they were a fifth to a third of the delivery time (`docs/benchmarks.md`); at 5,000 (a payload
/// of about 2 MB, a transaction of well under a second) they are a few percent.
const BATCH_ROWS: usize = 5000;

/// A PostgreSQL table, for one run.
pub(crate) struct PostgresSink {
    database: DatabaseSource,
    table: TableName,
    upsert: String,
    masker: Masker,
    cancel: CancellationToken,
    /// Opened at the first send and kept for the run.
    session: tokio::sync::Mutex<Option<Client>>,
}

impl PostgresSink {
    pub(crate) fn new(
        config: &PostgresSinkConfig,
        masker: &Masker,
        cancel: &CancellationToken,
    ) -> Self {
        PostgresSink {
            database: config.database.clone(),
            upsert: upsert(&config.table),
            table: config.table.clone(),
            masker: masker.clone(),
            cancel: cancel.clone(),
            session: tokio::sync::Mutex::default(),
        }
    }

    async fn write(&self, columns: &Columns<'_>) -> Result<(), SendError> {
        let mut session = self.session.lock().await;
        let open = session.take().filter(|client| !client.is_closed());
        let client = session.insert(match open {
            Some(client) => client,
            None => self.open().await?,
        });
        let transaction = client
            .transaction()
            .await
            .map_err(|e| classify(&e, "cannot start the transaction"))?;
        transaction
            .batch_execute(&format!(
                "SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
            ))
            .await
            .map_err(|e| classify(&e, "cannot set the statement timeout"))?;
        transaction
            .execute(&self.upsert, &columns.params())
            .await
            .map_err(|e| classify(&e, &format!("cannot upsert into {}", self.table)))?;
        transaction
            .commit()
            .await
            .map_err(|e| classify(&e, "cannot commit"))
    }

    /// Connects (the connection is polled by a task of its own for the rest of the run) and
    /// prepares the table.
    async fn open(&self) -> Result<Client, SendError> {
        let (client, connection) =
            crate::postgres::connect(&self.database)
                .await
                .map_err(|error| match error {
                    ConnectError::Tls(e) => SendError::Configuration(format!(
                        "check {URL_VARIABLE} ({}): {e:#}",
                        self.database.address()
                    )),
                    ConnectError::Postgres(e) => classify(
                        &e,
                        &format!("cannot connect to {}", self.database.address()),
                    ),
                })?;
        tokio::spawn(async move {
            // Its end shows as a closed client at the next statement, which says why.
            let _ = connection.await;
        });
        table::prepare(&client, &self.table).await?;
        Ok(client)
    }

    fn mask(&self, error: SendError) -> SendError {
        let mask = |text: String| self.masker.mask(&text);
        match error {
            SendError::Stopped => SendError::Stopped,
            SendError::Transient(text) => SendError::Transient(mask(text)),
            SendError::Configuration(text) => SendError::Configuration(mask(text)),
            SendError::Rejected(text) => SendError::Rejected(mask(text)),
            SendError::TooLarge(text) => SendError::TooLarge(mask(text)),
        }
    }
}

impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn batch_size(&self, _configured: usize) -> usize {
        BATCH_ROWS
    }

    fn encode(&self, changes: &[Change]) -> String {
        rows::encode(changes)
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        rows::split(payload, size)
    }

    async fn send(&self, batch: &Batch, payload: &str) -> Result<(), SendError> {
        let rows = rows::decode(payload)
            .map_err(|e| SendError::Rejected(format!("batch {} in the outbox: {e:#}", batch.id)))?;
        let columns = Columns::of(&rows)?;
        tokio::select! {
            () = self.cancel.cancelled() => Err(SendError::Stopped),
            outcome = self.write(&columns) => outcome.map_err(|e| self.mask(e)),
        }
    }
}

/// `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT … WHERE revision < EXCLUDED.revision` into `table`.
fn upsert(table: &TableName) -> String {
    let names: Vec<&str> = table::COLUMNS.iter().map(|(name, _, _)| *name).collect();
    let arrays: Vec<String> = table::COLUMNS
        .iter()
        .enumerate()
        .map(|(index, (_, _, kind))| {
            let n = index + 1;
            match *kind {
                // Exact decimal text, read by the server as numeric.
                "numeric" => format!("${n}::text[]::numeric[]"),
                "character(3)" => format!("${n}::text[]"),
                "timestamp with time zone" => format!("${n}::timestamptz[]"),
                other => format!("${n}::{other}[]"),
            }
        })
        .collect();
    let updates: Vec<String> = names
        .iter()
        .skip(1)
        .map(|name| format!("{name} = EXCLUDED.{name}"))
        .collect();
    format!(
        "INSERT INTO {table} AS t ({}) SELECT * FROM UNNEST({}) \
         ON CONFLICT (source_event_id) DO UPDATE SET {} WHERE t.revision < EXCLUDED.revision",
        names.join(", "),
        arrays.join(", "),
        updates.join(", ")
    )
}

/// A batch as one array per column, in the order of [`table::COLUMNS`], borrowing the rows' text.
struct Columns<'a> {
    source_event_id: Vec<String>,
    usage_date: Vec<NaiveDate>,
    app_id: Vec<&'a str>,
    app_name: Vec<&'a str>,
    workspace_id: Vec<Option<&'a str>>,
    user: Vec<&'a str>,
    customer: Vec<&'a str>,
    provider: Vec<&'a str>,
    model: Vec<&'a str>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    total_tokens: Vec<i64>,
    request_count: Vec<i64>,
    cost: Vec<String>,
    currency: Vec<&'a str>,
    token_split: Vec<&'static str>,
    revision: Vec<i64>,
    exported_at: Vec<DateTime<Utc>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [LedgerRow]) -> Result<Columns<'a>, SendError> {
        let count = |value: u64, what: &str, row: &LedgerRow| {
            i64::try_from(value).map_err(|_| {
                SendError::Rejected(format!(
                    "{what} {value} of record {} does not fit a bigint",
                    row.record.source_event_id()
                ))
            })
        };
        let mut columns = Columns {
            source_event_id: Vec::with_capacity(rows.len()),
            usage_date: Vec::with_capacity(rows.len()),
            app_id: Vec::with_capacity(rows.len()),
            app_name: Vec::with_capacity(rows.len()),
            workspace_id: Vec::with_capacity(rows.len()),
            user: Vec::with_capacity(rows.len()),
            customer: Vec::with_capacity(rows.len()),
            provider: Vec::with_capacity(rows.len()),
            model: Vec::with_capacity(rows.len()),
            input_tokens: Vec::with_capacity(rows.len()),
            output_tokens: Vec::with_capacity(rows.len()),
            total_tokens: Vec::with_capacity(rows.len()),
            request_count: Vec::with_capacity(rows.len()),
            cost: Vec::with_capacity(rows.len()),
            currency: Vec::with_capacity(rows.len()),
            token_split: Vec::with_capacity(rows.len()),
            revision: Vec::with_capacity(rows.len()),
            exported_at: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let record = &row.record;
            columns.source_event_id.push(record.source_event_id());
            columns.usage_date.push(record.key.day);
            columns.app_id.push(&record.key.app_id);
            columns.app_name.push(&record.app_name);
            columns.workspace_id.push(record.workspace_id.as_deref());
            columns.user.push(&record.key.user);
            columns.customer.push(&row.customer);
            columns.provider.push(&record.key.provider);
            columns.model.push(&record.key.model);
            columns
                .input_tokens
                .push(count(record.input_tokens, "input_tokens", row)?);
            columns
                .output_tokens
                .push(count(record.output_tokens, "output_tokens", row)?);
            columns
                .total_tokens
                .push(count(record.total_tokens, "total_tokens", row)?);
            columns
                .request_count
                .push(count(record.request_count, "request_count", row)?);
            columns.cost.push(record.cost.to_string());
            columns.currency.push(&record.key.currency);
            columns.token_split.push(record.token_split());
            columns.revision.push(count(row.revision, "revision", row)?);
            columns.exported_at.push(row.exported_at);
        }
        Ok(columns)
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.source_event_id,
            &self.usage_date,
            &self.app_id,
            &self.app_name,
            &self.workspace_id,
            &self.user,
            &self.customer,
            &self.provider,
            &self.model,
            &self.input_tokens,
            &self.output_tokens,
            &self.total_tokens,
            &self.request_count,
            &self.cost,
            &self.currency,
            &self.token_split,
            &self.revision,
            &self.exported_at,
        ]
    }
}

/// Sorts a driver error by what it asks of the operator; `what` says what failed.
fn classify(error: &tokio_postgres::Error, what: &str) -> SendError {
    let line = format!("{what}: {}", describe(error));
    let Some(code) = error.code() else {
        return if is_transient(error) {
            SendError::Transient(line)
        } else {
            // Not the network: TLS (a certificate, sslmode) or the protocol.
            SendError::Configuration(format!(
                "check {URL_VARIABLE} (sslmode, the server's certificate): {line}"
            ))
        };
    };
    let text = code.code();
    if is_transient(error)
        || [
            SqlState::QUERY_CANCELED,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code)
        || text.starts_with("53")
    {
        return SendError::Transient(line);
    }
    if text.starts_with("28") || *code == SqlState::INVALID_CATALOG_NAME {
        return SendError::Configuration(format!(
            "check {URL_VARIABLE} (user, password, database): {line}"
        ));
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return SendError::Configuration(format!(
            "check {URL_VARIABLE}: the session is read-only (a standby, or default_transaction_read_only); {line}"
        ));
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return SendError::Configuration(format!(
            "{TABLE_VARIABLE}: {line}; the role needs USAGE on the schema and SELECT, INSERT, UPDATE on the table \
             (docs/sink-postgres.md shows the GRANT)"
        ));
    }
    // Undefined table/column/schema, mismatched types, no unique key for ON CONFLICT: the table changed.
    if text.starts_with("42") || text.starts_with("3F") {
        return SendError::Configuration(format!(
            "{TABLE_VARIABLE}: {line}; the table must have the columns docs/sink-postgres.md lists"
        ));
    }
    SendError::Rejected(line)
}
