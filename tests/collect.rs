//! `exporter run --dry-run` against the Dify simulator: the records must equal the simulator's truth
//! exactly (record set, tokens, cost to the last decimal) for every way of authenticating, with
//! faults, with tokens expiring mid-run, and the limits on requests must hold.

use std::time::Duration;

use chrono::NaiveDate;
use dify_sim::{AuthMode, DifySim, Faults, SimConfig};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{EXTERNAL_TOKEN, Exporter, Finished, Row, truth_row};

const FIRST: &str = "2026-11-01";
const LAST: &str = "2026-11-03";

fn sim(auth: AuthMode, tweak: impl FnOnce(&mut SimConfig)) -> DifySim {
    let mut config = SimConfig {
        seed: 7,
        auth,
        first_day: FIRST.parse().unwrap(),
        days: 3,
        apps_per_mode: 1,
        runs_per_app_per_day: 4,
        ..SimConfig::default()
    };
    tweak(&mut config);
    DifySim::start(config).unwrap()
}

/// An exporter pointed at `sim`, authenticating the way `auth` says.
fn exporter(sim: &DifySim, auth: &str) -> Exporter {
    let credentials = sim.credentials();
    let exporter = Exporter::new()
        .env("DIFY_API_URL", &sim.base_url())
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN);
    match auth {
        "login" => exporter
            .env("DIFY_EMAIL", &credentials.email)
            .env("DIFY_PASSWORD", &credentials.password),
        "admin-key" => exporter
            .env("DIFY_API_TOKEN", &credentials.admin_api_key)
            .env("DIFY_WORKSPACE_ID", &credentials.workspace_id),
        "console-token" => exporter.env("DIFY_API_TOKEN", &credentials.console_token),
        other => panic!("unknown auth {other}"),
    }
}

fn dry_run(exporter: Exporter) -> Finished {
    exporter
        .args(["run", "--dry-run", "--from", FIRST, "--to", LAST])
        .run()
}

fn truth(sim: &DifySim) -> Vec<Row> {
    let first: NaiveDate = FIRST.parse().unwrap();
    let last: NaiveDate = LAST.parse().unwrap();
    let mut rows: Vec<Row> = sim.truth(first, last).into_iter().map(truth_row).collect();
    rows.sort();
    rows
}

/// The records a dry run printed, parsed and sorted.
#[track_caller]
pub(crate) fn records(finished: &Finished) -> Vec<Row> {
    let mut rows: Vec<Row> = finished.stdout.lines().map(record_row).collect();
    rows.sort();
    rows
}

fn record_row(line: &str) -> Row {
    let r: Value = serde_json::from_str(line).unwrap();
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    let number = |v: &Value| v.as_u64().unwrap();
    let m = &r["metadata"];
    assert_eq!(
        number(&r["total_tokens"]),
        number(&r["input_tokens"]) + number(&r["output_tokens"]),
        "{r}"
    );
    assert_eq!(m["source_system"], "dify");
    assert_eq!(m["aggregation_method"], "daily_sum");
    assert!(
        m["source_event_id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("dify-{}-", text(&r["usage_date"])))
    );
    Row {
        day: text(&r["usage_date"]),
        app_id: text(&m["source_app_id"]),
        app_name: text(&m["source_app_name"]),
        user: text(&m["user"]),
        provider: text(&r["provider"]),
        model: text(&r["model"]),
        currency: text(&r["currency"]),
        tokens: (
            number(&r["input_tokens"]),
            number(&r["output_tokens"]),
            number(&r["total_tokens"]),
        ),
        request_count: number(&r["request_count"]),
        cost: cost_of(line),
        token_split: text(&m["token_split"]),
    }
}

/// The cost exactly as written in the output line: the JSON number's own text, never an f64.
fn cost_of(line: &str) -> Decimal {
    let start = line.find("\"cost_actual\":").unwrap() + "\"cost_actual\":".len();
    let text: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse()
        .unwrap_or_else(|e| panic!("cost {text:?}: {e}"))
}

#[track_caller]
fn assert_exact(sim: &DifySim, finished: &Finished) {
    finished.code(0);
    let expected = truth(sim);
    assert!(
        expected.len() > 20,
        "the workspace is too small to prove anything: {}",
        expected.len()
    );
    let got = records(finished);
    assert_eq!(got.len(), expected.len(), "record count");
    for (got, expected) in got.iter().zip(&expected) {
        assert_eq!(got, expected);
    }
    // Every mode the workspace has contributes, and every run- or message-based one per user: end
    // users' records carry their session id, not "".
    let modes = &sim.config().modes;
    for (mode, label, per_user) in [
        ("workflow", "Workflow", true),
        ("advanced-chat", "Chatflow", true),
        ("chat", "Chatbot", true),
        ("agent-chat", "Agent chat", true),
        ("completion", "Text generator", false),
    ] {
        if modes.iter().any(|m| m == mode) {
            assert!(
                expected
                    .iter()
                    .any(|r| r.app_name.starts_with(label) && (!per_user || !r.user.is_empty())),
                "no {mode} record{}",
                if per_user { " with a user" } else { "" }
            );
        }
    }
    // Apps of a mode this version does not know are counted, not silently dropped.
    let unknown = modes.iter().filter(|m| m.as_str() == "agent").count();
    let summary = finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["message"] == "run finished")
        .unwrap();
    assert_eq!(
        summary["context"]["apps_skipped"],
        unknown * sim.config().apps_per_mode as usize
    );
    let stats = sim.stats();
    assert_eq!(stats.limit_over_100, 0);
    assert!(stats.max_limit_seen.unwrap_or(0) <= 100);
    // Reading never marks a conversation read, and never needs a run's detail.
    assert_eq!(stats.conversation_detail_requests, 0);
    assert_eq!(stats.run_detail_requests, 0);
}

#[test]
fn login_on_dify_1_9_1_is_exact() {
    let sim = sim(AuthMode::V1_9_1, |_| {});
    assert_exact(&sim, &dry_run(exporter(&sim, "login")));
}

#[test]
fn login_on_dify_1_9_2_with_cookies_and_csrf_is_exact() {
    let sim = sim(AuthMode::V1_9_2, |_| {});
    // Three one-day chunks share the run's one client: one login serves them all.
    assert_exact(
        &sim,
        &dry_run(exporter(&sim, "login").env("COLLECT_CHUNK_DAYS", "1")),
    );
    let logins: Vec<u16> = sim
        .stats()
        .login_attempts
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(logins, [200]);
}

#[test]
fn login_with_host_prefixed_cookies_over_plain_http_is_exact() {
    let sim = sim(AuthMode::V1_9_2, |c| c.host_prefixed_cookies = true);
    assert_exact(&sim, &dry_run(exporter(&sim, "login")));
}

#[test]
fn login_on_dify_1_11_2_learns_base64_without_spending_an_attempt() {
    let sim = sim(AuthMode::V1_11_2, |_| {});
    let finished = dry_run(exporter(&sim, "login"));
    assert_exact(&sim, &finished);
    let attempts = sim.stats().login_attempts;
    // The simulator's password is not base64 text, so plain goes first, is refused as "Invalid
    // encrypted data" (no attempt counted), and base64 follows.
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [401, 200]
    );
    assert_ne!(attempts[0].password, attempts[1].password);
}

#[test]
fn dify_answers_are_read_before_secrets_are_masked_in_them() {
    // A meter token that is a word of Dify's "Invalid encrypted data": an answer masked before it
    // is read would hide the cue to send the password base64-encoded, and the login would fail.
    let sim = sim(AuthMode::V1_11_2, |_| {});
    let finished = dry_run(exporter(&sim, "login").env("EXTERNAL_API_TOKEN", "encrypted"));
    assert_exact(&sim, &finished);
    let attempts = sim.stats().login_attempts;
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [401, 200]
    );
}

#[test]
fn an_admin_key_is_exact() {
    let sim = sim(AuthMode::AdminKey, |_| {});
    assert_exact(&sim, &dry_run(exporter(&sim, "admin-key")));
}

#[test]
fn a_console_token_on_dify_1_9_1_is_exact() {
    let sim = sim(AuthMode::V1_9_1, |_| {});
    assert_exact(&sim, &dry_run(exporter(&sim, "console-token")));
}

#[test]
fn transient_failures_on_30_percent_of_requests_change_nothing() {
    let sim = sim(AuthMode::V1_9_2, |c| {
        c.faults = Faults {
            error_share: 0.3,
            retry_after_secs: 0,
            ..Faults::default()
        };
    });
    let finished = dry_run(exporter(&sim, "login").env("MAX_RETRY", "10"));
    assert_exact(&sim, &finished);
    let stats = sim.stats();
    assert!(
        stats.faults_injected >= 10,
        "only {} faults",
        stats.faults_injected
    );
    assert!(
        stats.faults_by_status.contains_key(&429),
        "{:?}",
        stats.faults_by_status
    );
}

#[test]
fn tokens_expiring_mid_run_are_renewed() {
    for auth in [AuthMode::V1_9_1, AuthMode::V1_9_2] {
        let sim = sim(auth, |c| c.faults.expire_token_after_requests = Some(15));
        let finished = dry_run(exporter(&sim, "login"));
        assert_exact(&sim, &finished);
        assert!(
            sim.stats().refreshes >= 2,
            "{auth}: {} refreshes",
            sim.stats().refreshes
        );
    }
}

#[test]
fn a_permanent_401_fails_naming_the_variable_and_prints_no_record() {
    // A bare console token on Dify 1.9.2+ lacks the CSRF token: every console call is refused.
    let sim = sim(AuthMode::V1_9_2, |_| {});
    let finished = dry_run(exporter(&sim, "console-token"));
    finished.code(1);
    assert!(
        finished.stdout.is_empty(),
        "records printed: {}",
        finished.stdout
    );
    let error = finished.failure();
    assert!(
        error.contains("set DIFY_EMAIL and DIFY_PASSWORD instead of DIFY_API_TOKEN"),
        "{error}"
    );
}

#[test]
fn a_wrong_password_is_never_sent_twice() {
    // Not base64 text: plain first ("Invalid encrypted data", free), then base64, refused; stop.
    let sim = sim(AuthMode::V1_11_2, |_| {});
    let finished = dry_run(exporter(&sim, "login").env("DIFY_PASSWORD", "wrong password!"));
    finished.code(1);
    let attempts = sim.stats().login_attempts;
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [401, 401]
    );
    assert_ne!(attempts[0].password, attempts[1].password);
    let error = finished.failure();
    assert!(
        error.contains("check DIFY_EMAIL and DIFY_PASSWORD"),
        "{error}"
    );

    // On a Dify before 1.11.2 a wrong password costs one attempt, once.
    let sim = self::sim(AuthMode::V1_9_2, |_| {});
    dry_run(exporter(&sim, "login").env("DIFY_PASSWORD", "Password1234")).code(1);
    let passwords: Vec<String> = sim
        .stats()
        .login_attempts
        .into_iter()
        .map(|a| a.password)
        .collect();
    assert_eq!(passwords, ["Password1234"]);

    // A password that is itself base64 of UTF-8 text cannot be probed for free: base64 goes first,
    // then plain, each sent once.
    let sim = self::sim(AuthMode::V1_9_2, |_| {});
    dry_run(exporter(&sim, "login").env("DIFY_PASSWORD", "c2VjcmV0MTIz")).code(1);
    let passwords: Vec<String> = sim
        .stats()
        .login_attempts
        .into_iter()
        .map(|a| a.password)
        .collect();
    assert_eq!(passwords, ["YzJWamNtVjBNVEl6", "c2VjcmV0MTIz"]);
}

#[test]
fn requests_in_flight_never_exceed_dify_concurrency() {
    let sim = sim(AuthMode::AdminKey, |c| {
        c.faults.delay = Duration::from_millis(20);
    });
    let finished = dry_run(exporter(&sim, "admin-key").env("DIFY_CONCURRENCY", "3"));
    assert_exact(&sim, &finished);
    assert_eq!(sim.stats().max_in_flight, 3);
}

#[test]
fn a_long_conversation_is_paged_back_only_to_the_window() {
    // 250 messages of one end user spread over the three days: the window's last two days need
    // the newest page and the one before it (first_id = its oldest message); that page starts on
    // the first day, so the reading stops there, and only in-window messages count.
    let sim = sim(AuthMode::AdminKey, |c| {
        c.modes = vec!["chat".to_owned()];
        c.long_conversation_messages = 250;
    });
    let second: NaiveDate = FIRST.parse::<NaiveDate>().unwrap().succ_opt().unwrap();
    let finished = exporter(&sim, "admin-key")
        .args([
            "run",
            "--dry-run",
            "--from",
            &second.to_string(),
            "--to",
            LAST,
        ])
        .run();
    finished.code(0);
    let mut expected: Vec<Row> = sim
        .truth(second, LAST.parse().unwrap())
        .into_iter()
        .map(truth_row)
        .collect();
    expected.sort();
    assert_eq!(records(&finished), expected);
    // The long conversation's user has more messages in the window than one page holds.
    let messages = |user: &str| -> u64 {
        expected
            .iter()
            .filter(|r| r.user == user)
            .map(|r| r.request_count)
            .sum()
    };
    let busiest = expected
        .iter()
        .map(|r| r.user.as_str())
        .filter(|u| !u.is_empty())
        .max_by_key(|u| messages(u))
        .unwrap();
    assert!(messages(busiest) > 100, "{busiest}: {}", messages(busiest));
    assert_eq!(sim.stats().conversation_detail_requests, 0);
}

#[test]
fn a_conversation_that_moves_to_page_1_while_listing_counts_once() {
    // 200 conversations per app, 160 listed (deleted ones are not): two pages. When page 1 is first
    // served, the last conversation of page 2 gets a message "now" and jumps to the top, shifting
    // page 2 by one: without the re-read its messages in the window would be missed.
    let sim = sim(AuthMode::AdminKey, |c| {
        c.modes = vec!["chat".to_owned(), "agent-chat".to_owned()];
        c.runs_per_app_per_day = 200;
        c.messages_per_conversation = 3;
        c.faults.bump_conversation_while_listing = true;
    });
    let finished = dry_run(exporter(&sim, "admin-key"));
    assert_exact(&sim, &finished);
    let stats = sim.stats();
    // Two pages per app, then the top is read again: once to find the moved conversation, once
    // more to see that nothing else moved.
    assert_eq!(stats.chat_conversations_requests, 2 * (2 + 2));
}

#[test]
fn the_default_window_is_the_last_fetch_days_before_today() {
    // The simulator's default workspace is the three days ending yesterday.
    let sim = DifySim::start(SimConfig {
        seed: 11,
        apps_per_mode: 1,
        auth: AuthMode::AdminKey,
        ..SimConfig::default()
    })
    .unwrap();
    let finished = exporter(&sim, "admin-key")
        .env("DIFY_FETCH_DAYS", "2")
        .args(["run", "--dry-run"])
        .run();
    finished.code(0);
    let today = chrono::Utc::now().date_naive();
    let first = today - chrono::Days::new(2);
    let mut expected: Vec<Row> = sim
        .truth(first, today - chrono::Days::new(1))
        .into_iter()
        .map(truth_row)
        .collect();
    expected.sort();
    assert_eq!(records(&finished), expected);
}

/// A fake Dify with one workflow app and one run whose node executions answer `nodes`.
async fn one_run_dify(nodes: wiremock::ResponseTemplate) -> wiremock::MockServer {
    use serde_json::json;
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let dify = MockServer::start().await;
    let app =
        json!({"id": "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47", "name": "Flow", "mode": "workflow"});
    Mock::given(method("GET"))
        .and(path("/console/api/apps"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"page":1,"limit":100,"total":1,"has_more":false,"data":[app]}),
            ),
        )
        .mount(&dify)
        .await;
    // 2026-11-02T10:00:00Z
    let log = json!({"workflow_run": {"id": "1d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47", "created_at": 1_793_613_600}, "created_by_end_user": {"session_id": "s"}});
    Mock::given(method("GET"))
        .and(path_regex("/workflow-app-logs$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"page":1,"limit":100,"total":1,"has_more":false,"data":[log]}),
            ),
        )
        .mount(&dify)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("/node-executions$"))
        .respond_with(nodes)
        .mount(&dify)
        .await;
    dify
}

#[tokio::test]
async fn malformed_answers_fail_clearly_naming_the_endpoint() {
    use wiremock::ResponseTemplate;

    let llm = |usage: &str| {
        format!(
            r#"{{"data":[{{"node_type":"llm","process_data":{{"model_provider":"openai","model_name":"gpt-4o","usage":{usage}}}}}]}}"#
        )
    };
    let cases = [
        (
            ResponseTemplate::new(200).set_body_raw("oops, not json", "text/plain"),
            "expected value",
        ),
        (
            ResponseTemplate::new(200).set_body_raw(r#"{"nodes":[]}"#, "application/json"),
            "missing field `data`",
        ),
        (
            ResponseTemplate::new(200).set_body_raw(
                llm(r#"{"prompt_tokens":-5,"completion_tokens":1,"total_price":"0"}"#),
                "application/json",
            ),
            "a non-negative whole number",
        ),
        (
            ResponseTemplate::new(200).set_body_raw(
                llm(r#"{"prompt_tokens":5,"total_price":"0"}"#),
                "application/json",
            ),
            "missing field `completion_tokens`",
        ),
        (
            ResponseTemplate::new(200)
                .set_body_raw("<html><form>Sign in</form></html>", "text/html"),
            "an HTML page",
        ),
    ];
    for (answer, reason) in cases {
        let dify = one_run_dify(answer).await;
        let finished = Exporter::configured(&dify.uri())
            .args(["run", "--dry-run", "--from", FIRST, "--to", LAST])
            .run();
        finished.code(1);
        assert!(
            finished.stdout.is_empty(),
            "records printed: {}",
            finished.stdout
        );
        let error = finished.failure();
        assert!(
            error.starts_with("GET /console/api/apps/{id}/workflow-runs/{id}/node-executions answered with a body that is not the expected JSON"),
            "{error}"
        );
        assert!(error.contains(reason), "{reason}: {error}");
    }
}

#[tokio::test]
async fn a_chat_app_listed_without_its_model_is_looked_up() {
    use serde_json::json;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let dify = MockServer::start().await;
    let id = "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47";
    let listed = json!({"id": id, "name": "Helpdesk", "mode": "chat", "model_config": null});
    let detail = json!({"id": id, "name": "Helpdesk", "mode": "chat",
        "model_config": {"model": {"provider": "langgenius/anthropic/anthropic", "name": "claude-x"}}});
    let answer = |body: serde_json::Value| ResponseTemplate::new(200).set_body_json(body);
    let mocks = [
        Mock::given(method("GET")).and(path("/console/api/apps")).respond_with(answer(
            json!({"page":1,"limit":100,"total":1,"has_more":false,"data":[listed]}),
        )),
        Mock::given(method("GET")).and(path(format!("/console/api/apps/{id}"))).respond_with(answer(detail)),
        Mock::given(method("GET"))
            .and(path("/console/api/account/profile"))
            .respond_with(answer(json!({"timezone": "Asia/Kolkata"}))),
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{id}/chat-conversations")))
            .respond_with(answer(json!({"page":1,"limit":100,"total":0,"has_more":false,"data":[]}))),
        // 2026-11-02 UTC is 05:30 to 05:30 the next day in Kolkata.
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{id}/statistics/token-costs")))
            .and(query_param("start", "2026-11-02 05:30"))
            .and(query_param("end", "2026-11-03 05:30"))
            .respond_with(answer(json!({"data": [
                {"date": "2026-11-02", "token_count": 1000, "total_price": "0.0100000", "currency": "USD"},
                {"date": "2026-11-03", "token_count": "234", "total_price": "0.0023400", "currency": "USD"}]}))),
        Mock::given(method("GET"))
            .and(path(format!("/console/api/apps/{id}/statistics/daily-messages")))
            .and(query_param("start", "2026-11-02 05:30"))
            .respond_with(answer(json!({"data": [{"date": "2026-11-02", "message_count": 3}, {"date": "2026-11-03", "message_count": 2}]}))),
    ];
    for mock in mocks {
        mock.expect(1).mount(&dify).await;
    }
    let finished = Exporter::configured(&dify.uri())
        .args([
            "run",
            "--dry-run",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
        ])
        .run();
    finished.code(0);
    let records = finished.stdout_lines();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r["provider"].as_str(), r["model"].as_str()),
        (Some("anthropic"), Some("claude-x"))
    );
    assert_eq!(
        (
            r["input_tokens"].as_u64(),
            r["output_tokens"].as_u64(),
            r["total_tokens"].as_u64()
        ),
        (Some(1234), Some(0), Some(1234))
    );
    assert_eq!(r["request_count"], 5);
    assert_eq!(
        cost_of(&finished.stdout),
        "0.01234".parse::<Decimal>().unwrap()
    );
    assert_eq!(
        (
            r["metadata"]["user"].as_str(),
            r["metadata"]["token_split"].as_str()
        ),
        (Some(""), Some("total_only"))
    );
}
