//! The truths: an independent walk of the served API that must add up to exactly `truth()`, and the two
//! truths against Dify's statistics and each other.

use std::collections::{BTreeMap, HashSet};

use chrono::{Days, NaiveDate};
use dify_sim::{AuthMode, SimConfig, TokenSplit, TruthRecord};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{
    DAY0, Walker, config, conversations, day_statistics, messages, parse_price, start, utc_day,
};

/// The exporter's rule, written again here so the walk does not share code with the simulator.
fn normalize_provider(provider: &str) -> String {
    match provider.rsplit('/').next() {
        Some(last) if !last.is_empty() => last.to_owned(),
        _ => "unknown".to_owned(),
    }
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
                    // The exporter sends ISO 4217 codes: Dify's RMB is CNY.
                    currency: if currency == "RMB" {
                        "CNY".to_owned()
                    } else {
                        currency
                    },
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

/// Per UTC day, what a chat app's end-user messages added: (tokens, price, count) and their currencies.
type Counted = BTreeMap<NaiveDate, ((u64, Decimal, u64), HashSet<String>)>;

/// Adds an app's statistics per UTC day minus what `counted` already holds, as one `total_only` record for
/// user "" with the app's model (docs/run.md#aggregation).
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
    assert!(truth.iter().any(|r| r.currency == "CNY"));
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
