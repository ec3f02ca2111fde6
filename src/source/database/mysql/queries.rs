//! The MySQL queries, one for each of PostgreSQL's, filtered on the server the same way. What
//! differs, and why:
//!
//! - ids are `CHAR(36)` and JSON is `LONGTEXT` (Dify's `StringUUID` and `LongText` on MySQL): read
//!   as text, parsed here, as on PostgreSQL;
//! - app ids travel as `IN (?, …)` lists, at most [`APPS_PER_QUERY`] at a time (no arrays); every
//!   group and row belongs to one app, so a split list splits no group;
//! - the text keys of a message group are grouped as bytes (`CAST(… AS BINARY)`): MySQL's default
//!   collations are case- and trailing-space-insensitive and would merge `gpt-4o` with `GPT-4o`;
//! - sums are cast back to whole numbers and text (`SUM` of an integer is a `DECIMAL` there), and a
//!   sum of no price is `0`, not `0.0000000`, so that records and ledger read as PostgreSQL's;
//! - `messages.created_at` is local time of the session's zone: the window is converted to it for
//!   the index, the day back to UTC for the group (`super` says why).

use anyhow::{Context as _, anyhow, bail};
use chrono::NaiveDate;
use futures::TryStreamExt as _;
use mysql_async::prelude::{FromValue, Queryable as _};
use mysql_async::{Conn, Row, Value};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::super::postgres::Span;
use super::super::schema::{self, ColumnCheck};
use super::super::statistics::{StatisticDay, Statistics};
use super::super::{AttemptError, rules};
use super::{DatabaseSource, archived};
use crate::run::window::Window;
use crate::usage::Aggregator;

/// App ids per `IN` list, far below the protocol's 65,535 placeholders.
const APPS_PER_QUERY: usize = 1000;

/// `messages.created_at` (local time) as UTC.
macro_rules! message_utc {
    () => {
        "CONVERT_TZ(m.created_at, @@session.time_zone, '+00:00')"
    };
}

/// The UTC window bounds `?` as the session's local time, for the index on `messages.created_at`.
macro_rules! local_window {
    () => {
        "m.created_at >= CONVERT_TZ(?, '+00:00', @@session.time_zone) \
         AND m.created_at < CONVERT_TZ(?, '+00:00', @@session.time_zone)"
    };
}

const MESSAGES: &str = concat!(
    "SELECT m.app_id, DATE(",
    message_utc!(),
    "), \
       CAST(COALESCE(NULLIF(eu.session_id, ''), acc.email, '') AS BINARY), \
       CAST(COALESCE(m.model_provider, '') AS BINARY), CAST(COALESCE(m.model_id, '') AS BINARY), \
       CAST(COALESCE(m.currency, '') AS BINARY), \
       CAST(SUM(m.message_tokens) AS SIGNED), CAST(SUM(m.answer_tokens) AS SIGNED), \
       CAST(SUM(m.total_price) AS CHAR), COUNT(*), \
       MIN(CASE WHEN m.message_tokens < 0 THEN m.id END), \
       MIN(CASE WHEN m.answer_tokens < 0 THEN m.id END), \
       MIN(CASE WHEN m.total_price < 0 THEN m.id END), \
       MIN(CASE WHEN CHAR_LENGTH(m.currency) > 0 AND NOT (m.currency REGEXP '^[A-Za-z]{3}$') THEN m.id END) \
     FROM messages m \
     LEFT JOIN end_users eu ON eu.id = m.from_end_user_id \
     LEFT JOIN accounts acc ON acc.id = m.from_account_id \
     WHERE ",
    local_window!(),
    " AND (m.invoke_from IS NULL OR m.invoke_from <> 'debugger') AND m.app_id IN "
);

const MESSAGES_GROUP: &str = " GROUP BY 1, 2, 3, 4, 5, 6";

const NODES: &str = concat!(
    "SELECT r.app_id, n.id, DATE(r.created_at), ",
    node_user!(),
    ", n.process_data, n.execution_metadata",
    node_joins!(),
    "WHERE r.created_at >= ? AND r.created_at < ? AND r.triggered_from NOT IN ",
    debug_triggers!(),
    " AND n.created_at >= ? AND n.node_type NOT IN ('iteration', 'loop') AND r.app_id IN "
);

/// Archived production runs per app and UTC day of the run (`run_created_at` is UTC, as the run's was).
const ARCHIVED: &str = concat!(
    "SELECT app_id, DATE(run_created_at), COUNT(*) FROM workflow_archive_logs \
     WHERE run_created_at >= ? AND run_created_at < ? AND run_triggered_from NOT IN ",
    debug_triggers!(),
    " AND app_id IN "
);

const MESSAGE_SUMS: &str = concat!(
    "SELECT m.app_id, DATE(",
    message_utc!(),
    "), CAST(SUM(m.message_tokens) + SUM(m.answer_tokens) AS SIGNED), \
       CAST(SUM(m.total_price) AS CHAR) \
     FROM messages m WHERE ",
    local_window!(),
    " AND m.invoke_from <> 'debugger' AND m.app_id IN "
);

const RUN_SUMS: &str = "SELECT app_id, DATE(created_at), CAST(COALESCE(SUM(total_tokens), 0) AS SIGNED), NULL \
     FROM workflow_runs WHERE created_at >= ? AND created_at < ? AND triggered_from = 'app-run' \
       AND app_id IN ";

/// MySQL's "no such table" and "SELECT command denied" (for a table or one of its columns).
const NO_SUCH_TABLE: u16 = 1146;
const DENIED: [u16; 2] = [1142, 1143];

/// `(?, ?, …)` for `count` values.
fn marks(count: usize) -> String {
    format!("({})", vec!["?"; count].join(", "))
}

/// The statement `head` + the `IN` list of `ids` + `tail`, with `before` bound ahead of the ids.
fn in_apps(head: &str, ids: &[Uuid], tail: &str, before: &[Value]) -> (String, Vec<Value>) {
    let mut params = before.to_vec();
    params.extend(ids.iter().map(|id| Value::from(id.to_string())));
    (format!("{head}{}{tail}", marks(ids.len())), params)
}

fn bounds(span: &Span) -> [Value; 2] {
    [Value::from(span.start), Value::from(span.end)]
}

/// Column `index` of `row`, or an error naming `column` (never a panic on an odd value).
fn take<T: FromValue>(row: &mut Row, index: usize, column: &str) -> anyhow::Result<T> {
    match row.take_opt::<T, usize>(index) {
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) => bail!(
            "{column} holds a value that is not the {} the exporter reads",
            std::any::type_name::<T>()
        ),
        None => bail!("the server returned no {column}"),
    }
}

fn take_uuid(row: &mut Row, index: usize, column: &str) -> anyhow::Result<Uuid> {
    let text: String = take(row, index, column)?;
    Uuid::parse_str(&text).with_context(|| format!("{column} holds `{text}`, which is not a UUID"))
}

fn take_opt_uuid(row: &mut Row, index: usize, column: &str) -> anyhow::Result<Option<Uuid>> {
    let text: Option<String> = take(row, index, column)?;
    text.map(|text| {
        Uuid::parse_str(&text)
            .with_context(|| format!("{column} holds `{text}`, which is not a UUID"))
    })
    .transpose()
}

fn take_count(row: &mut Row, index: usize, column: &str) -> anyhow::Result<u64> {
    let value: i64 = take(row, index, column)?;
    u64::try_from(value).map_err(|_| anyhow!("{column} sums to {value}, below zero"))
}

/// Streams the rows of `statement` into `each`, stopping at its first error.
async fn each_row(
    conn: &mut Conn,
    statement: String,
    params: Vec<Value>,
    what: &str,
    mut each: impl FnMut(Row) -> Result<(), AttemptError>,
) -> Result<(), AttemptError> {
    let mut result = conn
        .exec_iter(statement, params)
        .await
        .map_err(|e| AttemptError::from_mysql(&e, what))?;
    if let Some(mut stream) = result
        .stream::<Row>()
        .await
        .map_err(|e| AttemptError::from_mysql(&e, what))?
    {
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| AttemptError::from_mysql(&e, what))?
        {
            each(row)?;
        }
    }
    Ok(())
}

/// Checks that every table and column read exists and is readable by the account: a table is
/// probed with `SELECT … LIMIT 0` (MySQL's privilege views hide what an account may not read, so
/// they cannot tell "missing" from "not granted"), the columns of readable ones come from
/// `information_schema.COLUMNS`.
pub(super) async fn check_schema(
    conn: &mut Conn,
    reader: schema::Reader<'_>,
) -> Result<(), AttemptError> {
    let what = "cannot check the Dify tables";
    let (tables, columns) = schema::required_pairs();
    let mut state: Vec<(&str, bool, bool)> = Vec::new();
    for table in &tables {
        if state.iter().any(|(t, _, _)| t == table) {
            continue;
        }
        match conn
            .query_drop(format!("SELECT 1 FROM `{table}` LIMIT 0"))
            .await
        {
            Ok(()) => state.push((table, true, true)),
            Err(mysql_async::Error::Server(e)) if e.code == NO_SUCH_TABLE => {
                state.push((table, false, false));
            }
            Err(mysql_async::Error::Server(e)) if DENIED.contains(&e.code) => {
                state.push((table, true, false));
            }
            Err(e) => return Err(AttemptError::from_mysql(&e, what)),
        }
    }
    let readable: Vec<&str> = state
        .iter()
        .filter(|(_, _, readable)| *readable)
        .map(|(t, _, _)| *t)
        .collect();
    let mut found: Vec<(String, String, String)> = Vec::new();
    if !readable.is_empty() {
        let statement = format!(
            "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN {}",
            marks(readable.len())
        );
        let params: Vec<Value> = readable.iter().map(|t| Value::from(*t)).collect();
        found = conn
            .exec(statement, params)
            .await
            .map_err(|e| AttemptError::from_mysql(&e, what))?;
    }
    let checks: Vec<ColumnCheck> = tables
        .iter()
        .zip(&columns)
        .map(|(table, column)| {
            let (_, exists, can_select) = state
                .iter()
                .find(|(t, _, _)| t == table)
                .copied()
                .unwrap_or((table, false, false));
            let column_type = found
                .iter()
                .find(|(t, c, _)| t == table && c == column)
                .map(|(_, _, kind)| kind.to_lowercase());
            ColumnCheck {
                table: (*table).to_owned(),
                column: (*column).to_owned(),
                table_exists: exists,
                can_select,
                column_exists: column_type.is_some(),
                column_type,
            }
        })
        .collect();
    match schema::verdict(&checks, reader) {
        Some(problem) => Err(AttemptError::Fatal(anyhow!(problem))),
        None => Ok(()),
    }
}

/// Every app of the selected workspace(s).
pub(super) async fn apps(
    conn: &mut Conn,
    workspace: Option<Uuid>,
) -> Result<Vec<rules::AppRow>, AttemptError> {
    let workspace = Value::from(workspace.map(|w| w.to_string()));
    let mut apps = Vec::new();
    each_row(
        conn,
        "SELECT id, tenant_id, name, mode FROM apps WHERE ? IS NULL OR tenant_id = ? \
         ORDER BY tenant_id, id"
            .to_owned(),
        vec![workspace.clone(), workspace],
        "cannot read apps",
        |mut row| {
            let mut app = || -> anyhow::Result<rules::AppRow> {
                Ok(rules::AppRow {
                    id: take_uuid(&mut row, 0, "apps.id")?,
                    tenant_id: take_uuid(&mut row, 1, "apps.tenant_id")?,
                    name: take(&mut row, 2, "apps.name")?,
                    mode: take(&mut row, 3, "apps.mode")?,
                })
            };
            apps.push(app().map_err(AttemptError::Fatal)?);
            Ok(())
        },
    )
    .await?;
    Ok(apps)
}

/// Whether `workspace` names a workspace (`tenants`), asked when it has no app.
pub(super) async fn workspace_exists(
    conn: &mut Conn,
    workspace: Uuid,
) -> Result<bool, AttemptError> {
    let found: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM tenants WHERE id = ?",
            (workspace.to_string(),),
        )
        .await
        .map_err(|e| AttemptError::from_mysql(&e, super::super::TENANTS_UNREADABLE))?;
    Ok(found.unwrap_or(0) > 0)
}

/// Streams the message groups of `app_ids` into the aggregator; returns the messages counted.
pub(super) async fn messages(
    conn: &mut Conn,
    app_ids: &[Uuid],
    span: &Span,
    apps: &rules::Apps,
    aggregator: &mut Aggregator,
) -> Result<u64, AttemptError> {
    let mut counted = 0;
    for ids in app_ids.chunks(APPS_PER_QUERY) {
        let (statement, params) = in_apps(MESSAGES, ids, MESSAGES_GROUP, &bounds(span));
        each_row(
            conn,
            statement,
            params,
            "cannot read messages",
            |mut row| {
                let group = message_group(&mut row).map_err(AttemptError::Fatal)?;
                counted += group.messages;
                aggregator
                    .add(rules::message_usage(apps, group).map_err(AttemptError::Fatal)?)
                    .map_err(|e| AttemptError::Fatal(e.into()))
            },
        )
        .await?;
    }
    Ok(counted)
}

fn message_group(row: &mut Row) -> anyhow::Result<rules::MessageGroup> {
    let currency: String = take(row, 5, "messages.currency")?;
    rules::MessageFlaws {
        negative_message_tokens: take_opt_uuid(row, 10, "messages.id")?,
        negative_answer_tokens: take_opt_uuid(row, 11, "messages.id")?,
        negative_total_price: take_opt_uuid(row, 12, "messages.id")?,
        malformed_currency: take_opt_uuid(row, 13, "messages.id")?,
    }
    .check(&currency)?;
    let app_id = take_uuid(row, 0, "messages.app_id")?;
    // NULL where every price is: zero, written as PostgreSQL's `COALESCE(…, 0)` writes it.
    let price: Option<String> = take(row, 8, "the sum of messages.total_price")?;
    let price = price.as_deref().unwrap_or("0");
    Ok(rules::MessageGroup {
        app_id,
        day: take::<NaiveDate>(row, 1, "the day of messages.created_at")?,
        user: take(row, 2, "the message's user")?,
        provider: take(row, 3, "messages.model_provider")?,
        model: take(row, 4, "messages.model_id")?,
        currency,
        message_tokens: take_count(row, 6, "messages.message_tokens")
            .with_context(|| format!("messages of app {app_id}"))?,
        answer_tokens: take_count(row, 7, "messages.answer_tokens")
            .with_context(|| format!("messages of app {app_id}"))?,
        total_price: price
            .parse::<Decimal>()
            .with_context(|| format!("messages.total_price sums to `{price}`, not a decimal"))?,
        messages: take_count(row, 9, "the message count")?,
    })
}

/// Streams the counted node executions of `app_ids` into the aggregator; returns (node
/// executions read, node executions counted).
pub(super) async fn nodes(
    conn: &mut Conn,
    app_ids: &[Uuid],
    span: &Span,
    apps: &rules::Apps,
    aggregator: &mut Aggregator,
) -> Result<(u64, u64), AttemptError> {
    let (mut read, mut counted) = (0, 0);
    let [start, end] = bounds(span);
    let before = [start.clone(), end, start];
    for ids in app_ids.chunks(APPS_PER_QUERY) {
        let (statement, params) = in_apps(NODES, ids, "", &before);
        each_row(
            conn,
            statement,
            params,
            "cannot read workflow node executions",
            |mut row| {
                read += 1;
                let node = node_row(&mut row).map_err(AttemptError::Fatal)?;
                let usage = rules::node_usage(
                    apps,
                    &rules::NodeRow {
                        app_id: node.0,
                        node_id: node.1,
                        day: node.2,
                        user: &node.3,
                        process_data: node.4.as_deref(),
                        execution_metadata: node.5.as_deref(),
                    },
                )
                .map_err(AttemptError::Fatal)?;
                if let Some(usage) = usage {
                    counted += 1;
                    aggregator
                        .add(usage)
                        .map_err(|e| AttemptError::Fatal(e.into()))?;
                }
                Ok(())
            },
        )
        .await?;
    }
    Ok((read, counted))
}

type NodeFields = (
    Uuid,
    Uuid,
    NaiveDate,
    String,
    Option<String>,
    Option<String>,
);

fn node_row(row: &mut Row) -> anyhow::Result<NodeFields> {
    Ok((
        take_uuid(row, 0, "workflow_runs.app_id")?,
        take_uuid(row, 1, "workflow_node_executions.id")?,
        take(row, 2, "the day of workflow_runs.created_at")?,
        take(row, 3, "the run's creator")?,
        take(row, 4, "workflow_node_executions.process_data")?,
        take(row, 5, "workflow_node_executions.execution_metadata")?,
    ))
}

/// The archived app-days of `app_ids` in `span`, or `None` where Dify has no such table (before
/// 1.12) or there is nothing to ask; an account that may not read it is told the `GRANT` once.
pub(super) async fn archived(
    conn: &mut Conn,
    app_ids: &[Uuid],
    span: &Span,
    reader: schema::Reader<'_>,
) -> Result<Option<Vec<(Uuid, NaiveDate, i64)>>, AttemptError> {
    let what = "cannot check workflow_archive_logs";
    let mut days = Vec::new();
    for ids in app_ids.chunks(APPS_PER_QUERY) {
        let (statement, params) =
            in_apps(ARCHIVED, ids, " GROUP BY 1, 2 ORDER BY 1, 2", &bounds(span));
        let rows: Vec<Row> = match conn.exec(statement, params).await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(e)) if e.code == NO_SUCH_TABLE => return Ok(None),
            Err(mysql_async::Error::Server(e)) if DENIED.contains(&e.code) => {
                archived::warn_unreadable(&format!(
                    "GRANT SELECT ON `{}`.`workflow_archive_logs` TO {};",
                    reader.database, reader.role
                ));
                return Ok(None);
            }
            Err(e) => return Err(AttemptError::from_mysql(&e, what)),
        };
        for mut row in rows {
            days.push((
                take_uuid(&mut row, 0, "workflow_archive_logs.app_id")
                    .map_err(AttemptError::Fatal)?,
                take(
                    &mut row,
                    1,
                    "the day of workflow_archive_logs.run_created_at",
                )
                .map_err(AttemptError::Fatal)?,
                take(&mut row, 2, "the archived run count").map_err(AttemptError::Fatal)?,
            ));
        }
    }
    Ok(Some(days))
}

/// Dify's own statistics of `window` (`exporter reconcile`), the sums of `super::super::statistics`
/// in MySQL's SQL, in one snapshot.
pub(in crate::source::database) async fn statistics(
    source: &DatabaseSource,
    window: Window,
) -> Result<Statistics, AttemptError> {
    let mut conn = super::connect(source).await?;
    let snapshot = super::snapshot(&mut conn).await?;
    check_schema(&mut conn, snapshot.reader(source)).await?;
    let rows = apps(&mut conn, source.workspace_id).await?;
    let (mut statistics, by_runs, by_messages) = Statistics::of_apps(rows);
    let span = Span::of(window);
    for (head, ids) in [(MESSAGE_SUMS, &by_messages), (RUN_SUMS, &by_runs)] {
        for ids in ids.chunks(APPS_PER_QUERY) {
            let (statement, params) = in_apps(head, ids, " GROUP BY 1, 2", &bounds(&span));
            each_row(
                &mut conn,
                statement,
                params,
                "cannot sum Dify's statistics",
                |mut row| {
                    let app_id = take_uuid(&mut row, 0, "app_id").map_err(AttemptError::Fatal)?;
                    let day = take(&mut row, 1, "the day").map_err(AttemptError::Fatal)?;
                    let tokens: i64 =
                        take(&mut row, 2, "the token sum").map_err(AttemptError::Fatal)?;
                    let price: Option<String> =
                        take(&mut row, 3, "the price sum").map_err(AttemptError::Fatal)?;
                    // NULL: no price (workflow runs), or every message's price NULL (zero, as on PostgreSQL).
                    let price = price.or_else(|| (head == MESSAGE_SUMS).then(|| "0".to_owned()));
                    statistics.days.push(
                        StatisticDay::new(app_id, day, tokens, price.as_deref())
                            .map_err(AttemptError::Fatal)?,
                    );
                    Ok(())
                },
            )
            .await?;
        }
    }
    let _ = conn.disconnect().await;
    Ok(statistics)
}
