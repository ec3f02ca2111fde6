//! The export job: what one run does between taking the lock and writing the summary line.
//!
//! 1. Open the state database and work out the window (watermark, lookback, or `--from/--to`),
//!    at most `MAX_WINDOW_DAYS` long.
//! 2. Collect the window's usage from Dify in chunks of `COLLECT_CHUNK_DAYS`, oldest first.
//! 3. After each chunk, queue its records as batches in the same transaction that advances the
//!    watermark to the chunk's last day, so a run stopped between chunks resumes after them.
//! 4. Deliver the outbox, oldest batch first.
//!
//! With `--dry-run` the job prints the records of the whole window once it is collected; it reads
//! the watermark if a database exists but writes nothing. The frame around the job (configuration,
//! lock, signals, exit code) lives in [`crate::commands`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::Utc;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, DifySource};
use crate::deliver::{self, Delivery};
use crate::dify::{AppMode, DifyClient, collect};
use crate::difydb::{self, DatabaseSource};
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

    /// Apps not collected because this version does not know their mode (each named in the log).
    #[must_use]
    pub fn apps_skipped(&self) -> usize {
        self.apps_by_mode.get(&AppMode::Other).copied().unwrap_or(0)
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
        self.records += records.len();
        self.total_tokens += records.iter().map(|r| r.total_tokens).sum::<u64>();
        for record in records {
            *self.cost.entry(record.key.currency.clone()).or_default() += record.cost;
        }
    }
}

/// The state database and the window of a run, opened before the run is announced so that
/// `run starting` can name the days.
pub struct Opened {
    /// `None` for a dry run without a database.
    state: Option<State>,
    /// The days to collect; `None` when the watermark is yesterday.
    pub window: Option<Window>,
    watermark: Option<chrono::NaiveDate>,
}

/// Opens the state (read-only for a dry run) and works out the window, refusing one longer than
/// [`crate::window::MAX_WINDOW_DAYS`].
pub fn open(config: &Config, plan: &JobPlan) -> Result<Opened> {
    let state = if plan.dry_run {
        State::open_read_only(&config.state_dir)?
    } else {
        Some(State::open(&config.state_dir)?)
    };
    let watermark = state.as_ref().map(State::watermark).transpose()?.flatten();
    let today = Utc::now().date_naive();
    let window = match plan.days {
        Days::Backfill(window) => Some(window),
        Days::Scheduled => {
            if let Some(watermark) = watermark {
                Window::check_catch_up(watermark, today)?;
            }
            Window::scheduled(
                watermark,
                today,
                config.export_lookback_days,
                config.dify_fetch_days,
            )
        }
    };
    Ok(Opened {
        state,
        window,
        watermark,
    })
}

/// Runs the job once, filling `report` as it goes (so that a failed or stopped run still reports
/// what it did). The window is collected in chunks of `COLLECT_CHUNK_DAYS`, oldest first; each
/// chunk's records are queued, and a scheduled run's watermark moved to the chunk's last day, in
/// one transaction before the next chunk starts. After a stop signal (`cancel`) no new request
/// and no new chunk starts; the chunks already queued stay queued, and a dry run prints nothing.
pub async fn run(
    config: &Config,
    http: &HttpClient,
    plan: &JobPlan,
    opened: Opened,
    cancel: &CancellationToken,
    report: &mut JobReport,
) -> Result<()> {
    let Opened {
        mut state,
        window,
        watermark,
    } = opened;
    report.window = window;
    let Some(window) = window else {
        info!(
            watermark = ?watermark.map(|d| d.to_string()),
            "nothing to collect: the watermark is yesterday"
        );
        if plan.dry_run {
            return Ok(());
        }
        return deliver_outbox(config, http, state.as_ref(), cancel, report).await;
    };
    let moves_watermark = matches!(plan.days, Days::Scheduled);
    progress::window(window.day_count());
    let source = Source::new(config, http);
    let mut dry_run_records = Vec::new();
    for chunk in window.chunks(config.collect_chunk_days) {
        if cancel.is_cancelled() {
            break;
        }
        // Each chunk lists the apps again; the last listing is the one reported.
        report.apps_by_mode.clear();
        let records = collect_window(config, &source, chunk, report).await?;
        report.add_records(&records);
        match state.as_mut() {
            Some(state) if !plan.dry_run => {
                let queued = state.queue(
                    &plan.run_id,
                    batch::batches(&records, config.batch_size),
                    moves_watermark.then_some(chunk.last),
                )?;
                report.batches_queued_now += queued.batches;
                info!(
                    from = %chunk.first,
                    to = %chunk.last,
                    batches = queued.batches,
                    unchanged = queued.unchanged,
                    watermark = %state.watermark()?.map_or_else(|| "(none)".to_owned(), |d| d.to_string()),
                    "records queued"
                );
            }
            _ => dry_run_records.extend(records),
        }
        progress::days_collected(chunk.day_count());
    }
    if plan.dry_run {
        if !cancel.is_cancelled() {
            print_records(&dry_run_records)?;
        }
        return Ok(());
    }
    deliver_outbox(config, http, state.as_ref(), cancel, report).await
}

/// Delivers the outbox (unless stopped) and notes its state after.
async fn deliver_outbox(
    config: &Config,
    http: &HttpClient,
    state: Option<&State>,
    cancel: &CancellationToken,
    report: &mut JobReport,
) -> Result<()> {
    let Some(state) = state else {
        return Ok(()); // nothing was ever queued
    };
    if !cancel.is_cancelled() {
        progress::delivering(state.counts()?.queued);
        report.delivery = deliver::deliver(state, http, config, cancel).await?;
    }
    report.outbox = state.counts()?;
    Ok(())
}

/// Where a run reads usage from, made once per run: one Dify client (one login, one token
/// renewal schedule, one request count) serves every chunk.
enum Source<'c> {
    Console(Arc<DifyClient>),
    Database {
        database: &'c DatabaseSource,
        cancel: &'c CancellationToken,
    },
}

impl<'c> Source<'c> {
    fn new(config: &'c Config, http: &'c HttpClient) -> Self {
        match &config.dify_source {
            DifySource::Console { url, auth } => {
                let dify = Arc::new(DifyClient::new(
                    url,
                    auth.clone(),
                    http,
                    config.dify_concurrency,
                ));
                let requests = Arc::clone(&dify);
                progress::count_requests(move || requests.stats().requests());
                Source::Console(dify)
            }
            DifySource::Database(database) => Source::Database {
                database,
                cancel: http.cancellation(),
            },
        }
    }
}

/// Collects one chunk of the window from the run's source.
async fn collect_window(
    config: &Config,
    source: &Source<'_>,
    window: Window,
    report: &mut JobReport,
) -> Result<Vec<UsageRecord>> {
    match source {
        Source::Database { database, cancel } => {
            let collected = difydb::collect(database, window, config.max_retry, cancel).await?;
            report.apps_by_mode = collected.apps_by_mode;
            // For this source a "request" is a connection attempt (one snapshot each).
            report.dify_requests += collected.attempts;
            report.dify_retries += collected.retries;
            Ok(collected.records)
        }
        Source::Console(dify) => {
            let outcome = collect_from(dify, config, window, report).await;
            // The client counts the whole run.
            report.dify_requests = dify.stats().requests();
            report.dify_retries = dify.stats().retries();
            outcome
        }
    }
}

async fn collect_from(
    dify: &Arc<DifyClient>,
    config: &Config,
    window: Window,
    report: &mut JobReport,
) -> Result<Vec<UsageRecord>> {
    let apps = dify.list_apps().await?;
    for app in &apps {
        *report.apps_by_mode.entry(app.mode()).or_default() += 1;
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

    progress::collecting(apps.len());
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
        conversations = collected.conversations,
        messages_counted = collected.messages_counted,
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
