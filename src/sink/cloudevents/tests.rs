//! Events of each kind of change, exactly as a meter receives them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ledger::{LedgerRow, Previous};
use crate::secret::Masker;
use crate::usage::{RecordKey, UsageRecord};

fn sink() -> CloudEventsSink {
    let http = HttpClient::new(
        Duration::from_secs(1),
        0,
        CancellationToken::new(),
        Masker::default(),
    )
    .unwrap();
    let config = CloudEventsSinkConfig {
        url: "http://127.0.0.1:9/api/v1/events".parse().unwrap(),
        token: None,
        source: "dify-usage-exporter/dify.example.com".to_owned(),
    };
    CloudEventsSink::new(&config, &http)
}

fn row(total: u64, cost: &str, customer: &str, revision: u64) -> LedgerRow {
    LedgerRow {
        record: UsageRecord {
            key: RecordKey {
                day: "2026-11-27".parse().unwrap(),
                app_id: Arc::from("a1"),
                user: "u1".into(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                currency: "USD".into(),
            },
            app_name: Arc::from("Support bot"),
            workspace_id: None,
            input_tokens: total - 10,
            output_tokens: 10,
            total_tokens: total,
            request_count: total / 100,
            cost: cost.parse().unwrap(),
            total_only: false,
        },
        customer: customer.into(),
        revision,
        exported_at: "2026-11-28T00:00:05Z".parse().unwrap(),
    }
}

fn previous(of: &LedgerRow) -> Previous {
    Previous {
        totals: Totals::of(&of.record),
        customer: of.customer.clone(),
    }
}

fn events(changes: &[Change]) -> Vec<Value> {
    serde_json::from_str(&sink().encode(changes)).unwrap()
}

#[test]
fn the_first_event_of_a_row_carries_its_whole_totals() {
    let first = row(221, "0.0006280", "Finance", 1);
    let id = first.record.source_event_id();
    let events = events(&[Change::whole(first)]);
    assert_eq!(
        events,
        [json!({
            "specversion": "1.0",
            "id": format!("{id}-r1"),
            "source": "dify-usage-exporter/dify.example.com",
            "type": "io.dify-usage-exporter.llm.usage",
            "subject": "Finance",
            "time": "2026-11-27T00:00:00Z",
            "datacontenttype": "application/json",
            "data": {
                "input_tokens": 211, "output_tokens": 10, "total_tokens": 221, "request_count": 2,
                "cost": "0.000628", "currency": "USD", "app_id": "a1", "app_name": "Support bot",
                "provider": "openai", "model": "gpt-4o", "user": "u1", "token_split": "exact",
                "day": "2026-11-27", "revision": 1, "source_event_id": id,
            }
        })]
    );
}

#[test]
fn a_later_revision_sends_the_difference_and_a_decrease_a_negative_one() {
    let (one, two) = (
        row(221, "0.10", "Finance", 1),
        row(521, "0.3000001", "Finance", 2),
    );
    let raised = events(&[Change {
        previous: Some(previous(&one)),
        row: two.clone(),
    }]);
    assert_eq!(raised.len(), 1);
    assert!(raised[0]["id"].as_str().unwrap().ends_with("-r2"));
    assert_eq!(raised[0]["data"]["total_tokens"], 300);
    assert_eq!(raised[0]["data"]["request_count"], 3);
    assert_eq!(raised[0]["data"]["cost"], "0.2000001");
    let lowered = events(&[Change {
        previous: Some(previous(&two)),
        row: row(121, "0.05", "Finance", 3),
    }]);
    assert_eq!(lowered[0]["data"]["total_tokens"], -400);
    assert_eq!(lowered[0]["data"]["input_tokens"], -400);
    assert_eq!(lowered[0]["data"]["cost"], "-0.2500001");
}

#[test]
fn a_row_moved_to_another_customer_leaves_the_old_one_and_arrives_whole() {
    let before = row(221, "0.10", "Finance", 1);
    let moved = events(&[Change {
        previous: Some(previous(&before)),
        row: row(321, "0.15", "Sales", 2),
    }]);
    assert_eq!(moved.len(), 2);
    assert!(moved[0]["id"].as_str().unwrap().ends_with("-r2-moved"));
    assert_eq!(
        (
            &moved[0]["subject"],
            &moved[0]["data"]["total_tokens"],
            &moved[0]["data"]["cost"]
        ),
        (&json!("Finance"), &json!(-221), &json!("-0.1"))
    );
    assert!(moved[1]["id"].as_str().unwrap().ends_with("-r2"));
    assert_eq!(
        (
            &moved[1]["subject"],
            &moved[1]["data"]["total_tokens"],
            &moved[1]["data"]["cost"]
        ),
        (&json!("Sales"), &json!(321), &json!("0.15"))
    );
}

#[test]
fn a_revision_that_changes_no_total_sends_nothing() {
    let one = row(221, "0.10", "Finance", 1);
    let mut renamed = row(221, "0.1000", "Finance", 2);
    renamed.record.app_name = Arc::from("Renamed bot");
    let payload = sink().encode(&[Change {
        previous: Some(previous(&one)),
        row: renamed,
    }]);
    assert_eq!(payload, "[]");
}

#[test]
fn a_split_keeps_the_events_byte_for_byte() {
    let changes: Vec<Change> = (1..=3)
        .map(|n| Change::whole(row(100 * n + 10, "0.1", "Finance", n)))
        .collect();
    let payload = sink().encode(&changes);
    let parts = sink().split(&payload, 2).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].record_count, parts[0].total_tokens), (2, 320));
    assert_eq!((parts[1].record_count, parts[1].total_tokens), (1, 310));
    let rejoined: Vec<Value> = parts
        .iter()
        .flat_map(|p| serde_json::from_str::<Vec<Value>>(&p.payload).unwrap())
        .collect();
    assert_eq!(rejoined, events(&changes));
}

#[test]
fn a_refusal_names_what_the_meter_said() {
    let message = rejected(
        "POST http://127.0.0.1:1/events (SINK_CLOUDEVENTS_URL)",
        r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"event 3: data.cost: not a number"}"#,
    );
    assert!(message.starts_with(
        "POST http://127.0.0.1:1/events (SINK_CLOUDEVENTS_URL) answered 400: the meter refused the batch: event 3: data.cost: not a number"
    ));
}
