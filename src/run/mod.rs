//! The export job: what one run does between taking the lock and writing the `run finished` line
//! (`docs/run.md`).
//!
//! 1. Work out the window from the watermark (with lookback), or `--from/--to` ([`window`]).
//! 2. Collect it from the run's [`Source`] in chunks of `COLLECT_CHUNK_DAYS`, oldest first.
//! 3. After each chunk, merge its records into the ledger and queue what changed as every sink's
//!    batches, in the same transaction that advances the watermark to the chunk's last day
//!    ([`commit`]), so a run stopped between chunks resumes after them.
//! 4. Deliver each sink's outbox, oldest batch first; a sink that is down does not hold back the
//!    others.
//!
//! With `--dry-run` the job prints the records of the whole window once it is collected, and
//! writes nothing. Everything the job does is noted in the [`RunReport`], which holds what a
//! failed or stopped run did too. The frame around the job (configuration, lock, signals, exit
//! code) lives in `commands`.

mod commit;
mod outcome;
mod report;
pub(crate) mod window;

use std::io::Write as _;

use anyhow::{Context as _, Result};
use chrono::{NaiveDate, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub(crate) use outcome::{JobError, Outcome};
pub(crate) use report::{RunReport, SinkReport};
use window::Window;

use crate::config::Config;
use crate::http::HttpClient;
use crate::ledger::{DecreasePolicy, Merger};
use crate::progress;
use crate::sink::http::wire::WireRecord;
use crate::sink::{self, Configured, Sink as _};
use crate::source::Source;
use crate::state::State;
use crate::usage::UsageRecord;
use commit::Commit;

/// Which days a run covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Days {
    /// After the watermark (with lookback); the watermark moves.
    Scheduled,
    /// `--from/--to`; the watermark stays.
    Backfill(Window),
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct JobPlan {
    pub(crate) days: Days,
    /// Print the records instead of queueing them; change nothing.
    pub(crate) dry_run: bool,
    /// The run's id, stored with the batches it queues.
    pub(crate) run_id: String,
}

impl JobPlan {
    /// The days to collect; `None` when the watermark is yesterday. Refuses a catch-up longer
    /// than [`window::MAX_WINDOW_DAYS`].
    pub(crate) fn window(
        &self,
        config: &Config,
        watermark: Option<NaiveDate>,
    ) -> Result<Option<Window>> {
        let today = Utc::now().date_naive();
        Ok(match self.days {
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
        })
    }
}

/// Runs the job once over `window`, filling `report` as it goes. `state` is `None` only for a dry
/// run without a database. After a stop signal (`cancel`) no new request and no new chunk starts;
/// the chunks already queued stay queued, and a dry run prints nothing.
pub(crate) async fn run(
    config: &Config,
    http: &HttpClient,
    plan: &JobPlan,
    window: Option<Window>,
    mut state: Option<&mut State>,
    cancel: &CancellationToken,
    report: &mut RunReport,
) -> Result<(), JobError> {
    let job = Job {
        config,
        plan,
        sinks: Configured::all(config, http),
        cancel,
    };
    if let Some(state) = state.as_deref_mut()
        && !plan.dry_run
    {
        let queued = job.commit().prepare(
            state,
            config.ledger.retention_days,
            &mut report.batches_queued_per_sink,
        )?;
        report.batches_queued_now += queued;
    }
    let Some(window) = window else {
        info!(
            watermark = ?state.as_deref().map(State::watermark).transpose()?.flatten().map(|d| d.to_string()),
            "nothing to collect: the watermark is yesterday"
        );
        if !plan.dry_run {
            job.deliver(state.as_deref(), report).await?;
        }
        return Ok(());
    };
    progress::window(window.day_count());
    let mut source = Source::new(config, http, cancel);
    let collected = job
        .collect(window, &mut source, state.as_deref_mut(), report)
        .await;
    let requests = source.requests();
    report.dify_requests = requests.made;
    report.retries += requests.retried;
    let dry_run_records = collected?;
    if plan.dry_run {
        if !cancel.is_cancelled() {
            print_records(&dry_run_records, config)?;
        }
        return Ok(());
    }
    job.deliver(state.as_deref(), report).await
}

/// What every stage of one job needs.
struct Job<'a> {
    config: &'a Config,
    plan: &'a JobPlan,
    sinks: Vec<Configured>,
    cancel: &'a CancellationToken,
}

impl Job<'_> {
    /// Collects the window chunk by chunk, queueing each for every sink; a dry run's records are
    /// returned instead.
    async fn collect(
        &self,
        window: Window,
        source: &mut Source<'_>,
        mut state: Option<&mut State>,
        report: &mut RunReport,
    ) -> Result<Vec<UsageRecord>, JobError> {
        let moves_watermark = matches!(self.plan.days, Days::Scheduled);
        let mut dry_run_records = Vec::new();
        let mut merger = Merger::new(
            self.config.ledger.decreases,
            &self.config.ledger.users,
            Utc::now(),
        );
        for chunk in window.chunks(self.config.collect_chunk_days) {
            if self.cancel.is_cancelled() {
                break;
            }
            let collected = source.collect(chunk).await?;
            // Each chunk lists the apps again; the last listing is the one reported.
            report.apps.0 = collected.apps_by_mode;
            let records = collected.records;
            report.add_records(&records);
            match state.as_deref_mut() {
                Some(state) if !self.plan.dry_run => {
                    let committed = self.commit().chunk(
                        state,
                        &mut merger,
                        chunk,
                        records,
                        moves_watermark.then_some(chunk.last),
                        &mut report.batches_queued_per_sink,
                    )?;
                    report.add_commit(&committed);
                    info!(
                        from = %chunk.first,
                        to = %chunk.last,
                        rows_new = committed.rows_new,
                        rows_revised = committed.rows_revised,
                        batches = committed.batches,
                        unchanged = committed.unchanged,
                        watermark = %state.watermark()?.map_or_else(|| "(none)".to_owned(), |d| d.to_string()),
                        "records queued"
                    );
                }
                _ => dry_run_records.extend(records),
            }
            progress::days_collected(chunk.day_count());
        }
        report.add_merge(&merger, self.config.ledger.decreases);
        warn_decreases(&merger, self.config.ledger.decreases);
        Ok(dry_run_records)
    }

    fn commit(&self) -> Commit<'_> {
        Commit {
            sinks: &self.sinks,
            run_id: &self.plan.run_id,
            batch_size: self.config.batch_size,
        }
    }

    /// Delivers every sink's outbox (unless stopped) and notes the outbox after.
    async fn deliver(&self, state: Option<&State>, report: &mut RunReport) -> Result<(), JobError> {
        let Some(state) = state else {
            return Ok(()); // nothing was ever queued
        };
        if !self.cancel.is_cancelled() {
            progress::delivering(state.counts()?.queued);
            for sink in &self.sinks {
                let delivery =
                    sink::deliver(state, sink, self.config.dead_letter_after, self.cancel).await?;
                report.add_delivery(sink.name(), &delivery);
            }
        }
        let names: Vec<&'static str> = self.sinks.iter().map(Configured::name).collect();
        report.set_outbox(&names, &state.counts_per_sink()?);
        Ok(())
    }
}

/// The one line per run about usage Dify no longer shows.
fn warn_decreases(merger: &Merger<'_>, policy: DecreasePolicy) {
    let decreases = &merger.decreases;
    if decreases.keys == 0 {
        return;
    }
    let (what, message) = match policy {
        DecreasePolicy::Keep => (
            "kept",
            "Dify no longer shows usage the ledger exported (deleted conversations, retention, archiving); \
             the ledger keeps the exported totals (USAGE_DECREASES=keep)",
        ),
        DecreasePolicy::Follow => (
            "followed",
            "Dify no longer shows usage the ledger exported (deleted conversations, retention, archiving); \
             the ledger and the sinks take the lower totals (USAGE_DECREASES=follow)",
        ),
    };
    warn!(
        records = decreases.keys,
        tokens = decreases.tokens,
        cost = decreases.cost_text(),
        decreases = what,
        "{message}"
    );
}

/// One JSON record per line on stdout in the wire format (with the identity map's customer),
/// written at once after collection finished.
fn print_records(records: &[UsageRecord], config: &Config) -> Result<()> {
    let mut out = std::io::BufWriter::new(crate::stdout::Stdout::lock());
    for record in records {
        let customer = config
            .ledger
            .users
            .customer(&record.key.user)
            .unwrap_or(&record.key.user);
        serde_json::to_writer(&mut out, &WireRecord::new(record, customer))
            .context("cannot write records to stdout")?;
        out.write_all(b"\n")
            .context("cannot write records to stdout")?;
    }
    out.flush().context("cannot write records to stdout")
}
