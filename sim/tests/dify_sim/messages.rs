//! Chat messages: paging back with `first_id`, and Dify's errors.

use chrono::Days;
use dify_sim::{AuthMode, SimConfig};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    DAY0, Walker, config, conversations, first_app_id, start, utc_day, uuid_like,
};

#[tokio::test]
async fn chat_messages_page_back_with_first_id_like_dify() {
    let sim = start(SimConfig {
        long_conversation_messages: 250,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let listed = conversations(&w, id).await;
    let long = listed
        .iter()
        .find(|c| c["message_count"] == 250)
        .expect("the long conversation");
    assert_eq!(long["from_end_user_session_id"], "customer-0042");
    let cid = long["id"].as_str().unwrap();
    let path = format!("/apps/{id}/chat-messages");
    // Newest 100, returned oldest first, then back with the page's first message as first_id.
    let mut pages = Vec::new();
    let mut first_id: Option<String> = None;
    loop {
        let mut query = vec![
            ("conversation_id", cid.to_owned()),
            ("limit", "100".to_owned()),
        ];
        if let Some(f) = &first_id {
            query.push(("first_id", f.clone()));
        }
        let v = w.ok(&path, &query).await;
        let data = v["data"].as_array().unwrap().clone();
        first_id = data.first().map(|m| m["id"].as_str().unwrap().to_owned());
        pages.push((data, v["has_more"] == true, v["limit"].clone()));
        if !pages.last().unwrap().1 {
            break;
        }
    }
    assert_eq!(
        pages
            .iter()
            .map(|(d, more, _)| (d.len(), *more))
            .collect::<Vec<_>>(),
        [(100, true), (100, true), (50, false)]
    );
    assert!(pages.iter().all(|(_, _, limit)| limit == 100));
    let all: Vec<i64> = pages
        .iter()
        .rev()
        .flat_map(|(d, _, _)| d.iter().map(|m| m["created_at"].as_i64().unwrap()))
        .collect();
    assert_eq!(all.len(), 250);
    assert!(
        all.windows(2).all(|p| p[0] < p[1]),
        "oldest first, no repeats"
    );
    // Spread evenly over the three days.
    let per_day = |d: u64| {
        all.iter()
            .filter(|&&t| utc_day(t) == DAY0 + Days::new(d))
            .count()
    };
    assert_eq!((per_day(0), per_day(1), per_day(2)), (83, 84, 83));
    // A full last page says has_more only when an older message exists, as Dify's EXISTS query does.
    let v = w
        .ok(
            &path,
            &[
                ("conversation_id", cid.to_owned()),
                ("limit", "50".into()),
                ("first_id", pages[1].0[0]["id"].as_str().unwrap().into()),
            ],
        )
        .await;
    assert_eq!(
        (v["data"].as_array().unwrap().len(), v["has_more"].as_bool()),
        (50, Some(false))
    );
    // The message shape is message_detail_fields; failed messages lack metadata.usage.
    let m = &pages[0].0[0];
    assert_eq!(m["conversation_id"], cid);
    assert!(m["from_end_user_id"].is_string() && m["from_account_id"].is_null());
    let failed: Vec<&Value> = pages
        .iter()
        .flat_map(|(d, _, _)| d)
        .filter(|m| m["status"] == "error")
        .collect();
    assert!(!failed.is_empty());
    assert!(
        failed
            .iter()
            .all(|m| m["metadata"]["usage"].is_null() && m["message_tokens"] == 0)
    );
}

#[tokio::test]
async fn chat_messages_answer_dify_errors() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let listed = w.ok(&format!("/apps/{id}/chat-conversations"), &[]).await;
    let cid = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/apps/{id}/chat-messages");
    // Dify's errors.
    let not_found = |v: &(StatusCode, Value), message: &str| {
        assert_eq!(
            (v.0.as_u16(), v.1["code"].as_str(), v.1["message"].as_str()),
            (404, Some("not_found"), Some(message))
        );
    };
    not_found(
        &w.get(&path, &[("conversation_id", uuid_like())]).await,
        "Conversation Not Exists.",
    );
    not_found(
        &w.get(
            &path,
            &[("conversation_id", cid.clone()), ("first_id", uuid_like())],
        )
        .await,
        "First message not found",
    );
    for bad in [
        vec![
            ("conversation_id", cid.clone()),
            ("limit", "101".to_owned()),
        ],
        vec![("conversation_id", "not-a-uuid".to_owned())],
        vec![("limit", "10".to_owned())],
    ] {
        assert_eq!(w.get(&path, &bad).await.0, 400, "{bad:?}");
    }
    assert_eq!(sim.stats().chat_messages_requests, 5);
}
