//! `exporter resend --batch ID | --all-dead [--sink NAME]`: moves dead-lettered batches back to the
//! queue (with a fresh count of failed runs), cuts every queued batch of changes larger than the
//! current `BATCH_SIZE` to that size (a receiver that refused 43 records at once would refuse them
//! forever; a sink of whole days never gets a day cut), and delivers the queue of every sink, or
//! of the one named, now, under the run lock and signal handling, with a progress line at a terminal; its
//! metrics are written whatever the outcome.

use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use tracing::{error, info};

use super::frame;
use crate::cli::ResendArgs;
use crate::config::Config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::logging::Json;
use crate::metrics;
use crate::progress;
use crate::run::{JobError, RunReport};
use crate::sink::{self, Configured, Delivery, DeliveryStop, Kind, Sink};
use crate::state::{BatchState, State};

pub(super) fn resend(environment: &Environment, args: &ResendArgs) -> Exit {
    let started = Instant::now();
    let config = match frame::config(environment) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    // Held until the metrics are written, so that two runs never write them at once.
    let mut lock = None;
    let mut state = None;
    let exit = resend_configured(&config, args, &mut lock, &mut state);
    let report = RunReport {
        exit_code: exit.code(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..RunReport::default()
    };
    metrics::publish(&config, &report, state.as_ref());
    drop(lock);
    exit
}

fn resend_configured(
    config: &Config,
    args: &ResendArgs,
    lock: &mut Option<RunLock>,
    opened: &mut Option<State>,
) -> Exit {
    match frame::lock(config) {
        Ok(held) => *lock = Some(held),
        Err(exit) => return exit,
    }
    let state = match State::open(&config.state_dir) {
        Ok(state) => opened.insert(state),
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot open the state");
            return Exit::Failure;
        }
    };
    let sink = args.sink.as_deref();
    if let Some(name) = sink
        && !config.sinks.names().contains(&name)
    {
        error!(
            sink = name,
            configured = config.sinks.names().join(", "),
            "--sink names no configured sink; name one of the configured sinks"
        );
        return Exit::Failure;
    }
    let revived = match state.revive(args.batch, sink) {
        Ok(0) if args.batch.is_some() => {
            error!(
                batch_id = args.batch,
                "no dead-lettered batch has this id; see `exporter status`"
            );
            return Exit::Failure;
        }
        Ok(revived) => revived,
        Err(err) => {
            error!(
                error = format!("{err:#}"),
                "cannot move dead batches back to the queue"
            );
            return Exit::Failure;
        }
    };
    info!(batches = revived, "dead batches moved back to the queue");

    let line = progress::start("resending");
    let guarded = match frame::guarded(config, |http, cancel| {
        let state = &*state;
        async move {
            let sinks: Vec<Configured> = Configured::all(config, &http)
                .into_iter()
                .filter(|s| sink.is_none_or(|name| s.name() == name))
                .collect();
            let mut rebatched = 0;
            for sink in &sinks {
                rebatched +=
                    rebatch(state, sink, config.batch_size).context("cannot re-batch the queue")?;
            }
            progress::delivering(state.counts()?.queued);
            let mut delivery = Delivery::default();
            for sink in &sinks {
                delivery
                    .merge(sink::deliver(state, sink, config.dead_letter_after, &cancel).await?);
            }
            Ok((rebatched, delivery))
        }
    }) {
        Ok(guarded) => guarded,
        Err(exit) => return exit,
    };
    drop(line);
    let (rebatched, delivery) = match (guarded.result, guarded.signal) {
        (Some(Ok(done)), _) => done,
        (Some(Err(JobError::Stopped)), Some(signal)) => return signal.exit(),
        (Some(Err(err)), _) => {
            error!(error = %err, "resend failed");
            return Exit::Failure;
        }
        (None, _) => return Exit::Failure,
    };
    let counts = match state.counts() {
        Ok(counts) => counts,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot read the state");
            return Exit::Failure;
        }
    };
    let summary = json!({
        "batches_revived": revived,
        "batches_rebatched": rebatched,
        "batches_sent": delivery.batches_sent,
        "records_sent": delivery.records_sent,
        "batches_queued": counts.queued,
        "batches_dead": counts.dead,
    });
    info!(fields = ?Json(&summary), "resend finished");
    if let Some(DeliveryStop::Configuration(error)) = &delivery.stopped_by {
        error!(error, "resend stopped");
        return Exit::Failure;
    }
    match (counts.queued, counts.dead, guarded.signal) {
        (_, _, Some(signal)) => signal.exit(),
        (0, 0, None) => Exit::Success,
        _ => Exit::Failure,
    }
}

/// Splits every batch queued for `sink` larger than its batch size for `BATCH_SIZE` `configured`
/// (unless the sink takes whole days); returns how many were split.
fn rebatch<S: Sink>(state: &State, sink: &S, configured: usize) -> anyhow::Result<usize> {
    let mut split = 0;
    if sink.kind() == Kind::Days {
        return Ok(split);
    }
    let batch_size = sink.batch_size(configured);
    for batch in state.batches(sink.name(), BatchState::Queued)? {
        if batch.record_count > batch_size as u64 {
            let parts = sink::split(state, sink, &batch, batch_size as u64)?;
            info!(
                sink = sink.name(),
                batch_id = batch.id,
                records = batch.record_count,
                parts = ?parts.iter().map(|p| p.id).collect::<Vec<_>>(),
                "batch re-batched to BATCH_SIZE"
            );
            split += 1;
        }
    }
    Ok(split)
}
