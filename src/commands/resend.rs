//! `exporter resend --batch ID | --all-dead`: moves dead-lettered batches back to the queue (with a
//! fresh count of failed runs), cuts every queued batch larger than the current `BATCH_SIZE` to
//! that size (a receiver that refused 43 records at once would refuse them forever), and delivers
//! the queue now, under the run lock and signal handling, with a progress line at a terminal; its
//! metrics are written whatever the outcome.

use std::time::Instant;

use serde_json::json;
use tracing::{error, info};

use super::frame;
use crate::cli::ResendArgs;
use crate::config::Config;
use crate::deliver;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::logging::Json;
use crate::metrics::{self, RunFigures};
use crate::progress;
use crate::state::{BatchState, State};

#[must_use]
pub(super) fn resend(environment: &Environment, args: &ResendArgs) -> Exit {
    let started = Instant::now();
    let config = match frame::config(environment) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    // Held until the metrics are written, so that two runs never write them at once.
    let mut lock = None;
    let exit = resend_configured(&config, args, &mut lock);
    metrics::publish(
        &config,
        &RunFigures {
            exit_code: exit.code(),
            duration: started.elapsed(),
            ..RunFigures::default()
        },
    );
    drop(lock);
    exit
}

fn resend_configured(config: &Config, args: &ResendArgs, lock: &mut Option<RunLock>) -> Exit {
    match frame::lock(config) {
        Ok(held) => *lock = Some(held),
        Err(exit) => return exit,
    }
    let state = match State::open(&config.state_dir) {
        Ok(state) => state,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot open the state");
            return Exit::Failure;
        }
    };
    let revived = match state.revive(args.batch) {
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
    let rebatched = match rebatch(&state, config.batch_size) {
        Ok(rebatched) => rebatched,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot re-batch the queue");
            return Exit::Failure;
        }
    };

    let line = progress::start("resending");
    if let Ok(counts) = state.counts() {
        progress::delivering(counts.queued);
    }
    let guarded = match frame::guarded(config, |http, cancel| {
        let state = &state;
        async move { deliver::deliver(state, &http, config, &cancel).await }
    }) {
        Ok(guarded) => guarded,
        Err(exit) => return exit,
    };
    drop(line);
    if let Some((exit, _)) = guarded.stopped_or_timed_out() {
        return exit;
    }
    let delivery = match guarded.result {
        Some(Ok(delivery)) => delivery,
        Some(Err(err)) => {
            error!(error = format!("{err:#}"), "resend failed");
            return Exit::Failure;
        }
        None => return Exit::Failure,
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
    if let Some(error) = &delivery.config_error {
        error!(error, "resend stopped");
        return Exit::Failure;
    }
    match (counts.queued, counts.dead, guarded.signal) {
        (_, _, Some(signal)) => signal.exit(),
        (0, 0, None) => Exit::Success,
        _ => Exit::Failure,
    }
}

/// Splits every queued batch larger than `batch_size`; returns how many were split.
fn rebatch(state: &State, batch_size: usize) -> anyhow::Result<usize> {
    let mut split = 0;
    for batch in state.batches(BatchState::Queued)? {
        if usize::try_from(batch.record_count).unwrap_or(usize::MAX) > batch_size {
            let parts = state.split(&batch, batch_size)?;
            info!(
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
