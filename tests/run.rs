//! `exporter run` against a fake Dify on 127.0.0.1: the log schema, exact app counts, credentials,
//! retries, and the errors a new user meets first.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{APPS_PATH, DIFY_TOKEN, Exporter, apps, serve_apps, serve_no_usage};

const WORKSPACE: &str = "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47";

/// 137 apps over two pages, cycling through the five modes, plus one of a mode this version does
/// not know: 28 workflow, 28 advanced-chat, 27 chat, 27 agent-chat, 27 completion, 1 other.
fn workspace_apps() -> Vec<Value> {
    let mut all = apps(137);
    all.push(json!({"id": "rag-1", "name": "Pipeline", "mode": "rag-pipeline"}));
    all
}

#[track_caller]
fn assert_line_schema(line: &Value) {
    let object = line.as_object().unwrap();
    let keys: HashSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from(["timestamp", "level", "message", "context"]),
        "{line}"
    );
    let timestamp = line["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok()
            && timestamp.len() == 24
            && timestamp.ends_with('Z'),
        "timestamp {timestamp}"
    );
    assert!(
        ["error", "warn", "info", "debug"].contains(&line["level"].as_str().unwrap()),
        "{line}"
    );
    assert!(!line["message"].as_str().unwrap().is_empty());
    assert!(line["context"]["module"].is_string(), "{line}");
}

#[tokio::test]
async fn a_valid_run_lists_every_app_and_logs_by_the_schema() {
    let dify = MockServer::start().await;
    serve_apps(&dify, &workspace_apps()).await;

    let finished = Exporter::configured(&dify.uri())
        .env("LOG_LEVEL", "debug")
        .args(["run"])
        .run();
    finished.code(0);
    assert!(
        finished.stderr.is_empty(),
        "run logs to stdout only: {}",
        finished.stderr
    );

    let lines = finished.stdout_lines();
    for line in &lines {
        assert_line_schema(line);
    }
    let run_ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["context"]["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(run_ids.len(), 1, "one run id on every line");

    let start = finished.log("run starting");
    assert_eq!(start["context"]["config"]["DIFY_API_TOKEN"], "***");
    assert_eq!(start["context"]["config"]["EXTERNAL_API_TOKEN"], "***");
    assert_eq!(start["context"]["config"]["DIFY_API_URL"], dify.uri());
    assert!(
        start["context"]["next_fire_time"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z")
    );

    let listed = &finished.log("apps listed")["context"];
    assert_eq!(
        (
            listed["apps"].clone(),
            listed["workflow"].clone(),
            listed["advanced_chat"].clone(),
            listed["chat"].clone()
        ),
        (json!(138), json!(28), json!(28), json!(27))
    );
    assert_eq!(
        (
            listed["agent_chat"].clone(),
            listed["completion"].clone(),
            listed["other"].clone()
        ),
        (json!(27), json!(27), json!(1))
    );

    let summary = &finished.log("run finished")["context"];
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["apps"], 138);
    // 2 pages of apps, the account timezone, one archived-log page (404 here: a Dify before 1.12)
    // and one log page per workflow app, one run page per advanced-chat app, one conversation page
    // per chat and agent-chat app, and token costs plus daily messages for each chat-type app's one day.
    assert_eq!(summary["dify_requests"], 2 + 1 + 28 * 2 + 28 + 54 + 81 * 2);
    // The app of an unknown mode is counted and named, never silently dropped.
    assert_eq!(summary["apps_skipped"], 1);
    let skipped = finished.log("app not collected: this version does not know its mode");
    assert_eq!(skipped["level"], "warn");
    assert_eq!(
        (
            &skipped["context"]["app_id"],
            &skipped["context"]["app_name"],
            &skipped["context"]["mode"]
        ),
        (&json!("rag-1"), &json!("Pipeline"), &json!("rag-pipeline"))
    );
    assert_eq!(summary["retries"], 0);
    assert_eq!(summary["exit_code"], 0);

    let requests = dify.received_requests().await.unwrap();
    assert_eq!(requests.len(), 303);
    for request in requests {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {DIFY_TOKEN}").as_str()
        );
        assert!(!request.headers.contains_key("x-workspace-id"));
        assert!(
            request.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("dify-usage-exporter/")
        );
    }
}

#[tokio::test]
async fn an_admin_key_is_sent_with_the_workspace_header() {
    let dify = MockServer::start().await;
    serve_no_usage(&dify).await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .and(header(
            "authorization",
            format!("Bearer {DIFY_TOKEN}").as_str(),
        ))
        .and(header("x-workspace-id", WORKSPACE))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"page":1,"limit":100,"total":2,"has_more":false,"data":apps(2)}),
            ),
        )
        .expect(1)
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri())
        .env("DIFY_WORKSPACE_ID", WORKSPACE)
        .args(["run"])
        .run();
    finished.code(0);
    assert_eq!(finished.log("apps listed")["context"]["apps"], 2);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&dify)
        .await;
    serve_apps(&dify, &apps(3)).await;

    let finished = Exporter::configured(&dify.uri()).args(["run"]).run();
    finished.code(0);
    let retries: Vec<Value> = finished
        .stdout_lines()
        .into_iter()
        .filter(|l| l["message"] == "retrying request")
        .collect();
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["level"], "warn");
    assert_eq!(retries[0]["context"]["endpoint"], "GET /console/api/apps");
    assert_eq!(retries[1]["context"]["attempt"], 2);
    assert!(
        retries[0]["context"]["error"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    let summary = &finished.log("run finished")["context"];
    // Three attempts at the apps, then the usage of a workflow (archived logs, app logs), an
    // advanced-chat and a chat app (timezone, conversations, token costs, daily messages).
    assert_eq!(
        (summary["dify_requests"].clone(), summary["retries"].clone()),
        (json!(3 + 7), json!(2))
    );
    assert_eq!(finished.log("apps listed")["context"]["apps"], 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&dify)
        .await;
    serve_apps(&dify, &apps(1)).await;

    let started = Instant::now();
    let finished = Exporter::configured(&dify.uri()).args(["run"]).run();
    finished.code(0);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        finished.log("retrying request")["context"]["delay_ms"],
        1000
    );
}

#[tokio::test]
async fn retries_stop_at_max_retry() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(502))
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri())
        .env("MAX_RETRY", "1")
        .args(["run"])
        .run();
    finished.code(1);
    assert_eq!(dify.received_requests().await.unwrap().len(), 2);
    let error = finished.failure();
    assert!(
        error.contains("GET /console/api/apps answered 502 Bad Gateway"),
        "{error}"
    );
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_names_the_variable() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"code":"unauthorized","message":"Invalid Authorization token.","status":401}),
        ))
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri()).args(["run"]).run();
    finished.code(1);
    assert_eq!(
        dify.received_requests().await.unwrap().len(),
        1,
        "a 401 is not retried"
    );
    let line = finished.log("run failed");
    assert_eq!(line["level"], "error");
    assert_eq!(
        line["context"]["error"],
        "check DIFY_API_TOKEN (and DIFY_WORKSPACE_ID when it is an admin API key): \
         GET /console/api/apps answered 401 Unauthorized: Invalid Authorization token."
    );
    assert_eq!(finished.log("run finished")["context"]["outcome"], "failed");
}

#[tokio::test]
async fn a_csrf_rejection_explains_what_newer_dify_needs() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"code":"unauthorized","message":"CSRF token is missing or invalid.","status":401}),
        ))
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri()).args(["run"]).run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.starts_with("Dify >= 1.9.2 requires a CSRF token"),
        "{error}"
    );
    assert!(
        error.contains("set DIFY_EMAIL and DIFY_PASSWORD"),
        "{error}"
    );
    assert!(error.contains("DIFY_WORKSPACE_ID"), "{error}");
}

#[tokio::test]
async fn an_html_page_instead_of_json_is_a_clear_error() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><body>Sign in</body></html>",
            "text/html",
        ))
        .mount(&dify)
        .await;
    let finished = Exporter::configured(&dify.uri()).args(["run"]).run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.starts_with(
            "GET /console/api/apps answered with a body that is not the expected JSON"
        ),
        "{error}"
    );
    assert!(
        error.contains("an HTML page: is DIFY_API_URL the Dify API's base URL"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_dify_names_the_url_variable() {
    // Port 9 (discard) on loopback: nothing listens there.
    let finished = Exporter::configured("http://127.0.0.1:9")
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    finished.code(1);
    let error = finished.failure();
    assert!(error.starts_with("check DIFY_API_URL and that Dify is reachable: GET /console/api/apps could not be reached"), "{error}");
}

#[tokio::test]
async fn log_level_drops_lines_below_it() {
    let dify = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(APPS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&dify)
        .await;
    serve_apps(&dify, &apps(1)).await;

    let finished = Exporter::configured(&dify.uri())
        .env("LOG_LEVEL", "warn")
        .args(["run"])
        .run();
    finished.code(0);
    let messages: Vec<Value> = finished
        .stdout_lines()
        .into_iter()
        .map(|l| l["message"].clone())
        .collect();
    assert_eq!(messages, [json!("retrying request")]);
}
