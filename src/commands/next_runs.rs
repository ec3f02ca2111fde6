//! `exporter next-runs`: the next fire times of the schedule, one RFC 3339 UTC instant per line.
//! It needs only the schedule, so it works before the tokens are configured.

use std::io::Write as _;

use chrono::{Datelike as _, SecondsFormat, Utc};
use tracing::error;

use crate::cli::NextRunsArgs;
use crate::config::variables;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::schedule::{self, Schedule};

#[must_use]
pub(super) fn next_runs(environment: &Environment, args: &NextRunsArgs) -> Exit {
    let (source, text) = match &args.schedule {
        Some(text) => ("--schedule", text.as_str()),
        None => (
            "CRON_SCHEDULE",
            environment
                .get(variables::CRON_SCHEDULE.name)
                .or(variables::CRON_SCHEDULE.default)
                .unwrap_or_default(),
        ),
    };
    let schedule = match Schedule::parse(text) {
        Ok(schedule) => schedule,
        Err(err) => {
            error!(
                problem = format!("{source}: `{}` {err}", text.trim()),
                "invalid schedule"
            );
            return Exit::Failure;
        }
    };
    let from = args.from.unwrap_or_else(Utc::now);
    let years = schedule::CALENDAR_YEARS;
    if !years.contains(&from.year()) {
        error!(
            from = %from,
            "--from must lie in the years {} to {}, the calendar fire times are computed in",
            years.start(),
            years.end()
        );
        return Exit::Failure;
    }
    let count = usize::try_from(args.count).unwrap_or(usize::MAX);
    let mut out = crate::stdout::Stdout::lock();
    let mut printed = 0;
    for instant in schedule.fire_times_after(from).take(count) {
        printed += 1;
        if writeln!(
            out,
            "{}",
            instant.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .is_err()
            || out.closed()
        {
            // The reader went away (e.g. `| head`); that is not a failure of ours.
            return Exit::Success;
        }
    }
    if printed < count {
        error!(
            printed,
            count,
            "the schedule fires only {printed} time(s) after --from before the end of {}, the last year fire times are computed in",
            years.end()
        );
        return Exit::Failure;
    }
    Exit::Success
}
