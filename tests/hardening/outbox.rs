//! Item 7: batches the meter refuses for their size; resend and discard of what the outbox holds.

use std::sync::{Arc, Mutex};

use dify_sim::{AuthMode, DifySim, MeterConfig, MeterFaults, MeterSim, SimConfig};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::deliver::{exporter, held, meter, state_dir, summary, yesterday};
use crate::support::{EXTERNAL_TOKEN, Exporter, Row, json_lines, status, truth_row};

/// A metering API that accepts at most 20 records per POST and answers 413 above; it keeps what
/// it accepted, by `source_event_id`, as a receiver that upserts does.
#[derive(Clone, Default)]
struct SmallMeter(Arc<Mutex<std::collections::BTreeMap<String, Value>>>);

impl Respond for SmallMeter {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let records = body["records"].as_array().unwrap();
        if records.len() > 20 {
            return ResponseTemplate::new(413).set_body_string("at most 20 records per request");
        }
        let mut held = self.0.lock().unwrap();
        for record in records {
            let id = record["metadata"]["source_event_id"].as_str().unwrap();
            held.insert(id.to_owned(), record.clone());
        }
        ResponseTemplate::new(200)
    }
}

fn big_day() -> DifySim {
    DifySim::start(SimConfig {
        seed: 5,
        auth: AuthMode::AdminKey,
        apps_per_mode: 4,
        runs_per_app_per_day: 6,
        first_day: yesterday(),
        days: 1,
        ..SimConfig::default()
    })
    .unwrap()
}

/// The compared fields of the truth and of wire records.
fn key(
    day: &str,
    app: &str,
    user: &str,
    model: &str,
    tokens: u64,
) -> (String, String, String, String, u64) {
    (
        day.to_owned(),
        app.to_owned(),
        user.to_owned(),
        model.to_owned(),
        tokens,
    )
}

#[tokio::test]
async fn a_413_splits_the_batch_in_halves_until_the_meter_accepts_it() {
    let dify = big_day();
    let small = SmallMeter::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/usage"))
        .respond_with(small.clone())
        .mount(&server)
        .await;
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter(), &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", server.uri()))
        .env("BATCH_SIZE", "43")
        .env("DIFY_FETCH_DAYS", "1")
        .args(["run"])
        .run();
    run.code(0);
    let split = run.log("batch too large for the receiver; split in halves and sent again");
    assert_eq!(split["context"]["records"], 43);
    assert_eq!(split["context"]["sink"], "http");
    assert!(
        split["context"]["answer"]
            .as_str()
            .unwrap()
            .contains("answered 413"),
        "{split}"
    );
    let s = summary(&run);
    assert_eq!(
        (s["batches_queued"].clone(), s["batches_dead"].clone()),
        (0.into(), 0.into())
    );

    let truth = dify.truth(yesterday(), yesterday());
    assert!(truth.len() > 43, "{}", truth.len());
    let mut want: Vec<_> = truth
        .iter()
        .map(|r| {
            key(
                &r.usage_date.to_string(),
                &r.app_id,
                &r.user,
                &r.model,
                r.total_tokens,
            )
        })
        .collect();
    let mut got: Vec<_> = small
        .0
        .lock()
        .unwrap()
        .values()
        .map(|r| {
            key(
                r["usage_date"].as_str().unwrap(),
                r["metadata"]["source_app_id"].as_str().unwrap(),
                r["metadata"]["user"].as_str().unwrap(),
                r["model"].as_str().unwrap(),
                r["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn resend_rebatches_to_the_current_batch_size_and_discard_clears_a_dead_letter() {
    let dify = big_day();
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        max_batch: 20,
        ..MeterConfig::default()
    })
    .unwrap();
    let (_dir, state) = state_dir();
    // From the discard on, one user is mapped to a customer: the ledger rows of that user change
    // (a new revision), so a backfill of the day queues them again.
    let mapped_user = dify.truth(yesterday(), yesterday())[0].user.clone();
    let map = state.with_file_name("users.csv");
    std::fs::write(&map, format!("user,customer\n\"{mapped_user}\",Finance\n")).unwrap();
    let mapped = std::cell::Cell::new(false);
    let run = |batch_size: &str, args: &[&str]| {
        let exporter = exporter(&dify, &meter, &state)
            .env("BATCH_SIZE", batch_size)
            .env("DIFY_FETCH_DAYS", "1");
        let exporter = if mapped.get() {
            exporter.env("USER_MAP_FILE", map.to_str().unwrap())
        } else {
            exporter
        };
        exporter.args(args).run()
    };
    let first = run("43", &["run"]);
    first.code(1);
    let dead = summary(&first)["batches_dead"].as_u64().unwrap();
    assert!(dead >= 1, "{dead}");

    let resend = run("20", &["resend", "--all-dead"]);
    resend.code(0);
    let done = resend.log("resend finished")["context"].clone();
    assert_eq!(done["batches_revived"], dead);
    assert_eq!(done["batches_rebatched"], dead);
    assert_eq!(done["batches_dead"], 0);
    let mut truth: Vec<Row> = dify
        .truth(yesterday(), yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    truth.sort();
    assert_eq!(held(&meter), truth);

    // A batch the receiver will never take: discard it, on the record.
    meter.set_faults(MeterFaults {
        reject_next: 1,
        ..MeterFaults::default()
    });
    // The mapped user's rows are queued again (a new customer); that batch is refused for good.
    mapped.set(true);
    let day = yesterday().to_string();
    let rejected = run("19", &["run", "--from", &day, "--to", &day]);
    rejected.code(1);
    assert_eq!(summary(&rejected)["batches_dead"], 1);
    let report: Value = serde_json::from_str(&status(&state, "json")).unwrap();
    let id = report["dead"][0]["id"].as_i64().unwrap();
    let discard = |args: &[&str]| {
        Exporter::new()
            .env("STATE_DIR", state.to_str().unwrap())
            .args(["discard"])
            .args(args)
            .run()
    };
    let unconfirmed = discard(&["--batch", &id.to_string()]);
    unconfirmed.code(1);
    assert!(
        unconfirmed
            .stdout
            .contains(&format!("would discard batch #{id} of sink http (")),
        "{}",
        unconfirmed.stdout
    );
    discard(&["--batch", "999999", "--yes"]).code(1);
    let done = discard(&["--batch", &id.to_string(), "--yes"]);
    done.code(0);
    let line = json_lines(&done.stderr)
        .into_iter()
        .find(|l| {
            l["message"] == "dead batch discarded by the operator; its records will not be sent"
        })
        .expect("the discard is logged");
    assert_eq!(line["context"]["batch_id"], id);

    let text = status(&state, "text");
    assert!(
        text.contains("discarded by the operator (never sent):"),
        "{text}"
    );
    assert!(text.contains(&format!("  #{id:<6}")), "{text}");
    // The discarded dead letter no longer fails every run, and the meter still holds the truth.
    run("19", &["run"]).code(0);
    assert_eq!(held(&meter), truth);
}
