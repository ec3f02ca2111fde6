//! The log line format: one JSON object per line (or a readable line for people at a terminal).
//!
//! ```json
//! {"timestamp":"2026-11-28T00:00:00.123Z","level":"info","message":"run finished","context":{"run_id":"…","module":"job","apps":12}}
//! ```
//! tracing-subscriber's own JSON formatter nests fields differently, so this module is a small
//! [`Layer`] that writes exactly the documented schema. The run id is held by the layer rather than
//! a span, because spans do not follow work into spawned tasks and every line of a run needs it.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};
use std::sync::OnceLock;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::secret::Masker;

/// The secrets masked in every line, once the environment is known.
static MASKER: OnceLock<Masker> = OnceLock::new();
/// The format lines are written in, once logging is set up.
static WRITTEN_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Our own crate's target prefix: other crates (hyper, reqwest) only get through at `warn`.
const OWN_TARGET: &str = "dify_usage_exporter";

/// A field of this name holding a [`Json`] object is merged into `context` key by key:
/// `info!(fields = ?Json(&summary), "run finished")`.
pub(crate) const FLATTENED: &str = "fields";

/// Logs a serializable value as structured JSON in `context`: `info!(config = ?Json(&map), "…")`.
pub(crate) struct Json<'a, T: serde::Serialize>(pub &'a T);

impl<T: serde::Serialize> fmt::Debug for Json<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, strum::EnumString, strum::Display)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum LogFormat {
    /// Text when the log's stream is a terminal, JSON otherwise: a person at a shell reads lines,
    /// while CronJobs, crontab files and pipes keep the JSON lines their collectors parse.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// `timestamp LEVEL module: message key=value …`, for people.
    Text,
}

impl LogFormat {
    /// The format lines are written in on a stream that is (or is not) a terminal.
    fn resolve(self, terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            chosen => chosen,
        }
    }
}

/// `LOG_LEVEL`: the levels a run logs at (tracing's `trace` is not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevel> for Level {
    fn from(level: LogLevel) -> Level {
        match level {
            LogLevel::Error => Level::ERROR,
            LogLevel::Warn => Level::WARN,
            LogLevel::Info => Level::INFO,
            LogLevel::Debug => Level::DEBUG,
        }
    }
}

/// `LOG_LEVEL` and `LOG_FORMAT`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogSettings {
    /// The most verbose level written.
    pub(crate) level: Level,
    /// The line format.
    pub(crate) format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: Level::INFO,
            format: LogFormat::Auto,
        }
    }
}

/// Where log lines go: `run` logs to stdout (the container convention); commands whose product is
/// stdout log to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStream {
    Stdout,
    Stderr,
}

/// Masks these secrets in every line written from now on: the last line of defence behind the
/// masking of server answers in [`crate::http`], for text that reaches a log by another way.
pub(crate) fn mask_secrets(masker: Masker) {
    // Set once per process by `commands::execute`; a second call (tests only) keeps the first.
    let _ = MASKER.set(masker);
}

/// Installs the global subscriber. `run_id` is put on every line when given.
pub(crate) fn init(settings: LogSettings, stream: LogStream, run_id: Option<String>) {
    let filter = Targets::new()
        .with_default(LevelFilter::WARN.min(LevelFilter::from_level(settings.level)))
        .with_target(OWN_TARGET, LevelFilter::from_level(settings.level));
    let terminal = match stream {
        LogStream::Stdout => std::io::stdout().is_terminal(),
        LogStream::Stderr => std::io::stderr().is_terminal(),
    };
    let format = settings.format.resolve(terminal);
    let _ = WRITTEN_FORMAT.set(format);
    let layer = LineLayer {
        format,
        stream,
        run_id,
    };
    // A second init (only possible in tests) keeps the first subscriber; nothing to report.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Whether lines are written for people (`LOG_FORMAT=text`, or `auto` at a terminal): a line
/// that carries a whole structure for machines can then say less.
pub(crate) fn writes_text() -> bool {
    WRITTEN_FORMAT.get() == Some(&LogFormat::Text)
}

struct LineLayer {
    format: LogFormat,
    stream: LogStream,
    run_id: Option<String>,
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let module = meta
            .module_path()
            .map(|path| {
                path.strip_prefix(OWN_TARGET)
                    .unwrap_or(path)
                    .trim_start_matches("::")
            })
            .filter(|m| !m.is_empty())
            .unwrap_or("main");
        let level = meta.level().as_str().to_ascii_lowercase();
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);

        let mut line = match self.format {
            LogFormat::Json | LogFormat::Auto => {
                let mut context = Map::new();
                if let Some(run_id) = &self.run_id {
                    context.insert("run_id".into(), Value::String(run_id.clone()));
                }
                context.insert("module".into(), Value::String(module.to_owned()));
                context.extend(fields.fields);
                let object = serde_json::json!({
                    "timestamp": timestamp,
                    "level": level,
                    "message": fields.message,
                    "context": context,
                });
                object.to_string()
            }
            LogFormat::Text => {
                let mut text = format!("{timestamp} {level:>5} {module}: {}", fields.message);
                if let Some(run_id) = &self.run_id {
                    let _ = write!(text, " run_id={run_id}");
                }
                for (key, value) in &fields.fields {
                    let _ = match value {
                        Value::String(s) => write!(text, " {key}={s:?}"),
                        other => write!(text, " {key}={other}"),
                    };
                }
                text
            }
        };
        if let Some(masker) = MASKER.get() {
            line = masker.mask(&line);
        }
        line.push('\n');
        // One write per line keeps lines whole when several tasks log at once; a closed pipe is
        // not worth crashing over.
        let _ = match self.stream {
            LogStream::Stdout => {
                crate::progress::suspend(|| std::io::stdout().lock().write_all(line.as_bytes()))
            }
            LogStream::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        };
    }
}

/// Turns an event's fields into JSON values, keeping numbers and booleans typed.
#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Map<String, Value>,
}

impl FieldCollector {
    fn insert(&mut self, field: &Field, value: Value) {
        if let (FLATTENED, Value::Object(map)) = (field.name(), &value) {
            self.fields.extend(map.clone());
            return;
        }
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for FieldCollector {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // `{:#}`-style chain on one line, as anyhow prints it.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.insert(field, text.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // Values logged through [`Json`] arrive here as JSON text; keep them structured.
        let value = if text.starts_with(['{', '[']) {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        self.insert(field, value);
    }
}
