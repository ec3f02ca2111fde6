//! The database source: usage read straight from Dify's PostgreSQL (`docs/database.md`), a sibling of the
//! console API source in [`crate::source::console`]. Both feed the same [`Aggregator`].
//!
//! Each chunk of the window is one read-only `REPEATABLE READ` snapshot: the apps of the workspace(s), then the
//! messages of chat-type apps (summed by the server) and the node executions of production workflow
//! runs (streamed and folded in as they arrive), all filtered in SQL to the window. Memory is bounded
//! by the number of distinct records, never by the number of rows.
//!
//! Layout: [`settings`] (the variables), [`schema`] (tables, columns and the Dify migrations that
//! made them), [`rules`] (which rows count and whose they are, dialect-free), [`postgres`] (the first
//! dialect: connection, snapshot, SQL), [`statistics`] (Dify's own sums, for `reconcile`). A MySQL dialect is one more module next to `postgres`
//! producing the same rows.
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

mod archived;
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

pub(crate) use settings::{DatabaseSource, SslMode};

use super::{Collected, Requests};
use crate::run::JobError;
use crate::run::window::Window;
use crate::usage::Aggregator;
use rules::Reading;

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
    let (mut client, connection) = postgres::connect(source).await?;
    shared_snapshot::polled(connection, read_snapshot(&mut client, source, window)).await
}

/// No app at all: a workspace id that names no workspace is a configuration error (the run stops,
/// so the watermark cannot pass the days it hid); a real but empty workspace is worth a warning.
async fn no_apps(
    transaction: &tokio_postgres::Transaction<'_>,
    workspace: Option<uuid::Uuid>,
) -> Result<(), AttemptError> {
    if let Some(workspace) = workspace
        && !postgres::workspace_exists(transaction, workspace).await?
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
        no_apps(&transaction, source.workspace_id).await?;
    }
    let mut collected = Collected::default();
    let mut aggregator = Aggregator::default();
    let mut apps = rules::Apps::new();
    let (mut run_apps, mut message_apps) = (Vec::new(), Vec::new());
    let mut workspaces = BTreeSet::new();
    for app in &app_rows {
        *collected.apps_by_mode.entry(app.app_mode()).or_default() += 1;
        workspaces.insert(app.tenant_id);
        match app.reading() {
            Some(Reading::Runs) => run_apps.push(app.id),
            Some(Reading::Messages) => message_apps.push(app.id),
            None => {
                warn!(app_id = %app.id, name = %app.name, mode = %app.mode, "app mode not collected");
                continue;
            }
        }
        let id: Arc<str> = Arc::from(app.id.to_string());
        aggregator.set_workspace(id.clone(), Arc::from(app.tenant_id.to_string()));
        apps.insert(
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
        read_by_runs = run_apps.len(),
        read_by_messages = message_apps.len(),
        "apps read from the database"
    );

    let span = postgres::Span::of(window);
    archived::warn_archived(&transaction, &source.user, &run_apps, &span, &apps).await?;
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
