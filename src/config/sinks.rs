//! Which sinks the variables enable (at least one), and the ledger's settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::RawEnv;
use super::checker::Checker;
use super::variables as v;
use crate::ledger::{DecreasePolicy, UserMap};
use crate::secret::{Secret, mask_userinfo};
use crate::source::database::{DatabaseSource, Dialect};

/// The metering API that receives the records (the `http` sink).
#[derive(Debug, Clone)]
pub(crate) struct HttpSinkConfig {
    /// The full endpoint that receives the POSTs (nothing is appended).
    pub(crate) url: Url,
    /// Sent as `Authorization: Bearer`.
    pub(crate) token: Secret,
    /// Sent as `tenant_id` in every body when set.
    pub(crate) tenant_id: Option<String>,
}

/// An append-only meter that takes CloudEvents batches (the `cloudevents` sink).
#[derive(Debug, Clone)]
pub(crate) struct CloudEventsSinkConfig {
    /// The full ingest endpoint (nothing is appended).
    pub(crate) url: Url,
    /// Sent as `Authorization: Bearer` when set.
    pub(crate) token: Option<Secret>,
    /// Every event's `source`: with `id`, what the meter de-duplicates on.
    pub(crate) source: String,
}

/// A PostgreSQL table the rows are upserted into (the `postgres` sink).
#[derive(Debug, Clone)]
pub(crate) struct PostgresSinkConfig {
    /// Where the database is (`SINK_POSTGRES_URL`); its workspace is unused.
    pub(crate) database: DatabaseSource,
    pub(crate) table: TableName,
}

/// `[schema.]table`, folded to lower case as PostgreSQL folds unquoted names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
}

impl TableName {
    fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let plain = |name: &str| {
            !name.is_empty()
                && name.len() <= 63
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
            return Err(format!(
                "`{text}` is not a table name; allowed: `table` or `schema.table`, each of letters, digits and _ \
                 (not starting with a digit, at most 63 characters)"
            ));
        }
        let fold = |name: &str| name.to_ascii_lowercase();
        Ok(match parts.as_slice() {
            [table] => TableName {
                schema: None,
                table: fold(table),
            },
            [schema, table] => TableName {
                schema: Some(fold(schema)),
                table: fold(table),
            },
            _ => unreachable!("split gives one or two parts here"),
        })
    }
}

impl fmt::Display for TableName {
    /// The name quoted for SQL: `"schema"."table"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "\"{schema}\".")?;
        }
        write!(f, "\"{}\"", self.table)
    }
}

/// `SINK_FILE_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum FileFormat {
    Csv,
    Jsonl,
    Parquet,
}

/// `SINK_FILE_SCHEMA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum FileSchema {
    /// The ledger's own columns.
    Native,
    /// The FinOps Open Cost and Usage Specification's columns.
    Focus,
}

/// A directory of one file per UTC day (the `file` sink).
#[derive(Debug, Clone)]
pub(crate) struct FileSinkConfig {
    pub(crate) dir: PathBuf,
    pub(crate) format: FileFormat,
    pub(crate) schema: FileSchema,
}

/// The sinks the variables enable; at least one is.
#[derive(Debug, Clone)]
pub(crate) struct SinksConfig {
    pub(crate) http: Option<HttpSinkConfig>,
    pub(crate) postgres: Option<PostgresSinkConfig>,
    pub(crate) file: Option<FileSinkConfig>,
    pub(crate) cloudevents: Option<CloudEventsSinkConfig>,
}

impl SinksConfig {
    /// The names of the enabled sinks, as outbox rows carry them.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        [
            self.http.as_ref().map(|_| "http"),
            self.postgres.as_ref().map(|_| "postgres"),
            self.file.as_ref().map(|_| "file"),
            self.cloudevents.as_ref().map(|_| "cloudevents"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// How collected records are merged into the ledger.
#[derive(Debug, Clone)]
pub(crate) struct LedgerConfig {
    pub(crate) decreases: DecreasePolicy,
    pub(crate) users: UserMap,
    /// Rows of days older than this are dropped.
    pub(crate) retention_days: u32,
}

pub(super) fn select(
    check: &mut Checker,
    raw: &RawEnv,
    allow_insecure: bool,
    connect_timeout: Duration,
) -> Option<SinksConfig> {
    let problems = check.problems.len();
    let sinks = SinksConfig {
        http: http(check, raw, allow_insecure),
        postgres: postgres(check, raw, connect_timeout),
        file: file(check, raw),
        cloudevents: cloudevents(check, raw, allow_insecure),
    };
    let none = sinks.http.is_none()
        && sinks.postgres.is_none()
        && sinks.file.is_none()
        && sinks.cloudevents.is_none();
    if none && check.problems.len() == problems {
        check.problem(
            &v::EXTERNAL_API_URL,
            "no sink is configured; set at least one of EXTERNAL_API_URL (with EXTERNAL_API_TOKEN), \
             SINK_POSTGRES_URL, SINK_FILE_DIR or SINK_CLOUDEVENTS_URL",
        );
    }
    (check.problems.len() == problems).then_some(sinks)
}

fn http(check: &mut Checker, raw: &RawEnv, allow_insecure: bool) -> Option<HttpSinkConfig> {
    let (url, token) = match (
        raw.external_api_url.as_deref(),
        raw.external_api_token.as_deref(),
    ) {
        (None, None) => {
            if raw.external_api_tenant_id.is_some() {
                check.problem(
                    &v::EXTERNAL_API_TENANT_ID,
                    "is set but EXTERNAL_API_URL is not; set both, or unset EXTERNAL_API_TENANT_ID",
                );
            }
            return None;
        }
        (Some(_), None) => {
            check.problem(
                &v::EXTERNAL_API_TOKEN,
                "is required with EXTERNAL_API_URL (the http sink sends it as a bearer token)",
            );
            return None;
        }
        (None, Some(_)) => {
            check.problem(
                &v::EXTERNAL_API_URL,
                "is required with EXTERNAL_API_TOKEN (the endpoint of the http sink)",
            );
            return None;
        }
        (Some(url), Some(token)) => (url, token),
    };
    let url = check.url(&v::EXTERNAL_API_URL, url, allow_insecure);
    let url = check.no_userinfo(&v::EXTERNAL_API_URL, url, v::EXTERNAL_API_TOKEN.name);
    let token = check.secret(&v::EXTERNAL_API_TOKEN, token.trim());
    Some(HttpSinkConfig {
        url: url?,
        token: token?,
        tenant_id: raw
            .external_api_tenant_id
            .as_deref()
            .map(|t| t.trim().to_owned()),
    })
}

fn postgres(
    check: &mut Checker,
    raw: &RawEnv,
    connect_timeout: Duration,
) -> Option<PostgresSinkConfig> {
    let table = raw.sink_postgres_table.as_deref().map(str::trim);
    let Some(text) = raw.sink_postgres_url.as_deref().map(str::trim) else {
        if table.is_some() {
            check.problem(
                &v::SINK_POSTGRES_TABLE,
                "is set but SINK_POSTGRES_URL is not; set both, or unset SINK_POSTGRES_TABLE",
            );
        }
        return None;
    };
    let table = match TableName::parse(table.unwrap_or("dify_usage")) {
        Ok(table) => Some(table),
        Err(rule) => {
            check.problem(&v::SINK_POSTGRES_TABLE, rule);
            None
        }
    };
    let long_enough = check.url_password(&v::SINK_POSTGRES_URL, text);
    let database = match DatabaseSource::parse(text, None, connect_timeout) {
        Ok(database) if database.dialect != Dialect::Postgres => {
            check.problem(
                &v::SINK_POSTGRES_URL,
                format!(
                    "`{}` is not a PostgreSQL URL; the postgres sink writes to PostgreSQL only (postgres:// or postgresql://)",
                    mask_userinfo(text)
                ),
            );
            None
        }
        Ok(database) => long_enough.then_some(database),
        Err(rule) => {
            check.problem(
                &v::SINK_POSTGRES_URL,
                format!("`{}` {rule}", mask_userinfo(text)),
            );
            None
        }
    };
    Some(PostgresSinkConfig {
        database: database?,
        table: table?,
    })
}

fn file(check: &mut Checker, raw: &RawEnv) -> Option<FileSinkConfig> {
    let format: FileFormat = check.one_of(&v::SINK_FILE_FORMAT, raw.sink_file_format.as_ref());
    let schema: FileSchema = check.one_of(&v::SINK_FILE_SCHEMA, raw.sink_file_schema.as_ref());
    let Some(dir) = raw.sink_file_dir.as_ref() else {
        for (variable, set) in [
            (&v::SINK_FILE_FORMAT, raw.sink_file_format.is_some()),
            (&v::SINK_FILE_SCHEMA, raw.sink_file_schema.is_some()),
        ] {
            if set {
                check.problem(
                    variable,
                    format!(
                        "is set but SINK_FILE_DIR is not; set both, or unset {}",
                        variable.name
                    ),
                );
            }
        }
        return None;
    };
    let dir = check.directory(&v::SINK_FILE_DIR, Some(dir))?;
    Some(FileSinkConfig {
        dir,
        format,
        schema,
    })
}

fn cloudevents(
    check: &mut Checker,
    raw: &RawEnv,
    allow_insecure: bool,
) -> Option<CloudEventsSinkConfig> {
    let Some(url) = raw.sink_cloudevents_url.as_deref() else {
        for (variable, set) in [
            (
                &v::SINK_CLOUDEVENTS_TOKEN,
                raw.sink_cloudevents_token.is_some(),
            ),
            (
                &v::SINK_CLOUDEVENTS_SOURCE,
                raw.sink_cloudevents_source.is_some(),
            ),
        ] {
            if set {
                check.problem(
                    variable,
                    format!(
                        "is set but SINK_CLOUDEVENTS_URL is not; set both, or unset {}",
                        variable.name
                    ),
                );
            }
        }
        return None;
    };
    let mut url = check.url(&v::SINK_CLOUDEVENTS_URL, url, allow_insecure);
    if raw.sink_cloudevents_token.is_some() {
        url = check.no_userinfo(
            &v::SINK_CLOUDEVENTS_URL,
            url,
            v::SINK_CLOUDEVENTS_TOKEN.name,
        );
    }
    let token = match raw.sink_cloudevents_token.as_deref() {
        Some(token) => Some(check.secret(&v::SINK_CLOUDEVENTS_TOKEN, token.trim())?),
        None => None,
    };
    let source = match raw.sink_cloudevents_source.as_deref().map(str::trim) {
        Some("") => {
            check.problem(
                &v::SINK_CLOUDEVENTS_SOURCE,
                "is blank; set the events' source (any text, e.g. dify-usage-exporter/prod) or unset it",
            );
            return None;
        }
        Some(source) => source.to_owned(),
        None => default_source(raw),
    };
    Some(CloudEventsSinkConfig {
        url: url?,
        token,
        source,
    })
}

/// `dify-usage-exporter/` and the Dify host (with its port, and the database name for the database
/// source), so that two installations sending to one meter never share event ids; credentials
/// are never part of it.
fn default_source(raw: &RawEnv) -> String {
    let dify = raw
        .dify_api_url
        .as_deref()
        .or(raw.dify_database_url.as_deref())
        .and_then(|text| Url::parse(text.trim()).ok());
    let place = dify.map_or_else(String::new, |url| {
        let host = url.host_str().unwrap_or_default();
        let port = url
            .port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let database = if url.scheme().starts_with("postgres") {
            url.path()
        } else {
            ""
        };
        format!("{host}{port}{database}")
    });
    format!("dify-usage-exporter/{place}")
}

pub(super) fn ledger(check: &mut Checker, raw: &RawEnv) -> LedgerConfig {
    let decreases = check.one_of(&v::USAGE_DECREASES, raw.usage_decreases.as_ref());
    let retention_days = check.whole(
        &v::LEDGER_RETENTION_DAYS,
        raw.ledger_retention_days.as_ref(),
    );
    let users = match raw.user_map_file.as_ref() {
        None => UserMap::default(),
        Some(path) => UserMap::load(path).unwrap_or_else(|problem| {
            check.problem(&v::USER_MAP_FILE, problem);
            UserMap::default()
        }),
    };
    LedgerConfig {
        decreases,
        users,
        retention_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers_folded_to_lower_case() {
        assert_eq!(
            TableName::parse("Billing.Dify_Usage").unwrap().to_string(),
            r#""billing"."dify_usage""#
        );
        assert_eq!(
            TableName::parse("dify_usage").unwrap().to_string(),
            r#""dify_usage""#
        );
        for bad in [
            "",
            "a.b.c",
            "1table",
            "usage; DROP TABLE x",
            "a-b",
            "\"quoted\"",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }
}
