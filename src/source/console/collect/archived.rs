//! Archived runs of workflow apps: since Dify 1.12 a retention job can move old runs to object
//! storage and delete them, with their node executions and app logs, from the database, so the run
//! lists no longer show them and their usage is gone. `workflow-archived-logs` (workflow apps only,
//! newest run first, paged by number without a date filter) still lists them: every app-day of the
//! window with archived runs gets one `warn` instead of a silently smaller number. Older Dify has no
//! such endpoint (404): nothing to check.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::NaiveDate;
use reqwest::StatusCode;
use tracing::warn;

use super::{AppInfo, PAGE_LIMIT, utc_day};
use crate::http::RequestError;
use crate::run::window::Window;
use crate::source::console::DifyClient;
use crate::source::console::model::{ArchivedLog, Page};
use crate::source::console::paging::NumberedPages;

/// Pages through the app's archived runs down to the window's first day, then warns per app-day.
pub(super) async fn warn_archived(dify: &DifyClient, app: &AppInfo, window: Window) -> Result<()> {
    let path = format!("/apps/{}/workflow-archived-logs", app.id);
    let mut pages = NumberedPages::new(&path, PAGE_LIMIT);
    let mut days: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    while let Some(page) = pages.next_page() {
        let query = [
            ("page", page.to_string()),
            ("limit", PAGE_LIMIT.to_string()),
        ];
        let answer: Page<ArchivedLog> = match dify.get(&path, &query).await {
            Ok(answer) => answer,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(error),
        };
        for log in pages.accept(answer, |log| &log.id)? {
            let Some(created_at) = log.created_at else {
                continue;
            };
            let day = utc_day(created_at, &path)?;
            if day < window.first {
                pages.finish();
                break;
            }
            if window.contains(day) {
                *days.entry(day).or_default() += 1;
            }
        }
    }
    for (day, runs) in days {
        warn!(
            app_id = %app.id,
            app_name = %app.name,
            day = %day,
            archived_runs = runs,
            "workflow runs of this app-day are archived: their node usage is no longer in the database and is not counted"
        );
    }
    Ok(())
}

/// A Dify without the endpoint (before 1.12) answers 404.
fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<RequestError>(),
            Some(RequestError::Status { status, .. }) if *status == StatusCode::NOT_FOUND
        )
    })
}
