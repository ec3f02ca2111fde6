//! The `postgres` sink against a real PostgreSQL (tests/pg): the simulator's world read back with
//! SQL equals its truth, replays change nothing, a row only moves to a higher revision, a table
//! that does not fit keeps the queue, a writer role with the documented grants works, and a kill
//! inside the transaction loses nothing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use dify_sim::DifySim;
use rust_decimal::Decimal;

use crate::deliver::{dify, summary, truth};
use crate::pg;
use crate::support::{Exporter, PASSWORD, Row};

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A fresh empty database on the shared cluster.
pub(crate) fn database() -> String {
    let name = format!("sink_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    pg::shared().psql("postgres", &format!("CREATE DATABASE {name};"));
    name
}

/// A run of the console source through the postgres sink alone.
fn exporter(dify: &DifySim, url: &str, state_dir: &Path) -> Exporter {
    let credentials = dify.credentials();
    Exporter::new()
        .env("DIFY_API_URL", &dify.base_url())
        .env("DIFY_API_TOKEN", &credentials.admin_api_key)
        .env("DIFY_WORKSPACE_ID", &credentials.workspace_id)
        .env("SINK_POSTGRES_URL", url)
        .env("STATE_DIR", state_dir.to_str().unwrap())
        .env("DIFY_FETCH_DAYS", "3")
        .env("MAX_RETRY", "1")
        .env("BATCH_SIZE", "7")
}

/// The table read back in the compared shape.
pub(crate) fn table(database: &str) -> Vec<Row> {
    let text = pg::shared().psql(
        database,
        "SELECT usage_date, app_id, app_name, dify_user, provider, model, currency, input_tokens, \
         output_tokens, total_tokens, request_count, cost, token_split FROM dify_usage",
    );
    let mut rows: Vec<Row> = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            Row {
                day: f[0].to_owned(),
                app_id: f[1].to_owned(),
                app_name: f[2].to_owned(),
                user: f[3].to_owned(),
                provider: f[4].to_owned(),
                model: f[5].to_owned(),
                currency: f[6].to_owned(),
                tokens: (
                    f[7].parse().unwrap(),
                    f[8].parse().unwrap(),
                    f[9].parse().unwrap(),
                ),
                request_count: f[10].parse().unwrap(),
                cost: f[11].parse::<Decimal>().unwrap().normalize(),
                token_split: f[12].to_owned(),
            }
        })
        .collect();
    rows.sort();
    rows
}

fn normalized(mut rows: Vec<Row>) -> Vec<Row> {
    for row in &mut rows {
        row.cost = row.cost.normalize();
    }
    rows
}

/// `revision|total_tokens` of every row, in key order.
fn revisions(database: &str) -> String {
    pg::shared().psql(
        database,
        "SELECT source_event_id, revision, total_tokens, cost FROM dify_usage ORDER BY 1",
    )
}

#[test]
fn the_table_holds_exactly_the_truth_and_a_replay_changes_nothing() {
    let cluster = pg::shared();
    let db = database();
    let url = cluster.url(pg::SUPERUSER, &db);
    let dify = dify();
    let state = tempfile::tempdir().unwrap();
    exporter(&dify, &url, state.path())
        .args(["run"])
        .run()
        .code(0);
    let truth = normalized(truth(&dify));
    assert!(truth.len() > 20, "too small a world: {}", truth.len());
    assert_eq!(table(&db), truth);
    let before = revisions(&db);
    assert!(
        before.lines().all(|l| l.split('|').nth(1) == Some("1")),
        "{before}"
    );

    // A replay: the same rows at the same revision again (a fresh state queues them all once more).
    let fresh = tempfile::tempdir().unwrap();
    exporter(&dify, &url, fresh.path())
        .args(["run"])
        .run()
        .code(0);
    assert_eq!(revisions(&db), before);
    // A row already at a higher revision is not overwritten by a lower one.
    cluster.psql(
        &db,
        "UPDATE dify_usage SET revision = revision + 5, total_tokens = 0;",
    );
    let fresh = tempfile::tempdir().unwrap();
    exporter(&dify, &url, fresh.path())
        .args(["run"])
        .run()
        .code(0);
    let after = revisions(&db);
    assert!(
        after
            .lines()
            .all(|l| l.split('|').nth(1) == Some("6") && l.split('|').nth(2) == Some("0")),
        "a lower revision overwrote a row:\n{after}"
    );
    // A correction: a higher revision than the table's updates the row, and its revision grows.
    cluster.psql(&db, "UPDATE dify_usage SET revision = 0;");
    let fresh = tempfile::tempdir().unwrap();
    exporter(&dify, &url, fresh.path())
        .args(["run"])
        .run()
        .code(0);
    assert_eq!(table(&db), truth);
    assert_eq!(revisions(&db), before);
}

#[test]
fn in_one_batch_each_row_takes_the_higher_revision() {
    let cluster = pg::shared();
    let db = database();
    let url = cluster.url(pg::SUPERUSER, &db);
    let dify = dify();
    let state = tempfile::tempdir().unwrap();
    let first = exporter(&dify, &url, state.path()).args(["run"]).run();
    first.code(0);
    // BATCH_SIZE=7 does not cut the sink's batches: each day's rows are one batch, one transaction.
    let counts = cluster.psql(
        &db,
        "SELECT count(*), count(DISTINCT usage_date) FROM dify_usage",
    );
    let (rows, days) = counts.trim().split_once('|').unwrap();
    let (rows, days): (u64, u64) = (rows.parse().unwrap(), days.parse().unwrap());
    assert!(rows > 7 * days, "no day of more than 7 rows: {counts}");
    assert_eq!(summary(&first)["sinks"]["postgres"]["batches_sent"], days);
    let before = revisions(&db);
    // Every second row (in id order, so within each day's batch) is ahead of the ledger, the others
    // behind it; a replay of the ledger at revision 1 must raise only the ones behind.
    cluster.psql(
        &db,
        "UPDATE dify_usage u SET total_tokens = 0, revision = CASE WHEN o.n % 2 = 0 THEN 9 ELSE 0 END \
         FROM (SELECT source_event_id, row_number() OVER (ORDER BY source_event_id) AS n FROM dify_usage) o \
         WHERE o.source_event_id = u.source_event_id;",
    );
    let fresh = tempfile::tempdir().unwrap();
    exporter(&dify, &url, fresh.path())
        .args(["run"])
        .run()
        .code(0);
    let expected: String = before
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let fields: Vec<&str> = line.split('|').collect();
            if index % 2 == 1 {
                format!("{}|9|0|{}\n", fields[0], fields[3])
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(revisions(&db), expected);
}

#[test]
fn a_table_that_does_not_fit_keeps_the_batch_queued_until_it_is_fixed() {
    let cluster = pg::shared();
    let db = database();
    cluster.psql(
        &db,
        "CREATE TABLE dify_usage (source_event_id text PRIMARY KEY, usage_date date, app_id text, \
         app_name text, workspace_id text, dify_user text, customer text, provider text, model text, \
         input_tokens bigint, output_tokens bigint, total_tokens bigint, request_count bigint, \
         cost double precision, currency char(3), token_split text, exported_at timestamptz);",
    );
    let url = cluster.url(pg::SUPERUSER, &db);
    let dify = dify();
    let state = tempfile::tempdir().unwrap();
    let failed = exporter(&dify, &url, state.path()).args(["run"]).run();
    failed.code(1);
    let all = format!("{}{}", failed.stdout, failed.stderr);
    for needle in [
        "SINK_POSTGRES_TABLE",
        "column cost is double precision, expected numeric",
        "column revision (bigint) is missing",
    ] {
        assert!(all.contains(needle), "{needle} not in:\n{all}");
    }
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM dify_usage;").trim(),
        "0"
    );
    cluster.psql(
        &db,
        "ALTER TABLE dify_usage ALTER COLUMN cost TYPE numeric, ADD COLUMN revision bigint;",
    );
    exporter(&dify, &url, state.path())
        .args(["run"])
        .run()
        .code(0);
    assert_eq!(table(&db), normalized(truth(&dify)));
}

#[test]
fn a_writer_role_with_the_documented_grants_works_and_the_password_stays_secret() {
    let cluster = pg::shared();
    let db = database();
    cluster.psql(
        &db,
        &format!(
            "CREATE ROLE writer_{db} LOGIN PASSWORD '{PASSWORD}';
             GRANT CONNECT ON DATABASE {db} TO writer_{db};
             CREATE SCHEMA billing;
             GRANT USAGE, CREATE ON SCHEMA billing TO writer_{db};"
        ),
    );
    let url = cluster.url(&format!("writer_{db}"), &db);
    let dify = dify();
    let state = tempfile::tempdir().unwrap();
    exporter(&dify, &url, state.path())
        .env("SINK_POSTGRES_TABLE", "billing.dify_usage")
        .args(["run"])
        .run()
        .code(0);
    let count = cluster.psql(&db, "SELECT count(*) FROM billing.dify_usage;");
    assert_eq!(count.trim(), truth(&dify).len().to_string());
    let bytes = crate::support::database_bytes(state.path());
    assert!(!String::from_utf8_lossy(&bytes).contains(PASSWORD));

    // A wrong password: a configuration error naming the variable, without the password.
    let wrong = url.replace(PASSWORD, "not-the-password");
    let state = tempfile::tempdir().unwrap();
    let failed = exporter(&dify, &wrong, state.path())
        .env("SINK_POSTGRES_TABLE", "billing.dify_usage")
        .args(["run"])
        .run();
    failed.code(1);
    assert!(format!("{}{}", failed.stdout, failed.stderr).contains("SINK_POSTGRES_URL"));
}

#[test]
fn a_kill_inside_the_transaction_loses_and_doubles_nothing() {
    use nix::sys::signal::Signal;
    let cluster = pg::shared();
    let db = database();
    let url = cluster.url(pg::SUPERUSER, &db);
    let dify = dify();
    let state = tempfile::tempdir().unwrap();
    cluster.psql(&db, &format!("CREATE TABLE dify_usage ({COLUMNS_SQL});"));
    let lock = cluster.lock_table(&db, "dify_usage");
    let running = exporter(&dify, &url, state.path()).args(["run"]).spawn();
    // The exporter waits for the lock inside its transaction: an event to await.
    let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                   WHERE NOT l.granted AND a.application_name = 'dify-usage-exporter' AND a.xact_start IS NOT NULL";
    let deadline = std::time::Instant::now() + crate::support::EVENT_TIMEOUT;
    while cluster.psql(&db, waiting).trim() == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter never waited for the lock"
        );
        std::thread::yield_now();
    }
    running.signal(Signal::SIGKILL);
    let finished = running.wait();
    assert_eq!(finished.code, None);
    drop(lock);
    assert_eq!(
        cluster.psql(&db, "SELECT count(*) FROM dify_usage;").trim(),
        "0"
    );
    exporter(&dify, &url, state.path())
        .args(["run"])
        .run()
        .code(0);
    assert_eq!(table(&db), normalized(truth(&dify)));
}

const COLUMNS_SQL: &str = "source_event_id text PRIMARY KEY, usage_date date NOT NULL, \
    app_id text NOT NULL, app_name text NOT NULL, workspace_id text NULL, dify_user text NOT NULL, \
    customer text NOT NULL, provider text NOT NULL, model text NOT NULL, input_tokens bigint NOT NULL, \
    output_tokens bigint NOT NULL, total_tokens bigint NOT NULL, request_count bigint NOT NULL, \
    cost numeric NOT NULL, currency char(3) NOT NULL, token_split text NOT NULL, revision bigint NOT NULL, \
    exported_at timestamptz NOT NULL";
