//! `GET /console/api/apps/{app_id}/workflow-archived-logs` (Dify 1.12, `WorkflowArchivedLogApi` in
//! `api/controllers/console/app/workflow_app_log.py`): the runs Dify's archiving moved out of the database,
//! as `WorkflowAppService.get_paginate_workflow_archive_logs` lists them. Workflow apps only (any other mode
//! is "app not found"); `page` and `limit` (1 to 100) and nothing else, so no date filter: newest run first
//! (`run_created_at desc`), only rows with an app log. Each row is `workflow_archived_log_partial_fields`:
//! the run summary (`WorkflowArchiveLog.workflow_run_summary`), `trigger_metadata` (`{}` without one), the
//! creator, and `created_at` = the app log's creation time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::json;

use super::SimState;
use uuid::Uuid;

use super::data::{Mode, Run};
use super::routes::{
    ApiResult, AppListing, Params, account_json, app_listing, end_user_json, page_json, run_facts,
};

/// The id of a run's `workflow_archive_logs` row.
pub(crate) fn archive_log_id(run: &Run) -> Uuid {
    Uuid::from_u128(run.id.as_u128() ^ 0x0A4C_11FE)
}

pub(crate) async fn workflow_archived_logs(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    query: Params,
) -> ApiResult {
    let AppListing {
        app, page, limit, ..
    } = app_listing(&state, &headers, &app_id, &[Mode::Workflow], query)?;
    let ws = &state.workspace;
    let (body, _) = page_json(&app.archived_runs, page, limit, |run| {
        let facts = run_facts(ws, app, run);
        json!({
            "id": archive_log_id(run),
            "workflow_run": {
                "id": run.id, "status": run.status.as_str(),
                "triggered_from": run.triggered_from.as_str(),
                "elapsed_time": facts.finished_at - run.created_at,
                "total_tokens": facts.total_tokens,
            },
            "trigger_metadata": {},
            "created_by_account": account_json(ws, run.creator),
            "created_by_end_user": end_user_json(ws, run.creator),
            "created_at": run.created_at,
        })
    });
    Ok(Json(body))
}
