//! The environment, validated: raw strings in, a typed [`Config`] out, or every problem at once.
//!
//! envy deserializes the variables into [`RawEnv`], where every field is an optional string, so
//! deserialization itself cannot fail on a bad value; the typed checks below then collect every
//! problem, each naming its variable and the rule, instead of stopping at the first. `run` and
//! `validate-config` share this one path, so the two can never disagree about what is valid.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use crate::dify::{DifyAuth, PasswordEncoding};
use crate::difydb::DatabaseSource;
use crate::environment::Environment;
use crate::logging::{LogFormat, LogSettings};
use crate::schedule::Schedule;
use crate::secret::{MASK, Masker, Secret};

/// `STATE_DIR` when unset.
pub const DEFAULT_STATE_DIR: &str = "./data";

/// `STATE_DIR` alone, for the commands that need nothing else (`status`, `watermark`).
#[must_use]
pub fn state_dir(env: &Environment) -> PathBuf {
    PathBuf::from(env.get("STATE_DIR").map_or(DEFAULT_STATE_DIR, str::trim))
}

/// `COLLECT_CHUNK_DAYS` when unset: Dify's run and conversation lists have no upper date bound, so
/// every chunk lists again from the newest rows; a month keeps a year's backfill at about six times
/// the listing of one pass, while a stop loses at most a month of collecting.
pub const DEFAULT_COLLECT_CHUNK_DAYS: u32 = 31;

/// The schedule used when `CRON_SCHEDULE` is unset.
pub const DEFAULT_SCHEDULE: &str = "0 0 * * *";

/// The variables as strings, exactly as found (blank values already dropped).
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    dify_api_url: Option<String>,
    dify_database_url: Option<String>,
    dify_api_token: Option<String>,
    dify_workspace_id: Option<String>,
    dify_email: Option<String>,
    dify_password: Option<String>,
    dify_password_encoding: Option<String>,
    dify_fetch_days: Option<String>,
    dify_concurrency: Option<String>,
    collect_chunk_days: Option<String>,
    external_api_url: Option<String>,
    external_api_token: Option<String>,
    external_api_tenant_id: Option<String>,
    export_lookback_days: Option<String>,
    batch_size: Option<String>,
    dead_letter_after: Option<String>,
    cron_schedule: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    graceful_shutdown_timeout: Option<String>,
    max_retry: Option<String>,
    http_timeout: Option<String>,
    state_dir: Option<String>,
    allow_insecure_http: Option<String>,
    metrics_textfile: Option<String>,
    pushgateway_url: Option<String>,
    pushgateway_instance: Option<String>,
}

/// Where a run reads usage from: one source per run.
#[derive(Debug, Clone)]
pub enum DifySource {
    /// Dify's console API (`DIFY_API_URL` and a token or login).
    Console {
        /// Base URL of Dify, without a trailing slash; console paths are appended to it.
        url: Url,
        /// How to authenticate to the console API.
        auth: DifyAuth,
    },
    /// Dify's PostgreSQL database (`DIFY_DATABASE_URL`).
    Database(DatabaseSource),
}

impl DifySource {
    /// The name `validate-config` and the logs use.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            DifySource::Console { .. } => "console-api",
            DifySource::Database(_) => "database",
        }
    }
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where usage is read from.
    pub dify_source: DifySource,
    /// Days collected by a run without `--from/--to` (until the state database keeps a watermark).
    pub dify_fetch_days: u32,
    /// Requests to Dify in flight at once.
    pub dify_concurrency: usize,
    /// Days collected, queued and committed together; a stopped run keeps the chunks it finished.
    pub collect_chunk_days: u32,
    /// Full URL of the metering endpoint that receives the POSTs (nothing is appended).
    pub external_api_url: Url,
    /// Sent as `Authorization: Bearer` to the metering API.
    pub external_api_token: Secret,
    /// Sent as `tenant_id` in every body when set.
    pub external_api_tenant_id: Option<String>,
    /// Already-exported days collected again by each run, for runs that finished late.
    pub export_lookback_days: u32,
    /// Most records in one POST.
    pub batch_size: usize,
    /// Failed runs after which a batch is dead-lettered.
    pub dead_letter_after: u32,
    /// When the deployment starts the program; used for `next-runs` and the start-up log.
    pub schedule: Schedule,
    /// Log level and line format.
    pub log: LogSettings,
    /// How long a graceful stop may take before the program gives up and exits 1.
    pub graceful_shutdown_timeout: Duration,
    /// Retries of one HTTP request within a run (not counting the first attempt).
    pub max_retry: u32,
    /// Time limit of one HTTP request, connection included.
    pub http_timeout: Duration,
    /// Directory of the lock file and the state database.
    pub state_dir: PathBuf,
    /// Whether plain `http://` to non-loopback hosts was explicitly allowed.
    pub allow_insecure_http: bool,
    /// Masks this configuration's secrets in text that came from a server.
    pub masker: Masker,
    /// Where every `run` and `resend` leaves its metrics, if anywhere.
    pub metrics: MetricsTargets,
}

/// `METRICS_TEXTFILE`, `PUSHGATEWAY_URL`, `PUSHGATEWAY_INSTANCE`.
#[derive(Debug, Clone, Default)]
pub struct MetricsTargets {
    /// A `.prom` file for node_exporter's textfile collector.
    pub textfile: Option<PathBuf>,
    /// The Pushgateway's base URL (`/metrics/job/...` is appended).
    pub pushgateway_url: Option<Url>,
    /// The `instance` label of the grouping key.
    pub pushgateway_instance: Option<String>,
}

/// One thing wrong with the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable at fault (or the first of a pair).
    pub variable: &'static str,
    /// What is wrong and what is allowed; never contains a secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every problem found, in the order of the configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "configuration is invalid ({n} problem{}): ",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Validates the environment.
    ///
    /// # Errors
    /// Every problem found, each naming its variable.
    pub fn from_env(env: &Environment) -> Result<Config, Problems> {
        // Every field is an optional string, so envy can only fail on a non-string shape, which an
        // environment cannot produce; treat it as "all unset" rather than panicking.
        let raw: RawEnv = envy::from_iter(env.iter()).unwrap_or_default();
        let mut check = Checker::default();

        let allow_insecure_http = check
            .parse_with(
                "ALLOW_INSECURE_HTTP",
                raw.allow_insecure_http.as_deref(),
                parse_bool,
            )
            .unwrap_or(false);
        let http_timeout = check.seconds("HTTP_TIMEOUT", raw.http_timeout.as_deref(), 30, 600);
        let dify_source = check.dify_source(&raw, allow_insecure_http, http_timeout);
        let dify_fetch_days = check.number(
            "DIFY_FETCH_DAYS",
            raw.dify_fetch_days.as_deref(),
            1..=366,
            7,
        );
        let dify_concurrency = check.number(
            "DIFY_CONCURRENCY",
            raw.dify_concurrency.as_deref(),
            1..=64,
            8,
        );
        let collect_chunk_days = check.number(
            "COLLECT_CHUNK_DAYS",
            raw.collect_chunk_days.as_deref(),
            1..=crate::window::MAX_WINDOW_DAYS,
            DEFAULT_COLLECT_CHUNK_DAYS,
        );
        let external_api_url = check.url(
            "EXTERNAL_API_URL",
            raw.external_api_url.as_deref(),
            allow_insecure_http,
        );
        let external_api_token =
            check.required("EXTERNAL_API_TOKEN", raw.external_api_token.as_deref());
        let export_lookback_days = check.number(
            "EXPORT_LOOKBACK_DAYS",
            raw.export_lookback_days.as_deref(),
            0..=30,
            1,
        );
        let batch_size = check.number("BATCH_SIZE", raw.batch_size.as_deref(), 1..=5000, 500);
        let dead_letter_after = check.number(
            "DEAD_LETTER_AFTER",
            raw.dead_letter_after.as_deref(),
            1..=1000,
            10,
        );
        let schedule = check.parse_with(
            "CRON_SCHEDULE",
            Some(raw.cron_schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE)),
            |text| Schedule::parse(text).map_err(|e| e.to_string()),
        );
        let level = check.parse_with("LOG_LEVEL", raw.log_level.as_deref(), parse_level);
        let format = check.parse_with("LOG_FORMAT", raw.log_format.as_deref(), LogFormat::from_str);
        let graceful_shutdown_timeout = check.seconds(
            "GRACEFUL_SHUTDOWN_TIMEOUT",
            raw.graceful_shutdown_timeout.as_deref(),
            30,
            3600,
        );
        let max_retry = check.number("MAX_RETRY", raw.max_retry.as_deref(), 0..=10, 3);
        let state_dir = check.state_dir(raw.state_dir.as_deref());
        let metrics = check.metrics(&raw, allow_insecure_http);

        if !check.problems.is_empty() {
            return Err(Problems(check.problems));
        }
        // Every `None` above pushed a problem, so all of these are present.
        let missing = || Problems(vec![]);
        Ok(Config {
            dify_source: dify_source.ok_or_else(missing)?,
            dify_fetch_days,
            dify_concurrency,
            collect_chunk_days,
            external_api_url: external_api_url.ok_or_else(missing)?,
            external_api_token: external_api_token.ok_or_else(missing)?,
            external_api_tenant_id: raw.external_api_tenant_id.map(|t| t.trim().to_owned()),
            export_lookback_days,
            batch_size,
            dead_letter_after,
            schedule: schedule.ok_or_else(missing)?,
            log: LogSettings {
                level: level.unwrap_or(tracing::Level::INFO),
                format: format.unwrap_or_default(),
            },
            graceful_shutdown_timeout: graceful_shutdown_timeout.ok_or_else(missing)?,
            max_retry,
            http_timeout: http_timeout.ok_or_else(missing)?,
            state_dir: state_dir.ok_or_else(missing)?,
            allow_insecure_http,
            masker: Masker::from_env(env),
            metrics,
        })
    }

    /// The effective configuration as (variable, value) pairs, secrets masked, in table order.
    #[must_use]
    pub fn masked(&self) -> Vec<(&'static str, String)> {
        let (api_url, database_url, auth) = match &self.dify_source {
            DifySource::Console { url, auth } => (masked_url(url), unset(), Some(auth)),
            DifySource::Database(source) => (unset(), source.masked_url(), None),
        };
        let (token, workspace, email, password, encoding) = match auth {
            None => (
                unset(),
                match &self.dify_source {
                    DifySource::Database(DatabaseSource {
                        workspace_id: Some(id),
                        ..
                    }) => id.to_string(),
                    _ => "(every workspace)".to_owned(),
                },
                unset(),
                unset(),
                unset(),
            ),
            Some(DifyAuth::AdminKey { workspace_id, .. }) => (
                MASK.to_owned(),
                workspace_id.to_string(),
                unset(),
                unset(),
                unset(),
            ),
            Some(DifyAuth::ConsoleToken(_)) => {
                (MASK.to_owned(), unset(), unset(), unset(), unset())
            }
            Some(DifyAuth::Login {
                email, encoding, ..
            }) => (
                unset(),
                unset(),
                email.clone(),
                MASK.to_owned(),
                encoding.to_string(),
            ),
        };
        vec![
            ("DIFY_API_URL", api_url),
            ("DIFY_DATABASE_URL", database_url),
            ("DIFY_API_TOKEN", token),
            ("DIFY_WORKSPACE_ID", workspace),
            ("DIFY_EMAIL", email),
            ("DIFY_PASSWORD", password),
            ("DIFY_PASSWORD_ENCODING", encoding),
            ("DIFY_FETCH_DAYS", self.dify_fetch_days.to_string()),
            ("DIFY_CONCURRENCY", self.dify_concurrency.to_string()),
            ("COLLECT_CHUNK_DAYS", self.collect_chunk_days.to_string()),
            ("EXTERNAL_API_URL", masked_url(&self.external_api_url)),
            ("EXTERNAL_API_TOKEN", MASK.to_owned()),
            (
                "EXTERNAL_API_TENANT_ID",
                self.external_api_tenant_id.clone().unwrap_or_else(unset),
            ),
            (
                "EXPORT_LOOKBACK_DAYS",
                self.export_lookback_days.to_string(),
            ),
            ("BATCH_SIZE", self.batch_size.to_string()),
            ("DEAD_LETTER_AFTER", self.dead_letter_after.to_string()),
            ("CRON_SCHEDULE", self.schedule.expression().to_owned()),
            ("LOG_LEVEL", self.log.level.as_str().to_ascii_lowercase()),
            ("LOG_FORMAT", self.log.format.to_string()),
            (
                "GRACEFUL_SHUTDOWN_TIMEOUT",
                self.graceful_shutdown_timeout.as_secs().to_string(),
            ),
            ("MAX_RETRY", self.max_retry.to_string()),
            ("HTTP_TIMEOUT", self.http_timeout.as_secs().to_string()),
            ("STATE_DIR", self.state_dir.display().to_string()),
            ("ALLOW_INSECURE_HTTP", self.allow_insecure_http.to_string()),
            (
                "METRICS_TEXTFILE",
                self.metrics
                    .textfile
                    .as_ref()
                    .map_or_else(unset, |p| p.display().to_string()),
            ),
            (
                "PUSHGATEWAY_URL",
                self.metrics
                    .pushgateway_url
                    .as_ref()
                    .map_or_else(unset, masked_url),
            ),
            (
                "PUSHGATEWAY_INSTANCE",
                self.metrics
                    .pushgateway_instance
                    .clone()
                    .unwrap_or_else(unset),
            ),
        ]
    }
}

fn unset() -> String {
    "(unset)".to_owned()
}

/// A URL for display: a password inside it is a secret too.
#[must_use]
pub fn masked_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Setting a password only fails on URLs that cannot have one, and this one has one.
        let _ = shown.set_password(Some(MASK));
    }
    shown.to_string().trim_end_matches('/').to_owned()
}

/// Masks a `user:password@` part of text that did not even parse as a URL.
fn mask_userinfo(text: &str) -> String {
    let authority_start = text.find("://").map_or(0, |i| i + 3);
    let authority = &text[authority_start..];
    let authority_end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
    match authority[..authority_end].rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!(
                "{}{user}:{MASK}{}",
                &text[..authority_start],
                &authority[at..]
            )
        }
        None => text.to_owned(),
    }
}

/// Collects problems while converting values; each method returns `None` after recording one.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, variable: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            variable,
            message: message.into(),
        });
    }

    /// Parses an optional value; `None` input means "use the default" and yields `None` quietly.
    fn parse_with<T>(
        &mut self,
        variable: &'static str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = value?;
        match parse(value.trim()) {
            Ok(parsed) => Some(parsed),
            Err(rule) => {
                self.problem(variable, format!("`{}` {rule}", value.trim()));
                None
            }
        }
    }

    /// A whole number in `range`, or `default` when unset.
    fn number<T>(
        &mut self,
        variable: &'static str,
        value: Option<&str>,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.parse_with(variable, value, |t| {
            parse_in_range(t, *range.start(), *range.end())
        })
        .unwrap_or(default)
    }

    fn required(&mut self, variable: &'static str, value: Option<&str>) -> Option<Secret> {
        if let Some(value) = value {
            self.header_value(variable, value.trim())
        } else {
            self.problem(variable, "is required and not set");
            None
        }
    }

    /// A secret sent in an HTTP header: it must be a valid header value, or the request could not
    /// even be built. The value itself is never shown, only the position of the bad character.
    fn header_value(&mut self, variable: &'static str, value: &str) -> Option<Secret> {
        match value.bytes().position(|b| !is_header_byte(b)) {
            None => Some(Secret::new(value.to_owned())),
            Some(index) => {
                self.problem(
                    variable,
                    format!(
                        "contains a character that cannot be sent in an HTTP header (character {} of {}: a line \
                         break, a control character or non-ASCII); allowed: visible ASCII, spaces and tabs",
                        value[..index].chars().count() + 1,
                        value.chars().count()
                    ),
                );
                None
            }
        }
    }

    fn url(
        &mut self,
        variable: &'static str,
        value: Option<&str>,
        allow_insecure: bool,
    ) -> Option<Url> {
        let Some(value) = value else {
            self.problem(
                variable,
                "is required and not set (an absolute http(s) URL)",
            );
            return None;
        };
        match parse_url(value.trim(), allow_insecure) {
            Ok(url) => Some(url),
            Err(rule) => {
                // The value may carry a password; show it only in masked form.
                let shown = Url::parse(value.trim())
                    .map_or_else(|_| mask_userinfo(value.trim()), |u| masked_url(&u));
                self.problem(variable, format!("`{shown}` {rule}"));
                None
            }
        }
    }

    fn seconds(
        &mut self,
        variable: &'static str,
        value: Option<&str>,
        default: u64,
        max: u64,
    ) -> Option<Duration> {
        match value {
            None => Some(Duration::from_secs(default)),
            Some(_) => self
                .parse_with(variable, value, |t| parse_in_range(t, 1, max))
                .map(Duration::from_secs),
        }
    }

    fn state_dir(&mut self, value: Option<&str>) -> Option<PathBuf> {
        let path = PathBuf::from(value.unwrap_or(DEFAULT_STATE_DIR));
        if path.exists() && !path.is_dir() {
            self.problem(
                "STATE_DIR",
                format!("`{}` exists and is not a directory", path.display()),
            );
            return None;
        }
        Some(path)
    }

    /// The console API, or the database when `DIFY_DATABASE_URL` is set; never both.
    fn dify_source(
        &mut self,
        raw: &RawEnv,
        allow_insecure_http: bool,
        http_timeout: Option<Duration>,
    ) -> Option<DifySource> {
        let Some(database_url) = raw.dify_database_url.as_deref() else {
            let url = self.url(
                "DIFY_API_URL",
                raw.dify_api_url.as_deref(),
                allow_insecure_http,
            );
            let auth = self.dify_auth(raw);
            return Some(DifySource::Console {
                url: url?,
                auth: auth?,
            });
        };
        let mut ok = true;
        for (variable, value) in [
            ("DIFY_API_URL", &raw.dify_api_url),
            ("DIFY_API_TOKEN", &raw.dify_api_token),
            ("DIFY_EMAIL", &raw.dify_email),
            ("DIFY_PASSWORD", &raw.dify_password),
        ] {
            if value.is_some() {
                self.problem(
                    variable,
                    "is set together with DIFY_DATABASE_URL; a run reads one source: unset DIFY_DATABASE_URL to use the console API, or the console settings to read the database",
                );
                ok = false;
            }
        }
        let workspace_id = self.parse_with(
            "DIFY_WORKSPACE_ID",
            raw.dify_workspace_id.as_deref(),
            parse_uuid,
        );
        if raw.dify_workspace_id.is_some() && workspace_id.is_none() {
            ok = false;
        }
        let connect_timeout = http_timeout
            .unwrap_or(Duration::from_secs(30))
            .min(Duration::from_secs(10));
        let text = database_url.trim();
        match DatabaseSource::parse(text, workspace_id, connect_timeout) {
            Ok(source) if ok => Some(DifySource::Database(source)),
            Ok(_) => None,
            Err(rule) => {
                self.problem(
                    "DIFY_DATABASE_URL",
                    format!("`{}` {rule}", mask_userinfo(text)),
                );
                None
            }
        }
    }

    /// The metrics targets; every one is optional. An unusable one is a problem, not a warning:
    /// a monitoring gap found at the first scheduled run is worse than a refused start.
    fn metrics(&mut self, raw: &RawEnv, allow_insecure: bool) -> MetricsTargets {
        let textfile = raw.metrics_textfile.as_deref().and_then(|value| {
            let path = PathBuf::from(value.trim());
            let named = path.extension().is_some_and(|e| e == "prom")
                && path.file_name().is_some_and(|n| n != ".prom");
            if named {
                Some(path)
            } else {
                self.problem(
                    "METRICS_TEXTFILE",
                    format!(
                        "`{}` is not a file name ending in `.prom` (node_exporter's textfile collector reads only those)",
                        value.trim()
                    ),
                );
                None
            }
        });
        // Metrics hold no secret, and in-cluster Pushgateways rarely have TLS: plain http is
        // refused only when the URL carries a password.
        let pushgateway_url = raw.pushgateway_url.as_deref().and_then(|value| {
            let has_password = Url::parse(value.trim()).is_ok_and(|u| u.password().is_some());
            self.url(
                "PUSHGATEWAY_URL",
                Some(value),
                allow_insecure || !has_password,
            )
        });
        let pushgateway_instance = raw.pushgateway_instance.as_deref().map(str::trim);
        if pushgateway_instance.is_some() && raw.pushgateway_url.is_none() {
            self.problem(
                "PUSHGATEWAY_INSTANCE",
                "is set but PUSHGATEWAY_URL is not; set both, or unset PUSHGATEWAY_INSTANCE",
            );
        }
        MetricsTargets {
            textfile,
            pushgateway_url,
            pushgateway_instance: pushgateway_instance.map(str::to_owned),
        }
    }

    fn dify_auth(&mut self, raw: &RawEnv) -> Option<DifyAuth> {
        let token = raw.dify_api_token.as_deref();
        let workspace = raw.dify_workspace_id.as_deref();
        let email = raw.dify_email.as_deref();
        let password = raw.dify_password.as_deref();

        let workspace_id = self.parse_with("DIFY_WORKSPACE_ID", workspace, parse_uuid);
        let workspace_ok = workspace.is_none() || workspace_id.is_some();
        let encoding = self
            .parse_with(
                "DIFY_PASSWORD_ENCODING",
                raw.dify_password_encoding.as_deref(),
                PasswordEncoding::from_str,
            )
            .unwrap_or_default();

        match (email, password) {
            (Some(_), None) => {
                self.problem(
                    "DIFY_PASSWORD",
                    "must be set together with DIFY_EMAIL (both or neither)",
                );
                return None;
            }
            (None, Some(_)) => {
                self.problem(
                    "DIFY_EMAIL",
                    "must be set together with DIFY_PASSWORD (both or neither)",
                );
                return None;
            }
            _ => {}
        }

        match (token, email.zip(password)) {
            (Some(_), Some(_)) => {
                self.problem(
                    "DIFY_API_TOKEN",
                    "is set together with DIFY_EMAIL and DIFY_PASSWORD; set either the token or the login pair, not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    "DIFY_API_TOKEN",
                    "is required unless DIFY_EMAIL and DIFY_PASSWORD are set (an admin API key with DIFY_WORKSPACE_ID, or a console access token)",
                );
                None
            }
            (None, Some((email, password))) => {
                if workspace.is_some() {
                    self.problem(
                        "DIFY_WORKSPACE_ID",
                        "selects admin-API-key authentication and needs DIFY_API_TOKEN; unset it to log in with DIFY_EMAIL",
                    );
                    return None;
                }
                if !email.contains('@') {
                    self.problem("DIFY_EMAIL", format!("`{email}` is not an email address"));
                    return None;
                }
                Some(DifyAuth::Login {
                    email: email.trim().to_owned(),
                    password: Secret::new(password.to_owned()),
                    encoding,
                })
            }
            (Some(token), None) => {
                let key = self.header_value("DIFY_API_TOKEN", token.trim())?;
                match workspace_id {
                    Some(workspace_id) => Some(DifyAuth::AdminKey { key, workspace_id }),
                    None if workspace_ok => Some(DifyAuth::ConsoleToken(key)),
                    None => None,
                }
            }
        }
    }
}

/// What `http::HeaderValue` accepts, narrowed to ASCII (a token never needs more): visible
/// characters, space and tab.
fn is_header_byte(byte: u8) -> bool {
    byte == b'\t' || (b' '..=b'~').contains(&byte)
}

fn parse_url(text: &str, allow_insecure: bool) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| {
        format!("is not an absolute URL ({e}); expected e.g. https://dify.example.com")
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure || is_loopback(&url) => {}
        "http" => {
            return Err(
                "uses plain http to a non-loopback host, which would send tokens in clear text; \
                        use https, or set ALLOW_INSECURE_HTTP=true if the network is trusted"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "has scheme `{other}`; only http and https are allowed"
            ));
        }
    }
    if url.host().is_none() {
        return Err("has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query string or fragment".to_owned());
    }
    // A trailing slash is ignored so that `https://dify/` and `https://dify` mean the same.
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text)
        .map_err(|_| "is not a UUID (like 0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47)".to_owned())
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("is not a boolean; allowed: true, false".to_owned()),
    }
}

fn parse_level(text: &str) -> Result<tracing::Level, String> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(tracing::Level::ERROR),
        "warn" => Ok(tracing::Level::WARN),
        "info" => Ok(tracing::Level::INFO),
        "debug" => Ok(tracing::Level::DEBUG),
        _ => Err("is not a log level; allowed: error, warn, info, debug".to_owned()),
    }
}

fn parse_in_range<T>(text: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    match text.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("is not a whole number from {min} to {max}")),
    }
}

impl LogSettings {
    /// The log settings alone, best effort: invalid values fall back to the defaults so that the
    /// problem can still be logged (and is reported by [`Config::from_env`]).
    #[must_use]
    pub fn from_env_lenient(env: &Environment) -> LogSettings {
        LogSettings {
            level: env
                .get("LOG_LEVEL")
                .and_then(|t| parse_level(t.trim()).ok())
                .unwrap_or(tracing::Level::INFO),
            format: env
                .get("LOG_FORMAT")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: [(&str, &str); 4] = [
        ("DIFY_API_URL", "https://dify.example.com/"),
        ("DIFY_API_TOKEN", "console-token"),
        ("EXTERNAL_API_URL", "https://meter.example.com/usage"),
        ("EXTERNAL_API_TOKEN", "meter-token"),
    ];

    fn config(extra: &[(&'static str, &'static str)]) -> Result<Config, Problems> {
        let mut pairs: Vec<(&str, &str)> = VALID.to_vec();
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend(extra.iter().copied().filter(|(_, v)| !v.is_empty()));
        Config::from_env(&Environment::from_pairs(pairs))
    }

    #[test]
    fn defaults_apply() {
        let config = config(&[]).unwrap();
        let DifySource::Console { url, auth } = &config.dify_source else {
            panic!("the console API is the default source");
        };
        assert_eq!(url.as_str(), "https://dify.example.com/");
        assert!(matches!(auth, DifyAuth::ConsoleToken(_)));
        assert_eq!(config.max_retry, 3);
        assert_eq!(config.graceful_shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.schedule.expression(), DEFAULT_SCHEDULE);
    }

    #[test]
    fn loopback_http_is_allowed_and_other_http_is_not() {
        assert!(config(&[("DIFY_API_URL", "http://127.0.0.1:5001")]).is_ok());
        assert!(config(&[("DIFY_API_URL", "http://[::1]:5001")]).is_ok());
        assert!(config(&[("DIFY_API_URL", "http://localhost")]).is_ok());
        let err = config(&[("DIFY_API_URL", "http://dify.internal")]).unwrap_err();
        assert!(err.0[0].message.contains("ALLOW_INSECURE_HTTP"), "{err}");
        assert!(
            config(&[
                ("DIFY_API_URL", "http://dify.internal"),
                ("ALLOW_INSECURE_HTTP", "true")
            ])
            .is_ok()
        );
    }

    #[test]
    fn a_password_inside_a_url_is_masked_in_problems_and_output() {
        let err =
            config(&[("EXTERNAL_API_URL", "ftp://user:hunter2@meter.example.com")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let ok = config(&[(
            "EXTERNAL_API_URL",
            "https://user:hunter2@meter.example.com/x",
        )])
        .unwrap();
        assert!(!format!("{:?}", ok.masked()).contains("hunter2"));
    }

    #[test]
    fn userinfo_is_masked_even_in_text_that_is_not_a_url() {
        assert_eq!(
            mask_userinfo("https://u:p@w@host name/x"),
            "https://u:***@host name/x"
        );
        assert_eq!(mask_userinfo("u:p@host"), "u:***@host");
        assert_eq!(mask_userinfo("https://host/a@b"), "https://host/a@b");
    }

    #[test]
    fn header_bound_values_must_be_header_safe_and_are_never_echoed() {
        for (variable, value) in [
            ("DIFY_API_TOKEN", "tok\nen-secret"),
            ("EXTERNAL_API_TOKEN", "tok\u{7}en-secret"),
            ("DIFY_API_TOKEN", "tokö-secret"),
        ] {
            let err = config(&[(variable, value)]).unwrap_err();
            assert_eq!(err.0.len(), 1, "{err}");
            assert_eq!(err.0[0].variable, variable);
            assert!(err.0[0].message.contains("character 4 of"), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        assert!(config(&[("EXTERNAL_API_TOKEN", "a b\tc")]).is_ok());
    }

    #[test]
    fn workspace_id_makes_the_token_an_admin_key() {
        let config =
            config(&[("DIFY_WORKSPACE_ID", "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47")]).unwrap();
        assert!(matches!(
            config.dify_source,
            DifySource::Console {
                auth: DifyAuth::AdminKey { .. },
                ..
            }
        ));
    }

    #[test]
    fn the_database_url_selects_the_database_source_alone() {
        let database = config(&[
            ("DIFY_API_URL", ""),
            ("DIFY_API_TOKEN", ""),
            ("DIFY_DATABASE_URL", "postgres://ro:hunter2@db:5432/dify"),
            ("DIFY_WORKSPACE_ID", "0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47"),
        ])
        .unwrap();
        assert_eq!(database.dify_source.name(), "database");
        let masked = format!("{:?} {:?}", database.masked(), database);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(
            masked.contains("postgres://ro:***@db:5432/dify"),
            "{masked}"
        );

        let err = config(&[("DIFY_DATABASE_URL", "postgres://ro:hunter2@db/dify")]).unwrap_err();
        let variables: Vec<_> = err.0.iter().map(|p| p.variable).collect();
        assert_eq!(variables, ["DIFY_API_URL", "DIFY_API_TOKEN"]);
        let err = config(&[
            ("DIFY_API_URL", ""),
            ("DIFY_API_TOKEN", ""),
            ("DIFY_DATABASE_URL", "mysql://ro:hunter2@db/dify"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(err.0[0].variable, "DIFY_DATABASE_URL");
    }
}
