//! Workflow runs: the two run lists and their cursors, node executions, who a run names, and triggered runs.

use std::collections::HashSet;

use chrono::Days;
use dify_sim::{AuthMode, SimConfig, TruthRecord};
use serde_json::Value;

use crate::support::{DAY0, Walker, config, first_app_id, keys, start, utc_day, uuid_like};

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
