//! Chat conversations: their list's filters, sorts and pages, the detail endpoints, advanced-chat
//! conversations, and what a listed conversation says of its model.

use std::collections::HashSet;

use chrono::{Days, TimeZone as _};
use dify_sim::AuthMode;
use serde_json::Value;

use crate::support::{
    DAY0, Walker, apps_of, config, conversation_page, conversations, fifteen_short_conversations,
    first_app_id, keys, messages, start, tokyo_minute, utc_day, uuid_like,
};

/// The first of `conversations` updated after the three-day window.
fn updated_after_the_window(conversations: &[Value]) -> &Value {
    conversations
        .iter()
        .find(|c| utc_day(c["updated_at"].as_i64().unwrap()) > DAY0 + Days::new(2))
        .expect("a conversation updated after the window")
}

/// Lists all of a chat app's conversations under `sort` and checks their order.
async fn assert_sorted(w: &Walker, id: &str, sort: &str, ascending: bool) {
    let v = conversation_page(w, id, &[("limit", "100".into()), ("sort_by", sort.into())])
        .await
        .1;
    let field = sort.trim_start_matches('-');
    let t: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_i64().unwrap())
        .collect();
    assert_eq!(t.len(), 12);
    let sorted = t.windows(2).all(|p| {
        if ascending {
            p[0] <= p[1]
        } else {
            p[0] >= p[1]
        }
    });
    assert!(sorted, "{sort}: {t:?}");
}

#[tokio::test]
async fn chat_conversations_filter_sort_and_page_like_dify() {
    let sim = start(fifteen_short_conversations());
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    // 30 messages in 15 conversations; 3 are deleted (never listed), debugger ones are listed.
    let all = conversation_page(&w, id, &[("limit", "100".into())])
        .await
        .1;
    assert_eq!(all["total"], 12);
    let rows = all["data"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    assert_eq!(all["has_more"], false);
    let updated: Vec<i64> = rows
        .iter()
        .map(|c| c["updated_at"].as_i64().unwrap())
        .collect();
    assert!(
        updated.windows(2).all(|p| p[0] >= p[1]),
        "default sort -updated_at"
    );
    assert!(
        rows.iter()
            .any(|c| c["from_source"] == "console" && c["from_account_id"].is_string())
    );
    assert!(
        rows.iter()
            .any(|c| c["from_source"] == "api" && c["from_end_user_session_id"].is_string())
    );
    let later = updated_after_the_window(rows);
    assert!(utc_day(later["created_at"].as_i64().unwrap()) <= DAY0 + Days::new(2));
    // The shape is conversation_with_summary_fields.
    assert_eq!(
        keys(&rows[0]),
        [
            "admin_feedback_stats",
            "annotated",
            "created_at",
            "from_account_id",
            "from_account_name",
            "from_end_user_id",
            "from_end_user_session_id",
            "from_source",
            "id",
            "message_count",
            "model_config",
            "name",
            "read_at",
            "status",
            "status_count",
            "summary",
            "updated_at",
            "user_feedback_stats",
        ]
    );
    // Page numbers cover every conversation once.
    let mut paged = Vec::new();
    for page in 1..=3 {
        let v = conversation_page(&w, id, &[("limit", "5".into()), ("page", page.to_string())])
            .await
            .1;
        assert_eq!(
            (v["total"].as_u64(), v["has_more"].as_bool()),
            (Some(12), Some(page < 3))
        );
        paged.extend(
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone()),
        );
    }
    assert_eq!(
        paged,
        rows.iter().map(|c| c["id"].clone()).collect::<Vec<_>>()
    );
    // Orders.
    assert_sorted(&w, id, "created_at", true).await;
    assert_sorted(&w, id, "-created_at", false).await;
    assert_sorted(&w, id, "updated_at", true).await;
    assert_eq!(sim.stats().chat_conversations_requests, 7);
}

#[tokio::test]
async fn chat_conversations_filter_on_local_minutes_and_refuse_what_dify_refuses() {
    let sim = start(fifteen_short_conversations());
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let all = conversation_page(&w, id, &[("limit", "100".into())])
        .await
        .1;
    let later = updated_after_the_window(all["data"].as_array().unwrap());
    // `start`/`end` are account-timezone minutes on updated_at under an updated sort, else on created_at:
    // the conversation updated after the window is in the one and not the other.
    let end = [
        ("end", tokyo_minute(DAY0 + Days::new(3))),
        ("limit", "100".into()),
    ];
    let by_updated = conversation_page(&w, id, &end).await.1;
    let mut by_created_query = end.to_vec();
    by_created_query.push(("sort_by", "-created_at".into()));
    let by_created = conversation_page(&w, id, &by_created_query).await.1;
    let ids = |v: &Value| -> HashSet<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!ids(&by_updated).contains(later["id"].as_str().unwrap()));
    assert!(ids(&by_created).contains(later["id"].as_str().unwrap()));
    // `end` includes its whole minute (second 59); `start` begins at second 0.
    let t = later["updated_at"].as_i64().unwrap();
    let minute = |ts: i64| {
        chrono_tz::Asia::Tokyo
            .timestamp_opt(ts, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let exact = conversation_page(
        &w,
        id,
        &[
            ("start", minute(t)),
            ("end", minute(t)),
            ("limit", "100".into()),
        ],
    )
    .await
    .1;
    assert!(ids(&exact).contains(later["id"].as_str().unwrap()));
    // Dify refuses what it does not accept.
    for bad in [
        vec![("limit", "101".to_owned())],
        vec![("page", "0".to_owned())],
        vec![("sort_by", "name".to_owned())],
        vec![("start", "2026-03-01".to_owned())],
    ] {
        let (status, error) = conversation_page(&w, id, &bad).await;
        assert_eq!(
            (status.as_u16(), error["code"].as_str()),
            (400, Some("invalid_param")),
            "{bad:?}"
        );
    }
    let workflow = apps_of(&w, "workflow").await.remove(0);
    assert_eq!(
        conversation_page(&w, workflow["id"].as_str().unwrap(), &[])
            .await
            .0,
        404
    );
    assert_eq!(sim.stats().chat_conversations_requests, 9);
}

#[tokio::test]
async fn conversation_details_mark_conversations_read_and_are_counted() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "chat").await;
    let listed = w.ok(&format!("/apps/{id}/chat-conversations"), &[]).await;
    let c = &listed["data"][0];
    assert!(c["read_at"].is_null());
    let cid = c["id"].as_str().unwrap();
    let detail = w
        .ok(&format!("/apps/{id}/chat-conversations/{cid}"), &[])
        .await;
    assert_eq!(detail["message_count"], c["message_count"]);
    assert!(detail["model_config"]["model"]["name"].is_string());
    let listed = w.ok(&format!("/apps/{id}/chat-conversations"), &[]).await;
    let read = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == cid)
        .unwrap();
    assert!(
        read["read_at"].is_i64(),
        "a detail request marks the conversation read"
    );
    // Completion apps: one conversation per message, newest first; the detail carries the message and marks
    // the conversation read too.
    let completion = apps_of(&w, "completion").await.remove(0);
    let completion_id = completion["id"].as_str().unwrap();
    let path = format!("/apps/{completion_id}/completion-conversations");
    let listed = w.ok(&path, &[("limit", "100".into())]).await;
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(listed["total"].as_u64(), Some(rows.len() as u64));
    let created: Vec<i64> = rows
        .iter()
        .map(|c| c["created_at"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|p| p[0] > p[1]), "newest first");
    assert!(
        rows.iter()
            .all(|c| c["created_at"] == c["updated_at"] && c["message"]["query"].is_string())
    );
    let first = &rows[0];
    let detail = w
        .ok(&format!("{path}/{}", first["id"].as_str().unwrap()), &[])
        .await;
    assert_eq!(detail["message"]["created_at"], first["created_at"]);
    assert!(detail["model_config"]["model"]["name"].is_string());
    let again = w.ok(&path, &[("limit", "1".into())]).await;
    assert!(again["data"][0]["read_at"].is_i64());
    assert_eq!(w.get(&format!("{path}/{}", uuid_like()), &[]).await.0, 404);
    assert_eq!(sim.stats().conversation_detail_requests, 3);
    assert_eq!(sim.stats().chat_conversations_requests, 2);
}

#[tokio::test]
async fn advanced_chat_conversations_are_their_runs_without_the_debugger() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "advanced-chat").await;
    let runs = w.runs(id, Some("app-run")).await;
    let listed = conversations(&w, id).await;
    assert_eq!(
        listed.len(),
        runs.len(),
        "one conversation per production run, none from the editor"
    );
    for run in &runs {
        let c = listed
            .iter()
            .find(|c| c["id"] == run["conversation_id"])
            .expect("the run's conversation is listed");
        assert!(c["model_config"]["model"].is_null());
        let messages = messages(&w, id, c["id"].as_str().unwrap()).await;
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!(
            (&m["id"], &m["workflow_run_id"]),
            (&run["message_id"], &run["id"])
        );
        assert_eq!(
            m["message_tokens"].as_u64().unwrap() + m["answer_tokens"].as_u64().unwrap(),
            run["total_tokens"].as_u64().unwrap()
        );
    }
}

#[tokio::test]
async fn conversation_lists_never_name_the_model_like_dify() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    // `simple_model_config_fields` reads `model_dict` from the dict `Conversation.model_config` returns,
    // which has no such key: every listed conversation's model is null, in every mode; `pre_prompt` is there.
    for (mode, list, pre_prompt) in [
        ("chat", "chat-conversations", true),
        ("agent-chat", "chat-conversations", true),
        ("advanced-chat", "chat-conversations", false),
        ("completion", "completion-conversations", true),
    ] {
        let id = first_app_id(&w, mode).await;
        let v = w
            .ok(&format!("/apps/{id}/{list}"), &[("limit", "100".into())])
            .await;
        let rows = v["data"].as_array().expect("data");
        assert!(!rows.is_empty(), "{mode}");
        for c in rows {
            let config = &c["model_config"];
            assert_eq!(keys(config), ["model", "pre_prompt"], "{mode}");
            assert!(config["model"].is_null(), "{mode}: {config}");
            assert_eq!(
                config["pre_prompt"].is_string(),
                pre_prompt,
                "{mode}: {config}"
            );
        }
    }
}
