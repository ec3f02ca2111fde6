//! A misbehaving Dify (issue 9): lists that never end, pages that shift, numbers the meter would
//! reject. Each case must end with exit 1 and an error naming the endpoint or the field, or with
//! exact records; no case may hang, double count or leak a secret (checked on every run).

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{APPS_PATH, Exporter, Finished, only_page, serve_apps};

const DAY: &str = "2026-11-02";
/// 2026-11-02T10:00:00Z.
const IN_WINDOW: i64 = 1_793_613_600;
const APP: &str = "a0000000-0000-4000-8000-000000000001";

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn app(id: &str, mode: &str) -> Value {
    json!({"id": id, "name": format!("App {mode}"), "mode": mode,
           "model_config": {"model": {"provider": "langgenius/openai/openai", "name": "gpt-4o"}}})
}

/// An end user's conversation, as the exporter reads it from `chat-conversations`.
fn conversation(id: &str, updated_at: i64) -> Value {
    json!({"id": id, "from_end_user_session_id": "s", "updated_at": updated_at, "model_config": null})
}

/// `chat-conversations` lists one end user's conversation, updated in the window.
async fn serve_one_conversation(dify: &MockServer) {
    mount(
        dify,
        Mock::given(path_regex("/chat-conversations$"))
            .respond_with(ok(only_page(&[conversation("c1", IN_WINDOW)]))),
    )
    .await;
}

fn dry_run(dify: &MockServer) -> Finished {
    Exporter::configured(&dify.uri())
        .args(["run", "--dry-run", "--from", DAY, "--to", DAY])
        .run()
}

/// Runs on `dify`, which must fail (exit 1) before it prints any record; its failure message.
fn failure_before_any_record(dify: &MockServer, case: &str) -> String {
    let finished = dry_run(dify);
    finished.code(1);
    assert!(
        finished.stdout.is_empty(),
        "{case}: records printed: {}",
        finished.stdout
    );
    finished.failure()
}

/// Requests whose path ends with `suffix`.
async fn requests_to(dify: &MockServer, suffix: &str) -> usize {
    dify.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with(suffix))
        .count()
}

async fn mount(dify: &MockServer, mock: Mock) {
    mock.mount(dify).await;
}

#[tokio::test]
async fn a_list_that_makes_no_progress_stops_naming_the_endpoint() {
    let message = |id: &str| {
        json!({"id": id, "created_at": IN_WINDOW, "message_tokens": 1, "answer_tokens": 1,
               "from_end_user_id": "e1", "metadata": {}})
    };
    let cases: [(&str, Value, &str, Mock, &str); 4] = [
        (
            "/apps ignores page",
            app(APP, "completion"),
            APPS_PATH,
            Mock::given(path(APPS_PATH)).respond_with(ok(json!({"page": 1, "limit": 100, "total": 500,
                "has_more": true, "data": [app(APP, "completion")]}))),
            "GET /console/api/apps answered page 2 with only rows of earlier pages and has_more: true",
        ),
        (
            "workflow-runs ignores last_id",
            app(APP, "advanced-chat"),
            "/workflow-runs",
            Mock::given(path_regex("/workflow-runs$")).respond_with(ok(json!({"limit": 100,
                "has_more": true, "data": [{"id": "r1", "created_at": IN_WINDOW, "created_by_account": null}]}))),
            "GET /console/api/apps/{id}/workflow-runs answered last_id=r1 with the rows of the page before and has_more: true; it ignores last_id",
        ),
        (
            "chat-messages ignores first_id",
            app(APP, "chat"),
            "/chat-messages",
            Mock::given(path_regex("/chat-messages$")).respond_with(ok(json!({"limit": 100,
                "has_more": true, "data": [message("m1")]}))),
            "GET /console/api/apps/{id}/chat-messages answered first_id=m1 with the rows of the page before and has_more: true; it ignores first_id",
        ),
        (
            "chat-conversations claims more than its total",
            app(APP, "chat"),
            "/chat-conversations",
            Mock::given(path_regex("/chat-conversations$")).respond_with(ok(json!({"page": 1,
                "limit": 100, "total": 2, "has_more": true, "data": [conversation("c1", IN_WINDOW), conversation("c2", IN_WINDOW)]}))),
            "GET /console/api/apps/{id}/chat-conversations answered page 1 with has_more: true although its total of 2 fits in 1 page(s) of 100",
        ),
    ];
    for (case, listed, endpoint, broken, error) in cases {
        let dify = MockServer::start().await;
        mount(&dify, broken).await;
        mount(
            &dify,
            Mock::given(path_regex("/chat-messages$"))
                .respond_with(ok(json!({"limit": 100, "has_more": false, "data": []}))),
        )
        .await;
        mount(
            &dify,
            Mock::given(path_regex("/node-executions$")).respond_with(ok(json!({"data": []}))),
        )
        .await;
        serve_one_conversation(&dify).await;
        serve_apps(&dify, &[listed]).await;
        let failure = failure_before_any_record(&dify, case);
        assert!(failure.starts_with(error), "{case}: {failure}");
        assert!(
            failure.contains("stopped instead of asking forever"),
            "{case}: {failure}"
        );
        let asked = requests_to(&dify, endpoint).await;
        assert!(
            (1..=2).contains(&asked),
            "{case}: {asked} requests to {endpoint}"
        );
    }
}

#[tokio::test]
async fn an_app_listed_on_two_pages_is_counted_once() {
    // Dify pages apps by offset, newest first: an app created between the two pages pushes the
    // last app of page 1 onto page 2, where it comes a second time.
    let ids: Vec<String> = (0..101)
        .map(|i| format!("a0000000-0000-4000-8000-{i:012}"))
        .collect();
    let listed = |range: std::ops::Range<usize>| -> Vec<Value> {
        ids[range].iter().map(|id| app(id, "completion")).collect()
    };
    let dify = MockServer::start().await;
    for (page, data, total) in [(1, listed(0..100), 101), (2, listed(99..101), 102)] {
        mount(
            &dify,
            Mock::given(method("GET"))
                .and(path(APPS_PATH))
                .and(wiremock::matchers::query_param("page", page.to_string()))
                .respond_with(ok(json!({"page": page, "limit": 100, "total": total,
                    "has_more": page == 1, "data": data})))
                .expect(1),
        )
        .await;
    }
    mount(&dify, Mock::given(method("GET")).and(path_regex("/statistics/token-costs$"))
        .respond_with(ok(json!({"data": [{"date": DAY, "token_count": 10, "total_price": "0.0010000", "currency": "USD"}]})))
        .expect(101)).await;
    mount(
        &dify,
        Mock::given(method("GET"))
            .and(path_regex("/statistics/daily-messages$"))
            .respond_with(ok(json!({"data": [{"date": DAY, "message_count": 1}]})))
            .expect(101),
    )
    .await;
    serve_apps(&dify, &[]).await;
    let finished = dry_run(&dify);
    finished.code(0);
    let records: Vec<(String, u64, u64)> = finished
        .stdout_lines()
        .iter()
        .map(|r| {
            (
                r["metadata"]["source_app_id"].as_str().unwrap().to_owned(),
                r["total_tokens"].as_u64().unwrap(),
                r["request_count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, u64)> = ids.iter().map(|id| (id.clone(), 10, 1)).collect();
    assert_eq!(records, expected);
    let listed = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["message"] == "apps listed")
        .unwrap();
    assert_eq!(listed["context"]["apps"], 101);
}

#[tokio::test]
async fn a_negative_price_or_a_malformed_currency_fails_naming_the_field() {
    let node = |usage: Value| json!({"data": [{"node_type": "llm", "process_data": {"model_provider": "openai", "model_name": "gpt-4o", "usage": usage}}]});
    let cases = [
        (
            app(APP, "completion"),
            Mock::given(path_regex("/statistics/token-costs$")).respond_with(ok(json!({"data": [
                {"date": DAY, "token_count": 10, "total_price": "-0.1", "currency": "USD"}]}))),
            "GET /console/api/apps/{id}/statistics/token-costs answered with a body that is not the expected JSON",
            ("a non-negative decimal price", "at `data[0].total_price`"),
        ),
        (
            app(APP, "workflow"),
            Mock::given(path_regex("/node-executions$")).respond_with(ok(node(json!(
                {"prompt_tokens": 1, "completion_tokens": 1, "total_price": "0.1", "currency": "usd$"})))),
            "GET /console/api/apps/{id}/workflow-runs/{id}/node-executions answered with a body that is not the expected JSON",
            ("string \"usd$\", expected a currency of three ASCII letters", "at `data[0].process_data.usage.currency`"),
        ),
        (
            app(APP, "chat"),
            Mock::given(path_regex("/chat-messages$")).respond_with(ok(json!({"limit": 100, "has_more": false, "data": [
                {"id": "m1", "created_at": IN_WINDOW, "message_tokens": 1, "answer_tokens": 1, "from_end_user_id": "e1",
                 "metadata": {"usage": {"total_price": -0.5, "currency": "USD"}}}]}))),
            "GET /console/api/apps/{id}/chat-messages answered with a body that is not the expected JSON",
            ("a non-negative decimal price", "at `data[0].metadata.usage.total_price`"),
        ),
    ];
    for (listed, broken, endpoint, (reason, field)) in cases {
        let dify = MockServer::start().await;
        mount(&dify, broken).await;
        let log = json!({"workflow_run": {"id": "b0000000-0000-4000-8000-000000000001", "created_at": IN_WINDOW},
                         "created_by_end_user": {"session_id": "s"}});
        mount(
            &dify,
            Mock::given(path_regex("/workflow-app-logs$")).respond_with(ok(only_page(&[log]))),
        )
        .await;
        serve_one_conversation(&dify).await;
        serve_apps(&dify, &[listed]).await;
        let failure = failure_before_any_record(&dify, endpoint);
        assert!(failure.starts_with(endpoint), "{failure}");
        assert!(failure.contains(reason), "{reason}: {failure}");
        assert!(failure.contains(field), "{field}: {failure}");
    }
}

/// A conversation list whose top never settles: every request shows one more conversation, newer
/// than all before it.
struct EverMoving(std::sync::atomic::AtomicI64);

impl wiremock::Respond for EverMoving {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ok(only_page(&[conversation(
            &format!("c0000000-0000-4000-8000-{n:012}"),
            IN_WINDOW + n,
        )]))
    }
}

#[tokio::test]
async fn a_conversation_list_that_never_settles_fails_after_ten_rereads() {
    let dify = MockServer::start().await;
    mount(
        &dify,
        Mock::given(path_regex("/chat-conversations$")).respond_with(EverMoving(0.into())),
    )
    .await;
    mount(
        &dify,
        Mock::given(path_regex("/chat-messages$"))
            .respond_with(ok(json!({"limit": 100, "has_more": false, "data": []}))),
    )
    .await;
    serve_apps(&dify, &[app(APP, "chat")]).await;
    let failure = failure_before_any_record(&dify, "ever-moving conversations");
    assert!(
        failure.starts_with(&format!("GET /console/api/apps/{{id}}/chat-conversations: conversations of app {APP} kept moving to the top of the list through 10 re-reads")),
        "{failure}"
    );
    // The first pass and ten re-reads, one page each.
    assert_eq!(requests_to(&dify, "/chat-conversations").await, 11);
}
