//! Item 6: unbounded windows, and progress kept chunk by chunk.

use chrono::{Days, NaiveDate};
use dify_sim::{AuthMode, DifySim, Faults, SimConfig};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::deliver::{dify, exporter, held, meter, state_dir, summary, yesterday};
use crate::support::{Exporter, Row, json_lines, status, truth_row};

#[test]
fn a_window_beyond_the_maximum_is_refused_with_the_steps_to_backfill() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter, &state)
        .args(["run", "--from", "1900-01-01", "--to"])
        .args([yesterday().to_string()])
        .run();
    run.code(1);
    let line = run.log("invalid --from/--to");
    let error = line["context"]["error"].as_str().unwrap();
    assert!(
        error.contains("more than the 366 one run may collect; backfill in steps of at most 366 days, oldest first: `exporter run --from 1900-01-01 --to 1901-01-01`"),
        "{error}"
    );
    assert_eq!(dify.stats().requests_total, 0, "nothing was collected");

    let set = |day: NaiveDate| {
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["watermark", "set", &day.to_string(), "--yes"])
            .run()
    };
    let far = set("1900-01-01".parse().unwrap());
    far.code(1);
    let refused = json_lines(&far.stderr)
        .into_iter()
        .find(|l| l["message"] == "watermark too far back")
        .expect("a refusal");
    assert!(
        refused["context"]["error"]
            .as_str()
            .unwrap()
            .contains("backfill in steps"),
        "{refused}"
    );
    set(yesterday() - Days::new(367)).code(1);
    set(yesterday() - Days::new(366)).code(0);
}

#[test]
fn a_long_collection_keeps_its_progress_and_resumes_where_it_stopped() {
    let first_day = yesterday() - Days::new(5);
    let dify = DifySim::start(SimConfig {
        seed: 9,
        auth: AuthMode::AdminKey,
        apps_per_mode: 1,
        runs_per_app_per_day: 2,
        first_day,
        days: 6,
        // Slow enough that the signal lands while chunks remain.
        faults: Faults {
            delay: std::time::Duration::from_millis(40),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .unwrap();
    let meter = meter();
    let (_dir, state) = state_dir();
    let chunked = |exporter: Exporter| {
        exporter
            .env("COLLECT_CHUNK_DAYS", "1")
            .env("DIFY_FETCH_DAYS", "6")
            .env("EXPORT_LOOKBACK_DAYS", "0")
    };

    let mut running = chunked(exporter(&dify, &meter, &state))
        .args(["run"])
        .spawn();
    running.wait_for_line("\"records queued\"");
    running.signal(Signal::SIGTERM);
    let stopped = running.wait();
    stopped.code(143);
    let first = summary(&stopped);
    assert_eq!(first["outcome"], "stopped");
    assert_eq!(first["from"], first_day.to_string());
    assert_eq!(first["to"], yesterday().to_string());
    assert!(first["dify_requests"].as_u64().unwrap() > 0, "{first}");
    let start = stopped.log("run starting")["context"].clone();
    assert_eq!(
        (start["from"].clone(), start["days"].clone()),
        (first_day.to_string().into(), 6.into())
    );

    let report: Value = serde_json::from_str(&status(&state, "json")).unwrap();
    let watermark: NaiveDate = report["watermark"].as_str().unwrap().parse().unwrap();
    assert!(
        watermark >= first_day && watermark < yesterday(),
        "stopped after some chunks, not all: {watermark}"
    );

    let resumed = chunked(exporter(&dify, &meter, &state)).args(["run"]).run();
    resumed.code(0);
    assert_eq!(
        summary(&resumed)["from"],
        (watermark + Days::new(1)).to_string(),
        "the next run starts after the last chunk queued"
    );
    let mut truth: Vec<Row> = dify
        .truth(first_day, yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    truth.sort();
    assert!(truth.len() > 20, "{}", truth.len());
    assert_eq!(held(&meter), truth);
}
