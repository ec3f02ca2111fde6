//! Issue 18 classes 1, 2 and 7 on the database source: a workspace id that names nothing, values
//! the console source would refuse, sums that overflow, a column of another type, a JSON `null`.

use crate::deliver::{meter, yesterday};
use crate::difydb::{
    DAY, FIRST, LAST, T1, dry_run, dry_run_days, expected, exporter, load, log, records, simulated,
    world,
};
use crate::pg::{self, SUPERUSER};
use crate::support::{Exporter, Row, held_row, truth_row};

const TYPO: &str = "30000000-0000-4000-8000-000000000003";

fn watermark(state: &std::path::Path) -> String {
    let finished = Exporter::new()
        .env("STATE_DIR", state.to_str().unwrap())
        .args(["watermark", "show"])
        .run();
    finished.code(0);
    finished.stdout.trim().to_owned()
}

#[test]
fn a_workspace_id_that_names_no_workspace_stops_every_run_until_fixed_and_then_every_day_arrives() {
    let cluster = pg::shared();
    let sim = simulated(61);
    let database = cluster.dify_database();
    load(cluster, &database, &sim);
    let meter = meter();
    let state = tempfile::tempdir().unwrap();
    let run = |workspace: &str| {
        exporter(cluster, SUPERUSER, &database)
            .env("EXTERNAL_API_URL", &meter.url())
            .env("STATE_DIR", state.path().to_str().unwrap())
            .env("DIFY_WORKSPACE_ID", workspace)
            // Back to before the simulated days, which lie a month before the tests' today.
            .env("DIFY_FETCH_DAYS", "60")
            .args(["run"])
            .run()
    };
    for _ in 0..2 {
        let typo = run(TYPO);
        typo.code(1);
        let error = typo.failure();
        assert!(
            error.contains(&format!(
                "DIFY_WORKSPACE_ID {TYPO} matches no workspace (table tenants); check the id, or unset it to read every workspace"
            )),
            "{error}"
        );
        assert_eq!(watermark(state.path()), "(none)", "the watermark stays");
        assert!(meter.records().is_empty());
    }
    run(&sim.credentials().workspace_id).code(0);
    let mut held: Vec<Row> = meter.records().into_iter().map(held_row).collect();
    held.sort();
    // Every day the simulator wrote rows on, through yesterday (the rows of its last day's late
    // messages included).
    let mut truth: Vec<Row> = sim
        .truth_database(FIRST.parse().unwrap(), yesterday())
        .into_iter()
        .map(truth_row)
        .collect();
    truth.sort();
    assert_eq!(held, truth);
    assert!(held.iter().any(|r| r.day == FIRST) && held.iter().any(|r| r.day == LAST));
}

/// A message of the chat app `Bot` by `sess-1` on [`DAY`], with the given odd values.
fn message(
    id: &str,
    message_tokens: i64,
    answer_tokens: i64,
    price: &str,
    currency: &str,
) -> String {
    format!(
        "INSERT INTO messages (id, app_id, conversation_id, from_end_user_id, model_provider, model_id, query, \
           message, message_tokens, message_unit_price, answer, answer_tokens, answer_unit_price, total_price, \
           currency, from_source, invoke_from, created_at) \
         VALUES ('{id}', 'a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', \
           'e0000000-0000-4000-8000-000000000001', 'langgenius/openai/openai', 'gpt-4o', 'q', '[]', \
           {message_tokens}, 0, 'a', {answer_tokens}, 0, {price}, '{currency}', 'api', 'web-app', \
           '{DAY} 15:00:00');"
    )
}

/// A node of the production run `b…01` of the workflow app `Flow` on [`DAY`].
fn node(id: &str, process_data: &str, execution_metadata: &str) -> String {
    format!(
        "INSERT INTO workflow_node_executions (id, tenant_id, app_id, workflow_id, triggered_from, \
           workflow_run_id, index, node_id, node_type, title, inputs, process_data, status, \
           execution_metadata, created_at, created_by_role, created_by) \
         VALUES ('{id}', '{T1}', 'a0000000-0000-4000-8000-000000000001', 'f0000000-0000-4000-8000-000000000000', \
           'workflow-run', 'b0000000-0000-4000-8000-000000000001', 9, 'llm-9', 'llm', 'llm', '{{}}', \
           {process_data}, 'succeeded', {execution_metadata}, '{DAY} 12:00:09', 'end_user', \
           'e0000000-0000-4000-8000-000000000001');"
    )
}

const ROW: &str = "d0000000-0000-4000-8000-0000000000d1";

#[test]
fn database_values_the_console_source_refuses_stop_the_run_naming_table_column_and_row() {
    let cluster = pg::shared();
    let refused = [
        (
            message(ROW, -5, 1, "0.1", "USD"),
            "message_tokens is negative",
        ),
        (
            message(ROW, 1, -1, "0.1", "USD"),
            "answer_tokens is negative",
        ),
        (message(ROW, 1, 1, "-0.1", "USD"), "total_price is negative"),
    ];
    for (sql, problem) in refused {
        let database = world(cluster);
        cluster.psql(&database, &sql);
        let finished = dry_run(exporter(cluster, SUPERUSER, &database));
        finished.code(1);
        assert_eq!(finished.stdout, "", "nothing is printed or queued");
        let error = finished.failure();
        assert!(
            error.contains(&format!(
                "messages row {ROW}: {problem}, which no usage can be"
            )),
            "{error}"
        );
    }
    let database = world(cluster);
    cluster.psql(&database, &message(ROW, 1, 1, "0.1", "EURO"));
    let error = dry_run(exporter(cluster, SUPERUSER, &database)).failure();
    assert!(
        error.contains(&format!(
            "messages row {ROW}: currency `EURO` is not a currency of three ASCII letters such as \"USD\""
        )),
        "{error}"
    );

    // A token count beyond 2^64 when summed is an error naming the field, not a small number.
    let database = world(cluster);
    cluster.psql(
        &database,
        &node(
            ROW,
            r#"'{"model_provider":"langgenius/openai/openai","model_name":"gpt-4o","usage":{"prompt_tokens":18446744073709551615,"completion_tokens":0,"total_price":"0","currency":"USD"}}'"#,
            "NULL",
        ),
    );
    let error = dry_run(exporter(cluster, SUPERUSER, &database)).failure();
    assert!(
        error.contains(&format!(
            "the input tokens of {DAY}, app a0000000-0000-4000-8000-000000000001, user sess-1, model gpt-4o overflow when summed"
        )),
        "{error}"
    );
}

#[test]
fn a_lower_case_currency_is_normalised_and_a_json_null_holds_no_usage() {
    let cluster = pg::shared();
    let database = world(cluster);
    cluster.psql(
        &database,
        &format!(
            "{}{}",
            message(ROW, 1, 1, "0.000001", "usd"),
            node("d0000000-0000-4000-8000-0000000000d2", "'null'", "'null'")
        ),
    );
    let finished = dry_run(exporter(cluster, SUPERUSER, &database));
    finished.code(0);
    let bot = "a0000000-0000-4000-8000-000000000002|T1|sess-1|openai|gpt-4o|USD|150/30/180|2|0.000675|exact";
    let want: Vec<String> = expected(&["T1", "T2"])
        .into_iter()
        .map(|r| {
            if r == bot {
                "a0000000-0000-4000-8000-000000000002|T1|sess-1|openai|gpt-4o|USD|151/31/182|3|0.000676|exact"
                    .to_owned()
            } else {
                r
            }
        })
        .collect();
    assert_eq!(records(&finished), want);
}

#[test]
fn a_column_of_another_type_is_named_by_table_and_column_instead_of_a_panic() {
    let cluster = pg::shared();
    let database = world(cluster);
    cluster.psql(
        &database,
        "ALTER TABLE workflow_node_executions ALTER COLUMN process_data TYPE jsonb USING process_data::jsonb;",
    );
    let finished = dry_run_days(exporter(cluster, SUPERUSER, &database), DAY, DAY);
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains(
            "column workflow_node_executions.process_data has type jsonb, where Dify writes text or character varying"
        ),
        "{error}"
    );
    let _ = log(&finished, "run failed");
}

/// Drops every packet from `port` on loopback while it lives: a link that goes silent, as a dead
/// route does, without closing anything.
struct SilentLink(u16);

impl SilentLink {
    fn start(port: u16) -> SilentLink {
        iptables("-I", port);
        SilentLink(port)
    }
}

impl Drop for SilentLink {
    fn drop(&mut self) {
        iptables("-D", self.0);
    }
}

fn iptables(action: &str, port: u16) {
    let status = std::process::Command::new("iptables")
        .args([action, "INPUT", "-i", "lo", "-p", "tcp", "--sport"])
        .arg(port.to_string())
        .args(["-j", "DROP"])
        .status()
        .expect("iptables (Debian package iptables, run as root) silences the database link");
    assert!(status.success(), "iptables {action} failed");
}

#[test]
fn a_database_link_that_goes_silent_mid_query_ends_the_read_and_sigterm_still_works() {
    // A cluster of its own: the silenced port must not be the shared one.
    let cluster = pg::Cluster::start();
    let database = world(&cluster);
    let timed = |cluster: &pg::Cluster| {
        exporter(cluster, SUPERUSER, &database)
            .env("HTTP_TIMEOUT", "1")
            .args(["run", "--from", DAY, "--to", DAY])
    };
    // The messages query waits on a lock, then the link goes silent while it waits.
    let lock = cluster.lock_table(&database, "messages");
    let mut running = timed(&cluster).spawn();
    running.wait_for_line("apps read from the database");
    let silent = SilentLink::start(cluster.port);
    let started = std::time::Instant::now();
    let finished = running.wait();
    let waited = started.elapsed();
    drop(silent);
    drop(lock);
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains("(DIFY_DATABASE_URL): the connection failed")
            || error.contains("(DIFY_DATABASE_URL): cannot read messages"),
        "{error}"
    );
    // Four probes of one second each, and some slack for a loaded machine; never the 30 minutes
    // of the statement timeout.
    assert!(waited < std::time::Duration::from_secs(30), "{waited:?}");

    // SIGTERM on a silent link still stops the run at once.
    let lock = cluster.lock_table(&database, "messages");
    let mut running = timed(&cluster).env("HTTP_TIMEOUT", "10").spawn();
    running.wait_for_line("apps read from the database");
    let silent = SilentLink::start(cluster.port);
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let finished = running.wait();
    drop(silent);
    drop(lock);
    finished.code(143);
    assert_eq!(
        finished.log("run finished")["context"]["outcome"],
        "stopped"
    );
}
