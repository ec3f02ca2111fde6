//! The export job: what one run does between taking the lock and writing the summary line.
//!
//! 1. Open the state database and work out the window (watermark, lookback, or `--from/--to`).
//! 2. Collect the window's usage from Dify and aggregate it into records.
//! 3. Queue the records as batches in the same transaction that advances the watermark.
//! 4. Deliver the outbox, oldest batch first.
//!
//! With `--dry-run` the job stops after step 2 and prints the records; it reads the watermark if a
//! database exists but writes nothing. The frame around the job (configuration, lock, signals,
//! exit code) lives in [`crate::commands`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::Utc;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::deliver::{self, Delivery};
use crate::dify::{AppMode, DifyClient, collect};
use crate::export::{Aggregator, UsageRecord, batch};
use crate::http::HttpClient;
use crate::progress;
use crate::state::{Counts, State};
use crate::window::Window;

/// Which days a run covers.
#[derive(Debug, Clone, Copy)]
pub enum Days {
    /// After the watermark (with lookback); the watermark moves.
    Scheduled,
    /// `--from/--to`; the watermark stays.
    Backfill(Window),
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub days: Days,
    /// Print the records instead of queueing them; change nothing.
    pub dry_run: bool,
    /// The run's id, stored with the batches it queues.
    pub run_id: String,
}

/// What the job did, for the summary line.
#[derive(Debug, Default)]
pub struct JobReport {
    /// The days collected, if any.
    pub window: Option<Window>,
    /// Apps found, per mode.
    pub apps_by_mode: BTreeMap<AppMode, usize>,
    /// Records collected.
    pub records: usize,
    /// Their token total.
    pub total_tokens: u64,
    /// Their cost, per currency.
    pub cost: BTreeMap<String, Decimal>,
    pub dify_requests: u64,
    pub dify_retries: u64,
    /// Batches queued by this run (new or changed records only).
    pub batches_queued_now: usize,
    pub delivery: Delivery,
    /// The outbox after the run.
    pub outbox: Counts,
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

    /// Why the run must exit 1 although the job itself completed, if it must.
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        if let Some(error) = &self.delivery.config_error {
            return Some(format!("delivery stopped: {error}"));
        }
        if self.outbox.dead > 0 {
            return Some(format!(
                "{} batch(es) are dead-lettered; see `exporter status`, fix the cause, then `exporter resend --all-dead`",
                self.outbox.dead
            ));
        }
        if self.outbox.queued > 0 {
            let cause = self
                .delivery
                .transient_error
                .as_deref()
                .unwrap_or("the run stopped before sending them");
            return Some(format!(
                "{} batch(es) are still queued and will be sent by the next run; last error: {cause}",
                self.outbox.queued
            ));
        }
        None
    }

    fn add_records(&mut self, records: &[UsageRecord]) {
        self.records = records.len();
        self.total_tokens = records.iter().map(|r| r.total_tokens).sum();
        for record in records {
            *self.cost.entry(record.key.currency.clone()).or_default() += record.cost;
        }
    }
}

/// Runs the job once. After a stop signal (`cancel`) no new request starts; what was collected
/// completely is still queued, and nothing is printed from a collection that did not finish.
pub async fn run(
    config: &Config,
    http: &HttpClient,
    plan: &JobPlan,
    cancel: &CancellationToken,
) -> Result<JobReport> {
    let mut state = if plan.dry_run {
        State::open_read_only(&config.state_dir)?
    } else {
        Some(State::open(&config.state_dir)?)
    };
    let watermark = state.as_ref().map(State::watermark).transpose()?.flatten();
    let window = match plan.days {
        Days::Backfill(window) => Some(window),
        Days::Scheduled => Window::scheduled(
            watermark,
            Utc::now().date_naive(),
            config.export_lookback_days,
            config.dify_fetch_days,
        ),
    };
    let mut report = JobReport {
        window,
        ..JobReport::default()
    };

    let records = if let Some(window) = window {
        collect_window(config, http, window, &mut report).await?
    } else {
        info!(
            watermark = ?watermark.map(|d| d.to_string()),
            "nothing to collect: the watermark is yesterday"
        );
        Vec::new()
    };
    report.add_records(&records);

    if plan.dry_run {
        print_records(&records)?;
        return Ok(report);
    }
    let Some(state) = state.as_mut() else {
        return Ok(report); // opened above unless dry run
    };
    if let Some(window) = window {
        let moves_watermark = matches!(plan.days, Days::Scheduled);
        let queued = state.queue(
            &plan.run_id,
            batch::batches(&records, config.batch_size),
            moves_watermark.then_some(window.last),
        )?;
        report.batches_queued_now = queued.batches;
        info!(
            batches = queued.batches,
            unchanged = queued.unchanged,
            watermark = %state.watermark()?.map_or_else(|| "(none)".to_owned(), |d| d.to_string()),
            "records queued"
        );
    }
    // Queued and committed: from here on the outbox is the only copy that matters.
    drop(records);
    if !cancel.is_cancelled() {
        progress::delivering(state.counts()?.queued);
        report.delivery = deliver::deliver(state, http, config, cancel).await?;
    }
    report.outbox = state.counts()?;
    Ok(report)
}

async fn collect_window(
    config: &Config,
    http: &HttpClient,
    window: Window,
    report: &mut JobReport,
) -> Result<Vec<UsageRecord>> {
    let dify = Arc::new(DifyClient::new(
        &config.dify_api_url,
        config.dify_auth.clone(),
        http,
        config.dify_concurrency,
    ));
    let outcome = collect_from(&dify, config, window, report).await;
    report.dify_requests = dify.stats().requests();
    report.dify_retries = dify.stats().retries();
    outcome
}

async fn collect_from(
    dify: &Arc<DifyClient>,
    config: &Config,
    window: Window,
    report: &mut JobReport,
) -> Result<Vec<UsageRecord>> {
    let apps = dify.list_apps().await?;
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

    let requests = Arc::clone(dify);
    progress::collecting(window.days().count(), apps.len(), move || {
        requests.stats().requests()
    });
    let mut aggregator = Aggregator::default();
    let collected = collect::collect(
        dify.clone(),
        apps,
        window,
        config.dify_concurrency,
        &mut aggregator,
    )
    .await?;
    let records = aggregator.into_records();
    let tokens: u64 = records.iter().map(|r| r.total_tokens).sum();
    info!(
        from = %window.first,
        to = %window.last,
        runs = collected.runs,
        nodes_counted = collected.nodes_counted,
        app_days = collected.app_days,
        records = records.len(),
        total_tokens = tokens,
        "usage collected"
    );
    Ok(records)
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
