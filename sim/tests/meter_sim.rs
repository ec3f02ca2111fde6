//! Drives the real metering simulator over HTTP: acceptance and exact holding of records, idempotency and
//! upserts, one rejection per validation rule family (each storing nothing), and every fault.

use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use dify_sim::{HeldRecord, MeterConfig, MeterFaults, MeterSim, TokenSplit};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "meter-token";
const AGENT: &str = "dify-usage-exporter/0.1.0";
const DAY1: &str = "2026-11-27";
const DAY2: &str = "2026-11-28";

fn start(config: MeterConfig) -> MeterSim {
    MeterSim::start(config).expect("simulator starts")
}

fn start_default() -> MeterSim {
    start(MeterConfig::default())
}

/// A valid record; `cost` is written into the body as a bare JSON number with exactly this text.
fn record(day: &str, n: u64, input: u64, output: u64, cost: &str) -> Value {
    json!({
        "usage_date": day, "provider": "openai", "model": "gpt-4o",
        "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
        "request_count": 3, "cost_actual": format!("COST:{cost}"), "currency": "USD",
        "metadata": {
            "source_system": "dify", "source_event_id": format!("dify-{day}-{n:016x}"),
            "source_app_id": "app-1", "source_app_name": "Support bot", "user": format!("user-{n}"),
            "customer": format!("customer-{n}"), "token_split": "exact", "aggregation_method": "daily_sum",
        },
    })
}

/// Compact JSON of the records with every `"COST:<text>"` turned into the bare number `<text>`.
fn records_text(records: &[Value]) -> String {
    let mut text = serde_json::to_string(records).expect("records serialize");
    while let Some(at) = text.find("\"COST:") {
        let end = text[at + 6..].find('"').expect("marker closes") + at + 6;
        let number = text[at + 6..end].to_owned();
        text.replace_range(at..=end, &number);
    }
    text
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// `export_metadata` whose date range matches the records' days.
fn export_metadata(records: &[Value]) -> Value {
    let days: Vec<NaiveDate> = records
        .iter()
        .filter_map(|r| r["usage_date"].as_str())
        .filter_map(|d| NaiveDate::from_str(d).ok())
        .collect();
    let first = days.iter().min().copied().expect("a day");
    let last = days.iter().max().copied().expect("a day");
    json!({
        "exporter_version": "0.1.0", "export_timestamp": "2026-11-29T00:00:05.123Z",
        "run_id": "0195f7a2-6c1e-7d3a-9b1c-2f4e5d6a7b8c", "aggregation_period": "daily", "source_system": "dify",
        "date_range": {
            "start": format!("{first}T00:00:00Z"),
            "end": format!("{}T00:00:00Z", last.succ_opt().expect("next day")),
        },
    })
}

/// A body and its correct Idempotency-Key.
struct Batch {
    body: String,
    key: String,
}

fn batch(records: &[Value]) -> Batch {
    batch_with(records, &export_metadata(records), "")
}

/// A batch with the given metadata and `extra` top-level members (`,"name":value`) appended.
fn batch_with(records: &[Value], metadata: &Value, extra: &str) -> Batch {
    let records = records_text(records);
    Batch {
        body: format!(r#"{{"export_metadata":{metadata},"records":{records}{extra}}}"#),
        key: sha256_hex(&records),
    }
}

async fn send_as(sim: &MeterSim, token: &str, body: &str, key: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(sim.url())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT)
        .header("Idempotency-Key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("simulator answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(sim: &MeterSim, batch: &Batch) -> (StatusCode, Value) {
    send_as(sim, TOKEN, &batch.body, &batch.key).await
}

/// Asserts a 422 whose reason contains `needle`, and that nothing was stored.
async fn assert_rejected(sim: &MeterSim, batch: &Batch, needle: &str) {
    let (status, body) = send(sim, batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(needle),
        "reason {reason:?} lacks {needle:?}"
    );
    assert!(sim.records().is_empty());
    let seen = sim.stats();
    assert_eq!(seen.batches_accepted, 0);
    assert!(seen.accepted_keys.is_empty());
}

fn two_records() -> Vec<Value> {
    vec![
        record(DAY1, 1, 190, 31, "0.0000001"),
        record(DAY2, 2, 500, 0, "12.3456789"),
    ]
}

#[tokio::test]
async fn a_valid_batch_is_held_exactly() {
    let sim = start_default();
    let mut records = two_records();
    records[1]["metadata"]["token_split"] = json!("total_only");
    let batch = batch(&records);
    let (status, body) = send(&sim, &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"inserted": 2, "updated": 0, "total": 2}));

    let held = |day: &str, n: u64, input, output, cost: &str, token_split| HeldRecord {
        usage_date: NaiveDate::from_str(day).expect("day"),
        app_id: "app-1".to_owned(),
        app_name: "Support bot".to_owned(),
        user: format!("user-{n}"),
        customer: format!("customer-{n}"),
        provider: "openai".to_owned(),
        model: "gpt-4o".to_owned(),
        currency: "USD".to_owned(),
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        request_count: 3,
        cost: Decimal::from_str(cost).expect("decimal"),
        token_split,
        source_event_id: format!("dify-{day}-{n:016x}"),
    };
    let expected = vec![
        held(DAY1, 1, 190, 31, "0.0000001", TokenSplit::Exact),
        held(DAY2, 2, 500, 0, "12.3456789", TokenSplit::TotalOnly),
    ];
    assert_eq!(sim.records(), expected);
    assert_eq!(sim.records()[0].cost.to_string(), "0.0000001");
    assert_eq!(sim.records()[1].cost.to_string(), "12.3456789");

    let seen = sim.stats();
    assert_eq!(seen.posts_received, 1);
    assert_eq!(seen.batches_accepted, 1);
    assert_eq!(seen.accepted_keys, vec![batch.key.clone()]);
    assert_eq!(seen.records_inserted, 2);
    assert_eq!(seen.max_batch_seen, 2);
    assert_eq!(seen.requests.len(), 1);
    assert_eq!(
        seen.requests[0].idempotency_key.as_deref(),
        Some(batch.key.as_str())
    );
    assert_eq!(seen.requests[0].record_count, Some(2));
    assert_eq!(seen.requests[0].status, Some(200));

    // The same over HTTP for people and scripts, with the cost as a decimal string.
    let served: Value = reqwest::get(format!("{}/_meter/records", sim.base_url()))
        .await
        .expect("records answer")
        .json()
        .await
        .expect("records are JSON");
    assert_eq!(served[0]["cost"], json!("0.0000001"));
    assert_eq!(served[1]["cost"], json!("12.3456789"));
    assert_eq!(served[1]["token_split"], json!("total_only"));
    let seen: Value = reqwest::get(format!("{}/_meter/stats", sim.base_url()))
        .await
        .expect("stats answer")
        .json()
        .await
        .expect("stats are JSON");
    assert_eq!(seen["batches_accepted"], json!(1));
    assert_eq!(seen["by_status"]["200"], json!(1));
}

#[tokio::test]
async fn a_resend_with_the_same_key_is_409_and_changes_nothing() {
    let sim = start_default();
    let batch = batch(&two_records());
    assert_eq!(send(&sim, &batch).await.0, StatusCode::OK);
    let before = sim.records();
    let (status, body) = send(&sim, &batch).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body, json!({"error": "duplicate idempotency key"}));
    assert_eq!(sim.records(), before);
    let seen = sim.stats();
    assert_eq!(seen.batches_accepted, 1);
    assert_eq!(seen.accepted_keys.len(), 1);
    assert_eq!(seen.by_status.get(&409), Some(&1));
}

#[tokio::test]
async fn a_changed_total_under_a_new_key_updates_in_place() {
    let sim = start_default();
    assert_eq!(send(&sim, &batch(&two_records())).await.0, StatusCode::OK);
    let late = vec![record(DAY1, 1, 200, 40, "0.0000002")];
    let late_batch = batch(&late);
    let (status, body) = send(&sim, &late_batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"inserted": 0, "updated": 1, "total": 2}));
    let records = sim.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].total_tokens, 240);
    assert_eq!(
        records[0].cost,
        Decimal::from_str("0.0000002").expect("decimal")
    );
    let seen = sim.stats();
    assert_eq!((seen.records_inserted, seen.records_updated), (2, 1));
    assert_eq!(seen.accepted_keys.len(), 2);
    assert_eq!(seen.accepted_keys[1], late_batch.key);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_401() {
    let sim = start_default();
    let batch = batch(&two_records());
    let (status, body) = send_as(&sim, "wrong", &batch.body, &batch.key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "invalid token"}));
    let response = reqwest::Client::new()
        .post(sim.url())
        .header(CONTENT_TYPE, "application/json")
        .body(batch.body.clone())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(sim.records().is_empty());
}

#[tokio::test]
async fn other_paths_and_methods_are_404_and_405() {
    let sim = start_default();
    let client = reqwest::Client::new();
    let get = client.get(sim.url()).send().await.expect("answers");
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = client
        .post(format!("{}/v1/usage", sim.url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn headers_are_checked() {
    let sim = start_default();
    let batch = batch(&two_records());
    let client = reqwest::Client::new();
    let base = || {
        client
            .post(sim.url())
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(batch.body.clone())
    };
    let no_agent = base()
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &batch.key)
        .send()
        .await
        .expect("answers");
    assert_eq!(no_agent.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = base()
        .header(CONTENT_TYPE, "text/plain")
        .header(USER_AGENT, AGENT)
        .header("Idempotency-Key", &batch.key)
        .send()
        .await
        .expect("answers");
    assert_eq!(text.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let no_key = base()
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT)
        .send()
        .await
        .expect("answers");
    assert_eq!(no_key.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reason: Value = no_key.json().await.expect("JSON");
    assert!(
        reason["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key")
    );
    assert!(sim.records().is_empty());
}

#[tokio::test]
async fn a_key_not_matching_the_records_is_422() {
    let sim = start_default();
    let mut batch = batch(&two_records());
    batch.key = sha256_hex("something else");
    assert_rejected(&sim, &batch, "Idempotency-Key").await;
}

#[tokio::test]
async fn a_total_that_is_not_input_plus_output_is_422() {
    let sim = start_default();
    let mut records = two_records();
    records[1]["total_tokens"] = json!(501);
    assert_rejected(&sim, &batch(&records), "records[1].total_tokens").await;
}

#[tokio::test]
async fn a_cost_as_a_string_is_422() {
    let sim = start_default();
    let mut records = two_records();
    records[0]["cost_actual"] = json!("0.5");
    assert_rejected(
        &sim,
        &batch(&records),
        "records[0].cost_actual: must be a JSON number",
    )
    .await;
}

#[tokio::test]
async fn a_cost_with_8_decimals_is_422() {
    let sim = start_default();
    let records = vec![
        record(DAY1, 1, 1, 1, "0.1"),
        record(DAY1, 2, 1, 1, "0.00000001"),
    ];
    assert_rejected(&sim, &batch(&records), "records[1].cost_actual").await;
}

#[tokio::test]
async fn a_bad_source_event_id_is_422() {
    let sim = start_default();
    for bad in [
        format!("dify-{DAY2}-{:016x}", 1), // another day than usage_date
        format!("dify-{DAY1}-ABCDEF0123456789"),
        format!("{DAY1}-{:016x}", 1),
    ] {
        let mut records = two_records();
        records[0]["metadata"]["source_event_id"] = json!(bad);
        assert_rejected(
            &sim,
            &batch(&records),
            "records[0].metadata.source_event_id",
        )
        .await;
    }
    let mut records = two_records();
    records[1]["metadata"]["source_event_id"] = records[0]["metadata"]["source_event_id"].clone();
    records[1]["usage_date"] = json!(DAY1);
    assert_rejected(&sim, &batch(&records), "repeats records[0]").await;
}

#[tokio::test]
async fn a_wrong_date_range_is_422() {
    let sim = start_default();
    let records = two_records();
    let mut metadata = export_metadata(&records);
    metadata["date_range"]["end"] = json!(format!("{DAY2}T00:00:00Z"));
    assert_rejected(&sim, &batch_with(&records, &metadata, ""), "date_range.end").await;
    let mut metadata = export_metadata(&records);
    metadata["date_range"]["start"] = json!(format!("{DAY1}T09:00:00Z"));
    assert_rejected(
        &sim,
        &batch_with(&records, &metadata, ""),
        "date_range.start",
    )
    .await;
    let mut metadata = export_metadata(&records);
    metadata["export_timestamp"] = json!("2026-11-29T09:00:05+09:00");
    assert_rejected(
        &sim,
        &batch_with(&records, &metadata, ""),
        "export_timestamp",
    )
    .await;
}

#[tokio::test]
async fn unknown_fields_are_422() {
    let sim = start_default();
    let records = two_records();
    let metadata = export_metadata(&records);
    assert_rejected(
        &sim,
        &batch_with(&records, &metadata, r#","tenant":"x""#),
        "unknown field `tenant`",
    )
    .await;
    let mut with_extra = two_records();
    with_extra[1]["costs"] = json!(1);
    assert_rejected(
        &sim,
        &batch(&with_extra),
        "records[1]: unknown field `costs`",
    )
    .await;
    let mut with_extra = two_records();
    with_extra[0]["metadata"]["app_id"] = json!("x");
    assert_rejected(
        &sim,
        &batch(&with_extra),
        "records[0].metadata: unknown field",
    )
    .await;
    let mut metadata = export_metadata(&records);
    metadata["version"] = json!("1");
    assert_rejected(
        &sim,
        &batch_with(&records, &metadata, ""),
        "export_metadata",
    )
    .await;
}

#[tokio::test]
async fn too_many_or_no_records_are_422() {
    let sim = start(MeterConfig {
        max_batch: 3,
        ..MeterConfig::default()
    });
    let records: Vec<Value> = (1..=4).map(|n| record(DAY1, n, 1, 1, "0.1")).collect();
    assert_rejected(&sim, &batch(&records), "at most 3").await;
    assert_eq!(sim.stats().max_batch_seen, 4);
    let empty = Batch {
        body: format!(
            r#"{{"export_metadata":{},"records":[]}}"#,
            export_metadata(&records)
        ),
        key: sha256_hex("[]"),
    };
    assert_rejected(&sim, &empty, "empty").await;
}

#[tokio::test]
async fn a_total_only_record_may_carry_the_output_of_its_exact_nodes() {
    let sim = start_default();
    let mut records = two_records();
    records[0]["metadata"]["token_split"] = json!("total_only");
    assert_eq!(send(&sim, &batch(&records)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_tenant_must_match_when_configured() {
    let sim = start(MeterConfig {
        tenant_id: Some("tenant-a".to_owned()),
        ..MeterConfig::default()
    });
    let records = two_records();
    let metadata = export_metadata(&records);
    assert_rejected(&sim, &batch(&records), "tenant_id: missing").await;
    let wrong = batch_with(&records, &metadata, r#","tenant_id":"tenant-b""#);
    assert_rejected(&sim, &wrong, "tenant_id").await;
    let right = batch_with(&records, &metadata, r#","tenant_id":"tenant-a""#);
    assert_eq!(send(&sim, &right).await.0, StatusCode::OK);
}

#[tokio::test]
async fn down_for_next_answers_503_then_recovers() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        down_for_next: 2,
        ..MeterFaults::default()
    });
    let batch = batch(&two_records());
    assert_eq!(send(&sim, &batch).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&sim, &batch).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.faults().down_for_next, 0);
    assert_eq!(send(&sim, &batch).await.0, StatusCode::OK);
    let seen = sim.stats();
    assert_eq!(seen.posts_received, 3);
    assert_eq!(seen.by_status.get(&503), Some(&2));
    assert_eq!(seen.requests[0].status, Some(503));
    assert_eq!(
        seen.requests[0].idempotency_key.as_deref(),
        Some(batch.key.as_str())
    );
}

#[tokio::test]
async fn reject_next_answers_400() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        reject_next: 1,
        ..MeterFaults::default()
    });
    let batch = batch(&two_records());
    let (status, body) = send(&sim, &batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "rejected by test"}));
    assert!(sim.records().is_empty());
    assert_eq!(send(&sim, &batch).await.0, StatusCode::OK);
}

#[tokio::test]
async fn too_many_share_answers_429_with_retry_after() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        too_many_share: 1.0,
        retry_after_secs: 7,
        ..MeterFaults::default()
    });
    let batch = batch(&two_records());
    let response = reqwest::Client::new()
        .post(sim.url())
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT)
        .header("Idempotency-Key", &batch.key)
        .body(batch.body.clone())
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    // Faults never touch the inspection routes.
    let seen = reqwest::get(format!("{}/_meter/stats", sim.base_url()))
        .await
        .expect("answers");
    assert_eq!(seen.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_hung_request_times_out_and_proceeds_once_cleared() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        hang: true,
        ..MeterFaults::default()
    });
    let batch = batch(&two_records());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let error = client
        .post(sim.url())
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT)
        .header("Idempotency-Key", &batch.key)
        .body(batch.body.clone())
        .send()
        .await
        .expect_err("a hung request never answers");
    assert!(error.is_timeout(), "{error}");
    assert!(sim.records().is_empty());
    sim.set_faults(MeterFaults::default());
    // The hung request may go on and store the batch once released, as a slow receiver would: a resend is
    // then a duplicate.
    let (status, _) = send(&sim, &batch).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::CONFLICT,
        "{status}"
    );
    assert_eq!(sim.records().len(), 2);
}

#[tokio::test]
async fn reset_connections_closes_without_an_answer() {
    let sim = start_default();
    let batch = batch(&two_records());
    let client = reqwest::Client::new();
    let post = |client: &reqwest::Client| {
        client
            .post(sim.url())
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT)
            .header("Idempotency-Key", &batch.key)
            .body(batch.body.clone())
            .send()
    };
    // A kept-alive connection from before the fault is reset too.
    let probe = client
        .post(format!("{}/nothing", sim.base_url()))
        .send()
        .await;
    assert_eq!(probe.expect("answers").status(), StatusCode::NOT_FOUND);
    sim.set_faults(MeterFaults {
        reset_connections: true,
        ..MeterFaults::default()
    });
    for _ in 0..3 {
        let error = post(&client)
            .await
            .expect_err("no answer on a reset connection");
        assert!(!error.is_timeout(), "{error}");
    }
    assert!(sim.records().is_empty());
    // The server logs a request before it resets the socket, so the client's error comes after the
    // log holds the request: the counts are final here.
    let seen = sim.stats();
    assert_eq!(seen.unanswered, 3);
    assert_eq!(seen.requests.len(), 4);
    assert!(seen.requests[1..].iter().all(|r| r.status.is_none()));
    sim.set_faults(MeterFaults::default());
    let response = post(&reqwest::Client::new()).await.expect("answers again");
    assert_eq!(response.status(), StatusCode::OK);
}

/// 503 count of `n` requests under `error_share` 0.25 with seed `seed`, as the sequence of statuses.
async fn statuses_under_error_share(seed: u64, n: usize) -> Vec<StatusCode> {
    let sim = start(MeterConfig {
        seed,
        ..MeterConfig::default()
    });
    sim.set_faults(MeterFaults {
        error_share: 0.25,
        ..MeterFaults::default()
    });
    let client = reqwest::Client::new();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let response = client
            .post(format!("{}/nothing", sim.base_url()))
            .send()
            .await
            .expect("answers");
        statuses.push(response.status());
    }
    statuses
}

#[tokio::test]
async fn error_share_is_roughly_right_and_repeats_with_the_seed() {
    let first = statuses_under_error_share(11, 200).await;
    let unavailable = first
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    // Expected 50; a binomial(200, 0.25) lands in 30..=70 with overwhelming probability, and the seed is fixed.
    assert!((30..=70).contains(&unavailable), "{unavailable} of 200");
    assert!(
        first
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE || *s == StatusCode::NOT_FOUND)
    );
    assert_eq!(statuses_under_error_share(11, 200).await, first);
}

#[tokio::test]
async fn delay_slows_every_answer() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        delay: Duration::from_millis(200),
        ..MeterFaults::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(send(&sim, &batch(&two_records())).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn dropping_the_simulator_ends_a_hung_request() {
    let sim = start_default();
    sim.set_faults(MeterFaults {
        hang: true,
        ..MeterFaults::default()
    });
    let url = format!("{}/anything", sim.base_url());
    let request = tokio::spawn(async move { reqwest::Client::new().post(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    drop(sim);
    assert!(started.elapsed() < Duration::from_secs(3));
    let outcome = request.await.expect("task ends");
    assert!(outcome.is_err(), "a hung request gets no answer");
}
