//! `exporter status`: the watermark, the ledger's extent, per sink the outbox (queued and dead
//! batches with their last errors),
//! the batches discarded by `exporter discard`, the login guard's verdict (never its hash), the
//! last success and the last runs, read without taking the lock (SQLite lets readers in beside a
//! writer).

use std::fmt::Write as _;

use serde_json::{Value, json};
use tracing::error;

use crate::cli::{OutputFormat, StatusArgs};
use crate::config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::state::{Batch, BatchState, State};

/// Discarded batches shown.
const DISCARDED_SHOWN: usize = 10;
/// Runs shown.
const RUNS_SHOWN: usize = 10;

#[must_use]
pub(super) fn status(environment: &Environment, args: &StatusArgs) -> Exit {
    let state_dir = config::state_dir(environment);
    let report = match State::open_read_only(&state_dir)
        .and_then(|state| state.map(|s| report(&s)).transpose())
    {
        Ok(report) => report,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot read the state");
            return Exit::Failure;
        }
    };
    let Some(report) = report else {
        let message = format!(
            "no state yet: {} has no state database (no run has queued anything)",
            state_dir.display()
        );
        let shown = match args.output {
            OutputFormat::Text => format!("{message}\n"),
            OutputFormat::Json => format!("{}\n", json!({"database": null, "message": message})),
        };
        return super::print(&shown, Exit::Success);
    };
    // Errors stored by an older exporter may hold a secret a server echoed: mask on the way out too.
    let masker = config::masker(environment);
    let shown = match args.output {
        OutputFormat::Json => format!("{}\n", masker.mask(&report.to_string())),
        OutputFormat::Text => masker.mask(&text(&report)),
    };
    super::print(&shown, Exit::Success)
}

fn report(state: &State) -> anyhow::Result<Value> {
    let counts = state.counts()?;
    let sinks: serde_json::Map<String, Value> = state
        .counts_per_sink()?
        .into_iter()
        .map(|(sink, c)| {
            (
                sink,
                json!({"queued": c.queued, "dead": c.dead, "sent": c.sent}),
            )
        })
        .collect();
    let ledger = state.ledger_summary()?;
    let batch = |b: &Batch| {
        json!({
            "id": b.id, "sink": b.sink, "first_day": b.first_day.to_string(), "last_day": b.last_day.to_string(),
            "records": b.record_count, "tokens": b.total_tokens, "queued_at": b.created_at.to_rfc3339(),
            "failed_runs": b.attempts, "last_attempt_at": b.last_attempt_at, "last_error": b.last_error,
        })
    };
    let runs: Vec<Value> = state
        .recent_runs(RUNS_SHOWN)?
        .into_iter()
        .map(|r| {
            json!({
                "run_id": r.run_id, "started_at": r.started_at, "finished_at": r.finished_at, "outcome": r.outcome,
                "exit_code": r.exit_code, "summary": serde_json::from_str::<Value>(&r.summary).unwrap_or(Value::Null),
            })
        })
        .collect();
    let login_guard = state.login_verdict()?.map(|v| {
        json!({
            "verdict": v.verdict, "email": v.email, "dify_url": v.dify_url,
            "recorded_at": v.recorded_at, "detail": v.detail,
        })
    });
    Ok(json!({
        "database": state.path().display().to_string(),
        "watermark": state.watermark()?.map(|d| d.to_string()),
        "last_success": state.last_success()?.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "login_guard": login_guard,
        "ledger": {
            "rows": ledger.rows,
            "first_day": ledger.days.map(|(first, _)| first.to_string()),
            "last_day": ledger.days.map(|(_, last)| last.to_string()),
        },
        "batches": {"queued": counts.queued, "dead": counts.dead, "sent": counts.sent},
        "sinks": sinks,
        "queued": state.all_batches(BatchState::Queued)?.iter().map(batch).collect::<Vec<_>>(),
        "dead": state.all_batches(BatchState::Dead)?.iter().map(batch).collect::<Vec<_>>(),
        "discarded": state.discarded(DISCARDED_SHOWN)?.iter().map(|(b, at)| {
            let mut shown = batch(b);
            shown["discarded_at"] = at.as_str().into();
            shown
        }).collect::<Vec<_>>(),
        "runs": runs,
    }))
}

fn text(report: &Value) -> String {
    let mut out = String::new();
    // Errors and answers came from servers: their control characters are shown escaped.
    let str_or = |v: &Value, default: &str| crate::http::printable(v.as_str().unwrap_or(default));
    let _ = writeln!(out, "state database  {}", str_or(&report["database"], ""));
    let _ = writeln!(
        out,
        "watermark       {}",
        str_or(
            &report["watermark"],
            "(none: the next run exports the last DIFY_FETCH_DAYS days)"
        )
    );
    let _ = writeln!(
        out,
        "last success    {}",
        str_or(&report["last_success"], "(none yet)")
    );
    let guard = &report["login_guard"];
    if guard.is_null() {
        let _ = writeln!(out, "login guard     clear");
    } else {
        let _ = writeln!(
            out,
            "login guard     {} for {} at {} ({}): runs with the same DIFY_EMAIL and DIFY_PASSWORD stop before logging in; \
             change them, or `exporter run --retry-login`",
            str_or(&guard["verdict"], ""),
            str_or(&guard["email"], ""),
            str_or(&guard["recorded_at"], ""),
            str_or(&guard["detail"], "")
        );
    }
    ledger_and_sinks(&mut out, report);
    for (title, key) in [
        ("queued", "queued"),
        (
            "dead letters (`exporter resend` or `exporter discard`)",
            "dead",
        ),
        ("discarded by the operator (never sent)", "discarded"),
    ] {
        let list = report[key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for batch in list {
            // `Value` ignores width and alignment: pad the id as text.
            let id = format!("#{}", batch["id"]);
            let _ = writeln!(
                out,
                "  {id:<7} {:<8} {}  {:>5} records  failed runs {}  last error: {}",
                str_or(&batch["sink"], ""),
                str_or(&batch["first_day"], ""),
                batch["records"],
                batch["failed_runs"],
                str_or(&batch["last_error"], "-")
            );
        }
    }
    let runs = report["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !runs.is_empty() {
        let _ = writeln!(out, "last runs:");
        for run in runs {
            let _ = writeln!(
                out,
                "  {}  {:<9} exit {:<3} records {}  sent {}  run {}",
                str_or(&run["finished_at"], ""),
                str_or(&run["outcome"], ""),
                run["exit_code"],
                run["summary"]["records"],
                run["summary"]["batches_sent"],
                str_or(&run["run_id"], "")
            );
        }
    }
    out
}

/// The ledger's extent and the batches per sink.
fn ledger_and_sinks(out: &mut String, report: &Value) {
    let str_or = |v: &Value, default: &str| crate::http::printable(v.as_str().unwrap_or(default));
    let ledger = &report["ledger"];
    let _ = writeln!(
        out,
        "ledger          {} rows, {} to {}",
        ledger["rows"],
        str_or(&ledger["first_day"], "-"),
        str_or(&ledger["last_day"], "-")
    );
    let b = &report["batches"];
    let _ = writeln!(
        out,
        "batches         {} queued, {} dead, {} sent (kept 35 days)",
        b["queued"], b["dead"], b["sent"]
    );
    if let Some(sinks) = report["sinks"].as_object() {
        for (sink, b) in sinks {
            let _ = writeln!(
                out,
                "  sink {sink:<10} {} queued, {} dead, {} sent",
                b["queued"], b["dead"], b["sent"]
            );
        }
    }
}
