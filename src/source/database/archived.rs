//! Archived workflow runs: since Dify 1.12 a retention job can move old runs to object storage,
//! leaving one row per run in `workflow_archive_logs` (`api/models/workflow.py`, `WorkflowArchiveLog`)
//! and deleting the run and its node executions. Their usage is then gone from the database, so
//! every app-day of the window with archived production runs gets one `warn` instead of a silently
//! smaller number. Older Dify has no such table: nothing to check. A role that may not read it is
//! told the `GRANT` once, and the read goes on. The query here is PostgreSQL's; `mysql` asks the same
//! and reports through [`warn_days`] and [`warn_unreadable`].

use chrono::NaiveDate;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tracing::warn;
use uuid::Uuid;

use super::postgres::Span;
use super::{AttemptError, rules};

const TABLE: &str = "SELECT to_regclass('workflow_archive_logs') IS NOT NULL, \
       COALESCE(has_table_privilege(to_regclass('workflow_archive_logs'), 'SELECT'), false)";

/// Archived production runs per app and UTC day of the run (`run_created_at`, naive UTC like
/// `workflow_runs.created_at`); the debug triggers are those the node query leaves out.
const ARCHIVED: &str = concat!(
    "SELECT app_id, run_created_at::date, count(*) FROM workflow_archive_logs \
     WHERE app_id = ANY($1) AND run_created_at >= $2 AND run_created_at < $3 \
       AND run_triggered_from NOT IN ",
    debug_triggers!(),
    " GROUP BY 1, 2 ORDER BY 1, 2"
);

/// One `warn` per app-day of `app_ids` in `span` whose runs Dify archived.
pub(super) async fn warn_archived(
    transaction: &Transaction<'_>,
    role: &str,
    app_ids: &[Uuid],
    span: &Span,
    apps: &rules::Apps,
) -> Result<(), AttemptError> {
    let what = "cannot check workflow_archive_logs";
    let table = transaction
        .query_one(TABLE, &[])
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    let (exists, readable): (bool, bool) = (table.get(0), table.get(1));
    if !exists || app_ids.is_empty() {
        return Ok(());
    }
    if !readable {
        warn_unreadable(&format!("GRANT SELECT ON workflow_archive_logs TO {role};"));
        return Ok(());
    }
    let params: [&(dyn ToSql + Sync); 3] = [&app_ids, &span.start, &span.end];
    let rows = transaction
        .query(ARCHIVED, &params)
        .await
        .map_err(|e| AttemptError::from_postgres(&e, what))?;
    warn_days(
        rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))),
        apps,
    );
    Ok(())
}

/// The one `warn` for a role that may not read `workflow_archive_logs` (`grant` is the statement that fixes it).
pub(super) fn warn_unreadable(grant: &str) {
    warn!(
        grant,
        "cannot see which workflow runs Dify archived (their usage is missing): the role lacks SELECT on workflow_archive_logs; {grant}"
    );
}

/// One `warn` per (app, UTC day, archived runs).
pub(super) fn warn_days(
    days: impl IntoIterator<Item = (Uuid, NaiveDate, i64)>,
    apps: &rules::Apps,
) {
    for (app_id, day, runs) in days {
        let name = apps.get(&app_id).map_or("", |app| &app.name);
        warn!(
            app_id = %app_id,
            app_name = %name,
            day = %day,
            archived_runs = runs,
            "workflow runs of this app-day are archived: their node usage is no longer in the database and is not counted"
        );
    }
}
