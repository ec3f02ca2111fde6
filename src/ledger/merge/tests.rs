use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::usage::RecordKey;

fn record(user: &str, input: u64, output: u64, cost: &str) -> UsageRecord {
    UsageRecord {
        key: RecordKey {
            day: "2026-11-27".parse().unwrap(),
            app_id: Arc::from("app"),
            user: user.to_owned(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            currency: "USD".into(),
        },
        app_name: Arc::from("Support bot"),
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        request_count: 1,
        cost: cost.parse().unwrap(),
        total_only: false,
        workspace_id: None,
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The rows after merging `collected` into `stored` under `policy`, and the merger's figures.
fn merge(
    policy: DecreasePolicy,
    stored: Vec<LedgerRow>,
    collected: Vec<UsageRecord>,
) -> (DayMerge, Decreases) {
    let users = UserMap::default();
    let mut merger = Merger::new(policy, &users, at("2026-11-28T01:00:00Z"));
    let day = merger.merge_day(stored, collected);
    (day, merger.decreases)
}

fn first_run(collected: Vec<UsageRecord>) -> Vec<LedgerRow> {
    merge(DecreasePolicy::Keep, Vec::new(), collected).0.rows
}

#[test]
fn new_records_enter_at_revision_one_and_unchanged_ones_change_nothing() {
    let rows = first_run(vec![record("alice", 100, 20, "0.0012")]);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].revision, rows[0].customer.as_str()), (1, "alice"));
    assert_eq!(rows[0].exported_at, at("2026-11-28T01:00:00Z"));

    let (again, decreases) = merge(
        DecreasePolicy::Keep,
        rows.clone(),
        vec![record("alice", 100, 20, "0.00120")],
    );
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.rows, rows);
    assert_eq!(decreases, Decreases::default());
}

#[test]
fn a_raised_record_gets_the_next_revision_and_its_previous_totals() {
    let rows = first_run(vec![record("alice", 100, 20, "0.0012")]);
    let (day, _) = merge(
        DecreasePolicy::Keep,
        rows.clone(),
        vec![record("alice", 150, 30, "0.0018")],
    );
    assert_eq!(day.changes.len(), 1);
    let change = &day.changes[0];
    assert_eq!(change.row.revision, 2);
    assert_eq!(change.row.record.total_tokens, 180);
    let previous = change.previous.as_ref().unwrap();
    assert_eq!(
        (previous.totals, previous.customer.as_str()),
        (rows[0].totals(), "alice")
    );
}

#[test]
fn keep_refuses_lower_totals_and_counts_what_dify_no_longer_shows() {
    let rows = first_run(vec![
        record("alice", 100, 20, "0.0012"),
        record("bob", 10, 5, "0.0001"),
    ]);
    // Bob's conversation was deleted; alice lost 50 input tokens but gained 5 output tokens.
    let (day, decreases) = merge(
        DecreasePolicy::Keep,
        rows.clone(),
        vec![record("alice", 50, 25, "0.0009")],
    );
    let alice = &day.rows[0];
    assert_eq!(
        (
            alice.record.input_tokens,
            alice.record.output_tokens,
            alice.record.total_tokens
        ),
        (100, 25, 125),
        "every figure keeps the larger value"
    );
    assert_eq!(alice.record.cost.to_string(), "0.0012");
    assert_eq!(alice.revision, 2, "the new output tokens are a change");
    assert_eq!(day.rows[1], rows[1], "the vanished record keeps its row");
    assert_eq!(day.changes.len(), 1);
    assert_eq!(decreases.keys, 2);
    assert_eq!(decreases.tokens, (120 - 75) + 15);
    assert_eq!(decreases.cost_text(), "0.0004 USD");
}

#[test]
fn follow_takes_lower_totals_and_zeroes_a_vanished_record() {
    let rows = first_run(vec![
        record("alice", 100, 20, "0.0012"),
        record("bob", 10, 5, "0.0001"),
    ]);
    let (day, decreases) = merge(
        DecreasePolicy::Follow,
        rows,
        vec![record("alice", 50, 25, "0.0009")],
    );
    let totals: Vec<(u64, String, u64)> = day
        .rows
        .iter()
        .map(|r| (r.record.total_tokens, r.record.cost.to_string(), r.revision))
        .collect();
    assert_eq!(
        totals,
        [(75, "0.0009".to_owned(), 2), (0, "0".to_owned(), 2)]
    );
    assert_eq!(day.changes.len(), 2);
    assert_eq!((decreases.keys, decreases.tokens), (2, 45 + 15));

    // A zero row that stays vanished is no decrease and no change.
    let (later, decreases) = merge(
        DecreasePolicy::Follow,
        day.rows,
        vec![record("alice", 50, 25, "0.0009")],
    );
    assert!(later.changes.is_empty());
    assert_eq!(decreases, Decreases::default());
}

#[test]
fn a_new_customer_is_a_new_revision_of_the_same_key() {
    let rows = first_run(vec![record("alice", 100, 20, "0.0012")]);
    let users = UserMap::parse(b"user,customer\nalice,Finance\n").unwrap();
    let mut merger = Merger::new(DecreasePolicy::Keep, &users, at("2026-11-29T01:00:00Z"));
    let day = merger.merge_day(rows.clone(), vec![record("alice", 100, 20, "0.0012")]);
    assert_eq!(day.rows[0].customer, "Finance");
    assert_eq!(day.rows[0].revision, 2);
    assert_eq!(
        day.rows[0].record.source_event_id(),
        rows[0].record.source_event_id()
    );
    assert!(merger.unmapped.is_empty());

    let day = merger.merge_day(Vec::new(), vec![record("bob", 1, 1, "0")]);
    assert_eq!(day.rows[0].customer, "bob");
    assert_eq!(merger.unmapped.len(), 1);
}

#[test]
fn a_total_is_never_counted_as_both_input_and_output() {
    // The same key once with a split, then as a total only (another source): the larger total wins
    // whole.
    let split = first_run(vec![record("alice", 100, 20, "0.0012")]);
    let mut total_only = record("alice", 90, 0, "0.0012");
    total_only.total_only = true;
    let (day, _) = merge(DecreasePolicy::Keep, split, vec![total_only]);
    let kept = &day.rows[0].record;
    assert_eq!(
        (
            kept.input_tokens,
            kept.output_tokens,
            kept.total_tokens,
            kept.total_only
        ),
        (100, 20, 120, false)
    );
}
