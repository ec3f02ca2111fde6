//! The database source against a real PostgreSQL (tests/pg): Dify's tables from
//! tests/data/dify-schema.sql, rows written by the tests, the real `exporter` binary reading them.
//! Every rule of docs/database.md ("Rules") has a row that must count and a row that must not; the
//! expected records are worked out by hand below each world.

use std::str::FromStr as _;

use rust_decimal::Decimal;
use serde_json::Value;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use dify_sim::{DifySim, MeterConfig, MeterSim, SimConfig};

use crate::collect;
use crate::pg::{self, Cluster, SUPERUSER};
use crate::support::{EXTERNAL_TOKEN, Exporter, Finished, PASSWORD, Row, held_row, truth_row};

pub(crate) const DAY: &str = "2026-11-02";
pub(crate) const T1: &str = "10000000-0000-4000-8000-000000000001";
const T2: &str = "20000000-0000-4000-8000-000000000002";
const PIPELINE: &str = "a0000000-0000-4000-8000-000000000006";

/// Two workspaces; every app mode; rows inside and outside every rule.
const WORLD: &str = r#"
INSERT INTO tenants (id, name) VALUES
  ('10000000-0000-4000-8000-000000000001', 'Acme'),
  ('20000000-0000-4000-8000-000000000002', 'Globex');
INSERT INTO accounts (id, name, email) VALUES
  ('ac000000-0000-4000-8000-00000000000a', 'Alice', 'alice@example.com'),
  ('ac000000-0000-4000-8000-00000000000b', 'Bob', 'bob@example.com');
INSERT INTO end_users (id, tenant_id, type, session_id) VALUES
  ('e0000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001', 'browser', 'sess-1'),
  ('e0000000-0000-4000-8000-000000000003', '20000000-0000-4000-8000-000000000002', 'service-api', 't2-sess');
INSERT INTO apps (id, tenant_id, name, mode) VALUES
  ('a0000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001', 'Flow', 'workflow'),
  ('a0000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000001', 'Bot', 'chat'),
  ('a0000000-0000-4000-8000-000000000003', '10000000-0000-4000-8000-000000000001', 'Writer', 'completion'),
  ('a0000000-0000-4000-8000-000000000004', '10000000-0000-4000-8000-000000000001', 'Agent', 'agent'),
  ('a0000000-0000-4000-8000-000000000005', '10000000-0000-4000-8000-000000000001', 'Chatflow', 'advanced-chat'),
  ('a0000000-0000-4000-8000-000000000006', '10000000-0000-4000-8000-000000000001', 'Pipeline', 'rag-pipeline'),
  ('a0000000-0000-4000-8000-000000000007', '20000000-0000-4000-8000-000000000002', 'Other bot', 'chat');
INSERT INTO conversations (id, app_id, mode, name, from_source, is_deleted) VALUES
  ('c0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002', 'chat', 'live', 'api', false),
  ('c0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000002', 'chat', 'deleted', 'api', true);

CREATE FUNCTION msg(app uuid, conv uuid, eu uuid, acc uuid, provider text, model text,
                    input int, output int, price numeric, currency text, via text, at timestamp)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO messages (app_id, conversation_id, from_end_user_id, from_account_id, model_provider,
                        model_id, query, message, message_tokens, message_unit_price, answer,
                        answer_tokens, answer_unit_price, total_price, currency, from_source,
                        invoke_from, created_at)
  VALUES (app, conv, eu, acc, provider, model, 'q', '[]', input, 0, 'a', output, 0, price, currency,
          CASE WHEN acc IS NULL THEN 'api' ELSE 'console' END, via, at)
$$;
-- chat: end user, two messages on the day's first and last instants: one record
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', NULL, 'langgenius/openai/openai', 'gpt-4o', 100, 20, 0.0004500, 'USD', 'web-app', '2026-11-02 00:00:00');
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', NULL, 'langgenius/openai/openai', 'gpt-4o', 50, 10, 0.0002250, 'USD', 'service-api', '2026-11-02 23:59:59.5');
-- chat: an account in explore, no price, another model and currency
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', NULL, 'ac000000-0000-4000-8000-00000000000a', 'anthropic', 'claude-3-5-sonnet', 30, 5, NULL, 'RMB', 'explore', '2026-11-02 09:00:00');
-- chat: a message of a deleted conversation counts; its provider is empty (unknown)
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000002', 'e0000000-0000-4000-8000-000000000001', NULL, '', 'in-house-llm', 10, 2, 0.0000100, 'USD', 'web-app', '2026-11-02 10:00:00');
-- chat: never counted: debugger, the day after, the day before
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', NULL, 'ac000000-0000-4000-8000-00000000000a', 'anthropic', 'claude-3-5-sonnet', 1000, 1000, 1, 'USD', 'debugger', '2026-11-02 11:00:00');
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', NULL, 'langgenius/openai/openai', 'gpt-4o', 1000, 1000, 1, 'USD', 'web-app', '2026-11-03 00:00:00');
SELECT msg('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', NULL, 'langgenius/openai/openai', 'gpt-4o', 1000, 1000, 1, 'USD', 'web-app', '2026-11-01 23:59:59');
-- completion: nobody Dify can name (no end user, no account)
SELECT msg('a0000000-0000-4000-8000-000000000003', 'c0000000-0000-4000-8000-000000000001', NULL, NULL, 'langgenius/openai/openai', 'gpt-4o-mini', 40, 8, 0.0000108, 'USD', 'service-api', '2026-11-02 12:00:00');
-- agent (a newer mode): counted message by message
SELECT msg('a0000000-0000-4000-8000-000000000004', 'c0000000-0000-4000-8000-000000000001', NULL, 'ac000000-0000-4000-8000-00000000000b', 'langgenius/openai/openai', 'gpt-4o', 7, 3, 0.0000050, 'USD', 'service-api', '2026-11-02 13:00:00');
-- advanced-chat messages repeat their run's nodes: never counted
SELECT msg('a0000000-0000-4000-8000-000000000005', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000001', NULL, 'langgenius/tongyi/tongyi', 'qwen-max', 500, 500, 1, 'RMB', 'web-app', '2026-11-02 10:00:00');
-- the other workspace
SELECT msg('a0000000-0000-4000-8000-000000000007', 'c0000000-0000-4000-8000-000000000001', 'e0000000-0000-4000-8000-000000000003', NULL, 'langgenius/openai/openai', 'gpt-4o', 11, 1, 0.0000012, 'USD', 'web-app', '2026-11-02 14:00:00');

CREATE FUNCTION run(run_id uuid, app uuid, trig text, role text, creator uuid, at timestamp)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, version,
                             status, created_by_role, created_by, created_at)
  SELECT run_id, a.tenant_id, app, 'f0000000-0000-4000-8000-000000000000', a.mode, trig, 'v1',
         'succeeded', role, creator, at FROM apps a WHERE a.id = app
$$;
CREATE FUNCTION node(run uuid, trig text, kind text, process text, metadata text, at timestamp)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from,
      workflow_run_id, index, node_id, node_type, title, inputs, process_data, status,
      execution_metadata, created_at, created_by_role, created_by)
  SELECT r.tenant_id, r.app_id, r.workflow_id, trig, run, 1, kind || '-1', kind, kind, '{}',
         process, 'succeeded', metadata, at, r.created_by_role, r.created_by
  FROM workflow_runs r WHERE r.id = run
$$;
-- workflow, production run of an end user
SELECT run('b0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', 'app-run', 'end_user', 'e0000000-0000-4000-8000-000000000001', '2026-11-02 12:00:00');
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'llm', '{"model_mode":"chat","prompts":[{"role":"user","text":"hi"}],"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":200,"completion_tokens":40,"total_tokens":240,"total_price":"0.0009000","currency":"USD","latency":1.2}}', '{"total_tokens":240,"total_price":"0.0009000","currency":"USD"}', '2026-11-02 12:00:01');
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'code', '{}', NULL, '2026-11-02 12:00:02');
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'iteration', '{}', '{"total_tokens":15,"total_price":"0.0000750","currency":"USD"}', '2026-11-02 12:00:03');
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'loop', '{}', '{"total_tokens":15,"total_price":"0.0000750","currency":"USD"}', '2026-11-02 12:00:03');
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'llm', '{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"total_price":"0.0000750","currency":"USD"}}', '{"total_tokens":15}', '2026-11-02 12:00:04');
-- truncated process_data (offloaded): the metadata totals, total_only
SELECT node('b0000000-0000-4000-8000-000000000001', 'workflow-run', 'llm', '{"model_provider":"anthropic","model_name":"claude-3-5-sonnet","prompts":"[truncated]"}', '{"total_tokens":60,"total_price":"0.0003000","currency":"USD"}', '2026-11-02 12:00:05');
-- single-step runs of a node: never counted
SELECT node('b0000000-0000-4000-8000-000000000001', 'single-step', 'llm', '{"model_provider":"x","model_name":"y","usage":{"prompt_tokens":999,"completion_tokens":1,"total_price":"1","currency":"USD"}}', NULL, '2026-11-02 12:00:06');
INSERT INTO workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, index, node_id,
    node_type, title, inputs, process_data, status, created_at, created_by_role, created_by)
  VALUES ('10000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001',
    'f0000000-0000-4000-8000-000000000000', 'single-step', 1, 'llm-9', 'llm', 'llm', '{}',
    '{"model_provider":"x","model_name":"y","usage":{"prompt_tokens":999,"completion_tokens":1}}',
    'succeeded', '2026-11-02 12:00:00', 'account', 'ac000000-0000-4000-8000-00000000000a');
-- a debug run, a RAG pipeline run: never counted
SELECT run('b0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000001', 'debugging', 'account', 'ac000000-0000-4000-8000-00000000000a', '2026-11-02 12:00:00');
SELECT node('b0000000-0000-4000-8000-000000000002', 'workflow-run', 'llm', '{"model_provider":"x","model_name":"y","usage":{"prompt_tokens":999,"completion_tokens":1}}', NULL, '2026-11-02 12:00:01');
SELECT run('b0000000-0000-4000-8000-000000000006', 'a0000000-0000-4000-8000-000000000001', 'rag-pipeline-run', 'account', 'ac000000-0000-4000-8000-00000000000a', '2026-11-02 12:00:00');
SELECT node('b0000000-0000-4000-8000-000000000006', 'workflow-run', 'llm', '{"model_provider":"x","model_name":"y","usage":{"prompt_tokens":999,"completion_tokens":1}}', NULL, '2026-11-02 12:00:01');
-- a webhook-triggered run of an account (Dify 1.10): production
SELECT run('b0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000001', 'webhook', 'account', 'ac000000-0000-4000-8000-00000000000a', '2026-11-02 08:00:00');
SELECT node('b0000000-0000-4000-8000-000000000003', 'workflow-run', 'llm', '{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":30,"completion_tokens":10,"total_tokens":40,"total_price":"0.0001500","currency":"USD"}}', NULL, '2026-11-02 08:00:01');
-- runs count on the day of the run, not of the node
SELECT run('b0000000-0000-4000-8000-000000000004', 'a0000000-0000-4000-8000-000000000001', 'app-run', 'end_user', 'e0000000-0000-4000-8000-000000000001', '2026-11-01 23:00:00');
SELECT node('b0000000-0000-4000-8000-000000000004', 'workflow-run', 'llm', '{"model_provider":"x","model_name":"y","usage":{"prompt_tokens":999,"completion_tokens":1}}', NULL, '2026-11-02 00:10:00');
SELECT run('b0000000-0000-4000-8000-000000000005', 'a0000000-0000-4000-8000-000000000001', 'app-run', 'end_user', 'e0000000-0000-4000-8000-000000000001', '2026-11-02 23:59:00');
SELECT node('b0000000-0000-4000-8000-000000000005', 'workflow-run', 'llm', '{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"total_price":"0.0000050","currency":"USD"}}', NULL, '2026-11-03 00:01:00');
-- advanced-chat: its run's nodes count
SELECT run('b0000000-0000-4000-8000-000000000007', 'a0000000-0000-4000-8000-000000000005', 'app-run', 'end_user', 'e0000000-0000-4000-8000-000000000001', '2026-11-02 10:00:00');
SELECT node('b0000000-0000-4000-8000-000000000007', 'workflow-run', 'llm', '{"model_provider":"langgenius/tongyi/tongyi","model_name":"qwen-max","usage":{"prompt_tokens":100,"completion_tokens":100,"total_tokens":200,"total_price":"0.0120000","currency":"RMB"}}', NULL, '2026-11-02 10:00:01');
DROP FUNCTION msg, run, node;
"#;

/// `app | workspace | user | provider | model | currency | in/out/total | requests | cost | split`,
/// for every record of workspace 1 worked out from the rows above.
const WORKSPACE_1: [&str; 10] = [
    "a0000000-0000-4000-8000-000000000001|T1|alice@example.com|openai|gpt-4o|USD|30/10/40|1|0.00015|exact",
    "a0000000-0000-4000-8000-000000000001|T1|sess-1|anthropic|claude-3-5-sonnet|USD|60/0/60|1|0.0003|total_only",
    // 200/40 + 10/5 (inside the iteration) + 1/1 (the run just before midnight)
    "a0000000-0000-4000-8000-000000000001|T1|sess-1|openai|gpt-4o|USD|211/46/257|3|0.00098|exact",
    "a0000000-0000-4000-8000-000000000002|T1|alice@example.com|anthropic|claude-3-5-sonnet|CNY|30/5/35|1|0|exact",
    "a0000000-0000-4000-8000-000000000002|T1|sess-1|openai|gpt-4o|USD|150/30/180|2|0.000675|exact",
    "a0000000-0000-4000-8000-000000000002|T1|sess-1|unknown|in-house-llm|USD|10/2/12|1|0.00001|exact",
    "a0000000-0000-4000-8000-000000000003|T1||openai|gpt-4o-mini|USD|40/8/48|1|0.0000108|exact",
    "a0000000-0000-4000-8000-000000000004|T1|bob@example.com|openai|gpt-4o|USD|7/3/10|1|0.000005|exact",
    "a0000000-0000-4000-8000-000000000005|T1|sess-1|tongyi|qwen-max|CNY|100/100/200|1|0.012|exact",
    "",
];
const WORKSPACE_2: &str =
    "a0000000-0000-4000-8000-000000000007|T2|t2-sess|openai|gpt-4o|USD|11/1/12|1|0.0000012|exact";

pub(crate) fn expected(workspaces: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = WORKSPACE_1
        .iter()
        .filter(|r| !r.is_empty() && workspaces.contains(&"T1"))
        .map(|r| (*r).to_owned())
        .collect();
    if workspaces.contains(&"T2") {
        rows.push(WORKSPACE_2.to_owned());
    }
    rows.sort();
    rows
}

/// A record line as the compact row above; the workspace uuid shown as T1/T2.
fn row(record: &Value) -> String {
    let m = &record["metadata"];
    // serde_json reads the number as f64 and prints 0.000005 as 5e-6; both are the same decimal.
    let cost = record["cost_actual"].to_string();
    let cost = Decimal::from_str(&cost)
        .or_else(|_| Decimal::from_scientific(&cost))
        .unwrap()
        .normalize();
    assert_eq!(record["usage_date"], DAY);
    let workspace = match m["source_workspace_id"].as_str() {
        Some(T1) => "T1",
        Some(T2) => "T2",
        other => panic!("source_workspace_id {other:?}"),
    };
    format!(
        "{}|{workspace}|{}|{}|{}|{}|{}/{}/{}|{}|{}|{}",
        m["source_app_id"].as_str().unwrap(),
        m["user"].as_str().unwrap(),
        record["provider"].as_str().unwrap(),
        record["model"].as_str().unwrap(),
        record["currency"].as_str().unwrap(),
        record["input_tokens"],
        record["output_tokens"],
        record["total_tokens"],
        record["request_count"],
        cost,
        m["token_split"].as_str().unwrap(),
    )
}

pub(crate) fn records(finished: &Finished) -> Vec<String> {
    let mut rows: Vec<String> = finished.stdout_lines().iter().map(row).collect();
    rows.sort();
    rows
}

/// An exporter reading `database` as `user`.
pub(crate) fn exporter(cluster: &Cluster, user: &str, database: &str) -> Exporter {
    Exporter::new()
        .env("DIFY_DATABASE_URL", &cluster.url(user, database))
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .env("MAX_RETRY", "0")
}

pub(crate) fn dry_run(exporter: Exporter) -> Finished {
    dry_run_days(exporter, DAY, DAY)
}

pub(crate) fn dry_run_days(exporter: Exporter, from: &str, to: &str) -> Finished {
    exporter
        .args(["run", "--dry-run", "--from", from, "--to", to])
        .run()
}

/// The log line with `message` (on stderr with `--dry-run`).
#[track_caller]
pub(crate) fn log(finished: &Finished, message: &str) -> Value {
    finished
        .stderr_lines()
        .into_iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no log line {message:?} in:\n{}", finished.stderr))
}

/// The one-line error of a failed run.
#[track_caller]
pub(crate) fn failure(finished: &Finished) -> String {
    finished.code(1);
    let error = log(finished, "run failed")["context"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!error.contains('\n'), "{error}");
    error
}

pub(crate) fn world(cluster: &Cluster) -> String {
    let database = cluster.dify_database();
    cluster.psql(&database, WORLD);
    database
}

#[test]
fn every_workspace_is_read_by_the_rules_of_dify_db() {
    let cluster = pg::shared();
    let database = world(cluster);
    let finished = dry_run(exporter(cluster, SUPERUSER, &database));
    finished.code(0);
    assert_eq!(records(&finished), expected(&["T1", "T2"]));

    let snapshot = log(&finished, "database snapshot opened")["context"].clone();
    assert_eq!(snapshot["isolation"], "repeatable read");
    assert_eq!(snapshot["read_only"], "on");
    assert_eq!(snapshot["time_zone"], "UTC");
    assert_eq!(snapshot["statement_timeout"], "30min");
    assert_eq!(snapshot["tls"], false);
    let skipped = log(&finished, "app mode not collected")["context"].clone();
    assert_eq!(
        (skipped["app_id"].as_str(), skipped["mode"].as_str()),
        (Some(PIPELINE), Some("rag-pipeline"))
    );
    let apps = log(&finished, "apps read from the database")["context"].clone();
    assert_eq!(
        (apps["apps"].as_u64(), apps["workspaces"].as_u64()),
        (Some(7), Some(2))
    );
}

#[test]
fn dify_workspace_id_limits_the_export_to_one_workspace() {
    let cluster = pg::shared();
    let database = world(cluster);
    for (workspace, expected_rows) in [(T1, expected(&["T1"])), (T2, expected(&["T2"]))] {
        let finished =
            dry_run(exporter(cluster, SUPERUSER, &database).env("DIFY_WORKSPACE_ID", workspace));
        finished.code(0);
        assert_eq!(records(&finished), expected_rows, "{workspace}");
    }
    // A workspace without apps exports nothing, successfully, with a warning.
    let empty = "30000000-0000-4000-8000-000000000003";
    cluster.psql(
        &database,
        &format!("INSERT INTO tenants (id, name) VALUES ('{empty}', 'Empty');"),
    );
    let finished = dry_run(exporter(cluster, SUPERUSER, &database).env("DIFY_WORKSPACE_ID", empty));
    finished.code(0);
    assert_eq!(finished.stdout, "");
    let warning = log(
        &finished,
        "the database holds no app (in the selected workspace); nothing is read",
    );
    assert_eq!(warning["level"], "warn");
    assert_eq!(warning["context"]["workspace_id"], empty);
}

/// The `CREATE ROLE … GRANT SELECT …` block of the README, for `database`, with the canary password.
fn readme_grants(database: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```sql\nCREATE ROLE dify_usage_reader")
        .expect("README has the CREATE ROLE block")
        + "```sql\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end]
        .replace("'change-me'", &format!("'{PASSWORD}'"))
        .replace("DATABASE dify ", &format!("DATABASE {database} "))
}

#[test]
fn the_readme_role_with_select_only_reads_everything_and_can_write_nothing() {
    let cluster = pg::shared();
    let database = world(cluster);
    cluster.psql(&database, &readme_grants(&database));
    let finished = dry_run(exporter(cluster, "dify_usage_reader", &database));
    finished.code(0);
    assert_eq!(records(&finished), expected(&["T1", "T2"]));
    assert_eq!(
        log(&finished, "database snapshot opened")["context"]["role"],
        "dify_usage_reader"
    );
    // The role itself cannot write, whatever a future query might try: read-only by default, and
    // without the privilege even in a transaction that asks to write.
    let insert = "INSERT INTO tenants (name) VALUES ('x');";
    let denied = cluster.psql_as_error("dify_usage_reader", &database, insert);
    assert!(
        denied.contains("cannot execute INSERT in a read-only transaction"),
        "{denied}"
    );
    let denied = cluster.psql_as_error(
        "dify_usage_reader",
        &database,
        &format!("BEGIN READ WRITE; {insert}"),
    );
    assert!(
        denied.contains("permission denied for table tenants"),
        "{denied}"
    );
}

#[test]
fn a_role_without_select_on_a_table_is_told_the_grant() {
    let cluster = pg::shared();
    let database = world(cluster);
    cluster.psql(
        &database,
        &format!(
            "CREATE ROLE half_reader LOGIN PASSWORD '{PASSWORD}';
             GRANT SELECT ON apps, messages, workflow_runs, workflow_node_executions TO half_reader;"
        ),
    );
    let error = failure(&dry_run(exporter(cluster, "half_reader", &database)));
    assert!(
        error.contains("the role half_reader lacks SELECT on accounts, end_users; run as an administrator: GRANT SELECT ON accounts, end_users TO half_reader;"),
        "{error}"
    );
}

#[test]
fn a_missing_column_is_named_with_the_dify_version_that_added_it() {
    let cluster = pg::shared();
    let database = cluster.dify_database();
    cluster.psql(
        &database,
        "ALTER TABLE messages DROP COLUMN invoke_from; DROP TABLE end_users;",
    );
    let error = failure(&dry_run(exporter(cluster, SUPERUSER, &database)));
    assert!(
        error.contains("table end_users is missing (created in Dify 0.3.0 by migration 64b051264f32); column messages.invoke_from is missing (added in Dify 0.6.0 by migration e2eacc9a1b63)"),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "127.0.0.1:{}/{database} (DIFY_DATABASE_URL)",
            cluster.port
        )),
        "{error}"
    );
}

#[test]
fn a_wrong_password_fails_at_once_without_printing_either_password() {
    let cluster = pg::shared();
    let database = cluster.dify_database();
    let url = cluster
        .url(SUPERUSER, &database)
        .replace(PASSWORD, "pw-wrong-canary-51c2");
    let finished = Exporter::new()
        .env("DIFY_DATABASE_URL", &url)
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .env("MAX_RETRY", "3")
        .args(["run", "--dry-run", "--from", DAY, "--to", DAY])
        .run();
    let error = failure(&finished);
    assert!(
        error.contains(
            r#"cannot connect: password authentication failed for user "postgres" (SQLSTATE 28P01)"#
        ),
        "{error}"
    );
    // Not transient: no retry although MAX_RETRY allows three.
    assert!(!finished.stderr.contains("retrying"), "{}", finished.stderr);
    assert!(!finished.stderr.contains("pw-wrong-canary-51c2"));
}

#[test]
fn a_stopped_server_is_retried_then_named_in_one_line() {
    let cluster = Cluster::start();
    let database = cluster.dify_database();
    cluster.stop();
    let finished = dry_run(exporter(&cluster, SUPERUSER, &database).env("MAX_RETRY", "1"));
    let error = failure(&finished);
    assert!(
        error.starts_with(&format!(
            "Dify database 127.0.0.1:{}/{database} (DIFY_DATABASE_URL): cannot connect: ",
            cluster.port
        )),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "{error}");
    let retry = log(&finished, "database read failed; retrying")["context"].clone();
    assert_eq!(retry["attempt"], 1);
    assert_eq!(finished.stderr.matches("retrying").count(), 1);
}

#[test]
fn validate_config_names_the_database_source_and_masks_its_password() {
    let cluster = pg::shared();
    let finished = exporter(cluster, SUPERUSER, "dify")
        .env("DIFY_WORKSPACE_ID", T1)
        .args(["validate-config", "--output", "json"])
        .run();
    finished.code(0);
    let report: Value = serde_json::from_str(finished.stdout.trim()).unwrap();
    assert_eq!(report["source"], "database");
    assert_eq!(
        report["config"]["DIFY_DATABASE_URL"],
        format!(
            "postgres://postgres:***@127.0.0.1:{}/dify?sslmode=disable",
            cluster.port
        )
    );
    assert_eq!(report["config"]["DIFY_WORKSPACE_ID"], T1);
    assert_eq!(report["config"]["DIFY_API_URL"], "(unset)");

    let finished = exporter(cluster, SUPERUSER, "dify")
        .env("DIFY_API_URL", "http://127.0.0.1:9")
        .env(
            "DIFY_DATABASE_URL",
            &format!("postgres://u:{PASSWORD}@db/dify?sslmode=sometimes"),
        )
        .args(["validate-config", "--output", "json"])
        .run();
    finished.code(1);
    let report: Value = serde_json::from_str(finished.stdout.trim()).unwrap();
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["variable"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("DIFY_API_URL: is set together with DIFY_DATABASE_URL"),
        "{problems:?}"
    );
    assert_eq!(
        problems[1],
        "DIFY_DATABASE_URL: `postgres://u:***@db/dify?sslmode=sometimes` has sslmode `sometimes`; allowed: disable, prefer, require, verify-ca, verify-full"
    );
}

#[test]
fn tls_is_verified_by_rustls_against_the_trusted_roots() {
    let (cluster, ca) = Cluster::start_with_tls();
    let database = world(&cluster);
    let url = |mode: &str| {
        cluster
            .url(SUPERUSER, &database)
            .replace("sslmode=disable", &format!("sslmode={mode}"))
    };

    // Trusting the test CA (SSL_CERT_FILE), every mode that may encrypt does, and reads everything.
    for mode in ["prefer", "require", "verify-full"] {
        let finished = dry_run(
            exporter(&cluster, SUPERUSER, &database)
                .env("DIFY_DATABASE_URL", &url(mode))
                .env("SSL_CERT_FILE", ca.to_str().unwrap()),
        );
        finished.code(0);
        assert_eq!(
            log(&finished, "database snapshot opened")["context"]["tls"],
            true,
            "{mode}"
        );
        assert_eq!(records(&finished), expected(&["T1", "T2"]), "{mode}");
    }
    // Without trusting it, require fails at once (a certificate is no network hiccup).
    let finished = dry_run(
        exporter(&cluster, SUPERUSER, &database)
            .env("DIFY_DATABASE_URL", &url("require"))
            .env("MAX_RETRY", "2"),
    );
    let error = failure(&finished);
    assert!(error.contains("cannot connect: "), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(!finished.stderr.contains("retrying"), "{}", finished.stderr);
    // disable never encrypts.
    let finished = dry_run(exporter(&cluster, SUPERUSER, &database));
    finished.code(0);
    assert_eq!(
        log(&finished, "database snapshot opened")["context"]["tls"],
        false
    );
}

#[test]
fn sigterm_during_the_read_stops_at_once_and_queues_nothing() {
    let cluster = pg::shared();
    let database = world(cluster);
    let lock = cluster.lock_table(&database, "messages");
    // Without --dry-run the log is on stdout, where the test can wait for it.
    let mut running = exporter(cluster, SUPERUSER, &database)
        .env("GRACEFUL_SHUTDOWN_TIMEOUT", "30")
        .args(["run", "--from", DAY, "--to", DAY])
        .spawn();
    // The next statement reads messages and waits for the lock.
    running.wait_for_line("apps read from the database");
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let finished = running.wait();
    drop(lock);
    finished.code(143);
    let summary = finished.log("run finished");
    assert_eq!(summary["context"]["outcome"], "stopped");
    assert!(
        !finished.stdout.contains("records queued"),
        "{}",
        finished.stdout
    );
}

/// The simulated worlds: three days, every mode (`agent` too), enough runs and conversations for every
/// kind of row (triggered, failed and debug runs, truncated and container nodes, explore, debugger and
/// deleted conversations, unanswered messages).
pub(crate) const FIRST: &str = "2026-11-01";
pub(crate) const LAST: &str = "2026-11-03";

/// The simulator's configuration of those worlds.
pub(crate) fn world_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        first_day: FIRST.parse().unwrap(),
        days: 3,
        apps_per_mode: 2,
        runs_per_app_per_day: 8,
        ..SimConfig::default()
    }
}

pub(crate) fn simulated(seed: u64) -> DifySim {
    DifySim::start(world_config(seed)).unwrap()
}

/// Loads `sim`'s world into `database`.
pub(crate) fn load(cluster: &Cluster, database: &str, sim: &DifySim) {
    let mut rows = Vec::new();
    sim.write_database_rows(&mut rows).unwrap();
    cluster.psql(database, &String::from_utf8(rows).unwrap());
}

pub(crate) fn window() -> (NaiveDate, NaiveDate) {
    (FIRST.parse().unwrap(), LAST.parse().unwrap())
}

pub(crate) fn database_truth(sims: &[&DifySim]) -> Vec<Row> {
    let (first, last) = window();
    let mut rows: Vec<Row> = sims
        .iter()
        .flat_map(|sim| sim.truth_database(first, last))
        .map(truth_row)
        .collect();
    rows.sort();
    rows
}

#[test]
fn the_simulated_world_read_from_the_database_equals_the_database_truth() {
    let cluster = pg::shared();
    let sim = simulated(11);
    let database = cluster.dify_database();
    load(cluster, &database, &sim);
    let finished = dry_run_days(exporter(cluster, SUPERUSER, &database), FIRST, LAST);
    finished.code(0);
    let truth = database_truth(&[&sim]);
    assert!(
        truth.len() > 50,
        "a world too small to prove much: {}",
        truth.len()
    );
    assert_eq!(collect::records(&finished), truth);
    // Every row kind the world adds and the rules leave out is there to be left out.
    let present = cluster.psql(
        &database,
        "SELECT (SELECT count(*) FROM workflow_node_executions WHERE triggered_from = 'single-step'),
                (SELECT count(*) FROM workflow_runs WHERE triggered_from LIKE 'rag-pipeline%'),
                (SELECT count(*) FROM workflow_runs WHERE triggered_from = 'debugging'),
                (SELECT count(*) FROM messages WHERE invoke_from = 'debugger'),
                (SELECT count(*) FROM messages m JOIN apps a ON a.id = m.app_id WHERE a.mode = 'advanced-chat'),
                (SELECT count(*) FROM conversations WHERE is_deleted);",
    );
    assert!(
        present
            .trim()
            .split('|')
            .all(|n| n.parse::<u64>().unwrap() > 0),
        "{present}"
    );
}

#[test]
fn two_workspaces_in_one_database_with_and_without_dify_workspace_id() {
    let cluster = pg::shared();
    let (one, two) = (simulated(21), simulated(22));
    let database = cluster.dify_database();
    load(cluster, &database, &one);
    load(cluster, &database, &two);

    let finished = dry_run_days(exporter(cluster, SUPERUSER, &database), FIRST, LAST);
    finished.code(0);
    assert_eq!(collect::records(&finished), database_truth(&[&one, &two]));
    // Each record names the workspace its app belongs to.
    let workspace_of: BTreeMap<String, String> = [&one, &two]
        .iter()
        .flat_map(|sim| {
            let (first, last) = window();
            let workspace = sim.credentials().workspace_id.clone();
            sim.truth_database(first, last)
                .into_iter()
                .map(move |r| (r.app_id, workspace.clone()))
        })
        .collect();
    for record in finished.stdout_lines() {
        let m = &record["metadata"];
        assert_eq!(
            m["source_workspace_id"].as_str(),
            workspace_of
                .get(m["source_app_id"].as_str().unwrap())
                .map(String::as_str)
        );
    }

    for sim in [&one, &two] {
        let finished = dry_run_days(
            exporter(cluster, SUPERUSER, &database)
                .env("DIFY_WORKSPACE_ID", &sim.credentials().workspace_id),
            FIRST,
            LAST,
        );
        finished.code(0);
        assert_eq!(collect::records(&finished), database_truth(&[sim]));
    }
}

#[test]
fn the_database_and_the_console_api_agree_on_the_same_world() {
    let cluster = pg::shared();
    let sim = simulated(31);
    let database = cluster.dify_database();
    load(cluster, &database, &sim);
    let from_database = dry_run_days(exporter(cluster, SUPERUSER, &database), FIRST, LAST);
    from_database.code(0);
    let from_api = dry_run_days(console_exporter(&sim), FIRST, LAST);
    from_api.code(0);
    let (database_rows, api_rows) = (
        collect::records(&from_database),
        collect::records(&from_api),
    );

    // Every app the console API can read (`agent` apps it cannot): the same tokens, cost (all currencies)
    // and requests per app and day.
    let agent_apps = cluster.psql(&database, "SELECT id FROM apps WHERE mode = 'agent';");
    let agent_apps: Vec<&str> = agent_apps.lines().collect();
    assert!(!agent_apps.is_empty());
    let totals = |rows: &[Row]| -> BTreeMap<(String, String), (u64, Decimal, u64)> {
        let mut totals = BTreeMap::new();
        for r in rows
            .iter()
            .filter(|r| !agent_apps.contains(&r.app_id.as_str()))
        {
            let t =
                totals
                    .entry((r.app_id.clone(), r.day.clone()))
                    .or_insert((0, Decimal::ZERO, 0));
            t.0 += r.tokens.2;
            t.1 += r.cost;
            t.2 += r.request_count;
        }
        totals
    };
    assert_eq!(totals(&database_rows), totals(&api_rows));

    // Workflow and advanced-chat apps: the same records as the console API source.
    let apps_of = |mode: &str| -> Vec<String> {
        cluster
            .psql(
                &database,
                &format!("SELECT id FROM apps WHERE mode = '{mode}';"),
            )
            .lines()
            .map(str::to_owned)
            .collect()
    };
    for mode in ["workflow", "advanced-chat"] {
        let apps = apps_of(mode);
        let database_side = of_apps(&database_rows, &apps);
        assert!(!database_side.is_empty(), "{mode}");
        assert_eq!(database_side, of_apps(&api_rows, &apps), "{mode}");
    }
}

/// An exporter reading `sim` through the console API (login).
pub(crate) fn console_exporter(sim: &DifySim) -> Exporter {
    let credentials = sim.credentials();
    Exporter::new()
        .env("DIFY_API_URL", &sim.base_url())
        .env("DIFY_EMAIL", &credentials.email)
        .env("DIFY_PASSWORD", &credentials.password)
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
}

/// The rows of `apps`.
fn of_apps<'r>(rows: &'r [Row], apps: &[String]) -> Vec<&'r Row> {
    rows.iter().filter(|r| apps.contains(&r.app_id)).collect()
}

#[test]
fn a_connection_lost_mid_read_is_retried_and_the_delivered_records_equal_the_truth() {
    let cluster = pg::shared();
    let sim = simulated(41);
    let database = cluster.dify_database();
    load(cluster, &database, &sim);
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        ..MeterConfig::default()
    })
    .unwrap();
    let lock = cluster.lock_table(&database, "messages");
    let mut running = exporter(cluster, SUPERUSER, &database)
        .env("EXTERNAL_API_URL", &meter.url())
        .env("MAX_RETRY", "2")
        .args(["run", "--from", FIRST, "--to", LAST])
        .spawn();
    // The snapshot is open and its next statement waits for the lock: end the session under it, as a
    // failover or an administrator would, then let the retry through.
    running.wait_for_line("apps read from the database");
    let ended = cluster.psql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'dify-usage-exporter';",
    );
    // The first session at least; helpers that joined its snapshot already end with it.
    assert!(ended.trim().parse::<u32>().unwrap() >= 1, "{ended}");
    drop(lock);
    let finished = running.wait();
    finished.code(0);
    let retry = finished.log("database read failed; retrying")["context"].clone();
    assert_eq!(retry["attempt"], 1);
    assert!(
        retry["error"].as_str().unwrap().contains("SQLSTATE 57P01"),
        "{retry}"
    );
    let mut held: Vec<Row> = meter.records().into_iter().map(held_row).collect();
    held.sort();
    assert_eq!(held, database_truth(&[&sim]));
}
