//! The sink contract is real: a second sink, kept in memory, receives through the same outbox and
//! delivery loop exactly the ledger rows the HTTP sink delivers to a real server.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::config::HttpSinkConfig;
use crate::ledger::{DecreasePolicy, Merger, UserMap};
use crate::secret::{Masker, Secret};
use crate::state::State;
use crate::usage::{Aggregator, Usage, UsageRecord};

/// Keeps what it is sent; answers "too large" once for a batch of more than one record.
#[derive(Default)]
struct MemorySink {
    received: Mutex<Vec<Value>>,
    refused_once: Mutex<bool>,
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn encode(&self, changes: &[Change]) -> String {
        let wire: Vec<_> = changes
            .iter()
            .map(|c| http::wire::WireRecord::new(&c.row.record, &c.row.customer))
            .collect();
        serde_json::to_string(&wire).unwrap()
    }

    fn split(&self, payload: &str, size: usize) -> anyhow::Result<Vec<Part>> {
        let records: Vec<Value> = serde_json::from_str(payload)?;
        Ok(records
            .chunks(size)
            .map(|chunk| Part {
                payload: serde_json::to_string(chunk).unwrap(),
                record_count: chunk.len() as u64,
                total_tokens: chunk
                    .iter()
                    .map(|r| r["total_tokens"].as_u64().unwrap())
                    .sum(),
            })
            .collect())
    }

    async fn send(&self, _batch: &Batch, payload: &str) -> Result<(), SendError> {
        let records: Vec<Value> = serde_json::from_str(payload).unwrap();
        let mut refused = self.refused_once.lock().unwrap();
        if records.len() > 1 && !*refused {
            *refused = true;
            return Err(SendError::TooLarge("413 from memory".to_owned()));
        }
        self.received.lock().unwrap().extend(records);
        Ok(())
    }
}

/// The records merged into an empty ledger, one [`DayMerge`] per day.
fn days() -> Vec<DayMerge> {
    let users = UserMap::default();
    let mut merger = Merger::new(DecreasePolicy::Keep, &users, chrono::Utc::now());
    let mut days = Vec::new();
    for day in records().chunk_by(|a, b| a.key.day == b.key.day) {
        days.push(merger.merge_day(Vec::new(), day.to_vec()));
    }
    days
}

fn records() -> Vec<UsageRecord> {
    let mut aggregator = Aggregator::default();
    for (day, user, tokens, cost) in [
        ("2026-11-26", "alice", 120, "0.0012345"),
        ("2026-11-26", "bob", 7, "0.0000001"),
        ("2026-11-26", "carol", 40, "1.5"),
        ("2026-11-27", "alice", 99, "0.25"),
    ] {
        aggregator
            .add(Usage {
                day: day.parse().unwrap(),
                app_id: Arc::from("app-1"),
                app_name: Arc::from("Support bot"),
                user: user.to_owned(),
                provider: "langgenius/openai/openai".to_owned(),
                model: "gpt-4o".to_owned(),
                currency: "USD".to_owned(),
                input_tokens: tokens - 1,
                output_tokens: 1,
                total_tokens: tokens,
                cost: cost.parse().unwrap(),
                requests: 1,
                total_only: false,
            })
            .unwrap();
    }
    aggregator.into_records()
}

#[tokio::test]
async fn a_second_sink_receives_exactly_what_the_http_sink_delivers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let cancel = CancellationToken::new();
    let http = HttpClient::new(
        std::time::Duration::from_secs(5),
        0,
        cancel.clone(),
        Masker::default(),
    )
    .unwrap();
    let http_sink = http::HttpSink::new(
        &HttpSinkConfig {
            url: format!("{}/usage", server.uri()).parse().unwrap(),
            token: Secret::new("meter-token".to_owned()),
            tenant_id: None,
        },
        &http,
    );
    let memory = MemorySink::default();

    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let days = days();
    let work: Vec<_> = days
        .iter()
        .flat_map(|day| {
            batches(&http_sink, day, 2)
                .map(|b| ("http", b))
                .chain(batches(&memory, day, 2).map(|b| ("memory", b)))
        })
        .collect();
    assert_eq!(
        work.len(),
        6,
        "3 + 1 records on two days, at most 2 a batch, for each sink"
    );
    state.queue("run-1", work, None).unwrap();

    let to_http = deliver(&state, &http_sink, 10, &cancel).await.unwrap();
    let to_memory = deliver(&state, &memory, 10, &cancel).await.unwrap();
    assert_eq!((to_http.batches_sent, to_http.records_sent), (3, 4));
    assert_eq!(
        (to_memory.batches_sent, to_memory.records_sent),
        (4, 4),
        "the refused batch of two was split in halves"
    );

    let mut posted: Vec<Value> = Vec::new();
    let mut bodies = String::new();
    for request in server.received_requests().await.unwrap() {
        bodies.push_str(&String::from_utf8_lossy(&request.body));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        posted.extend(body["records"].as_array().unwrap().iter().cloned());
    }
    let received = memory.received.lock().unwrap().clone();
    let key = |r: &Value| {
        r["metadata"]["source_event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (mut posted, mut received) = (posted, received);
    posted.sort_by_key(key);
    received.sort_by_key(key);
    assert_eq!(posted, received);
    let tokens: u64 = received
        .iter()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(tokens, 266);
    for cost in ["0.0012345", "0.0000001", "1.5", "0.25"] {
        assert!(
            bodies.contains(&format!(r#""cost_actual":{cost},"#)),
            "{cost}: {bodies}"
        );
    }
    assert_eq!(state.counts().unwrap().queued, 0);
}
