//! `exporter report`: the ledger summed by the chosen keys (`docs/report.md`). It reads `state.db`
//! read-only beside a running export (SQLite lets readers in beside a writer), needs no
//! configuration but `STATE_DIR`, and touches no network.

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};

use anyhow::{Context as _, Result, bail};
use chrono::{Days, NaiveDate};
use tracing::error;

use crate::cli::{ReportArgs, ReportFormat, ReportKey};
use crate::config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::report::{self, Key, Width};
use crate::state::State;

/// Days the default window covers, ending at the ledger's last day.
const DEFAULT_DAYS: u64 = 30;

#[must_use]
pub(super) fn report(environment: &Environment, args: &ReportArgs) -> Exit {
    match write_report(environment, args) {
        Ok(()) => Exit::Success,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot report");
            Exit::Failure
        }
    }
}

fn write_report(environment: &Environment, args: &ReportArgs) -> Result<()> {
    let state_dir = config::state_dir(environment);
    let Some(state) = State::open_read_only(&state_dir)? else {
        bail!(
            "no ledger yet: {} has no state database; `exporter run` fills it",
            state_dir.display()
        );
    };
    let Some((first, last)) = window(&state, args)? else {
        bail!(
            "the ledger in {} is empty: no run has exported usage yet",
            state.path().display()
        );
    };
    let keys = keys(&args.by);
    let report = report::summarize(
        &state,
        first,
        last,
        keys,
        args.top.map(|n| n as usize),
    )?;
    let stdout_is_terminal = args.out.is_none() && std::io::stdout().is_terminal();
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create --out {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    match args.output {
        ReportFormat::Table => {
            let width = if stdout_is_terminal {
                Width::Terminal(
                    terminal_size::terminal_size().map_or(100, |(w, _)| usize::from(w.0)),
                )
            } else {
                Width::Unlimited
            };
            out.write_all(report::table(&report, width).as_bytes())
                .context("cannot write the report")?;
        }
        ReportFormat::Csv => report::csv(&report, &mut out)?,
        ReportFormat::Json => report::json(&report, &mut out)?,
    }
    out.flush().context("cannot write the report")
}

/// `--from/--to`, defaulting to the last [`DEFAULT_DAYS`] days the ledger holds; `None` for an empty
/// ledger.
fn window(state: &State, args: &ReportArgs) -> Result<Option<(NaiveDate, NaiveDate)>> {
    let held = state.ledger_summary()?.days;
    let last = match (args.to, held) {
        (Some(to), _) => to,
        (None, Some((_, last))) => last,
        (None, None) => return Ok(None),
    };
    let first = args
        .from
        .unwrap_or_else(|| last - Days::new(DEFAULT_DAYS - 1));
    if first > last {
        bail!("--from {first} is after --to {last}");
    }
    Ok(Some((first, last)))
}

fn keys(by: &[ReportKey]) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    for key in by {
        let key = match key {
            ReportKey::Day => Key::Day,
            ReportKey::App => Key::App,
            ReportKey::User => Key::User,
            ReportKey::Customer => Key::Customer,
            ReportKey::Model => Key::Model,
            ReportKey::Provider => Key::Provider,
            ReportKey::Workspace => Key::Workspace,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}
