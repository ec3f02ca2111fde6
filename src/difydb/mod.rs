//! The database source: usage read straight from Dify's PostgreSQL (DIFY-DB.md), a sibling of the
//! console API source in [`crate::dify`]. Both feed the same [`Aggregator`].
//!
//! One run is one read-only `REPEATABLE READ` snapshot: the apps of the workspace(s), then the
//! messages of chat-type apps (summed by the server) and the node executions of production workflow
//! runs (streamed and folded in as they arrive), all filtered in SQL to the window. Memory is bounded
//! by the number of distinct records, never by the number of rows.
//!
//! Layout: [`settings`] (the variables), [`schema`] (tables, columns and the Dify migrations that
//! made them), [`rules`] (DIFY-DB.md section 3, dialect-free), [`postgres`] (connection, snapshot,
//! SQL). A MySQL dialect would be one more module next to `postgres` producing the same rows.
//!
//! A stop signal ends the read at once: the snapshot is abandoned (the connection closes, and the
//! server drops the query), nothing is returned, and the run queues nothing, as with the API source.
//!
//! A failed attempt that is transient (connection refused, reset or lost, server restarting, a
//! snapshot conflict) is retried from the start with a fresh aggregator, up to `MAX_RETRY` times with
//! the backoff of HTTP requests; anything else ends the run with one line that says what to fix.

mod postgres;
mod rules;
mod schema;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use settings::DatabaseSource;

use crate::dify::AppMode;
use crate::export::{Aggregator, UsageRecord};
use crate::http::RequestError;
use crate::window::Window;
use rules::Reading;

/// What a collection found, for the run summary.
#[derive(Debug, Default)]
pub struct Collected {
    pub records: Vec<UsageRecord>,
    /// Apps found, per mode.
    pub apps_by_mode: BTreeMap<AppMode, usize>,
    /// Connection attempts made, retries included.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
}

/// Why one attempt failed: worth another attempt or not.
#[derive(Debug)]
enum AttemptError {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Reads the window's usage from the database, retrying transient failures `max_retry` times,
/// until `cancel` stops it.
pub async fn collect(
    source: &DatabaseSource,
    window: Window,
    max_retry: u32,
    cancel: &CancellationToken,
) -> Result<Collected> {
    let stopped = || {
        anyhow::Error::new(RequestError::Cancelled {
            endpoint: format!("the Dify database {}", source.address()),
        })
    };
    let mut attempt: u32 = 0;
    loop {
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(stopped()),
            outcome = collect_once(source, window) => outcome,
        };
        match outcome {
            Ok(mut collected) => {
                collected.attempts = u64::from(attempt) + 1;
                collected.retries = u64::from(attempt);
                return Ok(collected);
            }
            Err(AttemptError::Transient(error)) if attempt < max_retry => {
                attempt += 1;
                let wait = crate::http::backoff(attempt);
                warn!(
                    database = %source.address(),
                    error = format!("{error:#}"),
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "database read failed; retrying"
                );
                tokio::select! {
                    () = cancel.cancelled() => return Err(stopped()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(AttemptError::Transient(error) | AttemptError::Fatal(error)) => {
                return Err(error.context(format!(
                    "Dify database {} (DIFY_DATABASE_URL)",
                    source.address()
                )));
            }
        }
    }
}

/// One attempt: a session, polled in this task alongside the reading of one snapshot.
async fn collect_once(source: &DatabaseSource, window: Window) -> Result<Collected, AttemptError> {
    let (mut client, connection) = postgres::connect(source).await?;
    let read = read_snapshot(&mut client, source, window);
    tokio::pin!(read);
    tokio::select! {
        biased;
        outcome = &mut read => outcome,
        ended = connection => {
            // The server's last words (why it ended the session) may be waiting for the reading
            // already: they say more than "connection closed".
            read.as_mut()
                .now_or_never()
                .unwrap_or_else(|| Err(postgres::connection_ended(ended)))
        }
    }
}

async fn read_snapshot(
    client: &mut tokio_postgres::Client,
    source: &DatabaseSource,
    window: Window,
) -> Result<Collected, AttemptError> {
    let transaction = postgres::snapshot(client).await?;
    postgres::check_schema(&transaction, &source.user).await?;

    let app_rows = postgres::apps(&transaction, source.workspace_id).await?;
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

    let span = postgres::Span {
        start: window.start(),
        // Exclusive, since Dify's timestamps may carry microseconds.
        end: window
            .last
            .succ_opt()
            .unwrap_or(window.last)
            .and_time(chrono::NaiveTime::MIN),
    };
    let messages =
        postgres::messages(&transaction, &message_apps, &span, &apps, &mut aggregator).await?;
    let (nodes_read, nodes_counted) =
        postgres::nodes(&transaction, &run_apps, &span, &apps, &mut aggregator).await?;
    // Read-only: nothing to commit; ending the snapshot explicitly frees it on the server at once.
    transaction
        .rollback()
        .await
        .map_err(|e| AttemptError::Transient(anyhow::Error::new(e)))?;
    collected.records = aggregator.into_records();
    info!(
        from = %window.first,
        to = %window.last,
        messages,
        nodes_read,
        nodes_counted,
        records = collected.records.len(),
        "usage read from the database"
    );
    Ok(collected)
}
