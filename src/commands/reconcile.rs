//! `exporter reconcile`: the ledger beside Dify's own statistics (`docs/reconcile.md`). It needs the
//! whole configuration (`run`'s validation, sinks included, so that one `.env` serves both), reads
//! `state.db` read-only beside a running export, asks Dify (its console API, or its database with
//! the database source), prints the app-days that do not agree, and writes the metric of those
//! that disagree.

use std::io::Write as _;

use anyhow::{Context as _, Result, bail};
use tracing::error;

use super::frame;
use crate::cli::{OutputFormat, ReconcileArgs};
use crate::config::{Config, SourceConfig};
use crate::environment::Environment;
use crate::exit::Exit;
use crate::metrics;
use crate::reconcile::{self, Reconciliation};
use crate::run::JobError;
use crate::source::console::ConsoleSource;
use crate::source::console::login_guard;
use crate::state::State;

#[must_use]
pub(super) fn reconcile(environment: &Environment, args: &ReconcileArgs) -> Exit {
    let config = match frame::config(environment) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let reconciliation = match compare(&config, args) {
        Ok(reconciliation) => reconciliation,
        Err(exit) => return exit,
    };
    let text = match args.output {
        OutputFormat::Text => Ok(reconcile::text(&reconciliation)),
        OutputFormat::Json => reconcile::json(&reconciliation),
    };
    let printed = text.and_then(|text| {
        let mut out = crate::stdout::Stdout::lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write the reconciliation to stdout")
    });
    if let Err(err) = printed {
        error!(error = format!("{err:#}"), "cannot reconcile");
        return Exit::Failure;
    }
    let disagreeing = reconciliation.disagreeing();
    metrics::publish_reconcile(&config, disagreeing);
    if disagreeing == 0 {
        Exit::Success
    } else {
        Exit::Failure
    }
}

/// The comparison, or the exit status after logging why there is none.
fn compare(config: &Config, args: &ReconcileArgs) -> Result<Reconciliation, Exit> {
    let fail = |err: anyhow::Error| {
        error!(error = format!("{err:#}"), "cannot reconcile");
        Exit::Failure
    };
    let (state, from, to) = ledger(config, args).map_err(fail)?;
    if let SourceConfig::Console { url, auth } = &config.source {
        // Never try a login Dify already refused; the state is read-only, so no verdict is cleared.
        match login_guard::login_guard(&state, url, auth, false, false) {
            Ok(Some(refusal)) => return Err(fail(anyhow::anyhow!(refusal))),
            Ok(None) => {}
            Err(err) => return Err(fail(err)),
        }
    }
    let guarded = frame::guarded(config, |http, _cancel| async move {
        match &config.source {
            SourceConfig::Console { url, auth } => {
                let source = ConsoleSource::new(url, auth.clone(), &http, config.dify_concurrency);
                reconcile::console_figures(&source, from, to, config.dify_concurrency).await
            }
            SourceConfig::Database(source) => reconcile::database_figures(source, from, to).await,
        }
        .map_err(JobError::Failed)
    })?;
    let dify = match (guarded.result, guarded.signal) {
        (Some(Ok(dify)), None) => dify,
        (_, Some(signal)) => return Err(signal.exit()),
        (Some(Err(err)), None) => {
            error!(error = %err, "cannot reconcile: cannot read Dify's statistics");
            return Err(Exit::Failure);
        }
        (None, None) => return Err(Exit::Failure),
    };
    reconcile::reconcile(&state, from, to, &dify, config.ledger.decreases).map_err(fail)
}

/// The ledger, read-only, and the window to compare.
fn ledger(
    config: &Config,
    args: &ReconcileArgs,
) -> Result<(State, chrono::NaiveDate, chrono::NaiveDate)> {
    let Some(state) = State::open_read_only(&config.state_dir)? else {
        bail!(
            "no ledger yet: {} has no state database; `exporter run` fills it",
            config.state_dir.display()
        );
    };
    let Some((from, to)) = super::report::window(&state, args.from, args.to)? else {
        bail!(
            "the ledger in {} is empty: no run has exported usage yet",
            state.path().display()
        );
    };
    // Days before the ledger's first were never collected: by default they are not compared.
    let first_held = state.ledger_days()?.map(|(first, _)| first);
    let from = match (args.from, first_held) {
        (None, Some(first)) if first > from && first <= to => first,
        _ => from,
    };
    Ok((state, from, to))
}
