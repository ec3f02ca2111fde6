//! The export job: what one run does between taking the lock and writing the summary line.
//!
//! The frame around it (configuration, lock, signals, exit code) lives in [`crate::commands`] and
//! does not change as the job grows; this module is the body. Today the job lists the workspace's
//! apps, collects the window's usage per mode, and aggregates it into records; with `--dry-run` it
//! prints them. Queueing and delivery come with the state database.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rust_decimal::Decimal;
use tracing::info;

use crate::config::Config;
use crate::dify::{AppMode, DifyClient, collect};
use crate::export::{Aggregator, UsageRecord};
use crate::http::HttpClient;
use crate::window::Window;

/// What a run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct JobPlan {
    /// The UTC days to collect.
    pub window: Window,
    /// Print the records instead of keeping them; change nothing.
    pub dry_run: bool,
}

/// What the job did, for the summary line.
#[derive(Debug, Default)]
pub struct JobReport {
    /// Apps found, per mode.
    pub apps_by_mode: BTreeMap<AppMode, usize>,
    /// Records produced.
    pub records: usize,
    /// Their token total.
    pub total_tokens: u64,
    /// Their cost total, per currency.
    pub cost: BTreeMap<String, Decimal>,
}

impl JobReport {
    /// Apps found in all.
    #[must_use]
    pub fn apps(&self) -> usize {
        self.apps_by_mode.values().sum()
    }

    /// The cost totals as exact decimal strings, e.g. `{"USD": "12.3456789"}`.
    #[must_use]
    pub fn cost_by_currency(&self) -> BTreeMap<&str, String> {
        self.cost
            .iter()
            .map(|(currency, cost)| (currency.as_str(), cost.normalize().to_string()))
            .collect()
    }

    fn add_records(&mut self, records: &[UsageRecord]) {
        self.records = records.len();
        self.total_tokens = records.iter().map(|r| r.total_tokens).sum();
        for record in records {
            *self.cost.entry(record.key.currency.clone()).or_default() += record.cost;
        }
    }
}

/// Runs the job once. `http` carries the stop token: after a stop signal no new request starts, and
/// nothing is printed or kept from a collection that did not finish.
pub async fn run(config: &Config, http: &HttpClient, plan: JobPlan) -> Result<JobReport> {
    let dify = Arc::new(DifyClient::new(
        &config.dify_api_url,
        config.dify_auth.clone(),
        http,
        config.dify_concurrency,
    ));
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
        "apps listed"
    );

    let mut aggregator = Aggregator::default();
    let collected = collect::collect(
        dify,
        apps,
        plan.window,
        config.dify_concurrency,
        &mut aggregator,
    )
    .await?;
    let records = aggregator.into_records();
    report.add_records(&records);
    info!(
        from = %plan.window.first,
        to = %plan.window.last,
        runs = collected.runs,
        nodes_counted = collected.nodes_counted,
        app_days = collected.app_days,
        records = report.records,
        total_tokens = report.total_tokens,
        cost = ?crate::logging::Json(&report.cost_by_currency()),
        "usage collected"
    );

    if plan.dry_run {
        print_records(&records)?;
    }
    Ok(report)
}

/// One JSON record per line on stdout, written at once after collection finished.
fn print_records(records: &[UsageRecord]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for record in records {
        serde_json::to_writer(&mut out, &record.to_wire())
            .context("cannot write records to stdout")?;
        out.write_all(b"\n")
            .context("cannot write records to stdout")?;
    }
    out.flush().context("cannot write records to stdout")
}
