//! `exporter next-runs`: the next fire times of the schedule, one RFC 3339 UTC instant per line.
//! It needs only the schedule, so it works before the tokens are configured.

use std::io::Write as _;

use chrono::{SecondsFormat, Utc};
use tracing::error;

use crate::cli::NextRunsArgs;
use crate::config::variables;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::schedule::Schedule;

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
    let count = usize::try_from(args.count).unwrap_or(usize::MAX);
    let mut out = std::io::stdout().lock();
    for instant in schedule.fire_times_after(from).take(count) {
        if writeln!(
            out,
            "{}",
            instant.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .is_err()
        {
            // The reader went away (e.g. `| head`); that is not a failure of ours.
            break;
        }
    }
    Exit::Success
}
