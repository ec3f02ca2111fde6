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

/// Adds a chat app's end-user messages one by one, then the rest of its statistics as remainders.
async fn add_chat(w: &Walker, totals: &mut Totals, app: (&str, &str)) {
    let (app_id, name) = app;
    let mut counted = Counted::new();
    for c in conversations(w, app_id).await {
        let Some(user) = c["from_end_user_session_id"].as_str() else {
            continue;
        };
        let model = &c["model_config"]["model"];
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
    let apps = w.apps().await;
    let app = apps
        .iter()
        .find(|a| a["mode"] == "advanced-chat")
        .expect("an advanced-chat app");
    let id = app["id"].as_str().unwrap();
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
    let apps = w.apps().await;
    let app = apps
        .iter()
        .find(|a| a["mode"] == "workflow")
        .expect("a workflow app");
    let id = app["id"].as_str().unwrap();
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
