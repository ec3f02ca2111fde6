//! The MySQL dialect (Dify's `DB_TYPE=mysql`, `oceanbase` and `seekdb`, Dify 1.11 and newer): the
//! same rows as [`super::postgres`], through `mysql_async` on the tokio runtime, over rustls.
//!
//! One connection reads everything: MySQL has no exported snapshot for other sessions to join, and
//! the work that dominates PostgreSQL's time (parsing node JSON) is the exporter's, not the
//! server's. The snapshot is `START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT` in a session
//! set to `REPEATABLE READ` and read-only, so every statement of a chunk sees the same rows.
//!
//! Time zones: Dify sets the session time zone to UTC on PostgreSQL only. On MySQL its
//! `messages.created_at` is filled by the server default `CURRENT_TIMESTAMP` (a `Message` is created
//! without one, `api/core/app/apps/message_based_app_generator.py`), which is the session's local
//! time, while workflow runs and node executions get `naive_utc_now()` from Python. So messages are
//! converted from the session's zone (`@@session.time_zone`, which Dify's sessions share: neither
//! sets one) to UTC in the SQL, and the other tables are read as they are. The zone is named in the
//! line that opens the snapshot.

mod queries;

use std::time::Duration;

use anyhow::anyhow;
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use tracing::info;

use super::settings::{DatabaseSource, SslMode};
use super::shared_snapshot::Tally;
use super::{AttemptError, Sorted, archived, no_apps, schema};
use crate::run::window::Window;
use crate::source::Collected;

pub(super) use queries::statistics;

/// No single statement may run longer: a run-once job that hangs helps no one (as on PostgreSQL).
const STATEMENT_TIMEOUT: Duration = super::postgres::STATEMENT_TIMEOUT;

/// One attempt: connect, read one snapshot, end it.
pub(super) async fn collect(
    source: &DatabaseSource,
    window: Window,
) -> Result<Collected, AttemptError> {
    let mut conn = connect(source).await?;
    let collected = read(&mut conn, source, window).await?;
    // A clean goodbye; the records are read whatever the server says to it.
    let _ = conn.disconnect().await;
    Ok(collected)
}

async fn read(
    conn: &mut Conn,
    source: &DatabaseSource,
    window: Window,
) -> Result<Collected, AttemptError> {
    let snapshot = snapshot(conn).await?;
    let reader = snapshot.reader(source);
    queries::check_schema(conn, reader).await?;
    let app_rows = queries::apps(conn, source.workspace_id).await?;
    if app_rows.is_empty() {
        let exists = match source.workspace_id {
            Some(workspace) => Some(queries::workspace_exists(conn, workspace).await?),
            None => None,
        };
        no_apps(source.workspace_id, exists)?;
    }
    let sorted = Sorted::of(&app_rows);
    let span = super::postgres::Span::of(window);
    if let Some(days) = queries::archived(conn, &sorted.run_apps, &span, reader).await? {
        archived::warn_days(days, &sorted.apps);
    }
    let mut tally = Tally::default();
    tally.messages = queries::messages(
        conn,
        &sorted.message_apps,
        &span,
        &sorted.apps,
        &mut tally.aggregator,
    )
    .await?;
    (tally.nodes_read, tally.nodes_counted) = queries::nodes(
        conn,
        &sorted.run_apps,
        &span,
        &sorted.apps,
        &mut tally.aggregator,
    )
    .await?;
    conn.query_drop("ROLLBACK")
        .await
        .map_err(|e| AttemptError::from_mysql(&e, "cannot end the snapshot"))?;
    super::finish(sorted.collected, &sorted.workspaces, tally, window)
}

/// Opens a session: TLS per `sslmode` (rustls, the built-in roots plus `SSL_CERT_FILE`), TCP even
/// to 127.0.0.1 (the driver would otherwise switch to the server's socket), the connect timeout.
pub(super) async fn connect(source: &DatabaseSource) -> Result<Conn, AttemptError> {
    let tls = match source.ssl_mode {
        SslMode::Disable => None,
        SslMode::Prefer | SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            Some(ssl_opts())
        }
    };
    match open(source, tls).await {
        // `prefer` falls back to plain text where the server offers no TLS, as libpq does.
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if source.ssl_mode == SslMode::Prefer =>
        {
            open(source, None).await
        }
        outcome => outcome,
    }
    .map_err(|e| AttemptError::from_mysql(&e, "cannot connect"))
}

fn ssl_opts() -> SslOpts {
    let opts = SslOpts::default();
    match std::env::var_os("SSL_CERT_FILE") {
        Some(path) => opts.with_root_certs(vec![std::path::PathBuf::from(path).into()]),
        None => opts,
    }
}

async fn open(source: &DatabaseSource, tls: Option<SslOpts>) -> Result<Conn, mysql_async::Error> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(source.host.clone())
        .tcp_port(source.port)
        .user(Some(source.user.clone()))
        .pass(source.password.as_ref().map(|p| p.expose().to_owned()))
        .db_name(Some(source.database.clone()))
        .prefer_socket(false)
        .tcp_keepalive(Some(source.connect_timeout))
        .ssl_opts(tls);
    match tokio::time::timeout(source.connect_timeout, Conn::new(opts)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {} s (HTTP_TIMEOUT, at most 10 s)",
                    source.connect_timeout.as_secs()
                ),
            ),
        ))),
    }
}

/// What the snapshot's session is, as the checks and the `GRANT` hints need it.
struct Snapshot {
    /// `CURRENT_USER()` as `'user'@'host'`, the account a `GRANT` names.
    account: String,
}

impl Snapshot {
    fn reader<'a>(&'a self, source: &'a DatabaseSource) -> schema::Reader<'a> {
        schema::Reader {
            dialect: super::Dialect::Mysql,
            role: &self.account,
            database: &source.database,
        }
    }
}

/// Starts the read-only `REPEATABLE READ` snapshot with the statement timeout, checks it, and logs
/// what it is, the time zone messages are converted from included.
async fn snapshot(conn: &mut Conn) -> Result<Snapshot, AttemptError> {
    let what = "cannot start the read-only snapshot";
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| AttemptError::from_mysql(&e, what))?
        .unwrap_or_default();
    // MariaDB names the settings tx_* (until 11.1) and limits statements in seconds; MySQL 8 and
    // OceanBase name them transaction_* and limit in milliseconds.
    let mariadb = version.contains("MariaDB");
    let (isolation_name, read_only_name, timeout) = if mariadb {
        (
            "tx_isolation",
            "tx_read_only",
            format!("max_statement_time = {}", STATEMENT_TIMEOUT.as_secs()),
        )
    } else {
        (
            "transaction_isolation",
            "transaction_read_only",
            format!("max_execution_time = {}", STATEMENT_TIMEOUT.as_millis()),
        )
    };
    for statement in [
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET SESSION TRANSACTION READ ONLY",
        &format!("SET SESSION {timeout}"),
        "START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT",
    ] {
        conn.query_drop(statement)
            .await
            .map_err(|e| AttemptError::from_mysql(&e, what))?;
    }
    let settings: Option<(String, i64, String, String, String, String, i64)> = conn
        .query_first(format!(
            "SELECT @@session.{isolation_name}, @@session.{read_only_name}, @@session.time_zone, \
               @@global.time_zone, @@system_time_zone, CURRENT_USER(), \
               CONVERT_TZ('2000-01-01 00:00:00', @@session.time_zone, '+00:00') IS NOT NULL"
        ))
        .await
        .map_err(|e| AttemptError::from_mysql(&e, "cannot read the session settings"))?;
    let Some((isolation, read_only, zone, global_zone, system_zone, user, convertible)) = settings
    else {
        return Err(AttemptError::Fatal(anyhow!(
            "the server returned no session settings"
        )));
    };
    if read_only != 1 {
        return Err(AttemptError::Fatal(anyhow!(
            "the database session is not read-only ({read_only_name} = {read_only}); refusing to read"
        )));
    }
    let zone = if zone == "SYSTEM" {
        format!("SYSTEM ({system_zone})")
    } else {
        zone
    };
    if convertible != 1 {
        return Err(AttemptError::Fatal(anyhow!(
            "the session time zone {zone} has no definition on the server (its time zone tables are empty), so the local times of messages.created_at cannot be converted to UTC; load them (mariadb-tzinfo-to-sql / mysql_tzinfo_to_sql) or set time_zone to an offset such as '+09:00'"
        )));
    }
    let tls: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(|e| AttemptError::from_mysql(&e, "cannot read the session settings"))?;
    info!(
        isolation = %isolation.to_lowercase().replace('-', " "),
        read_only = "on",
        time_zone = %zone,
        global_time_zone = %global_zone,
        statement_timeout = %format!("{}min", STATEMENT_TIMEOUT.as_secs() / 60),
        role = %user,
        server = %version,
        tls = tls.is_some_and(|(_, cipher)| !cipher.is_empty()),
        "database snapshot opened"
    );
    Ok(Snapshot {
        account: account(&user),
    })
}

/// `user@host` as `'user'@'host'`.
fn account(user: &str) -> String {
    let (name, host) = user.rsplit_once('@').unwrap_or((user, "%"));
    format!("'{name}'@'{host}'")
}

/// MySQL server errors a later attempt may not meet: too many connections, the server shutting
/// down, the connection or query killed, a lock wait or deadlock.
const TRANSIENT_CODES: [u16; 7] = [1040, 1053, 1205, 1213, 1317, 1927, 4031];

impl AttemptError {
    /// Sorts a driver error into worth-retrying or not, with one line that says what failed. The
    /// server's "Access denied" names the user, never the password.
    pub(super) fn from_mysql(error: &mysql_async::Error, what: &str) -> AttemptError {
        let line = anyhow!("{what}: {}", describe(error));
        let transient = match error {
            // InvalidData is how a certificate the roots do not vouch for surfaces: no network hiccup.
            mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
                io.kind() != std::io::ErrorKind::InvalidData
            }
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => true,
            mysql_async::Error::Server(server) => TRANSIENT_CODES.contains(&server.code),
            _ => false,
        };
        if transient {
            AttemptError::Transient(line)
        } else {
            AttemptError::Fatal(line)
        }
    }
}

/// One line for a driver error: the server's message and code, what went wrong on the wire, or
/// the chain of causes.
fn describe(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => {
            return format!(
                "{} (MySQL error {}, SQLSTATE {})",
                server.message, server.code, server.state
            );
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => return io.to_string(),
        _ => {}
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_names_the_account_as_mysql_does() {
        assert_eq!(account("dify_ro@%"), "'dify_ro'@'%'");
        assert_eq!(account("a@b@10.0.0.%"), "'a@b'@'10.0.0.%'");
    }
}
