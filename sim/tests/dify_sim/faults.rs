//! Injected faults: errors with `Retry-After`, delays that show requests in flight, and a conversation bumped
//! to page one while it is listed.

use std::time::Duration;

use chrono::Days;
use dify_sim::{AuthMode, Faults, SimConfig};
use serde_json::Value;

use crate::support::{
    DAY0, Walker, api, config, conversation_page, fifteen_short_conversations, first_app_id, start,
};

#[tokio::test]
async fn injected_faults_are_counted_and_carry_retry_after() {
    let faults = Faults {
        error_share: 0.3,
        retry_after_secs: 7,
        ..Faults::default()
    };
    let sim = start(SimConfig {
        faults,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let mut failed = 0;
    for _ in 0..60 {
        let response = w
            .http
            .get(api(&sim, "/apps"))
            .bearer_auth(&w.token)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {}
            429 => {
                failed += 1;
                assert_eq!(response.headers()["retry-after"], "7");
            }
            500 | 502 | 503 => failed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let stats = sim.stats();
    assert!(failed > 5 && failed < 40, "{failed} of 60 failed");
    assert_eq!(stats.faults_injected, failed);
    assert_eq!(stats.requests_total, 60);
    assert_eq!(stats.requests_by_route["GET /console/api/apps"], 60);
    // The control plane never fails.
    for _ in 0..20 {
        let r = w
            .http
            .get(format!("{}/_sim/stats", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn max_in_flight_counts_concurrent_requests() {
    let faults = Faults {
        delay: Duration::from_millis(400),
        ..Faults::default()
    };
    let sim = start(SimConfig {
        faults,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let requests = (0..6).map(|_| w.http.get(api(&sim, "/apps")).bearer_auth(&w.token).send());
    let answers = futures_join_all(requests).await;
    assert!(
        answers
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.status() == 200))
    );
    assert_eq!(sim.stats().max_in_flight, 6);
}

/// Waits for every future, concurrently, without an extra crate.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn the_bump_fault_moves_a_page_two_conversation_to_page_one_while_listing() {
    let sim = start(SimConfig {
        faults: Faults {
            bump_conversation_while_listing: true,
            ..Faults::default()
        },
        ..fifteen_short_conversations()
    });
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let query = |page: u32| vec![("limit", "5".to_owned()), ("page", page.to_string())];
    let page1 = conversation_page(&w, id, &query(1)).await.1;
    let page2 = conversation_page(&w, id, &query(2)).await.1;
    let page1_ids: Vec<&Value> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    // The bumped conversation left page 2 for page 1: page 2 now starts with what page 1 ended with.
    assert_eq!(
        page2["data"][0]["id"], *page1_ids[4],
        "one conversation is seen twice"
    );
    let again = conversation_page(&w, id, &query(1)).await.1;
    let bumped = &again["data"][0];
    assert!(
        !page1_ids.contains(&&bumped["id"]),
        "the bumped one was on page 2"
    );
    let now = chrono::Utc::now().timestamp();
    assert!((now - bumped["updated_at"].as_i64().unwrap()).abs() < 60);
    assert!(bumped["from_end_user_session_id"].is_string());
    // Its new message is served; the truth of the window does not change.
    let messages = w
        .ok(
            &format!("/apps/{id}/chat-messages"),
            &[("conversation_id", bumped["id"].as_str().unwrap().into())],
        )
        .await;
    let data = messages["data"].as_array().unwrap();
    assert_eq!(data.last().unwrap()["created_at"], bumped["updated_at"]);
    let plain = start(fifteen_short_conversations());
    assert_eq!(
        sim.truth(DAY0, DAY0 + Days::new(2)),
        plain.truth(DAY0, DAY0 + Days::new(2))
    );
    // Once per app.
    let third = conversation_page(&w, id, &query(1)).await.1;
    assert_eq!(third["data"], again["data"]);
}
