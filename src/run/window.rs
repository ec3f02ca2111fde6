//! Which UTC days a run covers.
//!
//! Usage is exported per closed UTC day, so a window never reaches today. A scheduled run covers the
//! days after the watermark up to yesterday, plus `EXPORT_LOOKBACK_DAYS` already-exported days again
//! (runs that finished after midnight add usage to a day already sent); the first run, with no
//! watermark yet, covers the last `DIFY_FETCH_DAYS` days. `--from/--to` names the days itself.
//!
//! One run covers at most [`MAX_WINDOW_DAYS`] days (new days after the watermark; the lookback
//! comes on top): a typo such as `1900-01-01` would otherwise walk 46,000 days. Longer gaps are
//! backfilled in steps. A window is collected in chunks of `COLLECT_CHUNK_DAYS`, oldest first, each
//! queued (and the watermark moved) before the next starts, so a stopped run keeps its progress.

use std::fmt;

use anyhow::{Result, bail};
use chrono::{Days, NaiveDate, NaiveDateTime, NaiveTime};

/// The most days one run collects.
pub(crate) const MAX_WINDOW_DAYS: u32 = 366;

/// How to get further back than one run may go.
fn in_steps(first: NaiveDate) -> String {
    format!(
        "backfill in steps of at most {MAX_WINDOW_DAYS} days, oldest first: `exporter run --from {first} --to {}`, \
         then the next {MAX_WINDOW_DAYS} days, and so on (backfills do not move the watermark; set it with \
         `exporter watermark set DAY --yes` once the gap is filled)",
        first + Days::new(u64::from(MAX_WINDOW_DAYS - 1))
    )
}

/// An inclusive range of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) first: NaiveDate,
    pub(crate) last: NaiveDate,
}

impl Window {
    /// The `days` closed days before `today`.
    #[must_use]
    pub(crate) fn last_days(today: NaiveDate, days: u32) -> Window {
        Window {
            first: today - Days::new(u64::from(days)),
            last: today - Days::new(1),
        }
    }

    /// The window of a scheduled run; `None` when there is nothing to collect (the watermark is
    /// yesterday and no lookback is asked for).
    #[must_use]
    pub(crate) fn scheduled(
        watermark: Option<NaiveDate>,
        today: NaiveDate,
        lookback: u32,
        fetch_days: u32,
    ) -> Option<Window> {
        let Some(watermark) = watermark else {
            return Some(Window::last_days(today, fetch_days));
        };
        let last = today - Days::new(1);
        let first = (watermark + Days::new(1)).min(today) - Days::new(u64::from(lookback));
        (first <= last).then_some(Window { first, last })
    }

    /// A backfill window from `--from/--to`, checked against `today`.
    pub(crate) fn backfill(first: NaiveDate, last: NaiveDate, today: NaiveDate) -> Result<Window> {
        if first > last {
            bail!("--from {first} is after --to {last}");
        }
        if last >= today {
            bail!(
                "--to {last} is not a closed UTC day yet; the last exportable day is {}",
                today - Days::new(1)
            );
        }
        let window = Window { first, last };
        if window.day_count() > u64::from(MAX_WINDOW_DAYS) {
            bail!(
                "--from {first} --to {last} covers {} days, more than the {MAX_WINDOW_DAYS} one run may collect; {}",
                window.day_count(),
                in_steps(first)
            );
        }
        Ok(window)
    }

    /// Refuses a watermark so far back that the next scheduled run would collect more than
    /// [`MAX_WINDOW_DAYS`] new days.
    pub(crate) fn check_catch_up(watermark: NaiveDate, today: NaiveDate) -> Result<()> {
        let new_days = (today - watermark).num_days() - 1;
        if new_days > i64::from(MAX_WINDOW_DAYS) {
            bail!(
                "the watermark {watermark} is {new_days} days behind yesterday, more than the {MAX_WINDOW_DAYS} one run \
                 may collect; {}",
                in_steps(watermark + Days::new(1))
            );
        }
        Ok(())
    }

    /// Days in the window.
    #[must_use]
    pub(crate) fn day_count(self) -> u64 {
        u64::try_from((self.last - self.first).num_days() + 1).unwrap_or(0)
    }

    /// The window cut into consecutive windows of at most `days` days, oldest first.
    pub(crate) fn chunks(self, days: u32) -> impl Iterator<Item = Window> {
        let step = Days::new(u64::from(days.max(1)));
        std::iter::successors(Some(self.first), move |first| first.checked_add_days(step))
            .take_while(move |first| *first <= self.last)
            .map(move |first| Window {
                first,
                last: (first + step - Days::new(1)).min(self.last),
            })
    }

    /// Every day of the window, in order.
    pub(crate) fn days(self) -> impl Iterator<Item = NaiveDate> {
        self.first
            .iter_days()
            .take_while(move |day| *day <= self.last)
    }

    /// Whether `day` is inside.
    #[must_use]
    pub(crate) fn contains(self, day: NaiveDate) -> bool {
        self.first <= day && day <= self.last
    }

    /// 00:00:00 UTC of the first day.
    #[must_use]
    pub(crate) fn start(self) -> NaiveDateTime {
        self.first.and_time(NaiveTime::MIN)
    }

    /// 23:59:59 UTC of the last day (Dify's date filters are inclusive and in whole seconds).
    #[must_use]
    pub(crate) fn end_inclusive(self) -> NaiveDateTime {
        self.last
            .and_hms_opt(23, 59, 59)
            .unwrap_or_else(|| self.last.and_time(NaiveTime::MIN))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_window_ends_yesterday() {
        let window = Window::last_days(day("2026-11-28"), 7);
        assert_eq!(
            (window.first, window.last),
            (day("2026-11-21"), day("2026-11-27"))
        );
        assert_eq!(window.days().count(), 7);
    }

    #[test]
    fn a_scheduled_window_follows_the_watermark_with_lookback() {
        let today = day("2026-11-28");
        let window =
            |watermark: &str, lookback| Window::scheduled(Some(day(watermark)), today, lookback, 7);
        assert_eq!(
            window("2026-11-25", 1),
            Some(Window {
                first: day("2026-11-25"),
                last: day("2026-11-27")
            })
        );
        assert_eq!(
            window("2026-11-27", 1),
            Some(Window {
                first: day("2026-11-27"),
                last: day("2026-11-27")
            })
        );
        assert_eq!(window("2026-11-27", 0), None);
        assert_eq!(
            Window::scheduled(None, today, 1, 3),
            Some(Window {
                first: day("2026-11-25"),
                last: day("2026-11-27")
            })
        );
    }

    #[test]
    fn a_window_is_capped_and_cut_into_chunks_oldest_first() {
        let today = day("2026-11-28");
        let err = Window::backfill(day("1900-01-01"), day("2026-11-27"), today).unwrap_err();
        assert!(
            err.to_string()
                .contains("`exporter run --from 1900-01-01 --to 1901-01-01`"),
            "{err}"
        );
        let year = Window::backfill(day("2025-11-27"), day("2026-11-27"), today).unwrap();
        assert_eq!(year.day_count(), 366);
        assert!(Window::check_catch_up(day("2025-11-26"), today).is_ok());
        assert!(Window::check_catch_up(day("2025-11-25"), today).is_err());
        let chunks: Vec<String> = Window::backfill(day("2026-11-01"), day("2026-11-17"), today)
            .unwrap()
            .chunks(7)
            .map(|w| w.to_string())
            .collect();
        assert_eq!(
            chunks,
            [
                "2026-11-01..=2026-11-07",
                "2026-11-08..=2026-11-14",
                "2026-11-15..=2026-11-17"
            ]
        );
    }

    #[test]
    fn a_backfill_must_be_ordered_and_closed() {
        let today = day("2026-11-28");
        assert!(Window::backfill(day("2026-11-02"), day("2026-11-01"), today).is_err());
        assert!(Window::backfill(day("2026-11-01"), today, today).is_err());
        assert!(Window::backfill(day("2026-11-27"), day("2026-11-27"), today).is_ok());
    }
}
