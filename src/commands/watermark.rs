//! `exporter watermark show|set DAY`: the last day whose records are queued. Setting it decides
//! which days the next run exports, so it needs `--yes` (no interactive prompt: this runs in
//! scripts and pods) and takes the run lock.

use chrono::Utc;
use tracing::{error, info};

use super::frame;
use crate::cli::{WatermarkAction, WatermarkArgs};
use crate::config;
use crate::environment::Environment;
use crate::exit::Exit;
use crate::lock::RunLock;
use crate::run::window::Window;
use crate::state::State;

#[must_use]
pub(super) fn watermark(environment: &Environment, args: &WatermarkArgs) -> Exit {
    let state_dir = config::state_dir(environment);
    match args.action {
        WatermarkAction::Show => match State::open_read_only(&state_dir)
            .and_then(|s| s.map(|s| s.watermark()).transpose())
        {
            Ok(day) => {
                let shown = day
                    .flatten()
                    .map_or_else(|| "(none)".to_owned(), |d| d.to_string());
                super::print(&format!("{shown}\n"), Exit::Success)
            }
            Err(err) => {
                error!(error = format!("{err:#}"), "cannot read the state");
                Exit::Failure
            }
        },
        WatermarkAction::Set { day, yes } => {
            let today = Utc::now().date_naive();
            if day >= today {
                error!(day = %day, "the watermark must be a closed UTC day, before today");
                return Exit::Failure;
            }
            if let Err(err) = Window::check_catch_up(day, today) {
                error!(error = %err, "watermark too far back");
                return Exit::Failure;
            }
            let _lock = match RunLock::acquire(&state_dir) {
                Ok(lock) => lock,
                Err(err) => return frame::lock_error(err),
            };
            let state = match State::open(&state_dir) {
                Ok(state) => state,
                Err(err) => {
                    error!(error = format!("{err:#}"), "cannot open the state");
                    return Exit::Failure;
                }
            };
            let current = match state.watermark() {
                Ok(current) => current.map_or_else(|| "(none)".to_owned(), |d| d.to_string()),
                Err(err) => {
                    error!(error = format!("{err:#}"), "cannot read the state");
                    return Exit::Failure;
                }
            };
            if !yes {
                return super::print(
                    &format!(
                        "would move the watermark from {current} to {day}: the next run exports the days after {day} \
                         (plus EXPORT_LOOKBACK_DAYS before); rerun with --yes to do it\n"
                    ),
                    Exit::Failure,
                );
            }
            if let Err(err) = state.set_watermark(day) {
                error!(error = format!("{err:#}"), "cannot set the watermark");
                return Exit::Failure;
            }
            info!(from = current, to = %day, "watermark set");
            super::print(
                &format!("watermark moved from {current} to {day}\n"),
                Exit::Success,
            )
        }
    }
}
