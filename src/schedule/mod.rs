//! `CRON_SCHEDULE` in the portable grammar: the subset of 5-field cron that Kubernetes
//! (robfig/cron v3 `ParseStandard`) and Vixie/cronie crontab both accept *and* read the same way.
//!
//! The program never waits for its schedule; Kubernetes or crontab starts it. This module lets
//! `validate-config` refuse a schedule that one of the two would reject or interpret differently,
//! and gives `next-runs` and the start-up log fire times in UTC.
//!
//! Fire times come from the `cron` crate, but only behind this module's own parser: the crate
//! wants a seconds field, numbers Sunday 1 and always ANDs the two day fields, whereas cron's
//! shared rule ORs them when both are restricted. So a validated schedule is expanded into
//! explicit number lists in the crate's numbering, and the OR case becomes two crate schedules
//! whose fire times are merged.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Why a schedule was rejected: one sentence fragment naming the offending field or item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct ScheduleError {
    reason: String,
}

/// The years the `cron` crate computes fire times in; `next-runs` refuses instants outside them
/// instead of printing nothing or skipping to 1970.
pub(crate) const CALENDAR_YEARS: std::ops::RangeInclusive<i32> = 1970..=2100;

fn fail<T>(reason: String) -> Result<T, ScheduleError> {
    Err(ScheduleError { reason })
}

macro_rules! bail {
    ($($arg:tt)*) => { return fail(format!($($arg)*)) };
}

struct Field {
    label: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const fn field(label: &'static str, min: u32, max: u32, names: &'static [&'static str]) -> Field {
    Field {
        label,
        min,
        max,
        names,
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FIELDS: [Field; 5] = [
    field("minute", 0, 59, &[]),
    field("hour", 0, 23, &[]),
    field("day-of-month", 1, 31, &[]),
    field("month", 1, 12, &MONTHS),
    field("day-of-week", 0, 6, &WEEKDAYS),
];
const ALL_DOM: u64 = 0xFFFF_FFFE; // bits 1..=31
const ALL_DOW: u64 = 0x7F; // bits 0..=6
const DAYS_IN: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const FIVE: &str = "5 fields (minute hour day-of-month month day-of-week)";
const ITEMS: &str = "items are `*`, `*/S`, `N`, `A-B` or `A-B/S`";
const SUNDAY: &str = " (write Sunday as 0 or SUN; Kubernetes rejects 7)";
const RULE: [&str; 2] = ["both day fields", "either day field"];

impl Field {
    fn allowed(&self) -> String {
        let range = format!("{}-{}", self.min, self.max);
        match (self.names.first(), self.names.last()) {
            (Some(a), Some(b)) => format!("{range} or {}-{}", a.to_uppercase(), b.to_uppercase()),
            _ => range,
        }
    }
}

/// The expanded meaning of a schedule: one bit per allowed value, plus the day-matching mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Both day fields are restricted, so a day matches if either matches (otherwise both must).
    either_day: bool,
}

/// A validated schedule in the portable grammar.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    expression: String,
    fields: Fields,
    primary: cron::Schedule,
    /// The day-of-week half of an OR schedule, since the `cron` crate can only AND.
    secondary: Option<cron::Schedule>,
}

impl Schedule {
    /// Parses and validates; the error says why in one sentence fragment that names the offending
    /// field or item, without repeating the whole expression.
    ///
    /// # Errors
    /// Anything outside the portable grammar, and schedules that would never fire.
    pub(crate) fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let expression = expression.trim().to_owned();
        let fields = parse_fields(&expression)?;
        let f = &fields;
        let (primary, secondary) = if f.either_day {
            (engine(f, f.dom, ALL_DOW)?, Some(engine(f, ALL_DOM, f.dow)?))
        } else {
            (engine(f, f.dom, f.dow)?, None)
        };
        Ok(Schedule {
            expression,
            fields,
            primary,
            secondary,
        })
    }

    /// The expression as given (trimmed).
    #[must_use]
    pub(crate) fn expression(&self) -> &str {
        &self.expression
    }

    /// Fire times strictly after `after`, ascending, in UTC, within the [`CALENDAR_YEARS`] the
    /// `cron` crate covers: none after them, and none before them however early `after` is.
    pub(crate) fn fire_times_after(
        &self,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut a = self.primary.after(&after).peekable();
        let mut b = self.secondary.as_ref().map(|s| s.after(&after).peekable());
        std::iter::from_fn(move || {
            let Some(b) = b.as_mut() else { return a.next() };
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x == y => b.next().and(a.next()), // once, not twice
                (Some(x), Some(y)) if x > y => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            }
        })
        // The crate adds one second to `after`; this keeps the contract should that change.
        .skip_while(move |t| *t <= after)
    }

    /// True when both fire at exactly the same instants, whatever the spelling.
    #[must_use]
    pub(crate) fn same_meaning(&self, other: &Schedule) -> bool {
        self.fields.canonical() == other.fields.canonical()
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

fn members(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |bit| mask >> bit & 1 == 1)
}

/// Builds a `cron` crate schedule from explicit lists, so none of its own parsing rules matter.
fn engine(f: &Fields, dom: u64, dow: u64) -> Result<cron::Schedule, ScheduleError> {
    let mut text = String::from("0");
    // The crate numbers Sunday 1 where cron numbers it 0.
    for (mask, shift) in [(f.minute, 0), (f.hour, 0), (dom, 0), (f.month, 0), (dow, 1)] {
        let list: Vec<String> = members(mask).map(|v| (v + shift).to_string()).collect();
        text = format!("{text} {}", list.join(","));
    }
    cron::Schedule::from_str(&text).or_else(|e| fail(format!("internal error: cron crate: {e}")))
}

fn parse_fields(text: &str) -> Result<Fields, ScheduleError> {
    if text.is_empty() {
        bail!("the schedule is empty; give {FIVE} or a macro such as `@daily`");
    }
    // Kubernetes splits on any whitespace, crontab only on spaces and tabs.
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_whitespace() && !matches!(c, ' ' | '\t'))
    {
        bail!("fields must be separated by spaces or tabs, not {c:?}");
    }
    if text.starts_with('@') {
        return parse_fields(expand_macro(text)?);
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts[0].contains('=') {
        let prefix = parts[0];
        bail!(
            "time-zone prefix `{prefix}` is not allowed (Kubernetes rejects it, crontab lacks it)"
        );
    }
    match parts.len() {
        5 => {}
        n if n < 5 => bail!("expected {FIVE} but found {n}"),
        n => bail!("expected {FIVE} but found {n}; seconds, years and commands are not allowed"),
    }
    let (mut sets, mut robfig_star) = ([0; 5], [false; 5]);
    for (i, field) in FIELDS.iter().enumerate() {
        (sets[i], robfig_star[i]) = parse_field(field, parts[i])?;
    }
    // robfig calls a day field unrestricted only for a `*` or `*/1` item, Vixie for any field
    // starting with `*`; where they differ the two can match days differently.
    let vixie_star = |i: usize| parts[i].starts_with('*');
    let robfig_either = !robfig_star[2] && !robfig_star[4];
    let vixie_either = !vixie_star(2) && !vixie_star(4);
    if robfig_either != vixie_either {
        let i = if robfig_star[2] == vixie_star(2) {
            4
        } else {
            2
        };
        let (f, text, other_label) = (&FIELDS[i], parts[i], FIELDS[6 - i].label);
        let fix = if text.starts_with("*/") {
            format!("write it as `{}-{}{}`", f.min, f.max, &text[1..])
        } else {
            "write it as just `*`".to_owned()
        };
        bail!(
            "{} `{text}` with {other_label} `{}` is read differently by Kubernetes (a day must \
             match {}) and crontab (a day must match {}); {fix}, or set {other_label} to `*`",
            f.label,
            parts[6 - i],
            RULE[usize::from(robfig_either)],
            RULE[usize::from(vixie_either)],
        );
    }
    let [minute, hour, dom, month, dow] = sets;
    let fields = Fields {
        minute,
        hour,
        dom,
        month,
        dow,
        either_day: robfig_either,
    };
    // 28 consecutive years hold every (month, day, weekday) combination, Feb 29 included.
    let fires = (2001..=2028).any(|y| {
        let on = |m, d| NaiveDate::from_ymd_opt(y, m, d).is_some_and(|day| fields.matches(day));
        members(month).any(|m| (1..=31).any(|d| on(m, d)))
    });
    if !fires {
        let (d, m) = (parts[2], parts[3]);
        bail!("day-of-month `{d}` never falls in month `{m}`, so it would never fire");
    }
    Ok(fields)
}

fn expand_macro(text: &str) -> Result<&'static str, ScheduleError> {
    const MACROS: [(&str, &str); 7] = [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ];
    let word = text.split_whitespace().next().unwrap_or(text);
    let lower = word.to_ascii_lowercase();
    match MACROS.iter().find(|(name, _)| *name == lower) {
        Some(_) if word != lower => bail!("macro `{word}` must be lowercase (`{lower}`)"),
        Some((_, expansion)) if word == text => Ok(expansion),
        Some(_) => bail!("macro `{word}` must stand alone; nothing may follow it"),
        None if lower == "@reboot" => {
            bail!("`{word}` is not accepted by Kubernetes; write 5 fields")
        }
        None if lower == "@every" => {
            bail!("`{word}` is a Kubernetes extension that crontab lacks; write 5 fields")
        }
        None => bail!(
            "unknown macro `{word}`; allowed: @yearly @annually @monthly @weekly \
             @daily @midnight @hourly"
        ),
    }
}

/// Returns the field's values as a bit mask, and whether robfig/cron calls it unrestricted.
fn parse_field(f: &Field, text: &str) -> Result<(u64, bool), ScheduleError> {
    let label = f.label;
    if text.contains('?') {
        bail!("{label} `{text}`: `?` is not accepted by crontab; use `*`");
    }
    if text.contains('#') {
        bail!("{label} `{text}`: `#` is not supported by Kubernetes or crontab");
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !"*,/-".contains(c))
    {
        bail!("{label} `{text}` contains `{c}`; {ITEMS}");
    }
    let (mut mask, mut star) = (0u64, false);
    for item in text.split(',') {
        if item.is_empty() {
            bail!("{label} `{text}` has an empty list item");
        }
        if item.matches('/').count() > 1 || item.matches('-').count() > 1 {
            bail!("{label} item `{item}` is malformed; {ITEMS}");
        }
        let (base, step) = match item.split_once('/') {
            None => (item, 1),
            Some((base, step)) => (base, parse_step(label, item, step)?),
        };
        let (lo, hi) = match base.split_once('-') {
            _ if base == "*" => (f.min, f.max),
            Some((a, b)) => (parse_value(f, item, a)?, parse_value(f, item, b)?),
            None if item.contains('/') => {
                bail!(
                    "{label} `{item}` has a step but no range; write `{base}-{}/{step}`",
                    f.max
                )
            }
            None => parse_value(f, item, base).map(|v| (v, v))?,
        };
        if lo > hi {
            bail!("{label} range `{base}` is reversed; write the smaller value first");
        }
        star |= base == "*" && step == 1;
        mask |= (lo..=hi).step_by(step).fold(0, |m, v| m | 1 << v);
    }
    Ok((mask, star))
}

fn parse_step(label: &str, item: &str, step: &str) -> Result<usize, ScheduleError> {
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{label} item `{item}` needs a whole-number step after `/`");
    }
    match step.parse::<u32>() {
        Ok(0) => bail!("{label} step in `{item}` must be at least 1"),
        Ok(n) => Ok(n as usize),
        Err(_) => bail!("{label} step in `{item}` is too large"),
    }
}

fn parse_value(f: &Field, item: &str, v: &str) -> Result<u32, ScheduleError> {
    let (label, allowed) = (f.label, f.allowed());
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n = v.parse::<u32>().unwrap_or(u32::MAX); // overlong is simply out of range
        if (f.min..=f.max).contains(&n) {
            return Ok(n);
        }
        let hint = if f.max == 6 && n == 7 { SUNDAY } else { "" };
        bail!("{label} `{v}` is out of range {}-{}{hint}", f.min, f.max);
    }
    let named = |g: &Field| {
        g.names
            .iter()
            .zip(g.min..)
            .find(|(n, _)| n.eq_ignore_ascii_case(v))
    };
    if let Some((_, n)) = named(f) {
        return Ok(n);
    }
    let suffix = v
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .to_ascii_uppercase();
    if v.is_empty() || v.contains('*') {
        bail!("{label} item `{item}` is malformed; {ITEMS}");
    } else if matches!(suffix.as_str(), "L" | "W" | "LW") {
        bail!("{label} `{v}`: `L` and `W` are not supported by Kubernetes or crontab");
    } else if let Some(owner) = FIELDS.iter().find(|o| named(o).is_some()) {
        bail!(
            "{label} `{v}` is a {} name; {label} takes {allowed}",
            owner.label
        );
    } else if f.names.is_empty() {
        bail!("{label} `{v}` is not a number; {label} takes {allowed}");
    }
    bail!("{label} `{v}` is not valid; {label} takes {allowed} (3-letter names)")
}

impl Fields {
    fn matches(&self, date: NaiveDate) -> bool {
        let dom = self.dom >> date.day() & 1 == 1;
        let dow = self.dow >> date.weekday().num_days_from_sunday() & 1 == 1;
        (dom && dow) || (self.either_day && (dom || dow))
    }

    /// A normal form in which different spellings of the same fire times compare equal: days that
    /// exist in none of the months are dropped, and day rules that match every day collapse.
    fn canonical(&self) -> Fields {
        let up_to = |months: u64| {
            let last = members(months).map(|m| DAYS_IN[m as usize - 1]).max();
            ALL_DOM & ((1u64 << (last.unwrap_or(0) + 1)) - 1)
        };
        let (mut month, mut dom, mut dow) = (self.month, self.dom & up_to(self.month), self.dow);
        let (all_days, all_weekdays) = (dom == up_to(month), dow == ALL_DOW);
        let mut either = self.either_day;
        if (either && (all_days || all_weekdays)) || (all_days && all_weekdays) {
            (dom, dow, either) = (ALL_DOM, ALL_DOW, false);
        } else if either && dom == 0 {
            (dom, either) = (ALL_DOM, false);
        } else if !either && all_days {
            dom = ALL_DOM;
        } else if !either && all_weekdays {
            let has_day = |m: &u32| members(dom).any(|d| d <= DAYS_IN[*m as usize - 1]);
            month = members(month)
                .filter(has_day)
                .fold(0, |acc, m| acc | 1 << m);
            dom &= up_to(month);
        }
        Fields {
            month,
            dom,
            dow,
            either_day: either,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests;
