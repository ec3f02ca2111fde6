//! `exporter discard --batch ID | --all-dead [--sink NAME] --yes`: the recorded way to give up on a dead letter
//! that can never be delivered (the receiver refuses it, or its day was queued again under another
//! `BATCH_SIZE`). The batch leaves the outbox for the `discarded` list that `status` shows, with a
//! log line per batch, and no longer makes every run exit 1. Like `watermark set` it needs `--yes`
//! and takes the run lock.

use std::fmt::Write as _;

use tracing::{error, info};

use super::frame;
use crate::cli::DiscardArgs;
use crate::config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::state::{BatchState, State};

#[must_use]
pub(super) fn discard(environment: &Environment, args: &DiscardArgs) -> Exit {
    let state_dir = config::state_dir(environment);
    let _lock = match RunLock::acquire(&state_dir) {
        Ok(lock) => lock,
        Err(err) => return frame::lock_error(err),
    };
    let mut state = match State::open(&state_dir) {
        Ok(state) => state,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot open the state");
            return Exit::Failure;
        }
    };
    if !args.yes {
        let dead = match state.all_batches(BatchState::Dead) {
            Ok(dead) => dead,
            Err(err) => {
                error!(error = format!("{err:#}"), "cannot read the state");
                return Exit::Failure;
            }
        };
        let chosen: Vec<_> = dead
            .iter()
            .filter(|b| {
                args.batch.is_none_or(|id| b.id == id)
                    && args.sink.as_deref().is_none_or(|sink| b.sink == sink)
            })
            .collect();
        if chosen.is_empty() {
            return nothing_to_discard(args);
        }
        let mut shown = String::new();
        for batch in chosen {
            let _ = writeln!(
                shown,
                "would discard batch #{} of sink {} ({}, {} records, {} tokens); its records would never be sent there",
                batch.id, batch.sink, batch.first_day, batch.record_count, batch.total_tokens
            );
        }
        shown.push_str("rerun with --yes to do it\n");
        return super::print(&shown, Exit::Failure);
    }
    let discarded = match state.discard(args.batch, args.sink.as_deref()) {
        Ok(discarded) => discarded,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot discard");
            return Exit::Failure;
        }
    };
    if discarded.is_empty() {
        return nothing_to_discard(args);
    }
    let mut shown = String::new();
    for batch in &discarded {
        info!(
            batch_id = batch.id,
            sink = batch.sink,
            first_day = %batch.first_day,
            records = batch.record_count,
            tokens = batch.total_tokens,
            last_error = batch.last_error,
            "dead batch discarded by the operator; its records will not be sent"
        );
        let _ = writeln!(
            shown,
            "discarded batch #{} of sink {} ({}, {} records)",
            batch.id, batch.sink, batch.first_day, batch.record_count
        );
    }
    super::print(&shown, Exit::Success)
}

fn nothing_to_discard(args: &DiscardArgs) -> Exit {
    if let Some(id) = args.batch {
        error!(
            batch_id = id,
            "no dead-lettered batch has this id (for this sink); see `exporter status`"
        );
        return Exit::Failure;
    }
    super::print("no dead-lettered batches\n", Exit::Success)
}
