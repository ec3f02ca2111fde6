use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map_or_else(|e| panic!("{s}: {e}"), |t| t.to_utc())
}

fn sched(s: &str) -> Schedule {
    Schedule::parse(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"))
}

fn first(s: &str, after: &str, n: usize) -> Vec<DateTime<Utc>> {
    sched(s).fire_times_after(at(after)).take(n).collect()
}

#[test]
fn reproduces_robfig_reference() {
    let data = include_str!("../../tests/data/cron-reference.tsv");
    let lines: Vec<&str> = data.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(lines.len() >= 100, "only {} reference lines", lines.len());
    for line in lines {
        let [expr, start, times] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("malformed reference line {line:?}")
        };
        let want: Vec<_> = times.split(' ').map(at).collect();
        assert_eq!(
            first(expr, start, want.len()),
            want,
            "{expr:?} after {start}"
        );
    }
}

#[test]
fn rejects_every_reject_line() {
    let data = include_str!("../../tests/data/cron-reject.txt");
    // The file has no blank line today, so the empty schedule is added explicitly.
    for line in data
        .lines()
        .filter(|l| !l.starts_with('#'))
        .chain(["", " \t"])
    {
        assert!(Schedule::parse(line).is_err(), "{line:?} was accepted");
    }
}

#[test]
fn strictly_after_and_merged_without_duplicates() {
    let quarter = at("2026-01-01T00:15:00Z");
    assert_eq!(
        first("*/15 * * * *", "2026-01-01T00:15:00Z", 1),
        [at("2026-01-01T00:30:00Z")]
    );
    let just_before = quarter - chrono::Duration::nanoseconds(1);
    assert_eq!(
        sched("*/15 * * * *").fire_times_after(just_before).next(),
        Some(quarter)
    );
    // 2026-12-01 is a Tuesday, so it matches both day fields and must appear once.
    let want = [
        "2026-12-01T00:00:00Z",
        "2026-12-08T00:00:00Z",
        "2026-12-15T00:00:00Z",
    ];
    assert_eq!(
        first("0 0 1 * TUE", "2026-11-30T00:00:00Z", 3),
        want.map(at)
    );
}

#[test]
fn same_meaning_compares_fire_times_not_text() {
    let same = |a: &str, b: &str| sched(a).same_meaning(&sched(b));
    for (a, b) in [
        ("@daily", "0 0 * * *"),
        ("@midnight", "@daily"),
        ("0 0 * * SUN-SAT", "0 0 * * *"),
        ("0 0 * * 0-6", "0 0 * * *"), // restricted but full; ANDed with `*`: every day
        ("0 0 1 * 0-6", "0 0 * * *"), // ORed with a full day-of-week: every day too
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
    assert!(!same("15 0 * * *", "0 0 * * *"));
    assert!(!same("0 0 1 * 1", "0 0 1 * *"));
    assert!(!same("0 0 1 * 1", "0 0 * * 1"));
    assert!(!same("@monthly", "@yearly"));
}

#[test]
fn keeps_trimmed_expression_and_parses_via_from_str() {
    let s: Schedule = " \t0 0 * * MON-FRI ".parse().expect("valid");
    assert_eq!(s.expression(), "0 0 * * MON-FRI");
}

#[test]
fn day_fields_read_differently_are_rejected_both_ways() {
    // robfig ORs (no star bit), Vixie ANDs (starts with `*`); then the reverse (`*` item).
    for bad in [
        "0 0 */2 * */3",
        "0 0 5,* * 1",
        "0 0 1 * 3,*/1",
        "0 0 */2,5 * 1",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad}");
    }
    for ok in [
        "0 0 */2 * *",
        "0 0 * * */2",
        "0 0 */1 * 1",
        "0 0 1-31/2 * 1",
        "0 0 5,*/2 * 1",
    ] {
        sched(ok);
    }
}

#[test]
fn error_messages_are_readable() {
    let reason = |s: &str| Schedule::parse(s).expect_err(s).to_string();
    for (input, want) in [
        (
            "0 0 * * 7",
            format!("day-of-week `7` is out of range 0-6{SUNDAY}"),
        ),
        (
            "",
            format!("the schedule is empty; give {FIVE} or a macro such as `@daily`"),
        ),
        ("0 0 * *", format!("expected {FIVE} but found 4")),
        (
            "0 0 * MON *",
            "month `MON` is a day-of-week name; month takes 1-12 or JAN-DEC".into(),
        ),
        (
            "5/15 * * * *",
            "minute `5/15` has a step but no range; write `5-59/15`".into(),
        ),
        (
            "0 0 * * FRI-SUN",
            "day-of-week range `FRI-SUN` is reversed; write the smaller value first".into(),
        ),
        (
            "*/0 * * * *",
            "minute step in `*/0` must be at least 1".into(),
        ),
        (
            "@DAILY",
            "macro `@DAILY` must be lowercase (`@daily`)".into(),
        ),
        (
            "0 0 31 2 *",
            "day-of-month `31` never falls in month `2`, so it would never fire".into(),
        ),
    ] {
        assert_eq!(reason(input), want, "for {input:?}");
    }
    assert_eq!(
        reason("0 0 * * 7"),
        "day-of-week `7` is out of range 0-6 (write Sunday as 0 or SUN; Kubernetes rejects 7)"
    );
    assert_eq!(
        reason("0 0 */2 * 1"),
        "day-of-month `*/2` with day-of-week `1` is read differently by Kubernetes (a day must \
         match either day field) and crontab (a day must match both day fields); write it as \
         `1-31/2`, or set day-of-week to `*`"
    );
}

/// An independent oracle: walks day by day and applies the field sets directly.
fn brute_force(f: &Fields, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let days = after.date_naive().iter_days().take(3 * 366);
    let months = days.filter(|d| f.month >> d.month() & 1 == 1 && f.matches(*d));
    let hours = months.flat_map(|d| members(f.hour).filter_map(move |h| d.and_hms_opt(h, 0, 0)));
    let minutes =
        hours.flat_map(|t| members(f.minute).map(move |m| t + chrono::Duration::minutes(m.into())));
    minutes
        .map(|t| t.and_utc())
        .filter(|t| *t > after)
        .take(n)
        .collect()
}

#[test]
fn random_input_never_panics_and_matches_brute_force() {
    const CHARS: &[u8] = b"0123456789*,/-?#LW@ \tjanMONsundaly=+";
    // The first ten pieces are valid in every field, so many schedules get accepted.
    const PIECES: [&str; 16] = [
        "*", "*/2", "*/5", "1", "5", "1-5", "2-9/3", "3-6", "1-3/1", "4,2", "0", "59", "3-1",
        "MON", "jan", "/",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % bound as u64).unwrap_or(0)
    };
    let mut accepted = 0;
    for round in 0..1000 {
        let text: String = if round % 2 == 0 {
            (0..next(24))
                .map(|_| char::from(CHARS[next(CHARS.len())]))
                .collect()
        } else {
            let mut piece = || PIECES[if next(5) == 0 { next(16) } else { next(10) }];
            [(); 5].map(|()| piece()).join(" ")
        };
        if let Ok(s) = Schedule::parse(&text) {
            let after = at("2026-01-01T00:00:00Z")
                + chrono::Duration::seconds(i64::try_from(next(1 << 25)).unwrap_or(0));
            let times: Vec<_> = s.fire_times_after(after).take(3).collect();
            assert_eq!(times, brute_force(&s.fields, after, 3), "{text:?}");
            accepted += 1;
        }
    }
    assert!(accepted > 100, "only {accepted} random schedules accepted");
}
