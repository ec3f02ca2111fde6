//! The export job: what one run does between taking the lock and writing the summary line.
//!
//! The frame around it (configuration, lock, signals, exit code) lives in [`crate::commands::run`]
//! and does not change as the job grows; this module is the body that later steps replace. Today
//! the job authenticates to Dify and inventories the workspace's apps by mode.

use std::collections::BTreeMap;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::dify::{AppMode, DifyClient};
use crate::http::HttpClient;

/// What the job did, for the summary line.
#[derive(Debug, Default)]
pub struct JobReport {
    /// Apps found, per mode.
    pub apps_by_mode: BTreeMap<AppMode, usize>,
}

impl JobReport {
    /// Apps found in all.
    #[must_use]
    pub fn apps(&self) -> usize {
        self.apps_by_mode.values().sum()
    }
}

/// Runs the job once. `http` carries the stop token: after a stop signal no new request starts.
pub async fn run(
    config: &Config,
    http: HttpClient,
    cancel: &CancellationToken,
) -> Result<JobReport> {
    let dify = DifyClient::new(&config.dify_api_url, config.dify_auth.clone(), http)?;
    let apps = dify.list_apps().await?;

    let mut report = JobReport::default();
    for app in &apps {
        *report.apps_by_mode.entry(app.mode).or_default() += 1;
    }
    let count = |mode| report.apps_by_mode.get(&mode).copied().unwrap_or(0);
    info!(
        apps = apps.len(),
        workflow = count(AppMode::Workflow),
        advanced_chat = count(AppMode::AdvancedChat),
        chat = count(AppMode::Chat),
        agent_chat = count(AppMode::AgentChat),
        completion = count(AppMode::Completion),
        other = count(AppMode::Other),
        stopping = cancel.is_cancelled(),
        "apps listed"
    );
    Ok(report)
}
