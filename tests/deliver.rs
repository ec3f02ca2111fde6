//! The whole product: `exporter run` from the Dify simulator to the metering simulator. The meter's
//! records must equal the Dify truth exactly after outages, kills at random instants, concurrent
//! commands and late data; bad state is reported, never replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use dify_sim::{AuthMode, DifySim, MeterConfig, MeterFaults, MeterSim, SimConfig};
use nix::sys::signal::Signal;
use rand::{Rng as _, SeedableRng as _};

use crate::support::{EXTERNAL_TOKEN, Exporter, Finished, Row, held_row, truth_row};

/// The simulator's default workspace: the three days ending yesterday.
pub(crate) fn dify() -> DifySim {
    DifySim::start(SimConfig {
        seed: 21,
        auth: AuthMode::AdminKey,
        apps_per_mode: 1,
        runs_per_app_per_day: 3,
        ..SimConfig::default()
    })
    .unwrap()
}

pub(crate) fn meter() -> MeterSim {
    MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        ..MeterConfig::default()
    })
    .unwrap()
}

pub(crate) fn yesterday() -> NaiveDate {
    Utc::now().date_naive() - Days::new(1)
}

/// A run against both simulators with its state in `state_dir`.
pub(crate) fn exporter(dify: &DifySim, meter: &MeterSim, state_dir: &Path) -> Exporter {
    let credentials = dify.credentials();
    Exporter::new()
        .env("DIFY_API_URL", &dify.base_url())
        .env("DIFY_API_TOKEN", &credentials.admin_api_key)
        .env("DIFY_WORKSPACE_ID", &credentials.workspace_id)
        .env("EXTERNAL_API_URL", &meter.url())
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .env("STATE_DIR", state_dir.to_str().unwrap())
        .env("DIFY_FETCH_DAYS", "3")
        .env("MAX_RETRY", "1")
        .env("BATCH_SIZE", "7")
}

pub(crate) fn truth(dify: &DifySim) -> Vec<Row> {
    let mut rows: Vec<Row> = dify
        .truth(yesterday() - Days::new(2), yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    rows.sort();
    rows
}

pub(crate) fn held(meter: &MeterSim) -> Vec<Row> {
    let mut rows: Vec<Row> = meter.records().into_iter().map(held_row).collect();
    rows.sort();
    rows
}

#[track_caller]
fn assert_meter_holds_the_truth(dify: &DifySim, meter: &MeterSim) {
    let truth = truth(dify);
    assert!(truth.len() > 20, "too small a workspace: {}", truth.len());
    assert_eq!(held(meter), truth);
}

#[track_caller]
pub(crate) fn summary(finished: &Finished) -> serde_json::Value {
    finished.log("run finished")["context"].clone()
}

pub(crate) fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    (dir, state)
}

#[test]
fn a_run_delivers_exactly_the_truth_and_a_second_run_sends_nothing_new() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();

    let first = exporter(&dify, &meter, &state).args(["run"]).run();
    first.code(0);
    assert_meter_holds_the_truth(&dify, &meter);
    let s = summary(&first);
    assert_eq!(s["outcome"], "completed");
    assert_eq!(s["batches_queued"], 0);
    assert_eq!(s["batches_dead"], 0);
    assert_eq!(s["records_sent"], s["records"]);
    assert_eq!(s["from"], (yesterday() - Days::new(2)).to_string());
    assert_eq!(s["to"], yesterday().to_string());
    let posts = meter.stats().posts_received;
    assert_eq!(posts, s["batches_sent"].as_u64().unwrap());

    // Same day again: only the lookback day is collected, its batches are unchanged, nothing is sent.
    let second = exporter(&dify, &meter, &state).args(["run"]).run();
    second.code(0);
    let s = summary(&second);
    assert_eq!(
        (s["from"].clone(), s["to"].clone()),
        (
            yesterday().to_string().into(),
            yesterday().to_string().into()
        )
    );
    assert_eq!(s["batches_queued_now"], 0);
    assert_eq!(s["batches_sent"], 0);
    assert_eq!(meter.stats().posts_received, posts);
    assert_meter_holds_the_truth(&dify, &meter);

    // The operator's view.
    let status = Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["status", "--output", "json"])
        .run();
    status.code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["watermark"], yesterday().to_string());
    assert_eq!(report["batches"]["queued"], 0);
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
}

#[test]
fn the_body_follows_the_wire_format() {
    // The meter simulator answers 422 to any violation of docs/wire-format.md, so a clean delivery of
    // many batches (7 records each) with a tenant proves the format; here also the headers' values.
    let dify = dify();
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        tenant_id: Some("tenant-42".to_owned()),
        max_batch: 7,
        ..MeterConfig::default()
    })
    .unwrap();
    let (_dir, state) = state_dir();
    let finished = exporter(&dify, &meter, &state)
        .env("EXTERNAL_API_TENANT_ID", "tenant-42")
        .args(["run"])
        .run();
    finished.code(0);
    let meter_stats = meter.stats();
    assert_eq!(meter_stats.by_status.get(&422), None);
    assert!(meter_stats.batches_accepted >= 5, "{meter_stats:?}");
    assert_meter_holds_the_truth(&dify, &meter);
}

#[test]
fn an_outage_of_three_runs_is_caught_up_by_the_fourth() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        error_share: 1.0,
        ..MeterFaults::default()
    });
    let codes: Vec<Option<i32>> = (0..3)
        .map(|_| {
            let finished = exporter(&dify, &meter, &state)
                .env("MAX_RETRY", "0")
                .args(["run"])
                .run();
            let error = finished.failure();
            assert!(
                error.contains("still queued and will be sent by the next run"),
                "{error}"
            );
            finished.code
        })
        .collect();
    assert!(meter.records().is_empty());
    meter.set_faults(MeterFaults::default());
    let fourth = exporter(&dify, &meter, &state).args(["run"]).run();
    let mut all = codes;
    all.push(fourth.code);
    assert_eq!(all, [Some(1), Some(1), Some(1), Some(0)]);
    assert_meter_holds_the_truth(&dify, &meter);
}

#[test]
fn a_rejected_batch_is_dead_lettered_and_resent_after_the_fix() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        reject_next: 1,
        ..MeterFaults::default()
    });
    let finished = exporter(&dify, &meter, &state).args(["run"]).run();
    finished.code(1);
    let dead = finished.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    assert!(
        dead["context"]["reason"]
            .as_str()
            .unwrap()
            .contains("rejected by test"),
        "{dead}"
    );
    assert_eq!(summary(&finished)["batches_dead"], 1);
    assert_ne!(held(&meter), truth(&dify), "one batch is missing");

    let resend = exporter(&dify, &meter, &state)
        .args(["resend", "--all-dead"])
        .run();
    resend.code(0);
    let done = resend.log("resend finished")["context"].clone();
    assert_eq!(
        (
            done["batches_revived"].clone(),
            done["batches_sent"].clone()
        ),
        (1.into(), 1.into())
    );
    assert_meter_holds_the_truth(&dify, &meter);
}

#[test]
fn a_wrong_meter_token_keeps_batches_queued_and_names_the_variable() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let finished = exporter(&dify, &meter, &state)
        .env("EXTERNAL_API_TOKEN", "wrong-token")
        .args(["run"])
        .run();
    finished.code(1);
    let error = finished.failure();
    assert!(error.contains("check EXTERNAL_API_TOKEN"), "{error}");
    assert_eq!(
        meter.stats().posts_received,
        1,
        "delivery stops at the first configuration error"
    );
    let queued = summary(&finished)["batches_queued"].as_u64().unwrap();
    assert!(queued >= 5, "{queued}");

    exporter(&dify, &meter, &state).args(["run"]).run().code(0);
    assert_meter_holds_the_truth(&dify, &meter);
}

/// A Dify (wiremock, console API) with one workflow app: the first run list shows run r-1 of
/// yesterday 23:59 (100 + 20 tokens, 0.001 USD); every later list also shows r-2, logged after it
/// (50 + 5 tokens, 0.0005001 USD). The runtime serves the mocks and must outlive them.
pub(crate) fn dify_with_a_late_run() -> (tokio::runtime::Runtime, wiremock::MockServer) {
    use serde_json::json;
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dify = runtime.block_on(MockServer::start());
    let app =
        json!({"id": "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47", "name": "Flow", "mode": "workflow"});
    let late_evening = yesterday()
        .and_hms_opt(23, 59, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let run = |id: &str, at: i64| json!({"workflow_run": {"id": id, "created_at": at}, "created_by_end_user": {"session_id": "s-1"}});
    let logs = |runs: Vec<serde_json::Value>| {
        ResponseTemplate::new(200).set_body_json(
            json!({"page": 1, "limit": 100, "total": runs.len(), "has_more": false, "data": runs}),
        )
    };
    let nodes = |prompt: u64, completion: u64, price: &str| {
        ResponseTemplate::new(200).set_body_json(json!({"data": [{"node_type": "llm", "process_data": {
            "model_provider": "langgenius/openai/openai", "model_name": "gpt-4o",
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_price": price, "currency": "USD"}}}]}))
    };
    runtime.block_on(async {
        Mock::given(method("GET"))
            .and(path("/console/api/apps"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"page":1,"limit":100,"total":1,"has_more":false,"data":[app]}),
            ))
            .mount(&dify)
            .await;
        // The first run sees one run; by the second, a run that finished after midnight is logged too.
        Mock::given(method("GET"))
            .and(path_regex("/workflow-app-logs$"))
            .respond_with(logs(vec![run("r-1", late_evening)]))
            .up_to_n_times(1)
            .mount(&dify)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("/workflow-app-logs$"))
            .respond_with(logs(vec![
                run("r-2", late_evening + 50),
                run("r-1", late_evening),
            ]))
            .mount(&dify)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("/r-1/node-executions$"))
            .respond_with(nodes(100, 20, "0.0010000"))
            .mount(&dify)
            .await;
        Mock::given(method("GET"))
            .and(path_regex("/r-2/node-executions$"))
            .respond_with(nodes(50, 5, "0.0005001"))
            .mount(&dify)
            .await;
    });
    (runtime, dify)
}

#[test]
fn late_usage_of_an_exported_day_is_picked_up_by_the_lookback() {
    let (_runtime, dify) = dify_with_a_late_run();
    let meter = meter();
    let (_dir, state) = state_dir();
    let run_once = || {
        Exporter::new()
            .env("DIFY_API_URL", &dify.uri())
            .env("DIFY_API_TOKEN", crate::support::DIFY_TOKEN)
            .env("EXTERNAL_API_URL", &meter.url())
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .env("STATE_DIR", state.to_str().unwrap())
            .env("DIFY_FETCH_DAYS", "1")
            .args(["run"])
            .run()
    };
    run_once().code(0);
    let day = |meter: &MeterSim| {
        let records = meter.records();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        (
            r.usage_date,
            r.input_tokens,
            r.output_tokens,
            r.total_tokens,
            r.request_count,
            r.cost.to_string(),
        )
    };
    assert_eq!(
        day(&meter),
        (yesterday(), 100, 20, 120, 1, "0.001".to_owned())
    );
    run_once().code(0);
    assert_eq!(
        day(&meter),
        (yesterday(), 150, 25, 175, 2, "0.0015001".to_owned())
    );
    assert_eq!(meter.stats().records_updated, 1);
}

#[test]
fn killing_a_run_at_any_instant_loses_and_doubles_nothing() {
    let dify = DifySim::start(SimConfig {
        seed: 5,
        auth: AuthMode::AdminKey,
        apps_per_mode: 1,
        runs_per_app_per_day: 3,
        faults: dify_sim::Faults {
            delay: Duration::from_millis(2),
            ..dify_sim::Faults::default()
        },
        ..SimConfig::default()
    })
    .unwrap();
    let slow_meter = || {
        let meter = meter();
        meter.set_faults(MeterFaults {
            delay: Duration::from_millis(15),
            ..MeterFaults::default()
        });
        meter
    };
    // How long a whole run takes on this machine, so the kill instants cover all of it.
    let (_baseline_dir, baseline_state) = state_dir();
    let started = std::time::Instant::now();
    exporter(&dify, &slow_meter(), &baseline_state)
        .args(["run"])
        .run()
        .code(0);
    let whole_run = u64::try_from(started.elapsed().as_millis()).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut kills_during = std::collections::BTreeMap::<&str, u32>::new();
    for iteration in 0..30 {
        let meter = slow_meter();
        let (_dir, state) = state_dir();
        let running = exporter(&dify, &meter, &state).args(["run"]).spawn();
        // A random instant over the run's whole life (collection, queueing, between batches, mid-POST).
        std::thread::sleep(Duration::from_millis(rng.random_range(0..whole_run)));
        running.signal(Signal::SIGKILL);
        let killed = running.wait();
        let phase = if killed.code.is_some() {
            "after the end"
        } else if killed.stdout.contains("\"batch delivered\"") {
            "during delivery"
        } else if killed.stdout.contains("\"records queued\"") {
            "after queueing"
        } else {
            "during collection"
        };
        *kills_during.entry(phase).or_default() += 1;

        let mut reruns = 0;
        loop {
            let finished = exporter(&dify, &meter, &state).args(["run"]).run();
            reruns += 1;
            if finished.code == Some(0) {
                break;
            }
            assert!(
                reruns < 4,
                "iteration {iteration}: no clean run after the kill:\n{}",
                finished.stdout
            );
        }
        assert_meter_holds_the_truth(&dify, &meter);
        assert_eq!(
            usize::try_from(meter.stats().records_inserted).unwrap(),
            truth(&dify).len(),
            "iteration {iteration}: a record counted twice"
        );
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["status"])
            .run()
            .code(0);
    }
    eprintln!("kill phases: {kills_during:?} over a whole run of {whole_run} ms");
    // The random instants did hit the interesting phases.
    assert!(
        kills_during.get("during collection").copied().unwrap_or(0) >= 3,
        "{kills_during:?}"
    );
    assert!(
        kills_during.get("during delivery").copied().unwrap_or(0) >= 3,
        "{kills_during:?}"
    );
}

#[test]
fn run_status_and_resend_together_never_corrupt_the_database() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        delay: Duration::from_millis(10),
        reject_next: 2,
        ..MeterFaults::default()
    });
    for _ in 0..3 {
        // The run first, holding the lock and writing, then the others against it.
        let mut run = exporter(&dify, &meter, &state).args(["run"]).spawn();
        run.wait_for_line("\"apps listed\"");
        let started = [
            run,
            exporter(&dify, &meter, &state).args(["status"]).spawn(),
            exporter(&dify, &meter, &state)
                .args(["resend", "--all-dead"])
                .spawn(),
            exporter(&dify, &meter, &state)
                .args(["status", "--output", "json"])
                .spawn(),
        ];
        for finished in started.map(crate::support::Running::wait) {
            assert!(
                matches!(finished.code, Some(0 | 1)),
                "{:?}\n{}{}",
                finished.code,
                finished.stdout,
                finished.stderr
            );
            // A failure always says why: a writer that lost the race for the lock, or dead letters.
            if finished.code == Some(1) {
                let said_why = finished.stdout.contains("run lock is held by another run")
                    || finished.stdout.contains("dead-lettered");
                assert!(said_why, "{}{}", finished.stdout, finished.stderr);
            } else {
                assert!(
                    finished.stderr.is_empty() || !finished.stderr.contains("\"error\""),
                    "{}",
                    finished.stderr
                );
            }
        }
    }
    exporter(&dify, &meter, &state)
        .args(["resend", "--all-dead"])
        .run()
        .code(0);
    exporter(&dify, &meter, &state).args(["run"]).run().code(0);
    assert_meter_holds_the_truth(&dify, &meter);
    let status = Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["status", "--output", "json"])
        .run();
    status.code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        (
            report["batches"]["queued"].clone(),
            report["batches"]["dead"].clone()
        ),
        (0.into(), 0.into())
    );
}

#[test]
fn bad_state_is_a_clear_error_and_nothing_is_deleted() {
    let (dify, meter) = (dify(), meter());

    // Not a database at all.
    let (_dir, state) = state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("state.db");
    std::fs::write(&db, b"this is not sqlite, but it is someone's data").unwrap();
    let finished = exporter(&dify, &meter, &state).args(["run"]).run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains(&format!(
            "the state database {} is unreadable; it was left untouched",
            db.display()
        )),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"this is not sqlite, but it is someone's data"
    );
    assert!(meter.records().is_empty());

    // Written by a newer exporter.
    let (_dir2, state) = state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("state.db");
    rusqlite_user_version(&db, 99);
    let before = std::fs::read(&db).unwrap();
    let finished = exporter(&dify, &meter, &state).args(["run"]).run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains("was written by a newer exporter (schema version 99"),
        "{error}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // A STATE_DIR that cannot be created (its parent is a file).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let finished = exporter(&dify, &meter, &dir.path().join("file/state"))
        .args(["run"])
        .run();
    finished.code(1);
    let line = finished.log("cannot take the run lock; check STATE_DIR");
    assert!(
        line["context"]["error"]
            .as_str()
            .unwrap()
            .contains("file/state"),
        "{line}"
    );
}

/// Creates an SQLite database with `user_version` set, as a newer exporter would leave it.
fn rusqlite_user_version(path: &Path, version: u32) {
    // The sqlite3 shell is not on every machine; a minimal valid database is written by hand:
    // a 100-byte header page with user_version at offset 60, as the file format documents.
    let mut page = vec![0u8; 4096];
    page[..16].copy_from_slice(b"SQLite format 3\0");
    page[16..18].copy_from_slice(&4096u16.to_be_bytes()); // page size
    page[18] = 1; // file format write version
    page[19] = 1; // read version
    page[21] = 64; // max embedded payload fraction
    page[22] = 32; // min embedded payload fraction
    page[23] = 32; // leaf payload fraction
    page[28..32].copy_from_slice(&1u32.to_be_bytes()); // database size in pages
    page[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
    page[56..60].copy_from_slice(&1u32.to_be_bytes()); // text encoding UTF-8
    page[60..64].copy_from_slice(&version.to_be_bytes()); // user_version
    page[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for
    page[96..100].copy_from_slice(&3_045_000u32.to_be_bytes()); // SQLite version number
    page[100] = 0x0d; // an empty table b-tree leaf page for sqlite_schema
    page[105..107].copy_from_slice(&4096u16.to_be_bytes()); // start of cell content area
    std::fs::write(path, page).unwrap();
}

#[test]
fn the_watermark_is_shown_and_set_only_with_yes() {
    let (_dir, state) = state_dir();
    let watermark = |args: &[&str]| {
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["watermark"])
            .args(args)
            .run()
    };
    let show = watermark(&["show"]);
    show.code(0);
    assert_eq!(show.stdout, "(none)\n");

    let today = Utc::now().date_naive().to_string();
    let refused = watermark(&["set", &today, "--yes"]);
    refused.code(1);
    assert!(
        refused
            .stderr
            .contains("the watermark must be a closed UTC day, before today"),
        "{}",
        refused.stderr
    );

    // Within the 366 days one run may catch up.
    let day = (yesterday() - Days::new(300)).to_string();
    let unconfirmed = watermark(&["set", &day]);
    unconfirmed.code(1);
    assert!(
        unconfirmed.stdout.contains("rerun with --yes"),
        "{}",
        unconfirmed.stdout
    );
    assert_eq!(watermark(&["show"]).stdout, "(none)\n");

    watermark(&["set", &day, "--yes"]).code(0);
    assert_eq!(watermark(&["show"]).stdout, format!("{day}\n"));
}

#[test]
fn a_dry_run_changes_nothing() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    let finished = exporter(&dify, &meter, &state)
        .args(["run", "--dry-run"])
        .run();
    finished.code(0);
    assert_eq!(finished.stdout.lines().count(), truth(&dify).len());
    assert!(!state.exists(), "a dry run created STATE_DIR");
    assert_eq!(meter.stats().posts_received, 0);
}

#[test]
fn sigterm_during_delivery_lets_the_post_finish_and_keeps_the_rest_queued() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        delay: Duration::from_secs(1),
        ..MeterFaults::default()
    });
    let mut running = exporter(&dify, &meter, &state).args(["run"]).spawn();
    // Queued and committed; the first POST is now on its way and takes a second.
    running.wait_for_line("\"records queued\"");
    running.signal(Signal::SIGTERM);
    let finished = running.wait();
    finished.code(143);
    let s = summary(&finished);
    assert_eq!(s["outcome"], "stopped");
    assert_eq!(
        s["batches_sent"], 1,
        "the POST in flight finished and was recorded"
    );
    assert_eq!(meter.stats().batches_accepted, 1);
    assert!(s["batches_queued"].as_u64().unwrap() >= 4, "{s}");

    meter.set_faults(MeterFaults::default());
    exporter(&dify, &meter, &state).args(["run"]).run().code(0);
    assert_meter_holds_the_truth(&dify, &meter);
}

#[test]
fn a_batch_failing_in_dead_letter_after_runs_is_dead_lettered() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        error_share: 1.0,
        ..MeterFaults::default()
    });
    let run = || {
        exporter(&dify, &meter, &state)
            .env("MAX_RETRY", "0")
            .env("DEAD_LETTER_AFTER", "2")
            .args(["run"])
            .run()
    };
    let first = run();
    first.code(1);
    assert_eq!(
        (
            summary(&first)["batches_dead"].clone(),
            summary(&first)["batches_queued"].as_u64().unwrap() > 0
        ),
        (0.into(), true)
    );
    let second = run();
    second.code(1);
    let dead = second.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    assert!(
        dead["context"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("failed in 2 runs (DEAD_LETTER_AFTER)"),
        "{dead}"
    );
    assert_eq!(summary(&second)["batches_dead"], 1);

    meter.set_faults(MeterFaults::default());
    exporter(&dify, &meter, &state)
        .args(["resend", "--all-dead"])
        .run()
        .code(0);
    assert_meter_holds_the_truth(&dify, &meter);
}

#[test]
fn a_batch_queued_for_more_than_seven_days_is_dead_lettered() {
    let (dify, meter) = (dify(), meter());
    let (_dir, state) = state_dir();
    meter.set_faults(MeterFaults {
        error_share: 1.0,
        ..MeterFaults::default()
    });
    exporter(&dify, &meter, &state)
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run()
        .code(1);
    // Age the outbox by eight days, as a long outage would.
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let aged = (Utc::now() - chrono::Duration::days(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let queued = db
        .execute(
            "UPDATE batches SET created_at = ?1 WHERE state = 'queued'",
            [aged],
        )
        .unwrap();
    drop(db);

    meter.set_faults(MeterFaults::default());
    let finished = exporter(&dify, &meter, &state).args(["run"]).run();
    finished.code(1);
    assert_eq!(summary(&finished)["batches_dead"], queued);
    let dead = finished.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    assert!(
        dead["context"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("not delivered within 7 days"),
        "{dead}"
    );
    assert!(meter.records().is_empty());

    exporter(&dify, &meter, &state)
        .args(["resend", "--all-dead"])
        .run()
        .code(0);
    assert_meter_holds_the_truth(&dify, &meter);
}
