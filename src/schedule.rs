//! `CRON_SCHEDULE` in the portable grammar: the subset of 5-field cron that Kubernetes CronJob
//! (robfig/cron v3 `ParseStandard`) and Vixie/cronie crontab both accept *and* read the same way.
//!
//! The program never waits for its schedule (the CronJob or crontab starts it). This module exists
//! so that `validate-config` refuses a schedule that one of the two schedulers would reject or
//! interpret differently, and so that `next-runs` and the start-up log can show fire times in UTC.
//!
//! Fire times come from the `cron` crate, but only behind this module's own parser: the crate
//! wants a seconds field, numbers Sunday 1 and always ANDs the two day fields, whereas cron's
//! shared rule ORs them when both are restricted. A validated schedule is therefore expanded into
//! explicit number lists in the crate's numbering, and the OR case becomes two crate schedules
//! whose fire times are merged.

use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Why a schedule was rejected, as one sentence fragment naming the offending field or item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ScheduleError {
    reason: String,
}

fn fail<T>(reason: String) -> Result<T, ScheduleError> {
    Err(ScheduleError { reason })
}

struct Field {
    label: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FIELDS: [Field; 5] = [
    Field {
        label: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        label: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        label: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        label: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
    },
    Field {
        label: "day-of-week",
        min: 0,
        max: 6,
        names: &DAY_NAMES,
    },
];
const ALL_DOM: u64 = 0xFFFF_FFFE; // bits 1..=31
const ALL_DOW: u64 = 0x7F; // bits 0..=6
const FIELD_LIST: &str = "5 fields (minute hour day-of-month month day-of-week)";
const ITEM_FORMS: &str = "items are `*`, `*/S`, `N`, `A-B` or `A-B/S`";

impl Field {
    fn allowed(&self) -> String {
        match (self.names.first(), self.names.last()) {
            (Some(a), Some(b)) => format!(
                "{}-{} or {}-{}",
                self.min,
                self.max,
                a.to_uppercase(),
                b.to_uppercase()
            ),
            _ => format!("{}-{}", self.min, self.max),
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
pub struct Schedule {
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
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let expression = expression.trim();
        let fields = parse_fields(expression)?;
        let (primary, secondary) = if fields.either_day {
            (
                engine(&fields, fields.dom, ALL_DOW)?,
                Some(engine(&fields, ALL_DOM, fields.dow)?),
            )
        } else {
            (engine(&fields, fields.dom, fields.dow)?, None)
        };
        Ok(Schedule {
            expression: expression.to_owned(),
            fields,
            primary,
            secondary,
        })
    }

    /// The expression as given (trimmed).
    #[must_use]
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Fire times strictly after `after`, ascending, in UTC. Endless in practice, but the `cron`
    /// crate stops at the end of year 2100.
    pub fn fire_times_after(
        &self,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut a = self.primary.after(&after).peekable();
        let mut b = self.secondary.as_ref().map(|s| s.after(&after).peekable());
        std::iter::from_fn(move || {
            let Some(b) = b.as_mut() else { return a.next() };
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x == y => {
                    b.next();
                    a.next()
                }
                (Some(x), Some(y)) if x > y => b.next(),
                (Some(_), _) => a.next(),
                (None, _) => b.next(),
            }
        })
        // The crate adds one second to `after`; this keeps the contract even if that changes.
        .skip_while(move |t| *t <= after)
    }

    /// True when both fire at exactly the same instants, whatever the spelling.
    #[must_use]
    pub fn same_meaning(&self, other: &Schedule) -> bool {
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
    let list = |mask: u64, shift: u32| {
        members(mask)
            .map(|v| (v + shift).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    // The crate numbers Sunday 1, cron numbers it 0.
    let text = format!(
        "0 {} {} {} {} {}",
        list(f.minute, 0),
        list(f.hour, 0),
        list(dom, 0),
        list(f.month, 0),
        list(dow, 1)
    );
    cron::Schedule::from_str(&text).map_err(|e| ScheduleError {
        reason: format!("internal error: the cron crate rejected `{text}`: {e}"),
    })
}

fn parse_fields(text: &str) -> Result<Fields, ScheduleError> {
    if text.is_empty() {
        return fail(format!(
            "the schedule is empty; give {FIELD_LIST} or a macro such as `@daily`"
        ));
    }
    // Kubernetes splits on any whitespace, crontab only on spaces and tabs.
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_whitespace() && c != ' ' && c != '\t')
    {
        return fail(format!(
            "fields must be separated by spaces or tabs, not {c:?}"
        ));
    }
    if text.starts_with('@') {
        return parse_fields(expand_macro(text)?);
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts[0].contains('=') {
        return fail(format!(
            "time-zone prefix `{}` is not allowed (Kubernetes rejects it and crontab does not support it); give the 5 fields only",
            parts[0]
        ));
    }
    if parts.len() != 5 {
        let extra = if parts.len() > 5 {
            "; seconds, years and commands are not allowed"
        } else {
            ""
        };
        return fail(format!(
            "expected {FIELD_LIST} but found {}{extra}",
            parts.len()
        ));
    }
    let mut sets = [0; 5];
    let mut robfig_star = [false; 5];
    for (i, field) in FIELDS.iter().enumerate() {
        (sets[i], robfig_star[i]) = parse_field(field, parts[i])?;
    }
    // robfig marks a day field "star" only for a `*` or `*/1` item; Vixie for any field starting
    // with `*`. Where the two mark different fields the day-matching modes could differ.
    let (dom_text, dow_text) = (parts[2], parts[4]);
    let robfig_either = !robfig_star[2] && !robfig_star[4];
    let vixie_either = !dom_text.starts_with('*') && !dow_text.starts_with('*');
    if robfig_either != vixie_either {
        let rule = |either| {
            if either {
                "a day matches if either day field matches"
            } else {
                "a day must match both day fields"
            }
        };
        let (i, other) = if robfig_star[2] == dom_text.starts_with('*') {
            (4, 2)
        } else {
            (2, 4)
        };
        let (f, text) = (&FIELDS[i], parts[i]);
        let fix = if text.starts_with("*/") {
            format!(
                "write it as `{}`",
                text.replacen('*', &format!("{}-{}", f.min, f.max), 1)
            )
        } else {
            "write it as just `*`".to_owned()
        };
        return fail(format!(
            "{} `{text}` with {} `{}` is read differently by Kubernetes ({}) and crontab ({}); {fix}, or set {} to `*`",
            f.label,
            FIELDS[other].label,
            parts[other],
            rule(robfig_either),
            rule(vixie_either),
            FIELDS[other].label
        ));
    }
    let fields = Fields {
        minute: sets[0],
        hour: sets[1],
        dom: sets[2],
        month: sets[3],
        dow: sets[4],
        either_day: robfig_either,
    };
    // 28 consecutive years hold every (month, day, weekday) combination, Feb 29 included.
    let fires = (2001..=2028).any(|y| {
        members(fields.month).any(|m| {
            (1..=31).any(|d| {
                NaiveDate::from_ymd_opt(y, m, d).is_some_and(|date| fields.day_matches(date))
            })
        })
    });
    if !fires {
        return fail(format!(
            "day-of-month `{dom_text}` never falls in month `{}`, so the schedule would never fire",
            parts[3]
        ));
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
    let known = MACROS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, expansion)| *expansion);
    match known {
        Some(_) if word != lower => fail(format!("macro `{word}` must be lowercase (`{lower}`)")),
        Some(expansion) if word == text => Ok(expansion),
        Some(_) => fail(format!(
            "macro `{word}` must stand alone; nothing may follow it"
        )),
        None if lower == "@every" => fail(format!(
            "`{word}` is a Kubernetes-only extension that crontab does not accept; write 5 fields such as `0 * * * *`"
        )),
        None if lower == "@reboot" => fail(format!(
            "`{word}` has no meaning for a Kubernetes CronJob; write 5 fields"
        )),
        None => fail(format!(
            "unknown macro `{word}`; allowed: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
        )),
    }
}

/// Returns the field's values as a bit mask, and whether robfig/cron marks it as a star field.
fn parse_field(f: &Field, text: &str) -> Result<(u64, bool), ScheduleError> {
    let label = f.label;
    if text.contains('?') {
        return fail(format!(
            "{label} `{text}`: `?` is not accepted by crontab; use `*`"
        ));
    }
    if text.contains('#') {
        return fail(format!(
            "{label} `{text}`: `#` (nth weekday) is not supported by Kubernetes or crontab"
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !"*,/-".contains(c))
    {
        return fail(format!(
            "{label} `{text}` contains `{c}`; use only digits, names, `*`, `,`, `-` and `/`"
        ));
    }
    let (mut mask, mut star) = (0u64, false);
    for item in text.split(',') {
        if item.is_empty() {
            return fail(format!(
                "{label} `{text}` has an empty list item; separate items with single commas"
            ));
        }
        if item.matches('/').count() > 1 || item.matches('-').count() > 1 {
            return fail(format!("{label} item `{item}` is malformed; {ITEM_FORMS}"));
        }
        let (base, step) = match item.split_once('/') {
            None => (item, 1),
            Some((base, step)) => (base, parse_step(f, item, step)?),
        };
        let (lo, hi) = if base == "*" {
            (f.min, f.max)
        } else if let Some((a, b)) = base.split_once('-') {
            let (lo, hi) = (parse_value(f, item, a)?, parse_value(f, item, b)?);
            if lo > hi {
                return fail(format!(
                    "{label} range `{base}` is reversed; write the smaller value first (ranges do not wrap around)"
                ));
            }
            (lo, hi)
        } else {
            let v = parse_value(f, item, base)?;
            if item.contains('/') {
                return fail(format!(
                    "{label} `{item}` has a step but no range (Kubernetes reads it as `{base}-{}/{step}`, crontab rejects it); write the range out",
                    f.max
                ));
            }
            (v, v)
        };
        star |= base == "*" && step == 1;
        mask |= (lo..=hi).step_by(step).fold(0, |m, v| m | 1 << v);
    }
    Ok((mask, star))
}

fn parse_step(f: &Field, item: &str, step: &str) -> Result<usize, ScheduleError> {
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return fail(format!(
            "{} item `{item}` needs a whole-number step after `/`",
            f.label
        ));
    }
    match step.parse::<u32>() {
        Ok(0) => fail(format!("{} step in `{item}` must be at least 1", f.label)),
        Ok(n) => usize::try_from(n).map_err(|_| ScheduleError {
            reason: format!("{} step in `{item}` is too large", f.label),
        }),
        Err(_) => fail(format!("{} step in `{item}` is too large", f.label)),
    }
}

fn parse_value(f: &Field, item: &str, v: &str) -> Result<u32, ScheduleError> {
    let label = f.label;
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // An overlong number is simply out of range.
        let n = v.parse::<u32>().unwrap_or(u32::MAX);
        if n < f.min || n > f.max {
            let hint = if label == "day-of-week" && n == 7 {
                " (write Sunday as 0 or SUN; Kubernetes rejects 7)"
            } else {
                ""
            };
            return fail(format!(
                "{label} `{v}` is out of range {}-{}{hint}",
                f.min, f.max
            ));
        }
        return Ok(n);
    }
    if let Some((_, n)) = f
        .names
        .iter()
        .zip(f.min..)
        .find(|(name, _)| name.eq_ignore_ascii_case(v))
    {
        return Ok(n);
    }
    let reason = if v.is_empty() || v.contains('*') {
        format!("{label} item `{item}` is malformed; {ITEM_FORMS}")
    } else if matches!(
        v.trim_start_matches(|c: char| c.is_ascii_digit())
            .to_ascii_uppercase()
            .as_str(),
        "L" | "W" | "LW"
    ) {
        format!("{label} `{v}`: `L` and `W` are not supported by Kubernetes or crontab")
    } else if let Some(owner) = FIELDS
        .iter()
        .find(|o| o.names.iter().any(|n| n.eq_ignore_ascii_case(v)))
    {
        format!(
            "{label} `{v}` is a {} name; {label} takes {}",
            owner.label,
            f.allowed()
        )
    } else if f.names.is_empty() {
        format!(
            "{label} `{v}` is not a number; {label} takes {}",
            f.allowed()
        )
    } else {
        format!(
            "{label} `{v}` is not a valid value; {label} takes {} (names have three letters)",
            f.allowed()
        )
    };
    fail(reason)
}

impl Fields {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.dom >> date.day() & 1 == 1;
        let dow = self.dow >> date.weekday().num_days_from_sunday() & 1 == 1;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// A normal form in which different spellings of the same fire times compare equal: days that
    /// exist in none of the months are dropped, and day rules that match every day collapse.
    fn canonical(&self) -> Fields {
        const DAYS_IN: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let up_to = |months: u64| {
            let last = members(months)
                .map(|m| DAYS_IN[m as usize - 1])
                .max()
                .unwrap_or(0);
            ALL_DOM & ((1u64 << (last + 1)) - 1)
        };
        let (mut month, mut dom, mut dow, mut either) = (
            self.month,
            self.dom & up_to(self.month),
            self.dow,
            self.either_day,
        );
        let (dom_all, dow_all) = (dom == up_to(month), dow == ALL_DOW);
        if (either && (dom_all || dow_all)) || (dom_all && dow_all) {
            (dom, dow, either) = (ALL_DOM, ALL_DOW, false);
        } else if either && dom == 0 {
            (dom, either) = (ALL_DOM, false);
        } else if !either && dom_all {
            dom = ALL_DOM;
        } else if !either && dow_all {
            // Months in which none of the days exist never fire.
            month = members(month)
                .filter(|&m| members(dom).any(|d| d <= DAYS_IN[m as usize - 1]))
                .fold(0, |acc, m| acc | 1 << m);
            dom &= up_to(month);
        }
        Fields {
            minute: self.minute,
            hour: self.hour,
            dom,
            month,
            dow,
            either_day: either,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("reference instant")
            .with_timezone(&Utc)
    }

    fn reason(expression: &str) -> String {
        Schedule::parse(expression)
            .expect_err(expression)
            .to_string()
    }

    #[test]
    fn reproduces_robfig_reference() {
        let data = include_str!("../../shared/testdata/cron-reference.tsv");
        let mut checked = 0;
        for line in data
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "malformed reference line {line:?}");
            let schedule =
                Schedule::parse(cols[0]).unwrap_or_else(|e| panic!("{:?} rejected: {e}", cols[0]));
            let expected: Vec<DateTime<Utc>> = cols[2].split(' ').map(instant).collect();
            let got: Vec<DateTime<Utc>> = schedule
                .fire_times_after(instant(cols[1]))
                .take(expected.len())
                .collect();
            assert_eq!(
                got, expected,
                "fire times of {:?} after {}",
                cols[0], cols[1]
            );
            checked += 1;
        }
        assert!(checked >= 100, "only {checked} reference lines");
    }

    #[test]
    fn rejects_every_reject_line() {
        let data = include_str!("../../shared/testdata/cron-reject.txt");
        for line in data.lines().filter(|l| !l.starts_with('#')).chain([""]) {
            assert!(Schedule::parse(line).is_err(), "{line:?} was accepted");
        }
    }

    #[test]
    fn strictly_after_even_on_a_fire_time() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let at = instant("2026-01-01T00:15:00Z");
        assert_eq!(
            s.fire_times_after(at).next(),
            Some(instant("2026-01-01T00:30:00Z"))
        );
        let just_before = at - chrono::Duration::nanoseconds(1);
        assert_eq!(s.fire_times_after(just_before).next(), Some(at));
    }

    #[test]
    fn or_mode_merges_without_duplicates() {
        // Dec 1 2026 is a Tuesday: it matches both day fields and must appear once.
        let s = Schedule::parse("0 0 1 * TUE").unwrap();
        let got: Vec<_> = s
            .fire_times_after(instant("2026-11-30T00:00:00Z"))
            .take(3)
            .collect();
        let want = [
            "2026-12-01T00:00:00Z",
            "2026-12-08T00:00:00Z",
            "2026-12-15T00:00:00Z",
        ]
        .map(instant);
        assert_eq!(got, want);
    }

    #[test]
    fn same_meaning_compares_fire_times_not_text() {
        let same = |a: &str, b: &str| {
            Schedule::parse(a)
                .unwrap()
                .same_meaning(&Schedule::parse(b).unwrap())
        };
        for (a, b) in [
            ("@daily", "0 0 * * *"),
            ("@midnight", "@daily"),
            ("0 0 * * SUN-SAT", "0 0 * * *"),
            ("0 0 * * 0-6", "0 0 * * *"),
            ("0 0 1 * 0-6", "0 0 * * *"), // OR with a full day-of-week is every day
            ("0 0 1-31 * *", "0 0 * * *"),
            ("@weekly", "0 0 * * sun"),
            ("@yearly", "0 0 1 jan *"),
            ("0 0 30,31 2,4 *", "0 0 30 4 *"),
            ("0 0 1-29 2 *", "0 0 * 2 *"),
            ("0 0 31 2 1", "0 0 * 2 MON"),
            ("*/20 * * * *", "0,20,40 * * * *"),
        ] {
            assert!(same(a, b), "{a} vs {b}");
        }
        for (a, b) in [
            ("15 0 * * *", "0 0 * * *"),
            ("0 0 1 * 1", "0 0 1 * *"),
            ("0 0 1 * 1", "0 0 * * 1"),
            ("@monthly", "@yearly"),
        ] {
            assert!(!same(a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn keeps_trimmed_expression_and_parses_via_from_str() {
        let s: Schedule = " \t0 0 * * MON-FRI ".parse().unwrap();
        assert_eq!(s.expression(), "0 0 * * MON-FRI");
    }

    #[test]
    fn error_messages_are_readable() {
        for (input, want) in [
            (
                "0 0 * * 7",
                "day-of-week `7` is out of range 0-6 (write Sunday as 0 or SUN; Kubernetes rejects 7)",
            ),
            (
                "",
                "the schedule is empty; give 5 fields (minute hour day-of-month month day-of-week) or a macro such as `@daily`",
            ),
            (
                "0 0 * *",
                "expected 5 fields (minute hour day-of-month month day-of-week) but found 4",
            ),
            (
                "0 0 * MON *",
                "month `MON` is a day-of-week name; month takes 1-12 or JAN-DEC",
            ),
            (
                "5/15 * * * *",
                "minute `5/15` has a step but no range (Kubernetes reads it as `5-59/15`, crontab rejects it); write the range out",
            ),
            (
                "30-10 * * * *",
                "minute range `30-10` is reversed; write the smaller value first (ranges do not wrap around)",
            ),
            ("*/0 * * * *", "minute step in `*/0` must be at least 1"),
            ("@DAILY", "macro `@DAILY` must be lowercase (`@daily`)"),
            (
                "0 0 31 2 *",
                "day-of-month `31` never falls in month `2`, so the schedule would never fire",
            ),
            (
                "0 0 */2 * 1",
                "day-of-month `*/2` with day-of-week `1` is read differently by Kubernetes (a day matches if either day field matches) and crontab (a day must match both day fields); write it as `1-31/2`, or set day-of-week to `*`",
            ),
        ] {
            assert_eq!(reason(input), want, "for {input:?}");
        }
    }

    #[test]
    fn ambiguous_day_fields_are_rejected_both_ways() {
        // robfig ORs (neither field keeps its star bit), Vixie ANDs (both start with `*`).
        assert!(Schedule::parse("0 0 */2 * */3").is_err());
        // robfig ANDs (`*` item), Vixie ORs (field does not start with `*`).
        assert!(Schedule::parse("0 0 5,* * 1").is_err());
        // Agreeing cases stay accepted.
        for ok in [
            "0 0 */2 * *",
            "0 0 * * */2",
            "0 0 */1 * 1",
            "0 0 1-31/2 * 1",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn random_input_never_panics() {
        const ALPHABET: &[u8] = b"0123456789*,/-?#LW@ \tjanMONsundaly=+";
        const PIECES: [&str; 12] = [
            "*", "*/2", "0", "5", "59", "1-5", "3-1", "MON", "jan", "7", "2-9/3", "/",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % bound as u64).unwrap_or(0)
        };
        let from = instant("2026-01-01T00:00:00Z");
        for round in 0..600 {
            let text: String = if round % 2 == 0 {
                (0..next(24))
                    .map(|_| char::from(ALPHABET[next(ALPHABET.len())]))
                    .collect()
            } else {
                (0..5)
                    .map(|_| {
                        (0..=next(2))
                            .map(|_| PIECES[next(PIECES.len())])
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            if let Ok(s) = Schedule::parse(&text) {
                let times: Vec<_> = s.fire_times_after(from).take(3).collect();
                assert!(
                    times.windows(2).all(|w| w[0] < w[1]),
                    "{text:?} not ascending"
                );
                assert!(!times.is_empty(), "{text:?} accepted but never fires");
            }
        }
    }
}
