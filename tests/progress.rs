//! The progress line: `exporter run` with stderr on a pseudo-terminal draws it (with the final
//! counts of the whole window, collected in one-day chunks); with stderr piped there is none, and
//! the JSON log on stdout is the same either way.

use crate::deliver::{dify, exporter, meter, state_dir, summary};
use crate::support::{Finished, on_a_terminal};

/// A person's terminal type (without one, indicatif treats the terminal as dumb and draws nothing).
const TERM: &str = "xterm-256color";

/// One chunk per day of the 3-day window: the line must count the window, not the last chunk.
const CHUNK_DAYS: &str = "1";

/// Runs `exporter run` with stderr on a fresh pseudo-terminal; returns it and what the terminal got.
fn run_on_a_terminal() -> (Finished, String, u64) {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let (finished, terminal) = on_a_terminal(
        exporter(&dify, &meter, &state)
            .env("TERM", TERM)
            .env("COLLECT_CHUNK_DAYS", CHUNK_DAYS)
            .args(["run"]),
    );
    // `apps_per_mode` apps for each mode the simulator serves.
    let config = dify.config();
    let apps = u64::from(config.apps_per_mode) * u64::try_from(config.modes.len()).unwrap();
    (finished, terminal, apps)
}

#[test]
fn run_draws_the_progress_line_on_a_terminal_only() {
    let (finished, terminal, apps) = run_on_a_terminal();
    finished.code(0);
    let s = summary(&finished);
    // What the collector read, summed over the chunks' `usage collected` lines.
    let read = |field: &str| -> u64 {
        finished
            .stdout_lines()
            .iter()
            .filter(|l| l["message"] == "usage collected")
            .map(|l| l["context"][field].as_u64().unwrap())
            .sum()
    };
    let (runs, messages, app_days) = (read("runs"), read("messages_counted"), read("app_days"));
    assert!(
        runs > 0 && messages > 0 && app_days > 0,
        "{runs} {messages} {app_days}"
    );
    for expected in [
        "exporting".to_owned(),
        "days 3/3".to_owned(),
        format!("apps {apps}/{apps}"),
        format!("runs {runs} · messages {messages} · app-days {app_days}"),
        format!("Dify requests {}", s["dify_requests"]),
        format!("batches {0}/{0} sent", s["batches_sent"].as_u64().unwrap()),
    ] {
        assert!(
            terminal.contains(&expected),
            "{expected:?} not on the terminal:\n{terminal:?}"
        );
    }
    // The log stays pure JSON lines on stdout.
    assert!(
        finished
            .stdout_lines()
            .iter()
            .all(|l| l["timestamp"].is_string())
    );
    assert!(
        !finished.stdout.contains(&format!("apps {apps}/")),
        "{}",
        finished.stdout
    );

    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let piped = exporter(&dify, &meter, &state)
        .env("TERM", TERM)
        .env("COLLECT_CHUNK_DAYS", CHUNK_DAYS)
        .args(["run"])
        .run();
    piped.code(0);
    assert_eq!(piped.stderr, "", "nothing drawn on a pipe");
    assert_eq!(
        piped.stdout_lines().len(),
        finished.stdout_lines().len(),
        "the same log either way"
    );
}
