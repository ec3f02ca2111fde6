//! The MySQL dialect of the database source against real MariaDB servers (tests/mariadb): Dify's
//! tables from tests/data/dify-schema-mysql.sql, the simulator's world written the way Dify writes it
//! on MySQL (messages in the server's local time, runs and nodes in UTC), the real `exporter` binary
//! reading them. The records must equal the simulator's database truth and what the PostgreSQL dialect
//! reads from the same world, at Tokyo time and at UTC.

use std::collections::BTreeSet;

use dify_sim::{DifySim, MeterConfig, MeterSim};

use crate::collect;
use crate::difydb::{self, FIRST, LAST, database_truth, dry_run_days, failure, log, simulated};
use crate::difydb_sessions::{archive_warnings, archived_world};
use crate::mariadb::{self, SUPERUSER, Server};
use crate::pg;
use crate::support::{EXTERNAL_TOKEN, Exporter, Finished, PASSWORD, Row, database_bytes, held_row};

/// An exporter reading `database` as `user`.
fn exporter(server: &Server, user: &str, database: &str) -> Exporter {
    Exporter::new()
        .env("DIFY_DATABASE_URL", &server.url(user, database))
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .env("MAX_RETRY", "0")
}

/// A fresh database holding `sim`'s world.
fn loaded(server: &Server, sim: &DifySim) -> String {
    let database = server.dify_database();
    load(server, &database, sim);
    database
}

/// Adds `sim`'s world to `database`.
fn load(server: &Server, database: &str, sim: &DifySim) {
    let mut rows = Vec::new();
    sim.write_database_rows(&mut rows).unwrap();
    server.mariadb(
        database,
        &mariadb::inserts(&String::from_utf8(rows).unwrap()),
    );
}

fn read(server: &Server, user: &str, database: &str) -> Finished {
    read_with(exporter(server, user, database))
}

fn read_with(exporter: Exporter) -> Finished {
    let finished = dry_run_days(exporter, FIRST, LAST);
    finished.code(0);
    finished
}

/// The same world read from PostgreSQL: its records, its archive warnings, and its first message
/// as Tokyo time and first run (UTC).
fn from_postgres(sim: &DifySim) -> (Vec<Row>, BTreeSet<(String, String, u64)>, String) {
    let cluster = pg::shared();
    let database = cluster.dify_database();
    difydb::load(cluster, &database, sim);
    let finished = dry_run_days(
        difydb::exporter(cluster, pg::SUPERUSER, &database),
        FIRST,
        LAST,
    );
    finished.code(0);
    let stored = cluster.psql(
        &database,
        "SELECT min(created_at) + interval '9 hours' FROM messages; SELECT min(created_at) FROM workflow_runs;",
    );
    (
        collect::records(&finished),
        archive_warnings(&finished),
        stored,
    )
}

#[test]
fn at_tokyo_time_mariadb_gives_the_records_of_postgresql_and_the_database_truth() {
    let server = mariadb::tokyo();
    let sim = archived_world(61);
    let database = loaded(server, &sim);
    // As Dify writes them there: messages at Tokyo time (+09:00), runs at UTC.
    let stored = server.mariadb(
        &database,
        "SELECT MIN(created_at) FROM messages; SELECT MIN(created_at) FROM workflow_runs;",
    );
    let finished = read(server, SUPERUSER, &database);
    let truth = database_truth(&[&sim]);
    assert!(truth.len() > 50, "a world too small: {}", truth.len());
    assert_eq!(collect::records(&finished), truth);
    let (postgres_records, postgres_archived, postgres_stored) = from_postgres(&sim);
    assert_eq!(collect::records(&finished), postgres_records);
    assert_eq!(archive_warnings(&finished), postgres_archived);
    assert_eq!(postgres_archived.len(), 4, "{}", finished.stderr);
    assert_eq!(stored, postgres_stored);

    let snapshot = log(&finished, "database snapshot opened")["context"].clone();
    assert_eq!(snapshot["isolation"], "repeatable read");
    assert_eq!(snapshot["read_only"], "on");
    assert_eq!(snapshot["time_zone"], "SYSTEM (JST)");
    assert_eq!(snapshot["statement_timeout"], "30min");
    assert_eq!(snapshot["tls"], false);
    assert_eq!(snapshot["role"], "dify@%");
    assert!(
        snapshot["server"].as_str().unwrap().contains("MariaDB"),
        "{snapshot}"
    );
}

#[test]
fn at_utc_mariadb_gives_the_database_truth() {
    let server = mariadb::utc();
    let sim = simulated(62);
    let database = loaded(server, &sim);
    let finished = read(server, SUPERUSER, &database);
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    assert_eq!(
        log(&finished, "database snapshot opened")["context"]["time_zone"],
        "+00:00"
    );
    // One workspace of two.
    let other = simulated(63);
    load(server, &database, &other);
    let finished = dry_run_days(
        exporter(server, SUPERUSER, &database)
            .env("DIFY_WORKSPACE_ID", &other.credentials().workspace_id),
        FIRST,
        LAST,
    );
    finished.code(0);
    assert_eq!(collect::records(&finished), database_truth(&[&other]));
}

/// The `CREATE USER … GRANT SELECT …` block of the README for MySQL, for `database`.
fn readme_grants(database: &str) -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```sql\nCREATE USER 'dify_usage_reader'")
        .expect("README has the MySQL CREATE USER block")
        + "```sql\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end]
        .replace("'change-me'", &format!("'{PASSWORD}'"))
        .replace(" dify.", &format!(" {database}."))
        .replace("'dify_usage_reader'", &format!("'{database}_reader'"))
}

#[test]
fn the_readme_account_with_select_only_reads_everything_and_can_write_nothing() {
    let server = mariadb::utc();
    let sim = archived_world(64);
    let database = loaded(server, &sim);
    server.mariadb(&database, &readme_grants(&database));
    let reader = format!("{database}_reader");
    let finished = read(server, &reader, &database);
    assert_eq!(collect::records(&finished), database_truth(&[&sim]));
    assert_eq!(archive_warnings(&finished).len(), 4);
    assert_eq!(
        log(&finished, "database snapshot opened")["context"]["role"],
        format!("{reader}@%")
    );
    let denied = server.mariadb_as_error(
        &reader,
        &database,
        "INSERT INTO tenants (id, name) VALUES ('x', 'x');",
    );
    assert!(denied.contains("INSERT command denied to user"), "{denied}");
}

#[test]
fn an_account_without_select_on_a_table_is_told_the_grants() {
    let server = mariadb::utc();
    let database = server.dify_database();
    server.mariadb(
        &database,
        &format!(
            "CREATE USER 'half_{database}'@'%' IDENTIFIED BY '{PASSWORD}';
             GRANT SELECT ON {database}.apps TO 'half_{database}'@'%';
             GRANT SELECT ON {database}.messages TO 'half_{database}'@'%';
             GRANT SELECT ON {database}.workflow_runs TO 'half_{database}'@'%';
             GRANT SELECT ON {database}.workflow_node_executions TO 'half_{database}'@'%';"
        ),
    );
    let error = failure(&dry_run_days(
        exporter(server, &format!("half_{database}"), &database),
        FIRST,
        LAST,
    ));
    assert!(
        error.contains(&format!(
            "the role 'half_{database}'@'%' lacks SELECT on accounts, end_users; run as an administrator: \
             GRANT SELECT ON `{database}`.`accounts` TO 'half_{database}'@'%'; \
             GRANT SELECT ON `{database}`.`end_users` TO 'half_{database}'@'%';"
        )),
        "{error}"
    );
}

#[test]
fn a_missing_table_or_column_is_named_with_the_dify_version_that_made_it() {
    let server = mariadb::utc();
    let database = server.dify_database();
    server.mariadb(
        &database,
        "ALTER TABLE messages DROP COLUMN invoke_from; DROP TABLE end_users; \
         ALTER TABLE workflow_node_executions MODIFY process_data JSON;",
    );
    let error = failure(&dry_run_days(
        exporter(server, SUPERUSER, &database),
        FIRST,
        LAST,
    ));
    assert!(
        error.contains("table end_users is missing (created in Dify 0.3.0 by migration 64b051264f32); column messages.invoke_from is missing (added in Dify 0.6.0 by migration e2eacc9a1b63)"),
        "{error}"
    );
    // MariaDB's JSON is LONGTEXT with a check: readable as the text it is.
    assert!(!error.contains("process_data"), "{error}");
    assert!(
        error.contains(&format!(
            "Dify database 127.0.0.1:{}/{database} (DIFY_DATABASE_URL)",
            server.port
        )),
        "{error}"
    );
}

#[test]
fn a_wrong_password_fails_at_once_and_no_password_is_printed_or_stored() {
    let server = mariadb::utc();
    let database = server.dify_database();
    let wrong = "pw-wrong-canary-7c41";
    let exporter = Exporter::new()
        .env(
            "DIFY_DATABASE_URL",
            &server.url(SUPERUSER, &database).replace(PASSWORD, wrong),
        )
        .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
        .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
        .env("MAX_RETRY", "3")
        .args(["run", "--from", FIRST, "--to", LAST]);
    let state = exporter.dir().join("data");
    let finished = exporter.run();
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains("cannot connect: Access denied for user 'dify'@'127.0.0.1' (using password: YES) (MySQL error 1045"),
        "{error}"
    );
    assert!(!finished.stdout.contains("retrying"), "{}", finished.stdout);
    for text in [&finished.stdout, &finished.stderr] {
        assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    }
    let stored = database_bytes(&state);
    assert!(!stored.is_empty(), "no state.db in {}", state.display());
    for canary in [wrong, PASSWORD] {
        assert!(
            !stored.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{canary} in state.db"
        );
    }
}

#[test]
fn a_connection_killed_mid_read_is_retried_and_the_delivered_records_equal_the_truth() {
    let server = mariadb::tokyo();
    let sim = simulated(65);
    let database = loaded(server, &sim);
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        ..MeterConfig::default()
    })
    .unwrap();
    let lock = server.lock_table(&database, "messages");
    let mut running = exporter(server, SUPERUSER, &database)
        .env("EXTERNAL_API_URL", &meter.url())
        .env("MAX_RETRY", "2")
        .args(["run", "--from", FIRST, "--to", LAST])
        .spawn();
    // The snapshot is open and its check of the tables waits for the lock: end the session under it,
    // as a failover or an administrator would, then let the retry through.
    running.wait_for_line("database snapshot opened");
    let killed = server.mariadb(
        "mysql",
        &format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{database}' AND ID <> {};",
            lock.id
        ),
    );
    let ids: Vec<&str> = killed.lines().collect();
    assert_eq!(ids.len(), 1, "{killed}");
    server.mariadb("mysql", &format!("KILL CONNECTION {};", ids[0]));
    drop(lock);
    let finished = running.wait();
    finished.code(0);
    let retry = finished.log("database read failed; retrying")["context"].clone();
    assert_eq!(retry["attempt"], 1);
    let mut held: Vec<Row> = meter.records().into_iter().map(held_row).collect();
    held.sort();
    assert_eq!(held, database_truth(&[&sim]));
}

#[test]
fn a_killed_server_is_retried_then_named_in_one_line() {
    let server = Server::start(&[], None);
    let database = server.dify_database();
    server.kill();
    let finished = dry_run_days(
        exporter(&server, SUPERUSER, &database).env("MAX_RETRY", "1"),
        FIRST,
        LAST,
    );
    let error = failure(&finished);
    assert!(
        error.starts_with(&format!(
            "Dify database 127.0.0.1:{}/{database} (DIFY_DATABASE_URL): cannot connect: ",
            server.port
        )),
        "{error}"
    );
    assert!(error.contains("Connection refused"), "{error}");
    let retry = log(&finished, "database read failed; retrying")["context"].clone();
    assert_eq!(retry["attempt"], 1);
    assert_eq!(finished.stderr.matches("retrying").count(), 1);
    assert!(
        !server.dir().exists(),
        "the watchdog removes the server's directory"
    );
}

/// `exporter run` into a meter, then `exporter reconcile --output json`, both on `url`.
fn reconciled(url: &str) -> serde_json::Value {
    let meter = MeterSim::start(MeterConfig {
        token: EXTERNAL_TOKEN.to_owned(),
        ..MeterConfig::default()
    })
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let exporter = || {
        Exporter::new()
            .env("DIFY_DATABASE_URL", url)
            .env("EXTERNAL_API_URL", &meter.url())
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .env("STATE_DIR", state.path().to_str().unwrap())
    };
    exporter()
        .args(["run", "--from", FIRST, "--to", LAST])
        .run()
        .code(0);
    let finished = exporter()
        .args([
            "reconcile",
            "--output",
            "json",
            "--from",
            FIRST,
            "--to",
            LAST,
        ])
        .run();
    finished.code(0);
    serde_json::from_str(&finished.stdout).unwrap()
}

#[test]
fn reconcile_on_mariadb_at_tokyo_time_finds_what_it_finds_on_postgresql() {
    let server = mariadb::tokyo();
    let sim = simulated(66);
    let database = loaded(server, &sim);
    let cluster = pg::shared();
    let pg_database = cluster.dify_database();
    difydb::load(cluster, &pg_database, &sim);
    let from_mariadb = reconciled(&server.url(SUPERUSER, &database));
    let from_postgres = reconciled(&cluster.url(pg::SUPERUSER, &pg_database));
    let days = from_mariadb["days"].as_array().unwrap();
    assert!(days.len() > 10, "{from_mariadb}");
    assert!(
        days.iter().any(|d| d["dify"]["tokens"].as_u64() > Some(0)),
        "{from_mariadb}"
    );
    assert_eq!(from_mariadb["days"], from_postgres["days"]);
}

#[test]
fn tls_is_verified_by_rustls_against_the_trusted_roots() {
    let (server, ca) = Server::start_with_tls();
    let sim = simulated(67);
    let database = loaded(&server, &sim);
    let url = |mode: &str| {
        server
            .url(SUPERUSER, &database)
            .replace("sslmode=disable", &format!("sslmode={mode}"))
    };
    for mode in ["prefer", "require", "verify-full"] {
        let finished = read_with(
            exporter(&server, SUPERUSER, &database)
                .env("DIFY_DATABASE_URL", &url(mode))
                .env("SSL_CERT_FILE", ca.to_str().unwrap()),
        );
        assert_eq!(
            log(&finished, "database snapshot opened")["context"]["tls"],
            true,
            "{mode}"
        );
        assert_eq!(
            collect::records(&finished),
            database_truth(&[&sim]),
            "{mode}"
        );
    }
    // Without trusting the CA, require fails at once (a certificate is no network hiccup).
    let finished = dry_run_days(
        exporter(&server, SUPERUSER, &database)
            .env("DIFY_DATABASE_URL", &url("require"))
            .env("MAX_RETRY", "2"),
        FIRST,
        LAST,
    );
    let error = failure(&finished);
    assert!(
        error.ends_with("cannot connect: invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    assert!(!finished.stderr.contains("retrying"), "{}", finished.stderr);
    let finished = read(&server, SUPERUSER, &database);
    assert_eq!(
        log(&finished, "database snapshot opened")["context"]["tls"],
        false
    );
}
