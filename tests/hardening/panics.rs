//! Issue 18 class 2 (and the calendar of class 7): nothing a reader, a clock or a date can do makes
//! the binary panic (exit 101).

use std::process::Stdio;

use crate::support::{DIFY_TOKEN, EXTERNAL_TOKEN, Exporter};

/// A pipe whose reader has already gone away, as `exporter status | head -0` leaves it.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    Stdio::from(write)
}

#[test]
fn a_reader_that_went_away_ends_every_command_quietly() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    // A state database to show: `watermark set` creates it.
    Exporter::new()
        .env("STATE_DIR", state_dir)
        .args(["watermark", "set", "2026-11-01", "--yes"])
        .run()
        .code(0);
    let commands: [&[&str]; 5] = [
        &["status"],
        &["status", "--output", "json"],
        &["validate-config"],
        &["watermark", "show"],
        &["next-runs", "-n", "10000"],
    ];
    for args in commands {
        let finished = Exporter::new()
            .env("STATE_DIR", state_dir)
            .env("DIFY_API_URL", "http://127.0.0.1:9")
            .env("DIFY_API_TOKEN", DIFY_TOKEN)
            .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .stdout_to(closed_pipe())
            .args(args)
            .run();
        finished.code(0);
        assert!(
            !finished.stderr.contains("panicked"),
            "{args:?}: {}",
            finished.stderr
        );
        assert!(
            !finished.stderr.contains("Broken pipe"),
            "{args:?}: {}",
            finished.stderr
        );
    }
}

/// `libfaketime` (Debian package faketime) makes the clock read `at` for the exporter alone.
fn at_time(at: &str) -> Exporter {
    let library = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists())
    .expect("libfaketime is missing: install the Debian package faketime");
    Exporter::new()
        .env("LD_PRELOAD", library)
        .env("FAKETIME", at)
        .env("DONT_FAKE_MONOTONIC", "1")
}

#[test]
fn a_clock_before_1970_is_a_clear_error_for_every_command() {
    for args in [
        &["run", "--dry-run"][..],
        &["status"],
        &["next-runs"],
        &["validate-config"],
    ] {
        let finished = at_time("@1969-06-01 00:00:00").args(args).run();
        finished.code(1);
        assert_eq!(
            finished.stderr,
            "{\"level\":\"error\",\"message\":\"the system clock reads a time before 1970; set the clock right \
             (log timestamps, run ids, the state database and every UTC day count from 1970)\"}\n",
            "{args:?}"
        );
    }
    // The same library at a sane time changes nothing: the refusal above is the clock's.
    at_time("@2026-06-01 00:00:00")
        .args(["next-runs", "-n", "1"])
        .run()
        .code(0);
}

#[test]
fn next_runs_outside_the_calendar_says_so_instead_of_printing_nothing_or_1970() {
    for (from, message) in [
        (
            "2101-01-01T00:00:00Z",
            "--from must lie in the years 1970 to 2100, the calendar fire times are computed in",
        ),
        (
            "1960-01-01T00:00:00Z",
            "--from must lie in the years 1970 to 2100, the calendar fire times are computed in",
        ),
        (
            "2100-12-30T00:00:00Z",
            "the schedule fires only 1 time(s) after --from before the end of 2100, the last year fire times are computed in",
        ),
    ] {
        let finished = Exporter::new()
            .args([
                "next-runs",
                "--schedule",
                "0 0 * * *",
                "-n",
                "3",
                "--from",
                from,
            ])
            .run();
        finished.code(1);
        let lines = finished.stderr_lines();
        assert_eq!(lines.last().unwrap()["message"], message, "{from}");
        if from.starts_with("2100") {
            assert_eq!(finished.stdout, "2100-12-31T00:00:00Z\n");
        } else {
            assert_eq!(finished.stdout, "");
        }
    }
}
