//! The PostgreSQL dialect: the read-only session, the snapshot, and the
//! queries, which push every filter into the server (workspace, window, modes as app-id lists,
//! `invoke_from`, `triggered_from`, container node types) and stream their rows.
//!
//! Messages are summed by the server (`GROUP BY` day, app, user, model, currency), so only distinct
//! records cross the wire. Node executions cannot be: their usage sits in JSON text that Dify never
//! promised to keep valid for PostgreSQL's `::json` (one bad row would abort the whole query), so
//! each row is parsed here with the same serde types the API source uses, and dropped at once.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{NaiveDate, NaiveDateTime};
use futures::{StreamExt as _, TryStreamExt as _};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Row, Transaction};
use tracing::info;
use uuid::Uuid;

use super::schema::{self, ColumnCheck};
use super::settings::DatabaseSource;
use super::{AttemptError, rules};
use crate::postgres::{ConnectError, Connection, describe, is_transient};
use crate::run::window::Window;
use crate::usage::Aggregator;

/// No single query may run longer (`statement_timeout`): a run-once job that hangs helps no one.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Memory of the node query's hash of the window's runs (`SET LOCAL work_mem`): the default 4 MB
/// spills a quarter of a million runs to temp files in batches, and the node rows with them.
const WORK_MEM: &str = "64MB";

const APPS: &str = "SELECT id, tenant_id, name, mode FROM apps \
     WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY tenant_id, id";

const MESSAGES: &str = "SELECT m.app_id, m.created_at::date, \
       COALESCE(NULLIF(eu.session_id, ''), acc.email, ''), \
       COALESCE(m.model_provider, ''), COALESCE(m.model_id, ''), COALESCE(m.currency, ''), \
       SUM(m.message_tokens)::bigint, SUM(m.answer_tokens)::bigint, \
       COALESCE(SUM(m.total_price), 0)::text, COUNT(*), \
       (array_agg(m.id) FILTER (WHERE m.message_tokens < 0))[1], \
       (array_agg(m.id) FILTER (WHERE m.answer_tokens < 0))[1], \
       (array_agg(m.id) FILTER (WHERE m.total_price < 0))[1], \
       (array_agg(m.id) FILTER (WHERE m.currency <> '' AND m.currency !~ '^[A-Za-z]{3}$'))[1] \
     FROM messages m \
     LEFT JOIN end_users eu ON eu.id = m.from_end_user_id \
     LEFT JOIN accounts acc ON acc.id = m.from_account_id \
     WHERE m.app_id = ANY($1) AND m.created_at >= $2 AND m.created_at < $3 \
       AND m.invoke_from IS DISTINCT FROM 'debugger' \
     GROUP BY 1, 2, 3, 4, 5, 6";

const NODES: &str = concat!(
    "SELECT r.app_id, n.id, r.created_at::date, ",
    node_user!(),
    ", n.process_data, n.execution_metadata",
    node_joins!(),
    "WHERE r.app_id = ANY($1) AND r.created_at >= $2 AND r.created_at < $3 \
       AND r.triggered_from NOT IN ",
    debug_triggers!(),
    " AND n.created_at >= $2 AND n.node_type NOT IN ('iteration', 'loop')"
);

const SCHEMA: &str = "SELECT t.tbl, t.col, to_regclass(t.tbl) IS NOT NULL, \
       COALESCE(has_table_privilege(to_regclass(t.tbl), 'SELECT'), false), \
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(t.tbl) \
               AND a.attname = t.col AND NOT a.attisdropped), \
       (SELECT a.atttypid::regtype::text FROM pg_attribute a WHERE a.attrelid = to_regclass(t.tbl) \
               AND a.attname = t.col AND NOT a.attisdropped) \
     FROM unnest($1::text[], $2::text[]) AS t(tbl, col)";

/// Opens a session (`crate::postgres::connect`). The caller polls the [`Connection`] in the
/// same task as its queries (rather than spawning it), which saves a cross-thread wake-up per batch
/// of rows: a third of the wall time on a million node executions.
pub(super) async fn connect(source: &DatabaseSource) -> Result<(Client, Connection), AttemptError> {
    crate::postgres::connect(source)
        .await
        .map_err(|error| match error {
            ConnectError::Tls(error) => AttemptError::Fatal(error),
            ConnectError::Postgres(error) => AttemptError::from_postgres(&error, "cannot connect"),
        })
}

/// Why the connection ended before the reading did.
pub(super) fn connection_ended(outcome: Result<(), tokio_postgres::Error>) -> AttemptError {
    match outcome {
        Err(e) => AttemptError::from_postgres(&e, "the connection failed"),
        Ok(()) => AttemptError::Transient(anyhow!("the server closed the connection")),
    }
}

/// The snapshot every query of a collection reads: `REPEATABLE READ, READ ONLY`, in UTC, with the
/// statement timeout; scoped to the transaction (`SET LOCAL`), so a pooled connection keeps nothing.
pub(super) async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, AttemptError> {
    let transaction = read_only(client).await?;
    set_up(&transaction).await?;
    let row = transaction
        .query_one(
            "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'), \
             current_setting('TimeZone'), current_setting('statement_timeout'), current_user::text, \
             COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await
        .map_err(|e| AttemptError::from_postgres(&e, "cannot read the session settings"))?;
    let (isolation, read_only): (String, String) = (row.get(0), row.get(1));
    if read_only != "on" {
        return Err(AttemptError::Fatal(anyhow!(
            "the database session is not read-only (transaction_read_only = {read_only}); refusing to read"
        )));
    }
    info!(
        isolation = %isolation,
        read_only = %read_only,
        time_zone = %row.get::<_, String>(2),
        statement_timeout = %row.get::<_, String>(3),
        role = %row.get::<_, String>(4),
        tls = row.get::<_, bool>(5),
        "database snapshot opened"
    );
    Ok(transaction)
}

async fn read_only(client: &mut Client) -> Result<Transaction<'_>, AttemptError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| AttemptError::from_postgres(&e, "cannot start the read-only snapshot"))
}

async fn set_up(transaction: &Transaction<'_>) -> Result<(), AttemptError> {
    transaction
        .batch_execute(&format!(
            "SET LOCAL TIME ZONE 'UTC'; SET LOCAL statement_timeout = {}; SET LOCAL work_mem = '{WORK_MEM}'",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .await
        .map_err(|e| AttemptError::from_postgres(&e, "cannot set up the snapshot"))
}

/// Makes the snapshot importable by other sessions (`pg_export_snapshot()`), until the transaction ends.
/// An error aborts the transaction.
pub(super) async fn export_snapshot(
    transaction: &Transaction<'_>,
) -> Result<String, tokio_postgres::Error> {
    let row = transaction
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?;
    Ok(row.get(0))
}

/// A second session on the snapshot `id` exported by the first: the same rows, whatever was committed
/// since. `SET TRANSACTION SNAPSHOT` must come before any query of the transaction.
pub(super) async fn import_snapshot<'c>(
    client: &'c mut Client,
    id: &str,
) -> Result<Transaction<'c>, tokio_postgres::Error> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // The id is the server's own (hex digits and dashes); quoted as a literal all the same.
    let literal = id.replace('\'', "''");
    transaction
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT '{literal}'; SET LOCAL TIME ZONE 'UTC'; SET LOCAL statement_timeout = {}; SET LOCAL work_mem = '{WORK_MEM}'",
            STATEMENT_TIMEOUT.as_millis()
        ))
        .await?;
    Ok(transaction)
}

/// The pages of `workflow_node_executions` as the snapshot sees them, for splitting its scan by
/// `ctid`. The `ACCESS SHARE` lock (as `pg_dump` takes) keeps `VACUUM FULL` or `CLUSTER` from
/// moving rows between the sessions' scans; it blocks no writer.
pub(super) async fn node_pages(transaction: &Transaction<'_>) -> Result<u64, AttemptError> {
    let what = "cannot size workflow_node_executions";
    transaction
        .batch_execute("LOCK TABLE workflow_node_executions IN ACCESS SHARE MODE")
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    let row = transaction
        .query_one(
            "SELECT pg_relation_size('workflow_node_executions') / current_setting('block_size')::bigint",
            &[],
        )
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Checks that every table and column read exists and is readable by the role.
pub(super) async fn check_schema(
    transaction: &Transaction<'_>,
    role: &str,
) -> Result<(), AttemptError> {
    let (tables, columns) = schema::required_pairs();
    let rows = transaction
        .query(SCHEMA, &[&tables, &columns])
        .await
        .map_err(|e| AttemptError::from_postgres(&e, "cannot check the Dify tables"))?;
    let checks: Vec<ColumnCheck> = rows
        .iter()
        .map(|row| ColumnCheck {
            table: row.get(0),
            column: row.get(1),
            table_exists: row.get(2),
            can_select: row.get(3),
            column_exists: row.get(4),
            column_type: row.get(5),
        })
        .collect();
    let reader = schema::Reader {
        dialect: super::Dialect::Postgres,
        role,
        database: "",
    };
    match schema::verdict(&checks, reader) {
        Some(problem) => Err(AttemptError::Fatal(anyhow!(problem))),
        None => Ok(()),
    }
}

/// Every app of the selected workspace(s).
pub(super) async fn apps(
    transaction: &Transaction<'_>,
    workspace: Option<Uuid>,
) -> Result<Vec<rules::AppRow>, AttemptError> {
    let rows = transaction
        .query(APPS, &[&workspace])
        .await
        .map_err(|e| AttemptError::from_postgres(&e, "cannot read apps"))?;
    Ok(rows
        .iter()
        .map(|row| rules::AppRow {
            id: row.get(0),
            tenant_id: row.get(1),
            name: row.get(2),
            mode: row.get(3),
        })
        .collect())
}

/// Whether `workspace` names a workspace (`tenants`), asked when it has no app: a typo in
/// `DIFY_WORKSPACE_ID` must not look like a quiet workspace.
pub(super) async fn workspace_exists(
    transaction: &Transaction<'_>,
    workspace: Uuid,
) -> Result<bool, AttemptError> {
    let row = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
            &[&workspace],
        )
        .await
        .map_err(|e| AttemptError::from_postgres(&e, super::TENANTS_UNREADABLE))?;
    Ok(row.get(0))
}

/// The half-open window `[start, end)` in UTC, as the `timestamp without time zone` Dify writes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(crate) start: NaiveDateTime,
    pub(crate) end: NaiveDateTime,
}

impl Span {
    pub(super) fn of(window: Window) -> Span {
        Span {
            start: window.start(),
            // Exclusive, since Dify's timestamps may carry microseconds.
            end: window
                .last
                .succ_opt()
                .unwrap_or(window.last)
                .and_time(chrono::NaiveTime::MIN),
        }
    }
}

/// Streams the message groups of `app_ids` into the aggregator; returns the messages counted.
pub(super) async fn messages(
    transaction: &Transaction<'_>,
    app_ids: &[Uuid],
    span: &Span,
    apps: &rules::Apps,
    aggregator: &mut Aggregator,
) -> Result<u64, AttemptError> {
    let params: [&(dyn ToSql + Sync); 3] = [&app_ids, &span.start, &span.end];
    let what = "cannot read messages";
    let stream = transaction
        .query_raw(MESSAGES, params)
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    tokio::pin!(stream);
    let mut counted = 0;
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?
    {
        let group = message_group(&row).map_err(AttemptError::Fatal)?;
        counted += group.messages;
        aggregator
            .add(rules::message_usage(apps, group).map_err(AttemptError::Fatal)?)
            .map_err(|e| AttemptError::Fatal(e.into()))?;
    }
    Ok(counted)
}

fn message_group(row: &Row) -> anyhow::Result<rules::MessageGroup> {
    rules::MessageFlaws {
        negative_message_tokens: row.get(10),
        negative_answer_tokens: row.get(11),
        negative_total_price: row.get(12),
        malformed_currency: row.get(13),
    }
    .check(row.get(5))?;
    let count = |index: usize, what: &str| {
        u64::try_from(row.get::<_, i64>(index)).map_err(|_| {
            anyhow!(
                "messages hold a negative {what} for app {}",
                row.get::<_, &str>(0)
            )
        })
    };
    let price: &str = row.get(8);
    Ok(rules::MessageGroup {
        app_id: row.get(0),
        day: row.get::<_, NaiveDate>(1),
        user: row.get(2),
        provider: row.get(3),
        model: row.get(4),
        currency: row.get(5),
        message_tokens: count(6, "message_tokens")?,
        answer_tokens: count(7, "answer_tokens")?,
        total_price: price
            .parse::<Decimal>()
            .with_context(|| format!("messages.total_price sums to `{price}`, not a decimal"))?,
        messages: count(9, "message count")?,
    })
}

/// A slice of `workflow_node_executions` by physical page: `[first, end)`, or from `first` to
/// the end of the table (rows appended since the table was sized included) when `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pages {
    pub(crate) first: u64,
    pub(crate) end: Option<u64>,
}

impl Pages {
    /// The filter on `n.ctid`; PostgreSQL 14 and newer read only these pages (a TID range scan).
    /// Whole numbers only, so formatting them into the statement is safe.
    fn filter(self) -> String {
        let from = format!(" AND n.ctid >= '({},0)'::tid", self.first);
        match self.end {
            Some(end) => format!("{from} AND n.ctid < '({end},0)'::tid"),
            None if self.first == 0 => String::new(),
            None => from,
        }
    }
}

/// Streams the counted node executions of `app_ids` on `pages` into the aggregator; returns
/// (node executions read, node executions counted).
pub(super) async fn nodes(
    transaction: &Transaction<'_>,
    app_ids: &[Uuid],
    span: &Span,
    pages: Pages,
    apps: &rules::Apps,
    aggregator: &mut Aggregator,
) -> Result<(u64, u64), AttemptError> {
    let params: [&(dyn ToSql + Sync); 3] = [&app_ids, &span.start, &span.end];
    let what = "cannot read workflow node executions";
    let stream = transaction
        .query_raw(&format!("{NODES}{}", pages.filter()), params)
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    let mut stream = stream.boxed();
    let (mut read, mut counted) = (0, 0);
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?
    {
        read += 1;
        let node = rules::NodeRow {
            app_id: row.get(0),
            node_id: row.get(1),
            day: row.get(2),
            user: row.get(3),
            process_data: row.get(4),
            execution_metadata: row.get(5),
        };
        if let Some(usage) = rules::node_usage(apps, &node).map_err(AttemptError::Fatal)? {
            counted += 1;
            aggregator
                .add(usage)
                .map_err(|e| AttemptError::Fatal(e.into()))?;
        }
    }
    Ok((read, counted))
}

impl AttemptError {
    /// Sorts a driver error into worth-retrying or not, with one line that says what failed.
    pub(super) fn from_postgres(error: &tokio_postgres::Error, what: &str) -> AttemptError {
        let line = anyhow!("{what}: {}", describe(error));
        if is_transient(error) {
            AttemptError::Transient(line)
        } else {
            AttemptError::Fatal(line)
        }
    }
}
