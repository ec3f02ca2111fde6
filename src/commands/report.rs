//! `exporter report`: the ledger summed by the chosen keys (`docs/report.md`). It reads `state.db`
//! read-only beside a running export (SQLite lets readers in beside a writer), needs no
//! configuration but `STATE_DIR`, and touches no network.

use std::io::{IsTerminal as _, Write as _};

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
    let Some((first, last)) = window(&state, args.from, args.to)? else {
        bail!(
            "the ledger in {} is empty: no run has exported usage yet",
            state.path().display()
        );
    };
    let keys = keys(&args.by);
    let top = args.top.map(|n| n as usize);
    let mut text = Vec::new();
    match args.output {
        ReportFormat::Table => {
            let report = report::summarize(&state, first, last, keys, top)?;
            let at_terminal = args.out.is_none() && std::io::stdout().is_terminal();
            let width = match terminal_size::terminal_size() {
                Some((columns, _)) if at_terminal => Width::Terminal(usize::from(columns.0)),
                _ => Width::Unlimited,
            };
            text = report::table(&report, width).into_bytes();
        }
        ReportFormat::Csv => report::csv(
            &report::summarize(&state, first, last, keys, top)?,
            &mut text,
        )?,
        ReportFormat::Json => {
            report::json(
                &report::summarize(&state, first, last, keys, top)?,
                &mut text,
            )?;
        }
        ReportFormat::Html => text = html_page(&state, first, last, keys, top)?.into_bytes(),
    }
    emit(args, &text)
}

/// The page: the table asked for, and the three groupings its charts need, from one pass over the
/// ledger.
fn html_page(
    state: &State,
    first: NaiveDate,
    last: NaiveDate,
    keys: Vec<Key>,
    top: Option<usize>,
) -> Result<String> {
    let mut reports = report::summarize_many(
        state,
        first,
        last,
        vec![
            (keys, top),
            (vec![Key::Day, Key::App], None),
            (vec![Key::User], Some(report::TOP_ROWS)),
            (vec![Key::Model], Some(report::TOP_ROWS)),
        ],
    )?
    .into_iter();
    let mut next = || reports.next().context("a grouping of the page is missing");
    let (table, days, users, models) = (next()?, next()?, next()?, next()?);
    Ok(report::html(&report::Page {
        table: &table,
        days: &days,
        users: &users,
        models: &models,
    }))
}

/// Writes the report to `--out` (replacing the file) or stdout.
fn emit(args: &ReportArgs, text: &[u8]) -> Result<()> {
    if let Some(path) = &args.out {
        return std::fs::write(path, text)
            .with_context(|| format!("cannot write --out {}", path.display()));
    }
    let mut out = crate::stdout::Stdout::lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .context("cannot write the report to stdout")
}

/// `--from/--to`, defaulting to the last [`DEFAULT_DAYS`] days the ledger holds; `None` for an empty
/// ledger. `reconcile` takes its window the same way.
pub(super) fn window(
    state: &State,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Option<(NaiveDate, NaiveDate)>> {
    let held = state.ledger_days()?;
    let last = match (to, held) {
        (Some(to), _) => to,
        (None, Some((_, last))) => last,
        (None, None) => return Ok(None),
    };
    let first = from.unwrap_or_else(|| last - Days::new(DEFAULT_DAYS - 1));
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
