//! The environment, validated: raw values in, a typed [`Config`] out, or every problem at once.
//!
//! envy deserializes the variables into [`RawEnv`], typing each value (numbers, UUIDs, schedules,
//! choices) without failing on a bad one: a [`Parsed`] keeps the text that did not parse. The
//! [`checker`] then applies the rules of the [variable table](variables) and collects every
//! problem, each naming its variable and the rule, instead of stopping at the first; [`source`]
//! decides which source the variables select. `run` and `validate-config` share this one path, so
//! the two can never disagree about what is valid.

mod checker;
mod hints;
mod sinks;
mod source;
pub(crate) mod variables;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use self::checker::{Checker, Flag, Parsed};
use self::variables::{Secrecy, VARIABLES, Variable};
use crate::environment::Environment;
use crate::ledger::DecreasePolicy;
use crate::logging::{LogFormat, LogLevel, LogSettings};
use crate::schedule::Schedule;
use crate::secret::{MASK, Masker, shown_url};
use crate::source::console::PasswordEncoding;
pub(crate) use hints::placeholders;
pub(crate) use sinks::{
    CloudEventsSinkConfig, FileFormat, FileSchema, FileSinkConfig, HttpSinkConfig, LedgerConfig,
    PostgresSinkConfig, SinksConfig, TableName,
};
pub(crate) use source::SourceConfig;

/// The variables as envy deserializes them (blank values already dropped). One field per row of
/// the variable table; a unit test keeps the two equal.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    dify_api_url: Option<String>,
    dify_database_url: Option<String>,
    dify_database_connections: Option<Parsed<usize>>,
    dify_api_token: Option<String>,
    dify_workspace_id: Option<Parsed<Uuid>>,
    dify_email: Option<String>,
    dify_password: Option<String>,
    dify_password_encoding: Option<Parsed<PasswordEncoding>>,
    dify_fetch_days: Option<Parsed<u32>>,
    dify_concurrency: Option<Parsed<usize>>,
    collect_chunk_days: Option<Parsed<u32>>,
    external_api_url: Option<String>,
    external_api_token: Option<String>,
    external_api_tenant_id: Option<String>,
    sink_postgres_url: Option<String>,
    sink_postgres_table: Option<String>,
    sink_file_dir: Option<PathBuf>,
    sink_file_format: Option<Parsed<FileFormat>>,
    sink_file_schema: Option<Parsed<FileSchema>>,
    sink_cloudevents_url: Option<String>,
    sink_cloudevents_token: Option<String>,
    sink_cloudevents_source: Option<String>,
    usage_decreases: Option<Parsed<DecreasePolicy>>,
    user_map_file: Option<PathBuf>,
    ledger_retention_days: Option<Parsed<u32>>,
    export_lookback_days: Option<Parsed<u32>>,
    batch_size: Option<Parsed<usize>>,
    dead_letter_after: Option<Parsed<u32>>,
    cron_schedule: Option<Parsed<Schedule>>,
    log_level: Option<Parsed<LogLevel>>,
    log_format: Option<Parsed<LogFormat>>,
    graceful_shutdown_timeout: Option<Parsed<u64>>,
    max_retry: Option<Parsed<u32>>,
    http_timeout: Option<Parsed<u64>>,
    state_dir: Option<PathBuf>,
    allow_insecure_http: Option<Parsed<Flag>>,
    metrics_textfile: Option<PathBuf>,
    pushgateway_url: Option<String>,
    pushgateway_instance: Option<String>,
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where usage is read from.
    pub(crate) source: SourceConfig,
    /// Where the ledger's rows go.
    pub(crate) sinks: SinksConfig,
    /// How collected records enter the ledger.
    pub(crate) ledger: LedgerConfig,
    /// Days collected by a run without `--from/--to` (until the state database keeps a watermark).
    pub(crate) dify_fetch_days: u32,
    /// Requests to Dify in flight at once.
    pub(crate) dify_concurrency: usize,
    /// Days collected, queued and committed together; a stopped run keeps the chunks it finished.
    pub(crate) collect_chunk_days: u32,
    /// Already-exported days collected again by each run, for runs that finished late.
    pub(crate) export_lookback_days: u32,
    /// Most records in one batch.
    pub(crate) batch_size: usize,
    /// Failed runs after which a batch is dead-lettered.
    pub(crate) dead_letter_after: u32,
    /// When the deployment starts the program; used for `next-runs` and the start-up log.
    pub(crate) schedule: Schedule,
    /// How long a graceful stop may take before the program gives up and exits 1.
    pub(crate) graceful_shutdown_timeout: Duration,
    /// Retries of one request within a run (not counting the first attempt).
    pub(crate) max_retry: u32,
    /// Time limit of one HTTP request, connection included.
    pub(crate) http_timeout: Duration,
    /// Directory of the lock file and the state database.
    pub(crate) state_dir: PathBuf,
    /// Masks this configuration's secrets in text that came from a server.
    pub(crate) masker: Masker,
    /// Where every `run` and `resend` leaves its metrics, if anywhere.
    pub(crate) metrics: MetricsTargets,
    /// Every variable's effective value, secrets masked, in table order.
    masked: Vec<(&'static str, String)>,
}

/// `METRICS_TEXTFILE`, `PUSHGATEWAY_URL`, `PUSHGATEWAY_INSTANCE`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetricsTargets {
    /// A `.prom` file for node_exporter's textfile collector.
    pub(crate) textfile: Option<PathBuf>,
    /// The Pushgateway's base URL (`/metrics/job/...` is appended).
    pub(crate) pushgateway_url: Option<Url>,
    /// The `instance` label of the grouping key.
    pub(crate) pushgateway_instance: Option<String>,
}

/// One thing wrong with the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The variable at fault (or the first of a pair).
    pub(crate) variable: &'static str,
    /// What is wrong and what is allowed; never contains a secret.
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// Every problem found, in the order of the variable table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

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
    pub(crate) fn from_env(env: &Environment) -> Result<Config, Problems> {
        use variables as v;

        let mut check = Checker::default();
        let raw: RawEnv = envy::from_iter(env.iter()).unwrap_or_else(|err| {
            // Every field reads plain text, which an environment always holds; still, say so.
            check.problems.push(Problem {
                variable: "(environment)",
                message: format!("cannot be read: {err}"),
            });
            RawEnv::default()
        });

        let Flag(allow_insecure_http) =
            check.one_of(&v::ALLOW_INSECURE_HTTP, raw.allow_insecure_http.as_ref());
        let http_timeout = check.seconds(&v::HTTP_TIMEOUT, raw.http_timeout.as_ref());
        // Database connections wait as long as HTTP connections, and never more than 10 s.
        let connect_timeout = http_timeout
            .unwrap_or(Duration::from_secs(30))
            .min(Duration::from_secs(10));
        let source = source::select(&mut check, &raw, allow_insecure_http, connect_timeout);
        let dify_fetch_days = check.whole(&v::DIFY_FETCH_DAYS, raw.dify_fetch_days.as_ref());
        let dify_concurrency = check.whole(&v::DIFY_CONCURRENCY, raw.dify_concurrency.as_ref());
        let collect_chunk_days =
            check.whole(&v::COLLECT_CHUNK_DAYS, raw.collect_chunk_days.as_ref());
        let sinks = sinks::select(&mut check, &raw, allow_insecure_http, connect_timeout);
        let ledger = sinks::ledger(&mut check, &raw);
        let export_lookback_days =
            check.whole(&v::EXPORT_LOOKBACK_DAYS, raw.export_lookback_days.as_ref());
        let batch_size = check.whole(&v::BATCH_SIZE, raw.batch_size.as_ref());
        let dead_letter_after = check.whole(&v::DEAD_LETTER_AFTER, raw.dead_letter_after.as_ref());
        let schedule = match &raw.cron_schedule {
            Some(value) => check.parsed(&v::CRON_SCHEDULE, Some(value), ""),
            None => Some(checker::table_default(&v::CRON_SCHEDULE)),
        };
        // Logging already runs with [`log_settings`], read leniently before this check, so that
        // the problems can be logged; here the values are only checked.
        let _: LogLevel = check.one_of(&v::LOG_LEVEL, raw.log_level.as_ref());
        let _: LogFormat = check.one_of(&v::LOG_FORMAT, raw.log_format.as_ref());
        let graceful_shutdown_timeout = check.seconds(
            &v::GRACEFUL_SHUTDOWN_TIMEOUT,
            raw.graceful_shutdown_timeout.as_ref(),
        );
        let max_retry = check.whole(&v::MAX_RETRY, raw.max_retry.as_ref());
        let state_dir = check.directory(&v::STATE_DIR, raw.state_dir.as_ref());
        let metrics = metrics(&mut check, &raw, allow_insecure_http);
        // A quoted value's own rule message would not say why it fails: say only that.
        let quoted = hints::quoted(env);
        check
            .problems
            .retain(|problem| quoted.iter().all(|q| q.variable != problem.variable));
        check.problems.extend(quoted);

        if !check.problems.is_empty() {
            return Err(Problems(check.problems));
        }
        // Every `None` above recorded a problem, so all of these are present.
        let missing = || Problems(vec![]);
        Ok(Config {
            source: source.ok_or_else(missing)?,
            sinks: sinks.ok_or_else(missing)?,
            ledger,
            dify_fetch_days,
            dify_concurrency,
            collect_chunk_days,
            export_lookback_days,
            batch_size,
            dead_letter_after,
            schedule: schedule.ok_or_else(missing)?,
            graceful_shutdown_timeout: graceful_shutdown_timeout.ok_or_else(missing)?,
            max_retry,
            http_timeout: http_timeout.ok_or_else(missing)?,
            state_dir: state_dir.ok_or_else(missing)?,
            masker: masker(env),
            metrics,
            masked: masked(env),
        })
    }

    /// The effective configuration as (variable, value) pairs, secrets masked, in table order.
    pub(crate) fn masked(&self) -> &[(&'static str, String)] {
        &self.masked
    }
}

/// `STATE_DIR` alone, for the commands that need nothing else (`status`, `watermark`).
pub(crate) fn state_dir(env: &Environment) -> PathBuf {
    let variable = &variables::STATE_DIR;
    env.get(variable.name)
        .map_or_else(|| checker::table_default(variable), PathBuf::from)
}

/// The log settings alone, best effort: invalid values fall back to the defaults so that the
/// problem can still be logged (and is reported by [`Config::from_env`]).
pub(crate) fn log_settings(env: &Environment) -> LogSettings {
    let read = |variable: &Variable| env.get(variable.name).map(str::trim);
    LogSettings {
        level: read(&variables::LOG_LEVEL)
            .and_then(|t| t.parse::<LogLevel>().ok())
            .unwrap_or_else(|| checker::table_default(&variables::LOG_LEVEL))
            .into(),
        format: read(&variables::LOG_FORMAT)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| checker::table_default(&variables::LOG_FORMAT)),
    }
}

/// A masker for every value the table marks secret, whether or not the configuration is valid.
pub(crate) fn masker(env: &Environment) -> Masker {
    let mut masker = Masker::default();
    for variable in &VARIABLES {
        let Some(value) = env.get(variable.name) else {
            continue;
        };
        match variable.secrecy {
            Secrecy::Public => {}
            Secrecy::Secret => masker.learn(value),
            Secrecy::UrlPassword => masker.learn_url(value),
        }
    }
    masker.finish()
}

/// Each variable as set (or its default), secrets as `***`, URL passwords masked.
fn masked(env: &Environment) -> Vec<(&'static str, String)> {
    VARIABLES
        .iter()
        .map(|variable| {
            let shown = match env.get(variable.name).map(str::trim) {
                None => variable.default.unwrap_or("(unset)").to_owned(),
                Some(value) => masked_value(variable, value),
            };
            (variable.name, shown)
        })
        .collect()
}

/// A set value as output may show it: a secret as `***`, a URL with its password masked.
fn masked_value(variable: &Variable, value: &str) -> String {
    match variable.secrecy {
        Secrecy::Secret => MASK.to_owned(),
        Secrecy::UrlPassword => shown_url(value),
        Secrecy::Public => value.to_owned(),
    }
}

/// The metrics targets; every one is optional. An unusable one is a problem, not a warning:
/// a monitoring gap found at the first scheduled run is worse than a refused start.
fn metrics(check: &mut Checker, raw: &RawEnv, allow_insecure: bool) -> MetricsTargets {
    use variables as v;
    let textfile = raw.metrics_textfile.as_ref().and_then(|path| {
        let named = path.extension().is_some_and(|e| e == "prom")
            && path.file_name().is_some_and(|n| n != ".prom");
        if !named {
            check.problem(
                &v::METRICS_TEXTFILE,
                format!(
                    "`{}` is not a file name ending in `.prom` (node_exporter's textfile collector reads only those)",
                    path.display()
                ),
            );
        }
        named.then(|| path.clone())
    });
    // Metrics hold no secret, and in-cluster Pushgateways rarely have TLS: plain http is
    // refused only when the URL carries a password.
    let pushgateway_url = raw.pushgateway_url.as_deref().and_then(|value| {
        let has_password = Url::parse(value.trim()).is_ok_and(|u| u.password().is_some());
        check.url(&v::PUSHGATEWAY_URL, value, allow_insecure || !has_password)
    });
    let pushgateway_instance = raw.pushgateway_instance.as_deref().map(str::trim);
    if pushgateway_instance.is_some() && raw.pushgateway_url.is_none() {
        check.problem(
            &v::PUSHGATEWAY_INSTANCE,
            "is set but PUSHGATEWAY_URL is not; set both, or unset PUSHGATEWAY_INSTANCE",
        );
    }
    MetricsTargets {
        textfile,
        pushgateway_url,
        pushgateway_instance: pushgateway_instance.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
