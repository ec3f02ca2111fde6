//! The one table of environment variables: name, whether the value is a secret, default, and rule.
//!
//! Everything that lists variables reads this table: the checker takes each default and rule from
//! it, the masked view (`validate-config`, `run starting`) shows every variable in its order, and
//! the [`Masker`](crate::secret::Masker) learns every value it marks secret. Tests keep
//! `.env.example`, the README's configuration table and the envy-deserialized [`RawEnv`](super::RawEnv)
//! equal to it, so a new variable is one row here plus its field there.

/// Whether, and which part of, a value is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    /// Shown as set.
    Public,
    /// The whole value: shown as `***`, masked in every output.
    Secret,
    /// A URL whose `user:password@` part is secret.
    UrlPassword,
}

/// What a value must be; the checker's messages quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// An absolute http(s) URL (plain http only to loopback hosts unless ALLOW_INSECURE_HTTP).
    Url,
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=MODE`.
    DatabaseUrl,
    /// A PostgreSQL table name, optionally schema-qualified: `[schema.]table`, each a plain
    /// identifier.
    TableName,
    /// A file that must exist and be readable.
    File,
    /// A value sent in an HTTP header: visible ASCII, spaces and tabs.
    HeaderValue,
    Uuid,
    Email,
    /// Any text.
    Text,
    /// A whole number in the range.
    Whole {
        min: u32,
        max: u32,
    },
    /// Whole seconds from 1 to `max`.
    Seconds {
        max: u32,
    },
    /// One of the words, in any case.
    OneOf(&'static [&'static str]),
    /// The portable 5-field cron grammar.
    Schedule,
    /// A directory, created when missing.
    Directory,
    /// A file name ending in `.prom`.
    PromFile,
}

/// One environment variable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Variable {
    pub(crate) name: &'static str,
    pub(crate) secrecy: Secrecy,
    /// The value used when unset, as it would be written; `None` for no value.
    pub(crate) default: Option<&'static str>,
    pub(crate) rule: Rule,
}

impl Variable {
    const fn new(name: &'static str, secrecy: Secrecy, rule: Rule) -> Self {
        Variable {
            name,
            secrecy,
            default: None,
            rule,
        }
    }

    const fn or(self, default: &'static str) -> Self {
        Variable {
            default: Some(default),
            ..self
        }
    }
}

use Rule::{OneOf, Seconds, Whole};
use Secrecy::{Public, Secret, UrlPassword};

pub(crate) const DIFY_API_URL: Variable = Variable::new("DIFY_API_URL", UrlPassword, Rule::Url);
pub(crate) const DIFY_DATABASE_URL: Variable =
    Variable::new("DIFY_DATABASE_URL", UrlPassword, Rule::DatabaseUrl);
/// Sessions reading one snapshot together: PostgreSQL scans a table in parallel only for a plain
/// query, never for a streamed one, so the source splits the scan itself. Four keep two cores busy
/// without taking much of a server's `max_connections` (Dify's default pool is 30).
pub(crate) const DIFY_DATABASE_CONNECTIONS: Variable = Variable::new(
    "DIFY_DATABASE_CONNECTIONS",
    Public,
    Whole { min: 1, max: 16 },
)
.or("4");
pub(crate) const DIFY_API_TOKEN: Variable =
    Variable::new("DIFY_API_TOKEN", Secret, Rule::HeaderValue);
pub(crate) const DIFY_WORKSPACE_ID: Variable =
    Variable::new("DIFY_WORKSPACE_ID", Public, Rule::Uuid);
pub(crate) const DIFY_EMAIL: Variable = Variable::new("DIFY_EMAIL", Public, Rule::Email);
pub(crate) const DIFY_PASSWORD: Variable = Variable::new("DIFY_PASSWORD", Secret, Rule::Text);
pub(crate) const DIFY_PASSWORD_ENCODING: Variable = Variable::new(
    "DIFY_PASSWORD_ENCODING",
    Public,
    OneOf(&["auto", "plain", "base64"]),
)
.or("auto");
pub(crate) const DIFY_FETCH_DAYS: Variable =
    Variable::new("DIFY_FETCH_DAYS", Public, Whole { min: 1, max: 366 }).or("7");
pub(crate) const DIFY_CONCURRENCY: Variable =
    Variable::new("DIFY_CONCURRENCY", Public, Whole { min: 1, max: 64 }).or("8");
/// Dify's run and conversation lists have no upper date bound, so every chunk lists again from the
/// newest rows; a month keeps a year's backfill at about six times the listing of one pass, while a
/// stop loses at most a month of collecting.
pub(crate) const COLLECT_CHUNK_DAYS: Variable = Variable::new(
    "COLLECT_CHUNK_DAYS",
    Public,
    Whole {
        min: 1,
        max: crate::run::window::MAX_WINDOW_DAYS,
    },
)
.or("31");
pub(crate) const EXTERNAL_API_URL: Variable =
    Variable::new("EXTERNAL_API_URL", UrlPassword, Rule::Url);
pub(crate) const EXTERNAL_API_TOKEN: Variable =
    Variable::new("EXTERNAL_API_TOKEN", Secret, Rule::HeaderValue);
pub(crate) const EXTERNAL_API_TENANT_ID: Variable =
    Variable::new("EXTERNAL_API_TENANT_ID", Public, Rule::Text);
pub(crate) const SINK_POSTGRES_URL: Variable =
    Variable::new("SINK_POSTGRES_URL", UrlPassword, Rule::DatabaseUrl);
pub(crate) const SINK_POSTGRES_TABLE: Variable =
    Variable::new("SINK_POSTGRES_TABLE", Public, Rule::TableName).or("dify_usage");
pub(crate) const SINK_FILE_DIR: Variable = Variable::new("SINK_FILE_DIR", Public, Rule::Directory);
pub(crate) const SINK_FILE_FORMAT: Variable = Variable::new(
    "SINK_FILE_FORMAT",
    Public,
    OneOf(&["csv", "jsonl", "parquet"]),
)
.or("csv");
pub(crate) const SINK_FILE_SCHEMA: Variable =
    Variable::new("SINK_FILE_SCHEMA", Public, OneOf(&["native", "focus"])).or("native");
pub(crate) const SINK_CLOUDEVENTS_URL: Variable =
    Variable::new("SINK_CLOUDEVENTS_URL", UrlPassword, Rule::Url);
pub(crate) const SINK_CLOUDEVENTS_TOKEN: Variable =
    Variable::new("SINK_CLOUDEVENTS_TOKEN", Secret, Rule::HeaderValue);
pub(crate) const SINK_CLOUDEVENTS_SOURCE: Variable =
    Variable::new("SINK_CLOUDEVENTS_SOURCE", Public, Rule::Text);
pub(crate) const USAGE_DECREASES: Variable =
    Variable::new("USAGE_DECREASES", Public, OneOf(&["keep", "follow"])).or("keep");
pub(crate) const USER_MAP_FILE: Variable = Variable::new("USER_MAP_FILE", Public, Rule::File);
/// Longer than any window a run collects again (`EXPORT_LOOKBACK_DAYS`, a backfill of up to 366
/// days is collected whole), and longer than a year so that `report` can compare a year.
pub(crate) const LEDGER_RETENTION_DAYS: Variable = Variable::new(
    "LEDGER_RETENTION_DAYS",
    Public,
    Whole { min: 31, max: 3660 },
)
.or("400");
pub(crate) const EXPORT_LOOKBACK_DAYS: Variable =
    Variable::new("EXPORT_LOOKBACK_DAYS", Public, Whole { min: 0, max: 30 }).or("1");
pub(crate) const BATCH_SIZE: Variable =
    Variable::new("BATCH_SIZE", Public, Whole { min: 1, max: 5000 }).or("500");
pub(crate) const DEAD_LETTER_AFTER: Variable =
    Variable::new("DEAD_LETTER_AFTER", Public, Whole { min: 1, max: 1000 }).or("10");
pub(crate) const CRON_SCHEDULE: Variable =
    Variable::new("CRON_SCHEDULE", Public, Rule::Schedule).or("0 0 * * *");
pub(crate) const LOG_LEVEL: Variable = Variable::new(
    "LOG_LEVEL",
    Public,
    OneOf(&["error", "warn", "info", "debug"]),
)
.or("info");
pub(crate) const LOG_FORMAT: Variable =
    Variable::new("LOG_FORMAT", Public, OneOf(&["auto", "json", "text"])).or("auto");
pub(crate) const GRACEFUL_SHUTDOWN_TIMEOUT: Variable =
    Variable::new("GRACEFUL_SHUTDOWN_TIMEOUT", Public, Seconds { max: 3600 }).or("30");
pub(crate) const MAX_RETRY: Variable =
    Variable::new("MAX_RETRY", Public, Whole { min: 0, max: 10 }).or("3");
pub(crate) const HTTP_TIMEOUT: Variable =
    Variable::new("HTTP_TIMEOUT", Public, Seconds { max: 600 }).or("30");
pub(crate) const STATE_DIR: Variable =
    Variable::new("STATE_DIR", Public, Rule::Directory).or("./data");
pub(crate) const ALLOW_INSECURE_HTTP: Variable =
    Variable::new("ALLOW_INSECURE_HTTP", Public, OneOf(&["true", "false"])).or("false");
pub(crate) const METRICS_TEXTFILE: Variable =
    Variable::new("METRICS_TEXTFILE", Public, Rule::PromFile);
pub(crate) const PUSHGATEWAY_URL: Variable =
    Variable::new("PUSHGATEWAY_URL", UrlPassword, Rule::Url);
pub(crate) const PUSHGATEWAY_INSTANCE: Variable =
    Variable::new("PUSHGATEWAY_INSTANCE", Public, Rule::Text);

/// Every variable, in the order the configuration is shown and documented.
pub(crate) const VARIABLES: [Variable; 39] = [
    DIFY_API_URL,
    DIFY_DATABASE_URL,
    DIFY_DATABASE_CONNECTIONS,
    DIFY_API_TOKEN,
    DIFY_WORKSPACE_ID,
    DIFY_EMAIL,
    DIFY_PASSWORD,
    DIFY_PASSWORD_ENCODING,
    DIFY_FETCH_DAYS,
    DIFY_CONCURRENCY,
    COLLECT_CHUNK_DAYS,
    EXTERNAL_API_URL,
    EXTERNAL_API_TOKEN,
    EXTERNAL_API_TENANT_ID,
    SINK_POSTGRES_URL,
    SINK_POSTGRES_TABLE,
    SINK_FILE_DIR,
    SINK_FILE_FORMAT,
    SINK_FILE_SCHEMA,
    SINK_CLOUDEVENTS_URL,
    SINK_CLOUDEVENTS_TOKEN,
    SINK_CLOUDEVENTS_SOURCE,
    USAGE_DECREASES,
    USER_MAP_FILE,
    LEDGER_RETENTION_DAYS,
    EXPORT_LOOKBACK_DAYS,
    BATCH_SIZE,
    DEAD_LETTER_AFTER,
    CRON_SCHEDULE,
    LOG_LEVEL,
    LOG_FORMAT,
    GRACEFUL_SHUTDOWN_TIMEOUT,
    MAX_RETRY,
    HTTP_TIMEOUT,
    STATE_DIR,
    ALLOW_INSECURE_HTTP,
    METRICS_TEXTFILE,
    PUSHGATEWAY_URL,
    PUSHGATEWAY_INSTANCE,
];

/// The table's name for `key` spelled in any letter case (`dify_api_token` is `DIFY_API_TOKEN`).
pub(crate) fn canonical_name(key: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|v| v.name.eq_ignore_ascii_case(key))
        .map(|v| v.name)
}

/// Whether the value is used exactly as typed: a password may begin or end with a space. Every
/// other value is trimmed once, where it is read, for every command alike.
pub(crate) fn kept_as_typed(name: &str) -> bool {
    name == DIFY_PASSWORD.name
}

/// A secret shorter than this is refused: masking it would blank out ordinary words in every line
/// (a token `t` turns each `t` of the log into `***`).
pub(crate) const MIN_SECRET_CHARS: usize = 8;
