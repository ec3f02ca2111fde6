//! Workflow and advanced-chat apps: their runs, and the model calls of each run's nodes.
//!
//! A `workflow` app's runs come from `workflow-app-logs`, filtered to the window on the server, with
//! the user on each log row. An `advanced-chat` app has no such log: its production runs come from
//! `workflow-runs?triggered_from=app-run` (Dify defaults to debug runs), newest first, paged until the
//! rows are older than the window. Real Dify's run list rows carry `created_by_account` only, null for
//! every run an end user started, so the user of such a run is taken from its node executions, which
//! carry the run's creator and are read anyway: no extra request per run.

use std::sync::Arc;

use anyhow::Result;
use chrono::NaiveDate;

use super::{AppInfo, PAGE_LIMIT, Queue, Work, utc_day};
use crate::run::window::Window;
use crate::source::console::DifyClient;
use crate::source::console::model::{
    NodeExecution, NodeExecutions, Page, WorkflowAppLog, WorkflowRun,
};
use crate::source::console::paging::{CursorPages, NumberedPages};
use crate::usage::Usage;

/// Node types that repeat their children's usage in `execution_metadata`: never counted.
const CONTAINER_NODES: [&str; 2] = ["iteration", "loop"];

/// A workflow or advanced-chat run: read its nodes.
pub(super) struct RunWork {
    app: Arc<AppInfo>,
    run_id: String,
    day: NaiveDate,
    /// The user the listing named (empty when it did not); the nodes' creator wins.
    listed_user: String,
}

/// Workflow apps: the app logs, filtered to the window on the server.
pub(super) async fn queue_logged_runs(
    dify: &DifyClient,
    app: &Arc<AppInfo>,
    window: Window,
    queue: Queue<'_>,
) -> Result<u64> {
    let path = format!("/apps/{}/workflow-app-logs", app.id);
    let mut pages = NumberedPages::new(&path, PAGE_LIMIT);
    let mut queued = 0;
    while let Some(page) = pages.next_page() {
        let query = [
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
            (
                "created_at__after",
                window.start().format("%Y-%m-%dT%H:%M:%S").to_string(),
            ),
            (
                "created_at__before",
                window
                    .end_inclusive()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string(),
            ),
        ];
        let answer: Page<WorkflowAppLog> = dify.get(&path, &query).await?;
        // A run logged while the list is read shifts the pages: a run seen before comes again.
        for log in pages.accept(answer, |log| &log.workflow_run.id)? {
            let day = utc_day(log.workflow_run.created_at, &path)?;
            if !window.contains(day) {
                continue;
            }
            let work = RunWork {
                app: app.clone(),
                run_id: log.workflow_run.id,
                day,
                listed_user: log.creator.user(),
            };
            if !queue.push(Work::Run(work)).await {
                return Ok(queued);
            }
            queued += 1;
        }
    }
    Ok(queued)
}

/// Advanced-chat apps: production runs, newest first, until they are older than the window.
pub(super) async fn queue_listed_runs(
    dify: &DifyClient,
    app: &Arc<AppInfo>,
    window: Window,
    queue: Queue<'_>,
) -> Result<u64> {
    let path = format!("/apps/{}/workflow-runs", app.id);
    let mut pages = CursorPages::new(&path, "last_id");
    let mut queued = 0;
    while !pages.is_done() {
        let mut query = vec![
            ("limit", PAGE_LIMIT.to_string()),
            ("triggered_from", "app-run".to_owned()),
        ];
        if let Some(id) = pages.cursor() {
            query.push(("last_id", id.to_owned()));
        }
        let answer: Page<WorkflowRun> = dify.get(&path, &query).await?;
        let runs = pages.accept(answer, |run| &run.id, <[WorkflowRun]>::last)?;
        for run in runs {
            let day = utc_day(run.created_at, &path)?;
            if day < window.first {
                pages.finish();
                break;
            }
            if day > window.last {
                continue;
            }
            let work = RunWork {
                app: app.clone(),
                listed_user: run.creator.user(),
                run_id: run.id,
                day,
            };
            if !queue.push(Work::Run(work)).await {
                return Ok(queued);
            }
            queued += 1;
        }
    }
    Ok(queued)
}

/// The usage of every node of a run that carries its own.
pub(super) async fn read_run(dify: &DifyClient, run: &RunWork) -> Result<Vec<Usage>> {
    let path = format!(
        "/apps/{}/workflow-runs/{}/node-executions",
        run.app.id, run.run_id
    );
    let nodes: NodeExecutions = dify.get(&path, &[]).await?;
    // Every node carries the run's creator; the first that names one speaks for the run.
    let user = nodes
        .data
        .iter()
        .map(|node| node.creator.user())
        .find(|user| !user.is_empty())
        .unwrap_or_else(|| run.listed_user.clone());
    Ok(nodes
        .data
        .iter()
        .filter_map(|node| node_usage(node, &run.app, run.day, &user))
        .collect())
}

/// The usage of one node, if it carries its own: containers never; a truncated node through its
/// `execution_metadata` (total only).
fn node_usage(node: &NodeExecution, app: &AppInfo, day: NaiveDate, user: &str) -> Option<Usage> {
    if CONTAINER_NODES.contains(&node.node_type.as_str()) {
        return None;
    }
    let process = node.process_data.as_ref();
    let provider = process
        .and_then(|p| p.model_provider.clone())
        .unwrap_or_default();
    let model = process
        .and_then(|p| p.model_name.clone())
        .unwrap_or_default();
    let base = |input, output, total, cost, currency: Option<&String>, total_only| Usage {
        day,
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        user: user.to_owned(),
        provider: provider.clone(),
        model: model.clone(),
        currency: currency.cloned().unwrap_or_default(),
        input_tokens: input,
        output_tokens: output,
        total_tokens: total,
        cost,
        requests: 1,
        total_only,
    };
    if let Some(usage) = process.and_then(|p| p.usage.as_ref()) {
        // Dify's own total is prompt + completion; rebuild it so the record's identity always holds.
        let total = usage.prompt_tokens + usage.completion_tokens;
        return Some(base(
            usage.prompt_tokens,
            usage.completion_tokens,
            total,
            usage.total_price,
            usage.currency.as_ref(),
            false,
        ));
    }
    if node.process_data_truncated {
        let metadata = node.execution_metadata.as_ref()?;
        let total = metadata.total_tokens?;
        return Some(base(
            total,
            0,
            total,
            metadata.total_price,
            metadata.currency.as_ref(),
            true,
        ));
    }
    None
}
