//! The database source: usage read straight from Dify's PostgreSQL or MySQL (`docs/database.md`), a
//! sibling of the console API source in [`crate::source::console`]. Both feed the same [`Aggregator`].
//!
//! Each chunk of the window is one read-only `REPEATABLE READ` snapshot: the apps of the workspace(s), then the
//! messages of chat-type apps (summed by the server) and the node executions of production workflow
//! runs (streamed and folded in as they arrive), all filtered in SQL to the window. Memory is bounded
//! by the number of distinct records, never by the number of rows.
//!
//! Layout: [`settings`] (the variables), [`schema`] (tables, columns and the Dify migrations that
//! made them), [`rules`] (which rows count and whose they are, dialect-free), [`postgres`] (the first
//! dialect: connection, snapshot, SQL), [`mysql`] (the second: the same rows from MySQL, MariaDB or
//! OceanBase through one connection), [`statistics`] (Dify's own sums, for `reconcile`). What the
//! dialects share is here: how the apps of a snapshot are sorted, and how the tally becomes records.
//!
//! A stop signal ends the read at once: the snapshot is abandoned (the connection closes, and the
//! server drops the query), nothing is returned, and the chunk queues nothing:
//! [`JobError::Stopped`].
//!
//! A failed attempt that is transient (connection refused, reset or lost, server restarting, a
//! snapshot conflict) is retried from the start with a fresh aggregator, up to `MAX_RETRY` times with
//! the backoff of HTTP requests; anything else ends the run with one line that says what to fix.

/// The `workflow_runs.triggered_from` values that are not production (`docs/database.md#rules`), as
/// an SQL list, for every query that filters runs.
macro_rules! debug_triggers {
    () => {
        "('debugging', 'rag-pipeline-debugging', 'rag-pipeline-run')"
    };
}

/// The user a node execution's run counts for, by its creator's role (`r`, `eu`, `acc` of [`node_joins`]).
macro_rules! node_user {
    () => {
        "CASE r.created_by_role WHEN 'end_user' THEN COALESCE(eu.session_id, '') \
         WHEN 'account' THEN COALESCE(acc.email, '') ELSE '' END"
    };
}

/// The runs, their node executions and their creators, as both dialects join them.
macro_rules! node_joins {
    () => {
        " FROM workflow_runs r \
         JOIN workflow_node_executions n ON n.tenant_id = r.tenant_id AND n.app_id = r.app_id \
           AND n.workflow_id = r.workflow_id AND n.triggered_from = 'workflow-run' \
           AND n.workflow_run_id = r.id \
         LEFT JOIN end_users eu ON r.created_by_role = 'end_user' AND eu.id = r.created_by \
         LEFT JOIN accounts acc ON r.created_by_role = 'account' AND acc.id = r.created_by "
    };
}

mod archived;
mod mysql;
mod postgres;
mod rules;
mod schema;
pub(crate) mod settings;
mod shared_snapshot;
pub(crate) mod statistics;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(crate) use settings::{DatabaseSource, Dialect, SslMode};

use super::{Collected, Requests};
use crate::run::JobError;
use crate::run::window::Window;
use crate::usage::Aggregator;
use rules::Reading;

/// Why `DIFY_WORKSPACE_ID` could not be checked, in either dialect.
const TENANTS_UNREADABLE: &str = "DIFY_WORKSPACE_ID matches no app, and the workspaces (table tenants) cannot be read to \
     tell whether it names a workspace (GRANT SELECT ON tenants to the reader, or check the id)";

/// Why one attempt failed: worth another attempt or not.
#[derive(Debug)]
enum AttemptError {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

/// The database, for one run: every chunk is read in a snapshot of its own.
pub(crate) struct DatabaseReader<'c> {
    source: &'c DatabaseSource,
    max_retry: u32,
    cancel: &'c CancellationToken,
    requests: Requests,
}

impl<'c> DatabaseReader<'c> {
    pub(crate) fn new(
        source: &'c DatabaseSource,
        max_retry: u32,
        cancel: &'c CancellationToken,
    ) -> Self {
        DatabaseReader {
            source,
            max_retry,
            cancel,
            requests: Requests::default(),
        }
    }

    /// Connection attempts so far in the run (one snapshot each), and how many were retries.
    pub(crate) fn requests(&self) -> Requests {
        self.requests
    }

    /// Reads the window's usage, retrying transient failures `MAX_RETRY` times, until the stop
    /// signal ends it.
    pub(crate) async fn collect(&mut self, window: Window) -> Result<Collected, JobError> {
        let source = self.source;
        let mut attempt: u32 = 0;
        loop {
            self.requests.made += 1;
            let outcome = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(JobError::Stopped),
                outcome = collect_once(source, window) => outcome,
            };
            match outcome {
                Ok(collected) => return Ok(collected),
                Err(AttemptError::Transient(error)) if attempt < self.max_retry => {
                    attempt += 1;
                    self.requests.retried += 1;
                    let wait = crate::http::backoff(attempt);
                    warn!(
                        database = %source.address(),
                        error = format!("{error:#}"),
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "database read failed; retrying"
                    );
                    tokio::select! {
                        () = self.cancel.cancelled() => return Err(JobError::Stopped),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(AttemptError::Transient(error) | AttemptError::Fatal(error)) => {
                    return Err(JobError::Failed(error.context(format!(
                        "Dify database {} (DIFY_DATABASE_URL)",
                        source.address()
                    ))));
                }
            }
        }
    }
}

/// One attempt: a session, polled in this task alongside the reading of one snapshot.
async fn collect_once(source: &DatabaseSource, window: Window) -> Result<Collected, AttemptError> {
    match source.dialect {
        Dialect::Postgres => {
            let (mut client, connection) = postgres::connect(source).await?;
            shared_snapshot::polled(connection, read_snapshot(&mut client, source, window)).await
        }
        Dialect::Mysql => mysql::collect(source, window).await,
    }
}

/// No app at all: a workspace id that names no workspace (`exists` is `Some(false)`) is a
/// configuration error (the run stops, so the watermark cannot pass the days it hid); a real but
/// empty workspace is worth a warning.
fn no_apps(workspace: Option<uuid::Uuid>, exists: Option<bool>) -> Result<(), AttemptError> {
    if let Some(workspace) = workspace
        && exists == Some(false)
    {
        return Err(AttemptError::Fatal(anyhow::anyhow!(
            "DIFY_WORKSPACE_ID {workspace} matches no workspace (table tenants); check the id, or unset it to read every workspace"
        )));
    }
    warn!(
        workspace_id = workspace.map(|w| w.to_string()),
        "the database holds no app (in the selected workspace); nothing is read"
    );
    Ok(())
}

async fn read_snapshot(
    client: &mut tokio_postgres::Client,
    source: &DatabaseSource,
    window: Window,
) -> Result<Collected, AttemptError> {
    let mut transaction = postgres::snapshot(client).await?;
    let mut exported = None;
    if source.connections > 1 {
        match postgres::export_snapshot(&transaction).await {
            Ok(id) => exported = Some(id),
            Err(error) => {
                // The failed statement aborted the transaction: read alone, in a fresh one.
                warn!(
                    error = %crate::postgres::describe(&error),
                    requested = source.connections,
                    "the snapshot cannot be shared; reading through one connection"
                );
                transaction
                    .rollback()
                    .await
                    .map_err(|e| AttemptError::from_postgres(&e, "cannot end the snapshot"))?;
                transaction = postgres::snapshot(client).await?;
            }
        }
    }
    postgres::check_schema(&transaction, &source.user).await?;

    let app_rows = postgres::apps(&transaction, source.workspace_id).await?;
    if app_rows.is_empty() {
        let exists = match source.workspace_id {
            Some(workspace) => Some(postgres::workspace_exists(&transaction, workspace).await?),
            None => None,
        };
        no_apps(source.workspace_id, exists)?;
    }
    let sorted = Sorted::of(&app_rows);
    let span = postgres::Span::of(window);
    archived::warn_archived(
        &transaction,
        &source.user,
        &sorted.run_apps,
        &span,
        &sorted.apps,
    )
    .await?;
    let Sorted {
        collected,
        workspaces,
        apps,
        run_apps,
        message_apps,
    } = sorted;
    let plan = shared_snapshot::Plan {
        apps,
        run_apps,
        message_apps,
        span,
    };
    let tally = shared_snapshot::read(&transaction, exported, source, plan).await?;
    // Read-only: nothing to commit; ending the snapshot explicitly frees it on the server at once.
    transaction
        .rollback()
        .await
        .map_err(|e| AttemptError::Transient(anyhow::Error::new(e)))?;
    finish(collected, &workspaces, tally, window)
}

/// The apps of a snapshot sorted by how they are read, with what the records need to know of them.
struct Sorted {
    collected: Collected,
    /// (app id, its workspace) for every app read.
    workspaces: Vec<(Arc<str>, Arc<str>)>,
    apps: rules::Apps,
    run_apps: Vec<uuid::Uuid>,
    message_apps: Vec<uuid::Uuid>,
}

impl Sorted {
    /// Sorts `app_rows` (skipping modes the exporter does not read, with a `warn` each) and logs
    /// how many of each there are.
    fn of(app_rows: &[rules::AppRow]) -> Sorted {
        let mut sorted = Sorted {
            collected: Collected::default(),
            workspaces: Vec::new(),
            apps: rules::Apps::new(),
            run_apps: Vec::new(),
            message_apps: Vec::new(),
        };
        let mut workspaces = BTreeSet::new();
        for app in app_rows {
            *sorted
                .collected
                .apps_by_mode
                .entry(app.app_mode())
                .or_default() += 1;
            workspaces.insert(app.tenant_id);
            match app.reading() {
                Some(Reading::Runs) => sorted.run_apps.push(app.id),
                Some(Reading::Messages) => sorted.message_apps.push(app.id),
                None => {
                    warn!(app_id = %app.id, name = %app.name, mode = %app.mode, "app mode not collected");
                    continue;
                }
            }
            let id: Arc<str> = Arc::from(app.id.to_string());
            sorted
                .workspaces
                .push((id.clone(), Arc::from(app.tenant_id.to_string())));
            sorted.apps.insert(
                app.id,
                rules::AppInfo {
                    id,
                    name: Arc::from(app.name.as_str()),
                },
            );
        }
        info!(
            apps = app_rows.len(),
            workspaces = workspaces.len(),
            read_by_runs = sorted.run_apps.len(),
            read_by_messages = sorted.message_apps.len(),
            "apps read from the database"
        );
        sorted
    }
}

/// The tally of a snapshot as the records of the run, with the line that counts what was read.
fn finish(
    mut collected: Collected,
    workspaces: &[(Arc<str>, Arc<str>)],
    tally: shared_snapshot::Tally,
    window: Window,
) -> Result<Collected, AttemptError> {
    let mut aggregator = Aggregator::default();
    for (app, workspace) in workspaces {
        aggregator.set_workspace(app.clone(), workspace.clone());
    }
    aggregator
        .absorb(tally.aggregator)
        .map_err(|e| AttemptError::Fatal(e.into()))?;
    collected.records = aggregator.into_records();
    info!(
        from = %window.first,
        to = %window.last,
        messages = tally.messages,
        nodes_read = tally.nodes_read,
        nodes_counted = tally.nodes_counted,
        records = collected.records.len(),
        "usage read from the database"
    );
    Ok(collected)
}
