//! The database source's sessions and archived runs against a real PostgreSQL (tests/pg): several
//! sessions on one exported snapshot give the records of one session, byte for byte; a snapshot that
//! cannot be shared (not exportable, or not importable) is read through one session with one `warn`;
//! runs Dify archived are named per app-day, by both sources.

use std::collections::BTreeSet;

use dify_sim::{DifySim, SimConfig};

use crate::collect;
use crate::difydb::{
    FIRST, LAST, console_exporter, database_truth, dry_run_days, exporter, load, log, simulated,
    world_config,
};
use crate::pg::bouncer::Bouncer;
use crate::pg::{self, Cluster, SUPERUSER};
use crate::support::{Finished, PASSWORD};

/// A simulated world in a fresh database; its name.
fn loaded(cluster: &Cluster, sim: &DifySim) -> String {
    let database = cluster.dify_database();
    load(cluster, &database, sim);
    database
}

fn read(cluster: &Cluster, user: &str, database: &str, connections: &str) -> Finished {
    let finished = dry_run_days(
        exporter(cluster, user, database).env("DIFY_DATABASE_CONNECTIONS", connections),
        FIRST,
        LAST,
    );
    finished.code(0);
    finished
}

#[test]
fn four_sessions_on_one_snapshot_print_the_records_of_one_byte_for_byte() {
    let cluster = pg::shared();
    let sim = simulated(51);
    let database = loaded(cluster, &sim);
    let pages = cluster.psql(
        &database,
        "SELECT pg_relation_size('workflow_node_executions') / current_setting('block_size')::int;",
    );
    let pages: u64 = pages.trim().parse().unwrap();
    assert!(pages >= 8, "too few pages to split: {pages}");

    let one = read(cluster, SUPERUSER, &database, "1");
    let four = read(cluster, SUPERUSER, &database, "4");
    assert_eq!(four.stdout, one.stdout);
    assert_eq!(collect::records(&four), database_truth(&[&sim]));

    // The messages, then the node executions in 2 ranges per session.
    assert_eq!(sessions_and_parts(&four), (4, 9));
    assert_eq!(sessions_and_parts(&one), (1, 2));
    for finished in [&one, &four] {
        assert_eq!(warnings(finished), Vec::<String>::new());
    }
}

#[test]
fn out_of_range_connections_are_refused_with_the_allowed_range() {
    let cluster = pg::shared();
    for value in ["0", "17", "many"] {
        let finished = exporter(cluster, SUPERUSER, "dify")
            .env("DIFY_DATABASE_CONNECTIONS", value)
            .args(["validate-config", "--output", "json"])
            .run();
        finished.code(1);
        let report: serde_json::Value = serde_json::from_str(finished.stdout.trim()).unwrap();
        let problems = report["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0]["variable"], "DIFY_DATABASE_CONNECTIONS");
        assert_eq!(
            problems[0]["message"],
            format!("`{value}` is not a whole number from 1 to 16")
        );
    }
}

/// (sessions, parts) of the run's `database parts read` line.
fn sessions_and_parts(finished: &Finished) -> (u64, u64) {
    let parts = &log(finished, "database parts read")["context"];
    (
        parts["sessions"].as_u64().unwrap(),
        parts["parts"].as_u64().unwrap(),
    )
}

/// The context of the run's warning that its sessions could not share one snapshot.
fn unshared_snapshot_warning(finished: &Finished) -> serde_json::Value {
    log(
        finished,
        "the snapshot cannot be shared; reading through one connection",
    )["context"]
        .clone()
}

/// The messages of the run's `warn` lines.
fn warnings(finished: &Finished) -> Vec<String> {
    finished
        .stderr_lines()
        .iter()
        .filter(|l| l["level"] == "warn")
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// A role that reads the six tables and the archive.
fn reader(cluster: &Cluster, database: &str, role: &str, extra: &str) {
    cluster.psql(
        database,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}';
             GRANT SELECT ON apps, accounts, end_users, messages, workflow_runs,
               workflow_node_executions, workflow_archive_logs TO {role};
             {extra}"
        ),
    );
}

#[test]
fn behind_an_exhausted_pgbouncer_the_snapshot_is_read_through_one_session() {
    let cluster = pg::shared();
    let sim = simulated(52);
    let database = loaded(cluster, &sim);
    // One server connection per pool, held by the first session's transaction: the others wait in
    // PgBouncer's queue for as long as the snapshot is open.
    let bouncer = Bouncer::start(cluster);
    let finished = dry_run_days(
        exporter(cluster, SUPERUSER, &database)
            .env("DIFY_DATABASE_URL", &bouncer.url(&database))
            .env("DIFY_DATABASE_CONNECTIONS", "3")
            .env("HTTP_TIMEOUT", "1"),
        FIRST,
        LAST,
    );
    finished.code(0);
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    let warning = unshared_snapshot_warning(&finished);
    assert_eq!(
        (warning["sessions"].as_u64(), warning["requested"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        warning["error"],
        "no answer within 1 s (HTTP_TIMEOUT, at most 10 s)"
    );
    assert_eq!(sessions_and_parts(&finished).0, 1);
    assert!(!finished.stderr.contains(PASSWORD));
}

#[test]
fn a_snapshot_that_cannot_be_exported_is_read_in_a_fresh_one_through_one_session() {
    let cluster = pg::shared();
    let sim = simulated(53);
    let database = loaded(cluster, &sim);
    // Function privileges are per database: only this one loses pg_export_snapshot().
    reader(
        cluster,
        &database,
        "plain_reader",
        "REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC;",
    );
    let finished = read(cluster, "plain_reader", &database, "4");
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    let warning = unshared_snapshot_warning(&finished);
    assert_eq!(
        warning["error"],
        "permission denied for function pg_export_snapshot (SQLSTATE 42501)"
    );
    let opened = finished
        .stderr_lines()
        .iter()
        .filter(|l| l["message"] == "database snapshot opened")
        .count();
    assert_eq!(opened, 2, "the aborted snapshot, then the fresh one");
}

/// A world whose workflow runs before `LAST` are archived.
pub(crate) fn archived_world(seed: u64) -> DifySim {
    DifySim::start(SimConfig {
        archived_before: Some(LAST.parse().unwrap()),
        ..world_config(seed)
    })
    .unwrap()
}

const ARCHIVED: &str = "workflow runs of this app-day are archived: their node usage is no longer in the database and is not counted";

/// (app id, day, archived runs) of every archive warning.
pub(crate) fn archive_warnings(finished: &Finished) -> BTreeSet<(String, String, u64)> {
    finished
        .stderr_lines()
        .iter()
        .filter(|l| l["message"] == ARCHIVED)
        .map(|l| {
            let c = &l["context"];
            (
                c["app_id"].as_str().unwrap().to_owned(),
                c["day"].as_str().unwrap().to_owned(),
                c["archived_runs"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn archived_app_days_are_warned_by_both_sources() {
    let cluster = pg::shared();
    let sim = archived_world(54);
    let database = loaded(cluster, &sim);
    // Every workflow app has 8 archived runs on each of the first two days, none on the last.
    let expected: BTreeSet<(String, String, u64)> = cluster
        .psql(
            &database,
            "SELECT id FROM apps WHERE mode = 'workflow' ORDER BY id;",
        )
        .lines()
        .flat_map(|app| ["2026-11-01", "2026-11-02"].map(|day| (app.to_owned(), day.to_owned(), 8)))
        .collect();
    assert_eq!(expected.len(), 4);
    let stored = cluster.psql(
        &database,
        "SELECT count(*) FROM workflow_archive_logs WHERE run_created_at < '2026-11-03';",
    );
    assert_eq!(stored.trim(), "32");

    let from_database = read(cluster, SUPERUSER, &database, "4");
    assert_eq!(archive_warnings(&from_database), expected);
    assert_eq!(collect::records(&from_database), database_truth(&[&sim]));

    let from_api = dry_run_days(console_exporter(&sim), FIRST, LAST);
    from_api.code(0);
    assert_eq!(archive_warnings(&from_api), expected);
    let (first, last) = crate::difydb::window();
    let mut truth: Vec<_> = sim
        .truth(first, last)
        .into_iter()
        .map(crate::support::truth_row)
        .collect();
    truth.sort();
    assert_eq!(collect::records(&from_api), truth);

    // A window after the archived days: nothing to warn.
    let later = dry_run_days(exporter(cluster, SUPERUSER, &database), LAST, LAST);
    later.code(0);
    assert!(archive_warnings(&later).is_empty(), "{}", later.stderr);
}

#[test]
fn without_the_archive_table_or_its_grant_the_read_goes_on() {
    let cluster = pg::shared();
    let sim = archived_world(55);
    let database = loaded(cluster, &sim);
    reader(
        cluster,
        &database,
        "six_tables",
        "REVOKE SELECT ON workflow_archive_logs FROM six_tables;",
    );
    let finished = read(cluster, "six_tables", &database, "2");
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    assert!(archive_warnings(&finished).is_empty());
    assert_eq!(
        warnings(&finished),
        [
            "cannot see which workflow runs Dify archived (their usage is missing): the role lacks SELECT on workflow_archive_logs; GRANT SELECT ON workflow_archive_logs TO six_tables;"
        ]
    );

    // Dify before 1.12 has no such table.
    cluster.psql(&database, "DROP TABLE workflow_archive_logs;");
    let finished = read(cluster, SUPERUSER, &database, "2");
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    assert_eq!(warnings(&finished), Vec::<String>::new());
}
