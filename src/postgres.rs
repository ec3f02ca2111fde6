//! Sessions with a PostgreSQL server, shared by the database source (Dify's database) and the
//! `postgres` sink (a table of the ledger): the same TLS stack, connect timeout and sorting of
//! driver errors, so both ends behave alike for the same URL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::source::database::{DatabaseSource, SslMode};

/// The half of a session that talks to the socket; it must be polled for the [`Client`] to get answers.
pub(crate) type Connection =
    Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// Why a session could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// TLS could not be set up here: nothing to do with the server.
    Tls(anyhow::Error),
    /// The server or the network said no.
    Postgres(tokio_postgres::Error),
}

/// How many connect timeouts of silence end a session: a link that goes silent after a query was
/// sent (a dead route, a dropped NAT entry) delivers neither rows nor an error, and the server's
/// `statement_timeout` cannot arrive over it either.
const SILENT_LINK_PROBES: u32 = 4;

/// Opens a session as `application_name` `dify-usage-exporter`: TLS per `sslmode`, the connect
/// timeout, and TCP keepalives with a user timeout, so that a dead link ends the session after
/// [`SILENT_LINK_PROBES`] connect timeouts (at most 40 s). A server that is busy but alive answers
/// the keepalives from its kernel, so a long query is never cut by them. No startup `options` (a PgBouncer in front of PostgreSQL refuses them): callers set what
/// they need with `SET LOCAL`. The caller decides where the [`Connection`] is polled.
pub(crate) async fn connect(source: &DatabaseSource) -> Result<(Client, Connection), ConnectError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&source.host)
        .port(source.port)
        .user(&source.user)
        .dbname(&source.database)
        .application_name("dify-usage-exporter")
        .connect_timeout(source.connect_timeout)
        .keepalives(true)
        .keepalives_idle(source.connect_timeout)
        .keepalives_interval(source.connect_timeout)
        .keepalives_retries(SILENT_LINK_PROBES - 1)
        .tcp_user_timeout(source.connect_timeout * SILENT_LINK_PROBES)
        .ssl_mode(match source.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    if let Some(password) = &source.password {
        config.password(password.expose());
    }
    let tls = tls_connector().map_err(ConnectError::Tls)?;
    let (client, connection) = config.connect(tls).await.map_err(ConnectError::Postgres)?;
    Ok((client, Box::pin(connection)))
}

/// rustls with the platform's trust store (and `SSL_CERT_FILE`), on the aws-lc-rs provider that
/// reqwest uses too, so the binary carries one TLS stack.
fn tls_connector() -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(BuilderVerifierExt::with_platform_verifier)
        .context("cannot set up TLS for the database connection")?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One line for a driver error: the server's message and SQLSTATE, or the chain of causes. The
/// driver never puts the password into either.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connection trouble (refused, reset, timed out, server shutting down or starting, too many
/// connections, a snapshot conflict) is worth another attempt; a wrong password, a missing table or
/// a TLS failure is not.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::T_R_SERIALIZATION_FAILURE,
            ]
            .contains(code);
    }
    if error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // InvalidData is how a TLS failure surfaces: not a network hiccup.
            return io.kind() != std::io::ErrorKind::InvalidData;
        }
        source = cause.source();
    }
    error.to_string().contains("timeout")
}
