//! `DIFY_DATABASE_URL` and `DIFY_WORKSPACE_ID` for the database source: what is accepted, what it
//! means for the connection, and how it is shown (the password never is). The scheme picks the
//! dialect: Dify runs on PostgreSQL by default and on MySQL (or OceanBase) since 1.11.

use std::fmt;
use std::time::Duration;

use url::Url;
use uuid::Uuid;

use crate::secret::Secret;
use crate::secret::masked_url;

/// `sslmode` as libpq names it. rustls always verifies the server's certificate and host name, so
/// `require`, `verify-ca` and `verify-full` all mean "encrypted and verified"; `prefer` encrypts (and
/// verifies) when the server offers TLS and falls back to plain text when it does not.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::Display, strum::VariantNames,
)]
#[strum(serialize_all = "kebab-case")]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The SQL dialect of the server, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `postgres://`, `postgresql://`
    Postgres,
    /// `mysql://`: MySQL, MariaDB, OceanBase (Dify's `DB_TYPE=mysql`, `oceanbase`, `seekdb`)
    Mysql,
}

/// Where the database is and which workspaces to read: the validated form of the variables.
#[derive(Clone)]
pub(crate) struct DatabaseSource {
    /// The URL as given, kept for display (masked) only.
    url: Url,
    pub(crate) dialect: Dialect,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<Secret>,
    pub(crate) database: String,
    pub(crate) ssl_mode: SslMode,
    /// One workspace (`tenant_id`), or every workspace when `None`.
    pub(crate) workspace_id: Option<Uuid>,
    /// Sessions reading each snapshot together (`DIFY_DATABASE_CONNECTIONS`); 1 for other uses of the URL.
    pub(crate) connections: usize,
    /// Limit of establishing the connection (`HTTP_TIMEOUT`, at most 10 s, like HTTP connections).
    pub(crate) connect_timeout: Duration,
}

impl fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSource")
            .field("url", &self.masked_url())
            .field("workspace_id", &self.workspace_id)
            .finish_non_exhaustive()
    }
}

impl DatabaseSource {
    /// Parses `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=…` or the same with `mysql://`. The
    /// error says what is wrong and what is allowed; it never contains the password.
    pub(crate) fn parse(
        text: &str,
        workspace_id: Option<Uuid>,
        connect_timeout: Duration,
    ) -> Result<DatabaseSource, String> {
        let url = Url::parse(text).map_err(|e| {
            format!(
                "is not a URL ({e}); expected postgres://USER:PASSWORD@HOST:5432/DATABASE or mysql://USER:PASSWORD@HOST:3306/DATABASE"
            )
        })?;
        let (dialect, default_port) = match url.scheme() {
            "postgres" | "postgresql" => (Dialect::Postgres, 5432),
            "mysql" => (Dialect::Mysql, 3306),
            other => {
                return Err(format!(
                    "has scheme `{other}`; allowed: postgres://, postgresql:// (PostgreSQL), mysql:// (MySQL, MariaDB, OceanBase)"
                ));
            }
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => return Err("has no host".to_owned()),
        };
        let user = percent_decode(url.username());
        if user.is_empty() {
            return Err("has no user name (SCHEME://USER:PASSWORD@HOST/DATABASE)".to_owned());
        }
        let database = percent_decode(url.path().trim_start_matches('/'));
        if database.is_empty() || database.contains('/') {
            return Err("names no database (SCHEME://USER:PASSWORD@HOST/DATABASE)".to_owned());
        }
        let mut ssl_mode = SslMode::Prefer;
        for (key, value) in url.query_pairs() {
            if key != "sslmode" {
                return Err(format!(
                    "has the parameter `{key}`, which is not supported; allowed: sslmode"
                ));
            }
            ssl_mode = value.parse().map_err(|_| {
                format!(
                    "has sslmode `{value}`; allowed: {}",
                    <SslMode as strum::VariantNames>::VARIANTS.join(", ")
                )
            })?;
        }
        Ok(DatabaseSource {
            dialect,
            host,
            port: url.port().unwrap_or(default_port),
            user,
            password: url.password().map(|p| Secret::new(percent_decode(p))),
            database,
            ssl_mode,
            workspace_id,
            connections: 1,
            connect_timeout,
            url,
        })
    }

    /// The URL with its password as `***`.
    #[must_use]
    pub(crate) fn masked_url(&self) -> String {
        masked_url(&self.url)
    }

    /// `HOST:PORT/DATABASE`, for errors and logs.
    #[must_use]
    pub(crate) fn address(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

/// User names, passwords and database names may be percent-encoded in a URL (`p%40ss` = `p@ss`).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatabaseSource, String> {
        DatabaseSource::parse(text, None, Duration::from_secs(10))
    }

    #[test]
    fn a_full_url_is_understood_and_masked() {
        let source =
            parse("postgresql://dify_ro:p%40ss+w@db.internal:6543/dify?sslmode=verify-full")
                .unwrap();
        assert_eq!(source.host, "db.internal");
        assert_eq!(source.port, 6543);
        assert_eq!(source.user, "dify_ro");
        assert_eq!(source.password.as_ref().unwrap().expose(), "p@ss+w");
        assert_eq!(source.database, "dify");
        assert_eq!(source.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            source.masked_url(),
            "postgresql://dify_ro:***@db.internal:6543/dify?sslmode=verify-full"
        );
        assert!(!format!("{source:?}").contains("p%40ss"));
    }

    #[test]
    fn defaults_are_port_5432_and_prefer() {
        let source = parse("postgres://u@127.0.0.1/dify").unwrap();
        assert_eq!((source.port, source.ssl_mode), (5432, SslMode::Prefer));
        assert!(source.password.is_none());
    }

    #[test]
    fn a_mysql_url_chooses_the_mysql_dialect_with_port_3306() {
        let source = parse("mysql://dify_ro:p%40ss@db.internal/dify?sslmode=require").unwrap();
        assert_eq!(source.dialect, Dialect::Mysql);
        assert_eq!((source.port, source.ssl_mode), (3306, SslMode::Require));
        assert_eq!(source.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(
            source.masked_url(),
            "mysql://dify_ro:***@db.internal/dify?sslmode=require"
        );
        assert_eq!(
            parse("postgres://u@h/dify").unwrap().dialect,
            Dialect::Postgres
        );
    }

    #[test]
    fn malformed_urls_say_what_is_allowed() {
        for (text, expected) in [
            ("mysqlx://u:p@h/db", "allowed: postgres://, postgresql://"),
            ("mysql://u:p@h", "names no database"),
            ("postgres://u:p@h", "names no database"),
            ("postgres://:p@h/db", "has no user name"),
            (
                "postgres://u:p@h/db?sslmode=allow",
                "allowed: disable, prefer",
            ),
            ("postgres://u:p@h/db?connect_timeout=3", "allowed: sslmode"),
            ("not a url", "is not a URL"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains(":p@"), "{err}");
        }
    }
}
