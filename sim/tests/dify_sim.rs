//! Drives the real simulator over HTTP: the auth variants, validation and pagination rules, faults, and an
//! independent walk of the served API that must add up to exactly `truth()`.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{Days, NaiveDate, TimeZone as _};
use dify_sim::{AuthMode, DifySim, Faults, SimConfig, TokenSplit, TruthRecord};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const DAY0: NaiveDate = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();

fn config(auth: AuthMode) -> SimConfig {
    SimConfig {
        seed: 7,
        auth,
        first_day: DAY0,
        days: 3,
        apps_per_mode: 1,
        runs_per_app_per_day: 4,
        ..SimConfig::default()
    }
}

/// `config` with 10 runs a day: a chat app has 15 conversations of 2 messages (3 of them deleted), so pages
/// of 5 cover them in three.
fn fifteen_short_conversations() -> SimConfig {
    SimConfig {
        runs_per_app_per_day: 10,
        messages_per_conversation: 2,
        ..config(AuthMode::V1_9_1)
    }
}

fn start(config: SimConfig) -> DifySim {
    DifySim::start(config).expect("simulator starts")
}

fn api(sim: &DifySim, path: &str) -> String {
    format!("{}/console/api{path}", sim.base_url())
}

/// Set-Cookie headers as name -> whole header line.
fn set_cookies(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| {
            line.split_once('=')
                .map(|(name, _)| (name.to_owned(), line.to_owned()))
        })
        .collect()
}

fn cookie_value(line: &str) -> String {
    line.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

async fn login(sim: &DifySim, password: &str) -> reqwest::Response {
    let body =
        json!({"email": sim.credentials().email, "password": password, "remember_me": false});
    reqwest::Client::new()
        .post(api(sim, "/login"))
        .json(&body)
        .send()
        .await
        .expect("login answers")
}

async fn body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET with a raw Cookie header and optional CSRF header and bearer.
async fn get_with(
    sim: &DifySim,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(api(sim, path));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("X-CSRF-Token", csrf);
    }
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    body(request.send().await.expect("answers")).await
}

#[tokio::test]
async fn v1_9_1_tokens_in_body_and_bearer_without_csrf() {
    let sim = start(config(AuthMode::V1_9_1));
    let (status, value) = body(login(&sim, &sim.credentials().password.clone()).await).await;
    assert_eq!(status, 200);
    assert_eq!(value["result"], "success");
    let token = value["data"]["access_token"]
        .as_str()
        .expect("access token in body")
        .to_owned();
    assert!(value["data"]["refresh_token"].is_string());
    let (status, profile) = get_with(&sim, "/account/profile", None, None, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(profile["timezone"], "Asia/Tokyo");
    let (status, _) = get_with(
        &sim,
        "/apps",
        None,
        None,
        Some(&sim.credentials().console_token.clone()),
    )
    .await;
    assert_eq!(status, 200, "the pre-issued token works as Bearer on 1.9.1");
    let (status, error) = get_with(&sim, "/apps", None, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        error,
        json!({"code": "unauthorized", "message": "Invalid Authorization token.", "status": 401})
    );
    let (status, error) = body(login(&sim, "wrong").await).await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (401, Some("authentication_failed"))
    );
}

#[tokio::test]
async fn v1_9_2_cookies_and_csrf_on_every_call() {
    let sim = start(config(AuthMode::V1_9_2));
    let response = login(&sim, &sim.credentials().password.clone()).await;
    let cookies = set_cookies(response.headers());
    let (status, value) = body(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        value,
        json!({"result": "success"}),
        "no tokens in the body from 1.9.2 on"
    );
    for name in ["access_token", "refresh_token", "csrf_token"] {
        assert!(cookies.contains_key(name), "cookie {name} set: {cookies:?}");
        assert!(!cookies[name].contains("Secure"));
    }
    assert!(!cookies["csrf_token"].contains("HttpOnly"));
    let access = cookie_value(&cookies["access_token"]);
    let csrf = cookie_value(&cookies["csrf_token"]);
    let jar = format!("access_token={access}; csrf_token={csrf}");
    let csrf_error = json!({"code": "unauthorized", "message": "CSRF token is missing or invalid.", "status": 401});

    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), Some(&csrf), None)
            .await
            .0,
        200
    );
    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), None, None).await,
        (StatusCode::UNAUTHORIZED, csrf_error.clone())
    );
    let only_access = format!("access_token={access}");
    assert_eq!(
        get_with(&sim, "/apps", Some(&only_access), Some(&csrf), None)
            .await
            .0,
        401,
        "CSRF cookie required"
    );
    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), Some("other"), None)
            .await
            .0,
        401,
        "header must equal cookie"
    );
    // A bare console token as Bearer: real Dify answers the CSRF 401, which the exporter must explain.
    let console = sim.credentials().console_token.clone();
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&console)).await,
        (StatusCode::UNAUTHORIZED, csrf_error)
    );
    let csrf_only = format!("csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/apps", Some(&csrf_only), Some(&csrf), Some(&console))
            .await
            .0,
        200
    );

    // Refresh reads the refresh cookie, rotates it and answers three new cookies.
    let refresh = cookie_value(&cookies["refresh_token"]);
    let client = reqwest::Client::new();
    let response = client
        .post(api(&sim, "/refresh-token"))
        .header("Cookie", format!("refresh_token={refresh}"))
        .send()
        .await
        .expect("refresh answers");
    assert_eq!(response.status(), 200);
    assert_eq!(set_cookies(response.headers()).len(), 3);
    let again = client
        .post(api(&sim, "/refresh-token"))
        .header("Cookie", format!("refresh_token={refresh}"))
        .send()
        .await
        .expect("refresh answers");
    assert_eq!(again.status(), 401, "a used refresh token is revoked");
    assert_eq!(sim.stats().refreshes, 1);
}

#[tokio::test]
async fn v1_9_2_cookie_jar_works_when_cookies_are_not_host_prefixed() {
    let sim = start(config(AuthMode::V1_9_2));
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let body_json =
        json!({"email": sim.credentials().email, "password": sim.credentials().password});
    let response = client
        .post(api(&sim, "/login"))
        .json(&body_json)
        .send()
        .await
        .expect("login");
    let csrf = cookie_value(&set_cookies(response.headers())["csrf_token"]);
    let apps = client
        .get(api(&sim, "/apps"))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .expect("apps");
    assert_eq!(apps.status(), 200);
}

#[tokio::test]
async fn host_prefixed_cookies_are_secure_and_only_their_names_count() {
    let sim = start(SimConfig {
        host_prefixed_cookies: true,
        ..config(AuthMode::V1_9_2)
    });
    let response = login(&sim, &sim.credentials().password.clone()).await;
    let cookies = set_cookies(response.headers());
    for name in [
        "__Host-access_token",
        "__Host-refresh_token",
        "__Host-csrf_token",
    ] {
        assert!(
            cookies[name].contains("Secure") && cookies[name].contains("Path=/"),
            "{name}: {cookies:?}"
        );
    }
    let access = cookie_value(&cookies["__Host-access_token"]);
    let csrf = cookie_value(&cookies["__Host-csrf_token"]);
    let prefixed = format!("__Host-access_token={access}; __Host-csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/account/profile", Some(&prefixed), Some(&csrf), None)
            .await
            .0,
        200
    );
    let plain = format!("access_token={access}; csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/account/profile", Some(&plain), Some(&csrf), None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn v1_11_2_base64_passwords_and_lockout() {
    use base64::Engine as _;
    let sim = start(config(AuthMode::V1_11_2));
    let password = sim.credentials().password.clone();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    // Not base64 at all: rejected before the password check, so it never counts toward the lockout.
    for _ in 0..8 {
        let (status, error) = body(login(&sim, &password).await).await;
        assert_eq!(status, 401);
        assert_eq!(error["code"], "authentication_failed");
        assert_eq!(error["message"], "Invalid encrypted data");
    }
    assert_eq!(login(&sim, &encoded).await.status(), 200);
    // A plain password that happens to be valid base64 of UTF-8 ("Zm9vYmFy" is "foobar"): a wrong one that counts.
    for _ in 0..6 {
        let (status, error) = body(login(&sim, "Zm9vYmFy").await).await;
        assert_eq!(
            (status.as_u16(), error["message"].as_str()),
            (401, Some("Invalid email or password."))
        );
    }
    let (status, error) = body(login(&sim, &encoded).await).await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (429, Some("email_code_login_limit"))
    );
    let attempts = sim.stats().login_attempts;
    assert_eq!(attempts.len(), 16);
    assert_eq!(
        attempts[0].password, password,
        "the password is recorded exactly as received"
    );
    assert_eq!(attempts[8].password, encoded);
    assert_eq!(attempts[8].status, 200);
}

#[tokio::test]
async fn admin_key_needs_the_workspace_header_and_skips_csrf() {
    let sim = start(config(AuthMode::AdminKey));
    let c = sim.credentials().clone();
    let client = reqwest::Client::new();
    let ok = client
        .get(api(&sim, "/apps"))
        .bearer_auth(&c.admin_api_key)
        .header("X-WORKSPACE-ID", &c.workspace_id)
        .send()
        .await
        .expect("answers");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&c.admin_api_key))
            .await
            .0,
        401
    );
    // The key means nothing where the server has not enabled it.
    let other = start(config(AuthMode::V1_11_2));
    let refused = client
        .get(api(&other, "/apps"))
        .bearer_auth(&other.credentials().admin_api_key)
        .header("X-WORKSPACE-ID", &other.credentials().workspace_id)
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn tokens_expire_after_n_requests_until_refreshed() {
    let faults = Faults {
        expire_token_after_requests: Some(3),
        ..Faults::default()
    };
    let sim = start(SimConfig {
        faults,
        ..config(AuthMode::V1_9_1)
    });
    let (_, value) = body(login(&sim, &sim.credentials().password.clone()).await).await;
    let token = value["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            get_with(&sim, "/apps", None, None, Some(&token)).await.0,
            200
        );
    }
    let (status, error) = get_with(&sim, "/apps", None, None, Some(&token)).await;
    assert_eq!(
        (status.as_u16(), error["message"].as_str()),
        (401, Some("Token has expired."))
    );
    let refresh = value["data"]["refresh_token"].clone();
    let response = reqwest::Client::new()
        .post(api(&sim, "/refresh-token"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .expect("refresh");
    let (status, value) = body(response).await;
    assert_eq!(status, 200);
    let fresh = value["data"]["access_token"]
        .as_str()
        .expect("new token")
        .to_owned();
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&fresh)).await.0,
        200
    );
}

/// A logged-in 1.9.1 client for the data tests.
struct Walker {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Walker {
    fn new(sim: &DifySim) -> Self {
        Walker {
            http: reqwest::Client::new(),
            base: api(sim, ""),
            token: sim.credentials().console_token.clone(),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("answers");
        body(response).await
    }

    async fn ok(&self, path: &str, query: &[(&str, String)]) -> Value {
        let (status, value) = self.get(path, query).await;
        assert_eq!(status, 200, "{path} {query:?}: {value}");
        value
    }

    async fn apps(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let v = self
                .ok(
                    "/apps",
                    &[("page", page.to_string()), ("limit", "3".into())],
                )
                .await;
            all.extend(v["data"].as_array().expect("data").iter().cloned());
            if v["has_more"] != true {
                assert_eq!(v["total"].as_u64(), Some(all.len() as u64));
                break;
            }
        }
        all
    }

    /// Production runs through cursor pagination, newest first.
    async fn runs(&self, app_id: &str, triggered_from: Option<&str>) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let mut query = vec![("limit", "5".to_owned())];
            if let Some(t) = triggered_from {
                query.push(("triggered_from", t.to_owned()));
            }
            if let Some(last) = all.last() {
                query.push(("last_id", last["id"].as_str().expect("id").to_owned()));
            }
            let v = self
                .ok(&format!("/apps/{app_id}/workflow-runs"), &query)
                .await;
            all.extend(v["data"].as_array().expect("data").iter().cloned());
            if v["has_more"] != true {
                return all;
            }
        }
    }

    /// One UTC day of workflow app logs through page pagination.
    async fn logs(&self, app_id: &str, day: NaiveDate) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let query = [
                ("page", page.to_string()),
                ("limit", "3".into()),
                ("created_at__after", format!("{day}T00:00:00")),
                ("created_at__before", format!("{day}T23:59:59")),
            ];
            let v = self
                .ok(&format!("/apps/{app_id}/workflow-app-logs"), &query)
                .await;
            all.extend(v["data"].as_array().expect("data").iter().cloned());
            if v["has_more"] != true {
                assert_eq!(v["total"].as_u64(), Some(all.len() as u64));
                return all;
            }
        }
        unreachable!()
    }
}

/// The exporter's rule, written again here so the walk does not share code with the simulator.
fn normalize_provider(provider: &str) -> String {
    match provider.rsplit('/').next() {
        Some(last) if !last.is_empty() => last.to_owned(),
        _ => "unknown".to_owned(),
    }
}

fn parse_price(v: &Value) -> Decimal {
    match v {
        Value::Null => Decimal::ZERO,
        Value::String(s) => Decimal::from_str(s)
            .or_else(|_| Decimal::from_scientific(s))
            .expect("price"),
        other => Decimal::from_str(&other.to_string()).expect("price number"),
    }
}

fn utc_day(ts: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(ts, 0)
        .expect("timestamp")
        .date_naive()
}

type Key = (NaiveDate, String, String, String, String, String);

fn user_of(row: &Value) -> String {
    row["created_by_end_user"]["session_id"]
        .as_str()
        .or_else(|| row["created_by_account"]["email"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[derive(Default)]
struct Acc {
    name: String,
    input: u64,
    output: u64,
    total: u64,
    requests: u64,
    cost: Decimal,
    total_only: bool,
}

/// The walk's running totals, keyed like the truth.
#[derive(Default)]
struct Totals(BTreeMap<Key, Acc>);

impl Totals {
    fn add(
        &mut self,
        key: Key,
        name: &str,
        tokens: (u64, u64, u64),
        cost: Decimal,
        requests: u64,
        total_only: bool,
    ) {
        let a = self.0.entry(key).or_default();
        name.clone_into(&mut a.name);
        a.input += tokens.0;
        a.output += tokens.1;
        a.total += tokens.2;
        a.cost += cost;
        a.requests += requests;
        a.total_only |= total_only;
    }

    fn records(self) -> Vec<TruthRecord> {
        self.0
            .into_iter()
            .map(
                |((usage_date, app_id, user, provider, model, currency), a)| TruthRecord {
                    usage_date,
                    app_id,
                    app_name: a.name,
                    user,
                    provider,
                    model,
                    currency,
                    input_tokens: a.input,
                    output_tokens: a.output,
                    total_tokens: a.total,
                    request_count: a.requests,
                    cost: a.cost,
                    token_split: if a.total_only {
                        TokenSplit::TotalOnly
                    } else {
                        TokenSplit::Exact
                    },
                },
            )
            .collect()
    }
}

/// Production runs of a workflow (app logs per UTC day) or advanced-chat app (run cursor), with their users.
async fn production_runs(w: &Walker, app_id: &str, mode: &str) -> Vec<(Value, String)> {
    match mode {
        "workflow" => {
            let mut runs = Vec::new();
            for d in 0..3 {
                for log in w.logs(app_id, DAY0 + Days::new(d)).await {
                    runs.push((log["workflow_run"].clone(), user_of(&log)));
                }
            }
            runs
        }
        "advanced-chat" => {
            // List rows never name the end user: the run's node executions do.
            let mut runs = Vec::new();
            for run in w.runs(app_id, Some("app-run")).await {
                let path = format!(
                    "/apps/{app_id}/workflow-runs/{}/node-executions",
                    run["id"].as_str().unwrap()
                );
                let nodes = w.ok(&path, &[]).await;
                let user = user_of(&nodes["data"][0]);
                runs.push((run, user));
            }
            runs
        }
        _ => Vec::new(),
    }
}

/// Adds every node that carries its own usage (never iteration/loop containers).
async fn add_run(w: &Walker, totals: &mut Totals, app: (&str, &str), run: &Value, user: &str) {
    let (app_id, name) = app;
    let day = utc_day(run["created_at"].as_i64().expect("created_at"));
    assert!(day >= DAY0 && day <= DAY0 + Days::new(2));
    let path = format!(
        "/apps/{app_id}/workflow-runs/{}/node-executions",
        run["id"].as_str().unwrap()
    );
    let nodes = w.ok(&path, &[]).await;
    for node in nodes["data"].as_array().expect("nodes") {
        if matches!(node["node_type"].as_str(), Some("iteration" | "loop")) {
            continue;
        }
        let pd = &node["process_data"];
        let Some(provider) = pd["model_provider"].as_str() else {
            continue;
        };
        let (tokens, cost, total_only, currency) = if pd["usage"].is_object() {
            let u = &pd["usage"];
            let tokens = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
                u["total_tokens"].as_u64().unwrap(),
            );
            (
                tokens,
                parse_price(&u["total_price"]),
                false,
                u["currency"].as_str().unwrap(),
            )
        } else {
            assert_eq!(node["process_data_truncated"], true);
            let m = &node["execution_metadata"];
            let t = m["total_tokens"].as_u64().unwrap();
            (
                (t, 0, t),
                parse_price(&m["total_price"]),
                true,
                m["currency"].as_str().unwrap(),
            )
        };
        let model = pd["model_name"].as_str().unwrap().to_owned();
        let key = (
            day,
            app_id.to_owned(),
            user.to_owned(),
            normalize_provider(provider),
            model,
            currency.to_owned(),
        );
        totals.add(key, name, tokens, cost, 1, total_only);
    }
}

/// `YYYY-MM-DD HH:MM` in Tokyo of a UTC day's midnight.
fn tokyo_minute(day: NaiveDate) -> String {
    let utc = chrono::Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
    utc.with_timezone(&chrono_tz::Asia::Tokyo)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// One UTC day of an app's statistics: (tokens, price, messages), summed over the Tokyo days it spans.
async fn day_statistics(w: &Walker, app_id: &str, day: NaiveDate) -> (u64, Decimal, u64) {
    let query = [
        ("start", tokyo_minute(day)),
        ("end", tokyo_minute(day + Days::new(1))),
    ];
    let costs = w
        .ok(&format!("/apps/{app_id}/statistics/token-costs"), &query)
        .await;
    let messages = w
        .ok(&format!("/apps/{app_id}/statistics/daily-messages"), &query)
        .await;
    let rows = costs["data"].as_array().expect("rows");
    assert!(rows.len() <= 2, "one UTC day spans at most two Tokyo days");
    assert!(rows.iter().all(|r| r["currency"] == "USD"), "{rows:?}");
    let tokens: u64 = rows
        .iter()
        .map(|r| r["token_count"].as_u64().unwrap())
        .sum();
    let cost: Decimal = rows.iter().map(|r| parse_price(&r["total_price"])).sum();
    let count: u64 = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_count"].as_u64().unwrap())
        .sum();
    (tokens, cost, count)
}

/// Per UTC day, what a chat app's end-user messages added: (tokens, price, count) and their currencies.
type Counted = BTreeMap<NaiveDate, ((u64, Decimal, u64), HashSet<String>)>;

/// Adds an app's statistics per UTC day minus what `counted` already holds, as one `total_only` record for
/// user "" with the app's model (ARCHITECTURE.md 7.3).
async fn add_remainders(w: &Walker, totals: &mut Totals, app: (&str, &str), counted: &Counted) {
    let (app_id, name) = app;
    let detail = w.ok(&format!("/apps/{app_id}"), &[]).await;
    let model = &detail["model_config"]["model"];
    for d in 0..3 {
        let day = DAY0 + Days::new(d);
        let (tokens, cost, count) = day_statistics(w, app_id, day).await;
        let ((t, c, n), currencies) = counted.get(&day).cloned().unwrap_or_default();
        let (tokens, cost, count) = (tokens - t, cost - c, count - n);
        if tokens == 0 && cost.is_zero() && count == 0 {
            continue;
        }
        let currency = if currencies.len() == 1 {
            currencies.into_iter().next().unwrap()
        } else {
            "USD".to_owned()
        };
        let key = (
            day,
            app_id.to_owned(),
            String::new(),
            normalize_provider(model["provider"].as_str().unwrap()),
            model["name"].as_str().unwrap().to_owned(),
            currency,
        );
        totals.add(key, name, (tokens, 0, tokens), cost, count, true);
    }
}

/// Every conversation updated since the window's start, by page number under `-updated_at`, deduplicated.
async fn conversations(w: &Walker, app_id: &str) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for page in 1.. {
        let query = [
            ("page", page.to_string()),
            ("limit", "4".into()),
            ("sort_by", "-updated_at".into()),
            ("start", tokyo_minute(DAY0)),
        ];
        let v = w
            .ok(&format!("/apps/{app_id}/chat-conversations"), &query)
            .await;
        for c in v["data"].as_array().expect("data") {
            if seen.insert(c["id"].as_str().unwrap().to_owned()) {
                all.push(c.clone());
            }
        }
        if v["has_more"] != true {
            return all;
        }
    }
    unreachable!()
}

/// A conversation's messages, newest pages first through `first_id`, returned oldest first.
async fn messages(w: &Walker, app_id: &str, conversation_id: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut query = vec![
            ("conversation_id", conversation_id.to_owned()),
            ("limit", "2".to_owned()),
        ];
        if let Some(first) = all.first() {
            query.push(("first_id", first["id"].as_str().unwrap().to_owned()));
        }
        let v = w.ok(&format!("/apps/{app_id}/chat-messages"), &query).await;
        let page = v["data"].as_array().expect("data").clone();
        all.splice(0..0, page);
        if v["has_more"] != true {
            return all;
        }
    }
}

/// Adds a chat app's end-user messages one by one, with the app's current model (the conversation list names
/// none), then the rest of its statistics as remainders.
async fn add_chat(w: &Walker, totals: &mut Totals, app: (&str, &str)) {
    let (app_id, name) = app;
    let detail = w.ok(&format!("/apps/{app_id}"), &[]).await;
    let model = &detail["model_config"]["model"];
    let mut counted = Counted::new();
    for c in conversations(w, app_id).await {
        let Some(user) = c["from_end_user_session_id"].as_str() else {
            continue;
        };
        for m in messages(w, app_id, c["id"].as_str().unwrap()).await {
            assert!(m["from_end_user_id"].is_string());
            let day = utc_day(m["created_at"].as_i64().unwrap());
            if day < DAY0 || day > DAY0 + Days::new(2) {
                continue;
            }
            let usage = &m["metadata"]["usage"];
            let (cost, currency) = if usage.is_object() {
                (
                    parse_price(&usage["total_price"]),
                    usage["currency"].as_str().unwrap().to_owned(),
                )
            } else {
                (Decimal::ZERO, "USD".to_owned())
            };
            let (input, output) = (
                m["message_tokens"].as_u64().unwrap(),
                m["answer_tokens"].as_u64().unwrap(),
            );
            let key = (
                day,
                app_id.to_owned(),
                user.to_owned(),
                normalize_provider(model["provider"].as_str().unwrap()),
                model["name"].as_str().unwrap().to_owned(),
                currency.clone(),
            );
            totals.add(key, name, (input, output, input + output), cost, 1, false);
            let entry = counted.entry(day).or_default();
            entry.0.0 += input + output;
            entry.0.1 += cost;
            entry.0.2 += 1;
            entry.1.insert(currency);
        }
    }
    add_remainders(w, totals, app, &counted).await;
}

#[tokio::test]
async fn an_independent_walk_of_the_api_equals_the_truth() {
    let sim = start(SimConfig {
        apps_per_mode: 2,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let last = DAY0 + Days::new(2);
    let mut totals = Totals::default();
    for app in w.apps().await {
        let (app_id, name) = (
            app["id"].as_str().expect("id"),
            app["name"].as_str().expect("name"),
        );
        let mode = app["mode"].as_str().expect("mode");
        for (run, user) in production_runs(&w, app_id, mode).await {
            add_run(&w, &mut totals, (app_id, name), &run, &user).await;
        }
        match mode {
            "chat" | "agent-chat" => add_chat(&w, &mut totals, (app_id, name)).await,
            "completion" => {
                add_remainders(&w, &mut totals, (app_id, name), &Counted::new()).await;
            }
            _ => {}
        }
    }
    let walked = totals.records();
    let truth = sim.truth(DAY0, last);
    assert_eq!(walked.len(), truth.len());
    for (w, t) in walked.iter().zip(&truth) {
        assert_eq!(w, t);
    }
    // The same data over HTTP.
    let url = format!("{}/_sim/truth?from={DAY0}&to={last}", sim.base_url());
    let served: Value = w.http.get(url).send().await.unwrap().json().await.unwrap();
    let served: Vec<TruthRecord> = serde_json::from_value(served["records"].clone()).unwrap();
    assert_eq!(served, truth);
    // The workspace exercises what it must.
    let providers: HashSet<&str> = truth.iter().map(|r| r.provider.as_str()).collect();
    for p in ["openai", "anthropic", "unknown", "ollama"] {
        assert!(providers.contains(p), "{p} in {providers:?}");
    }
    assert!(
        truth
            .iter()
            .any(|r| r.token_split == TokenSplit::TotalOnly && r.user.is_empty())
    );
    assert!(
        truth
            .iter()
            .any(|r| r.token_split == TokenSplit::TotalOnly && !r.user.is_empty())
    );
    assert!(truth.iter().any(|r| r.currency == "RMB"));
    assert!(
        truth.iter().any(|r| r.user.contains('@'))
            && truth.iter().any(|r| r.user == "customer-0042")
    );
    // Chat apps: end users one by one (exact), the rest as a remainder for user "".
    let chat_ids: HashSet<String> = w
        .apps()
        .await
        .iter()
        .filter(|a| a["mode"] == "chat")
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let chat: Vec<&TruthRecord> = truth
        .iter()
        .filter(|r| chat_ids.contains(&r.app_id))
        .collect();
    assert!(
        chat.iter()
            .any(|r| r.token_split == TokenSplit::Exact && !r.user.is_empty())
    );
    assert!(
        chat.iter()
            .any(|r| r.token_split == TokenSplit::TotalOnly && r.user.is_empty())
    );
    assert!(
        chat.iter()
            .all(|r| (r.token_split == TokenSplit::Exact) != r.user.is_empty())
    );
}

#[tokio::test]
async fn limits_outside_1_to_100_are_refused_not_clamped() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    for limit in ["101", "0", "abc"] {
        let (status, error) = w.get("/apps", &[("limit", limit.into())]).await;
        assert_eq!(status, 400, "limit={limit}");
        assert_eq!(error["code"], "invalid_param");
        assert_eq!(error["status"], 400);
    }
    assert_eq!(w.get("/apps", &[("limit", "100".into())]).await.0, 200);
    let stats = sim.stats();
    assert_eq!(stats.limit_over_100, 1);
    assert_eq!(stats.max_limit_seen, Some(101));
}

#[tokio::test]
async fn workflow_runs_default_to_debug_runs_and_cursor_pages_cover_every_run_once() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "advanced-chat").await;
    let debug = w.runs(id, None).await;
    assert_eq!(debug.len(), 3 * 2, "ceil(4 / 3) editor runs a day");
    let production = w.runs(id, Some("app-run")).await;
    assert_eq!(production.len(), 3 * 4);
    let ids: HashSet<&str> = production
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), production.len(), "no run twice");
    assert!(
        debug
            .iter()
            .all(|r| !ids.contains(r["id"].as_str().unwrap()))
    );
    let times: Vec<i64> = production
        .iter()
        .map(|r| r["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|p| p[0] > p[1]), "newest first");
    let (status, error) = w
        .get(
            &format!("/apps/{id}/workflow-runs"),
            &[
                ("last_id", uuid_like()),
                ("triggered_from", "app-run".into()),
            ],
        )
        .await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (400, Some("invalid_param"))
    );
    // A run at 23:59:5x has nodes after midnight; its usage stays on the run's day.
    let late = production
        .iter()
        .find(|r| r["created_at"].as_i64().unwrap().rem_euclid(86_400) >= 86_390)
        .expect("a run just before midnight");
    let nodes = w
        .ok(
            &format!(
                "/apps/{id}/workflow-runs/{}/node-executions",
                late["id"].as_str().unwrap()
            ),
            &[],
        )
        .await;
    let run_day = utc_day(late["created_at"].as_i64().unwrap());
    assert!(
        nodes["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| utc_day(n["created_at"].as_i64().unwrap()) > run_day)
    );
    // Workflow-only endpoint on a chatflow app.
    assert_eq!(
        w.get(&format!("/apps/{id}/workflow-app-logs"), &[]).await.0,
        404
    );
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_owned()
}

#[tokio::test]
async fn node_executions_carry_containers_truncation_and_zero_prices() {
    let sim = start(SimConfig {
        runs_per_app_per_day: 10,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "workflow").await;
    let (mut containers, mut truncated, mut zero_prices) = (0, 0, 0);
    for run in w.runs(id, Some("app-run")).await {
        let v = w
            .ok(
                &format!(
                    "/apps/{id}/workflow-runs/{}/node-executions",
                    run["id"].as_str().unwrap()
                ),
                &[],
            )
            .await;
        let nodes = v["data"].as_array().unwrap();
        for node in nodes {
            let meta = &node["execution_metadata"];
            if matches!(node["node_type"].as_str(), Some("iteration" | "loop")) {
                containers += 1;
                let key = if node["node_type"] == "loop" {
                    "loop_id"
                } else {
                    "iteration_id"
                };
                let children: u64 = nodes
                    .iter()
                    .filter(|c| c["execution_metadata"][key] == node["node_id"])
                    .filter_map(|c| c["execution_metadata"]["total_tokens"].as_u64())
                    .sum();
                assert_eq!(
                    meta["total_tokens"].as_u64(),
                    Some(children),
                    "a container repeats its children's sum"
                );
            }
            if node["process_data_truncated"] == true {
                truncated += 1;
                assert!(
                    node["process_data"]["usage"].is_null()
                        && node["process_data"]["model_name"].is_string()
                );
            }
            if node["process_data"]["usage"]["prompt_price"] == "0E-7" {
                zero_prices += 1;
            }
        }
        let counted: u64 = nodes
            .iter()
            .filter(|n| !matches!(n["node_type"].as_str(), Some("iteration" | "loop")))
            .filter_map(|n| n["execution_metadata"]["total_tokens"].as_u64())
            .sum();
        assert_eq!(run["total_tokens"].as_u64(), Some(counted));
    }
    assert!(
        containers > 0 && truncated > 0 && zero_prices > 0,
        "{containers} {truncated} {zero_prices}"
    );
}

#[tokio::test]
async fn same_seed_same_workspace() {
    let a = start(config(AuthMode::V1_9_1));
    let b = start(config(AuthMode::V1_9_1));
    let c = start(SimConfig {
        seed: 8,
        ..config(AuthMode::V1_9_1)
    });
    let last = DAY0 + Days::new(2);
    assert_eq!(a.truth(DAY0, last), b.truth(DAY0, last));
    assert_ne!(a.truth(DAY0, last), c.truth(DAY0, last));
    assert!(a.truth(DAY0, DAY0).iter().all(|r| r.usage_date == DAY0));
    let (wa, wb) = (Walker::new(&a), Walker::new(&b));
    let app = wa
        .apps()
        .await
        .into_iter()
        .find(|x| x["mode"] == "workflow")
        .unwrap();
    let id = app["id"].as_str().unwrap();
    let run = wa.runs(id, Some("app-run")).await.remove(0);
    let path = format!(
        "/apps/{id}/workflow-runs/{}/node-executions",
        run["id"].as_str().unwrap()
    );
    assert_eq!(wa.ok(&path, &[]).await, wb.ok(&path, &[]).await);
}

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

/// The apps of a mode, in `/apps` order (newest first).
async fn apps_of(w: &Walker, mode: &str) -> Vec<Value> {
    w.apps()
        .await
        .into_iter()
        .filter(|a| a["mode"] == mode)
        .collect()
}

/// The id of the first app of a mode in `/apps` order.
async fn first_app_id(w: &Walker, mode: &str) -> String {
    let app = apps_of(w, mode).await.into_iter().next();
    let app = app.unwrap_or_else(|| panic!("a {mode} app"));
    app["id"].as_str().expect("id").to_owned()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn run_list_rows_never_name_the_end_user_but_nodes_and_the_counted_detail_do() {
    let sim = start(config(AuthMode::V1_9_1));
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "advanced-chat").await;
    let runs = w.runs(id, Some("app-run")).await;
    for run in &runs {
        assert_eq!(
            keys(run),
            [
                "conversation_id",
                "created_at",
                "created_by_account",
                "elapsed_time",
                "exceptions_count",
                "finished_at",
                "id",
                "message_id",
                "retry_index",
                "status",
                "total_steps",
                "total_tokens",
                "version",
            ],
            "WorkflowRunForListResponse + conversation and message"
        );
    }
    let by_end_user = runs
        .iter()
        .find(|r| r["created_by_account"].is_null())
        .expect("a run started by an end user or nobody");
    let run_id = by_end_user["id"].as_str().unwrap();
    let nodes = w
        .ok(
            &format!("/apps/{id}/workflow-runs/{run_id}/node-executions"),
            &[],
        )
        .await;
    let nodes = nodes["data"].as_array().unwrap();
    let first = &nodes[0];
    assert!(
        nodes
            .iter()
            .all(|n| n["created_by_role"] == first["created_by_role"]
                && n["created_by_end_user"] == first["created_by_end_user"]
                && n["created_by_account"].is_null())
    );
    assert_eq!(sim.stats().run_detail_requests, 0);
    let detail = w
        .ok(&format!("/apps/{id}/workflow-runs/{run_id}"), &[])
        .await;
    assert_eq!(detail["created_by_role"], first["created_by_role"]);
    assert_eq!(detail["created_by_end_user"], first["created_by_end_user"]);
    assert_eq!(detail["total_tokens"], by_end_user["total_tokens"]);
    let (status, error) = w
        .get(&format!("/apps/{id}/workflow-runs/{}", uuid_like()), &[])
        .await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(sim.stats().run_detail_requests, 2);
}

#[tokio::test]
async fn triggered_runs_are_logged_as_service_api_but_never_listed_as_app_runs() {
    let sim = start(SimConfig {
        runs_per_app_per_day: 20,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let id: &str = &first_app_id(&w, "workflow").await;
    let mut logged = Vec::new();
    for d in 0..3 {
        logged.extend(w.logs(id, DAY0 + Days::new(d)).await);
    }
    assert_eq!(logged.len(), 60);
    let triggered: Vec<&Value> = logged
        .iter()
        .filter(|l| l["workflow_run"]["triggered_from"] != "app-run")
        .collect();
    let kinds: HashSet<&str> = triggered
        .iter()
        .map(|l| l["workflow_run"]["triggered_from"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, HashSet::from(["webhook", "schedule", "plugin"]));
    assert!(triggered.iter().all(|l| l["created_from"] == "service-api"));
    let app_runs: HashSet<String> = w
        .runs(id, Some("app-run"))
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(app_runs.len(), 60 - triggered.len());
    assert!(
        triggered
            .iter()
            .all(|l| !app_runs.contains(l["workflow_run"]["id"].as_str().unwrap()))
    );
    // A triggered run cannot be a cursor of the app-run list either.
    let (status, _) = w
        .get(
            &format!("/apps/{id}/workflow-runs"),
            &[
                ("triggered_from", "app-run".into()),
                (
                    "last_id",
                    triggered[0]["workflow_run"]["id"].as_str().unwrap().into(),
                ),
            ],
        )
        .await;
    assert_eq!(status, 400);
    // Both sources count them: the logs carry them to the API source, the table to the database source.
    let last = DAY0 + Days::new(2);
    let api: Vec<TruthRecord> = sim
        .truth(DAY0, last)
        .into_iter()
        .filter(|r| r.app_id == id)
        .collect();
    assert_eq!(
        api,
        sim.truth_database(DAY0, last)
            .into_iter()
            .filter(|r| r.app_id == id)
            .collect::<Vec<_>>()
    );
}

/// A chat app's conversations with the given query, as one page.
async fn conversation_page(
    w: &Walker,
    app_id: &str,
    query: &[(&str, String)],
) -> (StatusCode, Value) {
    w.get(&format!("/apps/{app_id}/chat-conversations"), query)
        .await
}

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
        HashSet::from(["RMB", "USD"]),
        "older conversations were priced in USD"
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

#[tokio::test]
async fn both_truths_agree_with_the_statistics_and_with_each_other() {
    let sim = start(SimConfig {
        apps_per_mode: 2,
        runs_per_app_per_day: 9,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let last = DAY0 + Days::new(2);
    let api = sim.truth(DAY0, last);
    let db = sim.truth_database(DAY0, last);
    let sum = |records: &[TruthRecord], app: &str, day: NaiveDate| {
        records
            .iter()
            .filter(|r| r.app_id == app && r.usage_date == day)
            .fold((0, Decimal::ZERO, 0), |(t, c, n), r| {
                (t + r.total_tokens, c + r.cost, n + r.request_count)
            })
    };
    let only = |records: &[TruthRecord], app: &str| -> Vec<TruthRecord> {
        records
            .iter()
            .filter(|r| r.app_id == app)
            .cloned()
            .collect()
    };
    for app in w.apps().await {
        let id = app["id"].as_str().unwrap();
        match app["mode"].as_str().unwrap() {
            // Every run, triggered ones included, reaches the API source too.
            "workflow" | "advanced-chat" => assert_eq!(only(&api, id), only(&db, id)),
            "chat" | "agent-chat" | "completion" => {
                for d in 0..3 {
                    let day = DAY0 + Days::new(d);
                    let statistics = day_statistics(&w, id, day).await;
                    assert_eq!(sum(&api, id, day), statistics, "{id} {day}");
                    assert_eq!(sum(&db, id, day), statistics, "{id} {day}");
                }
                // The database knows every account by email; the API source only end users.
                assert!(
                    db.iter()
                        .any(|r| r.app_id == id && r.user.ends_with("@example.com"))
                );
                assert!(
                    api.iter()
                        .all(|r| r.app_id != id || !r.user.ends_with("@example.com"))
                );
            }
            "agent" => {
                assert!(only(&api, id).is_empty(), "unknown modes are not collected");
                assert!(!only(&db, id).is_empty());
            }
            other => panic!("unexpected mode {other}"),
        }
    }
    assert!(db.iter().all(|r| r.token_split == TokenSplit::Exact
        || api.iter().any(|a| a.app_id == r.app_id)));
    // The database truth is served as well.
    let url = format!(
        "{}/_sim/truth?source=database&from={DAY0}&to={last}",
        sim.base_url()
    );
    let served: Value = w.http.get(url).send().await.unwrap().json().await.unwrap();
    let served: Vec<TruthRecord> = serde_json::from_value(served["records"].clone()).unwrap();
    assert_eq!(served, db);
}

#[tokio::test]
async fn modes_choose_the_apps_and_an_unknown_mode_is_listed() {
    let sim = start(SimConfig {
        modes: vec!["chat".into(), "agent".into()],
        messages_per_conversation: 4,
        ..config(AuthMode::V1_9_1)
    });
    let w = Walker::new(&sim);
    let apps = w.apps().await;
    let modes: Vec<&str> = apps.iter().map(|a| a["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["agent", "chat"]);
    assert!(apps[0]["model_config"]["model"]["name"].is_string());
    let chat_id = apps[1]["id"].as_str().unwrap();
    let listed = w
        .ok(
            &format!("/apps/{chat_id}/chat-conversations"),
            &[("limit", "100".into())],
        )
        .await;
    let counts: Vec<u64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message_count"].as_u64().unwrap())
        .collect();
    assert!(
        counts.iter().all(|&n| n == 4 || n == 5),
        "{counts:?}: 4 a conversation, one more after the window"
    );
    let error = DifySim::start(SimConfig {
        modes: vec!["chatbot".into()],
        ..config(AuthMode::V1_9_1)
    })
    .expect_err("an unknown mode is refused");
    assert!(error.to_string().contains("chatbot"), "{error}");
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
