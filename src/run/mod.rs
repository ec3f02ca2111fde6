//! The export job: what one run does between taking the lock and writing the `run finished` line
//! (`docs/run.md`).
//!
//! 1. Work out the window from the watermark (with lookback), or `--from/--to` ([`window`]).
//! 2. Collect it from the run's [`Source`] in chunks of `COLLECT_CHUNK_DAYS`, oldest first.
//! 3. After each chunk, queue its records as every sink's batches in the same transaction that
//!    advances the watermark to the chunk's last day, so a run stopped between chunks resumes
//!    after them.
//! 4. Deliver each sink's outbox, oldest batch first.
//!
//! With `--dry-run` the job prints the records of the whole window once it is collected, and
//! writes nothing. Everything the job does is noted in the [`RunReport`], which holds what a
//! failed or stopped run did too. The frame around the job (configuration, lock, signals, exit
//! code) lives in `commands`.

mod outcome;
mod report;
pub(crate) mod window;

use std::io::Write as _;

use anyhow::{Context as _, Result};
use chrono::{NaiveDate, Utc};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(crate) use outcome::{JobError, Outcome};
pub(crate) use report::RunReport;
use window::Window;

use crate::config::Config;
use crate::http::HttpClient;
use crate::progress;
use crate::sink::{self, Configured, Sink as _};
use crate::source::Source;
use crate::state::State;
use crate::usage::UsageRecord;

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
            print_records(&dry_run_records)?;
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
                    let work = self.sinks.iter().flat_map(|sink| {
                        sink::batches(sink, &records, self.config.batch_size)
                            .map(|batch| (sink.name(), batch))
                    });
                    let queued = state.queue(
                        &self.plan.run_id,
                        work,
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
        Ok(dry_run_records)
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
                report.add_delivery(&delivery);
            }
        }
        report.set_outbox(state.counts()?);
        Ok(())
    }
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
