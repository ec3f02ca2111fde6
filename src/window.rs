//! Which UTC days a run covers.
//!
//! Usage is exported per closed UTC day, so a window never reaches today. A scheduled run covers the
//! days after the watermark up to yesterday, plus `EXPORT_LOOKBACK_DAYS` already-exported days again
//! (runs that finished after midnight add usage to a day already sent); the first run, with no
//! watermark yet, covers the last `DIFY_FETCH_DAYS` days. `--from/--to` names the days itself.

use std::fmt;

use anyhow::{Result, bail};
use chrono::{Days, NaiveDate, NaiveDateTime, NaiveTime};

/// An inclusive range of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl Window {
    /// The `days` closed days before `today`.
    #[must_use]
    pub fn last_days(today: NaiveDate, days: u32) -> Window {
        Window {
            first: today - Days::new(u64::from(days)),
            last: today - Days::new(1),
        }
    }

    /// The window of a scheduled run; `None` when there is nothing to collect (the watermark is
    /// yesterday and no lookback is asked for).
    #[must_use]
    pub fn scheduled(
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
    pub fn backfill(first: NaiveDate, last: NaiveDate, today: NaiveDate) -> Result<Window> {
        if first > last {
            bail!("--from {first} is after --to {last}");
        }
        if last >= today {
            bail!(
                "--to {last} is not a closed UTC day yet; the last exportable day is {}",
                today - Days::new(1)
            );
        }
        Ok(Window { first, last })
    }

    /// Every day of the window, in order.
    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        self.first
            .iter_days()
            .take_while(move |day| *day <= self.last)
    }

    /// Whether `day` is inside.
    #[must_use]
    pub fn contains(self, day: NaiveDate) -> bool {
        self.first <= day && day <= self.last
    }

    /// 00:00:00 UTC of the first day.
    #[must_use]
    pub fn start(self) -> NaiveDateTime {
        self.first.and_time(NaiveTime::MIN)
    }

    /// 23:59:59 UTC of the last day (Dify's date filters are inclusive and in whole seconds).
    #[must_use]
    pub fn end_inclusive(self) -> NaiveDateTime {
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
    fn a_backfill_must_be_ordered_and_closed() {
        let today = day("2026-11-28");
        assert!(Window::backfill(day("2026-11-02"), day("2026-11-01"), today).is_err());
        assert!(Window::backfill(day("2026-11-01"), today, today).is_err());
        assert!(Window::backfill(day("2026-11-27"), day("2026-11-27"), today).is_ok());
    }
}
