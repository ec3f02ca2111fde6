//! The ledger (docs/ledger.md) against a real Dify database: the world of tests/difydb.rs in the test
//! PostgreSQL, changed between runs the way Dify changes it (a deleted conversation's messages are
//! hard-deleted; a run finishes late), and what the HTTP receiver holds after each run.

use std::collections::BTreeMap;
use std::path::Path;

use dify_sim::{HeldRecord, MeterConfig, MeterSim};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::deliver::{state_dir, summary};
use crate::difydb::{self, DAY};
use crate::pg::{self, Cluster, SUPERUSER};
use crate::support::{EXTERNAL_TOKEN, Exporter, Finished};

/// A record as `app|user|customer|provider|model|currency|in/out/total|requests|cost|split`.
type Line = String;

fn meter() -> MeterSim {
    MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        ..MeterConfig::default()
    })
    .unwrap()
}

fn exporter(cluster: &Cluster, database: &str, meter: &MeterSim, state: &Path) -> Exporter {
    difydb::exporter(cluster, SUPERUSER, database)
        .env("EXTERNAL_API_URL", &meter.url())
        .env("STATE_DIR", state.to_str().unwrap())
}

fn run_day(exporter: Exporter) -> Finished {
    exporter.args(["run", "--from", DAY, "--to", DAY]).run()
}

fn held_line(r: &HeldRecord) -> Line {
    format!(
        "{}|{}|{}|{}|{}|{}|{}/{}/{}|{}|{}|{:?}",
        r.app_id,
        r.user,
        r.customer,
        r.provider,
        r.model,
        r.currency,
        r.input_tokens,
        r.output_tokens,
        r.total_tokens,
        r.request_count,
        r.cost.normalize(),
        r.token_split
    )
}

fn held(meter: &MeterSim) -> Vec<Line> {
    let mut lines: Vec<Line> = meter.records().iter().map(held_line).collect();
    lines.sort();
    lines
}

/// Dify's records of the day as they are now, by key (app|user|provider|model|currency), with the
/// user as customer.
fn truth_now(cluster: &Cluster, database: &str) -> BTreeMap<String, (u64, Decimal, Line)> {
    let finished = difydb::dry_run(difydb::exporter(cluster, SUPERUSER, database));
    finished.code(0);
    finished
        .stdout_lines()
        .iter()
        .map(|r| {
            let m = &r["metadata"];
            let text = |v: &Value| v.as_str().unwrap().to_owned();
            let key = format!(
                "{}|{}|{}|{}|{}",
                text(&m["source_app_id"]),
                text(&m["user"]),
                text(&r["provider"]),
                text(&r["model"]),
                text(&r["currency"])
            );
            let cost = Decimal::from_scientific(&r["cost_actual"].to_string())
                .or_else(|_| r["cost_actual"].to_string().parse())
                .unwrap()
                .normalize();
            let split = if m["token_split"] == "exact" {
                "Exact"
            } else {
                "TotalOnly"
            };
            let tokens = r["total_tokens"].as_u64().unwrap();
            let line = format!(
                "{}|{}|{}|{}|{}|{}|{}/{}/{}|{}|{cost}|{split}",
                text(&m["source_app_id"]),
                text(&m["user"]),
                text(&m["customer"]),
                text(&r["provider"]),
                text(&r["model"]),
                text(&r["currency"]),
                r["input_tokens"],
                r["output_tokens"],
                tokens,
                r["request_count"],
            );
            (key, (tokens, cost, line))
        })
        .collect()
}

fn lines(truth: &BTreeMap<String, (u64, Decimal, Line)>) -> Vec<Line> {
    let mut lines: Vec<Line> = truth.values().map(|(_, _, line)| line.clone()).collect();
    lines.sort();
    lines
}

/// Bot's conversation of end user sess-1 is deleted: Dify 1.12 hard-deletes its messages.
const DELETE_CONVERSATION: &str = "DELETE FROM messages WHERE app_id = 'a0000000-0000-4000-8000-000000000002' \
     AND conversation_id = 'c0000000-0000-4000-8000-000000000001' \
     AND from_end_user_id = 'e0000000-0000-4000-8000-000000000001'";

#[test]
fn usage_dify_deletes_after_export_is_kept_under_keep_and_followed_under_follow() {
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    let meter = meter();
    let (dir, state) = state_dir();
    let before = truth_now(cluster, &database);
    run_day(exporter(cluster, &database, &meter, &state)).code(0);
    assert_eq!(held(&meter), lines(&before));

    cluster.psql(&database, DELETE_CONVERSATION);
    let after = truth_now(cluster, &database);
    // What Dify no longer shows, worked out from its two answers.
    let (mut keys, mut tokens, mut cost) = (0_u64, 0_u64, Decimal::ZERO);
    for (key, (was_tokens, was_cost, _)) in &before {
        let (now_tokens, now_cost) = after.get(key).map_or((0, Decimal::ZERO), |t| (t.0, t.1));
        if now_tokens < *was_tokens || now_cost < *was_cost {
            keys += 1;
            tokens += was_tokens - now_tokens;
            cost += was_cost - now_cost;
        }
    }
    assert!(keys > 0 && tokens > 0, "the deletion removed usage");

    // keep: the receiver keeps the billed totals; nothing is sent; the run says what Dify lost.
    let metrics = dir.path().join("exporter.prom");
    let kept = run_day(
        exporter(cluster, &database, &meter, &state)
            .env("METRICS_TEXTFILE", metrics.to_str().unwrap()),
    );
    kept.code(0);
    assert_eq!(held(&meter), lines(&before));
    let warning = kept.log(
        "Dify no longer shows usage the ledger exported (deleted conversations, retention, archiving); the \
         ledger keeps the exported totals (USAGE_DECREASES=keep)",
    )["context"]
        .clone();
    assert_eq!(warning["records"], keys);
    assert_eq!(warning["tokens"], tokens);
    assert_eq!(warning["cost"], format!("{} USD", cost.normalize()));
    let figures = summary(&kept);
    assert_eq!(figures["ledger_kept_decreases"], keys);
    assert_eq!(figures["ledger_decreased_tokens"], tokens);
    assert_eq!(figures["batches_queued_now"], 0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&format!(
            "dify_usage_exporter_ledger_kept_decreases {keys}\n"
        )),
        "{text}"
    );

    // follow: the receiver gets the lower totals, and zeros for what vanished.
    let followed =
        run_day(exporter(cluster, &database, &meter, &state).env("USAGE_DECREASES", "follow"));
    followed.code(0);
    let mut expected = lines(&after);
    for (key, (_, _, line)) in &before {
        if !after.contains_key(key) {
            let fields: Vec<&str> = line.split('|').collect();
            let split = fields[9];
            expected.push(format!("{}|0/0/0|0|0|{split}", fields[..6].join("|")));
        }
    }
    expected.sort();
    assert_eq!(held(&meter), expected);
    let figures = summary(&followed);
    assert_eq!(
        (
            &figures["ledger_decreases"],
            &figures["ledger_kept_decreases"],
            &figures["records_sent"],
        ),
        (&Value::from(keys), &Value::from(0), &Value::from(keys))
    );

    // Nothing more to follow: a record at zero that stays gone is no decrease.
    let again =
        run_day(exporter(cluster, &database, &meter, &state).env("USAGE_DECREASES", "follow"));
    again.code(0);
    assert_eq!(summary(&again)["ledger_decreases"], 0);
    assert_eq!(summary(&again)["records_sent"], 0);
}

#[test]
fn a_run_that_finishes_late_raises_one_record_to_its_next_revision() {
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    let meter = meter();
    let (_dir, state) = state_dir();
    run_day(exporter(cluster, &database, &meter, &state)).code(0);

    // A workflow run of sess-1 that finished after the first export.
    cluster.psql(
        &database,
        r#"INSERT INTO workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, version, status,
    created_by_role, created_by, created_at)
  VALUES ('b0000000-0000-4000-8000-0000000000f1', '10000000-0000-4000-8000-000000000001',
    'a0000000-0000-4000-8000-000000000001', 'f0000000-0000-4000-8000-000000000000', 'workflow', 'app-run', 'v1',
    'succeeded', 'end_user', 'e0000000-0000-4000-8000-000000000001', '2026-11-02 23:00:00');
INSERT INTO workflow_node_executions (tenant_id, app_id, workflow_id, triggered_from, workflow_run_id, index,
    node_id, node_type, title, inputs, process_data, status, created_at, created_by_role, created_by)
  VALUES ('10000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001',
    'f0000000-0000-4000-8000-000000000000', 'workflow-run', 'b0000000-0000-4000-8000-0000000000f1', 1, 'llm-1',
    'llm', 'LLM', '{}', '{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"total_price":"0.0123456","currency":"USD"}}',
    'succeeded', '2026-11-02 23:00:01', 'end_user', 'e0000000-0000-4000-8000-000000000001');"#,
    );
    let truth = truth_now(cluster, &database);
    let raised = run_day(exporter(cluster, &database, &meter, &state));
    raised.code(0);
    assert_eq!(held(&meter), lines(&truth));
    let figures = summary(&raised);
    assert_eq!(figures["ledger_rows_revised"], 1);
    assert_eq!(figures["ledger_rows_new"], 0);
    assert_eq!(figures["records_sent"], 1);
    assert_eq!(figures["sinks"]["http"]["records_sent"], 1);

    let ledger = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let (revision, total): (i64, i64) = ledger
        .query_row(
            "SELECT revision, total_tokens FROM ledger WHERE app_id = 'a0000000-0000-4000-8000-000000000001' \
             AND user = 'sess-1' AND model = 'gpt-4o'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((revision, total), (2, 257 + 1100));
}

#[test]
fn customers_come_from_the_user_map_and_rmb_leaves_as_cny() {
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    let meter = meter();
    let (dir, state) = state_dir();
    let map = dir.path().join("users.csv");
    std::fs::write(
        &map,
        "user,customer\nalice@example.com,Finance\nsess-1,\"ACME, Inc.\"\n",
    )
    .unwrap();
    let finished = run_day(
        exporter(cluster, &database, &meter, &state).env("USER_MAP_FILE", map.to_str().unwrap()),
    );
    finished.code(0);
    let records = meter.records();
    let mut unmapped = std::collections::BTreeSet::new();
    for record in &records {
        let expected = match record.user.as_str() {
            "alice@example.com" => "Finance",
            "sess-1" => "ACME, Inc.",
            other => {
                unmapped.insert(other.to_owned());
                other
            }
        };
        assert_eq!(record.customer, expected, "{record:?}");
    }
    assert!(unmapped.len() >= 2, "{unmapped:?}");
    assert_eq!(summary(&finished)["users_unmapped"], unmapped.len());
    let currencies: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.currency.as_str()).collect();
    assert_eq!(
        currencies,
        ["CNY", "USD"].into(),
        "Dify's RMB rows leave as CNY"
    );
}

#[test]
fn a_malformed_user_map_stops_the_run_and_keeps_what_is_queued() {
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    let meter = meter();
    let (dir, state) = state_dir();
    // The receiver is down: the day stays queued.
    let down = run_day(
        exporter(cluster, &database, &meter, &state)
            .env("EXTERNAL_API_URL", "http://127.0.0.1:9/v1/usage"),
    );
    down.code(1);
    let queued = summary(&down)["batches_queued"].as_u64().unwrap();
    assert!(queued > 0);
    let status_before = crate::support::status(&state, "json");

    let map = dir.path().join("users.csv");
    std::fs::write(
        &map,
        "user,customer\nalice@example.com,Finance\nbob@example.com\n",
    )
    .unwrap();
    let refused = run_day(
        exporter(cluster, &database, &meter, &state).env("USER_MAP_FILE", map.to_str().unwrap()),
    );
    refused.code(1);
    let problem = format!(
        "USER_MAP_FILE: `{}` line 3: has 1 fields; each line must be `user,customer` (quote a value that holds a comma)",
        map.display()
    );
    assert!(refused.stdout.contains(&problem), "{}", refused.stdout);
    assert!(meter.records().is_empty());
    let status_after = crate::support::status(&state, "json");
    let outbox = |status: &str| {
        let status: Value = serde_json::from_str(status).unwrap();
        (status["queued"].clone(), status["ledger"].clone())
    };
    assert_eq!(outbox(&status_after), outbox(&status_before));

    let validate = Exporter::new()
        .env("DIFY_DATABASE_URL", &cluster.url(SUPERUSER, &database))
        .env("EXTERNAL_API_URL", &meter.url())
        .env("USER_MAP_FILE", map.to_str().unwrap())
        .args(["validate-config"])
        .run();
    validate.code(1);
    assert!(
        validate.stdout.contains(&problem) || validate.stderr.contains(&problem),
        "{}{}",
        validate.stdout,
        validate.stderr
    );
}

#[test]
fn every_sink_keeps_billed_usage_under_keep_and_follows_it_under_follow() {
    use crate::support::Row;
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    let meter = meter();
    let (dir, state) = state_dir();
    let table_db = crate::sinkpg::database();
    let files = dir.path().join("files");
    let every_sink = |policy: &str| {
        exporter(cluster, &database, &meter, &state)
            .env("SINK_POSTGRES_URL", &cluster.url(SUPERUSER, &table_db))
            .env("SINK_FILE_DIR", files.to_str().unwrap())
            .env("USAGE_DECREASES", policy)
    };
    let normalized = |mut rows: Vec<Row>| {
        for row in &mut rows {
            row.cost = row.cost.normalize();
        }
        rows.sort();
        rows
    };
    let receivers = || {
        (
            normalized(crate::deliver::held(&meter)),
            normalized(crate::sinkpg::table(&table_db)),
            normalized(crate::file_sink::read_back(&files, "csv")),
        )
    };
    run_day(every_sink("keep")).code(0);
    let billed = receivers().0;
    assert_eq!(
        receivers(),
        (billed.clone(), billed.clone(), billed.clone())
    );

    cluster.psql(&database, DELETE_CONVERSATION);
    run_day(every_sink("keep")).code(0);
    assert_eq!(
        receivers(),
        (billed.clone(), billed.clone(), billed.clone()),
        "keep: every sink still holds what was billed"
    );

    run_day(every_sink("follow")).code(0);
    let (http, table, file) = receivers();
    assert_ne!(http, billed, "follow lowers the records");
    assert_eq!((&table, &file), (&http, &http), "every sink follows alike");
    let revisions = cluster.psql(&table_db, "SELECT max(revision) FROM dify_usage");
    assert_eq!(revisions.trim(), "2");
}

/// Dify's engine writes each run's `total_tokens`, the sum of its nodes' usage; the world's runs
/// get theirs (the containers and the node without usage add nothing).
const RUN_TOTALS: &str = "UPDATE workflow_runs SET total_tokens = CASE id::text \
     WHEN 'b0000000-0000-4000-8000-000000000001' THEN 315 WHEN 'b0000000-0000-4000-8000-000000000002' THEN 1000 \
     WHEN 'b0000000-0000-4000-8000-000000000003' THEN 40 WHEN 'b0000000-0000-4000-8000-000000000004' THEN 1000 \
     WHEN 'b0000000-0000-4000-8000-000000000005' THEN 2 WHEN 'b0000000-0000-4000-8000-000000000006' THEN 1000 \
     WHEN 'b0000000-0000-4000-8000-000000000007' THEN 200 END";

/// `reconcile --output json` of the day: app id → `verdict ledger-tokens/dify-tokens ledger-cost/dify-cost`.
fn reconciled(exporter: Exporter, code: i32) -> BTreeMap<String, String> {
    let finished = exporter
        .args(["reconcile", "--from", DAY, "--to", DAY, "--output", "json"])
        .run();
    finished.code(code);
    let document: Value = serde_json::from_str(&finished.stdout).unwrap();
    document["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let cost = |v: &Value| {
                v.as_str().map_or("-".to_owned(), |c| {
                    c.parse::<Decimal>().unwrap().normalize().to_string()
                })
            };
            (
                d["app_id"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}/{} {}/{}",
                    d["verdict"].as_str().unwrap(),
                    d["ledger"]["tokens"],
                    d["dify"]["tokens"],
                    cost(&d["ledger"]["cost"]),
                    cost(&d["dify"]["cost"])
                ),
            )
        })
        .collect()
}

#[test]
fn reconcile_sums_dify_statistics_in_its_database_and_names_what_the_ledger_kept() {
    let cluster = pg::shared();
    let database = difydb::world(cluster);
    cluster.psql(&database, RUN_TOTALS);
    let meter = meter();
    let (_dir, state) = state_dir();
    run_day(exporter(cluster, &database, &meter, &state)).code(0);
    let app = |n: u8| format!("a0000000-0000-4000-8000-00000000000{n}");
    let mut expected: BTreeMap<String, String> = [
        // Dify's workflow statistic counts app-run runs only: the webhook run's 40 tokens are the gap.
        (app(1), "triggered-runs 357/317 0.00143/-"),
        (app(2), "agrees 227/227 0.000685/0.000685"),
        (app(3), "agrees 48/48 0.0000108/0.0000108"),
        (app(4), "agrees 10/10 0.000005/0.000005"),
        (app(5), "agrees 200/200 0.012/-"),
        (app(7), "agrees 12/12 0.0000012/0.0000012"),
    ]
    .into_iter()
    .map(|(id, verdict)| (id, verdict.to_owned()))
    .collect();
    assert_eq!(
        reconciled(exporter(cluster, &database, &meter, &state), 0),
        expected
    );

    // Dify deletes a conversation's messages: the ledger kept them, and says so.
    cluster.psql(&database, DELETE_CONVERSATION);
    expected.insert(app(2), "kept-decrease 227/47 0.000685/0.00001".to_owned());
    assert_eq!(
        reconciled(exporter(cluster, &database, &meter, &state), 0),
        expected
    );

    // An app-day the ledger misses fails by name.
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.execute("DELETE FROM ledger WHERE app_id = ?1", [app(3)])
        .unwrap();
    let finished = exporter(cluster, &database, &meter, &state)
        .args(["reconcile", "--from", DAY, "--to", DAY])
        .run();
    finished.code(1);
    assert!(
        finished.stdout.contains(&format!(
            "{DAY} Writer ({}): ledger 0 tokens cost 0, Dify 48 tokens cost 0.0000108",
            app(3)
        )) && finished.stdout.contains(": ledger-below-dify\n"),
        "{}",
        finished.stdout
    );
}
