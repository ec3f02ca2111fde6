//! Every token attributed to its user, against hand-written Dify answers (wiremock, not the
//! simulator): the shapes are those of Dify's own response models, and the expected records are
//! worked out by hand below, so a simulator and an exporter that share a mistake cannot agree on it.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::collect::records;
use crate::support::{APPS_PATH, Exporter, Row, only_page};

const DAY: &str = "2026-11-02";
const FLOW: &str = "a0000000-0000-4000-8000-000000000001";
const CHAT: &str = "a0000000-0000-4000-8000-000000000002";
const ALICE: &str = "c0000000-0000-4000-8000-00000000000a";
const BOB: &str = "c0000000-0000-4000-8000-00000000000b";
const EXPLORE: &str = "c0000000-0000-4000-8000-00000000000e";
const DEBUGGER: &str = "c0000000-0000-4000-8000-00000000000d";

/// Unix seconds of `2026-11-02T00:00:00Z` plus `hours` (negative: the day before).
fn at(hours: i64) -> i64 {
    1_793_577_600 + hours * 3600
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// A node execution as `workflow_run_node_execution_fields` has it: every node carries the run's
/// creator; `usage` only on model nodes.
fn node(node_type: &str, creator: &Value, usage: Option<Value>) -> Value {
    let process_data = usage.map(|usage| {
        json!({"model_provider": "langgenius/openai/openai", "model_name": "gpt-4o", "model_mode": "chat", "usage": usage})
    });
    let mut node = json!({
        "id": format!("n-{node_type}"), "index": 1, "node_id": node_type, "node_type": node_type,
        "title": node_type, "status": "succeeded", "process_data": process_data,
        "execution_metadata": null, "created_at": at(10), "process_data_truncated": false,
        "created_by_role": "end_user", "created_by_account": null, "created_by_end_user": null,
    });
    for (key, value) in creator.as_object().unwrap() {
        node[key] = value.clone();
    }
    node
}

fn usage(prompt: u64, completion: u64, price: &str, currency: &str) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_price": "0", "completion_price": "0", "total_price": price, "currency": currency,
           "latency": 0.5})
}

/// A conversation row as `conversation_with_summary_fields` has it.
fn conversation(id: &str, session: Option<&str>, model: (&str, &str), updated: i64) -> Value {
    json!({
        "id": id, "status": "normal",
        "from_source": if session.is_some() { "api" } else { "console" },
        "from_end_user_id": session.map(|_| "e0000000-0000-4000-8000-000000000001"),
        "from_end_user_session_id": session,
        "from_account_id": if session.is_some() { Value::Null } else { json!("acc-1") },
        "from_account_name": if session.is_some() { Value::Null } else { json!("Owner") },
        "name": "chat", "summary": "hello", "read_at": null, "created_at": at(-30),
        "updated_at": updated, "annotated": false,
        "model_config": {"model": {"provider": model.0, "name": model.1, "mode": "chat", "completion_params": {}}, "pre_prompt": ""},
        "message_count": 2, "user_feedback_stats": {"like": 0, "dislike": 0},
        "admin_feedback_stats": {"like": 0, "dislike": 0},
    })
}

/// A message as `message_detail_fields` has it; `end_user` false means an account wrote it.
fn message(id: u32, end_user: bool, created: i64, tokens: (u64, u64), metadata: &Value) -> Value {
    json!({
        "id": format!("m0000000-0000-4000-8000-{id:012}"), "conversation_id": "x",
        "query": "q", "answer": "a", "message_tokens": tokens.0, "answer_tokens": tokens.1,
        "provider_response_latency": 0.4, "from_source": if end_user { "api" } else { "console" },
        "from_end_user_id": if end_user { json!("e0000000-0000-4000-8000-000000000001") } else { Value::Null },
        "from_account_id": if end_user { Value::Null } else { json!("acc-1") },
        "workflow_run_id": null, "created_at": created, "status": "normal", "error": null,
        "metadata": metadata, "agent_thoughts": [], "message_files": [], "feedbacks": [],
    })
}

fn messages_page(messages: &[Value], has_more: bool) -> ResponseTemplate {
    ok(json!({"limit": 100, "has_more": has_more, "data": messages}))
}

async fn mount(dify: &MockServer, mock: Mock) {
    mock.mount(dify).await;
}

/// `/apps` listing `apps` on one page, and the admin's `profile`.
async fn serve_workspace(dify: &MockServer, apps: &[Value], profile: Value) {
    mount(
        dify,
        Mock::given(method("GET"))
            .and(path(APPS_PATH))
            .respond_with(ok(only_page(apps))),
    )
    .await;
    mount(
        dify,
        Mock::given(method("GET"))
            .and(path("/console/api/account/profile"))
            .respond_with(ok(profile)),
    )
    .await;
}

/// The chatflow's runs, as `workflow-runs` lists them (no end user on a row) and their nodes.
async fn serve_chatflow(dify: &MockServer) {
    let runs = path(format!("/console/api/apps/{FLOW}/workflow-runs"));
    let row = |id: &str, created: i64, account: Value| {
        json!({"id": id, "version": "1", "status": "succeeded", "elapsed_time": 1.0, "total_tokens": 0,
               "total_steps": 3, "created_by_account": account, "created_at": created,
               "finished_at": created + 1, "exceptions_count": 0, "retry_index": 0,
               "conversation_id": "x", "message_id": "y"})
    };
    let end_user_run = "r0000000-0000-4000-8000-000000000001";
    let account_run = "r0000000-0000-4000-8000-000000000002";
    let older_run = "r0000000-0000-4000-8000-000000000003";
    mount(dify, Mock::given(method("GET")).and(runs).and(query_param("triggered_from", "app-run")).respond_with(ok(json!({
        "limit": 100, "has_more": true, "data": [
            row(end_user_run, at(10), Value::Null),
            row(account_run, at(9), json!({"id": "acc-1", "name": "Dev", "email": "dev@example.com"})),
            row(older_run, at(-1), Value::Null),
        ]})))).await;
    let end_user = json!({"created_by_role": "end_user",
        "created_by_end_user": {"id": "e1", "type": "service_api", "is_anonymous": false, "session_id": "flow-user"}});
    let account = json!({"created_by_role": "account",
        "created_by_account": {"id": "acc-1", "name": "Dev", "email": "dev@example.com"}});
    let nodes = |run: &str, body: Value| {
        Mock::given(method("GET"))
            .and(path(format!(
                "/console/api/apps/{FLOW}/workflow-runs/{run}/node-executions"
            )))
            .respond_with(ok(body))
            .expect(1)
    };
    mount(
        dify,
        nodes(
            end_user_run,
            json!({"data": [
                node("start", &end_user, None),
                node("llm", &end_user, Some(usage(100, 20, "0.0003000", "USD"))),
            ]}),
        ),
    )
    .await;
    mount(
        dify,
        nodes(
            account_run,
            json!({"data": [
                node("llm", &account, Some(usage(50, 5, "0.0001000", "USD"))),
            ]}),
        ),
    )
    .await;
}

/// The chat app's day: conversations of two end users, one explore and one debugger conversation of
/// an account, and the statistics, which also hold a deleted conversation's message.
async fn serve_chat_day(dify: &MockServer) {
    let openai = ("langgenius/openai/openai", "gpt-4o");
    let deepseek = ("langgenius/deepseek/deepseek", "deepseek-chat");
    mount(
        dify,
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-conversations")))
            .and(query_param("sort_by", "-updated_at"))
            // 00:00 UTC in Shanghai.
            .and(query_param("start", "2026-11-02 08:00"))
            .respond_with(ok(only_page(&[
                conversation(ALICE, Some("alice"), openai, at(25)),
                conversation(BOB, Some("bob"), deepseek, at(13)),
                conversation(EXPLORE, None, openai, at(14)),
                conversation(DEBUGGER, None, openai, at(15)),
            ]))),
    )
    .await;
    let usd = |price: &str| json!({"usage": usage(0, 0, price, "USD"), "retriever_resources": []});
    let messages = |conversation: &str| {
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-messages")))
            .and(query_param("conversation_id", conversation))
            .and(query_param("limit", "100"))
    };
    // Alice: the newest page (one message after the window, one in it), then, with first_id = the
    // page's oldest message, one from the day before, where the reading stops.
    mount(
        dify,
        messages(ALICE)
            .and(query_param_is_missing("first_id"))
            .respond_with(messages_page(
                &[
                    message(2, true, at(9), (100, 50), &usd("0.0010000")),
                    message(3, true, at(25), (7, 7), &usd("0.0000700")),
                ],
                true,
            ))
            .expect(1),
    )
    .await;
    mount(
        dify,
        messages(ALICE)
            .and(query_param(
                "first_id",
                "m0000000-0000-4000-8000-000000000002",
            ))
            .respond_with(messages_page(
                &[message(1, true, at(-4), (9, 9), &usd("0.0000900"))],
                false,
            ))
            .expect(1),
    )
    .await;
    // Bob: one message priced in RMB, one that failed before the model answered (no usage).
    let rmb = json!({"usage": usage(200, 100, "0.0150000", "RMB")});
    mount(
        dify,
        messages(BOB)
            .respond_with(messages_page(
                &[
                    message(4, true, at(12), (200, 100), &rmb),
                    message(5, true, at(13), (10, 5), &json!({})),
                ],
                false,
            ))
            .expect(1),
    )
    .await;
    mount(
        dify,
        messages(EXPLORE)
            .respond_with(messages_page(
                &[message(6, false, at(14), (30, 10), &usd("0.0002000"))],
                false,
            ))
            .expect(1),
    )
    .await;
    mount(
        dify,
        messages(DEBUGGER)
            .respond_with(messages_page(
                &[message(7, false, at(15), (40, 20), &usd("0.0004000"))],
                false,
            ))
            .expect(1),
    )
    .await;
}

/// The chat app's statistics of the day.
async fn serve_chat_statistics(dify: &MockServer) {
    // The statistics of [2026-11-02 08:00, 2026-11-03 08:00) Shanghai time, two local dates:
    // Alice 150 + Bob 300 + 15 + explore 40 + a deleted conversation's 100 tokens = 605 (the
    // debugger's are left out, as Dify does), 0.0010 + 0.0150 (RMB, summed as if USD) + 0.0002 +
    // 0.0005 = 0.0167, and 5 messages.
    let statistics = |name: &str, body: Value| {
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/statistics/{name}")))
            .and(query_param("start", "2026-11-02 08:00"))
            .and(query_param("end", "2026-11-03 08:00"))
            .respond_with(ok(body))
            .expect(1)
    };
    mount(dify, statistics("token-costs", json!({"data": [
        {"date": "2026-11-02", "token_count": 500, "total_price": "0.0160000", "currency": "USD"},
        {"date": "2026-11-03", "token_count": 105, "total_price": "0.0007000", "currency": "USD"},
    ]}))).await;
    mount(dify, statistics("daily-messages", json!({"data": [
        {"date": "2026-11-02", "message_count": 4}, {"date": "2026-11-03", "message_count": 1},
    ]}))).await;
}

fn row(
    app: (&str, &str),
    user: &str,
    model: (&str, &str, &str),
    tokens: (u64, u64),
    requests: u64,
    cost: &str,
    split: &str,
) -> Row {
    Row {
        day: DAY.to_owned(),
        app_id: app.0.to_owned(),
        app_name: app.1.to_owned(),
        user: user.to_owned(),
        provider: model.0.to_owned(),
        model: model.1.to_owned(),
        currency: model.2.to_owned(),
        tokens: (tokens.0, tokens.1, tokens.0 + tokens.1),
        request_count: requests,
        cost: cost.parse::<Decimal>().unwrap(),
        token_split: split.to_owned(),
    }
}

#[tokio::test]
async fn chatflow_users_come_from_node_executions_and_chat_days_from_messages() {
    let dify = MockServer::start().await;
    serve_workspace(
        &dify,
        &[
            json!({"id": FLOW, "name": "Support flow", "mode": "advanced-chat", "model_config": null}),
            json!({"id": CHAT, "name": "Helpdesk", "mode": "chat",
                   "model_config": {"model": {"provider": "langgenius/openai/openai", "name": "gpt-4o"}}}),
        ],
        json!({"id": "acc-1", "email": "owner@example.com", "timezone": "Asia/Shanghai"}),
    )
    .await;
    // Conversation details mark a conversation read for the admin: never asked for.
    mount(
        &dify,
        Mock::given(method("GET"))
            .and(path_regex(r"/chat-conversations/[^/]+$"))
            .respond_with(ok(json!({})))
            .expect(0),
    )
    .await;
    serve_chatflow(&dify).await;
    serve_chat_day(&dify).await;
    serve_chat_statistics(&dify).await;

    let finished = Exporter::configured(&dify.uri())
        .args(["run", "--dry-run", "--from", DAY, "--to", DAY])
        .run();
    finished.code(0);

    let flow = (FLOW, "Support flow");
    let chat = (CHAT, "Helpdesk");
    let mut expected = vec![
        // The chatflow: the end user's run under its session id, the account's under its email.
        row(
            flow,
            "flow-user",
            ("openai", "gpt-4o", "USD"),
            (100, 20),
            1,
            "0.0003",
            "exact",
        ),
        row(
            flow,
            "dev@example.com",
            ("openai", "gpt-4o", "USD"),
            (50, 5),
            1,
            "0.0001",
            "exact",
        ),
        // Alice's one message in the window (the ones before and after it are not counted).
        row(
            chat,
            "alice",
            ("openai", "gpt-4o", "USD"),
            (100, 50),
            1,
            "0.001",
            "exact",
        ),
        // Bob's, on his conversation's model: one in RMB (sent as CNY), one without usage at 0 USD.
        row(
            chat,
            "bob",
            ("deepseek", "deepseek-chat", "CNY"),
            (200, 100),
            1,
            "0.015",
            "exact",
        ),
        row(
            chat,
            "bob",
            ("deepseek", "deepseek-chat", "USD"),
            (10, 5),
            1,
            "0",
            "exact",
        ),
        // The rest of Dify's statistics: 605 - 465 tokens, 0.0167 - 0.0160, 5 - 3 messages (the
        // explore message and the deleted conversation's), in USD because Bob's currencies differ.
        row(
            chat,
            "",
            ("openai", "gpt-4o", "USD"),
            (140, 0),
            2,
            "0.0007",
            "total_only",
        ),
    ];
    expected.sort();
    assert_eq!(records(&finished), expected);
}

/// An agent-chat app over two UTC days: one end user's messages, all in RMB, and statistics that
/// exceed them on the first day and fall short of them on the second.
async fn rmb_agent_dify() -> MockServer {
    let dify = MockServer::start().await;
    serve_workspace(
        &dify,
        &[json!({"id": CHAT, "name": "Helpdesk", "mode": "agent-chat",
                 "model_config": {"model": {"provider": "langgenius/tongyi/tongyi", "name": "qwen-max"}}})],
        json!({"timezone": "UTC"}),
    )
    .await;
    let qwen = ("langgenius/tongyi/tongyi", "qwen-max");
    mount(
        &dify,
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-conversations")))
            .respond_with(ok(only_page(&[conversation(
                ALICE,
                Some("alice"),
                qwen,
                at(30),
            )]))),
    )
    .await;
    // Alice's messages are all priced in RMB: one on each day.
    let rmb = |price: &str| json!({"usage": usage(0, 0, price, "RMB")});
    mount(
        &dify,
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-messages")))
            .respond_with(messages_page(
                &[
                    message(1, true, at(5), (100, 20), &rmb("0.0120000")),
                    message(2, true, at(29), (300, 60), &rmb("0.0360000")),
                ],
                false,
            )),
    )
    .await;
    // 2026-11-02: Dify counts 50 more tokens, 0.0010 more and one more message (an explore message)
    // than Alice's: the remainder, in RMB, the currency all of the day's end-user messages share.
    // 2026-11-03: Dify counts fewer tokens than Alice's message alone: no remainder, a warning.
    let statistics = |name: &str, start: &str, body: Value| {
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/statistics/{name}")))
            .and(query_param("start", start))
            .respond_with(ok(body))
            .expect(1)
    };
    for mock in [
        statistics(
            "token-costs",
            "2026-11-02 00:00",
            json!({"data": [
            {"date": "2026-11-02", "token_count": 170, "total_price": "0.0130000", "currency": "USD"}]}),
        ),
        statistics(
            "daily-messages",
            "2026-11-02 00:00",
            json!({"data": [{"date": "2026-11-02", "message_count": 2}]}),
        ),
        statistics(
            "token-costs",
            "2026-11-03 00:00",
            json!({"data": [
            {"date": "2026-11-03", "token_count": 300, "total_price": "0.0360000", "currency": "USD"}]}),
        ),
        statistics(
            "daily-messages",
            "2026-11-03 00:00",
            json!({"data": [{"date": "2026-11-03", "message_count": 1}]}),
        ),
    ] {
        mount(&dify, mock).await;
    }
    dify
}

#[tokio::test]
async fn a_remainder_takes_the_shared_currency_and_a_negative_one_is_only_logged() {
    let dify = rmb_agent_dify().await;
    let finished = Exporter::configured(&dify.uri())
        .args(["run", "--dry-run", "--from", DAY, "--to", "2026-11-03"])
        .run();
    finished.code(0);
    let chat = (CHAT, "Helpdesk");
    let next_day = |mut row: Row| {
        row.day = "2026-11-03".to_owned();
        row
    };
    let mut expected = vec![
        row(
            chat,
            "alice",
            ("tongyi", "qwen-max", "CNY"),
            (100, 20),
            1,
            "0.012",
            "exact",
        ),
        row(
            chat,
            "",
            ("tongyi", "qwen-max", "CNY"),
            (50, 0),
            1,
            "0.001",
            "total_only",
        ),
        next_day(row(
            chat,
            "alice",
            ("tongyi", "qwen-max", "CNY"),
            (300, 60),
            1,
            "0.036",
            "exact",
        )),
    ];
    expected.sort();
    assert_eq!(records(&finished), expected);
    let warning = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["level"] == "warn")
        .unwrap();
    assert_eq!(
        warning["message"],
        "the app-day's end-user messages exceed Dify's own statistics; no remainder record for it"
    );
    let context = &warning["context"];
    assert_eq!(
        (
            &context["day"],
            &context["statistics_tokens"],
            &context["end_user_tokens"]
        ),
        (&json!("2026-11-03"), &json!(300), &json!(360))
    );
}

#[tokio::test]
async fn a_conversation_deleted_while_reading_falls_into_the_remainder() {
    let dify = MockServer::start().await;
    let openai = ("langgenius/openai/openai", "gpt-4o");
    serve_workspace(
        &dify,
        &[json!({"id": CHAT, "name": "Helpdesk", "mode": "chat",
                 "model_config": {"model": {"provider": openai.0, "name": openai.1}}})],
        json!({"timezone": "UTC"}),
    )
    .await;
    let mocks = [
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-conversations")))
            .respond_with(ok(only_page(&[conversation(BOB, Some("bob"), openai, at(12))]))),
        // Deleted after the listing: Dify answers as its message controller does.
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/chat-messages")))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                json!({"code": "not_found", "message": "Conversation Not Exists.", "status": 404}),
            ))
            .expect(1),
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/statistics/token-costs")))
            .respond_with(ok(json!({"data": [
                {"date": DAY, "token_count": 150, "total_price": "0.0010000", "currency": "USD"}]}))),
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{CHAT}/statistics/daily-messages")))
            .respond_with(ok(json!({"data": [{"date": DAY, "message_count": 1}]}))),
    ];
    for mock in mocks {
        mount(&dify, mock).await;
    }
    let finished = Exporter::configured(&dify.uri())
        .args(["run", "--dry-run", "--from", DAY, "--to", DAY])
        .run();
    finished.code(0);
    assert_eq!(
        records(&finished),
        [row(
            (CHAT, "Helpdesk"),
            "",
            ("openai", "gpt-4o", "USD"),
            (150, 0),
            1,
            "0.001",
            "total_only"
        )]
    );
}
