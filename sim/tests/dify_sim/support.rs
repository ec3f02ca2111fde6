//! The simulator under test, a logged-in client that walks its API, and the walking helpers the topics share.

use std::collections::HashSet;
use std::str::FromStr;

use chrono::{Days, NaiveDate, TimeZone as _};
use dify_sim::{AuthMode, DifySim, SimConfig};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

pub(crate) const DAY0: NaiveDate = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();

pub(crate) fn config(auth: AuthMode) -> SimConfig {
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
pub(crate) fn fifteen_short_conversations() -> SimConfig {
    SimConfig {
        runs_per_app_per_day: 10,
        messages_per_conversation: 2,
        ..config(AuthMode::V1_9_1)
    }
}

pub(crate) fn start(config: SimConfig) -> DifySim {
    DifySim::start(config).expect("simulator starts")
}

pub(crate) fn api(sim: &DifySim, path: &str) -> String {
    format!("{}/console/api{path}", sim.base_url())
}

pub(crate) async fn body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A logged-in 1.9.1 client for the data tests.
pub(crate) struct Walker {
    pub(crate) http: reqwest::Client,
    base: String,
    pub(crate) token: String,
}

impl Walker {
    pub(crate) fn new(sim: &DifySim) -> Self {
        Walker {
            http: reqwest::Client::new(),
            base: api(sim, ""),
            token: sim.credentials().console_token.clone(),
        }
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> (StatusCode, Value) {
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

    pub(crate) async fn ok(&self, path: &str, query: &[(&str, String)]) -> Value {
        let (status, value) = self.get(path, query).await;
        assert_eq!(status, 200, "{path} {query:?}: {value}");
        value
    }

    pub(crate) async fn apps(&self) -> Vec<Value> {
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
    pub(crate) async fn runs(&self, app_id: &str, triggered_from: Option<&str>) -> Vec<Value> {
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
    pub(crate) async fn logs(&self, app_id: &str, day: NaiveDate) -> Vec<Value> {
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

pub(crate) fn parse_price(v: &Value) -> Decimal {
    match v {
        Value::Null => Decimal::ZERO,
        Value::String(s) => Decimal::from_str(s)
            .or_else(|_| Decimal::from_scientific(s))
            .expect("price"),
        other => Decimal::from_str(&other.to_string()).expect("price number"),
    }
}

pub(crate) fn utc_day(ts: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp(ts, 0)
        .expect("timestamp")
        .date_naive()
}

/// `YYYY-MM-DD HH:MM` in Tokyo of a UTC day's midnight.
pub(crate) fn tokyo_minute(day: NaiveDate) -> String {
    let utc = chrono::Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
    utc.with_timezone(&chrono_tz::Asia::Tokyo)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// One UTC day of an app's statistics: (tokens, price, messages), summed over the Tokyo days it spans.
pub(crate) async fn day_statistics(
    w: &Walker,
    app_id: &str,
    day: NaiveDate,
) -> (u64, Decimal, u64) {
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

/// Every conversation updated since the window's start, by page number under `-updated_at`, deduplicated.
pub(crate) async fn conversations(w: &Walker, app_id: &str) -> Vec<Value> {
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
pub(crate) async fn messages(w: &Walker, app_id: &str, conversation_id: &str) -> Vec<Value> {
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

pub(crate) fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_owned()
}

/// The apps of a mode, in `/apps` order (newest first).
pub(crate) async fn apps_of(w: &Walker, mode: &str) -> Vec<Value> {
    w.apps()
        .await
        .into_iter()
        .filter(|a| a["mode"] == mode)
        .collect()
}

/// The id of the first app of a mode in `/apps` order.
pub(crate) async fn first_app_id(w: &Walker, mode: &str) -> String {
    let app = apps_of(w, mode).await.into_iter().next();
    let app = app.unwrap_or_else(|| panic!("a {mode} app"));
    app["id"].as_str().expect("id").to_owned()
}

pub(crate) fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// A chat app's conversations with the given query, as one page.
pub(crate) async fn conversation_page(
    w: &Walker,
    app_id: &str,
    query: &[(&str, String)],
) -> (StatusCode, Value) {
    w.get(&format!("/apps/{app_id}/chat-conversations"), query)
        .await
}
