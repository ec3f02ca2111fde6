//! Statistics: `token-costs` and `daily-messages`, deleted conversations included.

use std::collections::HashSet;

use chrono::Days;
use dify_sim::{AuthMode, SimConfig, TruthRecord};
use rust_decimal::Decimal;

use crate::support::{
    DAY0, Walker, apps_of, config, conversations, day_statistics, first_app_id, messages,
    parse_price, start, tokyo_minute, utc_day,
};

#[tokio::test]
async fn deleted_conversations_are_hidden_but_their_messages_still_count_in_token_costs() {
    let sim = start(SimConfig {
        runs_per_app_per_day: 10,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let last = DAY0 + Days::new(2);
    let of_app = |records: Vec<TruthRecord>| -> Vec<TruthRecord> {
        records.into_iter().filter(|r| r.app_id == id).collect()
    };
    let (api, db) = (
        of_app(sim.truth(DAY0, last)),
        of_app(sim.truth_database(DAY0, last)),
    );
    let count = |records: &[TruthRecord], end_users: bool| -> u64 {
        records
            .iter()
            .filter(|r| !r.user.is_empty() && r.user.ends_with("@example.com") != end_users)
            .map(|r| r.request_count)
            .sum()
    };
    // The listing never shows a deleted conversation: its end-user messages are exactly the API truth's.
    let mut listed_end_user_messages = 0;
    for c in conversations(&w, id).await {
        if c["from_end_user_id"].is_string() {
            listed_end_user_messages += messages(&w, id, c["id"].as_str().unwrap())
                .await
                .iter()
                .filter(|m| utc_day(m["created_at"].as_i64().unwrap()) <= last)
                .count() as u64;
        }
    }
    assert_eq!(listed_end_user_messages, count(&api, true));
    // The database has the deleted conversations' end-user messages too, and so do Dify's statistics.
    assert!(
        count(&db, true) > count(&api, true),
        "deleted end-user conversations exist"
    );
    let mut statistics = 0;
    for d in 0..3 {
        statistics += day_statistics(&w, id, DAY0 + Days::new(d)).await.2;
    }
    assert_eq!(statistics, db.iter().map(|r| r.request_count).sum::<u64>());
    assert_eq!(statistics, api.iter().map(|r| r.request_count).sum::<u64>());
}

#[tokio::test]
async fn token_costs_have_one_usd_row_per_local_day_summing_every_currency() {
    let sim = start(SimConfig {
        apps_per_mode: 2,
        runs_per_app_per_day: 12,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let chat = apps_of(&w, "chat").await;
    assert_eq!(chat.len(), 2);
    let rmb = chat
        .iter()
        .find(|a| a["model_config"]["model"]["name"] == "qwen-max")
        .expect("a chat app priced in RMB");
    let id = rmb["id"].as_str().unwrap();
    let last = DAY0 + Days::new(2);
    let db: Vec<TruthRecord> = sim
        .truth_database(DAY0, last)
        .into_iter()
        .filter(|r| r.app_id == id)
        .collect();
    let currencies: HashSet<&str> = db.iter().map(|r| r.currency.as_str()).collect();
    assert_eq!(
        currencies,
        HashSet::from(["CNY", "USD"]),
        "older conversations were priced in USD (the truth names RMB by its ISO code)"
    );
    // Over the whole window in Tokyo minutes: one row per Tokyo day, always "USD", every currency summed.
    let query = [
        ("start", tokyo_minute(DAY0)),
        ("end", tokyo_minute(last + Days::new(1))),
    ];
    let costs = w
        .ok(&format!("/apps/{id}/statistics/token-costs"), &query)
        .await;
    let rows = costs["data"].as_array().unwrap();
    let dates: Vec<&str> = rows.iter().map(|r| r["date"].as_str().unwrap()).collect();
    assert_eq!(
        dates,
        ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    );
    assert!(rows.iter().all(|r| r["currency"] == "USD"));
    let tokens: u64 = rows
        .iter()
        .map(|r| r["token_count"].as_u64().unwrap())
        .sum();
    let price: Decimal = rows.iter().map(|r| parse_price(&r["total_price"])).sum();
    assert_eq!(tokens, db.iter().map(|r| r.total_tokens).sum::<u64>());
    assert_eq!(price, db.iter().map(|r| r.cost).sum::<Decimal>());
    let messages = w
        .ok(&format!("/apps/{id}/statistics/daily-messages"), &query)
        .await;
    let count: u64 = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, db.iter().map(|r| r.request_count).sum::<u64>());
}
